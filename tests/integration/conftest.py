"""Session fixtures: a throwaway PostgreSQL, the GCS emulator and MLflow servers on free ports.

Reusable by any integration or flow test:
  postgres_cluster   PostgresServer: the cluster (host, port, superuser, superuser_password)
  postgres_server    PostgresDatabase: the MLflow database made by init.sql
                     (host, port, db, user, password, dsn, uri, env())
  gcs_emulator       GcsEmulator: url, bucket, client(), object_names(prefix)
  mlflow_server      MlflowServer: tracking_uri, settings, env, handle (PostgreSQL + emulated GCS)
  mlflow_auth_server MlflowServer with MLFLOW_AUTH=basic (same database); admin credentials in
                     env["MLFLOW_AUTH_ADMIN_USERNAME"] / env["MLFLOW_AUTH_ADMIN_PASSWORD"]
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.servers import (
    AUTH_ADMIN_PASSWORD,
    AUTH_ADMIN_USERNAME,
    GcsEmulator,
    MlflowServer,
    PostgresDatabase,
    PostgresServer,
    create_database,
    launch_mlflow_server,
    mlflow_server_env,
    start_gcs_emulator,
    start_postgres,
)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server(postgres_cluster: PostgresServer) -> PostgresDatabase:
    return create_database(postgres_cluster, db="mlflowdata", user="mlflowdata")


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    emulator = start_gcs_emulator(tmp_path_factory.mktemp("gcs") / "data")
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def mlflow_server(
    postgres_server: PostgresDatabase, gcs_emulator: GcsEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    env = mlflow_server_env(postgres_server, gcs_emulator, tmp_path_factory.mktemp("mlflow-run"))
    server = launch_mlflow_server(env)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_auth_server(
    postgres_server: PostgresDatabase, gcs_emulator: GcsEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    env = mlflow_server_env(
        postgres_server,
        gcs_emulator,
        tmp_path_factory.mktemp("mlflow-auth-run"),
        artifact_prefix="auth-artifacts",
        extra={
            "MLFLOW_AUTH": "basic",
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "integration-test-secret-key-0123456789",
            "MLFLOW_AUTH_ADMIN_USERNAME": AUTH_ADMIN_USERNAME,
            "MLFLOW_AUTH_ADMIN_PASSWORD": AUTH_ADMIN_PASSWORD,
        },
    )
    server = launch_mlflow_server(env)
    try:
        yield server
    finally:
        server.stop()
