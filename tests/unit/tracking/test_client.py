"""modules.tracking.client on a real (SQLite) MLflow store: registration once per key, the promotion gate."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from modules.errors import EXIT_UNAVAILABLE, ServiceUnavailableError, TrackingError
from modules.models.preprocessing import build_preprocessor
from modules.models.promotion import Candidate, Schema
from modules.settings import load_settings
from modules.tracking import client as tracking

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _client_environment_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """`connect` sets MLflow's retry variables for the process: put them back after each test."""
    for name in tracking.client_environment(load_settings(env={})):
        monkeypatch.delenv(name, raising=False)


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
    mlflow.set_registry_uri(None)


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


def test_promotion_gate_on_the_registry(store, model_uri, fast_claims):
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


# --------------------------------------------------------------------------- outages


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_outage_bound_follows_the_settings():
    defaults = load_settings(env={})
    # 4 attempts of at most 10 s, then urllib3's sleeps 0 + 2 + 4 s, each of the last two plus <= 1 s of jitter.
    assert tracking.outage_bound_s(defaults) == 4 * 10 + 6 + 2
    assert tracking.outage_bound_s(defaults) < 60
    tight = load_settings(
        env={"TRACKING_MAX_RETRIES": "1", "TRACKING_BACKOFF_FACTOR": "0", "TRACKING_TIMEOUT_S": "2"}
    )
    assert tracking.outage_bound_s(tight) == 2 * 2


def test_connect_names_a_dead_server_as_unavailable():
    settings = load_settings(env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_closed_port()}"})
    with pytest.raises(ServiceUnavailableError) as error:
        tracking.connect(settings, timeout_s=2)
    assert error.value.exit_code == 69 == EXIT_UNAVAILABLE


def test_a_call_to_a_server_gone_mid_run_becomes_one_line_within_the_bound():
    uri = f"http://alice:s3cret@127.0.0.1:{_closed_port()}"
    settings = load_settings(
        env={
            "MLFLOW_TRACKING_URI": uri,
            "TRACKING_MAX_RETRIES": "2",
            "TRACKING_BACKOFF_FACTOR": "1",
            "TRACKING_TIMEOUT_S": "2",
        }
    )
    tracking.bound_tracking_calls(settings)
    mlflow.set_tracking_uri(uri)  # as if connect had succeeded before the server went away
    try:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailableError) as error, tracking.outages_as_errors():
            MlflowClient().get_run("0" * 32)
        elapsed = time.monotonic() - started
    finally:
        mlflow.set_tracking_uri(None)
    message = str(error.value)
    assert message == (
        f"MLflow tracking server at http://alice:***@127.0.0.1:{uri.rsplit(':', 1)[1]} is not answering: "
        "/api/2.0/mlflow/runs/get failed after 3 attempts (connection refused)"
    )
    assert elapsed <= tracking.outage_bound_s(settings) + 1


def test_a_bad_request_is_not_an_outage(store):
    with pytest.raises(mlflow.exceptions.MlflowException) as error, tracking.outages_as_errors():
        MlflowClient().get_run("0" * 32)
    assert not tracking.is_outage(error.value)


# --------------------------------------------------------------------------- run states


def _flow_runs(settings, *, runtime: str, steps: int = 2) -> tuple[str, list[str]]:
    parent = tracking.start_parent_run(
        settings, "Flow/1", {"metaflow.pathspec": "Flow/1", tracking.RUNTIME_TAG: runtime}
    )
    children = []
    client = MlflowClient()
    experiment_id = client.get_run(parent).info.experiment_id
    for i in range(steps):
        tags = {"metaflow.pathspec": f"Flow/1/step{i}/{i}", tracking.PARENT_RUN_TAG: parent}
        children.append(client.create_run(experiment_id, run_name=f"step{i}", tags=tags).info.run_id)
    return parent, children


def _status(run_id: str) -> str:
    return MlflowClient().get_run(run_id).info.status


def test_the_parent_run_stays_running_between_steps_and_ends_in_the_last(store):
    parent, _ = _flow_runs(store, runtime="", steps=0)
    with tracking.reopen_run(parent):
        tracking.log_metrics({"m": 1.0})
    assert _status(parent) == "RUNNING"
    assert mlflow.active_run() is None
    with tracking.step_run(parent, "train", {tracking.PARENT_RUN_TAG: parent}) as step:
        pass
    assert _status(step.info.run_id) == "FINISHED" and _status(parent) == "RUNNING"
    with (
        pytest.raises(ValueError),
        tracking.step_run(parent, "broken", {tracking.PARENT_RUN_TAG: parent}) as bad,
    ):
        raise ValueError("boom")
    assert _status(bad.info.run_id) == "FAILED"
    assert tracking.finish_flow_run(parent) == []
    assert _status(parent) == "FINISHED"


def test_a_failed_flow_marks_its_parent_failed_and_left_running_steps_killed(store):
    parent, children = _flow_runs(store, runtime="")
    MlflowClient().set_terminated(children[0], "FINISHED")
    assert tracking.fail_flow_run(parent) == [children[1]]
    assert [_status(r) for r in (parent, *children)] == ["FAILED", "FINISHED", "KILLED"]


def test_a_resumed_flow_reopens_its_parent_and_kills_only_the_earlier_attempts_runs(store):
    parent, children = _flow_runs(store, runtime="")
    MlflowClient().set_terminated(parent, "FAILED")
    client = MlflowClient()
    experiment_id = client.get_run(parent).info.experiment_id
    mine = client.create_run(
        experiment_id, tags={"metaflow.pathspec": "Flow/2/step1/7", tracking.PARENT_RUN_TAG: parent}
    ).info.run_id
    tags = {"metaflow.pathspec": "Flow/2", tracking.RESUMED_FROM_TAG: "Flow/1"}
    assert sorted(tracking.reopen_flow_run(parent, "Flow/2", tags)) == sorted(children)
    run = client.get_run(parent)
    assert (run.info.status, run.info.run_name, run.data.tags["metaflow.pathspec"]) == (
        "RUNNING",
        "Flow/2",
        "Flow/2",
    )
    assert run.data.tags[tracking.RESUMED_FROM_TAG] == "Flow/1"
    assert _status(mine) == "RUNNING"
    assert tracking.reopen_flow_run(parent, "Flow/2", tags) is None  # once per resumed run


def _dead_process_identity() -> str:
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        identity = tracking.process_identity(process.pid)
    finally:
        process.kill()
        process.wait()
    return identity


def test_the_next_run_closes_runs_of_a_flow_whose_process_died(store):
    import os

    dead_parent, dead_children = _flow_runs(store, runtime=_dead_process_identity())
    live_parent, live_children = _flow_runs(store, runtime=tracking.process_identity(os.getpid()))
    other_host, _ = _flow_runs(store, runtime="another-host:1:1")
    tracking.start_parent_run(store, "Flow/3", {})
    assert _status(dead_parent) == "FAILED"
    assert {_status(r) for r in dead_children} == {"KILLED"}
    assert {_status(r) for r in (live_parent, *live_children, other_host)} == {"RUNNING"}


# --------------------------------------------------------------------------- promotion lease


@pytest.fixture
def fast_claims(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking, "CLAIM_WINDOW_S", 0.2)


def test_the_promotion_lease_lets_one_holder_in_at_a_time(store, fast_claims):
    import threading

    MlflowClient().create_registered_model("leased")
    intervals: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def promote() -> None:
        try:
            with tracking.promotion_lease("leased", "worker", ttl_s=30, wait_s=60):
                entered = time.monotonic()
                time.sleep(0.3)
                intervals.append((entered, time.monotonic()))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=promote) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(intervals) == 4
    ordered = sorted(intervals)
    assert all(left[1] <= right[0] for left, right in itertools.pairwise(ordered))
    assert tracking.LEASE_TAG not in MlflowClient().get_registered_model("leased").tags


def test_a_held_lease_makes_others_wait_then_give_up_and_an_expired_one_is_taken(store, fast_claims):
    client = MlflowClient()
    client.create_registered_model("held")
    client.set_registered_model_tag("held", tracking.LEASE_TAG, f"Flow/9/join/3|{time.time() + 60:.3f}")
    with (
        pytest.raises(ServiceUnavailableError) as error,
        tracking.promotion_lease("held", "me", ttl_s=30, wait_s=1),
    ):
        pass
    assert "promotion of held is held by Flow/9/join/3" in str(error.value)
    client.set_registered_model_tag("held", tracking.LEASE_TAG, f"Flow/9/join/3|{time.time() - 1:.3f}")
    with tracking.promotion_lease("held", "me", ttl_s=30, wait_s=1) as lease:
        assert client.get_registered_model("held").tags[tracking.LEASE_TAG].startswith(lease.owner + "|")


def test_challenger_never_moves_back_and_a_promotion_is_decided_once(store, model_uri, fast_claims):
    versions = [
        tracking.register_model(model_uri, "order", idempotency_key=f"Flow/{i}/svm", tags=SCHEMA.to_tags())
        for i in range(3)
    ]
    client = MlflowClient()

    def never(uri: str) -> float:
        raise AssertionError("no champion to score")

    first = _gate_named("order", versions[0], 0.80, never)
    newest = _gate_named("order", versions[2], 0.70, lambda uri: 0.80)
    late = _gate_named("order", versions[1], 0.75, lambda uri: 0.80)  # a slower run of an older version
    assert first.promoted and not newest.promoted and not late.promoted
    assert str(client.get_model_version_by_alias("order", "challenger").version) == versions[2]
    again = _gate_named("order", versions[0], 0.80, never)  # a retried join of the first run
    assert again == first
    assert str(client.get_model_version_by_alias("order", "champion").version) == versions[0]
    decision = json.loads(client.get_model_version("order", versions[1]).tags[tracking.DECISION_TAG])
    assert decision["champion_before"] == versions[0] and decision["promoted"] is False


def _gate_named(name: str, version: str, accuracy: float, score_model):
    return tracking.promote_through_gate(
        "svm",
        name,
        _candidate(version, accuracy),
        score_model=score_model,
        min_margin=0.10,
        allow_schema_change=False,
        lease_ttl_s=30,
        lease_wait_s=10,
    )
