"""Drift on batches drawn from the sample generator: unchanged batches pass, realistic shifts are flagged.

The reference is built from one set of simulated recordings (2 people x 3 states x 3 recordings
x 30 s, about 1000 rows); each batch is fresh recordings of the same people (6 recordings x 20 s,
about 230 rows). Thresholds are the defaults of the settings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modules.data.eeg_features import feature_names
from modules.data.sample import STATES, _make_subjects, _random_streams
from modules.monitoring import DriftThresholds, Reference, build_reference, detect_drift
from modules.monitoring.scenarios import (
    reseated_headband_batch,
    same_distribution_batch,
    sample_subjects,
    simulate_batch,
    state_mix_batch,
)
from modules.settings import load_settings

pytestmark = pytest.mark.slow

THRESHOLDS = DriftThresholds.from_settings(load_settings(env={}))


@pytest.fixture(scope="module")
def reference() -> Reference:
    train = simulate_batch(seed=0, repeats=3, duration_s=30.0)
    return build_reference(train[feature_names()], train["label"], train["label"], test_accuracy=0.93)


def test_batches_have_the_published_columns_and_the_asked_states() -> None:
    batch = state_mix_batch(5, "POSITIVE", subjects=1, duration_s=5.0)
    assert list(batch.columns) == [*feature_names(), "label"]
    assert set(batch["label"]) == {"POSITIVE"}
    mixed = same_distribution_batch(5, subjects=1, duration_s=5.0)
    assert mixed["label"].value_counts().to_dict() == {state: 8 for state in STATES}


def test_scenarios_simulate_the_people_of_the_sample() -> None:
    # The same people as build_sample(seed=42, subjects=2), whatever the number of recordings.
    stream = _random_streams(42, 18)["subjects"]
    expected = _make_subjects(np.random.default_rng(stream), 2)
    for ours, theirs in zip(sample_subjects(42, 2), expected, strict=True):
        np.testing.assert_array_equal(ours.gains, theirs.gains)
        assert ours.alpha_peak_hz == theirs.alpha_peak_hz


def test_batches_from_the_training_distribution_do_not_ask_for_retraining(reference: Reference) -> None:
    quiet = []
    shares = []
    for seed in range(1, 11):
        batch = same_distribution_batch(seed)
        summary = detect_drift(reference, batch, predicted_labels=batch["label"], thresholds=THRESHOLDS)
        quiet.append(not summary.retrain)
        shares.append(summary.drifted_share)
    # At least 9 of 10 seeds (measured: 10 of 10, at most 0.2 % of the columns drifted).
    assert sum(quiet) >= 9, f"drifted shares {shares}"
    assert max(shares) < THRESHOLDS.share_threshold / 4


def test_a_reseated_headband_is_flagged(reference: Reference) -> None:
    batch = reseated_headband_batch(21)
    summary = detect_drift(reference, batch, predicted_labels=batch["label"], thresholds=THRESHOLDS)
    assert summary.retrain is True
    # Measured about 60 % of the columns, three times the threshold.
    assert summary.drifted_share > 2 * THRESHOLDS.share_threshold
    assert "feature columns drifted" in summary.reasons[0]
    # The frontal channels' raw means (AF7 is channel 1) are among the drifted columns.
    assert {"mean_1_a", "mean_1_b"} <= set(summary.drifted_columns)


def test_a_one_state_mix_is_flagged_as_label_drift(reference: Reference) -> None:
    batch = state_mix_batch(22, "NEGATIVE")
    summary = detect_drift(reference, batch, predicted_labels=batch["label"], thresholds=THRESHOLDS)
    assert summary.label_drift["drifted"] is True
    assert summary.retrain is True
    assert any("predicted-label mix drifted" in reason for reason in summary.reasons)


def test_poor_live_accuracy_on_unchanged_data_asks_for_retraining(reference: Reference) -> None:
    batch = same_distribution_batch(23)
    batch["request_id"] = [f"req-{k}" for k in range(len(batch))]
    # A model that got a third of the rows wrong, though the data did not move.
    predicted = batch["label"].to_numpy().copy()
    wrong = np.arange(len(batch)) % 3 == 0
    predicted[wrong] = np.where(predicted[wrong] == "NEUTRAL", "POSITIVE", "NEUTRAL")
    feedback = pd.DataFrame({"request_id": batch["request_id"], "label": batch["label"]})
    summary = detect_drift(
        reference, batch, predicted_labels=predicted, feedback=feedback, thresholds=THRESHOLDS
    )
    assert summary.retrain is True
    assert summary.live_accuracy["accuracy"] == pytest.approx(1 - wrong.mean())
    assert any(reason.startswith("live accuracy") for reason in summary.reasons)
    assert summary.drifted_share < THRESHOLDS.share_threshold
