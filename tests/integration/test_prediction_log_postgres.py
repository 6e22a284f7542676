"""The production prediction log in a real PostgreSQL: schema and roles from `make db_init`'s code.

A throwaway cluster of its own (the tests stop and restart it). `make db_init` creates the
`predictions` schema with an INSERT-only `prediction_writer` and a SELECT-only
`prediction_reader`; MLflow's role and the log's roles cannot touch each other's tables. The
served app writes its requests there, keeps answering while the database is stopped (the lost
records are counted in /health), and writes again once it is back; the drift check reads its
window from the same tables.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator

import numpy as np
import pandas as pd
import psycopg2
import pytest
import requests

from modules.errors import ConfigurationError
from modules.monitoring.check import window_from_log
from modules.serving.prediction_log import PredictionLog, PredictionRecord, open_prediction_log, open_writer
from modules.settings import load_settings
from modules.tracking.server import db_init
from tests.integration.servers import PostgresDatabase, PostgresServer, _as_postgres_user, start_postgres
from tests.integration.test_serving import _split, registry, start_server  # noqa: F401 (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DB = "mlflowdata"
MLFLOW_USER = "mlflowdata"
MLFLOW_PASSWORD = "Mlfl0w-db'pw@:%/?#x"
WRITER, READER = "prediction_writer", "prediction_reader"
# Quotes and URI characters: a quoting mistake in db_init fails loudly.
WRITER_PASSWORD = "Wr1ter'pw@:%/#"
READER_PASSWORD = "Re4der'pw@:%/?"


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


def run_db_init(cluster: PostgresServer, **passwords: str) -> str:
    database = PostgresDatabase(cluster, DB, MLFLOW_USER, MLFLOW_PASSWORD)
    env = {**database.env(), **passwords}
    return db_init(
        load_settings(env=env), admin_user=cluster.superuser, admin_password=cluster.superuser_password
    )


def connect(cluster: PostgresServer, user: str, password: str) -> psycopg2.extensions.connection:
    connection = psycopg2.connect(
        host=cluster.host, port=cluster.port, dbname=DB, user=user, password=password
    )
    connection.autocommit = True
    return connection


def as_admin(cluster: PostgresServer, sql: str) -> list[tuple]:
    admin = connect(cluster, cluster.superuser, cluster.superuser_password)
    with contextlib.closing(admin), admin.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall() if cursor.description else []


def uri(cluster: PostgresServer, user: str) -> str:
    return f"postgresql://{user}@{cluster.host}:{cluster.port}/{DB}"


@pytest.fixture(scope="module")
def database(cluster: PostgresServer) -> PostgresServer:
    """`make db_init` run first without the log's passwords, then again with them."""
    output = run_db_init(cluster)
    logins = dict(
        as_admin(
            cluster, f"SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname IN ('{WRITER}', '{READER}')"
        )
    )
    assert logins == {WRITER: False, READER: False}, "a role without a password must not log in"
    output += run_db_init(
        cluster, PREDICTION_WRITER_PASSWORD=WRITER_PASSWORD, PREDICTION_READER_PASSWORD=READER_PASSWORD
    )
    assert WRITER_PASSWORD not in output and READER_PASSWORD not in output
    # MLflow's tables, made by MLflow's own role as its migrations would.
    mlflow_role = connect(cluster, MLFLOW_USER, MLFLOW_PASSWORD)
    with contextlib.closing(mlflow_role), mlflow_role.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS experiments (experiment_id integer PRIMARY KEY, name text)"
        )
    return cluster


def _record(request_id: str, rows: int = 3, model: str = "eeg-emotion-svm") -> PredictionRecord:
    inputs = pd.DataFrame(
        np.arange(rows * 3, dtype=float).reshape(rows, 3) + int(request_id.split("-")[-1]),
        columns=["a", "b", "c"],
    )
    labels = np.where(np.arange(rows) % 2, "POSITIVE", "NEGATIVE")
    probabilities = np.column_stack([np.full(rows, 0.4), np.full(rows, 0.6)])
    return PredictionRecord(
        "http", request_id, model, "7", inputs, labels, probabilities, ["NEGATIVE", "POSITIVE"], 2.5
    )


def _privilege_error(cluster: PostgresServer, user: str, password: str, statement: str) -> str:
    connection = connect(cluster, user, password)
    with (
        contextlib.closing(connection),
        connection.cursor() as cursor,
        pytest.raises(psycopg2.errors.InsufficientPrivilege) as caught,
    ):
        cursor.execute(statement)
    return str(caught.value)


def test_db_init_creates_the_schema_and_two_plain_roles(database: PostgresServer) -> None:
    (schema_owner,) = as_admin(
        database, "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'predictions'"
    )
    assert schema_owner == (database.superuser,), "neither log role owns the schema, so neither can drop it"
    roles = as_admin(
        database,
        f"SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolcanlogin FROM pg_roles "
        f"WHERE rolname IN ('{WRITER}', '{READER}') ORDER BY rolname",
    )
    assert roles == [(READER, False, False, False, True), (WRITER, False, False, False, True)]
    grants = as_admin(
        database,
        "SELECT grantee, table_name, privilege_type FROM information_schema.role_table_grants "
        "WHERE table_schema = 'predictions' AND grantee <> current_user ORDER BY 1, 2, 3",
    )
    assert grants == [
        (READER, "input_columns", "SELECT"),
        (READER, "predictions", "SELECT"),
        (WRITER, "input_columns", "INSERT"),
        (WRITER, "predictions", "INSERT"),
    ]


def test_the_writer_inserts_and_can_do_nothing_else(database: PostgresServer) -> None:
    log = open_prediction_log(uri(database, WRITER), password=WRITER_PASSWORD, sample_rows=2)
    log.append(_record("writer-1"))
    log.append(_record("writer-2"))
    stats = log.close()
    assert (stats.written, stats.failed, stats.dropped) == (2, 0, 0), stats
    (count,) = as_admin(
        database, "SELECT count(*) FROM predictions.predictions WHERE request_id LIKE 'writer-%'"
    )
    assert count == (2,)
    for statement in (
        "SELECT * FROM predictions.predictions",
        "DELETE FROM predictions.predictions",
        "UPDATE predictions.predictions SET labels = '[]'",
        "TRUNCATE predictions.predictions",
        "DROP TABLE predictions.predictions",
        "SELECT * FROM public.experiments",
        "INSERT INTO public.experiments VALUES (1, 'x')",
        "CREATE TABLE predictions.mine (x int)",
    ):
        _privilege_error(database, WRITER, WRITER_PASSWORD, statement)


def test_mlflows_role_has_no_rights_on_the_log_nor_the_reader_on_mlflow(database: PostgresServer) -> None:
    for statement in (
        "SELECT * FROM predictions.predictions",
        "INSERT INTO predictions.input_columns VALUES ('d', '[]')",
    ):
        assert "predictions" in _privilege_error(database, MLFLOW_USER, MLFLOW_PASSWORD, statement)
    for statement in (
        "SELECT * FROM public.experiments",
        "INSERT INTO predictions.input_columns VALUES ('d', '[]')",
    ):
        _privilege_error(database, READER, READER_PASSWORD, statement)


def test_a_second_db_init_keeps_the_rows_and_takes_back_stray_grants(database: PostgresServer) -> None:
    log = open_prediction_log(uri(database, WRITER), password=WRITER_PASSWORD)
    log.append(_record("rerun-1"))
    assert log.close().written == 1
    as_admin(database, f"GRANT DELETE ON predictions.predictions TO {WRITER}")  # granted by hand
    run_db_init(
        database, PREDICTION_WRITER_PASSWORD=WRITER_PASSWORD, PREDICTION_READER_PASSWORD=READER_PASSWORD
    )
    assert as_admin(
        database, "SELECT count(*) FROM predictions.predictions WHERE request_id = 'rerun-1'"
    ) == [(1,)]
    _privilege_error(database, WRITER, WRITER_PASSWORD, "DELETE FROM predictions.predictions")


def test_the_drift_window_reads_the_newest_rows_of_one_model_from_postgres(database: PostgresServer) -> None:
    log = open_prediction_log(uri(database, WRITER), password=WRITER_PASSWORD, sample_rows=100)
    for number in range(4):
        log.append(_record(f"window-{number}", rows=3, model="eeg-emotion-dnn"))
        log.append(_record(f"other-{number}", rows=3, model="eeg-emotion-other"))
    assert log.close().written == 8
    window = window_from_log(uri(database, READER), "eeg-emotion-dnn", 5, password=READER_PASSWORD)
    expected = pd.concat([_record("window-2").inputs, _record("window-3").inputs], ignore_index=True).tail(5)
    pd.testing.assert_frame_equal(window.features, expected)
    assert window.request_ids == ["window-2"] * 2 + ["window-3"] * 3
    assert "prediction_reader@" in window.source


def test_reading_as_the_writer_is_one_line_naming_the_cause(database: PostgresServer) -> None:
    with pytest.raises(ConfigurationError, match="permission denied for table predictions") as caught:
        window_from_log(uri(database, WRITER), "eeg-emotion-dnn", 5, password=WRITER_PASSWORD)
    assert "\n" not in str(caught.value) and WRITER_PASSWORD not in str(caught.value)


def test_a_stalled_database_drops_and_counts_instead_of_blocking_appends(database: PostgresServer) -> None:
    # The admin holds the table: the writer's INSERT waits (up to its statement timeout).
    admin = psycopg2.connect(
        host=database.host, port=database.port, dbname=DB, user=database.superuser,
        password=database.superuser_password,
    )  # fmt: skip
    writer = open_writer(uri(database, WRITER), WRITER_PASSWORD)
    log = PredictionLog(writer, max_queue=5, batch_size=1, max_wait_s=0.01)
    try:
        with admin.cursor() as cursor:
            cursor.execute("LOCK TABLE predictions.predictions IN ACCESS EXCLUSIVE MODE")
        log.append(_record("stall-0"))
        while log._queue.unfinished_tasks and not _writer_waits(database):
            time.sleep(0.05)
        for number in range(1, 51):  # each returns: the writer is stuck, the queue holds 5
            log.append(_record(f"stall-{number}"))
        stalled = log.stats()
        assert stalled.appended == 51 and stalled.dropped >= 51 - 1 - 5
    finally:
        admin.rollback()
        admin.close()
    final = log.close(timeout_s=60)
    assert final.written + final.dropped + final.failed == 51 and final.written >= 1
    (count,) = as_admin(
        database, "SELECT count(*) FROM predictions.predictions WHERE request_id LIKE 'stall-%'"
    )
    assert count == (final.written,)


def _writer_waits(cluster: PostgresServer) -> bool:
    rows = as_admin(
        cluster,
        f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{WRITER}' AND wait_event_type = 'Lock'",
    )
    return rows[0][0] > 0


def _pg_ctl(cluster: PostgresServer, *args: str) -> None:
    command = [str(cluster.bin_dir / "pg_ctl"), "-D", str(cluster.data_dir), "-w", "-t", "60", *args]
    subprocess.run(_as_postgres_user(command), capture_output=True, text=True, check=True)


def _stop_and_restart(cluster: PostgresServer) -> tuple[threading.Event, threading.Event]:
    """pg_ctl stop now; start again on the same port once `restart` is set. `done` when it is up."""
    _pg_ctl(cluster, "-m", "fast", "stop")
    restart, done = threading.Event(), threading.Event()
    options = (
        f"-p {cluster.port} -k {cluster.base_dir / 'socket'} -c listen_addresses=127.0.0.1 "
        "-c password_encryption=scram-sha-256 -c fsync=off"
    )

    def start() -> None:
        restart.wait(300)
        _pg_ctl(cluster, "-l", str(cluster.log_path), "-o", options, "start")
        done.set()

    threading.Thread(target=start, daemon=True).start()
    return restart, done


def _health(server) -> dict:
    return requests.get(f"{server.url}/health", timeout=5).json()["prediction_log"]


def _wait_for_log(server, key: str, at_least: int) -> dict:
    deadline = time.monotonic() + 60
    while (stats := _health(server))[key] < at_least:
        assert time.monotonic() < deadline, stats
        time.sleep(0.1)
    return stats


def test_the_served_app_logs_to_postgres_and_rides_out_an_outage(
    database: PostgresServer,
    registry,  # noqa: F811 - the fixture of test_serving: a registered model to serve
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREDICTION_LOG_PASSWORD", WRITER_PASSWORD)
    server = start_server(registry, log_path=uri(database, WRITER))
    rows = registry.rows.head(2)
    try:
        before = [requests.post(f"{server.url}/invocations", json=_split(rows), timeout=10) for _ in range(3)]
        assert [r.status_code for r in before] == [200] * 3
        _wait_for_log(server, "written", 3)
        restart, done = _stop_and_restart(database)
        during = [requests.post(f"{server.url}/invocations", json=_split(rows), timeout=10) for _ in range(5)]
        assert [r.status_code for r in during] == [200] * 5
        assert [r.json() for r in during] == [before[0].json()] * 5
        stats = _wait_for_log(server, "failed", 5)
        assert stats["written"] == 3 and stats["dropped"] == 0 and "OperationalError" in stats["last_error"]
        restart.set()
        assert done.wait(120), "PostgreSQL did not come back"
        after = requests.post(f"{server.url}/invocations", json=_split(rows), timeout=10)
        assert after.status_code == 200
        stats = _wait_for_log(server, "written", 4)  # a new connection after the outage
        assert (stats["appended"], stats["written"], stats["failed"]) == (9, 4, 5)
    finally:
        err = server.stop()
    assert "prediction log" in err and WRITER_PASSWORD not in err
    logged = as_admin(
        database, "SELECT request_id FROM predictions.predictions WHERE model_name = 'served' ORDER BY id"
    )
    ids = [r.headers["X-Request-Id"] for r in (*before, after)]
    assert [row[0] for row in logged] == ids
