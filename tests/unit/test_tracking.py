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
from modules.promotion import Candidate, Schema
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


SCHEMA = Schema.of(["a_a", "b_a", "c_b", "d_b"], ["NEGATIVE", "POSITIVE"])


def _candidate(version: str, accuracy: float, schema: Schema = SCHEMA) -> Candidate:
    return Candidate(version, accuracy, 0.5, schema, data_verified=True, data_check="local")


def _gate(version: str, accuracy: float, score_model, schema: Schema = SCHEMA, **kwargs):
    return tracking.promote_through_gate(
        "svm",
        "gate",
        _candidate(version, accuracy, schema),
        score_model=score_model,
        min_margin=kwargs.pop("min_margin", 0.10),
        allow_schema_change=kwargs.pop("allow_schema_change", False),
    )


def test_promotion_gate_on_the_registry(store, model_uri):
    versions = [
        tracking.register_model(model_uri, "gate", idempotency_key=f"Flow/{i}/svm", tags=SCHEMA.to_tags())
        for i in range(5)
    ]
    client = MlflowClient()

    def never(uri: str) -> float:
        raise AssertionError("the champion must not be scored when there is none")

    below = _gate(versions[0], 0.55, never)
    assert not below.promoted and "below baseline" in below.reason
    assert str(client.get_model_version_by_alias("gate", "challenger").version) == versions[0]
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias("gate", "champion")
    tags = client.get_model_version("gate", versions[0]).tags
    assert tags["gate.promoted"] == "false" and tags["gate.beats_baseline"].startswith("failed:")

    first = _gate(versions[1], 0.80, never)
    assert first.promoted and first.reason.startswith("first version to pass the gate")

    scored = []
    worse = _gate(versions[2], 0.70, lambda uri: scored.append(uri) or 0.80)
    assert not worse.promoted and "champion kept" in worse.reason
    assert scored == [f"models:/gate/{versions[1]}"]  # the champion's own version, not the moving alias
    assert str(client.get_model_version_by_alias("gate", "champion").version) == versions[1]
    assert str(client.get_model_version_by_alias("gate", "challenger").version) == versions[2]

    def broken(uri: str) -> float:
        raise ConnectionError("artifact download failed")

    with pytest.raises(TrackingError) as error:
        _gate(versions[3], 0.99, broken)
    message = str(error.value)
    assert "cannot score champion v2 of gate" in message and "ConnectionError" in message
    assert "champion kept" in message and "\n" not in message
    assert str(client.get_model_version_by_alias("gate", "champion").version) == versions[1]

    other = Schema.of(["x"], ["NEGATIVE", "POSITIVE"])
    kept = _gate(versions[4], 0.99, never, schema=other)
    assert not kept.promoted and "schema differs" in kept.reason
    allowed = _gate(versions[4], 0.99, never, schema=other, allow_schema_change=True)
    assert allowed.promoted
    assert str(client.get_model_version_by_alias("gate", "champion").version) == versions[4]


def test_a_champion_without_schema_tags_is_compared_by_its_signature(store, model_uri):
    old = tracking.register_model(model_uri, "legacy", idempotency_key="old", tags={})
    MlflowClient().set_registered_model_alias("legacy", "champion", old)
    champion = tracking.current_champion("legacy")
    assert champion.version == old and champion.schema.matches(SCHEMA)


def test_logged_model_predicts_labels_from_raw_columns(store, model_uri):
    model = tracking.load_model(model_uri)
    frame = pd.DataFrame([[1.0, 0.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0]], columns=["a_a", "b_a", "c_b", "d_b"])
    assert list(model.predict(frame)) == ["POSITIVE", "NEGATIVE"]
    assert model.metadata.get_input_schema().input_names() == ["a_a", "b_a", "c_b", "d_b"]
