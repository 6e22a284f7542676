"""The prediction log: what each served request and `make predict` batch saw and answered.

Appending never slows or fails a prediction: `PredictionLog.append` puts the record on a
bounded queue and returns; one background thread turns records into rows and writes them in
batches through a `PredictionLogWriter`. A record that cannot be queued (the queue is full) or
written (the store refuses it, the server is down) is counted in `stats()`, never raised.

Where the log lives is one location string (PREDICTION_LOG_URI, else PREDICTION_LOG_PATH): a file
path or `sqlite:///PATH` locally (`SQLitePredictionLogWriter`), `postgresql://USER@HOST:PORT/DB`
in production (`PostgresPredictionLogWriter`: the tables of the `predictions` schema that
`make db_init` creates, written by the INSERT-only `prediction_writer` role). The password is
never in the location: it comes apart (PREDICTION_LOG_PASSWORD). Both backends store the same
row shape (`PredictionRecord.to_row`) and `read_prediction_log` reads either.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import queue
import re
import sqlite3
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from modules.errors import ConfigurationError, DataValidationError, ServiceUnavailableError
from modules.tracking.redaction import mask_password

COLUMNS = (
    "logged_at",
    "source",
    "request_id",
    "model_name",
    "model_version",
    "n_rows",
    "sampled_rows",
    "input_columns",
    "inputs",
    "labels",
    "probabilities",
    "classes",
    "latency_ms",
)

_CREATE = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    logged_at TEXT NOT NULL,          -- UTC, ISO 8601
    source TEXT NOT NULL,             -- http, batch (make predict) or recording (predict-recording)
    request_id TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT,
    n_rows INTEGER NOT NULL,          -- rows in the request or batch
    sampled_rows TEXT NOT NULL,       -- JSON list: which of them are kept below
    input_columns TEXT NOT NULL,      -- sha256 of the column names, kept once in input_columns
    inputs BLOB NOT NULL,             -- the kept rows, float64, as a .npy file (numpy.load)
    labels TEXT NOT NULL,             -- JSON list, one per kept row
    probabilities TEXT,               -- JSON list of lists, columns in `classes` order
    classes TEXT,
    latency_ms REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS input_columns (
    digest TEXT PRIMARY KEY,
    columns TEXT NOT NULL             -- JSON list of the column names, in the order of `inputs`
)
"""


# The PostgreSQL tables, created by `make db_init` (infra/postgres/prediction_log.sql), not here:
# the writer role may only insert.
POSTGRES_SCHEMA = "predictions"
_POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg2")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_EXPECTED = "a file path, sqlite:///PATH or postgresql://USER@HOST:PORT/DB"


@dataclass(frozen=True)
class LogLocation:
    """Where a prediction log lives: a SQLite file (`path`) or a PostgreSQL database (`dsn`)."""

    path: Path | None = None
    dsn: str | None = None  # a libpq URI without password

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else str(self.dsn)


def parse_log_location(location: str | Path | LogLocation) -> LogLocation:
    """A file path, `sqlite:///PATH` or `postgresql://USER@HOST[:PORT]/DB`; one-line error otherwise."""
    if isinstance(location, LogLocation):
        return location
    if isinstance(location, Path):
        return LogLocation(path=location)
    text = str(location).strip()
    shown = mask_password(text)
    if not text:
        raise ConfigurationError(f"prediction log location is empty: expected {_EXPECTED}")
    match = _SCHEME.match(text)
    if match is None:
        return LogLocation(path=Path(text).expanduser())
    scheme = match.group(1).lower()
    if scheme == "sqlite":
        path = text[len("sqlite:///") :] if text.lower().startswith("sqlite:///") else ""
        if not path:
            raise ConfigurationError(f"prediction log {shown!r} names no file: expected sqlite:///PATH")
        return LogLocation(path=Path(path))
    if scheme not in _POSTGRES_SCHEMES:
        raise ConfigurationError(f"prediction log {shown!r}: unknown scheme {scheme!r}; expected {_EXPECTED}")
    try:
        parts = urllib.parse.urlsplit(text)
        host, user, password = parts.hostname, parts.username, parts.password
    except ValueError as exc:
        raise ConfigurationError(f"prediction log {shown!r} is not a valid URI ({exc})") from None
    if password is not None:
        raise ConfigurationError(
            f"prediction log {shown!r} holds a password: put it in PREDICTION_LOG_PASSWORD instead"
        )
    database = parts.path.lstrip("/")
    missing = [name for name, value in (("user", user), ("host", host), ("database", database)) if not value]
    if missing:
        raise ConfigurationError(
            f"prediction log {shown!r} lacks its {', '.join(missing)}: expected postgresql://USER@HOST:PORT/DB"
        )
    # libpq reads `postgresql://` URIs itself (query options such as sslmode included).
    return LogLocation(dsn="postgresql://" + text.split("://", 1)[1])


def _npy(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(values, dtype=np.float64), allow_pickle=False)
    return buffer.getvalue()


def column_set(columns: Any) -> tuple[str, str]:
    """(sha256, JSON) of a list of column names: 2548 names are stored once, not with every request."""
    names = json.dumps([str(c) for c in columns])
    return hashlib.sha256(names.encode()).hexdigest(), names


def new_request_id() -> str:
    """A random id that a client can quote (it is returned in the `X-Request-Id` header)."""
    return uuid.uuid4().hex


@dataclass
class PredictionRecord:
    """One request or batch as scored; `to_row` keeps `sample_rows` of it, evenly spread."""

    source: str
    request_id: str
    model_name: str
    model_version: str | None
    inputs: pd.DataFrame
    labels: Any  # sequence of labels, one per row of inputs
    probabilities: Any | None  # 2-D array, rows follow inputs
    classes: list[str] | None
    latency_ms: float
    logged_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_row(self, sample_rows: int, columns_digest: str) -> tuple[Any, ...]:
        """The record as one table row (JSON text for the lists, the inputs as .npy), in `COLUMNS` order."""
        n = len(self.inputs)
        kept = (
            np.arange(n)
            if n <= sample_rows
            else np.unique(np.linspace(0, n - 1, sample_rows).round()).astype(int)
        )
        labels = np.asarray(self.labels)[kept]
        probabilities = None
        if self.probabilities is not None:
            probabilities = json.dumps(np.asarray(self.probabilities, dtype=float)[kept].round(6).tolist())
        return (
            self.logged_at.isoformat(),
            self.source,
            self.request_id,
            self.model_name,
            self.model_version,
            n,
            json.dumps(kept.tolist()),
            columns_digest,
            _npy(self.inputs.to_numpy()[kept]),
            json.dumps([str(v) for v in labels]),
            probabilities,
            None if self.classes is None else json.dumps(list(self.classes)),
            float(self.latency_ms),
        )


class PredictionLogWriter(Protocol):
    """Where rows end up: SQLite locally; PostgreSQL in production implements the same."""

    def write(self, rows: list[tuple[Any, ...]], column_sets: dict[str, str]) -> None:
        """Append rows (in `COLUMNS` order) and their column sets ({digest: JSON}) in one transaction."""

    def close(self) -> None:
        """Release the connection."""


class SQLitePredictionLogWriter:
    """Rows appended to the `predictions` table of a SQLite file, created on first use.

    Used from the log's one background thread only (SQLite connections stay in their thread).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._connection: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=5.0)
            connection.execute("PRAGMA journal_mode=WAL")  # readers (monitoring) never block the writer
            connection.executescript(_CREATE)
            connection.commit()
            self._connection = connection
        return self._connection

    def write(self, rows: list[tuple[Any, ...]], column_sets: dict[str, str]) -> None:
        connection = self._connect()
        placeholders = ", ".join("?" for _ in COLUMNS)
        with connection:
            connection.executemany(
                "INSERT OR IGNORE INTO input_columns (digest, columns) VALUES (?, ?)",
                list(column_sets.items()),
            )
            connection.executemany(
                f"INSERT INTO predictions ({', '.join(COLUMNS)}) VALUES ({placeholders})", rows
            )

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class PostgresPredictionLogWriter:
    """Rows appended to `predictions.predictions` in PostgreSQL, as the INSERT-only writer role.

    Connects on first use and again after any error (a restarted server, a dropped connection),
    so an outage costs the batches written during it and nothing after. Used from the log's one
    background thread only; the timeouts bound how long a dead server holds that thread.
    """

    def __init__(
        self, dsn: str, password: str = "", *, connect_timeout_s: int = 5, statement_timeout_ms: int = 10_000
    ) -> None:
        self.dsn = dsn
        self._password = password
        self.connect_timeout_s = connect_timeout_s
        self.statement_timeout_ms = statement_timeout_ms
        self._connection: Any = None

    def _connect(self) -> Any:
        import psycopg2

        if self._connection is None or self._connection.closed:
            self._connection = psycopg2.connect(
                self.dsn,
                password=self._password or None,
                connect_timeout=self.connect_timeout_s,
                application_name="operational-ml prediction log",
                options=f"-c statement_timeout={self.statement_timeout_ms}",
            )
        return self._connection

    def write(self, rows: list[tuple[Any, ...]], column_sets: dict[str, str]) -> None:
        import psycopg2
        from psycopg2.extras import execute_values

        connection = self._connect()
        inputs = COLUMNS.index("inputs")
        adapted = [(*row[:inputs], psycopg2.Binary(row[inputs]), *row[inputs + 1 :]) for row in rows]
        try:
            with connection.cursor() as cursor:
                # Without a conflict target DO NOTHING needs INSERT only (a target needs SELECT on it).
                execute_values(
                    cursor,
                    f"INSERT INTO {POSTGRES_SCHEMA}.input_columns (digest, columns) VALUES %s "
                    "ON CONFLICT DO NOTHING",
                    list(column_sets.items()),
                )
                execute_values(
                    cursor,
                    f"INSERT INTO {POSTGRES_SCHEMA}.predictions ({', '.join(COLUMNS)}) VALUES %s",
                    adapted,
                )
            connection.commit()
        except Exception:
            self.close()  # start afresh with the next batch, whatever state the session is in
            raise

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None


def open_writer(location: str | Path | LogLocation, password: str = "") -> PredictionLogWriter:
    """The writer of a location (see `parse_log_location`)."""
    where = parse_log_location(location)
    if where.path is not None:
        return SQLitePredictionLogWriter(where.path)
    return PostgresPredictionLogWriter(str(where.dsn), password)


@dataclass
class LogStats:
    """What became of the records appended so far."""

    appended: int = 0
    written: int = 0
    dropped: int = 0  # the queue was full
    failed: int = 0  # the writer raised
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_STOP = object()


class PredictionLog:
    """Records queued by `append`, written in batches by one background thread."""

    def __init__(
        self,
        writer: PredictionLogWriter,
        *,
        sample_rows: int = 100,
        max_queue: int = 10_000,
        batch_size: int = 256,
        max_wait_s: float = 0.5,
    ) -> None:
        self.writer = writer
        self.sample_rows = sample_rows
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._stats = LogStats()
        self._lock = threading.Lock()
        self._closed = False
        self._column_sets: dict[tuple[str, ...], tuple[str, str]] = {}  # used by the writer thread only
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def append(self, record: PredictionRecord) -> None:
        """Queue one record; never blocks, never raises (a full queue counts as dropped)."""
        with self._lock:
            self._stats.appended += 1
        try:
            if self._closed:
                raise queue.Full
            self._queue.put_nowait(record)
        except queue.Full:
            with self._lock:
                self._stats.dropped += 1

    def stats(self) -> LogStats:
        """A copy of the counters."""
        with self._lock:
            return LogStats(**self._stats.to_dict())

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued record is written or failed; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def close(self, timeout_s: float = 10.0) -> LogStats:
        """Write what is queued, stop the thread, close the writer; returns the final counters."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join(timeout_s)
        return self.stats()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[PredictionRecord] = []
            try:
                item = self._queue.get()
            except Exception:  # pragma: no cover - queue.get without timeout does not fail
                continue
            deadline = time.monotonic() + self.max_wait_s
            while True:
                if item is _STOP:
                    stopping = True
                    self._queue.task_done()
                else:
                    batch.append(item)
                if stopping or len(batch) >= self.batch_size:
                    break
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
            if batch:
                self._write(batch)
        try:
            self.writer.close()
        except Exception as exc:  # a log failure is reported, never raised
            self._failed(0, exc)

    def _write(self, batch: list[PredictionRecord]) -> None:
        try:
            rows = []
            column_sets: dict[str, str] = {}
            for record in batch:
                names = tuple(str(c) for c in record.inputs.columns)
                if names not in self._column_sets:
                    self._column_sets[names] = column_set(names)
                digest, text = self._column_sets[names]
                column_sets[digest] = text
                rows.append(record.to_row(self.sample_rows, digest))
            self.writer.write(rows, column_sets)
        except Exception as exc:  # a log failure is reported, never raised
            self._failed(len(batch), exc)
        else:
            with self._lock:
                self._stats.written += len(batch)
        finally:
            for _ in batch:
                self._queue.task_done()

    def _failed(self, count: int, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        with self._lock:
            first = self._stats.failed == 0 and count
            self._stats.failed += count
            self._stats.last_error = message
        if first:
            print(
                f"warning: prediction log: {count} record(s) not written ({message})",
                file=sys.stderr,
                flush=True,
            )


def open_prediction_log(
    location: str | Path | LogLocation, *, sample_rows: int = 100, password: str = ""
) -> PredictionLog:
    """The prediction log at `location` (a SQLite file or PostgreSQL), written by a background thread.

    Nothing is connected here: a database that is down at start costs counted failures, not the
    start of the server. A malformed location is a one-line `ConfigurationError`.
    """
    return PredictionLog(open_writer(location, password), sample_rows=sample_rows)


def open_configured_prediction_log(settings: Any) -> PredictionLog:
    """The log the settings name: PREDICTION_LOG_URI (else PREDICTION_LOG_PATH), with its password."""
    return open_prediction_log(
        settings.prediction_log_target,
        sample_rows=settings.prediction_log_sample_rows,
        password=settings.postgres.get("prediction_log_password", ""),
    )


def _select(model_name: str | None, last: int | None, table: str, mark: str) -> tuple[str, list[Any]]:
    """The newest `last` rows (of `model_name`), newest first; `mark` is the driver's placeholder."""
    sql = f"SELECT id, {', '.join(COLUMNS)} FROM {table}"
    params: list[Any] = []
    if model_name is not None:
        sql += f" WHERE model_name = {mark}"
        params.append(model_name)
    sql += " ORDER BY id DESC"
    if last is not None:
        sql += f" LIMIT {mark}"
        params.append(int(last))
    return sql, params


def _read_sqlite(path: Path, model_name: str | None, last: int | None) -> tuple[list[tuple], dict[str, str]]:
    if not path.is_file():
        raise DataValidationError(f"{path}: no prediction log yet")
    with contextlib.closing(sqlite3.connect(path)) as connection:
        sql, params = _select(model_name, last, "predictions", "?")
        rows = connection.execute(sql, params).fetchall()
        names = dict(connection.execute("SELECT digest, columns FROM input_columns").fetchall())
    return rows, names


def _read_postgres(
    dsn: str, password: str, model_name: str | None, last: int | None
) -> tuple[list[tuple], dict[str, str]]:
    import psycopg2

    try:
        connection = psycopg2.connect(
            dsn, password=password or None, connect_timeout=10, application_name="operational-ml monitoring"
        )
    except psycopg2.OperationalError as exc:
        reason = " ".join(str(exc).split())
        raise ServiceUnavailableError(f"prediction log {dsn}: cannot connect ({reason})") from None
    try:
        with connection.cursor() as cursor:
            sql, params = _select(model_name, last, f"{POSTGRES_SCHEMA}.predictions", "%s")
            cursor.execute(sql, params)
            found = cursor.fetchall()
            cursor.execute(f"SELECT digest, columns FROM {POSTGRES_SCHEMA}.input_columns")
            names = dict(cursor.fetchall())
    except psycopg2.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigurationError(
            f"prediction log {dsn}: {reason} (run `make db_init`; read as the prediction_reader role)"
        ) from None
    finally:
        connection.close()
    rows = []
    for row in found:  # the same shapes as SQLite gives: ISO text for the time, bytes for the inputs
        row = list(row)
        row[1] = row[1].astimezone(UTC).isoformat()
        row[1 + COLUMNS.index("inputs")] = bytes(row[1 + COLUMNS.index("inputs")])
        rows.append(tuple(row))
    return rows, names


def read_prediction_log(
    location: str | Path | LogLocation,
    *,
    decoded: bool = False,
    model_name: str | None = None,
    last: int | None = None,
    password: str = "",
) -> pd.DataFrame:
    """The rows of a prediction log (SQLite file or PostgreSQL), oldest first.

    `model_name` keeps that model's rows and `last` the newest `last` of them (a monitoring
    window reads only what it needs). By default the lists are JSON text, and `inputs` is
    `{"columns": [...], "data": [[...]]}` as JSON text (what `json.loads` readers such as the
    monitoring window expect). With `decoded=True`, `inputs` is a DataFrame of the kept rows and
    `sampled_rows`, `labels`, `probabilities` and `classes` are lists.
    """
    where = parse_log_location(location)
    if where.path is not None:
        found, names = _read_sqlite(where.path, model_name, last)
    else:
        found, names = _read_postgres(str(where.dsn), password, model_name, last)
    rows = pd.DataFrame(found[::-1], columns=["id", *COLUMNS])
    columns = {digest: json.loads(text) for digest, text in names.items()}
    frames = [
        pd.DataFrame(np.load(io.BytesIO(blob), allow_pickle=False), columns=columns[digest])
        for blob, digest in zip(rows["inputs"], rows["input_columns"], strict=True)
    ]
    if not decoded:
        rows["inputs"] = [
            json.dumps({"columns": list(frame.columns), "data": frame.to_numpy().tolist()})
            for frame in frames
        ]
        return rows
    rows["inputs"] = frames
    for name in ("sampled_rows", "labels", "probabilities", "classes"):
        rows[name] = [None if value is None else json.loads(value) for value in rows[name]]
    return rows


ScoredRowsLogger = Callable[[pd.DataFrame, Any, Any, "list[str] | None", float], None]


def scored_rows_logger(
    log: PredictionLog, source: str, model_name: str, model_version: str | None
) -> ScoredRowsLogger:
    """A callback `(rows, labels, probabilities, classes, latency_ms)` appending each scored chunk to `log`."""

    def append(
        rows: pd.DataFrame, labels: Any, probabilities: Any, classes: list[str] | None, latency_ms: float
    ) -> None:
        log.append(
            PredictionRecord(
                source=source,
                request_id=new_request_id(),
                model_name=model_name,
                model_version=model_version,
                inputs=rows,
                labels=list(labels),
                probabilities=None if probabilities is None else np.asarray(probabilities),
                classes=classes,
                latency_ms=latency_ms,
            )
        )

    return append
