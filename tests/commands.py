"""Running a stage's click command in-process, as `python -m modules COMMAND` runs it."""

from __future__ import annotations

from collections.abc import Sequence

import click

from modules.errors import run_cli


def run_command(command: click.Command, args: Sequence[str]) -> int:
    """Run `command` with `args`; project errors and `SystemExit(code)` propagate. Returns 0 when it ends."""
    command.main(list(args), prog_name="python -m modules", standalone_mode=False)
    return 0


def exit_code(command: click.Command, args: Sequence[str]) -> int:
    """Run `command` exactly as `python -m modules` does (one line per project error) and return its exit code."""
    try:
        run_cli(lambda: command.main(list(args), prog_name="python -m modules"))
    except SystemExit as exc:
        return 0 if exc.code is None else int(exc.code)
    raise AssertionError("a command run as `python -m modules` always exits")
