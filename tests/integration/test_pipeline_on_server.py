"""The whole pipeline against the production-shaped stack: MLflow server on PostgreSQL + GCS."""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg2
import pytest

from modules.data.loading import load_dataset
from tests.flow_runs import TINY_BUDGETS, FlowEnvironment, make_flow_environment

pytestmark = [pytest.mark.integration, pytest.mark.flows, pytest.mark.slow]

# The DNN's Keras files and one scikit-learn family's skops file travel through the server
# (the logistic regression packages its model as the SVM does).
FAMILIES = ("svm", "dnn")
EXPERIMENT = "server-pipeline"
MODEL_PREFIX = "server-eeg"


@pytest.fixture(scope="module")
def server_flows(tmp_path_factory: pytest.TempPathFactory, mlflow_server: Any) -> FlowEnvironment:
    # The flows see only the server's URL: no database password, no GCS credentials.
    return make_flow_environment(
        tmp_path_factory.mktemp("server-flows"),
        tracking_uri=mlflow_server.tracking_uri,
        MLFLOW_EXPERIMENT_NAME=EXPERIMENT,
        MODEL_NAME_PREFIX=MODEL_PREFIX,
        MODEL_FAMILIES=",".join(FAMILIES),
    )


@pytest.fixture(scope="module")
def pipeline_runs(server_flows: FlowEnvironment) -> tuple[Any, Any]:
    tuning = server_flows.run("tuning_flow.py", **TINY_BUDGETS)
    training = server_flows.run("ml_pipeline_flow.py", tuning_flow_run_id=tuning.id)
    return tuning, training


def _query(postgres: Any, sql: str, *params: Any) -> list[tuple]:
    with psycopg2.connect(postgres.dsn) as connection, connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def test_runs_nested_runs_metrics_and_models_are_rows_in_postgres(pipeline_runs, postgres_server):
    tuning, training = pipeline_runs
    parent_id = tuning.data.mlflow_run_id
    rows = _query(
        postgres_server,
        "SELECT r.name, r.status, e.name FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
        "WHERE r.run_uuid = %s",
        parent_id,
    )
    assert rows == [(f"TuningFlow/{tuning.id}", "FINISHED", EXPERIMENT)]
    nested = _query(
        postgres_server,
        "SELECT count(*) FROM tags WHERE key = 'mlflow.parentRunId' AND value = %s",
        parent_id,
    )
    assert nested[0][0] >= len(FAMILIES)  # tune_<family> each (trials nest one level further down)
    metric = _query(
        postgres_server,
        "SELECT value FROM latest_metrics WHERE run_uuid = %s AND key = 'svm_cv_accuracy'",
        parent_id,
    )
    assert metric[0][0] == pytest.approx(tuning.data.best["svm"]["cv_accuracy"])
    assert _query(
        postgres_server, "SELECT value FROM tags WHERE run_uuid = %s AND key = 'split.protocol'", parent_id
    ) == [("grouped",)]
    aliases = dict(
        _query(
            postgres_server,
            "SELECT name, version FROM registered_model_aliases WHERE alias = 'champion' AND name LIKE %s",
            f"{MODEL_PREFIX}-%",
        )
    )
    assert aliases == {
        f"{MODEL_PREFIX}-{family}": int(training.data.models[family]["version"]) for family in FAMILIES
    }


def test_model_files_are_objects_in_the_bucket(pipeline_runs, gcs_emulator):
    names = gcs_emulator.object_names()
    assert any(name.endswith("/MLmodel") for name in names)
    assert any(name.endswith("model.skops") for name in names), "the SVM pipeline"
    assert any(name.endswith("model.keras") for name in names), "the Keras model of the DNN"
    assert any(name.endswith("training_report.html") for name in names)


def test_champions_load_through_the_server_and_predict(pipeline_runs, mlflow_server):
    import mlflow

    _, training = pipeline_runs
    data = training.data
    dataset = load_dataset(data.data_path, data.label_column)
    rows = np.asarray(data.split["test_index"])
    X_test, y_test = dataset.features.iloc[rows], dataset.labels.iloc[rows].to_numpy()
    mlflow.set_tracking_uri(mlflow_server.tracking_uri)
    mlflow.set_registry_uri(mlflow_server.tracking_uri)
    for family in FAMILIES:
        model = mlflow.pyfunc.load_model(f"models:/{MODEL_PREFIX}-{family}@champion")
        predictions = np.asarray(model.predict(X_test)).astype(str)
        accuracy = float(np.mean(predictions == y_test))
        assert accuracy == pytest.approx(data.models[family]["report"]["evaluation"]["accuracy"], abs=1e-9)
