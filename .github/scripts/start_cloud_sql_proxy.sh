#!/usr/bin/env bash
# Start the Cloud SQL Auth Proxy on 127.0.0.1:$POSTGRES_PORT for the rest of the job and
# wait until it listens. It authenticates with the credentials of the auth step (the
# production service account); the instance admits no other kind of connection.
# Writes pid=PID to $GITHUB_OUTPUT so that a later step can stop it.
set -euo pipefail

if [ -z "${CLOUD_SQL_CONNECTION_NAME:-}" ]; then
  echo "::error::Set the production environment's variable CLOUD_SQL_CONNECTION_NAME (terraform output cloud_sql_connection_name) or its MLFLOW_TRACKING_URI secret."
  exit 1
fi

log="${RUNNER_TEMP:-/tmp}/cloud-sql-proxy.log"
cloud-sql-proxy --address 127.0.0.1 --port "$POSTGRES_PORT" "$CLOUD_SQL_CONNECTION_NAME" > "$log" 2>&1 &
echo "pid=$!" >> "$GITHUB_OUTPUT"

for _ in $(seq 1 30); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$POSTGRES_PORT") 2>/dev/null; then
    echo "Cloud SQL Auth Proxy is listening on 127.0.0.1:$POSTGRES_PORT"
    exit 0
  fi
  sleep 1
done
echo "::error::The Cloud SQL Auth Proxy did not start within 30 s; its log follows."
cat "$log"
exit 1
