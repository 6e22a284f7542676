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

from modules.data import Dataset, encode_labels, file_digest, load_dataset
from modules.errors import DataValidationError
from modules.feature_transformation import build_preprocessor, describe_preprocessor
from modules.prediction import Evaluation, evaluate
from modules.splitting import Split, cv_folds, make_split
from modules.tune_dnn import train_dnn as fit_dnn
from modules.tune_dnn import tune_dnn
from modules.tune_svm import SvmTuningResult, fit_svm_model, tune_svm

Progress = Callable[[str], None]

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
    """Load and validate the CSV, then split it once (train / held-out test)."""
    dataset = load_dataset(data_path, label_column, missing=missing, min_class_rows=cv_folds_count)
    split = make_split(dataset.features, dataset.labels, protocol=protocol, test_size=test_size, seed=seed)
    return PreparedData(dataset=dataset, split=split)


def reload_data(
    data_path: str | Path, label_column: str, *, digest: str, split: dict[str, Any], missing: str = "drop"
) -> PreparedData:
    """Reload the dataset in a later step and check it is the one the split was made on."""
    check_unchanged(data_path, digest)
    dataset = load_dataset(data_path, label_column, missing=missing)
    return PreparedData(dataset=dataset, split=Split.from_dict(split))


def check_unchanged(data_path: str | Path, digest: str) -> None:
    """Fail when the CSV is gone or differs from the one the split was made on (no parsing)."""
    if not Path(data_path).is_file():
        raise DataValidationError(f"{data_path}: no such file; the tuning run's split was made on it")
    current = file_digest(Path(data_path))
    if current != digest:
        raise DataValidationError(
            f"{data_path}: the file changed since the split was made "
            f"(digest {current[:12]} != {digest[:12]}); rerun the tuning flow"
        )


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
    """keras-tuner search; validation rows are one CV fold of the training part (never test rows)."""
    inner_train, inner_val = cv_folds(data.split, data.dataset.labels, n_splits=cv_folds_count, seed=seed)[0]
    X, y = data.X_train, data.y_train
    preprocessor = build_preprocessor(pca_variance).fit(X.iloc[inner_train])
    # tune_dnn searches in a fresh temporary folder each time: never reloads an old search.
    return tune_dnn(
        np.asarray(preprocessor.transform(X.iloc[inner_train]), dtype="float32"),
        encode_labels(y.iloc[inner_train], data.classes)[0],
        np.asarray(preprocessor.transform(X.iloc[inner_val]), dtype="float32"),
        encode_labels(y.iloc[inner_val], data.classes)[0],
        max_trials=max_trials,
        max_epochs=max_epochs,
        seed=seed,
        n_classes=len(data.classes),
        on_trial_end=on_trial_end,
    )


@dataclass
class TrainedSvm:
    """The fitted SVM pipeline and its held-out evaluation."""

    model: Any
    evaluation: Evaluation
    preprocessing: dict[str, Any]


def train_svm(
    data: PreparedData, best_params: dict[str, Any], *, pca_variance: float | None, seed: int
) -> TrainedSvm:
    """Fit the best SVM on the whole training part, evaluate it on the held-out rows."""
    model = fit_svm_model(
        best_params, data.X_train, data.y_train.to_numpy(), pca_variance=pca_variance, seed=seed
    )
    classes = [str(c) for c in model.classes_]
    evaluation = evaluate(
        data.y_test.tolist(),
        model.predict(data.X_test).tolist(),
        model.predict_proba(data.X_test),
        labels=classes,
    )
    return TrainedSvm(
        model=model, evaluation=evaluation, preprocessing=describe_preprocessor(model.steps[0][1])
    )


@dataclass
class TrainedDnn:
    """The fitted preprocessor and Keras model, and their held-out evaluation."""

    preprocessor: Any
    model: Any
    evaluation: Evaluation
    preprocessing: dict[str, Any]
    history: dict[str, list[float]]


def train_dnn(
    data: PreparedData, hyperparameters: dict[str, Any], *, epochs: int, pca_variance: float | None, seed: int
) -> TrainedDnn:
    """Fit the preprocessor and the best DNN on the whole training part, evaluate on held-out rows.

    It trains for the epoch count at which the tuning run's best trial peaked, on every training
    row: a random validation slice would hold near-copies of training rows (overlapping windows).
    """
    preprocessor = build_preprocessor(pca_variance).fit(data.X_train)
    X_train = np.asarray(preprocessor.transform(data.X_train), dtype="float32")
    model, history = fit_dnn(
        hyperparameters,
        X_train,
        encode_labels(data.y_train, data.classes)[0],
        max_epochs=epochs,
        seed=seed,
        n_classes=len(data.classes),
        validation_fraction=0,
    )
    proba = np.asarray(
        model.predict(np.asarray(preprocessor.transform(data.X_test), dtype="float32"), verbose=0)
    )
    predictions = np.asarray(data.classes)[np.argmax(proba, axis=1)]
    evaluation = evaluate(data.y_test.tolist(), predictions.tolist(), proba, labels=data.classes)
    return TrainedDnn(
        preprocessor=preprocessor,
        model=model,
        evaluation=evaluation,
        preprocessing=describe_preprocessor(preprocessor),
        history=history,
    )
