"""The production MLflow tracking server: `make mlflow_server`, `make stop`, `make db_init`.

The server keeps runs and the model registry in PostgreSQL when every POSTGRES_* connection
value is set (SQLite under the project otherwise) and proxies artifacts to MLFLOW_ARTIFACT_ROOT
(`gs://bucket/prefix` in production, a local folder otherwise), so clients need no cloud
credentials. `MLFLOW_AUTH=basic` adds MLflow's basic-auth app with its user tables in the same
database.

The PID file (`.run/mlflow-server.pid`) records the server's PID, process group and port:
`make stop` ends the whole group and whatever of the server still listens on the port, also
after its leader was killed, and needs none of the auth secrets (only `start` checks them).

Secrets never reach a command line, a log file or a printed line: the database password travels
to `mlflow server` and `mlflow db upgrade` in the PGPASSWORD environment variable, which libpq
reads, so every URI we build or print has no password in it; `psql` gets the admin's password as
PGPASSWORD and the new user's on its standard input. The server gets only the environment it
needs (`server_environment`), not the caller's whole environment.

Without authentication the server binds loopback only: any other MLFLOW_HOST needs
MLFLOW_AUTH=basic, or MLFLOW_ALLOW_UNAUTHENTICATED_PUBLIC=1 (with a warning). The SQLite stores
(`mlflow.db`, `basic_auth.db`), the PID file, the log and the auth configuration are created
readable by their owner only (0600). `ui` serves the MLflow UI on the embedded store (`make mlflow_ui`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click

from modules.errors import ConfigurationError, TrackingError
from modules.files import write_atomically
from modules.settings import PROJECT_ROOT, Settings, env_float, env_int, load_settings, read_environment
from modules.tracking.redaction import mask_password
from modules.tracking.store import make_private_sqlite

INIT_SQL = PROJECT_ROOT / "infra" / "postgres" / "init.sql"
# The prediction log's schema and roles, applied by db-init right after init.sql.
PREDICTION_LOG_SQL = PROJECT_ROOT / "infra" / "postgres" / "prediction_log.sql"
PID_FILE_NAME = "mlflow-server.pid"
LOG_FILE_NAME = "mlflow-server.log"
AUTH_CONFIG_NAME = "basic_auth.ini"
AUTH_MODES = ("none", "basic")
AUTH_PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
MIN_ADMIN_PASSWORD_LENGTH = 12  # MLflow's own minimum for the bootstrap admin password
ALLOW_PUBLIC_VAR = "MLFLOW_ALLOW_UNAUTHENTICATED_PUBLIC"
# What the server (and `mlflow db upgrade`, `psql`) may take from the caller's environment and
# .env: the system basics, MLflow's own settings, Google Cloud access for the bucket, libpq's.
_SERVER_ENV_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "PYTHONPATH",
        "PYTHONUNBUFFERED",
        "VIRTUAL_ENV",
        "LD_LIBRARY_PATH",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "STORAGE_EMULATOR_HOST",
        "CLOUDSDK_CONFIG",
        "GCE_METADATA_HOST",
        "GCE_METADATA_IP",
    }
)
_SERVER_ENV_PREFIXES = ("LC_", "MLFLOW_", "GOOGLE_", "PG")
# Never passed on, even with an allowed prefix: other programs' secrets and the clients' own
# credentials. The database password reaches the server as PGPASSWORD, set by us.
_NOT_FOR_SERVER = (
    "POSTGRES_PASSWORD",
    "POSTGRES_ADMIN_PASSWORD",
    "PGPASSWORD",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
)
_PRIVATE_UMASK = 0o077  # files the server creates (SQLite journals, local artifacts) stay private
_POSTGRES_KEYS = ("host", "port", "db", "user", "password")
_LOG_TAIL_LINES = 25

# Popen objects of the servers this process started, so that stop_server can reap them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class ServerAlreadyRunning(TrackingError):
    """`start` found the server of this project already running (the CLI exits 0)."""

    def __init__(self, pid: int, url: str) -> None:
        super().__init__(f"MLflow tracking server already running at {url} (pid {pid})")
        self.pid = pid
        self.url = url


class ServerStartError(TrackingError):
    """The server process exited or did not answer GET /health in time."""


@dataclass(frozen=True)
class ServerOptions:
    """Server settings that are not part of `Settings` (workers, timeouts, authentication, admin)."""

    workers: int = 1
    start_timeout: float = 90.0
    stop_timeout: float = 15.0
    auth: str = "none"
    auth_default_permission: str = "READ"
    admin_user: str = "postgres"
    admin_password: str = field(default="", repr=False)
    admin_db: str = "postgres"


@dataclass(frozen=True)
class ServerHandle:
    """A server started by `start_server`."""

    pid: int
    url: str
    log_path: Path
    pid_file: Path
    backend_store_uri: str  # never holds a password
    artifacts_destination: str
    auth: str
    startup_seconds: float


@dataclass(frozen=True)
class ServerStatus:
    """What `status` reports: is the server of the PID file running, and does it answer?"""

    running: bool
    pid: int | None
    url: str
    healthy: bool
    port: int = 0
    leftovers: tuple[int, ...] = ()  # processes of a server whose leader has exited (`make stop` ends them)
    foreign: tuple[int, ...] = ()  # other programs listening on the port


@dataclass(frozen=True)
class StoppedServer:
    """What `stop_server` did: the leader and the other processes it ended, and who it left alone."""

    port: int
    leader: int | None = None
    others: tuple[int, ...] = ()
    foreign: tuple[int, ...] = ()

    @property
    def stopped(self) -> bool:
        """True when any process of the server was running (and is now stopped)."""
        return self.leader is not None or bool(self.others)


# --------------------------------------------------------------------------- configuration


def config_environment(settings: Settings, env_overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables the server runs with: `.env`, then the process environment, then overrides."""
    return {**read_environment(settings.project_root), **(env_overrides or {})}


def server_environment(env: Mapping[str, str], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of `env` a server process needs (see `_SERVER_ENV_NAMES`), plus `extra`.

    A token or password the caller happens to have exported (GITHUB_TOKEN, AWS keys, the
    clients' MLFLOW_TRACKING_PASSWORD) never reaches the server, its workers or their logs.
    """
    kept = {
        key: value
        for key, value in env.items()
        if (key in _SERVER_ENV_NAMES or key.startswith(_SERVER_ENV_PREFIXES)) and key not in _NOT_FOR_SERVER
    }
    return {**kept, **(extra or {})}


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches: 127.0.0.0/8, ::1, `localhost`."""
    if host.strip().lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: reachable from elsewhere
        return False


def check_bind(
    host: str, *, authenticated: bool, env: Mapping[str, str], what: str = "the MLflow server"
) -> str | None:
    """Refuse to serve beyond loopback without authentication; returns a warning when overridden.

    MLFLOW_ALLOW_UNAUTHENTICATED_PUBLIC=1 accepts the risk (say, behind an authenticating proxy).
    """
    if authenticated or is_loopback(host):
        return None
    if (env.get(ALLOW_PUBLIC_VAR) or "").strip().lower() in ("1", "true", "yes"):
        return (
            f"warning: {what} listens on {host} without authentication ({ALLOW_PUBLIC_VAR}=1): "
            "anyone who can reach it can read and change every run and model"
        )
    raise ConfigurationError(
        f"MLFLOW_HOST={host} would open {what} to other machines without authentication: set "
        f"MLFLOW_AUTH=basic, bind 127.0.0.1, or set {ALLOW_PUBLIC_VAR}=1 to accept the risk"
    )


def load_server_options(env: Mapping[str, str], *, check_auth: bool = True) -> ServerOptions:
    """Read the server options from `env` (see `.env.example`) and check the basic-auth settings.

    Only starting a server needs the auth settings: `stop`, `status` and the database commands
    pass `check_auth=False` and work whatever MLFLOW_AUTH and its secrets say.
    """
    auth = (env.get("MLFLOW_AUTH") or "none").lower()
    permission = (env.get("MLFLOW_AUTH_DEFAULT_PERMISSION") or "READ").upper()
    if check_auth:
        _check_auth_settings(env, auth, permission)
    return ServerOptions(
        workers=env_int(env, "MLFLOW_WORKERS", ServerOptions.workers, minimum=1),
        start_timeout=env_float(env, "MLFLOW_SERVER_START_TIMEOUT", ServerOptions.start_timeout, low=0),
        stop_timeout=env_float(env, "MLFLOW_SERVER_STOP_TIMEOUT", ServerOptions.stop_timeout, low=0),
        auth=auth,
        auth_default_permission=permission,
        admin_user=env.get("POSTGRES_ADMIN_USER") or "postgres",
        admin_password=env.get("POSTGRES_ADMIN_PASSWORD") or "",
        admin_db=env.get("POSTGRES_ADMIN_DB") or "postgres",
    )


def _check_auth_settings(env: Mapping[str, str], auth: str, permission: str) -> None:
    """MLFLOW_AUTH and its permission are known values; basic auth has its secret key and a long admin password."""
    if auth not in AUTH_MODES:
        raise ConfigurationError(f"MLFLOW_AUTH={auth!r} must be one of {', '.join(AUTH_MODES)}")
    if permission not in AUTH_PERMISSIONS:
        raise ConfigurationError(
            f"MLFLOW_AUTH_DEFAULT_PERMISSION={permission!r} must be one of {', '.join(AUTH_PERMISSIONS)}"
        )
    if auth == "basic":
        if not env.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):
            raise ConfigurationError(
                "MLFLOW_AUTH=basic needs MLFLOW_FLASK_SERVER_SECRET_KEY (a long random string, "
                "e.g. from `python -c 'import secrets; print(secrets.token_hex(32))'`)"
            )
        admin_password = env.get("MLFLOW_AUTH_ADMIN_PASSWORD")
        # Unset is fine once the admin exists; MLflow itself refuses to create it without one.
        if admin_password is not None and len(admin_password) < MIN_ADMIN_PASSWORD_LENGTH:
            raise ConfigurationError(
                f"MLFLOW_AUTH_ADMIN_PASSWORD has {len(admin_password)} characters; "
                f"MLflow needs at least {MIN_ADMIN_PASSWORD_LENGTH}"
            )


def _check_postgres_settings(settings: Settings) -> None:
    """Half a PostgreSQL configuration is a mistake, not a reason to fall back to SQLite silently."""
    given = [k for k in ("host", "db", "user", "password") if settings.postgres.get(k)]
    if given and not settings.uses_postgres:
        missing = [f"POSTGRES_{k.upper()}" for k in _POSTGRES_KEYS if not settings.postgres.get(k)]
        raise ConfigurationError(
            f"{', '.join(missing)} not set: set every POSTGRES_* connection value for the "
            "PostgreSQL backend, or none of them for the local SQLite store"
        )
    port = settings.postgres.get("port", "")
    if settings.uses_postgres and not port.isdigit():
        raise ConfigurationError(f"POSTGRES_PORT={port!r} is not a port number")


def backend_store_uri(settings: Settings) -> str:
    """The store URI of the server, without the password (libpq reads PGPASSWORD)."""
    _check_postgres_settings(settings)
    if settings.uses_postgres:
        pg = settings.postgres
        user = urllib.parse.quote(pg["user"], safe="")
        database = urllib.parse.quote(pg["db"], safe="")
        host = f"[{pg['host']}]" if ":" in pg["host"] else pg["host"]
        return f"postgresql+psycopg2://{user}@{host}:{pg['port']}/{database}"
    # With a server URI in MLFLOW_TRACKING_URI the server itself still needs a store under the project.
    if settings.mlflow_tracking_uri.startswith("sqlite:///"):
        return settings.mlflow_tracking_uri
    return f"sqlite:///{settings.project_root / 'mlruns' / 'mlflow.db'}"


def artifacts_destination(settings: Settings) -> str:
    """Where the server stores artifacts: a cloud URI as given, a local folder as an absolute path."""
    root = settings.mlflow_artifact_root
    if "://" in root:
        return root
    path = Path(root).expanduser()
    return str(path if path.is_absolute() else settings.project_root / path)


def pid_file_path(settings: Settings) -> Path:
    """The PID file of the server of this project (`.run/mlflow-server.pid`)."""
    return settings.run_dir / PID_FILE_NAME


def log_file_path(settings: Settings) -> Path:
    """The log file of the server (`.run/mlflow-server.log`)."""
    return settings.run_dir / LOG_FILE_NAME


def auth_config_path(settings: Settings) -> Path:
    """The basic-auth configuration written for the server while it runs."""
    return settings.run_dir / AUTH_CONFIG_NAME


def _url_host(host: str) -> str:
    """The address clients use: a wildcard bind is reached through loopback on this machine."""
    try:
        address = ipaddress.ip_address(host or "127.0.0.1")
    except ValueError:  # a host name
        return host
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    return f"[{address}]" if address.version == 6 else str(address)


def server_url(settings: Settings) -> str:
    """The tracking URI and UI address of the server, e.g. `http://127.0.0.1:5000`."""
    return f"http://{_url_host(settings.mlflow_host)}:{settings.mlflow_port}"


def build_server_command(
    settings: Settings, options: ServerOptions | None = None
) -> tuple[list[str], dict[str, str]]:
    """The `mlflow server` argv and the variables it needs on top of the caller's environment.

    The backend store URI goes through MLFLOW_BACKEND_STORE_URI (the server's `--backend-store-uri`
    reads it) and the password through PGPASSWORD, so neither shows up in `ps`.
    """
    options = options or ServerOptions()
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        settings.mlflow_host,
        "--port",
        str(settings.mlflow_port),
        "--workers",
        str(options.workers),
        "--serve-artifacts",
        "--artifacts-destination",
        artifacts_destination(settings),
    ]
    env = {"MLFLOW_BACKEND_STORE_URI": backend_store_uri(settings)}
    if settings.uses_postgres:
        env["PGPASSWORD"] = settings.postgres["password"]
    if options.auth == "basic":
        argv += ["--app-name", "basic-auth"]
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config_path(settings))
    return argv, env


def build_ui_command(settings: Settings, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The `mlflow ui` argv on the embedded store, and its variables: the store URIs never go on argv."""
    root = settings.mlflow_artifact_root
    argv = [sys.executable, "-m", "mlflow", "ui", "--host", host, "--port", str(port), "--workers", "1"]
    env = {
        "MLFLOW_BACKEND_STORE_URI": settings.mlflow_tracking_uri,
        "MLFLOW_DEFAULT_ARTIFACT_ROOT": root if "://" in root else Path(root).resolve().as_uri(),
    }
    return argv, env


def auth_database_uri(settings: Settings) -> str:
    """Where basic auth keeps users and permissions: the same PostgreSQL database, or SQLite."""
    if settings.uses_postgres:
        return backend_store_uri(settings)
    return f"sqlite:///{settings.project_root / 'mlruns' / 'basic_auth.db'}"


def write_auth_config(settings: Settings, options: ServerOptions) -> Path:
    """Write the basic-auth ini file (no secret in it: PGPASSWORD and MLFLOW_AUTH_ADMIN_PASSWORD are env)."""
    path = auth_config_path(settings)
    # configparser interpolates `%`: a percent-encoded user name must be doubled.
    database_uri = auth_database_uri(settings).replace("%", "%%")
    text = (
        "# Written by `make mlflow_server`; removed by `make stop`.\n"
        "[mlflow]\n"
        f"default_permission = {options.auth_default_permission}\n"
        f"database_uri = {database_uri}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    write_atomically(path, text, private=True)
    return path


# --------------------------------------------------------------------------- processes


def _hide(text: str, secrets: Sequence[str]) -> str:
    """`text` with every secret and every URI password replaced by ***."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return mask_password(text)


@dataclass(frozen=True)
class ServerRecord:
    """What the PID file says: the server's PID, its process group and the port it was started on."""

    pid: int
    pgid: int
    port: int | None = None


def write_server_record(path: Path, record: ServerRecord) -> None:
    """Write the PID file: the PID on the first line (what `cat` and older readers expect), then keys."""
    lines = [str(record.pid), f"pgid={record.pgid}"]
    if record.port is not None:
        lines.append(f"port={record.port}")
    write_atomically(path, "\n".join(lines) + "\n", private=True)


def read_server_record(path: Path) -> ServerRecord | None:
    """The record in a PID file, or None when it is missing or its first line is no positive number.

    A file of older releases holds only the PID: its process group is the PID (the server is
    started in its own session) and its port is unknown.
    """
    try:
        lines = path.read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None
    first = lines[0].strip() if lines else ""
    if not first.isdigit() or int(first) <= 0:
        return None
    values = dict(line.strip().partition("=")[::2] for line in lines[1:] if "=" in line)
    pgid, port = values.get("pgid", ""), values.get("port", "")
    return ServerRecord(
        pid=int(first),
        pgid=int(pgid) if pgid.isdigit() and int(pgid) > 0 else int(first),
        port=int(port) if port.isdigit() and 0 < int(port) < 65536 else None,
    )


def read_pid_file(path: Path) -> int | None:
    """The PID in `path`, or None when the file is missing or holds no positive number."""
    record = read_server_record(path)
    return record.pid if record else None


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent PID, process group) of a process, or None when there is no such process."""
    if Path("/proc").is_dir():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return fields[0], int(fields[1]), int(fields[2])
        except (OSError, IndexError, ValueError):
            return None
    # macOS and other systems without /proc.
    result = subprocess.run(["ps", "-o", "stat=,ppid=,pgid=", "-p", str(pid)], capture_output=True, text=True)
    parts = result.stdout.split()
    return (parts[0][:1], int(parts[1]), int(parts[2])) if len(parts) >= 3 else None


def _process_state(pid: int) -> str | None:
    """The one-letter state of a process (R, S, Z, ...), or None when there is no such process."""
    stat = _proc_stat(pid)
    return stat[0] if stat else None


def is_process_alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped) counts as gone."""
    if pid in _CHILDREN:
        _CHILDREN[pid].poll()  # reap our own child as soon as it exits
    return _process_state(pid) not in (None, "Z", "X")


def process_command(pid: int) -> list[str]:
    """The argv of a process (empty when it is gone)."""
    if Path("/proc").is_dir():
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return []
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    result = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True)
    return result.stdout.split()


def binds_port(args: Sequence[str], port: int) -> bool:
    """True when an argv asks to serve on `port`: `--port N`, `--port=N`, `-b/--bind HOST:N`.

    Our `mlflow server` and the uvicorn (or gunicorn) supervisor it starts carry the port this
    way; a process that merely mentions the number elsewhere does not count.
    """
    wanted = str(port)
    for flag, value in zip(args, [*args[1:], ""], strict=True):
        if (flag == "--port" and value == wanted) or flag == f"--port={wanted}":
            return True
        if (flag in ("-b", "--bind") and value.rsplit(":", 1)[-1] == wanted) or (
            flag.startswith("--bind=") and flag.rsplit(":", 1)[-1] == wanted
        ):
            return True
    return False


def _lineage(pid: int, depth: int = 16) -> list[int]:
    """`pid` and its ancestors, nearest first, up to (not including) PID 1."""
    chain = []
    while pid > 1 and len(chain) < depth:
        stat = _proc_stat(pid)
        if stat is None:
            break
        chain.append(pid)
        pid = stat[1]
    return chain


def _server_root(pid: int, port: int) -> int | None:
    """The outermost process in `pid`'s lineage (itself included) that was started to serve `port`.

    A uvicorn worker's own argv names no port, but its parent's does; None when no process of
    the lineage was started for `port`.
    """
    roots = [ancestor for ancestor in _lineage(pid) if binds_port(process_command(ancestor), port)]
    return roots[-1] if roots else None


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    if Path("/proc").is_dir():
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                stat = _proc_stat(int(entry.name))
                if stat is not None and stat[0] not in ("Z", "X"):
                    children.setdefault(stat[1], []).append(int(entry.name))
        return children
    result = subprocess.run(["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True)
    for line in result.stdout.splitlines():
        pid, parent = (int(part) for part in line.split()[:2])
        children.setdefault(parent, []).append(pid)
    return children


def _with_descendants(pids: set[int]) -> set[int]:
    children = _children_map()
    found, queue = set(pids), list(pids)
    while queue:
        for child in children.get(queue.pop(), []):
            if child not in found:
                found.add(child)
                queue.append(child)
    return found


def process_group_members(pgid: int) -> list[int]:
    """PIDs of the live processes in process group `pgid` (the server and its workers)."""
    members: list[int] = []
    if Path("/proc").is_dir():
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                stat = _proc_stat(int(entry.name))
                if stat is not None and stat[2] == pgid and stat[0] not in ("Z", "X"):
                    members.append(int(entry.name))
        return members
    result = subprocess.run(["ps", "-A", "-o", "pid=,pgid=,stat="], capture_output=True, text=True)
    for line in result.stdout.splitlines():
        pid, group, state = line.split()[:3]
        if int(group) == pgid and not state.startswith("Z"):
            members.append(int(pid))
    return members


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on TCP `port` (any address, IPv4 or IPv6), from /proc/net."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            # local_address is HEXADDR:HEXPORT; state 0A is LISTEN.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def listening_pids(port: int) -> list[int]:
    """PIDs of the processes holding a socket that listens on TCP `port` (all that share it)."""
    if not Path("/proc").is_dir():
        lsof = shutil.which("lsof")
        if lsof is None:
            return []
        result = subprocess.run(
            [lsof, "-nP", "-t", f"-iTCP:{port}", "-sTCP:LISTEN"], capture_output=True, text=True
        )
        return sorted({int(line) for line in result.stdout.split() if line.isdigit()})
    targets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    owners: set[int] = set()
    if not targets:
        return []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            descriptors = list((entry / "fd").iterdir())
        except OSError:  # gone, or another user's process
            continue
        for descriptor in descriptors:
            try:
                if os.readlink(descriptor) in targets:
                    owners.add(int(entry.name))
                    break
            except OSError:
                continue
    return sorted(owners)


@dataclass(frozen=True)
class ServerProcesses:
    """The processes of this project's server: found from the PID file and from the port's owners.

    `leader` is the PID file's `mlflow server` while it runs; `leftovers` are its other
    processes (uvicorn supervisor, workers), also those orphaned when the leader was killed;
    `groups` are the process groups that are wholly ours; `foreign` hold the port but were not
    started by us (left alone).
    """

    port: int
    leader: int | None = None
    leftovers: tuple[int, ...] = ()
    groups: tuple[int, ...] = ()
    foreign: tuple[int, ...] = ()

    @property
    def pids(self) -> list[int]:
        """Every process of ours, leader first."""
        return ([self.leader] if self.leader else []) + [p for p in self.leftovers if p != self.leader]

    @property
    def found(self) -> bool:
        return bool(self.pids)


def _own_processes() -> tuple[set[int], int]:
    """This process and its ancestors (never signalled), and this process's group."""
    return set(_lineage(os.getpid())) | {os.getpid()}, os.getpgid(0)


def find_server_processes(settings: Settings) -> ServerProcesses:
    """Find the server of the PID file, its process group, and whatever of it listens on its port.

    A process counts as ours when it is in the PID file's process group (whose leader is our
    server, or has exited: Linux reuses no PID while its process group lives), or when it or an
    ancestor was started to serve our port (`--port N`). Command-line words such as `mlflow`
    prove nothing.
    """
    record = read_server_record(pid_file_path(settings))
    port = record.port if record and record.port else settings.mlflow_port
    own, own_group = _own_processes()
    owners = listening_pids(port)
    leader = None
    ours: set[int] = set()
    groups: set[int] = set()
    if record is not None and record.pgid != own_group:
        members = process_group_members(record.pgid)
        leader_alive = is_process_alive(record.pid)
        # A live PID-file process is ours only when it was started for our port (not a recycled PID).
        if leader_alive and binds_port(process_command(record.pid), port):
            leader = record.pid
        # With the leader gone, its group is still ours when a member serves our port.
        if leader is not None or (
            not leader_alive and any(m in owners or _server_root(m, port) is not None for m in members)
        ):
            groups.add(record.pgid)
            ours.update(members)
            if leader is not None:
                ours.add(leader)
    foreign = []
    for owner in owners:
        if owner in ours:
            continue
        root = _server_root(owner, port)
        if root is None or root in own:
            foreign.append(owner)
        else:
            ours |= _with_descendants({root})
    ours -= own
    return ServerProcesses(
        port=port,
        leader=leader,
        leftovers=tuple(sorted(ours - {leader} if leader else ours)),
        groups=tuple(sorted(groups)),
        foreign=tuple(sorted(set(foreign) - ours)),
    )


def _send(pid: int, signum: int, *, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:  # killpg reaches the workers even after the group leader itself has exited
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)


def _alive(pids: Sequence[int], groups: Sequence[int]) -> list[int]:
    """Which of `pids` and of the members of `groups` still run (our own children are reaped)."""
    members = {member for group in groups for member in process_group_members(group)}
    return sorted(pid for pid in set(pids) | members if is_process_alive(pid))


def _wait_until_gone(pids: Sequence[int], groups: Sequence[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = _alive(pids, groups)
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def terminate_processes(pids: Sequence[int], groups: Sequence[int] = (), timeout: float = 15.0) -> list[int]:
    """SIGTERM the process groups and the processes; SIGKILL what is left after `timeout` seconds.

    Returns the PIDs still alive at the end (none, unless a process cannot be signalled).
    """
    for signum, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        # A request stuck on an unreachable artifact store blocks the graceful shutdown: hence SIGKILL.
        for group in groups:
            _send(group, signum, group=True)
        for pid in _alive(pids, ()):
            _send(pid, signum, group=False)
        alive = _wait_until_gone(pids, groups, wait)
        if not alive:
            break
    for pid in [*pids, *groups]:
        _CHILDREN.pop(pid, None)
    return alive


def terminate_process_group(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the process group led by `pid`; SIGKILL what is left after `timeout` seconds."""
    try:
        group = os.getpgid(pid) == pid
    except ProcessLookupError:
        group = bool(process_group_members(pid))  # the leader is gone, its workers may not be
    terminate_processes([pid], [pid] if group else [], timeout=timeout)


def running_server_pid(settings: Settings) -> int | None:
    """The PID of this project's server when its PID file points at a live server started for its port."""
    record = read_server_record(pid_file_path(settings))
    if record is None or not is_process_alive(record.pid):
        return None
    port = record.port or settings.mlflow_port
    return record.pid if binds_port(process_command(record.pid), port) else None


def _remove_run_files(settings: Settings) -> None:
    for path in (pid_file_path(settings), auth_config_path(settings)):
        path.unlink(missing_ok=True)


def _log_tail(path: Path, secrets: Sequence[str] = (), lines: int = _LOG_TAIL_LINES) -> str:
    """The last lines of a log, indented, with secrets masked."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "    (no log written)"
    tail = text.splitlines()[-lines:] or ["(log is empty)"]
    return "\n".join(f"    {_hide(line, secrets)}" for line in tail)


def _local_opener() -> urllib.request.OpenerDirector:
    # Our own server is on this machine: never send the health check through an HTTP proxy.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _answers_health(url: str, timeout: float = 2.0) -> bool:
    try:
        with _local_opener().open(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def _ensure_port_free(host: str, port: int) -> None:
    """Refuse to start when something else listens there: its /health would fool our wait."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.settimeout(1.0)
        if sock.connect_ex((_url_host(host).strip("[]"), port)) == 0:
            holders = listening_pids(port)
            by = f", {_describe_foreign(holders)}" if holders else ""
            raise TrackingError(
                f"port {port} on {host} is already in use by another process{by}; "
                "stop it or set MLFLOW_PORT to a free port"
            )


def _prepare_local_stores(settings: Settings, backend_uri: str, destination: str) -> None:
    make_private_sqlite(backend_uri)
    if "://" not in destination:
        Path(destination).mkdir(parents=True, exist_ok=True)


def _wait_until_healthy(
    url: str, process: subprocess.Popen[bytes], timeout: float, log_path: Path, secrets: Sequence[str]
) -> float:
    started = time.monotonic()
    while True:
        if process.poll() is not None:
            raise ServerStartError(
                f"MLflow server exited with code {process.returncode} before answering {url}/health. "
                f"Last lines of {log_path}:\n{_log_tail(log_path, secrets)}"
            )
        if _answers_health(url):
            return time.monotonic() - started
        if time.monotonic() - started >= timeout:
            raise ServerStartError(
                f"MLflow server did not answer {url}/health within {timeout:g} s "
                f"(raise MLFLOW_SERVER_START_TIMEOUT or --timeout if the machine is slow). "
                f"Last lines of {log_path}:\n{_log_tail(log_path, secrets)}"
            )
        time.sleep(0.25)


def check_database(settings: Settings, timeout: float = 10.0) -> None:
    """Fail in seconds when the PostgreSQL backend is unreachable or refuses the credentials.

    `mlflow server` itself retries a failing database for about 100 s before it gives up.
    """
    if not settings.uses_postgres:
        return
    import psycopg2  # only the PostgreSQL backend needs it

    pg = settings.postgres
    try:
        psycopg2.connect(
            host=pg["host"],
            port=int(pg["port"]),
            dbname=pg["db"],
            user=pg["user"],
            password=pg["password"],
            connect_timeout=max(1, round(timeout)),
        ).close()
    except psycopg2.Error as exc:
        reason = _hide(" ".join(str(exc).split()), [pg["password"]])
        raise TrackingError(
            f"PostgreSQL at {pg['host']}:{pg['port']} (database {pg['db']}, user {pg['user']}) "
            f"is not usable: {reason}"
        ) from None


def start_server(
    settings: Settings,
    *,
    env_overrides: Mapping[str, str] | None = None,
    timeout: float | None = None,
    options: ServerOptions | None = None,
) -> ServerHandle:
    """Start `mlflow server` in its own session, write the PID file and wait for GET /health.

    `env_overrides` is added to `.env` and the process environment for the server and for the
    options (MLFLOW_AUTH, MLFLOW_WORKERS, ...). Raises ServerAlreadyRunning when the PID file
    points at a live server, ServerStartError (with the log's last lines) when it does not come up.
    """
    env = config_environment(settings, env_overrides)
    options = options or load_server_options(env)
    warning = check_bind(settings.mlflow_host, authenticated=options.auth == "basic", env=env)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    timeout = options.start_timeout if timeout is None else timeout
    argv, server_env = build_server_command(settings, options)
    url = server_url(settings)
    existing = running_server_pid(settings)
    if existing is not None:
        raise ServerAlreadyRunning(existing, url)
    leftovers = find_server_processes(settings)
    if leftovers.found:  # the PID file stays: `make stop` needs it to find them
        raise TrackingError(
            f"processes of this project's last MLflow server (pids {_pid_list(leftovers.pids)}) still "
            f"hold port {leftovers.port}; run `make stop` first"
        )
    _remove_run_files(settings)  # stale files of a server that is gone
    _ensure_port_free(settings.mlflow_host, settings.mlflow_port)
    check_database(settings)
    destination = artifacts_destination(settings)
    _prepare_local_stores(settings, server_env["MLFLOW_BACKEND_STORE_URI"], destination)
    settings.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if options.auth == "basic":
        write_auth_config(settings, options)
        make_private_sqlite(auth_database_uri(settings))

    process_env = server_environment(env, server_env)
    # The job runner serves GenAI evaluation jobs this project does not use: one process less.
    process_env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")

    log_path = log_file_path(settings)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            env=process_env,
            cwd=settings.project_root,
            start_new_session=True,  # its own process group: stop signals server and workers together
            umask=_PRIVATE_UMASK,
        )
    finally:
        os.close(log_fd)
    _CHILDREN[process.pid] = process
    try:
        pgid = os.getpgid(process.pid)
    except ProcessLookupError:  # exited at once: _wait_until_healthy reports it with the log
        pgid = process.pid
    write_server_record(pid_file_path(settings), ServerRecord(process.pid, pgid, settings.mlflow_port))
    try:
        startup = _wait_until_healthy(
            url, process, timeout, log_path, [settings.postgres.get("password", "")]
        )
    except BaseException:  # also Ctrl-C while waiting: leave no half-started server behind
        terminate_process_group(process.pid, timeout=5.0)
        _remove_run_files(settings)
        raise
    return ServerHandle(
        pid=process.pid,
        url=url,
        log_path=log_path,
        pid_file=pid_file_path(settings),
        backend_store_uri=server_env["MLFLOW_BACKEND_STORE_URI"],
        artifacts_destination=destination,
        auth=options.auth,
        startup_seconds=startup,
    )


def stop_server(settings: Settings, *, timeout: float = 15.0) -> StoppedServer:
    """Stop the server of the PID file with its whole process group, and whatever of it holds its port.

    The processes are found by `find_server_processes`, so workers orphaned by a killed leader
    are stopped too, while a recycled PID or another program on the port is never signalled.
    SIGTERM first, SIGKILL after `timeout` seconds. The PID file is removed only when none of the
    server's processes is left; otherwise TrackingError names the survivors and the file stays.
    """
    found = find_server_processes(settings)
    if found.found:
        terminate_processes(found.pids, found.groups, timeout=timeout)
        left = find_server_processes(settings)
        if left.found:
            raise TrackingError(
                f"could not stop pids {_pid_list(left.pids)} of the MLflow server on port {left.port}; "
                f"{pid_file_path(settings)} is kept so that `make stop` can try again"
            )
    _remove_run_files(settings)
    others = tuple(pid for pid in found.pids if pid != found.leader)
    return StoppedServer(port=found.port, leader=found.leader, others=others, foreign=found.foreign)


def server_status(settings: Settings) -> ServerStatus:
    """Whether the server of the PID file runs and answers GET /health, and what else holds its port."""
    found = find_server_processes(settings)
    url = f"http://{_url_host(settings.mlflow_host)}:{found.port}"
    running = found.leader is not None
    return ServerStatus(
        running=running,
        pid=found.leader,
        url=url,
        healthy=running and _answers_health(url),
        port=found.port,
        leftovers=() if running else found.leftovers,
        foreign=found.foreign,
    )


def _pid_list(pids: Sequence[int]) -> str:
    return ", ".join(str(pid) for pid in pids)


def _describe_foreign(pids: Sequence[int]) -> str:
    """`pid 123 (nginx)`: which programs hold a port, by name only (argv may hold secrets)."""
    names = []
    for pid in pids:
        args = process_command(pid)
        names.append(f"pid {pid} ({Path(args[0]).name})" if args else f"pid {pid}")
    return ", ".join(names)


# --------------------------------------------------------------------------- database


def find_postgres_binary(name: str) -> Path:
    """A PostgreSQL program (psql, initdb, pg_ctl): PATH first, then Debian's versioned folders."""
    found = shutil.which(name)
    if found:
        return Path(found)

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.parent.name))

    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=version, reverse=True)
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    raise ConfigurationError(
        f"{name} not found on PATH or in /usr/lib/postgresql/*/bin: install PostgreSQL "
        "(`apt-get install postgresql-client` for psql, infra/postgres/install_server.sh for the server)"
    )


def _psql_quote(value: str, name: str = "POSTGRES_PASSWORD") -> str:
    """Quote a value for a psql meta-command (`\\set`): doubled quotes, escaped backslashes."""
    if "\n" in value or "\r" in value:
        raise ConfigurationError(f"{name} must be a single line")
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def db_init(
    settings: Settings,
    *,
    admin_user: str = "postgres",
    admin_password: str = "",
    admin_db: str = "postgres",
    init_sql: Path = INIT_SQL,
    prediction_log_sql: Path | None = PREDICTION_LOG_SQL,
) -> str:
    """Apply `infra/postgres/init.sql` as the admin user: database, user, grants. Returns psql's output.

    Then `prediction_log.sql` (unless None): the `predictions` schema and its writer and reader
    roles, with PREDICTION_WRITER_PASSWORD and PREDICTION_READER_PASSWORD (unset: unchanged).
    The names go to psql as `-v` variables; the passwords go through psql's standard input
    (`\\set dbpassword`) and the admin's through PGPASSWORD, so none is in `ps`.
    """
    _check_postgres_settings(settings)
    if not settings.uses_postgres:
        raise ConfigurationError(
            "db-init needs POSTGRES_HOST, POSTGRES_DB, POSTGRES_USER and POSTGRES_PASSWORD "
            "(and POSTGRES_ADMIN_PASSWORD for the admin user)"
        )
    pg = settings.postgres
    argv = [
        str(find_postgres_binary("psql")),
        "--no-psqlrc",
        "--quiet",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        pg["host"],
        "-p",
        pg["port"],
        "-U",
        admin_user,
        "-d",
        admin_db,
        "-v",
        f"dbname={pg['db']}",
        "-v",
        f"dbuser={pg['user']}",
        "-f",
        "-",
    ]
    script = f"\\set dbpassword {_psql_quote(pg['password'])}\n\\i {_psql_quote(str(init_sql))}\n"
    log_passwords = [pg.get("prediction_writer_password", ""), pg.get("prediction_reader_password", "")]
    if prediction_log_sql is not None:
        script += (
            f"\\set writer_password {_psql_quote(log_passwords[0], 'PREDICTION_WRITER_PASSWORD')}\n"
            f"\\set reader_password {_psql_quote(log_passwords[1], 'PREDICTION_READER_PASSWORD')}\n"
            f"\\i {_psql_quote(str(prediction_log_sql))}\n"
        )
    env = server_environment(config_environment(settings))
    env.setdefault("PGCONNECT_TIMEOUT", "10")  # an unreachable host fails in seconds
    if admin_password:
        env["PGPASSWORD"] = admin_password
    else:
        env.pop("PGPASSWORD", None)
    result = subprocess.run(argv, input=script, capture_output=True, text=True, env=env)
    output = _hide(result.stdout + result.stderr, [pg["password"], admin_password, *log_passwords])
    if result.returncode != 0:
        last = output.strip().splitlines()[-1] if output.strip() else f"exit code {result.returncode}"
        raise TrackingError(
            f"psql could not apply {init_sql} to {pg['host']}:{pg['port']} as {admin_user}: {last}"
        )
    return output


def db_upgrade(settings: Settings) -> str:
    """Run `mlflow db upgrade` on the backend store (the password only in PGPASSWORD). Returns its output."""
    uri = backend_store_uri(settings)
    env = server_environment(config_environment(settings))
    if settings.uses_postgres:
        env["PGPASSWORD"] = settings.postgres["password"]
    else:
        _prepare_local_stores(settings, uri, artifacts_destination(settings))
    result = subprocess.run(
        [sys.executable, "-m", "mlflow", "db", "upgrade", uri],
        capture_output=True,
        text=True,
        env=env,
        umask=_PRIVATE_UMASK,
    )
    output = _hide(result.stdout + result.stderr, [settings.postgres.get("password", "")])
    if result.returncode != 0:
        lines = [line for line in output.strip().splitlines() if line.strip()]
        raise TrackingError(f"mlflow db upgrade {uri} failed: {lines[-1] if lines else result.returncode}")
    return output


# --------------------------------------------------------------------------- command line


def _say(text: str) -> None:
    print(mask_password(text), flush=True)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _start(settings: Settings, timeout: float | None) -> int:
    try:
        handle = start_server(settings, timeout=timeout)
    except ServerAlreadyRunning as exc:
        # Idempotent on purpose: `make mlflow_server` twice leaves one server and succeeds.
        _say(f"{exc}; `make stop` first to restart it with new settings")
        return 0
    root = settings.project_root
    _say(
        f"MLflow tracking server running at {handle.url} (pid {handle.pid}, healthy after {handle.startup_seconds:.1f} s)"
    )
    _say(f"  backend store: {handle.backend_store_uri}")
    _say(f"  artifacts:     {handle.artifacts_destination} (proxied by the server)")
    _say(
        f"  auth:          {'basic (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)' if handle.auth == 'basic' else 'none'}"
    )
    _say(f"  log:           {_relative(handle.log_path, root)}")
    _say(f"Open the UI at {handle.url}; clients use MLFLOW_TRACKING_URI={handle.url}; stop with `make stop`.")
    return 0


def _ui(settings: Settings, host: str | None, port: int | None) -> int:
    """`make mlflow_ui`: replace this process by `mlflow ui` on the embedded store."""
    uri = settings.mlflow_tracking_uri
    if uri.startswith(("http://", "https://")):
        _say(f"MLflow tracking server: open {uri} in a browser")
        return 0
    host, port = host or settings.mlflow_host, port or settings.mlflow_port
    env = config_environment(settings)
    warning = check_bind(host, authenticated=False, env=env, what="the MLflow UI")
    if warning:
        print(warning, file=sys.stderr, flush=True)
    make_private_sqlite(uri)
    argv, ui_env = build_ui_command(settings, host, port)
    process_env = server_environment(env, ui_env)
    # The UI needs no background job workers (MLflow's GenAI job runner): keep it to one process.
    process_env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    _say(f"MLflow UI on {uri}: http://{_url_host(host)}:{port} (Ctrl+C to stop)")
    os.umask(_PRIVATE_UMASK)
    os.execve(sys.executable, argv, process_env)
    return 0  # not reached: execve replaces this process


@click.group(
    "server",
    help="Run the MLflow tracking server of this project: PostgreSQL backend when POSTGRES_* are set (SQLite "
    "under mlruns/ otherwise), artifacts proxied to MLFLOW_ARTIFACT_ROOT, bound to MLFLOW_HOST:MLFLOW_PORT "
    "(127.0.0.1:5000). Settings come from the environment and .env; see .env.example.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
def cli() -> None:
    """`make mlflow_server`, `make stop`, `make mlflow_ui`, `make db_init`, `make db_upgrade`."""


def _exit(code: int) -> None:
    if code:
        raise SystemExit(code)


@cli.command("start", short_help="start the server in the background and wait until GET /health answers")
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="seconds to wait for GET /health (default: MLFLOW_SERVER_START_TIMEOUT or 90)",
)
def start_command(timeout: float | None) -> None:
    """Start the server in the background and wait until GET /health answers."""
    _exit(_start(load_settings(), timeout))


@cli.command("ui", short_help="serve the MLflow UI on the embedded store of MLFLOW_TRACKING_URI")
@click.option("--host", default=None, help="address to bind (default: MLFLOW_HOST or 127.0.0.1)")
@click.option("--port", type=int, default=None, help="port (default: MLFLOW_PORT or 5000)")
def ui_command(host: str | None, port: int | None) -> None:
    """Serve the MLflow UI on the embedded store of MLFLOW_TRACKING_URI (127.0.0.1 by default)."""
    _exit(_ui(load_settings(), host, port))


def _options_without_secrets(settings: Settings) -> ServerOptions:
    # Only `start` needs the auth settings: stopping or checking a server never asks for its secrets.
    return load_server_options(config_environment(settings), check_auth=False)


@cli.command("stop", short_help="stop the server of the PID file and its workers")
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="seconds to wait after SIGTERM before SIGKILL (default: MLFLOW_SERVER_STOP_TIMEOUT or 15)",
)
def stop_command(timeout: float | None) -> None:
    """Stop the server of the PID file and its workers."""
    settings = load_settings()
    options = _options_without_secrets(settings)
    result = stop_server(settings, timeout=options.stop_timeout if timeout is None else timeout)
    if result.leader is not None:
        _say(f"Stopped the MLflow tracking server (pid {result.leader}) and its workers.")
    elif result.others:
        _say(
            f"Stopped {len(result.others)} leftover processes of the MLflow tracking server on port "
            f"{result.port} (pids {_pid_list(result.others)}); its main process had already exited."
        )
    else:
        _say("MLflow tracking server not running (no live server in the PID file).")
    if result.foreign:
        _say(
            f"Port {result.port} is in use by {_describe_foreign(result.foreign)}, which "
            "`make mlflow_server` did not start: left alone."
        )


@cli.command("status", short_help="say whether the server runs and answers (exit 1 when not running)")
def status_command() -> None:
    """Say whether the server runs and answers (exit 1 when not running)."""
    status = server_status(load_settings())
    if status.running:
        health = "healthy" if status.healthy else "not answering GET /health"
        _say(f"MLflow tracking server running at {status.url} (pid {status.pid}, {health}).")
        return
    if status.leftovers:
        _say(
            f"MLflow tracking server not running, but {len(status.leftovers)} of its processes "
            f"(pids {_pid_list(status.leftovers)}) still hold port {status.port}: `make stop` ends them."
        )
    else:
        _say("MLflow tracking server not running.")
    if status.foreign:
        _say(f"Port {status.port} is in use by {_describe_foreign(status.foreign)}.")
    raise SystemExit(1)


@cli.command(
    "db-init",
    short_help="create the database, user and grants (infra/postgres/init.sql) as POSTGRES_ADMIN_USER",
)
def db_init_command() -> None:
    """Create the database, user and grants (infra/postgres/init.sql) as POSTGRES_ADMIN_USER."""
    settings = load_settings()
    options = _options_without_secrets(settings)
    pg = settings.postgres
    _say(
        f"Applying {_relative(INIT_SQL, PROJECT_ROOT)} to {pg['host']}:{pg['port']} as {options.admin_user}..."
    )
    db_init(
        settings,
        admin_user=options.admin_user,
        admin_password=options.admin_password,
        admin_db=options.admin_db,
    )
    _say(
        f"Database {pg['db']} and user {pg['user']} are ready, and the prediction log's schema "
        "`predictions` with its roles prediction_writer and prediction_reader. Next: make mlflow_server"
    )


@cli.command("db-upgrade", short_help="apply MLflow's schema migrations to the backend store")
def db_upgrade_command() -> None:
    """Apply MLflow's schema migrations to the backend store."""
    settings = load_settings()
    _say(f"Upgrading the MLflow schema of {backend_store_uri(settings)}...")
    output = db_upgrade(settings)
    for line in output.strip().splitlines()[-3:]:
        _say(f"  {line}")
    _say("Schema is up to date.")
