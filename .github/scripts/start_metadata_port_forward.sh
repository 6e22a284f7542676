#!/usr/bin/env bash
# Forward 127.0.0.1:$LOCAL_PORT to Metaflow's metadata service in the cluster for the rest of the
# job, and wait until it answers /ping. The argo job runs outside the cluster, where the profile's
# address (SERVICE.NAMESPACE.svc) does not resolve, and `make deploy-argo` asks the service its
# version. The service, its namespace and its port are read from the profile's
# METAFLOW_SERVICE_INTERNAL_URL (http://SERVICE.NAMESPACE.svc:PORT), the address the step pods keep.
# kubectl must already point at the cluster (gcloud container clusters get-credentials).
# Writes pid=PID to $GITHUB_OUTPUT as soon as kubectl starts, so that a later step can stop it
# even when this one fails. TRIES (default 30) bounds the wait: one try a second.
set -euo pipefail

: "${LOCAL_PORT:?set LOCAL_PORT, the port on 127.0.0.1 that METAFLOW_SERVICE_URL names}"
profile="${METAFLOW_HOME:?}/config_${METAFLOW_PROFILE:?}.json"
tries="${TRIES:-30}"

target="$(python3 - "$profile" <<'EOF'
import json
import sys
import urllib.parse

path = sys.argv[1]
try:
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
except (OSError, ValueError) as exc:
    sys.exit(f"::error title=No Metaflow profile::{path}: {exc}")
url = config.get("METAFLOW_SERVICE_INTERNAL_URL") or config.get("METAFLOW_SERVICE_URL") or ""
parts = urllib.parse.urlsplit(url)
labels = (parts.hostname or "").split(".")
if len(labels) < 3 or labels[2] != "svc" or parts.port is None:
    sys.exit(
        f"::error title=No metadata service address::{path}: METAFLOW_SERVICE_INTERNAL_URL={url!r}: "
        "expected http://SERVICE.NAMESPACE.svc:PORT"
    )
print(labels[0], labels[1], parts.port)
EOF
)"
read -r service namespace remote_port <<< "$target"

log="${RUNNER_TEMP:-/tmp}/metadata-port-forward.log"
url="http://127.0.0.1:$LOCAL_PORT"
# Bound to 127.0.0.1 only: nothing else on the runner's network reaches the service through it.
kubectl -n "$namespace" port-forward --address 127.0.0.1 "svc/$service" "$LOCAL_PORT:$remote_port" \
  < /dev/null > "$log" 2>&1 &
pid=$!
echo "pid=$pid" >> "$GITHUB_OUTPUT"

for _ in $(seq 1 "$tries"); do
  if curl --silent --fail --noproxy '*' --max-time 5 "$url/ping" > /dev/null; then
    echo "The metadata service answers at $url (kubectl -n $namespace port-forward svc/$service, pid $pid)."
    exit 0
  fi
  if ! kill -0 "$pid" 2> /dev/null; then
    echo "::error title=Port-forward failed::kubectl -n $namespace port-forward svc/$service $LOCAL_PORT:$remote_port exited (the argo-deployer Role, the pod's state?); its log follows."
    cat "$log"
    exit 1
  fi
  sleep 1
done
echo "::error title=Metadata service unreachable::$url/ping did not answer in $tries tries through kubectl -n $namespace port-forward svc/$service (is deployment/$service ready?); its log follows."
cat "$log"
exit 1
