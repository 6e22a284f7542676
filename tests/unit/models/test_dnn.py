"""keras-tuner search of the DNN on tiny data: trials, callbacks, fresh directories, seeds.

The searches import TensorFlow (about 5 s) and train for a few seconds: marked slow.
Input checks and label encoding run before any Keras import and stay fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modules.errors import DataValidationError
from modules.models.dnn import DnnTuningResult, TrialRecord, encode_labels, tune_dnn

HISTORY_KEYS = {"loss", "accuracy", "val_loss", "val_accuracy"}


def _tiny(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """60 rows, 6 features, 3 classes: 45 training rows, 15 validation rows."""
    rng = np.random.default_rng(seed)
    y = np.arange(60) % 3
    X = rng.normal(size=(60, 6)).astype("float32") + y[:, None]
    return X[:45], y[:45], X[45:], y[45:]


def test_encode_labels_uses_sorted_class_order() -> None:
    codes, classes = encode_labels(["POSITIVE", "NEGATIVE", "NEUTRAL", "NEGATIVE"])
    assert classes == ["NEGATIVE", "NEUTRAL", "POSITIVE"]
    assert codes.tolist() == [2, 0, 1, 0]
    with pytest.raises(DataValidationError, match=r"\['HAPPY'\]"):
        encode_labels(["HAPPY"], classes)


def test_string_labels_are_refused_before_any_training() -> None:
    X, _, Xv, yv = _tiny()
    with pytest.raises(DataValidationError, match="labels must be integers"):
        tune_dnn(X, np.array(["a"] * 45), Xv, yv, max_trials=1, max_epochs=1, progress=None)


@pytest.fixture(scope="module")
def two_searches(tmp_path_factory) -> dict:
    """The same tiny search twice, same seed and same base directory."""
    base = tmp_path_factory.mktemp("tuner")
    X, y, Xv, yv = _tiny()
    seen: list[TrialRecord] = []
    lines: list[str] = []
    first = tune_dnn(
        X,
        y,
        Xv,
        yv,
        max_trials=2,
        max_epochs=2,
        seed=11,
        tuner_dir=base,
        on_trial_end=seen.append,
        progress=lines.append,
    )
    second = tune_dnn(X, y, Xv, yv, max_trials=2, max_epochs=2, seed=11, tuner_dir=base, progress=None)
    return {"first": first, "second": second, "seen": seen, "lines": lines, "base": base}


@pytest.mark.slow
def test_trials_carry_hyperparameters_and_per_epoch_history(two_searches) -> None:
    result: DnnTuningResult = two_searches["first"]
    assert len(result.trials) == 2
    for trial in result.trials:
        assert trial.status == "COMPLETED"
        assert trial.hyperparameters["layers"] in (1, 2, 3)
        assert {f"units_{i}" for i in range(trial.hyperparameters["layers"])} <= set(trial.hyperparameters)
        assert f"units_{trial.hyperparameters['layers']}" not in trial.hyperparameters  # inactive: left out
        assert {"dropout", "learning_rate", "batch_size"} <= set(trial.hyperparameters)
        assert set(trial.history) == HISTORY_KEYS
        assert trial.epochs_run == len(trial.history["loss"]) <= 2
        assert trial.best_val_accuracy == max(trial.history["val_accuracy"])
    best = max(result.trials, key=lambda t: t.best_val_accuracy)
    assert result.best_hyperparameters == best.hyperparameters
    assert result.best_val_accuracy == best.best_val_accuracy
    assert (result.n_features, result.n_classes) == (6, 3)
    assert DnnTuningResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


@pytest.mark.slow
def test_on_trial_end_gets_every_trial_and_progress_is_one_line_per_trial(two_searches) -> None:
    assert two_searches["seen"] == two_searches["first"].trials
    trial_lines = [line for line in two_searches["lines"] if line.startswith("dnn: trial ")]
    assert [line.split()[2] for line in trial_lines] == ["1/2", "2/2"]
    assert len(two_searches["lines"]) == 4  # header, 2 trials, result


@pytest.mark.slow
def test_each_search_runs_in_a_fresh_directory(two_searches) -> None:
    first, second = two_searches["first"], two_searches["second"]
    # A reloaded search would run no new trial; both ran their full budget.
    assert len(first.trials) == len(second.trials) == 2
    assert first.tuner_directory != second.tuner_directory
    for directory in (first.tuner_directory, second.tuner_directory):
        assert Path(directory).parent == two_searches["base"]


@pytest.mark.slow
def test_same_seed_repeats_the_search(two_searches) -> None:
    first, second = two_searches["first"], two_searches["second"]
    assert [t.hyperparameters for t in first.trials] == [t.hyperparameters for t in second.trials]
    for a, b in zip(first.trials, second.trials, strict=True):
        for key in HISTORY_KEYS:
            np.testing.assert_allclose(a.history[key], b.history[key], rtol=1e-5)


@pytest.mark.slow
def test_best_architecture_is_rebuilt_and_trained(two_searches) -> None:
    from modules.models.dnn import best_epoch, build_dnn, fit_dnn

    hp = two_searches["first"].best_hyperparameters
    model = build_dnn(hp, n_features=6, n_classes=3)
    dense = [layer for layer in model.layers if layer.__class__.__name__ == "Dense"]
    assert [layer.units for layer in dense] == [hp[f"units_{i}"] for i in range(hp["layers"])] + [3]

    X, y, Xv, yv = _tiny()
    lines: list[str] = []
    trained, history = fit_dnn(
        hp, np.vstack([X, Xv]), np.r_[y, yv], max_epochs=3, seed=1, progress=lines.append
    )
    assert set(history) == HISTORY_KEYS and 1 <= len(history["loss"]) <= 3
    proba = trained.predict(Xv, verbose=0)
    assert proba.shape == (15, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert len(lines) == 1  # one summary line, not one per epoch

    # All rows for the tuned epoch count, no early stopping.
    epochs = best_epoch(two_searches["first"])
    assert epochs in (1, 2)
    _, history = fit_dnn(hp, X, y, max_epochs=epochs, validation_fraction=0, seed=1, progress=None)
    assert set(history) == {"loss", "accuracy"} and len(history["loss"]) == epochs


def test_final_fit_validation_part_keeps_groups_whole() -> None:
    from modules.models.dnn import _carve_validation

    groups = np.repeat(np.arange(12), 10)  # 12 recordings of 10 rows
    y = groups % 3
    X = np.column_stack([np.arange(120.0), np.random.default_rng(0).normal(size=120)])  # column 0: row id
    X_tr, X_va, _, y_va = _carve_validation(X, y, 0.25, groups, seed=3)
    train_groups = set(groups[X_tr[:, 0].astype(int)])
    val_groups = set(groups[X_va[:, 0].astype(int)])
    assert train_groups.isdisjoint(val_groups)
    assert len(X_tr) + len(X_va) == 120 and 20 <= len(X_va) <= 40
    assert set(y_va) == {0, 1, 2}
