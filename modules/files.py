"""Writing files so that a reader never sees half of one: the project's one atomic writer."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _new_file_mode() -> int:
    """Permissions a plain `open()` would give a new file (mkstemp would give 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomically(path: str | os.PathLike, data: bytes | str, *, private: bool = False) -> Path:
    """Write to a temporary file beside `path`, then rename it into place: never half-written.

    The file gets the permissions a plain `open()` would give it, or 0600 when `private`
    (secrets, server settings); the parent folder is created when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.chmod(tmp, 0o600 if private else _new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomically(path: str | os.PathLike, data: Any, *, indent: int = 2) -> Path:
    """`data` as indented JSON ending in a newline, written atomically."""
    return write_atomically(path, json.dumps(data, indent=indent) + "\n")


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A fresh, empty temporary path beside `path`, for writers that insist on a file name
    (pandas, a download): finish with `os.replace(tmp, path)`, or unlink it on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)
