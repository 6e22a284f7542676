-- Create the MLflow database, its owner-to-be and the grants MLflow needs (PostgreSQL 15+).
--
-- Nothing is hard-coded: pass the names and the password as psql variables, as the admin user
-- (`postgres` on Cloud SQL), e.g.
--
--   PGPASSWORD=... psql -h HOST -p 5432 -U postgres -d postgres -v ON_ERROR_STOP=1 \
--       -v dbname=mlflowdata -v dbuser=mlflowdata -v dbpassword=... -f infra/postgres/init.sql
--
-- `make db_init` runs this file with the POSTGRES_* settings and feeds the password through
-- psql's standard input, so it never shows up in `ps`. Running it again is safe: existing
-- objects are kept and the user's password is reset to the given one.

\set ON_ERROR_STOP on

-- CREATE DATABASE has no IF NOT EXISTS and cannot run in a DO block: build it only when missing.
SELECT format('CREATE DATABASE %I', :'dbname')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'dbname')
\gexec

SELECT format('CREATE USER %I', :'dbuser')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'dbuser')
\gexec

-- Set on every run, so a rotated POSTGRES_PASSWORD takes effect.
ALTER USER :"dbuser" WITH LOGIN PASSWORD :'dbpassword';

GRANT ALL PRIVILEGES ON DATABASE :"dbname" TO :"dbuser";

-- The remaining grants are per database: run them inside the MLflow database.
\connect :"dbname"

GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA public TO :"dbuser";
GRANT ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA public TO :"dbuser";
-- PostgreSQL 15 no longer lets every user create objects in `public`: MLflow's migrations need it.
GRANT ALL PRIVILEGES ON SCHEMA public TO :"dbuser";
ALTER SCHEMA public OWNER TO :"dbuser";
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO :"dbuser";
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO :"dbuser";
