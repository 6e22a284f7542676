"""Errors meant for people, and the command-line wrapper that prints them as one line.

Exit codes: 2 for input or settings we cannot use (fix them, then run again), 69
(EX_UNAVAILABLE) for a service that did not answer (run again once it is back), 130 when
interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class OperationalMLError(Exception):
    """Base class: the message names the file, column or value and what was expected."""

    exit_code = 2


class DataValidationError(OperationalMLError):
    """The dataset on disk is not a usable classification table."""


class ConfigurationError(OperationalMLError):
    """A setting or command-line argument has a value we cannot use."""


class TrackingError(OperationalMLError):
    """The MLflow tracking server or registry cannot be used."""


# sysexits.h EX_UNAVAILABLE: a service we depend on is down; trying again later may work.
EXIT_UNAVAILABLE = 69


class ServiceUnavailableError(TrackingError):
    """A service the command depends on (the tracking server) did not answer in time.

    Exit code 69 (EX_UNAVAILABLE), apart from bad input (2): the same command may work once the
    service is back.
    """

    exit_code = EXIT_UNAVAILABLE


@contextmanager
def fail_cleanly() -> Iterator[None]:
    """Turn a project error into one line on stderr and its exit code (CLIs and flow steps)."""
    try:
        yield
    except OperationalMLError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)


def run_cli(main: Callable[[], int | None]) -> None:
    """Run a command-line entry point; project errors become one line on stderr."""
    try:
        with fail_cleanly():
            code = main()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
