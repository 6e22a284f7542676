"""Benchmark: the scoring server over HTTP against the same model's in-process `predict`, same run.

Trains on the offline sample (2548 columns) in a temporary MLflow store, registers the model as
`champion` with its digest, starts `python -m modules.serving` on a free loopback port, then
measures with one keep-alive HTTP client (requests.Session):

- single-row latency (`dataframe_split` JSON and CSV), p50 / p99 over `--requests` calls, beside
  the in-process `model.predict` of the same row (the bare model and MLflow's `pyfunc.predict`);
- 100-row batch throughput (rows/s) over HTTP, and its ratio to the in-process one.

Targets for the SVM: single-row p50 <= 10 ms and p99 <= 30 ms; batch throughput >= 0.8x
in-process. `--family dnn` measures the DNN the same way (figures only).

    python bench/serve_latency.py [--family svm|dnn] [--requests 300] [--strict]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from modules.data.sample import build_sample  # noqa: E402
from modules.models.dnn import train_dnn  # noqa: E402
from modules.models.svm import train_svm  # noqa: E402
from modules.models.training import prepare_data  # noqa: E402
from modules.serving.app import load_served_model  # noqa: E402
from modules.settings import load_settings  # noqa: E402
from modules.tracking import client as tracking  # noqa: E402

P50_TARGET_MS = 10.0
P99_TARGET_MS = 30.0
THROUGHPUT_TARGET = 0.8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def register_champion(folder: Path, family: str) -> tuple[dict[str, str], str, pd.DataFrame]:
    """Train `family` on the offline sample in a temp store; return (env, model name, test rows)."""
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        "MLFLOW_ARTIFACT_ROOT": str(folder / "artifacts"),
        "MLFLOW_EXPERIMENT_NAME": "serve-bench",
    }
    settings = load_settings(root=folder, env=env)
    tracking.connect(settings)
    tracking.ensure_experiment(settings)
    data_path = folder / "emotions.csv"
    print(f"building the offline sample in {data_path} ...", flush=True)
    build_sample(data_path, seed=42)
    data = prepare_data(data_path, "label", protocol="auto", test_size=0.2, cv_folds_count=3, seed=42)
    import mlflow
    from mlflow.tracking import MlflowClient

    name = f"bench-{family}"
    print(
        f"training the {family} on {len(data.X_train)} rows x {data.X_train.shape[1]} columns ...", flush=True
    )
    with mlflow.start_run():
        if family == "svm":
            trained = train_svm(data, {"kernel": "linear", "C": 1.0}, pca_variance=None, seed=42)
            uri = tracking.log_sklearn_model(trained.model, data.X_test.head(5))
        else:
            params = {"layers": 2, "units_0": 128, "units_1": 64, "learning_rate": 1e-3, "dropout": 0.0}
            trained = train_dnn(data, params, epochs=5, pca_variance=None, seed=42)
            uri = tracking.log_dnn_model(
                trained.preprocessor, trained.model, data.classes, data.X_test.head(5)
            )
    version = tracking.register_model(uri, name, idempotency_key="bench", tags={})
    MlflowClient().set_registered_model_alias(name, "champion", version)
    return env, name, data.X_test.reset_index(drop=True)


def start_server(env: dict[str, str], name: str, folder: Path, *, log: bool) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "modules.serving",
        "--model-name",
        name,
        "--port",
        str(port),
        "--poll-s",
        "0",
    ]
    command += ["--prediction-log", str(folder / "predictions.db") if log else "off"]
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env, "NO_PROXY": "127.0.0.1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            if requests.get(f"{url}/ping", timeout=1).ok:
                return process, url
        except requests.ConnectionError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit("the server did not answer /ping")


def latencies_ms(call: Callable[[], object], count: int, warmup: int = 20) -> np.ndarray:
    for _ in range(warmup):
        call()
    times = np.empty(count)
    for i in range(count):
        started = time.perf_counter()
        call()
        times[i] = (time.perf_counter() - started) * 1000.0
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("svm", "dnn"), default="svm")
    parser.add_argument(
        "--requests", type=int, default=300, help="single-row requests timed (default: %(default)s)"
    )
    parser.add_argument(
        "--batches", type=int, default=30, help="100-row batches timed (default: %(default)s)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when an SVM target is missed")
    parser.add_argument("--no-log", action="store_true", help="serve without the prediction log (its cost)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        folder = Path(tmp)
        env, name, rows = register_champion(folder, args.family)
        served = load_served_model(name, "1")  # the same digest-checked load the server does
        process, url = start_server(env, name, folder, log=not args.no_log)
        try:
            session = requests.Session()
            one = rows.iloc[[0]]
            batch = pd.concat([rows] * (100 // len(rows) + 1)).head(100).reset_index(drop=True)
            # Bodies encoded once, as a client holding serialised rows sends them.
            one_json = json.dumps(
                {"dataframe_split": {"columns": list(one.columns), "data": one.to_numpy().tolist()}}
            )
            one_csv = one.to_csv(index=False)
            batch_json = json.dumps(
                {"dataframe_split": {"columns": list(batch.columns), "data": batch.to_numpy().tolist()}}
            )
            as_json = {"Content-Type": "application/json"}

            def post_json(body: str) -> None:
                response = session.post(f"{url}/invocations", data=body, headers=as_json, timeout=30)
                response.raise_for_status()

            def post_csv() -> None:
                response = session.post(
                    f"{url}/invocations", data=one_csv, headers={"Content-Type": "text/csv"}, timeout=30
                )
                response.raise_for_status()

            answer = session.post(f"{url}/invocations", data=batch_json, headers=as_json, timeout=30).json()
            answer = answer["predictions"]
            same = answer == [str(v) for v in np.asarray(served.pyfunc.predict(batch)).ravel()]
            figures = {
                "HTTP JSON, 1 row": latencies_ms(lambda: post_json(one_json), args.requests),
                "HTTP CSV, 1 row": latencies_ms(post_csv, args.requests),
                "in-process served model, 1 row": latencies_ms(lambda: served.score(one), args.requests),
                "in-process pyfunc.predict, 1 row": latencies_ms(
                    lambda: served.pyfunc.predict(one), 50, warmup=3
                ),
            }
            http_batch = latencies_ms(lambda: post_json(batch_json), args.batches, warmup=3)
            local_batch = latencies_ms(lambda: served.score(batch), args.batches, warmup=3)
            pyfunc_batch = latencies_ms(lambda: served.pyfunc.predict(batch), 10, warmup=1)
        finally:
            process.terminate()
            process.wait(timeout=30)

    print(f"\n{args.family.upper()} at {rows.shape[1]} columns; HTTP predictions equal in-process: {same}")
    print(f"{'single row':34s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for label, times in figures.items():
        print(f"{label:34s} {np.percentile(times, 50):8.2f} {np.percentile(times, 99):8.2f}")
    http_rps = 100 / (np.median(http_batch) / 1000)
    local_rps = 100 / (np.median(local_batch) / 1000)
    pyfunc_rps = 100 / (np.median(pyfunc_batch) / 1000)
    print(f"\n{'100-row batch':34s} {'p50 ms':>8s} {'rows/s':>10s}")
    print(f"{'HTTP JSON':34s} {np.median(http_batch):8.2f} {http_rps:10.0f}")
    print(f"{'in-process served model':34s} {np.median(local_batch):8.2f} {local_rps:10.0f}")
    print(f"{'in-process pyfunc.predict':34s} {np.median(pyfunc_batch):8.2f} {pyfunc_rps:10.0f}")
    ratio = http_rps / local_rps
    ratio_pyfunc = http_rps / pyfunc_rps
    print(
        f"\nbatch throughput HTTP / in-process: {ratio:.2f}x (served model), {ratio_pyfunc:.2f}x (pyfunc.predict)"
    )
    p50 = np.percentile(figures["HTTP JSON, 1 row"], 50)
    p99 = np.percentile(figures["HTTP JSON, 1 row"], 99)
    met = p50 <= P50_TARGET_MS and p99 <= P99_TARGET_MS and ratio_pyfunc >= THROUGHPUT_TARGET
    if args.family == "svm":
        print(
            f"targets (p50 <= {P50_TARGET_MS:g} ms, p99 <= {P99_TARGET_MS:g} ms, "
            f">= {THROUGHPUT_TARGET:g}x in-process pyfunc.predict): {'met' if met else 'MISSED'}"
        )
    return 1 if args.strict and args.family == "svm" and not (met and same) else 0


if __name__ == "__main__":
    raise SystemExit(main())
