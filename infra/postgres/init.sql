-- Create the MLflow database and a plain role with only the grants MLflow needs (PostgreSQL 15+).
--
-- Nothing is hard-coded: pass the names and the password as psql variables, as the admin user
-- (`postgres` on Cloud SQL), e.g.
--
--   PGPASSWORD=... psql -h HOST -p 5432 -U postgres -d postgres -v ON_ERROR_STOP=1 \
--       -v dbname=mlflowdata -v dbuser=mlflowdata -v dbpassword=... -f infra/postgres/init.sql
--
-- `make db_init` runs this file with the POSTGRES_* settings and feeds the password through
-- psql's standard input, so it never shows up in `ps`. Running it again is safe: existing
-- objects are kept and the role's password is reset to the given one (that is how the
-- password is rotated).
--
-- Why SQL and not `gcloud sql users create` or Terraform's google_sql_user: a user created
-- through the Cloud SQL API becomes a member of `cloudsqlsuperuser`, with CREATEROLE and
-- CREATEDB and access to every database of the instance. The role made here can log in to
-- its own database, create MLflow's tables in its `public` schema, and nothing else.

\set ON_ERROR_STOP on

-- CREATE DATABASE has no IF NOT EXISTS and cannot run in a DO block: build it only when missing.
SELECT format('CREATE DATABASE %I', :'dbname')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'dbname')
\gexec

SELECT format('CREATE ROLE %I', :'dbuser')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'dbuser')
\gexec

-- Set on every run, so a rotated POSTGRES_PASSWORD takes effect. A role made earlier through
-- the Cloud SQL API (or by an older version of this file) loses its extra attributes here.
ALTER ROLE :"dbuser" WITH LOGIN NOCREATEDB NOCREATEROLE PASSWORD :'dbpassword';

-- ... and its membership of Cloud SQL's admin role, where that role exists.
SELECT format('REVOKE %I FROM %I', admin.rolname, member.rolname)
FROM pg_auth_members AS m
JOIN pg_roles AS admin ON admin.oid = m.roleid
JOIN pg_roles AS member ON member.oid = m.member
WHERE admin.rolname = 'cloudsqlsuperuser' AND member.rolname = :'dbuser'
\gexec

-- Log in and use temporary tables; no CREATE on the database (no new schemas).
REVOKE ALL PRIVILEGES ON DATABASE :"dbname" FROM :"dbuser";
GRANT CONNECT, TEMPORARY ON DATABASE :"dbname" TO :"dbuser";

-- The remaining grants are per database: run them inside the MLflow database.
\connect :"dbname"

-- MLflow's migrations create, alter and drop their tables in `public`: the role owns that
-- schema of its own database (PostgreSQL 15 no longer lets every user create objects there).
ALTER SCHEMA public OWNER TO :"dbuser";
GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA public TO :"dbuser";
GRANT ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA public TO :"dbuser";
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO :"dbuser";
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO :"dbuser";
