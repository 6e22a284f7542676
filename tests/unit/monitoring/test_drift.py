"""Drift statistics and the retrain decision: hand-computable cases, the correction, the decision table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from modules.errors import ConfigurationError, DataValidationError
from modules.monitoring import (
    DriftThresholds,
    Reference,
    benjamini_hochberg,
    build_reference,
    detect_drift,
    drift_share_over_time,
    population_stability_index,
)
from modules.monitoring.reference import bin_counts
from modules.settings import load_settings

LABELS = ("A", "B", "C")


def gaussian_frame(rows: int, columns: int, seed: int, shift: np.ndarray | None = None) -> pd.DataFrame:
    values = np.random.default_rng(seed).standard_normal((rows, columns))
    if shift is not None:
        values = values + shift
    return pd.DataFrame(values, columns=[f"f{k}" for k in range(columns)])


def balanced_labels(rows: int) -> np.ndarray:
    return np.array([LABELS[k % 3] for k in range(rows)], dtype=object)


@pytest.fixture(scope="module")
def gaussian_reference() -> Reference:
    train = gaussian_frame(3000, 60, seed=0)
    labels = balanced_labels(len(train))
    return build_reference(train, labels, labels, test_accuracy=0.9, sample_rows=1000, seed=1)


def test_psi_matches_the_formula_by_hand() -> None:
    # (0.9 - 0.5) ln(0.9 / 0.5) + (0.1 - 0.5) ln(0.1 / 0.5) = 0.4 ln 1.8 + 0.4 ln 5
    psi = population_stability_index(np.array([[0.5], [0.5]]), np.array([[0.9], [0.1]]))
    assert psi[0] == pytest.approx(0.4 * np.log(1.8) + 0.4 * np.log(5.0))
    assert population_stability_index(np.array([0.2, 0.8]), np.array([0.2, 0.8])) == pytest.approx(0.0)


def test_psi_of_an_empty_bin_is_large_but_finite() -> None:
    psi = population_stability_index(np.array([0.5, 0.5]), np.array([1.0, 0.0]))
    assert np.isfinite(psi) and psi > 2.0


def test_bin_counts_put_each_value_in_its_quantile_bin_for_every_column() -> None:
    values = np.array([[0.0, 5.0], [1.0, 5.0], [2.0, 5.0], [3.0, 7.0]])
    edges = np.array([[1.0, 5.0], [2.5, 5.0]])  # column 2 has a repeated edge: an empty middle bin
    counts = bin_counts(values, edges)
    assert counts[:, 0].tolist() == [1, 2, 1]  # 0 | 1, 2 | 3
    assert counts[:, 1].tolist() == [0, 0, 4]


def test_ks_statistic_and_psi_per_column_by_hand() -> None:
    # Column x: reference 1..8, window 5..12 -> the empirical CDFs differ by at most 0.5.
    # Column y: identical -> KS 0, PSI 0.
    train = pd.DataFrame({"x": np.arange(1.0, 9.0), "y": np.arange(1.0, 9.0)})
    labels = balanced_labels(8)
    reference = build_reference(train, labels, bins=2, sample_rows=8)
    window = pd.DataFrame({"x": np.arange(5.0, 13.0), "y": np.arange(1.0, 9.0)})
    summary = detect_drift(reference, window)
    by_column = summary.columns.set_index("column")
    assert by_column.loc["x", "ks_statistic"] == pytest.approx(0.5)
    assert by_column.loc["y", "ks_statistic"] == pytest.approx(0.0)
    # Median edge 4.5: reference halves (0.5, 0.5), window all above -> (1e-4 floor, 1).
    expected = (1e-4 - 0.5) * np.log(1e-4 / 0.5) + 0.5 * np.log(2.0)
    assert by_column.loc["x", "psi"] == pytest.approx(expected)
    assert by_column.loc["y", "psi"] == pytest.approx(0.0)


def test_benjamini_hochberg_by_hand_and_against_scipy() -> None:
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4/rank -> 0.02, 0.02, 0.04, 0.04 (already monotone).
    adjusted = benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.005]))
    assert adjusted.tolist() == pytest.approx([0.02, 0.04, 0.04, 0.02])
    p = np.random.default_rng(3).uniform(size=500) ** 3
    assert benjamini_hochberg(p) == pytest.approx(stats.false_discovery_control(p, method="bh"))


def test_the_correction_keeps_false_alarms_away_on_many_unchanged_columns() -> None:
    # 2000 columns of pure noise: raw p < 0.01 flags about 20 of them, the corrected ones none.
    p = np.random.default_rng(4).uniform(size=2000)
    assert (p < 0.01).sum() > 5
    assert (benjamini_hochberg(p) < 0.01).sum() == 0


def test_unchanged_window_does_not_ask_for_retraining(gaussian_reference: Reference) -> None:
    window = gaussian_frame(300, 60, seed=11)
    summary = detect_drift(gaussian_reference, window, predicted_labels=balanced_labels(300))
    assert summary.retrain is False
    assert summary.reasons == []
    assert summary.drifted_share == 0.0
    assert summary.label_drift is not None and summary.label_drift["drifted"] is False


def test_shifted_columns_are_flagged_and_counted(gaussian_reference: Reference) -> None:
    shift = np.zeros(60)
    shift[:20] = 1.0  # a third of the columns move by one standard deviation
    window = gaussian_frame(300, 60, seed=12, shift=shift)
    summary = detect_drift(gaussian_reference, window)
    assert set(summary.drifted_columns) == {f"f{k}" for k in range(20)}
    assert summary.drifted_share == pytest.approx(1 / 3)
    assert summary.retrain is True
    assert "20 of 60 feature columns drifted" in summary.reasons[0]
    assert summary.top_columns(5)["drifted"].all()


def test_a_tiny_shift_in_a_large_window_passes_the_psi_floor_rule(gaussian_reference: Reference) -> None:
    # 0.15 sd on every column with 20,000 rows: KS finds it, but PSI stays under the floor.
    window = gaussian_frame(20_000, 60, seed=13, shift=np.full(60, 0.15))
    summary = detect_drift(gaussian_reference, window)
    assert (summary.columns["p_adjusted"] < 0.01).mean() > 0.5
    assert summary.drifted_share < 0.2
    assert summary.retrain is False


def test_a_one_label_mix_is_label_drift(gaussian_reference: Reference) -> None:
    window = gaussian_frame(300, 60, seed=14)
    summary = detect_drift(gaussian_reference, window, predicted_labels=np.array(["B"] * 300))
    assert summary.label_drift["drifted"] is True
    assert summary.retrain is True
    assert any("predicted-label mix drifted" in reason for reason in summary.reasons)


def feedback_case(correct: int, rows: int = 100) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    window = gaussian_frame(rows, 60, seed=15)
    window["request_id"] = [f"r{k}" for k in range(rows)]
    predicted = balanced_labels(rows)
    truth = predicted.copy()
    truth[correct:] = np.where(truth[correct:] == "A", "B", "A")  # the rest are wrong
    # Feedback arrives shuffled, for some requests the window does not hold too.
    feedback = pd.DataFrame({"request_id": [*window["request_id"], "other"], "label": [*truth, "A"]})
    return window, predicted, feedback.sample(frac=1.0, random_state=0)


def test_live_accuracy_below_the_champion_minus_tolerance_triggers_retraining(
    gaussian_reference: Reference,
) -> None:
    window, predicted, feedback = feedback_case(correct=70)
    summary = detect_drift(gaussian_reference, window, predicted_labels=predicted, feedback=feedback)
    live = summary.live_accuracy
    assert live["rows"] == 100
    assert live["accuracy"] == pytest.approx(0.70)
    assert live["minimum"] == pytest.approx(0.85)
    assert summary.retrain is True
    assert summary.reasons == [
        "live accuracy 0.700 on 100 labelled rows is below the champion's test accuracy 0.900 minus 0.05"
    ]


def test_live_accuracy_within_tolerance_keeps_the_champion(gaussian_reference: Reference) -> None:
    window, predicted, feedback = feedback_case(correct=88)
    summary = detect_drift(gaussian_reference, window, predicted_labels=predicted, feedback=feedback)
    assert summary.live_accuracy["accuracy"] == pytest.approx(0.88)
    assert summary.retrain is False


def test_too_little_feedback_is_noted_not_judged(gaussian_reference: Reference) -> None:
    window, predicted, feedback = feedback_case(correct=0, rows=20)
    summary = detect_drift(gaussian_reference, window, predicted_labels=predicted, feedback=feedback)
    assert summary.retrain is False
    assert any("only 20 labelled row(s) matched" in note for note in summary.notes)


def test_feedback_without_columns_or_predictions_is_a_one_line_error(gaussian_reference: Reference) -> None:
    window, predicted, feedback = feedback_case(correct=50)
    with pytest.raises(DataValidationError, match="feedback lacks column"):
        detect_drift(gaussian_reference, window, predicted_labels=predicted, feedback=feedback[["label"]])
    with pytest.raises(DataValidationError, match="without the predicted labels"):
        detect_drift(gaussian_reference, window, feedback=feedback)


def test_window_errors_name_the_column(gaussian_reference: Reference) -> None:
    window = gaussian_frame(50, 60, seed=16)
    with pytest.raises(DataValidationError, match="'f3'"):
        detect_drift(gaussian_reference, window.drop(columns="f3"))
    window.loc[7, "f5"] = np.nan
    with pytest.raises(DataValidationError, match="column 'f5' has missing"):
        detect_drift(gaussian_reference, window)


def test_reference_round_trips_through_plain_files(gaussian_reference: Reference, tmp_path) -> None:
    paths = gaussian_reference.save(tmp_path / "ref")
    assert sorted(p.name for p in paths) == ["reference.json", "reference.npz"]
    loaded = Reference.load(tmp_path / "ref")
    assert loaded.columns == gaussian_reference.columns
    assert loaded.label_counts == {"A": 1000, "B": 1000, "C": 1000}
    assert loaded.test_accuracy == 0.9
    np.testing.assert_array_equal(loaded.sample, gaussian_reference.sample)
    np.testing.assert_array_equal(loaded.edges, gaussian_reference.edges)
    window = gaussian_frame(200, 60, seed=17)
    assert detect_drift(loaded, window).columns.equals(detect_drift(gaussian_reference, window).columns)


def test_loading_a_missing_reference_says_what_was_expected(tmp_path) -> None:
    with pytest.raises(DataValidationError, match=r"reference.npz not found"):
        Reference.load(tmp_path)


def test_reference_keeps_the_sample_size_and_training_statistics(gaussian_reference: Reference) -> None:
    assert gaussian_reference.sample.shape == (1000, 60)
    assert gaussian_reference.training_rows == 3000
    assert gaussian_reference.shares.sum(axis=0) == pytest.approx(np.ones(60))
    assert np.abs(gaussian_reference.mean).max() < 0.1


def test_thresholds_come_from_the_settings() -> None:
    settings = load_settings(env={"DRIFT_ALPHA": "0.05", "DRIFT_SHARE_THRESHOLD": "0.3"})
    thresholds = DriftThresholds.from_settings(settings)
    assert thresholds.alpha == 0.05
    assert thresholds.share_threshold == 0.3
    assert DriftThresholds.from_settings(load_settings(env={})) == DriftThresholds()


def test_summary_is_plain_json_and_names_its_metrics(gaussian_reference: Reference) -> None:
    window, predicted, feedback = feedback_case(correct=70)
    summary = detect_drift(gaussian_reference, window, predicted_labels=predicted, feedback=feedback)
    data = json.loads(json.dumps(summary.to_dict(top=5), allow_nan=False))
    assert data["retrain"] is True
    assert len(data["top_columns"]) == 5
    assert set(data["top_columns"][0]) >= {"column", "psi", "ks_statistic", "p_adjusted", "drifted"}
    metrics = summary.metrics()
    assert metrics["drift_retrain"] == 1.0
    assert metrics["drift_live_accuracy"] == pytest.approx(0.7)
    assert set(metrics) >= {"drift_drifted_share", "drift_label_psi", "drift_feedback_rows"}


def test_drift_share_over_time_follows_a_shift_that_starts_midway(gaussian_reference: Reference) -> None:
    before = gaussian_frame(200, 60, seed=18)
    after = gaussian_frame(200, 60, seed=19, shift=np.where(np.arange(60) < 30, 1.0, 0.0))
    window = pd.concat([before, after, gaussian_frame(10, 60, seed=20)], ignore_index=True)
    periods = ["2026-11-01"] * 200 + ["2026-11-02"] * 200 + ["2026-11-03"] * 10
    shares = drift_share_over_time(gaussian_reference, window, periods)
    assert [name for name, _ in shares] == ["2026-11-01", "2026-11-02"]  # 10 rows: too few
    assert shares[0][1] == 0.0
    assert shares[1][1] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DRIFT_ALPHA", "0"),
        ("DRIFT_ALPHA", "1.5"),
        ("DRIFT_SHARE_THRESHOLD", "many"),
        ("DRIFT_PSI_FLOOR", "-1"),
    ],
)
def test_unusable_thresholds_are_one_line_errors(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        load_settings(env={name: value})
