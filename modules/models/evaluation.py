"""Honest held-out figures: a baseline beside every score, per-recording results and uncertainty.

A held-out accuracy alone says little when the test part is three recordings. Every model
evaluation of a training run therefore carries:

- the **majority-class baseline** (scikit-learn `DummyClassifier`, fitted on the training
  labels) scored on the same held-out rows, and the margin over it;
- **per-recording accuracy** when recordings are known, since rows of one recording are not
  independent;
- a **bootstrap interval** of the accuracy, resampling whole held-out recordings (rows for a
  random split), so its width reflects how few independent units the test holds;
- the **cross-validation** mean and standard deviation from tuning, beside it;
- the **leak gap**: the accuracy of the same family with the same tuned settings on a
  random-row split of the training part next to the grouped figure (see `modules.models.training`).

Everything here is a pure function of labels and predictions; `HeldOutReport` is the typed,
JSON-safe result the flows log to MLflow, show in the card and write to `promotion.json`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict
from sklearn.dummy import DummyClassifier

from modules.errors import DataValidationError
from modules.models.scoring import Evaluation

BOOTSTRAP_RESAMPLES = 2000
INTERVAL_LEVEL = 0.95


class Baseline(BaseModel):
    """The majority-class baseline on the held-out rows."""

    model_config = ConfigDict(frozen=True)

    strategy: str
    predicted_label: str
    accuracy: float


class RecordingScore(BaseModel):
    """How one held-out recording was classified."""

    model_config = ConfigDict(frozen=True)

    recording: str
    label: str
    rows: int
    accuracy: float
    predicted_majority: str


class Interval(BaseModel):
    """A percentile bootstrap interval of the held-out accuracy."""

    model_config = ConfigDict(frozen=True)

    low: float
    high: float
    level: float
    unit: str  # "recordings" or "rows": what was resampled
    n_units: int
    resamples: int


class CrossValidation(BaseModel):
    """Cross-validated accuracy of the tuned settings on the training part (from tuning)."""

    model_config = ConfigDict(frozen=True)

    mean: float
    std: float
    folds: int
    protocol: str


class LeakGap(BaseModel):
    """The same family's accuracy under both split protocols, on rows of the training part."""

    model_config = ConfigDict(frozen=True)

    grouped_accuracy: float
    random_accuracy: float
    gap: float  # random - grouped: how much a random-row split flatters the model
    note: str


class HeldOutReport(BaseModel):
    """Everything a person needs to judge one model on the held-out rows."""

    model_config = ConfigDict(frozen=True)

    evaluation: Evaluation
    baseline: Baseline
    margin_over_baseline: float
    interval: Interval
    per_recording: list[RecordingScore]
    cross_validation: CrossValidation | None = None
    leak_gap: LeakGap | None = None

    @property
    def accuracy(self) -> float:
        return self.evaluation.accuracy

    def metrics(self) -> dict[str, float]:
        """Flat numeric figures for MLflow (`test_accuracy`, `baseline_accuracy`, ...)."""
        values: dict[str, float | None] = {
            "test_accuracy": self.evaluation.accuracy,
            "test_macro_f1": self.evaluation.macro_f1,
            "test_roc_auc": self.evaluation.roc_auc_ovr,
            "baseline_accuracy": self.baseline.accuracy,
            "margin_over_baseline": self.margin_over_baseline,
            "test_accuracy_ci_low": self.interval.low,
            "test_accuracy_ci_high": self.interval.high,
        }
        if self.cross_validation is not None:
            values["cv_accuracy_mean"] = self.cross_validation.mean
            values["cv_accuracy_std"] = self.cross_validation.std
        if self.leak_gap is not None:
            values["leak_gap"] = self.leak_gap.gap
            values["random_split_accuracy"] = self.leak_gap.random_accuracy
        for label, scores in self.evaluation.per_class.items():
            values[f"test_f1_{label}"] = scores.f1
        return {key: float(value) for key, value in values.items() if value is not None}

    def summary_line(self) -> str:
        """One line for logs: accuracy, interval, baseline, CV and leak gap."""
        parts = [
            f"held-out accuracy {self.evaluation.accuracy:.3f} "
            f"({self.interval.level:.0%} CI {self.interval.low:.3f}-{self.interval.high:.3f} over "
            f"{self.interval.n_units} {self.interval.unit})",
            f"baseline {self.baseline.accuracy:.3f} (margin {self.margin_over_baseline:+.3f})",
        ]
        if self.cross_validation is not None:
            cv = self.cross_validation
            parts.append(f"{cv.protocol} CV {cv.mean:.3f} +/- {cv.std:.3f}")
        if self.leak_gap is not None:
            parts.append(f"leak gap {self.leak_gap.gap:+.3f}")
        return ", ".join(parts)


def majority_baseline(y_train: Sequence[Any], y_test: Sequence[Any]) -> Baseline:
    """`DummyClassifier(strategy="most_frequent")` fitted on the training labels, scored on test rows."""
    train = np.asarray(y_train).astype(str)
    test = np.asarray(y_test).astype(str)
    if train.size == 0 or test.size == 0:
        raise DataValidationError("a baseline needs training and held-out rows; got none")
    dummy = DummyClassifier(strategy="most_frequent").fit(np.zeros((train.size, 1)), train)
    predicted = dummy.predict(np.zeros((test.size, 1)))
    return Baseline(
        strategy="most_frequent",
        predicted_label=str(predicted[0]),
        accuracy=float(np.mean(predicted == test)),
    )


def per_recording_scores(
    y_true: Sequence[Any], y_pred: Sequence[Any], recordings: Sequence[Any] | None
) -> list[RecordingScore]:
    """Accuracy of each held-out recording (empty when recordings are unknown)."""
    if recordings is None:
        return []
    true = np.asarray(y_true).astype(str)
    pred = np.asarray(y_pred).astype(str)
    ids = np.asarray(recordings).astype(str)
    scores = []
    for recording in sorted(set(ids.tolist())):
        rows = ids == recording
        labels, counts = np.unique(true[rows], return_counts=True)
        predicted, predicted_counts = np.unique(pred[rows], return_counts=True)
        scores.append(
            RecordingScore(
                recording=recording,
                label=str(labels[np.argmax(counts)]),
                rows=int(rows.sum()),
                accuracy=float(np.mean(true[rows] == pred[rows])),
                predicted_majority=str(predicted[np.argmax(predicted_counts)]),
            )
        )
    return scores


def bootstrap_interval(
    correct: Sequence[bool],
    units: Sequence[Any] | None = None,
    *,
    level: float = INTERVAL_LEVEL,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 42,
) -> Interval:
    """Percentile bootstrap interval of the accuracy, resampling whole `units` (or single rows).

    Resampling recordings rather than rows matters: rows of one recording are near-copies,
    so a row bootstrap would report a falsely narrow interval on a grouped test part. The
    accuracy of a resample is its correct rows over its rows (recordings weigh by size).
    """
    hits = np.asarray(correct, dtype=float)
    if hits.size == 0:
        raise DataValidationError("cannot bootstrap an accuracy over zero rows")
    if units is None:
        unit_name, codes = "rows", np.arange(hits.size)
    else:
        unit_name = "recordings"
        _, codes = np.unique(np.asarray(units).astype(str), return_inverse=True)
    n_units = int(codes.max()) + 1
    correct_per_unit = np.bincount(codes, weights=hits, minlength=n_units)
    rows_per_unit = np.bincount(codes, minlength=n_units).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_units, size=(resamples, n_units))
    accuracies = correct_per_unit[draws].sum(axis=1) / rows_per_unit[draws].sum(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(accuracies, [tail, 1.0 - tail])
    return Interval(
        low=float(low),
        high=float(high),
        level=level,
        unit=unit_name,
        n_units=n_units,
        resamples=resamples,
    )


def held_out_report(
    evaluation: Evaluation,
    y_train: Sequence[Any],
    y_test: Sequence[Any],
    y_pred: Sequence[Any],
    *,
    recordings: Sequence[Any] | None,
    cross_validation: CrossValidation | None = None,
    leak_gap: LeakGap | None = None,
    seed: int = 42,
) -> HeldOutReport:
    """Combine a model's evaluation with its baseline, interval and per-recording figures.

    `recordings` names the recording of every held-out row (None when unknown: the interval
    then resamples rows and there is no per-recording table).
    """
    baseline = majority_baseline(y_train, y_test)
    correct = np.asarray(y_test).astype(str) == np.asarray(y_pred).astype(str)
    return HeldOutReport(
        evaluation=evaluation,
        baseline=baseline,
        margin_over_baseline=float(evaluation.accuracy - baseline.accuracy),
        interval=bootstrap_interval(correct, recordings, seed=seed),
        per_recording=per_recording_scores(y_test, y_pred, recordings),
        cross_validation=cross_validation,
        leak_gap=leak_gap,
    )
