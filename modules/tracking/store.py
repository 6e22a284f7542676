"""What the tracking client and the server operations share, and nothing else.

The client (`modules.tracking.client`) checks that a server answers before a flow does any work,
and keeps a local SQLite store private; the server operations (`modules.tracking.server`) do
both too. Keeping them here lets the client stay clear of the server operations.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from modules.errors import ServiceUnavailableError, TrackingError
from modules.tracking.redaction import mask_password


def check_tracking_server(uri: str, timeout: float = 5.0) -> None:
    """Fail within `timeout` seconds when the MLflow server at `uri` does not answer GET /health.

    Non-HTTP URIs (a local SQLite or file store) need no server and pass.
    """
    if not uri.startswith(("http://", "https://")):
        return
    masked = mask_password(uri)
    parts = urllib.parse.urlsplit(uri)
    # Credentials in the URI are for the API, not for urllib's host parsing.
    netloc = parts.netloc.rsplit("@", 1)[-1]
    health = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    try:
        with urllib.request.urlopen(health, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (ValueError, http.client.InvalidURL) as exc:  # a malformed URI: a setting to fix, not an outage
        raise TrackingError(f"MLflow tracking server at {masked} is not reachable: {exc}") from None
    except OSError as exc:  # refused, unresolvable, timed out: the same command may work later
        reason = getattr(exc, "reason", exc)
        raise ServiceUnavailableError(
            f"MLflow tracking server at {masked} is not reachable: {reason}"
        ) from None
    if status in (502, 503, 504):  # a proxy in front of a server that is down or starting
        raise ServiceUnavailableError(
            f"MLflow tracking server at {masked} is not reachable: GET /health answered HTTP {status}"
        )
    if status != 200:
        raise TrackingError(
            f"MLflow tracking server at {masked} is not reachable: GET /health answered HTTP {status}"
        )


def make_private_sqlite(uri: str) -> Path | None:
    """Create the file of a `sqlite:///` store readable by its owner only (0600), or tighten it.

    SQLite creates its journal files with the database file's mode, so they stay private too.
    Returns the path, or None for a store that is not a SQLite file.
    """
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    path.chmod(0o600)
    return path
