"""The prediction log: what each served request and `make predict` batch saw and answered.

Appending never slows or fails a prediction: `PredictionLog.append` puts the record on a
bounded queue and returns; one background thread turns records into rows and writes them in
batches through a `PredictionLogWriter`. A record that cannot be queued (the queue is full) or
written (the store refuses it) is counted in `stats()`, never raised. Locally the writer is
SQLite (`SQLitePredictionLogWriter`); a PostgreSQL writer only has to implement the same two
methods on the same row shape (`PredictionRecord.to_row`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import queue
import sqlite3
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

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
    source TEXT NOT NULL,             -- http or batch
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


def open_prediction_log(path: str | Path, *, sample_rows: int = 100) -> PredictionLog:
    """The local prediction log: a SQLite file at `path`, written by a background thread."""
    return PredictionLog(SQLitePredictionLogWriter(path), sample_rows=sample_rows)


def read_prediction_log(path: str | Path, *, decoded: bool = False) -> pd.DataFrame:
    """Every row of a local prediction log, oldest first.

    By default the lists are JSON text, and `inputs` is `{"columns": [...], "data": [[...]]}`
    as JSON text (what `json.loads` readers such as the monitoring window expect). With
    `decoded=True`, `inputs` is a DataFrame of the kept rows and `sampled_rows`, `labels`,
    `probabilities` and `classes` are lists.
    """
    with contextlib.closing(sqlite3.connect(Path(path))) as connection:
        rows = pd.read_sql_query("SELECT * FROM predictions ORDER BY id", connection)
        names = dict(connection.execute("SELECT digest, columns FROM input_columns").fetchall())
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
