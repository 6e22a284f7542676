"""Keep secrets out of log lines: mask passwords inside URIs and free text."""

from __future__ import annotations

import re

# scheme://user:password@host -> scheme://user:***@host
_URI_PASSWORD = re.compile(r"(?P<prefix>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]+:)(?P<password>[^@\s]+)(?P<at>@)")


def mask_password(text: str) -> str:
    """Replace the password of every `scheme://user:password@host` in `text` by `***`."""
    return _URI_PASSWORD.sub(lambda m: f"{m['prefix']}***{m['at']}", text)
