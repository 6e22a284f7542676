"""Run the real flows once per session on a small sample, into a throwaway store and datastore."""

from __future__ import annotations

from typing import Any

import pytest

from tests.flow_runs import TINY_BUDGETS, FlowEnvironment, make_flow_environment

# Deliberately bad settings: the SVM and the logistic regression regularised down to one class,
# the DNN stopped after one epoch at a tiny learning rate.
WORSE_OVERRIDES = (
    '{"svm": {"kernel": "rbf", "C": 0.0001, "gamma": 0.001}, "dnn": {"epochs": 1, "learning_rate": 1e-07}, '
    '"logistic": {"C": 1e-07}}'
)


@pytest.fixture(scope="session")
def flow_env(tmp_path_factory: pytest.TempPathFactory) -> FlowEnvironment:
    # Random rows make a small sample learnable enough that the deliberately worse run is
    # reliably worse; the grouped protocol runs in the integration suite.
    return make_flow_environment(tmp_path_factory.mktemp("flows"), SPLIT_PROTOCOL="random")


@pytest.fixture(scope="session")
def tuning_run(flow_env: FlowEnvironment) -> Any:
    return flow_env.run("tuning_flow.py", **TINY_BUDGETS)


@pytest.fixture(scope="session")
def training_run(flow_env: FlowEnvironment, tuning_run: Any) -> Any:
    return flow_env.run("ml_pipeline_flow.py", tuning_flow_run_id=tuning_run.id)


@pytest.fixture(scope="session")
def worse_training_run(flow_env: FlowEnvironment, tuning_run: Any, training_run: Any) -> Any:
    return flow_env.run(
        "ml_pipeline_flow.py", tuning_flow_run_id=tuning_run.id, params_override=WORSE_OVERRIDES
    )


@pytest.fixture(scope="session")
def mlflow_client(flow_env: FlowEnvironment) -> Any:
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(flow_env.tracking_uri)
    mlflow.set_registry_uri(flow_env.tracking_uri)
    return MlflowClient(flow_env.tracking_uri)
