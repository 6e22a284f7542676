"""The prediction log writes in the background, samples large batches, and counts its failures."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modules.errors import ConfigurationError, DataValidationError
from modules.serving.prediction_log import (
    LogLocation,
    PostgresPredictionLogWriter,
    PredictionLog,
    PredictionRecord,
    SQLitePredictionLogWriter,
    open_configured_prediction_log,
    open_prediction_log,
    open_writer,
    parse_log_location,
    read_prediction_log,
)
from modules.settings import load_settings


def _record(rows: int, request_id: str = "r1") -> PredictionRecord:
    inputs = pd.DataFrame(np.arange(rows * 2, dtype=float).reshape(rows, 2), columns=["x", "y"])
    labels = np.where(np.arange(rows) % 2, "POSITIVE", "NEGATIVE")
    probabilities = np.column_stack([np.full(rows, 0.25), np.full(rows, 0.75)])
    return PredictionRecord(
        "http", request_id, "m", "3", inputs, labels, probabilities, ["NEGATIVE", "POSITIVE"], 1.5
    )


def test_records_are_written_to_sqlite_with_inputs_labels_and_probabilities(tmp_path):
    log = open_prediction_log(tmp_path / "logs" / "p.db", sample_rows=10)
    log.append(_record(3, "small"))
    log.append(_record(1000, "large"))
    stats = log.close()
    assert (stats.appended, stats.written, stats.failed, stats.dropped) == (2, 2, 0, 0)
    rows = read_prediction_log(tmp_path / "logs" / "p.db", decoded=True).set_index("request_id")
    small = rows.loc["small"]
    expected = pd.DataFrame([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]], columns=["x", "y"])
    pd.testing.assert_frame_equal(small["inputs"], expected)
    assert small["labels"] == ["NEGATIVE", "POSITIVE", "NEGATIVE"]
    assert small["probabilities"][0] == [0.25, 0.75]
    assert (small["model_name"], small["model_version"], small["latency_ms"]) == ("m", "3", 1.5)
    large = rows.loc["large"]
    kept = large["sampled_rows"]
    assert large["n_rows"] == 1000 and len(kept) == 10 and kept[0] == 0 and kept[-1] == 999
    assert large["inputs"].shape == (10, 2) and large["inputs"]["x"].iloc[-1] == 1998.0
    assert large["input_columns"] == small["input_columns"]  # the names are stored once


class _BrokenWriter:
    def write(self, rows, column_sets):
        raise OSError("disk full")

    def close(self):
        pass


class _BlockedWriter:
    def __init__(self) -> None:
        self.release = threading.Event()

    def write(self, rows, column_sets):
        self.release.wait(timeout=30)

    def close(self):
        pass


def test_a_failing_writer_is_counted_never_raised(capsys):
    log = PredictionLog(_BrokenWriter())
    for number in range(4):
        log.append(_record(2, str(number)))
    assert log.flush()
    stats = log.close()
    assert (stats.failed, stats.written) == (4, 0)
    assert stats.last_error == "OSError: disk full"
    assert "prediction log" in capsys.readouterr().err


def test_append_never_waits_for_the_writer():
    writer = _BlockedWriter()
    log = PredictionLog(writer, max_queue=2, batch_size=1)
    for number in range(20):  # returns although the writer is stuck: the overflow is dropped
        log.append(_record(1, str(number)))
    stats = log.stats()
    assert stats.appended == 20 and stats.dropped >= 15
    writer.release.set()
    assert log.close().written == 20 - stats.dropped


def test_an_unwritable_path_fails_the_log_not_the_caller(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    log = PredictionLog(SQLitePredictionLogWriter(blocker / "p.db"))
    log.append(_record(2))
    stats = log.close()
    assert stats.failed == 1 and stats.written == 0


def test_by_default_the_inputs_read_back_as_json_columns_and_data(tmp_path):
    log = open_prediction_log(tmp_path / "p.db")
    log.append(_record(2))
    log.close()
    row = read_prediction_log(tmp_path / "p.db").iloc[0]
    inputs = json.loads(row["inputs"])  # the shape modules.monitoring reads
    assert inputs == {"columns": ["x", "y"], "data": [[0.0, 1.0], [2.0, 3.0]]}
    assert json.loads(row["labels"]) == ["NEGATIVE", "POSITIVE"]


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("predictions/p.db", LogLocation(path=Path("predictions/p.db"))),
        ("/srv/log/p.db", LogLocation(path=Path("/srv/log/p.db"))),
        ("sqlite:////srv/log/p.db", LogLocation(path=Path("/srv/log/p.db"))),
        ("sqlite:///p.db", LogLocation(path=Path("p.db"))),
        (
            "postgresql://prediction_writer@10.0.0.5:5432/mlflowdata?sslmode=require",
            LogLocation(dsn="postgresql://prediction_writer@10.0.0.5:5432/mlflowdata?sslmode=require"),
        ),
        ("postgresql+psycopg2://w@db/m", LogLocation(dsn="postgresql://w@db/m")),
        ("postgres://w@db/m", LogLocation(dsn="postgresql://w@db/m")),
    ],
)
def test_a_location_names_its_backend(location, expected):
    assert parse_log_location(location) == expected


def test_the_location_picks_the_writer(tmp_path):
    assert isinstance(open_writer(tmp_path / "p.db"), SQLitePredictionLogWriter)
    writer = open_writer("postgresql://prediction_writer@db.internal:5432/mlflowdata", "s3cret")
    assert isinstance(writer, PostgresPredictionLogWriter)
    assert writer.dsn == "postgresql://prediction_writer@db.internal:5432/mlflowdata"
    assert "s3cret" not in writer.dsn  # the password travels apart, never in a printable URI


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("mysql://u@h/db", "unknown scheme 'mysql'"),
        ("sqlite://", "names no file"),
        ("postgresql://db.internal/mlflowdata", "lacks its user"),
        ("postgresql://w@db.internal", "lacks its database"),
        ("postgresql://w@/mlflowdata", "lacks its host"),
        ("   ", "is empty"),
    ],
)
def test_a_bad_location_is_one_line_naming_it(location, message):
    with pytest.raises(ConfigurationError, match=message) as caught:
        open_prediction_log(location)
    assert "\n" not in str(caught.value)


def test_a_password_in_the_uri_is_refused_without_being_repeated():
    with pytest.raises(ConfigurationError, match="PREDICTION_LOG_PASSWORD") as caught:
        parse_log_location("postgresql://prediction_writer:hunter2-secret@db/mlflowdata")
    assert "hunter2-secret" not in str(caught.value)


def test_settings_choose_the_uri_over_the_local_file(tmp_path):
    local = load_settings(root=tmp_path, env={})
    assert local.prediction_log_target == str(tmp_path / "predictions" / "predictions.db")
    production = load_settings(
        root=tmp_path,
        env={
            "PREDICTION_LOG_URI": "postgresql://prediction_writer@db:5432/mlflowdata",
            "PREDICTION_LOG_PASSWORD": "pw-of-the-writer",
        },
    )
    assert production.prediction_log_target == "postgresql://prediction_writer@db:5432/mlflowdata"
    log = open_configured_prediction_log(production)
    try:
        assert isinstance(log.writer, PostgresPredictionLogWriter)
        assert log.writer._password == "pw-of-the-writer"
    finally:
        log.close()


def test_an_unreachable_database_is_counted_not_raised():
    # Port 1 on loopback refuses at once: the failure is the writer's, the caller never sees it.
    log = open_prediction_log("postgresql://prediction_writer@127.0.0.1:1/mlflowdata", password="x")
    log.append(_record(2))
    stats = log.close()
    assert (stats.appended, stats.written, stats.failed) == (1, 0, 1)
    assert stats.last_error.startswith("OperationalError")


def test_a_window_reads_the_newest_records_of_one_model(tmp_path):
    log = open_prediction_log(tmp_path / "p.db")
    for number in range(5):
        record = _record(1, f"m-{number}")
        log.append(record)
        log.append(replace(record, model_name="other", request_id=f"o-{number}"))
    log.close()
    window = read_prediction_log(tmp_path / "p.db", model_name="m", last=2)
    assert window["request_id"].tolist() == ["m-3", "m-4"]  # oldest first, as the whole log reads
    assert len(read_prediction_log(tmp_path / "p.db")) == 10


def test_reading_a_missing_log_says_so(tmp_path):
    with pytest.raises(DataValidationError, match="no prediction log yet"):
        read_prediction_log(tmp_path / "absent.db")
    assert not (tmp_path / "absent.db").exists()


def test_the_drift_window_reads_the_local_log_through_the_same_reader(tmp_path):
    from modules.monitoring.check import window_from_log

    log = open_prediction_log(tmp_path / "p.db")
    for number in range(3):
        log.append(_record(2, f"m-{number}"))
    log.close()
    window = window_from_log(tmp_path / "p.db", "m", 3)
    assert window.request_ids == ["m-1", "m-2", "m-2"]
    assert window.features["x"].tolist() == [2.0, 0.0, 2.0]
    with pytest.raises(DataValidationError, match="serve or predict first"):
        window_from_log(str(tmp_path / "absent.db"), "m", 3)
