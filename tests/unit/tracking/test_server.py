"""Server command and environment, PID-file handling and process-group stops, without MLflow."""

from __future__ import annotations

import configparser
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modules.errors import EXIT_UNAVAILABLE, ConfigurationError, TrackingError
from modules.settings import PROJECT_ROOT, load_settings
from modules.tracking.server import (
    ALLOW_PUBLIC_VAR,
    ServerOptions,
    ServerRecord,
    auth_config_path,
    auth_database_uri,
    backend_store_uri,
    binds_port,
    build_server_command,
    check_bind,
    check_database,
    cli,
    db_upgrade,
    find_server_processes,
    is_process_alive,
    listening_pids,
    load_server_options,
    log_file_path,
    pid_file_path,
    process_group_members,
    read_pid_file,
    read_server_record,
    running_server_pid,
    server_environment,
    server_status,
    server_url,
    start_server,
    stop_server,
    write_auth_config,
    write_server_record,
)
from modules.tracking.store import check_tracking_server, make_private_sqlite
from tests.commands import exit_code, run_command

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


def test_only_start_checks_the_auth_settings() -> None:
    for env in ({"MLFLOW_AUTH": "basic"}, {"MLFLOW_AUTH": "ldap", "MLFLOW_AUTH_DEFAULT_PERMISSION": "ALL"}):
        options = load_server_options({**env, "MLFLOW_SERVER_STOP_TIMEOUT": "3"}, check_auth=False)
        assert options.stop_timeout == 3.0


def test_stop_and_status_need_no_auth_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """MLFLOW_AUTH=basic without its secret key: `make stop` and `status` still answer (they exited 2)."""
    monkeypatch.setenv("RUN_DIR", str(tmp_path / ".run"))
    monkeypatch.setenv("MLFLOW_PORT", str(_free_port()))
    monkeypatch.setenv("MLFLOW_AUTH", "basic")
    monkeypatch.setenv("MLFLOW_FLASK_SERVER_SECRET_KEY", "")
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "short")
    assert exit_code(cli, ["stop"]) == 0
    assert capsys.readouterr().out == "MLflow tracking server not running (no live server in the PID file).\n"
    assert exit_code(cli, ["status"]) == 1
    assert capsys.readouterr().out == "MLflow tracking server not running.\n"
    with pytest.raises(ConfigurationError, match="MLFLOW_FLASK_SERVER_SECRET_KEY"):
        run_command(cli, ["start"])


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
    assert stop_server(settings).stopped is False
    assert not pid_file.exists()


def test_pid_file_of_another_program_is_never_signalled(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    pid_file = pid_file_path(settings)
    pid_file.parent.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid_file.write_text(f"{other.pid}\n")  # a recycled PID: alive, but not started for our port
        assert running_server_pid(settings) is None
        assert stop_server(settings).stopped is False
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


def test_pid_file_records_the_process_group_and_the_port(tmp_path: Path) -> None:
    path = tmp_path / "x.pid"
    write_server_record(path, ServerRecord(pid=1234, pgid=1230, port=5055))
    assert path.read_text() == "1234\npgid=1230\nport=5055\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_server_record(path) == ServerRecord(1234, 1230, 5055)
    assert read_pid_file(path) == 1234
    path.write_text("1234\n")  # written by an older release: the group is the PID, the port unknown
    assert read_server_record(path) == ServerRecord(1234, 1234, None)


def test_a_port_is_ours_only_when_the_command_line_asks_to_serve_it() -> None:
    assert binds_port(["python", "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", "5055"], 5055)
    assert binds_port(["uvicorn", "--port=5055", "app"], 5055)
    assert binds_port(["gunicorn", "-b", "127.0.0.1:5055", "app"], 5055)
    assert binds_port(["gunicorn", "--bind=0.0.0.0:5055"], 5055)
    assert not binds_port(["python", "-m", "mlflow", "server", "--port", "5000"], 5055)
    assert not binds_port(["python", "-m", "http.server", "5055"], 5055)  # mentions it, not ours
    assert not binds_port(["mlflow", "server"], 5055)  # words prove nothing


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fake_server(port: int, ignores_sigterm: str = "none") -> subprocess.Popen[bytes]:
    """A process group shaped like `mlflow server --port N`: a leader and one worker that listens on N.

    The worker's own argv names no port (as uvicorn's spawned workers); `ignores_sigterm` is
    "none", "leader" or "worker": who survives a plain SIGTERM.
    """
    ignore = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    worker = (
        (ignore if ignores_sigterm == "worker" else "")
        + "import socket, time\n"
        + "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        + f"s.bind(('127.0.0.1', {port})); s.listen()\n"
        + "print(1, flush=True); time.sleep(60)\n"
    )
    code = (
        "import signal, subprocess, sys, time\n"
        + (ignore if ignores_sigterm == "leader" else "")
        + f"w = subprocess.Popen([sys.executable, '-c', {worker!r}], stdout=subprocess.PIPE)\n"
        + "w.stdout.readline()\n"
        + "print('ready', flush=True)\n"
        + "time.sleep(60)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, "--port", str(port)], stdout=subprocess.PIPE, start_new_session=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == b"ready"
    return process


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Clean-up of a test that failed half-way: the fake server's group, by its own id."""
    if process_group_members(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _write_record(settings, process: subprocess.Popen[bytes], port: int | None) -> Path:
    pid_file = pid_file_path(settings)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    write_server_record(pid_file, ServerRecord(process.pid, process.pid, port))
    return pid_file


@pytest.mark.parametrize("ignores_sigterm", ["none", "leader", "worker"])
def test_stop_ends_the_whole_process_group(tmp_path: Path, ignores_sigterm: str) -> None:
    port = _free_port()
    settings = settings_for(tmp_path, MLFLOW_PORT=str(port))
    process = _fake_server(port, ignores_sigterm)
    try:
        pid_file = _write_record(settings, process, port)
        members = process_group_members(process.pid)
        assert process.pid in members and len(members) == 2
        assert running_server_pid(settings) == process.pid
        assert len(listening_pids(port)) == 1 and listening_pids(port)[0] in members

        # Whoever ignores SIGTERM is killed once the timeout has passed.
        stopped = stop_server(settings, timeout=0.5)
        assert stopped.leader == process.pid and len(stopped.others) == 1

        process.wait(timeout=5)
        assert not any(is_process_alive(pid) for pid in members)
        assert process_group_members(process.pid) == []
        assert listening_pids(port) == []
        assert not pid_file.exists()
        assert stop_server(settings).stopped is False
    finally:
        _kill_group(process)


def _kill_leader(process: subprocess.Popen[bytes]) -> list[int]:
    """SIGKILL the leader only, as the OOM killer or `kill -9` would; returns the orphaned workers."""
    members = process_group_members(process.pid)
    process.kill()
    process.wait()
    workers = [pid for pid in members if pid != process.pid]
    assert workers and all(is_process_alive(pid) for pid in workers)
    return workers


def test_workers_orphaned_by_a_killed_leader_are_found_and_stopped(tmp_path: Path) -> None:
    port = _free_port()
    settings = settings_for(tmp_path, MLFLOW_PORT=str(port))
    process = _fake_server(port)
    try:
        pid_file = _write_record(settings, process, port)
        workers = _kill_leader(process)
        assert listening_pids(port) == workers  # the worker still serves the port

        status = server_status(settings)
        assert (status.running, status.leftovers) == (False, tuple(workers))
        stopped = stop_server(settings, timeout=5)
        assert (stopped.leader, stopped.others) == (None, tuple(workers))
        assert listening_pids(port) == []
        assert not any(is_process_alive(pid) for pid in workers)
        assert not pid_file.exists()
    finally:
        _kill_group(process)


def test_server_on_its_port_is_found_without_a_pid_file(tmp_path: Path) -> None:
    """The state an older `make stop` left behind (or `make clean`): no PID file, a server on the port."""
    port = _free_port()
    settings = settings_for(tmp_path, MLFLOW_PORT=str(port))
    process = _fake_server(port)
    try:
        members = process_group_members(process.pid)
        found = find_server_processes(settings)
        # The listening worker names no port; its parent was started with `--port N`.
        assert found.leader is None and sorted(found.pids) == sorted(members)
        assert stop_server(settings, timeout=5).others == tuple(sorted(members))
        process.wait(timeout=5)
        assert listening_pids(port) == []
    finally:
        _kill_group(process)


def test_another_program_on_the_port_is_left_alone(tmp_path: Path) -> None:
    port = _free_port()
    settings = settings_for(tmp_path, MLFLOW_PORT=str(port))
    code = f"import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); print(1, flush=True); time.sleep(60)"
    other = subprocess.Popen([sys.executable, "-c", code, "mlflow", "server"], stdout=subprocess.PIPE)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == b"1"
        pid_file = pid_file_path(settings)
        pid_file.parent.mkdir(parents=True)
        pid_file.write_text("999999\npgid=999999\n")  # a server long gone
        stopped = stop_server(settings, timeout=1)
        assert (stopped.stopped, stopped.foreign) == (False, (other.pid,))
        assert other.poll() is None
        assert not pid_file.exists()  # nothing of ours is left
    finally:
        other.kill()
        other.wait()


def test_a_stop_that_leaves_a_survivor_keeps_the_pid_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _free_port()
    settings = settings_for(tmp_path, MLFLOW_PORT=str(port))
    process = _fake_server(port)
    try:
        pid_file = _write_record(settings, process, port)
        # A process we may not signal (another user's, say): every signal is refused.
        monkeypatch.setattr("modules.tracking.server._send", lambda *args, **kwargs: None)
        started = time.monotonic()
        with pytest.raises(TrackingError, match=rf"could not stop pids {process.pid}, \d+ .* is kept"):
            stop_server(settings, timeout=0.2)
        assert time.monotonic() - started < 30
        assert pid_file.exists()
    finally:
        _kill_group(process)


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
    assert caught.value.exit_code == EXIT_UNAVAILABLE  # an outage, not bad input: may work later


def test_check_tracking_server_calls_a_malformed_uri_a_setting_to_fix() -> None:
    with pytest.raises(TrackingError) as caught:
        check_tracking_server("http://127.0.0.1:notaport", timeout=5)
    assert caught.value.exit_code == 2


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


# --------------------------------------------------------------------------- binds, environment, files


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_binds_need_no_auth(host: str) -> None:
    assert check_bind(host, authenticated=False, env={}) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "mlflow.example.com"])
def test_an_unauthenticated_public_bind_is_refused_before_anything_starts(tmp_path: Path, host: str) -> None:
    settings = settings_for(tmp_path, MLFLOW_HOST=host, MLFLOW_PORT=str(_free_port()))
    with pytest.raises(ConfigurationError) as caught:
        start_server(settings, env_overrides={"MLFLOW_HOST": host})
    assert str(caught.value) == (
        f"MLFLOW_HOST={host} would open the MLflow server to other machines without authentication: "
        f"set MLFLOW_AUTH=basic, bind 127.0.0.1, or set {ALLOW_PUBLIC_VAR}=1 to accept the risk"
    )
    assert not pid_file_path(settings).exists() and not log_file_path(settings).exists()
    assert check_bind(host, authenticated=True, env={}) is None  # basic auth may bind anywhere


def test_the_override_warns_and_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = settings_for(tmp_path, MLFLOW_HOST="0.0.0.0", MLFLOW_PORT=str(port))
        # Past the bind check, the next check finds the port taken: nothing is bound by the test.
        with pytest.raises(TrackingError, match=f"port {port} on 0.0.0.0 is already in use"):
            start_server(settings, env_overrides={ALLOW_PUBLIC_VAR: "1"})
    assert capsys.readouterr().err == (
        f"warning: the MLflow server listens on 0.0.0.0 without authentication ({ALLOW_PUBLIC_VAR}=1): "
        "anyone who can reach it can read and change every run and model\n"
    )


def test_the_server_gets_only_the_variables_it_needs() -> None:
    caller = {
        "PATH": "/usr/bin",
        "HOME": "/home/me",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": "/project",
        "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "5",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "needed-by-basic-auth",
        "GOOGLE_APPLICATION_CREDENTIALS": "/keys/sa.json",
        "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9023",
        "PGSSLMODE": "require",
        # Not the server's business:
        "GITHUB_TOKEN": "ghp_secret",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
        "OPENAI_API_KEY": "sk-secret",
        "MLFLOW_TRACKING_PASSWORD": "client-secret",
        "MLFLOW_TRACKING_TOKEN": "client-token",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
        "POSTGRES_PASSWORD": PASSWORD,
        "POSTGRES_ADMIN_PASSWORD": "admin-secret",
        "PGPASSWORD": "someone-elses",
        "SSH_AUTH_SOCK": "/tmp/agent",
    }
    env = server_environment(
        caller, {"PGPASSWORD": PASSWORD, "MLFLOW_BACKEND_STORE_URI": "postgresql://u@h/db"}
    )
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/home/me",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": "/project",
        "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "5",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "needed-by-basic-auth",
        "GOOGLE_APPLICATION_CREDENTIALS": "/keys/sa.json",
        "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9023",
        "PGSSLMODE": "require",
        "PGPASSWORD": PASSWORD,
        "MLFLOW_BACKEND_STORE_URI": "postgresql://u@h/db",
    }


def test_mlflow_ui_keeps_the_store_uri_off_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = "postgresql+psycopg2://mlflow:Ui-S3cret@127.0.0.1:5432/mlflowdata"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_secret")
    launched: list[tuple[str, list[str], dict[str, str]]] = []

    class Replaced(Exception):
        pass

    def execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        launched.append((path, list(argv), dict(env)))
        raise Replaced  # instead of becoming `mlflow ui`

    monkeypatch.setattr("modules.tracking.server.os.execve", execve)
    monkeypatch.setattr("modules.tracking.server.os.umask", lambda mask: 0o022)
    with pytest.raises(Replaced):
        run_command(cli, ["ui", "--port", "5077"])
    _, argv, env = launched[0]
    assert argv[1:4] == ["-m", "mlflow", "ui"] and argv[argv.index("--port") + 1] == "5077"
    assert "Ui-S3cret" not in " ".join(argv) and "--backend-store-uri" not in argv
    assert env["MLFLOW_BACKEND_STORE_URI"] == uri
    assert env["MLFLOW_DEFAULT_ARTIFACT_ROOT"] == (tmp_path / "artifacts").as_uri()
    assert "GITHUB_TOKEN" not in env and "MLFLOW_TRACKING_URI" not in env
    out = capsys.readouterr().out
    assert "Ui-S3cret" not in out and "mlflow:***@127.0.0.1" in out


def test_mlflow_ui_refuses_an_unauthenticated_public_bind(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr("modules.tracking.server.os.execve", lambda *args: pytest.fail("must not start"))
    with pytest.raises(ConfigurationError, match="would open the MLflow UI to other machines"):
        run_command(cli, ["ui", "--host", "0.0.0.0"])
    assert not (tmp_path / "mlflow.db").exists()


def test_sqlite_stores_are_created_private_and_tightened(tmp_path: Path) -> None:
    fresh = make_private_sqlite(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")
    assert fresh is not None and fresh.stat().st_mode & 0o777 == 0o600
    loose = tmp_path / "basic_auth.db"
    loose.write_bytes(b"")
    loose.chmod(0o644)
    make_private_sqlite(f"sqlite:///{loose}")
    assert loose.stat().st_mode & 0o777 == 0o600
    assert make_private_sqlite("postgresql+psycopg2://u@h/db") is None


@pytest.mark.slow
def test_db_upgrade_creates_the_sqlite_store_private(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # a usual umask would make the file 0644
    try:
        settings = settings_for(tmp_path)
        db_upgrade(settings)
    finally:
        os.umask(old_umask)
    store = Path(backend_store_uri(settings).removeprefix("sqlite:///"))
    assert store.stat().st_size > 0 and store.stat().st_mode & 0o777 == 0o600


def test_gitignore_covers_every_local_store_key_and_state_file() -> None:
    settings = load_settings(root=PROJECT_ROOT, env={})
    written = [
        pid_file_path(settings),
        log_file_path(settings),
        auth_config_path(settings),
        Path(backend_store_uri(settings).removeprefix("sqlite:///")),
        Path(auth_database_uri(settings).removeprefix("sqlite:///")),
        PROJECT_ROOT / "mlruns" / "artifacts" / "1" / "models" / "m-1" / "artifacts" / "MLmodel",
        PROJECT_ROOT / "mlruns" / "mlflow.db-journal",
        PROJECT_ROOT / "mlflow.db",  # MLFLOW_TRACKING_URI=sqlite:///mlflow.db
        PROJECT_ROOT / "mlartifacts" / "0" / "x",  # a bare `mlflow server`'s default artifact folder
        settings.reports_dir / "predictions.csv",
        PROJECT_ROOT / ".metaflow" / "TuningFlow" / "1",
        PROJECT_ROOT / ".tuner" / "dnn" / "trial.json",
        PROJECT_ROOT / ".env",
        PROJECT_ROOT / ".env.production",
        PROJECT_ROOT / "data" / "emotions.csv",
        PROJECT_ROOT / "gha-creds-1234.json",
        PROJECT_ROOT / "service-account.json",
        PROJECT_ROOT / "application_default_credentials.json",
        PROJECT_ROOT / "tls.key",
        PROJECT_ROOT / "tls.pem",
        PROJECT_ROOT / "infra" / "terraform" / "terraform.tfstate",
    ]
    relative = [str(path.relative_to(PROJECT_ROOT)) for path in written]
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", "--verbose", "--non-matching", *relative],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    lines = result.stdout.splitlines()
    assert len(lines) == len(relative), result.stderr  # one verdict per path (in a git checkout)
    not_ignored = [line.split("\t", 1)[1] for line in lines if line.startswith("::")]
    assert not_ignored == []
    kept = ["data/manifest.json", ".env.example", "data/.gitkeep"]
    tracked = subprocess.run(
        ["git", "check-ignore", "--no-index", *kept], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert tracked.stdout == ""
