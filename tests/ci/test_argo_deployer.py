"""infra/terraform/argo_deployer.tf: the identity of the pipeline workflow's `argo` job.

Parsed with python-hcl2 as the other Terraform tests: off with enable_gke = false, admitted only
for production tokens of main, and granted no more than deploying the flows' WorkflowTemplates,
starting Workflows and port-forwarding to the metadata service in their one namespace needs; checkov
judges the file with the cluster enabled (the whole folder is scanned in
tests/ci/test_kubernetes_infra.py too).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.ci.test_kubernetes_infra import AUTHORITATIVE, TERRAFORM, all_resources, parse
from tests.ci.test_terraform import REPO, checkov, named, one, resources

DEPLOYER = "google_service_account.argo_deployer[0]"
DEPLOYER_MEMBER = "serviceAccount:${google_service_account.argo_deployer[0].email}"
NAMESPACE = "${kubernetes_namespace_v1.metaflow[0].metadata[0].name}"
# What Metaflow's Argo client does when it deploys and triggers (metaflow/plugins/argo/argo_client.py).
ALLOWED_VERBS = {
    ("workflowtemplates", "get"),
    ("workflowtemplates", "create"),
    ("workflowtemplates", "update"),
    ("cronworkflows", "get"),
    ("cronworkflows", "create"),
    ("cronworkflows", "update"),
    ("sensors", "get"),
    ("sensors", "create"),
    ("sensors", "update"),
    ("sensors", "delete"),
    ("workflows", "create"),
}
# `kubectl port-forward svc/metaflow-metadata` (the argo job reaches the metadata service through it):
# the Service by its name, the pod it selects (generated name: no resource_names), its portforward
# subresource over SPDY (create) or WebSockets (get, and create from Kubernetes 1.35).
PORT_FORWARD_RULES = [
    {
        "api_groups": [""],
        "resources": ["services"],
        "resource_names": ["${var.metaflow_metadata_service_name}"],
        "verbs": ["get"],
    },
    {"api_groups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
    {"api_groups": [""], "resources": ["pods/portforward"], "verbs": ["get", "create"]},
]


@pytest.fixture(scope="module")
def deployer() -> dict[str, list]:
    return parse("argo_deployer.tf")


def role_problems(rules: list[dict]) -> list[str]:
    """What in a Role's rules goes beyond deploying and starting the flows on Argo and the port-forward."""
    problems = []
    for rule in rules:
        if rule in PORT_FORWARD_RULES:
            continue
        if rule.get("api_groups") != ["argoproj.io"]:
            problems.append(f"api_groups {rule.get('api_groups')}: only argoproj.io")
        for resource in rule.get("resources", []):
            for verb in rule.get("verbs", []):
                if (resource, verb) not in ALLOWED_VERBS:
                    problems.append(f"{verb} {resource}")
        if rule.get("resource_names") is None and rule.get("non_resource_urls"):
            problems.append("non-resource URLs")
    return problems


def test_every_resource_is_off_until_enable_gke(deployer: dict) -> None:
    everything = all_resources(deployer)
    assert len(everything) == 7, sorted(everything)
    for address, body in everything.items():
        assert body.get("count") == "${local.gke}", f"{address} is created with enable_gke = false"
    assert not [a for a in everything if AUTHORITATIVE.match(a.split(".")[0])], "authoritative IAM"
    assert not resources(deployer, "google_service_account_key"), "no key: Workload Identity only"


def test_only_production_tokens_of_main_may_act_as_the_deployer(deployer: dict) -> None:
    (binding,) = resources(deployer, "google_service_account_iam_member").values()
    assert binding["service_account_id"] == "${google_service_account.argo_deployer[0].name}"
    assert binding["role"] == "roles/iam.workloadIdentityUser"
    # The pipeline's subject through the existing provider (main.tf), never a principalSet.
    assert binding["member"] == (
        "principal://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}"
        "/subject/${local.production_subject}"
    )
    assert "principalSet" not in str(deployer["resource"])


def test_the_google_grants_are_the_cluster_viewer_and_the_datastore_only(deployer: dict) -> None:
    (project_grant,) = resources(deployer, "google_project_iam_member").values()
    assert project_grant["role"] == "roles/container.clusterViewer"
    assert project_grant["member"] == DEPLOYER_MEMBER
    buckets = {
        (m["bucket"], m["role"]) for m in resources(deployer, "google_storage_bucket_iam_member").values()
    }
    assert buckets == {
        ("${google_storage_bucket.metaflow_datastore[0].name}", "roles/storage.objectViewer"),
        ("${google_storage_bucket.metaflow_datastore[0].name}", "roles/storage.objectCreator"),
    }, "add new objects to the datastore, never replace or delete one"
    assert all(
        m["member"] == DEPLOYER_MEMBER
        for m in resources(deployer, "google_storage_bucket_iam_member").values()
    )
    text = str(deployer["resource"])
    for broad in (
        "roles/container.developer",
        "roles/container.admin",
        "roles/container.viewer",
        "roles/owner",
        "roles/editor",
        "objectUser",
        "objectAdmin",
        "serviceAccountUser",
        "serviceAccountTokenCreator",
        "artifacts.name",
        "cloudsql",
    ):
        assert broad not in text, broad


def test_kubernetes_rbac_is_one_role_in_the_flows_namespace_for_the_argo_objects(deployer: dict) -> None:
    assert not resources(deployer, "kubernetes_cluster_role_v1")
    assert not resources(deployer, "kubernetes_cluster_role_binding_v1")
    (role,) = resources(deployer, "kubernetes_role_v1").values()
    assert one(role["metadata"])["namespace"] == NAMESPACE
    rules = role["rule"]
    assert role_problems(rules) == []
    granted = {(r, v) for rule in rules for r in rule["resources"] for v in rule["verbs"]}
    assert ("workflows", "create") in granted and ("workflowtemplates", "create") in granted
    (binding,) = resources(deployer, "kubernetes_role_binding_v1").values()
    assert one(binding["metadata"])["namespace"] == NAMESPACE
    assert one(binding["role_ref"]) == {
        "api_group": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "${kubernetes_role_v1.argo_deployer[0].metadata[0].name}",
    }
    assert binding["subject"] == [
        {
            "api_group": "rbac.authorization.k8s.io",
            "kind": "User",
            "name": "${google_service_account.argo_deployer[0].email}",
        }
    ], "the Google account by its email, and no one else"


def test_the_role_checker_flags_wider_rules() -> None:
    planted = [
        {"api_groups": ["argoproj.io"], "resources": ["workflows"], "verbs": ["*"]},
        {"api_groups": [""], "resources": ["secrets"], "verbs": ["get"]},
        {"api_groups": ["argoproj.io"], "resources": ["workflowtemplates"], "verbs": ["delete"]},
    ]
    problems = role_problems(planted)
    assert "* workflows" in problems and "delete workflowtemplates" in problems
    assert any("api_groups" in p for p in problems) and "get secrets" in problems
    # A port-forward rule one step wider than the exact one is no longer the port-forward.
    services, pods, portforward = (dict(rule) for rule in PORT_FORWARD_RULES)
    wider = [
        {k: v for k, v in services.items() if k != "resource_names"},  # every Service
        {**pods, "verbs": ["get", "list", "watch", "delete"]},
        {**portforward, "resources": ["pods/portforward", "pods/exec"]},
        {**portforward, "verbs": ["*"]},
    ]
    for rule in wider:
        assert role_problems([rule]), rule
    assert role_problems(PORT_FORWARD_RULES) == []


def test_the_port_forward_rules_are_exactly_those_kubectl_needs_for_the_metadata_service(
    deployer: dict,
) -> None:
    (role,) = resources(deployer, "kubernetes_role_v1").values()
    core = [rule for rule in role["rule"] if rule["api_groups"] != ["argoproj.io"]]
    assert core == PORT_FORWARD_RULES
    for rule in role["rule"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
        assert "*" not in rule.get("api_groups", []) and "*" not in rule.get("resource_names", []), rule
    # The name is the metadata Service's own (metaflow_metadata.tf), which the profile's address names.
    (service,) = resources(parse("metaflow_metadata.tf"), "kubernetes_service_v1").values()
    assert one(service["metadata"])["name"] == "${var.metaflow_metadata_service_name}"
    default = named(parse("variables_gke.tf")["variable"])["metaflow_metadata_service_name"]["default"]
    profile = json.loads((REPO / "infra" / "metaflow" / "config_gke.json").read_text(encoding="utf-8"))
    assert profile["METAFLOW_SERVICE_INTERNAL_URL"].startswith(f"http://{default}.")


def test_the_outputs_name_every_variable_the_argo_job_reads() -> None:
    outputs = named(parse("outputs_gke.tf")["output"])
    given = outputs["argo_github_variables"]["value"]
    assert given["GCP_ARGO_SERVICE_ACCOUNT"] == "${one(google_service_account.argo_deployer[*].email)}"
    assert given["GKE_CLUSTER"] == "${one(google_container_cluster.metaflow[*].name)}"
    assert given["GKE_LOCATION"] == "${var.region}"
    argo = yaml.safe_load((REPO / ".github" / "workflows" / "pipeline.yml").read_text(encoding="utf-8"))
    read = set(re.findall(r"vars\.([A-Z0-9_]+)", yaml.safe_dump(argo["jobs"]["argo"])))
    assert read == set(given) | {"GCP_WORKLOAD_IDENTITY_PROVIDER"}
    variable = named(parse("variables_gke.tf")["variable"])["argo_deployer_service_account_id"]
    assert variable["default"] == "argo-deployer" and variable["validation"]


def test_checkov_passes_the_deployer_with_the_cluster_enabled(tmp_path: Path) -> None:
    for name in ("argo_deployer.tf", "variables_gke.tf"):
        shutil.copy(TERRAFORM / name, tmp_path / name)
    variables = tmp_path / "gke.tfvars"
    variables.write_text('enable_gke = true\nproject_id = "my-mlops-project"\n', encoding="utf-8")
    report = checkov(tmp_path, var_file=variables)
    assert report["summary"]["parsing_errors"] == 0
    failed = [f"{c['check_id']} on {c['resource']}" for c in report["results"]["failed_checks"]]
    assert failed == [], "\n".join(failed)
    assert report["results"]["skipped_checks"] == [], "no skip for the deployer"
    # Without gke.tf's locals the count is not resolved, so the addresses carry no [0].
    judged = {c["resource"].removesuffix("[0]") for c in report["results"]["passed_checks"]}
    for address in (
        "google_project_iam_member.argo_deployer_cluster_viewer",
        "google_storage_bucket_iam_member.argo_deployer_datastore_creator",
        "kubernetes_role_v1.argo_deployer",
        "kubernetes_role_binding_v1.argo_deployer",
    ):
        assert address in judged, f"checkov did not judge {address}"
