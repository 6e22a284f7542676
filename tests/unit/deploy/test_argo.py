"""modules.deploy.argo's own logic: the profile it selects, the bucket it emulates, the objects it writes.

The compile itself runs for real in tests/integration/test_argo_compile.py.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from modules.deploy.argo import (
    METAFLOW_HOME,
    DeployError,
    _json_document,
    argo_command,
    check_metadata_service,
    cron_workflow,
    datastore_bucket,
    metadata_service_url,
    profile_environment,
)

TEMPLATE = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "WorkflowTemplate",
    "metadata": {"name": "tuningflow", "namespace": "operational-ml", "annotations": {}},
}


def test_the_gke_profile_is_selected_unless_another_is() -> None:
    env = profile_environment({"USER": "root"})
    assert env["METAFLOW_PROFILE"] == "gke" and env["METAFLOW_HOME"] == str(METAFLOW_HOME)
    assert env["METAFLOW_USER"] == "operational-ml", "Metaflow refuses root"
    mine = profile_environment({"METAFLOW_PROFILE": "mine", "METAFLOW_HOME": "/etc/mf", "USER": "ada"})
    assert (mine["METAFLOW_PROFILE"], mine["METAFLOW_HOME"], mine["METAFLOW_USER"]) == (
        "mine",
        "/etc/mf",
        "ada",
    )


def test_the_emulated_bucket_is_the_profiles(tmp_path: Path) -> None:
    assert datastore_bucket(profile_environment({})) == "my-mlops-project-metaflow"
    assert datastore_bucket({"METAFLOW_DATASTORE_SYSROOT_GS": "gs://other/prefix/x"}) == "other"
    (tmp_path / "config_s3.json").write_text(json.dumps({"METAFLOW_DATASTORE_SYSROOT_S3": "s3://b"}))
    with pytest.raises(DeployError, match=r"METAFLOW_DATASTORE_SYSROOT_GS=None: expected gs://BUCKET/PREFIX"):
        datastore_bucket({"METAFLOW_PROFILE": "s3", "METAFLOW_HOME": str(tmp_path)})
    with pytest.raises(DeployError, match="'gs://'"):
        datastore_bucket({"METAFLOW_DATASTORE_SYSROOT_GS": "gs://"})


def test_the_compile_is_metaflows_own_command(tmp_path: Path) -> None:
    flow = tmp_path / "flow.py"
    assert argo_command(flow, dry_run=True) == [
        sys.executable,
        str(flow),
        "--no-pylint",
        "--datastore=gs",
        "--with",
        "kubernetes",
        "argo-workflows",
        "create",
        "--only-json",
    ]
    assert "--only-json" not in argo_command(flow, dry_run=False)


def test_the_template_is_read_after_metaflows_log_lines() -> None:
    assert _json_document("Deploying ...\n" + json.dumps(TEMPLATE)) == TEMPLATE
    with pytest.raises(DeployError, match="expected a WorkflowTemplate"):
        _json_document(json.dumps({"kind": "Workflow"}))
    with pytest.raises(DeployError, match="expected a WorkflowTemplate"):
        _json_document("no JSON at all")


def test_the_cron_workflow_starts_the_template_weekly_one_run_at_a_time() -> None:
    cron = cron_workflow(TEMPLATE)
    assert cron["kind"] == "CronWorkflow"
    assert cron["metadata"]["name"] == "tuningflow-weekly"
    assert cron["metadata"]["namespace"] == "operational-ml"
    assert cron["spec"]["schedule"] == "17 4 * * 1" and cron["spec"]["timezone"] == "UTC"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["workflowSpec"] == {"workflowTemplateRef": {"name": "tuningflow"}}
    assert cron_workflow(TEMPLATE, "0 6 * * 0")["spec"]["schedule"] == "0 6 * * 0"


# ------------------------------------------------------------------ the metadata service


@pytest.fixture
def ping_server() -> Iterator[str]:
    """A stand-in metadata service on a free 127.0.0.1 port that answers GET /ping like the real one."""

    class Ping(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 200 if self.path == "/ping" else 404
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b"pong" if status == 200 else b"")

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Ping)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_gke_profile_records_runs_in_the_clusters_metadata_service() -> None:
    env = profile_environment({})
    assert metadata_service_url(env) == "http://metaflow-metadata.operational-ml.svc:8080"
    assert metadata_service_url({**env, "METAFLOW_DEFAULT_METADATA": "local"}) is None
    assert metadata_service_url({**env, "METAFLOW_SERVICE_URL": "http://127.0.0.1:8080/"}) == (
        "http://127.0.0.1:8080"
    ), "the deployer's port-forward wins over the profile, as in Metaflow"


def test_a_service_profile_without_an_address_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "config_nourl.json").write_text(json.dumps({"METAFLOW_DEFAULT_METADATA": "service"}))
    with pytest.raises(
        DeployError, match="METAFLOW_DEFAULT_METADATA=service but METAFLOW_SERVICE_URL is not set"
    ):
        metadata_service_url({"METAFLOW_PROFILE": "nourl", "METAFLOW_HOME": str(tmp_path)})


def test_a_deployment_goes_ahead_when_the_metadata_service_answers(ping_server: str) -> None:
    check_metadata_service({**profile_environment({}), "METAFLOW_SERVICE_URL": ping_server})
    check_metadata_service({**profile_environment({}), "METAFLOW_DEFAULT_METADATA": "local"})


def test_an_unreachable_metadata_service_stops_the_deployment_and_says_how_to_reach_it() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(DeployError) as raised:
        check_metadata_service({**profile_environment({}), "METAFLOW_SERVICE_URL": url}, timeout_s=2)
    message = str(raised.value)
    assert message.startswith(f"METAFLOW_SERVICE_URL={url}: the Metaflow metadata service does not answer")
    # The hint names the Service of the address the pods use, not the forwarded one.
    assert "`kubectl -n operational-ml port-forward svc/metaflow-metadata 8080:8080`" in message
    assert "\n" not in message


def test_the_port_forward_hint_follows_another_profiles_service(tmp_path: Path) -> None:
    (tmp_path / "config_other.json").write_text(
        json.dumps(
            {
                "METAFLOW_DEFAULT_METADATA": "service",
                "METAFLOW_SERVICE_URL": f"http://127.0.0.1:{closed_port()}",
                "METAFLOW_SERVICE_INTERNAL_URL": "http://mf-meta.ml-team.svc.cluster.local:8080",
                "METAFLOW_KUBERNETES_NAMESPACE": "ml-team",
            }
        )
    )
    env = {"METAFLOW_PROFILE": "other", "METAFLOW_HOME": str(tmp_path)}
    with pytest.raises(DeployError, match=r"`kubectl -n ml-team port-forward svc/mf-meta 8080:8080`"):
        check_metadata_service(env, timeout_s=2)
