"""`python -m modules serve` as a real process on a free port, against models registered in a temp store.

Predictions over HTTP equal the in-process ones; schema violations get a 400 naming the
columns; the alias is followed; a tampered model is refused before the port is bound; every
request lands in the prediction log, and a log that cannot be written does not fail a request.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.deployments import PredictionsResponse
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from modules.models.integrity import resolve_model
from modules.models.preprocessing import build_preprocessor
from modules.serving.prediction_log import read_prediction_log
from modules.settings import PROJECT_ROOT, load_settings
from modules.tracking import client as tracking
from tests.integration.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COLUMNS = ["a_a", "b_a", "c_b", "d_b"]
NAME = "served"


@dataclass
class Registry:
    root: Path
    env: dict[str, str]
    rows: pd.DataFrame
    pipelines: dict[str, Pipeline]  # version -> the fitted pipeline


def _fit(flip: bool, seed: int) -> tuple[Pipeline, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(80, 4)), columns=COLUMNS)
    positive = (X["a_a"] > 0) != flip
    y = np.where(positive, "POSITIVE", "NEGATIVE")
    return Pipeline([("preprocess", build_preprocessor()), ("clf", LogisticRegression())]).fit(X, y), X


def _register(pipeline: Pipeline, example: pd.DataFrame, name: str, key: str) -> str:
    with mlflow.start_run():
        uri = tracking.log_sklearn_model(pipeline, example.head(3))
    return tracking.register_model(uri, name, idempotency_key=key, tags={})


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("serving")
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "MLFLOW_ARTIFACT_ROOT": str(root / "artifacts"),
        "MLFLOW_EXPERIMENT_NAME": "serving",
    }
    settings = load_settings(root=root, env=env)
    tracking.connect(settings)
    tracking.ensure_experiment(settings)
    first, X = _fit(flip=False, seed=0)
    second, _ = _fit(flip=True, seed=1)
    v1 = _register(first, X, NAME, "v1")
    v2 = _register(second, X, NAME, "v2")
    MlflowClient().set_registered_model_alias(NAME, "champion", v1)
    rows = pd.DataFrame(np.random.default_rng(7).normal(size=(25, 4)), columns=COLUMNS)
    try:
        yield Registry(root, env, rows, {v1: first, v2: second})
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path

    def stop(self) -> str:
        self.process.terminate()
        try:
            _, err = self.process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return err


def _command(registry: Registry, port: int, name: str, log_path: Path, poll_s: float) -> list[str]:
    return [
        sys.executable, "-m", "modules", "serve", "--model-name", name, "--port", str(port),
        "--poll-s", str(poll_s), "--prediction-log", str(log_path), "--max-body-bytes", "200000",
    ]  # fmt: skip


def _environment(registry: Registry) -> dict[str, str]:
    return {
        **os.environ,
        **registry.env,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


def start_server(
    registry: Registry, *, name: str = NAME, log_path: Path | None = None, poll_s: float = 0
) -> Server:
    port = free_port()
    log_path = log_path or registry.root / f"predictions-{port}.db"
    process = subprocess.Popen(
        _command(registry, port, name, log_path, poll_s),
        cwd=PROJECT_ROOT,
        env=_environment(registry),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}: {server.stop()}")
        try:
            if requests.get(f"{server.url}/ping", timeout=1).status_code == 200:
                return server
        except requests.ConnectionError:
            time.sleep(0.2)
    raise AssertionError(f"the server did not answer /ping: {server.stop()}")


@pytest.fixture(scope="module")
def server(registry: Registry) -> Iterator[Server]:
    started = start_server(registry, poll_s=1)
    yield started
    started.stop()


def _split(frame: pd.DataFrame) -> dict:
    return {"dataframe_split": {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}}


def _champion(registry: Registry) -> str:
    return str(MlflowClient().get_model_version_by_alias(NAME, "champion").version)


def test_http_predictions_equal_in_process_predictions_in_every_body_format(registry, server):
    version = _champion(registry)
    expected = tracking.load_model(f"models:/{NAME}/{version}").predict(registry.rows)
    pipeline = registry.pipelines[version]
    shuffled = registry.rows[COLUMNS[::-1]]  # columns are matched by name, as MLflow does
    bodies = [
        ({"json": _split(registry.rows)}, "split"),
        ({"json": _split(shuffled)}, "split, other column order"),
        ({"json": {"dataframe_records": registry.rows.to_dict(orient="records")}}, "records"),
        ({"data": registry.rows.to_csv(index=False), "headers": {"Content-Type": "text/csv"}}, "csv"),
    ]
    for kwargs, what in bodies:
        response = requests.post(f"{server.url}/invocations", timeout=10, **kwargs)
        assert response.status_code == 200, (what, response.text)
        answer = response.json()
        assert answer["predictions"] == list(np.asarray(expected).ravel()), what
        assert answer["classes"] == list(pipeline.classes_)
        np.testing.assert_allclose(answer["probabilities"], pipeline.predict_proba(registry.rows), rtol=1e-9)
        assert response.headers["X-Model-Version"] == version
        # MLflow's own client reads the answer (the extra keys do not disturb it).
        parsed = PredictionsResponse.from_json(response.text).get_predictions()
        assert parsed.iloc[:, 0].tolist() == answer["predictions"]


def test_version_names_the_model_its_run_and_digest(registry, server):
    answer = requests.get(f"{server.url}/version", timeout=5).json()
    details = MlflowClient().get_model_version(NAME, answer["model_version"])
    assert answer["model_name"] == NAME
    assert answer["run_id"] == details.run_id
    assert answer["artifact_digest"] == details.tags["model.sha256"]
    assert answer["signature_columns"] == len(COLUMNS)
    assert requests.get(f"{server.url}/health", timeout=5).json()["status"] == "ok"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"dataframe_split": {"columns": COLUMNS[:3], "data": [[1.0, 2.0, 3.0]]}}, "missing columns 'd_b'"),
        (
            {"dataframe_split": {"columns": [*COLUMNS, "zz"], "data": [[1.0, 2.0, 3.0, 4.0, 5.0]]}},
            "unexpected columns 'zz'",
        ),
        ({"dataframe_split": {"columns": COLUMNS, "data": [[1.0, "x", 3.0, 4.0]]}}, "non-numeric or missing values in columns 'b_a'"),
        ({"dataframe_records": [{"a_a": 1.0, "b_a": 2.0, "c_b": None, "d_b": 4.0}]}, "columns 'c_b'"),
        ({"instances": [[1.0, 2.0, 3.0, 4.0]]}, "not accepted"),
    ],
)  # fmt: skip
def test_schema_violations_get_a_400_with_one_line(server, body, message):
    response = requests.post(f"{server.url}/invocations", json=body, timeout=5)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert message in answer["message"]
    assert "\n" not in answer["message"] and "Traceback" not in response.text


def test_a_bad_csv_and_an_oversized_body_are_refused(server):
    csv = "a_a,b_a,c_b\n1,2,3\n"
    response = requests.post(
        f"{server.url}/invocations", data=csv, headers={"Content-Type": "text/csv"}, timeout=5
    )
    assert response.status_code == 400 and "missing columns 'd_b'" in response.json()["message"]
    big = {"dataframe_split": {"columns": COLUMNS, "data": [[1.0, 2.0, 3.0, 4.0]] * 20_000}}
    response = requests.post(f"{server.url}/invocations", json=big, timeout=10)
    assert response.status_code == 413
    assert "at most 200000" in response.json()["message"]
    response = requests.post(
        f"{server.url}/invocations", data="x", headers={"Content-Type": "text/plain"}, timeout=5
    )
    assert response.status_code == 415


def test_the_server_follows_the_champion_alias(registry, server):
    client = MlflowClient()
    before = _champion(registry)
    after = next(v for v in registry.pipelines if v != before)
    client.set_registered_model_alias(NAME, "champion", after)
    try:
        reloaded = requests.post(f"{server.url}/reload", timeout=60).json()
        assert reloaded["changed"] is True and reloaded["model_version"] == after
        response = requests.post(f"{server.url}/invocations", json=_split(registry.rows), timeout=5)
        assert response.headers["X-Model-Version"] == after
        assert response.json()["predictions"] == list(registry.pipelines[after].predict(registry.rows))
    finally:
        client.set_registered_model_alias(NAME, "champion", before)
    # Moved back: the poller (every second here) picks it up without a reload.
    deadline = time.monotonic() + 60
    while requests.get(f"{server.url}/version", timeout=5).json()["model_version"] != before:
        assert time.monotonic() < deadline, "the alias move was not picked up by polling"
        time.sleep(0.3)


def test_every_request_lands_in_the_prediction_log(registry, server):
    response = requests.post(
        f"{server.url}/invocations",
        json=_split(registry.rows.head(3)),
        headers={"X-Request-Id": "abc-123"},
        timeout=5,
    )
    assert response.status_code == 200 and response.headers["X-Request-Id"] == "abc-123"
    deadline = time.monotonic() + 30
    while True:
        log = (
            read_prediction_log(server.log_path, decoded=True) if server.log_path.exists() else pd.DataFrame()
        )
        if len(log) and "abc-123" in set(log["request_id"]):
            break
        assert time.monotonic() < deadline, "the request was not logged"
        time.sleep(0.2)
    row = log.set_index("request_id").loc["abc-123"]
    assert row["model_name"] == NAME and row["source"] == "http" and row["n_rows"] == 3
    assert row["labels"] == response.json()["predictions"]
    pd.testing.assert_frame_equal(row["inputs"], registry.rows.head(3))
    assert row["latency_ms"] > 0


def test_a_prediction_log_that_cannot_be_written_does_not_fail_predictions(registry, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the log's folder should be")
    server = start_server(registry, log_path=blocker / "predictions.db")
    try:
        for _ in range(3):
            response = requests.post(
                f"{server.url}/invocations", json=_split(registry.rows.head(2)), timeout=5
            )
            assert response.status_code == 200
        deadline = time.monotonic() + 30
        while (stats := requests.get(f"{server.url}/health", timeout=5).json()["prediction_log"])[
            "failed"
        ] < 3:
            assert time.monotonic() < deadline, stats
            time.sleep(0.2)
        assert stats["written"] == 0 and stats["last_error"]
    finally:
        err = server.stop()
    assert "prediction log" in err


def test_a_tampered_model_is_refused_at_start_with_one_line(registry):
    pipeline, X = _fit(flip=False, seed=3)
    version = _register(pipeline, X, "tampered", "t1")
    MlflowClient().set_registered_model_alias("tampered", "champion", version)
    location = resolve_model(f"models:/tampered/{version}").location
    target = next(Path(location.removeprefix("file://")).rglob("model.skops"))
    target.write_bytes(target.read_bytes() + b"\0")  # someone with write access to the store
    port = free_port()
    result = subprocess.run(
        _command(registry, port, "tampered", registry.root / "t.db", 0),
        cwd=PROJECT_ROOT,
        env=_environment(registry),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: model tampered v1: artifact digest mismatch"), result.stderr
    assert "Traceback" not in result.stderr


def test_make_predict_appends_its_batch_to_the_prediction_log(registry, tmp_path):
    data = tmp_path / "rows.csv"
    registry.rows.to_csv(data, index=False)
    log_path = tmp_path / "log" / "predictions.db"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "modules",
            "predict",
            str(data),
            "--model",
            f"models:/{NAME}@champion",
            "--out",
            str(tmp_path / "out.csv"),
        ],
        cwd=PROJECT_ROOT,
        env={
            **_environment(registry),
            "PREDICTION_LOG_PATH": str(log_path),
            "PREDICTION_LOG_SAMPLE_ROWS": "10",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    row = read_prediction_log(log_path, decoded=True).iloc[-1]
    written = pd.read_csv(tmp_path / "out.csv")
    assert (row["source"], row["model_name"], row["model_version"]) == ("batch", NAME, _champion(registry))
    assert row["n_rows"] == len(registry.rows) and len(row["sampled_rows"]) == 10
    assert row["labels"] == written["predicted_label"].iloc[row["sampled_rows"]].tolist()
    pd.testing.assert_frame_equal(
        row["inputs"], registry.rows.iloc[row["sampled_rows"]].reset_index(drop=True)
    )


def test_requests_during_an_alias_move_are_all_answered(registry, server):
    import threading

    client = MlflowClient()
    before = _champion(registry)
    after = next(v for v in registry.pipelines if v != before)
    answered: list[tuple[int, str]] = []
    stop = threading.Event()

    def keep_asking() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                response = session.post(
                    f"{server.url}/invocations", json=_split(registry.rows.head(2)), timeout=30
                )
                answered.append((response.status_code, response.headers.get("X-Model-Version", "")))

    workers = [threading.Thread(target=keep_asking) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        client.set_registered_model_alias(NAME, "champion", after)
        assert requests.post(f"{server.url}/reload", timeout=60).json()["model_version"] == after
        seen = len(answered)
        deadline = time.monotonic() + 30
        while len(answered) < seen + 10 and time.monotonic() < deadline:  # some answered by the new one
            time.sleep(0.05)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        client.set_registered_model_alias(NAME, "champion", before)
        requests.post(f"{server.url}/reload", timeout=60)
    assert answered and all(status == 200 for status, _ in answered)
    assert {version for _, version in answered} == {before, after}
