"""Run the real flows once per session on a small sample, into a throwaway store and datastore."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FLOWS = PROJECT_ROOT / "metaflows_flow"

# A small sample: 18 short recordings, a few hundred rows.
SAMPLE_DURATION_S = 20
TINY_BUDGETS = {"svm_max_candidates": 4, "dnn_max_trials": 2, "dnn_max_epochs": 4}
# Deliberately bad settings: the SVM barely regularised away from the majority class, the DNN
# stopped after one epoch at a tiny learning rate.
WORSE_OVERRIDES = (
    '{"svm": {"kernel": "rbf", "C": 0.0001, "gamma": 0.001}, "dnn": {"epochs": 1, "learning_rate": 1e-07}}'
)


@dataclass
class FlowEnvironment:
    """Where one test session's flows keep their data, runs, models and reports."""

    root: Path
    data_path: Path
    tracking_uri: str
    env: dict[str, str]

    def runner(self, flow_file: str, env: dict[str, str] | None = None) -> Any:
        from metaflow import Runner

        return Runner(str(FLOWS / flow_file), env=env or self.env, cwd=str(self.root), show_output=False)


@pytest.fixture(scope="session")
def flow_env(tmp_path_factory: pytest.TempPathFactory) -> FlowEnvironment:
    from modules.sample_data import build_sample

    root = tmp_path_factory.mktemp("flows")
    data_path = root / "emotions.csv"
    build_sample(data_path, seed=7, duration_s=SAMPLE_DURATION_S)
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    env = {
        "METAFLOW_USER": os.environ.get("METAFLOW_USER", "tests"),
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(root),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_ARTIFACT_ROOT": str(root / "artifacts"),
        "MLFLOW_EXPERIMENT_NAME": "flow-tests",
        "REPORTS_DIR": str(root / "reports"),
        "DATA_PATH": str(data_path),
        "CV_FOLDS": "3",
        # Random rows make a small sample learnable enough that the deliberately worse run is
        # reliably worse; the grouped protocol runs in the integration suite.
        "SPLIT_PROTOCOL": "random",
        "SVM_N_JOBS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    return FlowEnvironment(root=root, data_path=data_path, tracking_uri=tracking_uri, env=env)


@pytest.fixture(scope="session")
def tuning_run(flow_env: FlowEnvironment) -> Any:
    with flow_env.runner("tuning_flow.py").run(**TINY_BUDGETS) as running:
        assert running.status == "successful", running.stdout + running.stderr
        return running.run


@pytest.fixture(scope="session")
def training_run(flow_env: FlowEnvironment, tuning_run: Any) -> Any:
    with flow_env.runner("ml_pipeline_flow.py").run(tuning_flow_run_id=tuning_run.id) as running:
        assert running.status == "successful", running.stdout + running.stderr
        return running.run


@pytest.fixture(scope="session")
def worse_training_run(flow_env: FlowEnvironment, tuning_run: Any, training_run: Any) -> Any:
    with flow_env.runner("ml_pipeline_flow.py").run(
        tuning_flow_run_id=tuning_run.id, params_override=WORSE_OVERRIDES
    ) as running:
        assert running.status == "successful", running.stdout + running.stderr
        return running.run


@pytest.fixture(scope="session")
def mlflow_client(flow_env: FlowEnvironment) -> Any:
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(flow_env.tracking_uri)
    mlflow.set_registry_uri(flow_env.tracking_uri)
    return MlflowClient(flow_env.tracking_uri)
