"""The production tracking stack for real: MLflow server on PostgreSQL with a (emulated) GCS store."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow
import mlflow.server
import numpy as np
import pandas as pd
import psycopg2
import pytest
import requests
import sklearn
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression

from modules.errors import TrackingError
from modules.settings import PROJECT_ROOT, load_settings
from modules.tracking.server import (
    ServerAlreadyRunning,
    ServerStartError,
    auth_config_path,
    auth_database_uri,
    db_upgrade,
    is_process_alive,
    listening_pids,
    pid_file_path,
    process_command,
    process_group_members,
    read_server_record,
    running_server_pid,
    start_server,
    stop_server,
)
from modules.tracking.store import check_tracking_server
from tests.integration.servers import (
    AUTH_ADMIN_PASSWORD,
    AUTH_ADMIN_USERNAME,
    GcsEmulator,
    MlflowServer,
    PostgresDatabase,
    create_database,
    free_port,
    launch_mlflow_server,
    mlflow_server_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def tracking_uri(mlflow_server: MlflowServer) -> Iterator[str]:
    """Point the mlflow client (runs and registry) at the server for one test, then restore both URIs.

    The registry URI matters too: an earlier test of the session may have left it on its own store.
    """
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(mlflow_server.tracking_uri)
    mlflow.set_registry_uri(mlflow_server.tracking_uri)
    try:
        yield mlflow_server.tracking_uri
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


def _query(database: PostgresDatabase, sql: str, *params: object) -> list[tuple]:
    with psycopg2.connect(database.dsn) as connection, connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    connection.close()
    return rows


def _small_model() -> tuple[LogisticRegression, pd.DataFrame]:
    rng = np.random.default_rng(7)
    features = pd.DataFrame(rng.normal(size=(60, 4)), columns=["f0", "f1", "f2", "f3"])
    labels = (features["f0"] + features["f1"] > 0).astype(int)
    return LogisticRegression().fit(features, labels), features


def _descendants(pid: int) -> list[int]:
    """Child processes of `pid`, recursively, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def test_runs_metrics_and_registered_model_live_in_postgres_and_gcs(
    tracking_uri: str,
    postgres_server: PostgresDatabase,
    gcs_emulator: GcsEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The client has no GCS access at all: every artifact goes through the server's proxy.
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    model, features = _small_model()
    model_name = f"it-model-{uuid.uuid4().hex[:8]}"
    experiment_id = mlflow.create_experiment(f"it-{uuid.uuid4().hex[:8]}")
    with mlflow.start_run(experiment_id=experiment_id, run_name="parent") as parent:
        mlflow.log_metric("test_accuracy", 0.75)
        child_ids = []
        for trial in range(2):
            with mlflow.start_run(
                experiment_id=experiment_id, run_name=f"trial-{trial}", nested=True
            ) as child:
                for step, loss in enumerate([1.0 / (trial + 1), 0.5 / (trial + 1)]):
                    mlflow.log_metric("loss", loss, step=step)
                child_ids.append(child.info.run_id)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            input_example=features.head(3),
            pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
            registered_model_name=model_name,
        )
    MlflowClient().set_registered_model_alias(model_name, "champion", info.registered_model_version)

    runs = _query(
        postgres_server, "SELECT run_uuid, status FROM runs WHERE experiment_id = %s", int(experiment_id)
    )
    assert sorted(runs) == sorted((run_id, "FINISHED") for run_id in [parent.info.run_id, *child_ids])
    parents = _query(
        postgres_server,
        "SELECT run_uuid, value FROM tags WHERE key = 'mlflow.parentRunId' AND run_uuid = ANY(%s)",
        child_ids,
    )
    assert sorted(parents) == sorted((run_id, parent.info.run_id) for run_id in child_ids)
    losses = _query(
        postgres_server, "SELECT step, value FROM metrics WHERE run_uuid = %s AND key = 'loss'", child_ids[1]
    )
    assert sorted(losses) == [(0, 0.5), (1, 0.25)]
    assert _query(
        postgres_server,
        "SELECT value FROM metrics WHERE run_uuid = %s AND key = 'test_accuracy'",
        parent.info.run_id,
    ) == [(0.75,)]
    assert _query(postgres_server, "SELECT name FROM registered_models WHERE name = %s", model_name) == [
        (model_name,)
    ]
    assert _query(
        postgres_server, "SELECT version, status FROM model_versions WHERE name = %s", model_name
    ) == [(1, "READY")]
    assert _query(
        postgres_server, "SELECT alias, version FROM registered_model_aliases WHERE name = %s", model_name
    ) == [("champion", 1)]

    # The model files are objects in the bucket, under the server's artifact prefix.
    objects = gcs_emulator.object_names(prefix=f"mlartifacts/{experiment_id}/")
    model_objects = [name for name in objects if info.model_id in name]
    assert any(name.endswith("/MLmodel") for name in model_objects)
    # The serialised estimator itself (skops by default in MLflow 3, pickle formats before).
    assert any(name.rsplit("/", 1)[-1] in ("model.skops", "model.pkl") for name in model_objects)
    assert any(name.endswith("/requirements.txt") for name in model_objects)

    loaded = mlflow.pyfunc.load_model(f"models:/{model_name}@champion")
    np.testing.assert_array_equal(loaded.predict(features), model.predict(features))


def test_init_sql_is_idempotent_and_passwords_are_checked(postgres_server: PostgresDatabase) -> None:
    again = create_database(postgres_server.server, postgres_server.db, postgres_server.user)
    assert again == postgres_server
    assert _query(
        postgres_server, "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'public'"
    ) == [(postgres_server.user,)]
    assert _query(postgres_server, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == [(False,)]
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(
            host=postgres_server.host,
            port=postgres_server.port,
            dbname=postgres_server.db,
            user=postgres_server.user,
            password="wrong-password",
        )


def test_db_upgrade_on_a_current_schema(
    mlflow_server: MlflowServer, postgres_server: PostgresDatabase
) -> None:
    output = db_upgrade(mlflow_server.settings)
    assert postgres_server.password not in output
    tables = {
        row[0]
        for row in _query(postgres_server, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    assert {"alembic_version", "experiments", "runs", "metrics", "registered_models"} <= tables


def test_check_tracking_server_accepts_a_live_server(mlflow_server: MlflowServer) -> None:
    assert check_tracking_server(mlflow_server.tracking_uri, timeout=5) is None


def test_password_is_in_no_command_line_and_no_log(
    mlflow_server: MlflowServer, postgres_server: PostgresDatabase
) -> None:
    pid = mlflow_server.handle.pid
    processes = [pid, *_descendants(pid)]
    assert len(processes) >= 2  # `mlflow server` and its uvicorn process
    for process in processes:
        assert postgres_server.password not in " ".join(process_command(process))
    log = mlflow_server.handle.log_path.read_text()
    assert "Uvicorn running" in log
    assert postgres_server.password not in log


def test_basic_auth_rejects_strangers_and_read_only_users(
    mlflow_auth_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = mlflow_auth_server.tracking_uri
    admin = (AUTH_ADMIN_USERNAME, AUTH_ADMIN_PASSWORD)
    get_default = f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"

    assert requests.get(f"{url}/health", timeout=10).status_code == 200
    assert requests.get(get_default, timeout=10).status_code == 401
    assert (
        requests.get(get_default, auth=(AUTH_ADMIN_USERNAME, "wrong-password-0000"), timeout=10).status_code
        == 401
    )
    assert requests.get(get_default, auth=admin, timeout=10).status_code == 200

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", AUTH_ADMIN_USERNAME)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", AUTH_ADMIN_PASSWORD)
    reader, reader_password = f"reader-{uuid.uuid4().hex[:6]}", "reader-password-0123"
    auth_client = mlflow.server.get_app_client("basic-auth", tracking_uri=url)
    auth_client.create_user(reader, reader_password)
    experiment_id = MlflowClient(url).create_experiment(f"auth-{uuid.uuid4().hex[:8]}")
    auth_client.grant_user_permission(reader, "experiment", experiment_id, "READ")

    get_experiment = f"{url}/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}"
    assert requests.get(get_experiment, auth=(reader, reader_password), timeout=10).status_code == 200
    create = requests.post(
        f"{url}/api/2.0/mlflow/runs/create",
        json={"experiment_id": experiment_id},
        auth=(reader, reader_password),
        timeout=10,
    )
    assert create.status_code == 403

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", reader)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", reader_password)
    with pytest.raises(MlflowException, match=r"PERMISSION_DENIED|403|Permission denied"):
        MlflowClient(url).create_run(experiment_id)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m modules server ...`, as `make mlflow_server` / `make stop` call it."""
    return subprocess.run(
        [sys.executable, "-m", "modules", "server", *args],
        env={**os.environ, **env},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_start_twice_status_stop_leave_nothing_behind(
    postgres_server: PostgresDatabase, gcs_emulator: GcsEmulator, tmp_path: Path
) -> None:
    env = mlflow_server_env(
        postgres_server,
        gcs_emulator,
        tmp_path / "run",
        artifact_prefix="lifecycle",
        extra={
            "MLFLOW_WORKERS": "2",
            "MLFLOW_AUTH": "basic",
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "lifecycle-secret-key-0123456789",
            "MLFLOW_AUTH_ADMIN_USERNAME": AUTH_ADMIN_USERNAME,
            "MLFLOW_AUTH_ADMIN_PASSWORD": AUTH_ADMIN_PASSWORD,
        },
    )
    server = launch_mlflow_server(env)
    try:
        pid, settings = server.handle.pid, server.settings
        record = read_server_record(server.handle.pid_file)
        assert record is not None and (record.pid, record.pgid, record.port) == (
            pid,
            pid,
            settings.mlflow_port,
        )

        second = _cli(env, "start")
        assert second.returncode == 0, second.stderr
        assert f"already running at {server.tracking_uri} (pid {pid})" in second.stdout
        with pytest.raises(ServerAlreadyRunning):
            start_server(settings, env_overrides=env)

        status = _cli(env, "status")
        assert status.returncode == 0
        assert f"running at {server.tracking_uri} (pid {pid}, healthy)" in status.stdout

        processes = [pid, *_descendants(pid)]
        assert len(processes) >= 4  # mlflow server, the uvicorn supervisor, two workers
        secrets = [postgres_server.password, AUTH_ADMIN_PASSWORD, postgres_server.server.superuser_password]
        for process in processes:
            command = " ".join(process_command(process))
            assert not [secret for secret in secrets if secret in command], command
        # The admin's database password never reaches the server's environment.
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        assert postgres_server.server.superuser_password not in environ
        log = server.handle.log_path.read_text()
        assert not [secret for secret in secrets if secret in log]
        config = auth_config_path(settings)
        assert config.stat().st_mode & 0o777 == 0o600
        assert not [secret for secret in secrets if secret in config.read_text()]

        stopped = _cli(env, "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert f"Stopped the MLflow tracking server (pid {pid})" in stopped.stdout
        assert [process for process in processes if is_process_alive(process)] == []
        assert not server.handle.pid_file.exists()
        assert not config.exists()
        again = _cli(env, "stop")
        assert again.returncode == 0
        assert "not running" in again.stdout
        assert _cli(env, "status").returncode == 1
    finally:
        server.stop()


def test_stop_after_the_leader_was_killed_leaves_nothing_on_the_port(
    postgres_server: PostgresDatabase, gcs_emulator: GcsEmulator, tmp_path: Path
) -> None:
    """SIGKILL of `mlflow server` orphans its uvicorn workers; `make stop` must still end them.

    Before the fix, `stop` said "not running", deleted the PID file and left the workers serving
    the port, so that the next `make mlflow_server` failed. It runs here with MLFLOW_AUTH=basic and
    no secret set, which made `stop` and `status` exit 2 before.
    """
    env = mlflow_server_env(
        postgres_server,
        gcs_emulator,
        tmp_path / "run",
        artifact_prefix="killed",
        extra={"MLFLOW_WORKERS": "2"},
    )
    server = launch_mlflow_server(env)
    port = server.settings.mlflow_port
    try:
        pid = server.handle.pid
        group = process_group_members(pid)
        assert len(group) >= 4  # mlflow server, uvicorn's supervisor, two workers
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while is_process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        orphans = [member for member in group if member != pid and is_process_alive(member)]
        assert orphans and listening_pids(port)  # still serving
        assert requests.get(f"{server.tracking_uri}/health", timeout=10).status_code == 200

        no_secret = {**env, "MLFLOW_AUTH": "basic", "MLFLOW_FLASK_SERVER_SECRET_KEY": ""}
        status = _cli(no_secret, "status")
        assert status.returncode == 1, status.stderr
        assert f"still hold port {port}: `make stop` ends them" in status.stdout

        stopped = _cli(no_secret, "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert f"Stopped {len(orphans)} leftover processes of the MLflow tracking server on port {port}" in (
            stopped.stdout
        )
        assert listening_pids(port) == []
        assert [member for member in group if is_process_alive(member)] == []
        assert not server.handle.pid_file.exists()
        assert _cli(no_secret, "status").returncode == 1

        # The port is free again: the next `make mlflow_server` starts.
        again = launch_mlflow_server(env)
        assert again.stop().leader == again.handle.pid
    finally:
        server.stop()


def test_a_server_that_cannot_start_fails_with_its_log(tmp_path: Path) -> None:
    # Basic auth on a fresh user store without an admin password: MLflow refuses to start.
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_PORT": str(free_port()),
        "MLFLOW_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "RUN_DIR": str(tmp_path / "run"),
        "MLFLOW_AUTH": "basic",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "failing-start-secret-key",
    }
    settings = load_settings(root=tmp_path, env=env)
    with pytest.raises(ServerStartError) as caught:
        start_server(settings, env_overrides=env, timeout=180)
    message = str(caught.value)
    assert message.startswith("MLflow server exited with code 1 before answering")
    assert f"Last lines of {tmp_path / 'run' / 'mlflow-server.log'}:" in message
    assert "needs a password to create the admin user" in message.splitlines()[-1]
    assert not pid_file_path(settings).exists()
    assert not auth_config_path(settings).exists()


def test_a_wrong_database_password_fails_before_the_server_starts(
    postgres_server: PostgresDatabase, tmp_path: Path
) -> None:
    env = {
        **postgres_server.env(),
        "POSTGRES_PASSWORD": "not-the-password",
        "MLFLOW_PORT": str(free_port()),
        "RUN_DIR": str(tmp_path / "run"),
    }
    settings = load_settings(env=env)
    with pytest.raises(TrackingError) as caught:
        start_server(settings, env_overrides=env)
    message = str(caught.value)
    assert message.startswith(
        f"PostgreSQL at 127.0.0.1:{postgres_server.port} (database mlflowdata, user mlflowdata)"
    )
    assert "password authentication failed" in message
    assert "not-the-password" not in message
    assert not pid_file_path(settings).exists()


def test_a_server_that_does_not_answer_in_time_is_stopped(tmp_path: Path) -> None:
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_PORT": str(free_port()),
        "MLFLOW_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "RUN_DIR": str(tmp_path / "run"),
    }
    settings = load_settings(env=env)
    with pytest.raises(ServerStartError, match=r"did not answer http://127\.0\.0\.1:\d+/health within 0.5 s"):
        start_server(settings, env_overrides=env, timeout=0.5)
    assert not pid_file_path(settings).exists()
    assert running_server_pid(settings) is None


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode(errors="replace").partition("=")[::2] for item in raw.split(b"\0") if item)


def test_the_server_runs_with_its_own_environment_and_private_files(tmp_path: Path) -> None:
    """SQLite + basic auth: no caller secret in any server process; stores, PID file and log 0600."""
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}",
        "MLFLOW_PORT": str(free_port()),
        "MLFLOW_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "RUN_DIR": str(tmp_path / "run"),
        "MLFLOW_AUTH": "basic",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "private-files-secret-key-0123",
        "MLFLOW_AUTH_ADMIN_PASSWORD": AUTH_ADMIN_PASSWORD,
        # What a developer's shell holds: none of it is the server's business.
        "GITHUB_TOKEN": "ghp_caller_token_0123",
        "AWS_SECRET_ACCESS_KEY": "aws-caller-secret-0123",
        "MLFLOW_TRACKING_PASSWORD": "client-password-0123",
    }
    settings = load_settings(root=tmp_path, env=env)
    old_umask = os.umask(0o022)  # the usual umask, which makes new files 0644
    try:
        handle = start_server(settings, env_overrides=env, timeout=180)
    finally:
        os.umask(old_umask)
    try:
        processes = [handle.pid, *_descendants(handle.pid)]
        assert len(processes) >= 2
        for process in processes:
            environ = _environ(process)
            assert not {"GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_PASSWORD"} & set(environ)
            assert not [value for value in environ.values() if value.endswith("-0123") and "caller" in value]
        assert _environ(handle.pid)["MLFLOW_BACKEND_STORE_URI"] == env["MLFLOW_TRACKING_URI"]
        assert requests.get(f"{handle.url}/health", timeout=10).status_code == 200
        private = [
            tmp_path / "store" / "mlflow.db",
            Path(auth_database_uri(settings).removeprefix("sqlite:///")),
            handle.pid_file,
            handle.log_path,
            auth_config_path(settings),
        ]
        assert {str(path): oct(path.stat().st_mode & 0o777) for path in private} == {
            str(path): "0o600" for path in private
        }
    finally:
        stop_server(settings)


def test_make_mlflow_ui_keeps_the_store_off_the_command_line(tmp_path: Path) -> None:
    """`python -m modules server ui` becomes `mlflow ui`; the store URI is in its environment."""
    store = tmp_path / "ui" / "mlflow.db"
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{store}",
        "MLFLOW_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "MLFLOW_PORT": str(port),
        "GITHUB_TOKEN": "ghp_caller_token_0123",
    }
    ui = subprocess.Popen(
        [sys.executable, "-m", "modules", "server", "ui"],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert ui.poll() is None, ui.stdout.read().decode() if ui.stdout else ""
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        else:
            pytest.fail("mlflow ui did not answer /health")
        for process in [ui.pid, *_descendants(ui.pid)]:
            assert str(store) not in " ".join(process_command(process))
        assert process_command(ui.pid)[1:4] == ["-m", "mlflow", "ui"]  # the same PID, replaced by execve
        environ = _environ(ui.pid)
        assert environ["MLFLOW_BACKEND_STORE_URI"] == f"sqlite:///{store}"
        assert "GITHUB_TOKEN" not in environ
        assert store.stat().st_mode & 0o777 == 0o600
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(ui.pid, signal.SIGTERM)
        try:
            ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
            ui.wait()
