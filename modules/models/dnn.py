"""keras-tuner search space and search for the dense neural network (DNN).

Written against the Keras 3 API only (no `tf.` calls), so the same code runs on the
TensorFlow, JAX or PyTorch backend. Keras and keras-tuner are imported inside the
functions: each import costs about 5 s and most callers of this package never train a DNN.

Inputs are already preprocessed numpy arrays (the caller fits
`modules.models.preprocessing.build_preprocessor` on the training part) and integer
labels 0..K-1 (`encode_labels`). The validation rows must come from the training part,
never from the held-out test rows.

Search: `BayesianOptimization` over layers (1-3), units per layer, dropout, learning rate
and batch size, `max_trials` trials of at most `max_epochs` epochs each with early stopping.
Each search writes into a fresh directory with `overwrite=True`: keras-tuner otherwise
reloads an old search from the same directory and silently runs no new trial.

`DnnFamily` is the DNN's entry in the model-family registry (`modules.models.families`):
`run_dnn_tuning` and `train_dnn` are what the flows' tune and train steps run for it.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

# Callers encode labels for the DNN through this module; the one implementation lives in data.
from modules.data.loading import encode_labels as encode_labels
from modules.data.splitting import cv_folds
from modules.errors import ConfigurationError, DataValidationError
from modules.models.evaluation import CrossValidation
from modules.models.family import ModelFamily, TuningContext, TuningOutcome
from modules.models.preprocessing import build_preprocessor, describe_preprocessor
from modules.models.training import PreparedData, TrainedModel, report_on_held_out

if TYPE_CHECKING:
    from matplotlib.axes import Axes

Progress = Callable[[str], None]

OBJECTIVE = "val_accuracy"
MAX_LAYERS = 3
UNIT_CHOICES = (32, 64, 128, 256)
BATCH_SIZE_CHOICES = (32, 64, 128)
DROPOUT_RANGE = (0.0, 0.5, 0.1)  # min, max, step
LEARNING_RATE_RANGE = (1e-4, 1e-2)
# Epochs without a better validation loss before a trial stops (best weights restored).
EARLY_STOPPING_PATIENCE = 4


@dataclass
class TrialRecord:
    """One keras-tuner trial: its hyperparameters and per-epoch history."""

    trial_id: str
    hyperparameters: dict[str, Any]
    history: dict[str, list[float]]  # loss, accuracy, val_loss, val_accuracy per epoch
    best_val_accuracy: float | None
    epochs_run: int
    status: str  # COMPLETED, FAILED, ...
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of built-in types."""
        return asdict(self)


@dataclass
class DnnTuningResult:
    """What the DNN search found, JSON-safe through `to_dict()`."""

    best_hyperparameters: dict[str, Any]
    best_val_accuracy: float
    best_trial_id: str
    trials: list[TrialRecord]
    elapsed_s: float
    n_features: int
    n_classes: int
    max_trials: int
    max_epochs: int
    seed: int
    objective: str = OBJECTIVE
    tuner_directory: str | None = None  # kept only when the caller gave `tuner_dir`
    # The best settings trained for `best_epoch` epochs on every CV fold (`cross_validate_dnn`).
    cv_mean: float | None = None
    cv_std: float | None = None
    cv_scores: list[float] | None = None
    # A search run in chunks (`merge_dnn_searches`): one entry per chunk, in chunk order.
    chunks: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of built-in types (for Metaflow artifacts, MLflow params/JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DnnTuningResult:
        """Inverse of `to_dict()`."""
        values = dict(data)
        values["trials"] = [TrialRecord(**t) for t in values["trials"]]
        return cls(**values)


def _check_arrays(X: Any, y: Any, name: str, n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(X, dtype=np.float32)
    labels = np.asarray(y)
    if features.ndim != 2:
        raise DataValidationError(f"{name}: expected a 2-D feature array, got shape {features.shape}")
    if labels.shape != (features.shape[0],):
        raise DataValidationError(
            f"{name}: expected {features.shape[0]} labels (one per row), got shape {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataValidationError(
            f"{name}: labels must be integers 0..K-1 (see encode_labels), got dtype {labels.dtype}"
        )
    if labels.size and (labels.min() < 0 or (n_classes is not None and labels.max() >= n_classes)):
        raise DataValidationError(
            f"{name}: labels must lie in 0..{(n_classes or 1) - 1}, got {labels.min()}..{labels.max()}"
        )
    if not np.isfinite(features).all():
        raise DataValidationError(f"{name}: features contain NaN or infinite values after preprocessing")
    return features, labels.astype(np.int64)


def _make_model(hyperparameters: dict[str, Any], n_features: int, n_classes: int) -> Any:
    """The Keras model for one set of hyperparameters, compiled."""
    import keras

    n_layers = int(hyperparameters["layers"])
    dropout = float(hyperparameters.get("dropout", 0.0))
    model = keras.Sequential(name="dnn")
    model.add(keras.Input(shape=(n_features,)))
    for i in range(n_layers):
        model.add(keras.layers.Dense(int(hyperparameters[f"units_{i}"]), activation="relu"))
        if dropout > 0:
            model.add(keras.layers.Dropout(dropout))
    model.add(keras.layers.Dense(n_classes, activation="softmax"))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=float(hyperparameters["learning_rate"])),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def build_dnn(hyperparameters: dict[str, Any], n_features: int, n_classes: int) -> Any:
    """Rebuild (unfitted, compiled) the architecture of a trial from its hyperparameters."""
    missing = [k for k in ("layers", "learning_rate") if k not in hyperparameters]
    missing += [
        f"units_{i}"
        for i in range(int(hyperparameters.get("layers", 0)))
        if f"units_{i}" not in hyperparameters
    ]
    if missing:
        raise ConfigurationError(f"DNN hyperparameters {hyperparameters} lack {', '.join(missing)}")
    return _make_model(hyperparameters, n_features, n_classes)


def _early_stopping(patience: int) -> Any:
    import keras

    return keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)


def _history_dict(history: Any) -> dict[str, list[float]]:
    raw = getattr(history, "history", history) or {}
    return {str(k): [float(v) for v in values] for k, values in raw.items()}


def _describe(hp: dict[str, Any]) -> str:
    units = [hp[f"units_{i}"] for i in range(int(hp.get("layers", 0))) if f"units_{i}" in hp]
    return (
        f"layers={hp.get('layers')} units={units} dropout={hp.get('dropout', 0.0):.1f} "
        f"lr={hp.get('learning_rate', 0.0):.2g} batch={hp.get('batch_size')}"
    )


def _summarise(history: dict[str, list[float]]) -> str:
    """Per-epoch history as one short line: first -> last, and the best epoch."""
    if not history.get("loss"):
        return "no epoch"
    parts = [f"loss {history['loss'][0]:.3f}->{history['loss'][-1]:.3f}"]
    if history.get(OBJECTIVE):
        values = history[OBJECTIVE]
        best = int(np.argmax(values))
        parts.append(
            f"{OBJECTIVE} {values[0]:.3f}->{values[-1]:.3f} (best {values[best]:.3f} at epoch {best + 1})"
        )
    return ", ".join(parts)


@lru_cache(maxsize=1)
def _tuner_classes() -> tuple[type, type]:
    """HyperModel and tuner classes, defined on first use (they need keras_tuner)."""
    import keras
    import keras_tuner

    class DnnHyperModel(keras_tuner.HyperModel):
        """Search space: layers, units per layer, dropout, learning rate, batch size."""

        def __init__(self, n_features: int, n_classes: int) -> None:
            super().__init__(name="dnn")
            self.n_features = n_features
            self.n_classes = n_classes

        def build(self, hp: Any) -> Any:
            values: dict[str, Any] = {"layers": hp.Int("layers", 1, MAX_LAYERS)}
            for i in range(MAX_LAYERS):
                # units_i exists only for models with more than i layers.
                with hp.conditional_scope("layers", list(range(i + 1, MAX_LAYERS + 1))):
                    values[f"units_{i}"] = hp.Choice(f"units_{i}", list(UNIT_CHOICES))
            low, high, step = DROPOUT_RANGE
            values["dropout"] = hp.Float("dropout", low, high, step=step)
            values["learning_rate"] = hp.Float("learning_rate", *LEARNING_RATE_RANGE, sampling="log")
            return _make_model(values, self.n_features, self.n_classes)

        def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
            # Batch size is a training hyperparameter, so it is chosen here, not in build().
            return model.fit(*args, batch_size=hp.Choice("batch_size", list(BATCH_SIZE_CHOICES)), **kwargs)

    class ReportingBayesianOptimization(keras_tuner.BayesianOptimization):
        """Clears Keras state and reseeds before each trial; reports each finished trial."""

        def __init__(
            self, *args: Any, trial_seed: int, max_trial_count: int, report: Callable, **kwargs: Any
        ):
            super().__init__(*args, **kwargs)
            self._trial_seed = trial_seed
            self._max_trial_count = max_trial_count
            self._report = report
            self._histories: dict[str, dict[str, list[float]]] = {}
            self._started: dict[str, float] = {}
            self._count = 0

        def on_trial_begin(self, trial: Any) -> None:
            super().on_trial_begin(trial)
            self._started[trial.trial_id] = time.perf_counter()

        def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
            # A fresh graph and a per-trial seed: a trial's weights do not depend on
            # which trials ran before it, so the same seed repeats the same search.
            keras.backend.clear_session()
            keras.utils.set_random_seed(self._trial_seed + self._count)
            histories = super().run_trial(trial, *args, **kwargs)
            self._histories[trial.trial_id] = _history_dict(histories[-1])
            return histories

        def on_trial_end(self, trial: Any) -> None:
            super().on_trial_end(trial)
            self._count += 1
            hp = trial.hyperparameters
            values = {
                name: (value.item() if isinstance(value, np.generic) else value)
                for name, value in hp.values.items()
                if hp.is_active(name)
            }
            history = self._histories.get(trial.trial_id, {})
            scores = history.get(OBJECTIVE) or []
            record = TrialRecord(
                trial_id=str(trial.trial_id),
                hyperparameters=values,
                history=history,
                best_val_accuracy=float(max(scores)) if scores else None,
                epochs_run=len(history.get("loss", [])),
                status=str(getattr(trial.status, "value", trial.status)),
                elapsed_s=round(
                    time.perf_counter() - self._started.get(trial.trial_id, time.perf_counter()), 3
                ),
            )
            self._report(record, self._count, self._max_trial_count)

    return DnnHyperModel, ReportingBayesianOptimization


def tune_dnn(
    X_train: Any,
    y_train: Any,
    X_val: Any,
    y_val: Any,
    *,
    max_trials: int = 4,
    max_epochs: int = 15,
    seed: int = 42,
    tuner_dir: str | Path | None = None,
    n_classes: int | None = None,
    on_trial_end: Callable[[TrialRecord], None] | None = None,
    progress: Progress | None = print,
) -> DnnTuningResult:
    """Bayesian-optimisation search of the DNN; the validation rows pick the best trial.

    `tuner_dir` is a base folder: the search writes into a new sub-folder of it (kept and
    named in the result); without it a temporary folder is used and removed.
    `on_trial_end` receives a `TrialRecord` after every trial (for nested MLflow runs).
    """
    if max_trials < 1 or max_epochs < 1:
        raise ConfigurationError(f"max_trials={max_trials} and max_epochs={max_epochs} must be at least 1")
    y_all = np.concatenate([np.asarray(y_train).ravel(), np.asarray(y_val).ravel()])
    if n_classes is None and np.issubdtype(y_all.dtype, np.integer) and y_all.size:
        n_classes = int(y_all.max()) + 1
    X_tr, y_tr = _check_arrays(X_train, y_train, "training rows", n_classes)
    X_va, y_va = _check_arrays(X_val, y_val, "validation rows", n_classes)
    if X_va.shape[1] != X_tr.shape[1]:
        raise DataValidationError(
            f"validation rows have {X_va.shape[1]} features, training rows {X_tr.shape[1]}; expected the same"
        )
    if n_classes is None or n_classes < 2:
        raise DataValidationError(f"expected at least 2 classes in the labels, got {n_classes}")

    imports_started = time.perf_counter()
    import keras

    hypermodel_class, tuner_class = _tuner_classes()
    if progress:
        progress(
            f"dnn: keras {keras.__version__} on backend {keras.backend.backend()} "
            f"(imports {time.perf_counter() - imports_started:.1f} s); {max_trials} trials x <= {max_epochs} "
            f"epochs on {len(X_tr)} training / {len(X_va)} validation rows, {X_tr.shape[1]} features"
        )

    trials: list[TrialRecord] = []

    def report(record: TrialRecord, number: int, total: int) -> None:
        trials.append(record)
        if progress:
            score = f"{record.best_val_accuracy:.3f}" if record.best_val_accuracy is not None else "n/a"
            progress(
                f"dnn: trial {number}/{total} {_describe(record.hyperparameters)} -> best {OBJECTIVE} "
                f"{score} [{record.status}, {record.epochs_run} epochs, {record.elapsed_s:.1f} s; "
                f"{_summarise(record.history)}]"
            )
        if on_trial_end is not None:
            on_trial_end(record)

    if tuner_dir is not None:
        Path(tuner_dir).mkdir(parents=True, exist_ok=True)
    directory = tempfile.mkdtemp(prefix="dnn-tuning-", dir=str(tuner_dir) if tuner_dir is not None else None)
    started = time.perf_counter()
    try:
        keras.utils.set_random_seed(seed)
        tuner = tuner_class(
            hypermodel=hypermodel_class(X_tr.shape[1], n_classes),
            objective=OBJECTIVE,
            max_trials=max_trials,
            # Random trials before the Gaussian process takes over; keras-tuner's default
            # (3 x the number of hyperparameters = 21) would make small budgets random search.
            num_initial_points=max(2, min(max_trials // 2, 5)),
            seed=seed,
            directory=directory,
            project_name="search",
            overwrite=True,
            trial_seed=seed,
            max_trial_count=max_trials,
            report=report,
        )
        tuner.search(
            X_tr,
            y_tr,
            validation_data=(X_va, y_va),
            epochs=max_epochs,
            callbacks=[_early_stopping(EARLY_STOPPING_PATIENCE)],
            verbose=0,
        )
    finally:
        if tuner_dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    elapsed = time.perf_counter() - started

    completed = [t for t in trials if t.best_val_accuracy is not None]
    if not completed:
        raise DataValidationError(f"none of the {len(trials)} DNN trials completed; see the log above")
    best = max(completed, key=lambda t: t.best_val_accuracy)  # first of equals wins
    result = DnnTuningResult(
        best_hyperparameters=best.hyperparameters,
        best_val_accuracy=float(best.best_val_accuracy),
        best_trial_id=best.trial_id,
        trials=trials,
        elapsed_s=round(elapsed, 3),
        n_features=int(X_tr.shape[1]),
        n_classes=int(n_classes),
        max_trials=max_trials,
        max_epochs=max_epochs,
        seed=seed,
        tuner_directory=directory if tuner_dir is not None else None,
    )
    if progress:
        progress(
            f"dnn: best trial {best.trial_id} {_describe(best.hyperparameters)} {OBJECTIVE} "
            f"{best.best_val_accuracy:.3f} ({len(trials)} trials in {elapsed:.1f} s)"
        )
    return result


def _carve_validation(
    X: np.ndarray, y: np.ndarray, fraction: float, groups: Any, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split off a validation part: whole groups when given, stratified rows otherwise."""
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    if not 0.0 < fraction < 1.0:
        raise ConfigurationError(f"validation_fraction={fraction} must be between 0 and 1 (exclusive)")
    if groups is None:
        X_tr, X_va, y_tr, y_va = train_test_split(X, y, test_size=fraction, stratify=y, random_state=seed)
        return X_tr, X_va, y_tr, y_va
    groups = np.asarray(groups)
    if groups.shape != (len(y),):
        raise DataValidationError(
            f"expected one group id per training row ({len(y)}), got shape {groups.shape}"
        )
    n_splits = min(max(2, round(1 / fraction)), len(np.unique(groups)))
    if n_splits < 2:
        raise DataValidationError("a grouped validation part needs at least 2 groups in the training rows")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train, val = next(splitter.split(X, y, groups))
    return X[train], X[val], y[train], y[val]


def fit_dnn(
    hyperparameters: dict[str, Any],
    X: Any,
    y: Any,
    *,
    X_val: Any = None,
    y_val: Any = None,
    max_epochs: int = 15,
    seed: int = 42,
    n_classes: int | None = None,
    validation_fraction: float = 0.15,
    groups: Any = None,
    progress: Progress | None = print,
) -> tuple[Any, dict[str, list[float]]]:
    """Final fit of the tuned architecture; returns (keras model, per-epoch history).

    With validation rows, early stopping watches the validation loss and restores the best
    epoch's weights. Without `X_val`, about `validation_fraction` of (X, y) is held back
    for it (the rest is trained on), so the held-out test rows are never used: whole
    groups when `groups` (e.g. recording ids) is given, since neighbouring windows of one
    recording are near-copies and would make early stopping trust an optimistic score;
    stratified rows otherwise.

    `validation_fraction=0` trains on every row for exactly `max_epochs` epochs, no early
    stopping: pass the best trial's best epoch (`best_epoch(result)`). With few recordings
    that is steadier than early stopping on a handful of them.
    """
    y_arr = np.asarray(y)
    if n_classes is None and np.issubdtype(y_arr.dtype, np.integer) and y_arr.size:
        extra = np.asarray(y_val) if y_val is not None else y_arr
        n_classes = int(max(y_arr.max(), extra.max())) + 1
    X_tr, y_tr = _check_arrays(X, y, "training rows", n_classes)
    validation = None
    if X_val is not None:
        validation = _check_arrays(X_val, y_val, "validation rows", n_classes)
    elif validation_fraction:
        X_tr, X_va, y_tr, y_va = _carve_validation(X_tr, y_tr, validation_fraction, groups, seed)
        validation = (X_va, y_va)

    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = build_dnn(hyperparameters, X_tr.shape[1], int(n_classes))
    started = time.perf_counter()
    fitted = model.fit(
        X_tr,
        y_tr,
        validation_data=validation,
        epochs=max_epochs,
        batch_size=int(hyperparameters.get("batch_size", 32)),
        callbacks=[_early_stopping(EARLY_STOPPING_PATIENCE)] if validation is not None else [],
        verbose=0,
    )
    history = _history_dict(fitted)
    if progress:
        how = "best weights kept" if validation is not None else "no early stopping"
        progress(
            f"dnn: trained {_describe(hyperparameters)} on {len(X_tr)} rows, {len(history.get('loss', []))} "
            f"epochs in {time.perf_counter() - started:.1f} s ({_summarise(history)}; {how})"
        )
    return model, history


def best_epoch(result: DnnTuningResult) -> int:
    """Epoch (1-based) at which the best trial reached its best validation accuracy."""
    best = next(t for t in result.trials if t.trial_id == result.best_trial_id)
    scores = best.history.get(OBJECTIVE) or []
    return int(np.argmax(scores)) + 1 if scores else max(1, best.epochs_run)


def cross_validate_dnn(
    result: DnnTuningResult,
    folds: list[tuple[np.ndarray, np.ndarray]],
    fold_arrays: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, ...]],
    *,
    seed: int = 42,
    progress: Progress | None = print,
) -> DnnTuningResult:
    """The search's best settings trained for `best_epoch(result)` epochs on every fold.

    `fold_arrays(train, val)` returns (X_train, y_train, X_val, y_val) for one fold, with the
    preprocessing fitted on that fold's training rows. The search itself validates on one fold
    only; this gives the DNN a cross-validated mean +/- sd comparable with the SVM's.
    """
    import keras

    epochs = best_epoch(result)
    scores = []
    for X_tr, y_tr, X_va, y_va in (fold_arrays(train, val) for train, val in folds):
        model, _ = fit_dnn(
            result.best_hyperparameters,
            X_tr,
            y_tr,
            max_epochs=epochs,
            seed=seed,
            n_classes=result.n_classes,
            validation_fraction=0,
            progress=None,
        )
        predicted = np.argmax(np.asarray(model.predict(X_va, verbose=0)), axis=1)
        scores.append(float(np.mean(predicted == np.asarray(y_va))))
        keras.backend.clear_session()
    result.cv_scores = scores
    result.cv_mean = float(np.mean(scores))
    result.cv_std = float(np.std(scores))
    if progress:
        progress(
            f"dnn: best settings cross-validated on {len(folds)} folds ({epochs} epochs each): "
            f"accuracy {result.cv_mean:.3f} +/- {result.cv_std:.3f}"
        )
    return result


# --------------------------------------------------------------------------- the pipeline's DNN
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
    search_seed: int | None = None,
    on_trial_end: Callable[[Any], None] | None = None,
) -> DnnTuningResult:
    """keras-tuner search, then the best settings cross-validated on every fold.

    The search validates on one CV fold of the training part (never test rows); the best
    trial's settings are then trained for its best epoch count on each of the split's folds,
    so the DNN reports a cross-validated mean +/- sd like the SVM does. `seed` fixes the folds;
    `search_seed` (default: `seed`) the tuner's draws, so that chunks of one search differ.
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
        seed=seed if search_seed is None else search_seed,
        n_classes=len(data.classes),
        on_trial_end=on_trial_end,
    )

    def fold_arrays(train: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, ...]:
        fitted = build_preprocessor(pca_variance).fit(X.iloc[train])
        return _transform(fitted, X.iloc[train]), codes[train], _transform(fitted, X.iloc[val]), codes[val]

    return cross_validate_dnn(result, folds, fold_arrays, seed=seed)


def trial_shares(max_trials: int, chunks: int) -> list[int]:
    """`max_trials` split as evenly as possible over `chunks` chunks (the first ones get the rest)."""
    if chunks < 1 or chunks > max_trials:
        raise ConfigurationError(f"cannot split {max_trials} trials into {chunks} chunks (1 to {max_trials})")
    base, rest = divmod(max_trials, chunks)
    return [base + (1 if i < rest else 0) for i in range(chunks)]


def merge_dnn_searches(parts: list[DnnTuningResult]) -> DnnTuningResult:
    """One search from the searches of its chunks (in chunk order), as the flow's join sees them.

    Every chunk searched on the same validation fold, so their best validation accuracies are
    comparable: the best chunk's best trial wins (the first of equals), with the cross-validated
    figures that chunk computed for it. Trial ids become `<chunk>-<id>` (1-based chunk).
    """
    if not parts:
        raise ConfigurationError("a search run in chunks needs at least one chunk's result")
    renamed = [
        [replace(trial, trial_id=f"{number}-{trial.trial_id}") for trial in part.trials]
        for number, part in enumerate(parts, start=1)
    ]
    winner = max(range(len(parts)), key=lambda i: (parts[i].best_val_accuracy, -i))
    best = parts[winner]
    return replace(
        best,
        best_trial_id=f"{winner + 1}-{best.best_trial_id}",
        trials=[trial for chunk in renamed for trial in chunk],
        # Wall-clock with the chunks in parallel: the slowest chunk.
        elapsed_s=max(part.elapsed_s for part in parts),
        max_trials=sum(part.max_trials for part in parts),
        seed=parts[0].seed,
        tuner_directory=None,
        chunks=[
            {
                "chunk": i,
                "max_trials": part.max_trials,
                "seed": part.seed,
                "best_trial_id": f"{i + 1}-{part.best_trial_id}",
                "best_val_accuracy": part.best_val_accuracy,
                "cv_mean": part.cv_mean,
                "elapsed_s": part.elapsed_s,
            }
            for i, part in enumerate(parts)
        ],
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
    report = report_on_held_out(
        data, predictions, proba, data.classes, cv=cv, fit_predict=fit_predict, seed=seed
    )
    return TrainedModel(
        family="dnn",
        model=model,
        report=report,
        preprocessing=describe_preprocessor(preprocessor),
        preprocessor=preprocessor,
        history=history,
        classes=list(data.classes),
    )


class DnnFamily(ModelFamily):
    """The Keras DNN: keras-tuner Bayesian optimisation, then the best settings cross-validated."""

    accelerator = "gpu"  # Keras trains on a GPU node on Kubernetes (GPU_STEPS=0 turns it off)
    name = "dnn"
    title = "DNN"
    search_title = "DNN trials"

    def tune(self, data: PreparedData, context: TuningContext) -> TuningOutcome:
        return self._outcome(self._search(data, context), context)

    def search_chunks(self, context: TuningContext, requested: int) -> int:
        return max(1, min(requested, context.budgets.get("dnn_max_trials", 4)))

    def tune_chunk(
        self, data: PreparedData, context: TuningContext, chunk: int, chunks: int
    ) -> TuningOutcome:
        # Each chunk is a Bayesian search of its own (its share of the trials, its own seed) on
        # the same validation fold: the chunks do not share what they learn, the join compares them.
        trials = trial_shares(context.budgets.get("dnn_max_trials", 4), chunks)[chunk]
        return self._outcome(
            self._search(data, context, trials=trials, search_seed=context.seed + chunk), context
        )

    def merge_chunks(
        self, data: PreparedData, context: TuningContext, parts: list[TuningOutcome]
    ) -> TuningOutcome:
        merged = merge_dnn_searches([DnnTuningResult.from_dict(part.search) for part in parts])
        return self._outcome(merged, context)

    def _search(
        self,
        data: PreparedData,
        context: TuningContext,
        *,
        trials: int | None = None,
        search_seed: int | None = None,
    ) -> DnnTuningResult:
        return run_dnn_tuning(
            data,
            cv_folds_count=context.cv_folds,
            max_trials=trials or context.budgets.get("dnn_max_trials", 4),
            max_epochs=context.budgets.get("dnn_max_epochs", 15),
            pca_variance=context.pca_variance,
            seed=context.seed,
            search_seed=search_seed,
            on_trial_end=context.on_trial_end,
        )

    @staticmethod
    def _outcome(result: DnnTuningResult, context: TuningContext) -> TuningOutcome:
        return TuningOutcome(
            best={
                "params": result.best_hyperparameters,
                "val_accuracy": result.best_val_accuracy,
                "cv_accuracy": result.cv_mean,
                "cv_std": result.cv_std,
                "cv_folds": context.cv_folds,
                "epochs": best_epoch(result),
            },
            metrics={
                "best_val_accuracy": result.best_val_accuracy,
                "cv_accuracy_mean": result.cv_mean,
                "cv_accuracy_std": result.cv_std,
                "search_seconds": result.elapsed_s,
            },
            search=result.to_dict(),
        )

    def apply_override(self, best: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        # `epochs` is how long the final fit trains, not a hyperparameter of the network.
        params = {k: v for k, v in values.items() if k != "epochs"}
        merged = {**best, "params": {**best["params"], **params}}
        if "epochs" in values:
            merged["epochs"] = values["epochs"]
        return merged

    def train(
        self,
        data: PreparedData,
        best: dict[str, Any],
        context: TuningContext,
        *,
        cv: CrossValidation | None = None,
    ) -> TrainedModel:
        return train_dnn(
            data,
            best["params"],
            epochs=int(best.get("epochs") or context.budgets.get("dnn_max_epochs", 15)),
            pca_variance=context.pca_variance,
            seed=context.seed,
            cv=cv,
        )

    def log_model(self, trained: TrainedModel, input_example: Any) -> str:
        from modules.tracking import client as tracking

        return tracking.log_dnn_model(
            trained.preprocessor, trained.model, trained.classes or [], input_example
        )

    def search_table(self, search: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
        from modules.models.reports import DNN_TABLE_HEADERS, dnn_trial_rows

        return DNN_TABLE_HEADERS, dnn_trial_rows(search)

    def plot_search(self, ax: Axes, search: dict[str, Any]) -> None:
        from modules.models.reports import plot_trial_scores

        plot_trial_scores(ax, search)
