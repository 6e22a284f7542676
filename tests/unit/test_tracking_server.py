"""Server command and environment, PID-file handling and process-group stops, without MLflow."""

from __future__ import annotations

import configparser
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from modules.errors import ConfigurationError, TrackingError
from modules.settings import PROJECT_ROOT, load_settings
from modules.tracking_server import (
    ServerOptions,
    backend_store_uri,
    build_server_command,
    check_database,
    check_tracking_server,
    is_mlflow_server,
    is_process_alive,
    load_server_options,
    pid_file_path,
    process_group_members,
    read_pid_file,
    running_server_pid,
    server_url,
    stop_server,
    write_auth_config,
)

INSTALL_SERVER_SCRIPT = PROJECT_ROOT / "infra" / "postgres" / "install_server.sh"
PASSWORD = "s3cret'pw@:%/#"
POSTGRES_ENV = {
    "POSTGRES_HOST": "10.0.0.5",
    "POSTGRES_PORT": "5433",
    "POSTGRES_DB": "mlflowdata",
    "POSTGRES_USER": "ml flow@corp",
    "POSTGRES_PASSWORD": PASSWORD,
    "MLFLOW_ARTIFACT_ROOT": "gs://team-bucket/mlflow",
}


def settings_for(tmp_path: Path, **env: str):
    return load_settings(root=tmp_path, env={"RUN_DIR": str(tmp_path / ".run"), **env})


def test_postgres_backend_goes_through_the_environment_never_argv(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, **POSTGRES_ENV)
    argv, env = build_server_command(settings, ServerOptions(workers=3))

    assert PASSWORD not in " ".join(argv)
    assert all(PASSWORD not in value for key, value in env.items() if key != "PGPASSWORD")
    assert env["PGPASSWORD"] == PASSWORD
    # The user name is percent-encoded; the URI carries no password at all.
    assert (
        env["MLFLOW_BACKEND_STORE_URI"] == "postgresql+psycopg2://ml%20flow%40corp@10.0.0.5:5433/mlflowdata"
    )
    assert argv[1:4] == ["-m", "mlflow", "server"]
    assert argv[argv.index("--artifacts-destination") + 1] == "gs://team-bucket/mlflow"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "5000"
    assert argv[argv.index("--workers") + 1] == "3"
    assert "--serve-artifacts" in argv
    assert "--app-name" not in argv


def test_sqlite_backend_and_local_artifacts_by_default(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, MLFLOW_PORT="5055")
    argv, env = build_server_command(settings)

    assert env == {"MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"}
    assert env["MLFLOW_BACKEND_STORE_URI"] == settings.mlflow_tracking_uri
    assert argv[argv.index("--artifacts-destination") + 1] == str(tmp_path / "mlruns" / "artifacts")
    assert argv[argv.index("--port") + 1] == "5055"


def test_server_store_stays_local_when_clients_point_at_a_server(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, MLFLOW_TRACKING_URI="http://127.0.0.1:5000", MLFLOW_ARTIFACT_ROOT="art")
    assert backend_store_uri(settings) == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    argv, _ = build_server_command(settings)
    assert argv[argv.index("--artifacts-destination") + 1] == str(tmp_path / "art")


def test_half_a_postgres_configuration_is_an_error(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, POSTGRES_HOST="db.internal", POSTGRES_DB="mlflowdata")
    with pytest.raises(ConfigurationError, match="POSTGRES_USER, POSTGRES_PASSWORD not set"):
        build_server_command(settings)


def test_basic_auth_options_and_config_file(tmp_path: Path) -> None:
    env = {**POSTGRES_ENV, "MLFLOW_AUTH": "basic", "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 32}
    options = load_server_options(env)
    settings = settings_for(tmp_path, **env)
    argv, server_env = build_server_command(settings, options)

    assert argv[-2:] == ["--app-name", "basic-auth"]
    config_path = write_auth_config(settings, options)
    assert server_env["MLFLOW_AUTH_CONFIG_PATH"] == str(config_path)
    assert config_path.stat().st_mode & 0o777 == 0o600
    assert PASSWORD not in config_path.read_text()
    parser = configparser.ConfigParser()
    parser.read(config_path)
    assert parser["mlflow"]["database_uri"] == server_env["MLFLOW_BACKEND_STORE_URI"]
    assert parser["mlflow"]["default_permission"] == "READ"


def test_basic_auth_needs_a_secret_key_and_a_long_admin_password() -> None:
    with pytest.raises(ConfigurationError, match="MLFLOW_FLASK_SERVER_SECRET_KEY"):
        load_server_options({"MLFLOW_AUTH": "basic"})
    with pytest.raises(ConfigurationError, match="at least 12"):
        load_server_options(
            {
                "MLFLOW_AUTH": "basic",
                "MLFLOW_FLASK_SERVER_SECRET_KEY": "k",
                "MLFLOW_AUTH_ADMIN_PASSWORD": "short",
            }
        )
    with pytest.raises(ConfigurationError, match="MLFLOW_AUTH='ldap'"):
        load_server_options({"MLFLOW_AUTH": "ldap"})
    with pytest.raises(ConfigurationError, match="MLFLOW_WORKERS"):
        load_server_options({"MLFLOW_WORKERS": "0"})


def test_options_defaults() -> None:
    assert load_server_options({}) == ServerOptions()


def test_wildcard_bind_is_reached_through_loopback(tmp_path: Path) -> None:
    assert (
        # The wildcard is never bound here: only its client URL is computed.
        server_url(settings_for(tmp_path, MLFLOW_HOST="0.0.0.0", MLFLOW_PORT="8080"))  # never a bind
        == "http://127.0.0.1:8080"
    )


def test_stale_pid_file_counts_as_not_running(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    pid_file = pid_file_path(settings)
    pid_file.parent.mkdir(parents=True)
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid_file.write_text(finished.stdout)  # the PID of a process that has exited

    assert running_server_pid(settings) is None
    assert stop_server(settings) is False
    assert not pid_file.exists()


def test_pid_file_of_another_program_is_never_signalled(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    pid_file = pid_file_path(settings)
    pid_file.parent.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid_file.write_text(f"{other.pid}\n")  # a recycled PID: alive, but no `mlflow server`
        assert running_server_pid(settings) is None
        assert stop_server(settings) is False
        assert other.poll() is None
        assert not pid_file.exists()
    finally:
        other.kill()
        other.wait()


def test_unreadable_pid_file(tmp_path: Path) -> None:
    path = tmp_path / "x.pid"
    assert read_pid_file(path) is None
    path.write_text("not a pid\n")
    assert read_pid_file(path) is None
    path.write_text("1234\n")
    assert read_pid_file(path) == 1234


def _fake_server(ignores_sigterm: str) -> subprocess.Popen[bytes]:
    """A process group that looks like `mlflow server` with one worker child.

    `ignores_sigterm` is "none", "leader" or "worker": who survives a plain SIGTERM.
    """
    ignore = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    worker = (
        ignore if ignores_sigterm == "worker" else ""
    ) + "import time; print(1, flush=True); time.sleep(60)"
    code = (
        "import signal, subprocess, sys, time\n"
        + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignores_sigterm == "leader" else "")
        + f"w = subprocess.Popen([sys.executable, '-c', {worker!r}], stdout=subprocess.PIPE)\n"
        + "w.stdout.readline()\n"
        + "print('ready', flush=True)\n"
        + "time.sleep(60)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, "mlflow", "server"], stdout=subprocess.PIPE, start_new_session=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == b"ready"
    return process


@pytest.mark.parametrize("ignores_sigterm", ["none", "leader", "worker"])
def test_stop_ends_the_whole_process_group(tmp_path: Path, ignores_sigterm: str) -> None:
    settings = settings_for(tmp_path)
    process = _fake_server(ignores_sigterm)
    try:
        pid_file = pid_file_path(settings)
        pid_file.parent.mkdir(parents=True)
        pid_file.write_text(f"{process.pid}\n")
        members = process_group_members(process.pid)
        assert process.pid in members and len(members) == 2
        assert is_mlflow_server(process.pid)

        # Whoever ignores SIGTERM is killed once the timeout has passed.
        assert stop_server(settings, timeout=0.5) is True

        process.wait(timeout=5)
        assert not any(is_process_alive(pid) for pid in members)
        assert process_group_members(process.pid) == []
        assert not pid_file.exists()
        assert stop_server(settings) is False
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_check_tracking_server_fails_fast_on_a_closed_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        with pytest.raises(TrackingError) as caught:
            check_tracking_server(f"http://alice:hunter2@127.0.0.1:{port}", timeout=5)
    message = str(caught.value)
    assert message.startswith(
        f"MLflow tracking server at http://alice:***@127.0.0.1:{port} is not reachable: "
    )
    assert "hunter2" not in message
    assert "refused" in message  # the reason, at once: no retries


def test_check_tracking_server_passes_local_stores() -> None:
    assert check_tracking_server("sqlite:///tmp/mlflow.db") is None


def test_unreachable_database_is_reported_without_the_password(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused at once
        settings = settings_for(
            tmp_path, **{**POSTGRES_ENV, "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(port)}
        )
        with pytest.raises(TrackingError) as caught:
            check_database(settings, timeout=5)
    message = str(caught.value)
    assert message.startswith(
        f"PostgreSQL at 127.0.0.1:{port} (database mlflowdata, user ml flow@corp) is not usable: "
    )
    assert "Connection refused" in message
    assert PASSWORD not in message
    assert check_database(settings_for(tmp_path)) is None  # SQLite: nothing to check


def test_install_server_script_does_nothing_when_initdb_exists(tmp_path: Path) -> None:
    fake_initdb = tmp_path / "initdb"
    fake_initdb.write_text("#!/bin/sh\nexit 0\n")
    fake_initdb.chmod(0o755)
    result = subprocess.run(
        ["bash", str(INSTALL_SERVER_SCRIPT)],
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert (
        result.stdout.strip()
        == f"install_server.sh: PostgreSQL server already installed: {fake_initdb} (nothing to do)"
    )
