"""The pipeline's stages composed from the library modules; the Metaflow flows wire them.

Each function is what one flow step does, minus Metaflow: the flows stay a readable list
of steps, and these functions can be tested and reused without a flow.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modules.data.loading import Dataset, encode_labels, load_dataset, read_metadata
from modules.data.splitting import CALIBRATION_FOLDS, Split, cv_folds, groups_from_metadata, make_split
from modules.models.dnn import cross_validate_dnn, tune_dnn
from modules.models.dnn import train_dnn as fit_dnn
from modules.models.evaluation import CrossValidation, HeldOutReport, LeakGap, held_out_report
from modules.models.preprocessing import build_preprocessor, describe_preprocessor
from modules.models.svm import SvmTuningResult, fit_svm_model, tune_svm
from modules.serving.batch import evaluate

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


def run_svm_tuning(
    data: PreparedData,
    *,
    cv_folds_count: int,
    max_candidates: int,
    n_jobs: int,
    pca_variance: float | None,
    seed: int,
) -> SvmTuningResult:
    """Successive-halving SVM search with the split's own CV folds."""
    folds = cv_folds(data.split, data.dataset.labels, n_splits=cv_folds_count, seed=seed)
    return tune_svm(
        data.X_train,
        data.y_train.to_numpy(),
        folds,
        pca_variance=pca_variance,
        max_candidates=max_candidates,
        n_jobs=n_jobs,
        seed=seed,
    )


def _transform(preprocessor: Any, X: pd.DataFrame) -> np.ndarray:
    return np.asarray(preprocessor.transform(X), dtype="float32")


def run_dnn_tuning(
    data: PreparedData,
    *,
    cv_folds_count: int,
    max_trials: int,
    max_epochs: int,
    pca_variance: float | None,
    seed: int,
    on_trial_end: Callable[[Any], None] | None = None,
) -> Any:
    """keras-tuner search, then the best settings cross-validated on every fold.

    The search validates on one CV fold of the training part (never test rows); the best
    trial's settings are then trained for its best epoch count on each of the split's folds,
    so the DNN reports a cross-validated mean +/- sd like the SVM does.
    """
    folds = cv_folds(data.split, data.dataset.labels, n_splits=cv_folds_count, seed=seed)
    inner_train, inner_val = folds[0]
    X, y = data.X_train, data.y_train
    codes = encode_labels(y, data.classes)[0]
    preprocessor = build_preprocessor(pca_variance).fit(X.iloc[inner_train])
    # tune_dnn searches in a fresh temporary folder each time: never reloads an old search.
    result = tune_dnn(
        _transform(preprocessor, X.iloc[inner_train]),
        codes[inner_train],
        _transform(preprocessor, X.iloc[inner_val]),
        codes[inner_val],
        max_trials=max_trials,
        max_epochs=max_epochs,
        seed=seed,
        n_classes=len(data.classes),
        on_trial_end=on_trial_end,
    )

    def fold_arrays(train: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, ...]:
        fitted = build_preprocessor(pca_variance).fit(X.iloc[train])
        return _transform(fitted, X.iloc[train]), codes[train], _transform(fitted, X.iloc[val]), codes[val]

    return cross_validate_dnn(result, folds, fold_arrays, seed=seed)


def svm_calibration_folds(data: PreparedData, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds for the SVM's probability calibration: by recording on a grouped split, so the
    sigmoids are fitted on decision values of recordings the SVC did not see."""
    return cv_folds(data.split, data.dataset.labels, n_splits=CALIBRATION_FOLDS, seed=seed)


@dataclass
class TrainedModel:
    """One family's final model (fitted on the whole training part) and its held-out figures."""

    family: str
    model: Any  # the scikit-learn pipeline (SVM) or the Keras model (DNN)
    report: HeldOutReport
    preprocessing: dict[str, Any]
    preprocessor: Any = None  # the DNN's fitted preprocessor (the SVM's is inside its pipeline)
    history: dict[str, list[float]] | None = None

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


def _report(
    data: PreparedData,
    predictions: np.ndarray,
    proba: np.ndarray,
    labels: list[str],
    *,
    cv: CrossValidation | None,
    fit_predict: FitPredict,
    seed: int,
) -> HeldOutReport:
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


def train_svm(
    data: PreparedData,
    best_params: dict[str, Any],
    *,
    pca_variance: float | None,
    seed: int,
    cv: CrossValidation | None = None,
) -> TrainedModel:
    """Fit the best SVM on the whole training part, evaluate it on the held-out rows."""
    model = fit_svm_model(
        best_params,
        data.X_train,
        data.y_train.to_numpy(),
        pca_variance=pca_variance,
        seed=seed,
        calibration_cv=svm_calibration_folds(data, seed),
    )

    def fit_predict(X_fit: pd.DataFrame, y_fit: pd.Series, X_new: pd.DataFrame) -> np.ndarray:
        refit = fit_svm_model(best_params, X_fit, y_fit.to_numpy(), pca_variance=pca_variance, seed=seed)
        return refit.predict(X_new)

    classes = [str(c) for c in model.classes_]
    predictions = np.asarray(model.predict(data.X_test)).astype(str)
    report = _report(
        data,
        predictions,
        model.predict_proba(data.X_test),
        classes,
        cv=cv,
        fit_predict=fit_predict,
        seed=seed,
    )
    return TrainedModel(
        family="svm", model=model, report=report, preprocessing=describe_preprocessor(model.steps[0][1])
    )


def train_dnn(
    data: PreparedData,
    hyperparameters: dict[str, Any],
    *,
    epochs: int,
    pca_variance: float | None,
    seed: int,
    cv: CrossValidation | None = None,
) -> TrainedModel:
    """Fit the preprocessor and the best DNN on the whole training part, evaluate on held-out rows.

    It trains for the epoch count at which the tuning run's best trial peaked, on every training
    row: a random validation slice would hold near-copies of training rows (overlapping windows).
    """

    def fit(X_fit: pd.DataFrame, y_fit: pd.Series) -> tuple[Any, Any, dict[str, list[float]]]:
        preprocessor = build_preprocessor(pca_variance).fit(X_fit)
        model, history = fit_dnn(
            hyperparameters,
            _transform(preprocessor, X_fit),
            encode_labels(y_fit, data.classes)[0],
            max_epochs=epochs,
            seed=seed,
            n_classes=len(data.classes),
            validation_fraction=0,
        )
        return preprocessor, model, history

    def predict_proba(preprocessor: Any, model: Any, X_new: pd.DataFrame) -> np.ndarray:
        return np.asarray(model.predict(_transform(preprocessor, X_new), verbose=0))

    def fit_predict(X_fit: pd.DataFrame, y_fit: pd.Series, X_new: pd.DataFrame) -> np.ndarray:
        preprocessor, model, _ = fit(X_fit, y_fit)
        return np.asarray(data.classes)[np.argmax(predict_proba(preprocessor, model, X_new), axis=1)]

    preprocessor, model, history = fit(data.X_train, data.y_train)
    proba = predict_proba(preprocessor, model, data.X_test)
    predictions = np.asarray(data.classes)[np.argmax(proba, axis=1)]
    report = _report(data, predictions, proba, data.classes, cv=cv, fit_predict=fit_predict, seed=seed)
    return TrainedModel(
        family="dnn",
        model=model,
        report=report,
        preprocessing=describe_preprocessor(preprocessor),
        preprocessor=preprocessor,
        history=history,
    )
