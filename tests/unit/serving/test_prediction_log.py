"""The prediction log writes in the background, samples large batches, and counts its failures."""

from __future__ import annotations

import json
import threading

import numpy as np
import pandas as pd

from modules.serving.prediction_log import (
    PredictionLog,
    PredictionRecord,
    SQLitePredictionLogWriter,
    open_prediction_log,
    read_prediction_log,
)


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
