"""Honest held-out figures: baseline, per-recording accuracy, bootstrap interval."""

from __future__ import annotations

import numpy as np
import pytest

from modules.models.evaluation import (
    CrossValidation,
    bootstrap_interval,
    held_out_report,
    majority_baseline,
    per_recording_scores,
)
from modules.models.scoring import evaluate


def test_the_baseline_predicts_the_training_majority_on_the_held_out_rows():
    baseline = majority_baseline(["A", "A", "B"], ["B", "B", "A", "B"])
    assert baseline.predicted_label == "A"
    assert baseline.accuracy == pytest.approx(0.25)


def test_per_recording_scores_name_each_recording_its_label_and_its_majority_prediction():
    truth = ["POS"] * 4 + ["NEG"] * 2
    predicted = ["POS", "POS", "NEG", "POS", "POS", "POS"]
    scores = per_recording_scores(truth, predicted, ["r1"] * 4 + ["r2"] * 2)
    assert [(s.recording, s.label, s.rows, s.accuracy, s.predicted_majority) for s in scores] == [
        ("r1", "POS", 4, 0.75, "POS"),
        ("r2", "NEG", 2, 0.0, "POS"),
    ]
    assert per_recording_scores(truth, predicted, None) == []


def test_a_bootstrap_over_recordings_is_wider_than_one_over_rows():
    # Three recordings of 100 rows: two perfect, one all wrong. Rows look independent, recordings do not.
    correct = np.r_[np.ones(200), np.zeros(100)].astype(bool)
    units = np.repeat(["a", "b", "c"], 100)
    by_recording = bootstrap_interval(correct, units, seed=1)
    by_row = bootstrap_interval(correct, None, seed=1)
    assert by_recording.unit == "recordings" and by_recording.n_units == 3
    assert by_row.unit == "rows" and by_row.n_units == 300
    assert by_recording.low == pytest.approx(0.0) and by_recording.high == pytest.approx(1.0)
    assert by_row.high - by_row.low < 0.15
    assert by_row.low < 2 / 3 < by_row.high


def test_the_interval_is_repeatable_for_a_seed():
    correct = np.random.default_rng(0).random(50) > 0.3
    assert bootstrap_interval(correct, seed=3) == bootstrap_interval(correct, seed=3)


def test_the_report_puts_the_margin_interval_and_cv_beside_the_accuracy():
    y_train = ["A"] * 6 + ["B"] * 4
    y_test = ["A", "A", "B", "B"]
    y_pred = ["A", "A", "B", "A"]
    report = held_out_report(
        evaluate(y_test, y_pred, labels=["A", "B"]),
        y_train,
        y_test,
        y_pred,
        recordings=["r1", "r1", "r2", "r2"],
        cross_validation=CrossValidation(mean=0.7, std=0.1, folds=5, protocol="grouped"),
    )
    assert report.accuracy == pytest.approx(0.75)
    assert report.baseline.accuracy == pytest.approx(0.5)
    assert report.margin_over_baseline == pytest.approx(0.25)
    metrics = report.metrics()
    assert metrics["baseline_accuracy"] == pytest.approx(0.5)
    assert metrics["cv_accuracy_mean"] == pytest.approx(0.7)
    assert "leak_gap" not in metrics
    line = report.summary_line()
    assert "held-out accuracy 0.750" in line and "baseline 0.500 (margin +0.250)" in line
    assert "over 2 recordings" in line and "grouped CV 0.700 +/- 0.100" in line
