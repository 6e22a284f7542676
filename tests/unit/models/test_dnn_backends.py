"""The DNN on Keras 3's JAX backend (the GPU image's) against the TensorFlow backend (serving's).

Keras picks its backend when it is first imported, so each backend runs in its own
subprocess: this file run as `python -m tests.unit.models.test_dnn_backends`, with
KERAS_BACKEND set (and JAX_PLATFORMS=cpu: these machines have no GPU). On small data, few
epochs and a fixed seed they run the project's own code (`build_preprocessor`, `fit_dnn`,
`build_dnn`, the serving `KerasLabelClassifier`) and leave arrays for the checks below.

What is identical across backends, and what is not:
- A trained model, saved as the pyfunc's files (.keras, skops preprocessor, classes), gives
  the same probabilities under the other backend (atol 1e-5; float32 round-off only).
  Trained under JAX on a GPU node, served under TensorFlow: the same answers.
- Training from the same starting weights, in a fixed row order (no shuffling) and without
  dropout, ends at the same network (atol 1e-5): the layers, loss and Adam are one
  implementation on both backends.
- `fit_dnn` with the same seed does NOT give the same network: the seed drives each
  backend's own random generator (jax.random vs TensorFlow's), so the initial weights,
  the batch shuffling and the dropout masks differ. Checked instead: both runs learn the
  data to a similar training accuracy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
ROWS, COLUMNS, CLASSES = 240, 40, ("NEGATIVE", "NEUTRAL", "POSITIVE")
SEED = 7
EPOCHS = 5
# Seeded fits under two backends: different random streams, similar learning.
HYPERPARAMETERS = {
    "layers": 2,
    "units_0": 64,
    "units_1": 32,
    "dropout": 0.2,
    "learning_rate": 3e-3,
    "batch_size": 32,
}
PROBABILITY_ATOL = 1e-5


def _data() -> tuple[object, np.ndarray]:
    """A learnable table: class k shifts every column by k/2 (labels as strings, like the CSV)."""
    import pandas as pd

    rng = np.random.default_rng(0)
    codes = np.arange(ROWS) % len(CLASSES)
    values = rng.normal(size=(ROWS, COLUMNS)) + codes[:, None] * 0.5
    frame = pd.DataFrame(values.astype("float32"), columns=[f"f{i}" for i in range(COLUMNS)])
    return frame, codes


def _classifier(folder: Path) -> object:
    """The serving pyfunc, loaded from the files `tracking.log_dnn_model` logs."""
    import mlflow.pyfunc

    from modules.models.dnn_pyfunc import KerasLabelClassifier

    artifacts = {
        "keras_model": str(folder / "model.keras"),
        "preprocessor": str(folder / "preprocessor.skops"),
        "classes": str(folder / "classes.json"),
    }
    classifier = KerasLabelClassifier()
    classifier.load_context(mlflow.pyfunc.PythonModelContext(artifacts=artifacts, model_config={}))
    return classifier


def train_here(folder: Path) -> None:
    """Under this process's backend: a seeded `fit_dnn`, packaged, and a fixed-start fit."""
    import keras
    import skops.io

    from modules.models.dnn import build_dnn, fit_dnn
    from modules.models.preprocessing import build_preprocessor

    frame, codes = _data()
    folder.mkdir(parents=True, exist_ok=True)
    preprocessor = build_preprocessor(None).fit(frame)
    features = np.asarray(preprocessor.transform(frame), dtype="float32")
    model, history = fit_dnn(
        HYPERPARAMETERS,
        features,
        codes,
        max_epochs=EPOCHS,
        seed=SEED,
        n_classes=len(CLASSES),
        validation_fraction=0,
        progress=None,
    )
    model.save(folder / "model.keras")
    skops.io.dump(preprocessor, folder / "preprocessor.skops")
    (folder / "classes.json").write_text(json.dumps({"classes": list(CLASSES)}))
    proba = _classifier(folder).predict_proba(frame)
    np.save(folder / "proba.npy", proba)

    # The same architecture from the same starting weights (numpy's, not the backend's
    # generator), rows in order, no dropout: nothing random is left in training.
    keras.backend.clear_session()
    fixed = build_dnn({**HYPERPARAMETERS, "dropout": 0.0}, features.shape[1], len(CLASSES))
    start = np.random.default_rng(1)
    fixed.set_weights([start.normal(scale=0.1, size=w.shape).astype("float32") for w in fixed.get_weights()])
    fixed.fit(
        features, codes, epochs=EPOCHS, batch_size=HYPERPARAMETERS["batch_size"], shuffle=False, verbose=0
    )
    np.save(folder / "fixed_start.npy", np.asarray(fixed.predict(features, verbose=0)))
    (folder / "run.json").write_text(
        json.dumps(
            {
                "backend": keras.backend.backend(),
                "epochs": len(history["loss"]),
                "train_accuracy": float(np.mean(np.argmax(proba, axis=1) == codes)),
            }
        )
    )


def serve_here(trained: Path, out: Path) -> None:
    """Under this process's backend: the other backend's packaged model, through the pyfunc."""
    frame, _ = _data()
    np.save(out, _classifier(trained).predict_proba(frame))


def _run(backend: str, *args: str) -> None:
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "JAX_PLATFORMS": "cpu",
        "CUDA_VISIBLE_DEVICES": "",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.unit.models.test_dnn_backends", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"{backend} run {args} failed:\n{done.stdout}\n{done.stderr[-4000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """JAX trains; TensorFlow trains and serves JAX's model; JAX serves TensorFlow's."""
    pytest.importorskip("jax", reason="jax comes with requirements-dev.txt")
    base = tmp_path_factory.mktemp("backends")
    _run("jax", "train", str(base / "jax"))
    _run("tensorflow", "train", str(base / "tensorflow"))
    _run("tensorflow", "serve", str(base / "jax"), str(base / "jax" / "served_by_tensorflow.npy"))
    _run("jax", "serve", str(base / "tensorflow"), str(base / "tensorflow" / "served_by_jax.npy"))
    return base


@pytest.mark.slow
def test_each_run_used_the_backend_it_was_given(runs: Path) -> None:
    for backend in ("jax", "tensorflow"):
        run = json.loads((runs / backend / "run.json").read_text())
        assert run["backend"] == backend
        assert run["epochs"] == EPOCHS


@pytest.mark.slow
def test_a_model_trained_under_jax_serves_the_same_probabilities_under_tensorflow(runs: Path) -> None:
    trained = np.load(runs / "jax" / "proba.npy")
    served = np.load(runs / "jax" / "served_by_tensorflow.npy")
    assert trained.shape == (ROWS, len(CLASSES))
    # A model that learnt nothing would match trivially; this one has moved off uniform.
    assert np.abs(trained - 1 / len(CLASSES)).max() > 0.2
    np.testing.assert_allclose(served, trained, atol=PROBABILITY_ATOL, rtol=0)


@pytest.mark.slow
def test_a_model_trained_under_tensorflow_serves_the_same_probabilities_under_jax(runs: Path) -> None:
    trained = np.load(runs / "tensorflow" / "proba.npy")
    served = np.load(runs / "tensorflow" / "served_by_jax.npy")
    np.testing.assert_allclose(served, trained, atol=PROBABILITY_ATOL, rtol=0)


@pytest.mark.slow
def test_training_from_the_same_start_without_randomness_ends_at_the_same_network(runs: Path) -> None:
    jax_run = np.load(runs / "jax" / "fixed_start.npy")
    tf_run = np.load(runs / "tensorflow" / "fixed_start.npy")
    # Five epochs of Adam moved the network well away from its start.
    assert np.abs(jax_run - 1 / len(CLASSES)).max() > 0.2
    np.testing.assert_allclose(jax_run, tf_run, atol=PROBABILITY_ATOL, rtol=0)


@pytest.mark.slow
def test_seeded_fits_differ_between_backends_but_learn_alike(runs: Path) -> None:
    jax_run = json.loads((runs / "jax" / "run.json").read_text())
    tf_run = json.loads((runs / "tensorflow" / "run.json").read_text())
    assert jax_run["train_accuracy"] > 0.6 and tf_run["train_accuracy"] > 0.6
    assert abs(jax_run["train_accuracy"] - tf_run["train_accuracy"]) < 0.15


def main(argv: list[str]) -> None:
    """`train FOLDER` or `serve TRAINED_FOLDER OUT.npy`, under $KERAS_BACKEND."""
    sys.path.insert(0, str(REPO))
    if argv[0] == "train":
        train_here(Path(argv[1]))
    elif argv[0] == "serve":
        serve_here(Path(argv[1]), Path(argv[2]))
    else:
        raise SystemExit(f"unknown command {argv[0]!r}: expected train or serve")


if __name__ == "__main__":
    main(sys.argv[1:])
