"""Keep secrets out of log lines: mask the credentials of every URI inside free text.

Every userinfo is treated as a secret, whatever its form:

- `https://user:password@host` -> `https://user:***@host` (also `postgresql+psycopg2://user:p%40ss@host`);
- `https://:token@host`        -> `https://:***@host`;
- `https://token@host`         -> `https://***@host` (a lone userinfo may be a token: masked whole);
- `https://user:p@ss@host`     -> `https://user:***@host` (the host follows the last `@`).

The one exception: a lone userinfo in a database URI (`postgresql+psycopg2://mlflow@host/db`)
is the role name, kept so that log lines say who connected; its password is never in the URI.

URIs are parsed with `urllib.parse.urlsplit`, so the host is where a URI client finds it.
"""

from __future__ import annotations

import re
import urllib.parse

# A URI's start inside text: `scheme://`, then everything up to white space or a quote.
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
MASK = "***"
# SQLAlchemy dialects (before any `+driver`) whose lone userinfo is a user name, not a token.
_DATABASE_SCHEMES = frozenset({"postgresql", "postgres", "mysql", "mariadb", "mssql", "oracle"})


def _mask_userinfo(uri: str) -> str:
    try:
        netloc = urllib.parse.urlsplit(uri).netloc
    except ValueError:  # e.g. an unbalanced IPv6 bracket: mask everything up to the last @
        netloc = uri.split("://", 1)[1]
    if "@" not in netloc:
        return uri
    userinfo, _, host = netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if colon:
        masked = f"{user}:{MASK}"
    elif uri.split(":", 1)[0].split("+", 1)[0].lower() in _DATABASE_SCHEMES:
        return uri
    else:
        masked = MASK
    start = uri.index("://") + 3
    return f"{uri[:start]}{masked}@{host}{uri[start + len(netloc) :]}"


def mask_password(text: str) -> str:
    """`text` with the password (or token) of every URI in it replaced by `***`."""
    return _URI.sub(lambda match: _mask_userinfo(match.group(0)), text)
