-- The production prediction log: its own schema in the MLflow database, its own two roles.
--
-- `make db_init` runs this file right after init.sql, in the same psql session as the admin
-- user, with the variables dbname, dbuser (MLflow's role), writer_password and reader_password
-- (both through psql's standard input, never on a command line; empty = leave the role's
-- password as it is, and a role created without one cannot log in). Running it again is safe:
-- existing objects and rows are kept, the grants are set afresh, given passwords are reset.
--
-- Who may do what (least privilege):
--   prediction_writer  the serving process: INSERT into the two log tables, nothing else (it
--                      cannot read, change, delete or drop the log, nor touch MLflow's tables);
--   prediction_reader  the monitoring job: SELECT on the two log tables;
--   dbuser (MLflow)    no rights on the log; the log's roles have none on MLflow's tables.
-- The tables belong to the admin user that runs this file, so neither role can drop them.

\set ON_ERROR_STOP on
\set writer prediction_writer
\set reader prediction_reader

\connect :"dbname"
SET client_min_messages = warning;  -- no "already exists, skipping" notices on a second run

SELECT format('CREATE ROLE %I NOLOGIN', wanted.role)
FROM (VALUES (:'writer'), (:'reader')) AS wanted(role)
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE pg_roles.rolname = wanted.role)
\gexec

-- Plain roles whatever made them (a Cloud SQL API user is a member of cloudsqlsuperuser).
ALTER ROLE :"writer" WITH NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER ROLE :"reader" WITH NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
SELECT format('REVOKE %I FROM %I', admin.rolname, member.rolname)
FROM pg_auth_members AS m
JOIN pg_roles AS admin ON admin.oid = m.roleid
JOIN pg_roles AS member ON member.oid = m.member
WHERE admin.rolname = 'cloudsqlsuperuser' AND member.rolname IN (:'writer', :'reader')
\gexec

SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'writer', :'writer_password')
WHERE :'writer_password' <> ''
\gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'reader', :'reader_password')
WHERE :'reader_password' <> ''
\gexec

-- Only the roles granted here connect: PUBLIC loses its default CONNECT and TEMPORARY (MLflow's
-- role has its own grant from init.sql).
REVOKE ALL PRIVILEGES ON DATABASE :"dbname" FROM PUBLIC;
REVOKE ALL PRIVILEGES ON DATABASE :"dbname" FROM :"writer", :"reader";
GRANT CONNECT ON DATABASE :"dbname" TO :"writer", :"reader";

CREATE SCHEMA IF NOT EXISTS predictions;

-- The same columns as the local SQLite log (modules/serving/prediction_log.py).
CREATE TABLE IF NOT EXISTS predictions.predictions (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    logged_at TIMESTAMPTZ NOT NULL,
    source TEXT NOT NULL,              -- http, batch (make predict) or recording (predict-recording)
    request_id TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT,
    n_rows INTEGER NOT NULL,           -- rows in the request or batch
    sampled_rows TEXT NOT NULL,        -- JSON list: which of them are kept below
    input_columns TEXT NOT NULL,       -- sha256 of the column names, kept once in input_columns
    inputs BYTEA NOT NULL,             -- the kept rows, float64, as a .npy file (numpy.load)
    labels TEXT NOT NULL,              -- JSON list, one per kept row
    probabilities TEXT,                -- JSON list of lists, columns in `classes` order
    classes TEXT,
    latency_ms DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS predictions.input_columns (
    digest TEXT PRIMARY KEY,
    columns TEXT NOT NULL              -- JSON list of the column names, in the order of `inputs`
);
-- A monitoring window reads the newest rows of one model.
CREATE INDEX IF NOT EXISTS predictions_model_name_id ON predictions.predictions (model_name, id);

-- Grants set afresh on every run: whatever was granted by hand before is taken back.
REVOKE ALL PRIVILEGES ON SCHEMA predictions FROM PUBLIC, :"dbuser", :"writer", :"reader";
REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA predictions FROM PUBLIC, :"dbuser", :"writer", :"reader";
REVOKE ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA predictions FROM PUBLIC, :"dbuser", :"writer", :"reader";
GRANT USAGE ON SCHEMA predictions TO :"writer", :"reader";
-- An identity column needs no grant on its sequence; the writer's ON CONFLICT DO NOTHING has
-- no conflict target, so it needs no SELECT either.
GRANT INSERT ON predictions.predictions, predictions.input_columns TO :"writer";
GRANT SELECT ON predictions.predictions, predictions.input_columns TO :"reader";
