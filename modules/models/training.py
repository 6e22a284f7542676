"""The pipeline's stages every model family shares; the Metaflow flows wire them.

Loading and splitting the data once (`prepare_data`), the held-out report of a fitted model
(`report_on_held_out`, with its leak gap) and the final fit of any scikit-learn pipeline
(`train_pipeline`). What differs per family lives in the family's own module
(`modules.models.families`): these functions never import a family.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modules.data.loading import Dataset, load_dataset, read_metadata
from modules.data.splitting import Split, groups_from_metadata, make_split
from modules.models.evaluation import CrossValidation, HeldOutReport, LeakGap, held_out_report
from modules.models.preprocessing import describe_preprocessor
from modules.models.scoring import evaluate

Progress = Callable[[str], None]
# Fits on (train rows, held-out rows) -> predicted labels of the held-out rows.
FitPredict = Callable[[pd.DataFrame, pd.Series, pd.DataFrame], np.ndarray]

# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) would bury the progress lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclass
class PreparedData:
    """A validated dataset with the split every later step reuses."""

    dataset: Dataset
    split: Split

    @property
    def X_train(self) -> pd.DataFrame:
        return self.dataset.features.iloc[self.split.train_index]

    @property
    def y_train(self) -> pd.Series:
        return self.dataset.labels.iloc[self.split.train_index]

    @property
    def X_test(self) -> pd.DataFrame:
        return self.dataset.features.iloc[self.split.test_index]

    @property
    def y_test(self) -> pd.Series:
        return self.dataset.labels.iloc[self.split.test_index]

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    @property
    def test_recordings(self) -> list[str] | None:
        """The recording of every held-out row (names from the dataset's metadata when known)."""
        if self.split.groups is None:
            return None
        names = recording_names(self.dataset, self.split.groups)
        return [names[int(g)] for g in self.split.groups[self.split.test_index]]

    def summary(self) -> dict[str, Any]:
        """What a person wants to know about the data of this run."""
        return {
            "data_path": str(self.dataset.path),
            "rows": len(self.dataset.labels),
            "features": self.dataset.features.shape[1],
            "classes": self.classes,
            "class_counts": self.dataset.labels.value_counts().sort_index().to_dict(),
            "dropped_rows": self.dataset.dropped_rows,
            "source": self.dataset.source,
            "digest": self.dataset.digest,
            "split_protocol": self.split.protocol,
            "train_rows": len(self.split.train_index),
            "test_rows": len(self.split.test_index),
            "recordings": self.split.n_recordings,
        }


def recording_names(dataset: Dataset, groups: np.ndarray) -> dict[int, str]:
    """Group id -> a readable recording name: from the metadata beside the CSV when it names every
    row's recording (the offline sample does, e.g. `S1-POSITIVE-2`), `recording N` otherwise."""
    names = {int(g): f"recording {int(g)}" for g in np.unique(groups)}
    per_row = read_metadata(dataset.path).get("row_recording")
    if dataset.dropped_rows or not isinstance(per_row, list) or len(per_row) != len(groups):
        return names
    for group in names:
        first = int(np.flatnonzero(groups == group)[0])
        names[group] = str(per_row[first])
    return names


def prepare_data(
    data_path: str | Path,
    label_column: str,
    *,
    protocol: str,
    test_size: float,
    cv_folds_count: int,
    seed: int,
    missing: str = "drop",
) -> PreparedData:
    """Load and validate the CSV (hashed once, here), then split it once (train / held-out test)."""
    dataset = load_dataset(data_path, label_column, missing=missing, min_class_rows=cv_folds_count)
    # True recordings (and subjects) from the metadata when it describes these very rows;
    # otherwise the recordings are rebuilt by chaining rows.
    known = groups_from_metadata(dataset.path, len(dataset.labels), dataset.digest)
    split = make_split(
        dataset.features,
        dataset.labels,
        protocol=protocol,
        test_size=test_size,
        seed=seed,
        recordings=known.recordings if known else None,
        subjects=known.subjects if known else None,
        n_splits=cv_folds_count,
    )
    return PreparedData(dataset=dataset, split=split)


@dataclass
class TrainedModel:
    """One family's final model (fitted on the whole training part) and its held-out figures."""

    family: str
    model: Any  # a scikit-learn pipeline (SVM, logistic) or the Keras model (DNN)
    report: HeldOutReport
    preprocessing: dict[str, Any]
    preprocessor: Any = None  # the DNN's fitted preprocessor (a pipeline's is inside it)
    history: dict[str, list[float]] | None = None
    classes: list[str] | None = None  # the label order of the DNN's outputs

    @property
    def evaluation(self) -> Any:
        return self.report.evaluation


def leak_gap(
    data: PreparedData, held_out_accuracy: float, fit_predict: FitPredict, seed: int
) -> LeakGap | None:
    """The family's accuracy under the other split protocol, on a split of the training part.

    On a grouped split: one extra fit on a random-row split of the training rows, compared with
    the grouped held-out accuracy. On a random split with known recordings: one extra fit on a
    grouped split of the training rows, compared with the random held-out accuracy. The gap
    (random - grouped) is how much near-copy rows on both sides of a random split flatter a
    model. None when recordings are unknown.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedShuffleSplit

    if data.split.groups is None:
        return None
    X, y = data.X_train, data.y_train
    n_parts = max(2, round(1 / data.split.test_size))
    held_out_by_group = data.split.protocol in ("grouped", "subject")
    if held_out_by_group:
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=1 / n_parts, random_state=seed)
        train, test = next(splitter.split(np.zeros(len(y)), y))
    else:
        groups = data.split.groups[data.split.train_index]
        n_parts = min(n_parts, len(np.unique(groups)))
        if n_parts < 2:
            return None
        splitter = StratifiedGroupKFold(n_splits=n_parts, shuffle=True, random_state=seed)
        train, test = next(splitter.split(np.zeros(len(y)), y, groups))
    predicted = fit_predict(X.iloc[train], y.iloc[train], X.iloc[test])
    other = float(np.mean(np.asarray(predicted).astype(str) == y.iloc[test].to_numpy().astype(str)))
    if held_out_by_group:
        grouped, random, how = held_out_accuracy, other, "random-row split of the training part"
    else:
        grouped, random, how = other, held_out_accuracy, "grouped split of the training part"
    return LeakGap(
        grouped_accuracy=grouped,
        random_accuracy=random,
        gap=random - grouped,
        note=f"{data.split.protocol} held-out accuracy vs one extra fit on a {how}, same tuned settings",
    )


def report_on_held_out(
    data: PreparedData,
    predictions: np.ndarray,
    proba: np.ndarray,
    labels: list[str],
    *,
    cv: CrossValidation | None,
    fit_predict: FitPredict,
    seed: int,
) -> HeldOutReport:
    """The held-out report of a fitted model: accuracy, baseline, interval, per recording, CV, leak gap.

    `fit_predict` refits the family with the same settings for the leak gap (one extra fit).
    """
    evaluation = evaluate(data.y_test.tolist(), predictions.tolist(), proba, labels=labels)
    return held_out_report(
        evaluation,
        data.y_train.to_numpy(),
        data.y_test.to_numpy(),
        predictions,
        recordings=data.test_recordings,
        cross_validation=cv,
        leak_gap=leak_gap(data, evaluation.accuracy, fit_predict, seed),
        seed=seed,
    )


def cross_validation_of(
    data: PreparedData, mean: float | None, std: float | None, folds: int
) -> CrossValidation | None:
    """The tuning run's CV figures as a typed result (None when tuning recorded none)."""
    if mean is None or std is None:
        return None
    return CrossValidation(mean=float(mean), std=float(std), folds=int(folds), protocol=data.split.protocol)


def train_pipeline(
    data: PreparedData,
    family: str,
    fit: Callable[[pd.DataFrame, pd.Series], Any],
    *,
    seed: int,
    cv: CrossValidation | None = None,
    refit: Callable[[pd.DataFrame, pd.Series], Any] | None = None,
) -> TrainedModel:
    """Fit a scikit-learn pipeline (`preprocess` + classifier) on the training part, report on held-out rows.

    `fit(X, y)` returns the fitted pipeline; `refit` (default `fit`) is the one extra fit of
    the leak gap, on a part of the training rows. The pipeline needs `predict_proba`.
    """
    model = fit(data.X_train, data.y_train)

    def fit_predict(X_fit: pd.DataFrame, y_fit: pd.Series, X_new: pd.DataFrame) -> np.ndarray:
        return (refit or fit)(X_fit, y_fit).predict(X_new)

    classes = [str(c) for c in model.classes_]
    predictions = np.asarray(model.predict(data.X_test)).astype(str)
    report = report_on_held_out(
        data,
        predictions,
        model.predict_proba(data.X_test),
        classes,
        cv=cv,
        fit_predict=fit_predict,
        seed=seed,
    )
    return TrainedModel(
        family=family, model=model, report=report, preprocessing=describe_preprocessor(model.steps[0][1])
    )
