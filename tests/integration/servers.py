"""Real servers for the integration tests: a throwaway PostgreSQL, the GCS emulator, MLflow.

Plain functions and classes, so that conftest.py stays a thin layer of fixtures and other test
modules (the flow tests) can start the same stack. Every server binds to 127.0.0.1 on a free
port picked at run time and is stopped by the PID we started.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from modules.errors import ConfigurationError
from modules.settings import PROJECT_ROOT, Settings, load_settings
from modules.tracking.server import (
    ServerHandle,
    StoppedServer,
    db_init,
    find_postgres_binary,
    start_server,
    stop_server,
)

INSTALL_SERVER_SCRIPT = PROJECT_ROOT / "infra" / "postgres" / "install_server.sh"
# The unprivileged user that runs PostgreSQL when the tests run as root (initdb refuses root).
POSTGRES_OS_USER = "nobody"
# Passwords with quotes, URI and shell metacharacters: quoting mistakes fail loudly.
SUPERUSER_PASSWORD = "Sup3r'user:pw@%/#"
APP_PASSWORD = "Mlfl0w-db'pw@:%/?#x"
# The basic-auth admin of the servers started with MLFLOW_AUTH=basic.
AUTH_ADMIN_USERNAME = "admin"
AUTH_ADMIN_PASSWORD = "Admin-pass-0123456789"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _no_proxy_get(url: str, timeout: float = 2.0) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")


# --------------------------------------------------------------------------- PostgreSQL


def postgres_bin_dir() -> Path:
    """The folder of initdb/pg_ctl; runs infra/postgres/install_server.sh when the server is missing."""
    try:
        return find_postgres_binary("initdb").resolve().parent
    except ConfigurationError:
        subprocess.run(["bash", str(INSTALL_SERVER_SCRIPT)], check=True)
        return find_postgres_binary("initdb").resolve().parent


def _as_postgres_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError("running as root needs `runuser` to start PostgreSQL as an unprivileged user")
    return [runuser, "-u", POSTGRES_OS_USER, "--", *argv]


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with scram-sha-256 password checks."""

    host: str
    port: int
    superuser: str
    superuser_password: str
    base_dir: Path
    bin_dir: Path

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "postgres.log"

    def stop(self) -> None:
        """Stop the cluster (fast shutdown) and delete its files."""
        pg_ctl = str(self.bin_dir / "pg_ctl")
        subprocess.run(
            _as_postgres_user([pg_ctl, "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30", "stop"]),
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.base_dir, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """initdb + pg_ctl start on a free port, as `nobody` when root; ready when this returns."""
    bin_dir = postgres_bin_dir()
    # Not under pytest's tmp dirs: those are 0700 root-only, and the server runs as `nobody`.
    base_dir = Path(tempfile.mkdtemp(prefix="operational-ml-pg-"))
    data_dir, socket_dir = base_dir / "data", base_dir / "socket"
    socket_dir.mkdir()
    pwfile = base_dir / "superuser.pw"
    pwfile.write_text(SUPERUSER_PASSWORD + "\n")
    pwfile.chmod(0o600)
    if os.geteuid() == 0:
        shutil.chown(base_dir, POSTGRES_OS_USER)
        shutil.chown(socket_dir, POSTGRES_OS_USER)
        shutil.chown(pwfile, POSTGRES_OS_USER)
    server = PostgresServer("127.0.0.1", free_port(), "postgres", SUPERUSER_PASSWORD, base_dir, bin_dir)
    initdb = [
        str(bin_dir / "initdb"),
        "-D",
        str(data_dir),
        "-U",
        server.superuser,
        f"--pwfile={pwfile}",
        "--auth-host=scram-sha-256",
        "--auth-local=scram-sha-256",
        "--encoding=UTF8",
        "--locale=C",
    ]
    try:
        subprocess.run(_as_postgres_user(initdb), capture_output=True, text=True, check=True)
        pwfile.unlink()
        options = (
            f"-p {server.port} -k {socket_dir} -c listen_addresses=127.0.0.1 "
            "-c password_encryption=scram-sha-256 -c fsync=off"
        )
        start = [
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data_dir),
            "-l",
            str(server.log_path),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        ]
        subprocess.run(_as_postgres_user(start), capture_output=True, text=True, check=True)
    except subprocess.CalledProcessError as exc:
        log = server.log_path.read_text() if server.log_path.exists() else ""
        server.stop()
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr}\n{log}") from exc
    return server


@dataclass(frozen=True)
class PostgresDatabase:
    """One database of the throwaway server with its own (non-superuser) owner."""

    server: PostgresServer
    db: str
    user: str
    password: str

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def dsn(self) -> str:
        """A libpq keyword string (psycopg2.connect(dsn))."""
        quoted = self.password.replace("\\", "\\\\").replace("'", "\\'")
        return f"host={self.host} port={self.port} dbname={self.db} user={self.user} password='{quoted}'"

    @property
    def uri(self) -> str:
        """A SQLAlchemy URI with the password percent-encoded (for clients; never printed)."""
        password = urllib.parse.quote(self.password, safe="")
        return f"postgresql+psycopg2://{self.user}:{password}@{self.host}:{self.port}/{self.db}"

    def env(self) -> dict[str, str]:
        """The POSTGRES_* variables of `make mlflow_server` / `make db_init` for this database."""
        return {
            "POSTGRES_HOST": self.host,
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_DB": self.db,
            "POSTGRES_USER": self.user,
            "POSTGRES_PASSWORD": self.password,
            "POSTGRES_ADMIN_USER": self.server.superuser,
            "POSTGRES_ADMIN_PASSWORD": self.server.superuser_password,
        }


def create_database(
    server: PostgresServer, db: str, user: str, password: str = APP_PASSWORD
) -> PostgresDatabase:
    """Run infra/postgres/init.sql through the code of `make db_init`."""
    database = PostgresDatabase(server, db, user, password)
    settings = load_settings(env=database.env())
    db_init(settings, admin_user=server.superuser, admin_password=server.superuser_password)
    return database


# --------------------------------------------------------------------------- GCS emulator


@dataclass
class GcsEmulator:
    """gcp-storage-emulator serving one bucket on 127.0.0.1."""

    url: str
    bucket: str
    data_dir: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def client(self):
        """A google-cloud-storage client talking to the emulator (no credentials, no env var)."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": self.url}
        )

    def object_names(self, prefix: str = "") -> list[str]:
        """Names of the objects in the bucket under `prefix`."""
        return [blob.name for blob in self.client().list_blobs(self.bucket, prefix=prefix)]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def start_gcs_emulator(data_dir: Path, bucket: str = "mlflow-test-artifacts") -> GcsEmulator:
    """Start gcp-storage-emulator with `bucket` created; ready when this returns."""
    executable = Path(sys.executable).parent / "gcp-storage-emulator"
    if not executable.exists():
        executable = Path(shutil.which("gcp-storage-emulator") or "gcp-storage-emulator")
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = (data_dir.parent / "gcs-emulator.log").open("wb")
    process = subprocess.Popen(
        [
            str(executable),
            "-d",
            str(data_dir),
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--default-bucket",
            bucket,
            "--quiet",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    emulator = GcsEmulator(f"http://127.0.0.1:{port}", bucket, data_dir, process)
    try:
        _wait_for(
            lambda: process.poll() is None and _no_proxy_get(f"{emulator.url}/storage/v1/b/{bucket}") == 200,
            timeout=30,
            what="gcp-storage-emulator",
        )
    except RuntimeError:
        emulator.stop()
        raise
    return emulator


# --------------------------------------------------------------------------- MLflow server


@dataclass
class MlflowServer:
    """A tracking server started by modules.tracking.server.start_server (the `make mlflow_server` path)."""

    handle: ServerHandle
    settings: Settings
    env: dict[str, str]

    @property
    def tracking_uri(self) -> str:
        return self.handle.url

    @property
    def artifact_root(self) -> str:
        return self.settings.mlflow_artifact_root

    def stop(self) -> StoppedServer:
        """`make stop`: the server's whole process group and anything of it left on its port."""
        return stop_server(self.settings)


def mlflow_server_env(
    database: PostgresDatabase,
    gcs: GcsEmulator,
    run_dir: Path,
    *,
    artifact_prefix: str = "mlartifacts",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment `make mlflow_server` would see for this PostgreSQL database and bucket."""
    env = {
        **database.env(),
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(free_port()),
        "MLFLOW_ARTIFACT_ROOT": f"gs://{gcs.bucket}/{artifact_prefix}",
        "RUN_DIR": str(run_dir),
        "MLFLOW_WORKERS": "1",
        "MLFLOW_SERVER_START_TIMEOUT": "180",
        # Only the server talks to GCS; the tests' own clients go through the server's proxy.
        "STORAGE_EMULATOR_HOST": gcs.url,
    }
    env.update(extra or {})
    return env


def launch_mlflow_server(env: Mapping[str, str]) -> MlflowServer:
    """Start the server exactly as `make mlflow_server` does, with settings built from `env`."""
    env = dict(env)
    settings = load_settings(env=env)
    handle = start_server(settings, env_overrides=env)
    return MlflowServer(handle, settings, env)
