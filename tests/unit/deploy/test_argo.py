"""modules.deploy.argo's own logic: the profile it selects, the bucket it emulates, the objects it writes.

The compile itself runs for real in tests/integration/test_argo_compile.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from modules.deploy.argo import (
    METAFLOW_HOME,
    DeployError,
    _json_document,
    argo_command,
    cron_workflow,
    datastore_bucket,
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
