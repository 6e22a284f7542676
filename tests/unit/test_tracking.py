"""modules.tracking on a real (SQLite) MLflow store: registration once per key, the promotion gate."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from modules import tracking
from modules.errors import TrackingError
from modules.feature_transformation import build_preprocessor
from modules.settings import load_settings

pytestmark = pytest.mark.slow


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "MLFLOW_EXPERIMENT_NAME": "unit",
    }
    settings = load_settings(root=tmp_path, env=env)
    tracking.connect(settings)
    tracking.ensure_experiment(settings)
    yield settings
    mlflow.set_tracking_uri(None)


@pytest.fixture
def model_uri(store) -> str:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(60, 4)), columns=["a_a", "b_a", "c_b", "d_b"])
    y = np.where(X["a_a"] > 0, "POSITIVE", "NEGATIVE")
    pipeline = Pipeline([("preprocess", build_preprocessor()), ("clf", LogisticRegression())]).fit(X, y)
    with mlflow.start_run():
        return tracking.log_sklearn_model(pipeline, X.head(3))


def test_connect_fails_fast_on_a_dead_server_with_the_password_masked():
    settings = load_settings(env={"MLFLOW_TRACKING_URI": "http://user:hunter2@127.0.0.1:9"})
    with pytest.raises(TrackingError) as error:
        tracking.connect(settings, timeout_s=2)
    assert "http://user:***@127.0.0.1:9" in str(error.value)
    assert "hunter2" not in str(error.value)


def test_experiment_opens_on_training_runs(store):
    experiment = MlflowClient().get_experiment_by_name("unit")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.artifact_location.startswith("file://")


def test_registering_twice_with_one_key_makes_one_version(store, model_uri):
    first = tracking.register_model(model_uri, "unit-model", idempotency_key="Flow/1/svm", tags={"a": "b"})
    again = tracking.register_model(model_uri, "unit-model", idempotency_key="Flow/1/svm", tags={"a": "b"})
    other = tracking.register_model(model_uri, "unit-model", idempotency_key="Flow/2/svm", tags={"a": "b"})
    assert first == again == "1"
    assert other == "2"
    assert len(MlflowClient().search_model_versions("name='unit-model'")) == 2


def test_promotion_gate(store, model_uri):
    versions = [
        tracking.register_model(model_uri, "gate", idempotency_key=f"Flow/{i}/svm", tags={}) for i in range(4)
    ]
    client = MlflowClient()

    first = tracking.promote_if_better("svm", "gate", versions[0], 0.80, score_model=lambda uri: 0.0)
    assert first.promoted and first.reason == "no champion yet"

    worse = tracking.promote_if_better("svm", "gate", versions[1], 0.70, score_model=lambda uri: 0.80)
    assert not worse.promoted and "champion kept" in worse.reason
    assert client.get_model_version_by_alias("gate", "champion").version in (1, "1")
    assert str(client.get_model_version_by_alias("gate", "challenger").version) == versions[1]

    tie = tracking.promote_if_better("svm", "gate", versions[2], 0.80, score_model=lambda uri: 0.80)
    assert not tie.promoted

    def broken(uri: str) -> float:
        raise ValueError("columns changed")

    better = tracking.promote_if_better("svm", "gate", versions[3], 0.50, score_model=broken)
    assert better.promoted and "cannot score" in better.reason
    assert str(client.get_model_version_by_alias("gate", "champion").version) == versions[3]


def test_logged_model_predicts_labels_from_raw_columns(store, model_uri):
    model = tracking.load_model(model_uri)
    frame = pd.DataFrame([[1.0, 0.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0]], columns=["a_a", "b_a", "c_b", "d_b"])
    assert list(model.predict(frame)) == ["POSITIVE", "NEGATIVE"]
    assert model.metadata.get_input_schema().input_names() == ["a_a", "b_a", "c_b", "d_b"]
