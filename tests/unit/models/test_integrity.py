"""Registered models load only when their files match the registry's digest; skops trusts our list only.

On a real SQLite store with a local artifact folder, which plays the bucket: the tests change
files there as someone with write access to the bucket (and none to the registry) could.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import skops.io
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from modules.errors import ConfigurationError, TrackingError
from modules.models.integrity import (
    DIGEST_TAG,
    ModelIntegrityError,
    artifact_digest,
    cli,
    load_skops,
)
from modules.models.preprocessing import build_preprocessor
from modules.models.promotion import Candidate, Schema
from modules.settings import PROJECT_ROOT, load_settings
from modules.tracking import client as tracking
from tests.commands import run_command

COLUMNS = ["a_a", "b_a", "c_b", "d_b"]
SCHEMA = Schema.of(COLUMNS, ["NEGATIVE", "POSITIVE"])


# --------------------------------------------------------------------------- digest, no MLflow
def test_digest_changes_with_one_byte_a_name_or_a_file(tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "artifacts").mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "artifacts" / "model.skops").write_bytes(b"\x00\x01\x02" * 100)
    first = artifact_digest(model)
    assert first == artifact_digest(model) and len(first) == 64

    data = bytearray((model / "artifacts" / "model.skops").read_bytes())
    data[150] ^= 0x01
    (model / "artifacts" / "model.skops").write_bytes(bytes(data))
    flipped = artifact_digest(model)
    assert flipped != first
    (model / "artifacts" / "model.skops").rename(model / "artifacts" / "other.skops")
    assert artifact_digest(model) not in (first, flipped)
    (model / "artifacts" / "other.skops").rename(model / "artifacts" / "model.skops")
    assert artifact_digest(model) == flipped
    (model / "code").mkdir()
    (model / "code" / "extra.py").write_text("")
    assert artifact_digest(model) != flipped


def test_digest_refuses_links(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "MLmodel").symlink_to("/etc/hostname")
    with pytest.raises(ModelIntegrityError, match="MLmodel: a link inside a model's files"):
        artifact_digest(tmp_path / "model")


# --------------------------------------------------------------------------- skops allowlist
def test_a_skops_file_with_an_untrusted_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.skops"
    skops.io.dump(Pipeline([("run", FunctionTransformer(func=os.system))]), path)
    with pytest.raises(ModelIntegrityError) as caught:
        load_skops(path)
    message = str(caught.value)
    assert message.startswith("model.skops: holds types this project does not trust (")
    assert f"{os.system.__module__}.system" in message and message.endswith("refusing to load")
    # The same object is refused when logged, before it reaches the store.
    with pytest.raises(ConfigurationError, match=r"TRUSTED_SKOPS_TYPES in modules/models/integrity\.py"):
        tracking.log_sklearn_model(Pipeline([("run", FunctionTransformer(func=os.system))]), pd.DataFrame())


def test_project_types_load_without_a_list_from_the_file(tmp_path: Path) -> None:
    X, y = _rows()
    path = tmp_path / "model.skops"
    skops.io.dump(_pipeline(X, y), path)
    assert list(load_skops(path).predict(X.head(2))) == list(y[:2])


# --------------------------------------------------------------------------- on a registry
@pytest.fixture
def store(tmp_path: Path):
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "MLFLOW_EXPERIMENT_NAME": "integrity",
    }
    settings = load_settings(root=tmp_path, env=env)
    tracking.connect(settings)
    tracking.ensure_experiment(settings)
    yield env
    mlflow.set_tracking_uri(None)


def _rows() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(60, 4)), columns=COLUMNS)
    return X, np.where(X["a_a"] > 0, "POSITIVE", "NEGATIVE")


def _pipeline(X: pd.DataFrame, y: np.ndarray) -> Pipeline:
    return Pipeline([("preprocess", build_preprocessor()), ("clf", LogisticRegression())]).fit(X, y)


def _log_and_register(name: str, *, champion: bool = True) -> tuple[str, str]:
    X, y = _rows()
    with mlflow.start_run():
        uri = tracking.log_sklearn_model(_pipeline(X, y), X.head(3))
    version = tracking.register_model(uri, name, idempotency_key=f"{name}/1", tags=SCHEMA.to_tags())
    if champion:
        MlflowClient().set_registered_model_alias(name, "champion", version)
    return uri, version


def _files_in_store(model_uri: str) -> Path:
    """The folder of a model in the artifact store (the 'bucket')."""
    location = MlflowClient().get_logged_model(model_uri.removeprefix("models:/")).artifact_location
    return Path(location.removeprefix("file://"))


def _flip_one_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_every_version_is_registered_with_the_digest_of_its_files(store) -> None:
    uri, version = _log_and_register("digests")
    files = _files_in_store(uri)
    tag = MlflowClient().get_model_version("digests", version).tags[DIGEST_TAG]
    assert tag == artifact_digest(files)
    assert MlflowClient().get_logged_model(uri.removeprefix("models:/")).tags[DIGEST_TAG] == tag
    # Logged from code: the skops file holds the pipeline, no pickle, no code folder, no trusted list.
    names = {path.relative_to(files).as_posix() for path in files.rglob("*") if path.is_file()}
    assert {"MLmodel", "sklearn_model_code.py", "artifacts/model.skops"} <= names
    assert not [name for name in names if name.endswith((".pkl", ".pickle")) or name.startswith("code/")]
    mlmodel = (files / "MLmodel").read_text()
    assert (
        "skops_trusted_types" not in mlmodel and "loader_module: mlflow.pyfunc.loaders.code_model" in mlmodel
    )
    model = tracking.load_model("models:/digests@champion")
    X, y = _rows()
    assert list(model.predict(X)) == list(y)


@pytest.mark.slow
def test_mlflows_own_loader_leaves_the_digest_intact(store) -> None:
    """`mlflow.pyfunc.load_model` writes `registered_model_meta` into a local store's model folder."""
    uri, _ = _log_and_register("shared")
    mlflow.pyfunc.load_model("models:/shared@champion")
    assert (_files_in_store(uri) / "registered_model_meta").is_file()
    X, y = _rows()
    assert list(tracking.load_model("models:/shared@champion").predict(X)) == list(y)


@pytest.mark.slow
def test_a_flipped_byte_in_a_registered_model_is_refused(store) -> None:
    uri, version = _log_and_register("tampered")
    _flip_one_byte(_files_in_store(uri) / "artifacts" / "model.skops")
    for reference in ("models:/tampered@champion", f"models:/tampered/{version}"):
        with pytest.raises(ModelIntegrityError) as caught:
            tracking.load_model(reference)
        message = str(caught.value)
        assert message.startswith(f"model tampered v{version}: artifact digest mismatch (expected ")
        assert message.endswith("; refusing to load") and "\n" not in message
    with pytest.raises(ModelIntegrityError, match=r"^logged model m-\w+: artifact digest mismatch"):
        tracking.load_model(uri)


@pytest.mark.slow
def test_code_planted_in_the_bucket_never_runs(store, tmp_path: Path) -> None:
    uri, _ = _log_and_register("planted")
    marker = tmp_path / "code-ran"
    code_file = _files_in_store(uri) / "sklearn_model_code.py"
    code_file.write_text(code_file.read_text() + f"\nopen({str(marker)!r}, 'w').close()\n")
    with pytest.raises(ModelIntegrityError, match="artifact digest mismatch"):
        tracking.load_model("models:/planted@champion")
    assert not marker.exists()
    # What the project's loader prevents: MLflow's own loader runs the model's code file.
    mlflow.pyfunc.load_model("models:/planted@champion")
    assert marker.exists()


@pytest.mark.slow
def test_the_promotion_gate_refuses_a_tampered_champion(store) -> None:
    uri, version = _log_and_register("gate")
    _flip_one_byte(_files_in_store(uri) / "MLmodel")
    X, y = _rows()
    with pytest.raises(ModelIntegrityError, match=f"model gate v{version}: artifact digest mismatch"):
        tracking.accuracy_of(f"models:/gate/{version}", X, pd.Series(y))
    with mlflow.start_run():
        new_uri = tracking.log_sklearn_model(_pipeline(X, y), X.head(3))
    candidate = tracking.register_model(new_uri, "gate", idempotency_key="gate/2", tags=SCHEMA.to_tags())
    with pytest.raises(TrackingError) as caught:
        tracking.promote_through_gate(
            "svm",
            "gate",
            Candidate(candidate, 0.99, 0.5, SCHEMA, data_verified=True, data_check="local"),
            score_model=lambda model_uri: tracking.accuracy_of(model_uri, X, pd.Series(y)),
            min_margin=0.0,
            allow_schema_change=False,
        )
    assert f"cannot score champion v{version} of gate" in str(caught.value)
    assert "artifact digest mismatch" in str(caught.value)
    assert str(MlflowClient().get_model_version_by_alias("gate", "champion").version) == version


@pytest.mark.slow
def test_a_model_changed_between_logging_and_registration_is_not_registered(store) -> None:
    X, y = _rows()
    with mlflow.start_run():
        uri = tracking.log_sklearn_model(_pipeline(X, y), X.head(3))
    _flip_one_byte(_files_in_store(uri) / "artifacts" / "model.skops")
    with pytest.raises(ModelIntegrityError, match=r"artifact digest mismatch .*; refusing to register"):
        tracking.register_model(uri, "late", idempotency_key="late/1", tags={})
    assert MlflowClient().search_model_versions("name='late'") == []


@pytest.mark.slow
def test_make_predict_refuses_a_tampered_champion_with_one_line_and_exit_2(store, tmp_path: Path) -> None:
    uri, version = _log_and_register("eeg-emotion-svm")
    X, _ = _rows()
    csv = tmp_path / "rows.csv"
    X.to_csv(csv, index=False)
    env = {**os.environ, **store, "REPORTS_DIR": str(tmp_path / "reports"), "PYTHONPATH": str(PROJECT_ROOT)}
    command = [sys.executable, "-m", "modules", "predict", str(csv), "--data-path", "emotions.csv"]
    good = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert good.returncode == 0, good.stderr
    assert "Scored 60 rows" in good.stdout

    _flip_one_byte(_files_in_store(uri) / "artifacts" / "model.skops")
    bad = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in bad.stderr
    assert errors[0].startswith(
        f"error: model eeg-emotion-svm v{version}: artifact digest mismatch (expected "
    )


@pytest.mark.slow
def test_a_version_without_a_digest_is_refused_until_stamped(
    store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    X, y = _rows()
    with mlflow.start_run():
        uri = tracking.log_sklearn_model(_pipeline(X, y), X.head(3))
    old = mlflow.register_model(uri, "legacy").version  # as registered before digests existed
    with pytest.raises(ModelIntegrityError) as caught:
        tracking.load_model(f"models:/legacy/{old}")
    assert str(caught.value) == (
        f"model legacy v{old} has no model.sha256 tag (registered before digests were recorded); "
        "refusing to load: retrain it (`make train`), or after checking its files record their digest "
        f"with `python -m modules integrity stamp legacy {old}`"
    )
    for key, value in store.items():  # the command line reads its settings from the environment
        monkeypatch.setenv(key, value)
    assert run_command(cli, ["stamp", "legacy", str(old)]) == 0
    assert "recorded model.sha256=" in capsys.readouterr().out
    assert list(tracking.load_model(f"models:/legacy/{old}").predict(X.head(2))) == list(y[:2])
    with pytest.raises(ConfigurationError, match="a stamp never replaces one"):
        run_command(cli, ["stamp", "legacy", str(old)])
    _flip_one_byte(_files_in_store(uri) / "artifacts" / "model.skops")
    with pytest.raises(ModelIntegrityError, match="artifact digest mismatch"):
        run_command(cli, ["verify", f"models:/legacy/{old}"])


@pytest.mark.slow
def test_a_skops_file_swapped_with_a_matching_digest_is_still_refused(store) -> None:
    """Someone who could also rewrite the registry's tag still cannot make skops build os.system."""
    uri, version = _log_and_register("swapped")
    files = _files_in_store(uri)
    skops.io.dump(
        Pipeline([("run", FunctionTransformer(func=os.system))]), files / "artifacts" / "model.skops"
    )
    MlflowClient().set_model_version_tag("swapped", version, DIGEST_TAG, artifact_digest(files))
    with pytest.raises(ModelIntegrityError, match="holds types this project does not trust"):
        tracking.load_model("models:/swapped@champion")


def _retag(name: str, version: str, files: Path) -> None:
    """What someone who can also write the registry could do: a digest for the changed files."""
    MlflowClient().set_model_version_tag(name, version, DIGEST_TAG, artifact_digest(files))


@pytest.mark.slow
def test_with_the_digest_rewritten_too_only_the_projects_code_runs(store, tmp_path: Path) -> None:
    uri, version = _log_and_register("rewritten")
    files = _files_in_store(uri)
    marker = tmp_path / "code-ran"
    code_file = files / "sklearn_model_code.py"
    code_file.write_text(code_file.read_text() + f"\nopen({str(marker)!r}, 'w').close()\n")
    _retag("rewritten", version, files)
    X, y = _rows()
    assert list(tracking.load_model("models:/rewritten@champion").predict(X)) == list(y)
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda text: text.replace("sklearn_model_code.py", "evil.py"),
            "logged with code this project does not ship (evil.py)",
        ),
        (
            lambda text: text.replace("path: artifacts/model.skops", "path: ../../../../../etc/hostname"),
            "an artifact path leaves the model's folder",
        ),
    ],
)
def test_a_model_that_names_other_code_or_files_is_refused(store, change, message: str) -> None:
    uri, version = _log_and_register("layout")
    files = _files_in_store(uri)
    mlmodel = files / "MLmodel"
    mlmodel.write_text(change(mlmodel.read_text()))
    (files / "evil.py").write_text("raise SystemExit('evil code ran')\n")
    _retag("layout", version, files)
    with pytest.raises(ModelIntegrityError) as caught:
        tracking.load_model("models:/layout@champion")
    assert str(caught.value) == f"model layout v{version}: {message}; refusing to load"


def test_uris_without_a_digest_are_refused() -> None:
    with pytest.raises(ModelIntegrityError, match="only registered models"):
        tracking.load_model("runs:/0123/model")


@pytest.mark.slow
def test_the_dnn_is_logged_from_code_without_cloudpickle(store) -> None:
    import keras

    X, y = _rows()
    preprocessor = build_preprocessor().fit(X)
    keras.utils.set_random_seed(0)
    network = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(2, activation="softmax")])
    network.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    network.fit(
        preprocessor.transform(X).astype("float32"), (y == "POSITIVE").astype(int), epochs=2, verbose=0
    )

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("mlflow")
    logger.addHandler(handler)
    try:
        with mlflow.start_run():
            uri = tracking.log_dnn_model(preprocessor, network, ["NEGATIVE", "POSITIVE"], X.head(3))
    finally:
        logger.removeHandler(handler)
    assert not [r.getMessage() for r in records if "cloudpickle" in r.getMessage().lower()]

    files = _files_in_store(uri)
    names = {path.relative_to(files).as_posix() for path in files.rglob("*") if path.is_file()}
    assert {"dnn_model_code.py", "artifacts/model.keras", "artifacts/preprocessor.skops"} <= names
    assert not [name for name in names if name.endswith((".pkl", ".pickle")) or name.startswith("code/")]
    version = tracking.register_model(uri, "dnn", idempotency_key="dnn/1", tags={})
    model = tracking.load_model(f"models:/dnn/{version}")
    assert set(np.asarray(model.predict(X)).astype(str)) <= {"NEGATIVE", "POSITIVE"}
    assert model.metadata.get_input_schema().input_names() == COLUMNS


def test_a_skops_file_written_before_the_package_layout_still_loads(tmp_path, monkeypatch) -> None:
    """Models registered when our transformer lived in `modules/feature_transformation.py` load."""
    from modules.models import preprocessing

    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [1.0, 1.0, 1.0], "c": [1.0, 2.0, 3.0]})
    dropper = preprocessing.DropDuplicateAndConstantColumns().fit(frame)
    # Write it as the old layout did: the type named under the module path of that time.
    monkeypatch.setattr(
        preprocessing.DropDuplicateAndConstantColumns, "__module__", "modules.feature_transformation"
    )
    monkeypatch.setitem(sys.modules, "modules.feature_transformation", preprocessing)
    path = tmp_path / "old.skops"
    skops.io.dump(dropper, path)
    assert "modules.feature_transformation.DropDuplicateAndConstantColumns" in skops.io.get_untrusted_types(
        file=path
    )
    monkeypatch.undo()
    sys.modules.pop("modules.feature_transformation", None)

    loaded = load_skops(path)

    assert type(loaded).__name__ == "DropDuplicateAndConstantColumns"
    np.testing.assert_array_equal(loaded.transform(frame), dropper.transform(frame))
