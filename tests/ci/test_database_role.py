"""infra/postgres/init.sql makes the MLflow role a plain one, even from a Cloud SQL API user.

A user created through the Cloud SQL API (`gcloud sql users create`, Terraform's
google_sql_user) is a member of `cloudsqlsuperuser` with CREATEROLE and CREATEDB. The test
imitates that on a throwaway PostgreSQL 15, runs init.sql through `make db_init`'s code,
and checks that the role keeps only what MLflow needs: it can log in to its own database
and apply MLflow's migrations, and can no longer create roles, databases or schemas. The
prediction log's writer, made the same way, comes out as plain, and MLflow's role gets no
rights on the log's schema (infra/postgres/prediction_log.sql, run by the same db_init).
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest

from modules.settings import load_settings
from modules.tracking.server import db_upgrade
from tests.integration.servers import PostgresDatabase, PostgresServer, create_database, start_postgres

pytestmark = pytest.mark.integration

DB = "mlflow_role_check"
USER = "mlflow_role_check"
API_PASSWORD = "made-by-the-cloud-sql-api"
LOG_WRITER = "prediction_writer"


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


def run_as_admin(server: PostgresServer, sql: str, database: str = "postgres") -> list[tuple]:
    connection = psycopg2.connect(
        host=server.host,
        port=server.port,
        dbname=database,
        user=server.superuser,
        password=server.superuser_password,
    )
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


@pytest.fixture(scope="module")
def role(cluster: PostgresServer) -> PostgresDatabase:
    """The MLflow role as the Cloud SQL API would have made it, then passed through init.sql."""
    run_as_admin(cluster, "CREATE ROLE cloudsqlsuperuser NOLOGIN CREATEROLE CREATEDB")
    run_as_admin(
        cluster,
        f"CREATE ROLE {USER} LOGIN CREATEROLE CREATEDB PASSWORD '{API_PASSWORD}' IN ROLE cloudsqlsuperuser",
    )
    # The prediction log's writer, made the same way by someone before `make db_init` knew it.
    run_as_admin(
        cluster,
        f"CREATE ROLE {LOG_WRITER} LOGIN CREATEROLE CREATEDB PASSWORD '{API_PASSWORD}' IN ROLE cloudsqlsuperuser",
    )
    return create_database(cluster, db=DB, user=USER)


def attributes(cluster: PostgresServer) -> tuple:
    (row,) = run_as_admin(
        cluster,
        f"SELECT rolsuper, rolcreaterole, rolcreatedb, rolcanlogin, "
        f"pg_has_role('{USER}', 'cloudsqlsuperuser', 'MEMBER'), "
        f"has_database_privilege('{USER}', '{DB}', 'CREATE'), "
        f"has_database_privilege('{USER}', '{DB}', 'CONNECT') FROM pg_roles WHERE rolname = '{USER}'",
    )
    return row


def test_the_role_is_plain_after_init_sql(role: PostgresDatabase) -> None:
    superuser, createrole, createdb, login, admin_member, create_on_db, connect = attributes(role.server)
    assert (superuser, createrole, createdb, admin_member) == (False, False, False, False)
    assert login and connect
    assert not create_on_db, "CREATE on the database would let it add schemas"


def test_the_role_can_apply_mlflows_migrations_but_not_create_roles_or_schemas(
    role: PostgresDatabase,
) -> None:
    output = db_upgrade(load_settings(env=role.env()))
    assert role.password not in output
    with psycopg2.connect(role.dsn) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM alembic_version")
        assert cursor.fetchone() == (1,)
    for statement in ("CREATE ROLE intruder", "CREATE DATABASE another", "CREATE SCHEMA elsewhere"):
        connection = psycopg2.connect(role.dsn)
        connection.autocommit = True
        try:
            with pytest.raises(psycopg2.errors.InsufficientPrivilege), connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()


def test_init_sql_sets_the_rotated_password(role: PostgresDatabase) -> None:
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(host=role.host, port=role.port, dbname=DB, user=USER, password=API_PASSWORD)
    rotated = create_database(role.server, db=DB, user=USER, password="a-rotated-password-0123")
    psycopg2.connect(rotated.dsn).close()


def test_the_prediction_log_writer_is_plain_too(role: PostgresDatabase) -> None:
    (row,) = run_as_admin(
        role.server,
        f"SELECT rolcreaterole, rolcreatedb, pg_has_role('{LOG_WRITER}', 'cloudsqlsuperuser', 'MEMBER'), "
        f"has_database_privilege('{LOG_WRITER}', '{DB}', 'CREATE'), "
        f"has_database_privilege('{LOG_WRITER}', '{DB}', 'TEMPORARY') FROM pg_roles WHERE rolname = '{LOG_WRITER}'",
    )
    assert row == (False, False, False, False, False)


def test_the_mlflow_role_gets_no_rights_on_the_prediction_log(role: PostgresDatabase) -> None:
    (row,) = run_as_admin(
        role.server,
        f"SELECT has_schema_privilege('{USER}', 'predictions', 'USAGE'), "
        f"has_table_privilege('{USER}', 'predictions.predictions', 'SELECT'), "
        f"has_table_privilege('{USER}', 'predictions.predictions', 'INSERT'), "
        f"has_schema_privilege('{LOG_WRITER}', 'predictions', 'CREATE'), "
        f"has_table_privilege('{LOG_WRITER}', 'predictions.predictions', 'INSERT')",
        database=DB,
    )
    assert row == (False, False, False, False, True)
