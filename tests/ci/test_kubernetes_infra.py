"""infra/terraform/{gke,argo,metaflow_metadata,variables_gke,outputs_gke}.tf and infra/metaflow: the Kubernetes path.

Static checks on the parsed HCL (python-hcl2, as tests/ci/test_terraform.py): off by default, no
project-wide or authoritative IAM, Workload Identity for one Kubernetes service account only, a
hardened datastore bucket, a pinned Argo chart, Metaflow's metadata service reachable from the
flows' namespace only and logging in to its database as an IAM user, and a profile that agrees with
the Terraform defaults. checkov then scans the folder with enable_gke = true, so that the cluster is judged too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import hcl2
import pytest
import yaml

from tests.ci.test_terraform import OPTIONS, checkov, named, one, resources

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "infra" / "terraform"
GKE_FILES = ("gke.tf", "argo.tf", "metaflow_metadata.tf", "variables_gke.tf", "outputs_gke.tf")
PROFILE = json.loads((REPO / "infra" / "metaflow" / "config_gke.json").read_text(encoding="utf-8"))
STEPS_MEMBER = "serviceAccount:${google_service_account.metaflow_steps[0].email}"
NODES_MEMBER = "serviceAccount:${google_service_account.gke_nodes[0].email}"
METADATA_MEMBER = "serviceAccount:${google_service_account.metaflow_metadata[0].email}"
INSTANCE_ONLY = (
    "resource.type == 'sqladmin.googleapis.com/Instance' && resource.name == "
    "'projects/${var.project_id}/instances/${google_sql_database_instance.mlflow.name}'"
)
# A made-up digest for the scans: the real ones are looked up when the cluster is set up.
SAMPLE_DIGEST = "sha256:" + "0" * 64
AUTHORITATIVE = re.compile(r"^google_\w+_iam_(binding|policy)$")


def parse(*names: str) -> dict[str, list]:
    merged: dict[str, list] = {}
    for name in names:
        with (TERRAFORM / name).open(encoding="utf-8") as handle:
            for kind, blocks in hcl2.load(handle, serialization_options=OPTIONS).items():
                merged.setdefault(kind, []).extend(blocks)
    return merged


@pytest.fixture(scope="module")
def gke() -> dict[str, list]:
    return parse(*GKE_FILES)


def all_resources(tf: dict) -> dict[str, dict]:
    """{TYPE.NAME: body} of every resource."""
    found = {}
    for block in tf.get("resource", []):
        for kind, bodies in block.items():
            for name, body in bodies.items():
                found[f"{kind}.{name}"] = body
    return found


def test_enable_gke_is_off_by_default_and_gates_every_resource(gke: dict) -> None:
    variables = named(gke["variable"])
    assert variables["enable_gke"]["default"] is False and variables["enable_gke"]["type"] == "bool"
    assert named(gke["locals"])["gke"] == "${var.enable_gke ? 1 : 0}"
    everything = all_resources(gke)
    assert len(everything) >= 15
    for address, body in everything.items():
        gate = str(body.get("count", body.get("for_each", "")))
        assert "local.gke" in gate or "var.enable_gke" in gate, (
            f"{address} is created with enable_gke = false"
        )


def test_no_authoritative_or_project_wide_grant_to_the_steps(gke: dict) -> None:
    everything = all_resources(gke)
    assert not [a for a in everything if AUTHORITATIVE.match(a.split(".")[0])], "authoritative IAM"
    project_members = resources(gke, "google_project_iam_member")
    assert set(project_members) == {
        "metaflow_steps_cloudsql_client",
        "gke_nodes_default",
        "metaflow_metadata_cloudsql_client",
        "metaflow_metadata_cloudsql_instance_user",
    }
    steps_sql = project_members["metaflow_steps_cloudsql_client"]
    assert steps_sql["role"] == "roles/cloudsql.client" and steps_sql["member"] == STEPS_MEMBER
    assert one(steps_sql["condition"])["expression"] == INSTANCE_ONLY
    # The nodes' account gets Google's narrow node role (logs, metrics), nothing of the steps'.
    nodes = project_members["gke_nodes_default"]
    assert nodes == {
        "count": "${local.gke}",
        "project": "${var.project_id}",
        "role": "roles/container.defaultNodeServiceAccount",
        "member": NODES_MEMBER,
    }
    for broad in ("roles/owner", "roles/editor", "objectAdmin", "storage.admin", "iam.serviceAccountUser"):
        assert broad not in str(gke), broad


def test_steps_read_and_write_only_the_datastore_and_the_artifact_bucket(gke: dict) -> None:
    grants = {
        (m["bucket"], m["role"])
        for m in resources(gke, "google_storage_bucket_iam_member").values()
        if m["member"] == STEPS_MEMBER
    }
    assert grants == {
        ("${google_storage_bucket.metaflow_datastore[0].name}", "roles/storage.objectUser"),
        ("${google_storage_bucket.artifacts.name}", "roles/storage.objectUser"),
    }
    (reader,) = resources(gke, "google_artifact_registry_repository_iam_member").values()
    assert reader["role"] == "roles/artifactregistry.reader" and reader["member"] == NODES_MEMBER
    assert reader["repository"] == "${google_artifact_registry_repository.images.name}"


def test_workload_identity_admits_the_one_kubernetes_service_account(gke: dict) -> None:
    bindings = [
        b
        for b in resources(gke, "google_service_account_iam_member").values()
        if b["role"] == "roles/iam.workloadIdentityUser"
        and b["service_account_id"] == "${google_service_account.metaflow_steps[0].name}"
    ]
    assert len(bindings) == 1
    (binding,) = bindings
    assert binding["service_account_id"] == "${google_service_account.metaflow_steps[0].name}"
    assert binding["member"] == "${local.metaflow_workload_identity_member}"
    member = named(gke["locals"])["metaflow_workload_identity_member"]
    assert member == (
        "serviceAccount:${var.project_id}.svc.id.goog"
        "[${var.metaflow_namespace}/${var.metaflow_kubernetes_service_account}]"
    )
    # Filled in, it names one namespace and one account: no wildcard, no whole pool.
    filled = member.replace("${var.project_id}", "my-mlops-project")
    filled = filled.replace("${var.metaflow_namespace}", "operational-ml")
    filled = filled.replace("${var.metaflow_kubernetes_service_account}", "metaflow-steps")
    assert re.fullmatch(r"serviceAccount:[a-z0-9-]+\.svc\.id\.goog\[[a-z0-9-]+/[a-z0-9-]+\]", filled)
    assert "principalSet" not in str(gke) and "*" not in member
    # The Kubernetes side: that account, annotated with the Google account it may act as.
    account = resources(gke, "kubernetes_service_account_v1")["metaflow_steps"]
    metadata = one(account["metadata"])
    assert metadata["name"] == "${var.metaflow_kubernetes_service_account}"
    assert metadata["namespace"] == "${kubernetes_namespace_v1.metaflow[0].metadata[0].name}"
    assert metadata["annotations"] == {
        "iam.gke.io/gcp-service-account": "${google_service_account.metaflow_steps[0].email}"
    }
    assert not resources(gke, "google_service_account_key"), "keys are what Workload Identity replaces"


def test_the_cluster_is_autopilot_private_with_workload_identity_and_a_release_channel(gke: dict) -> None:
    (cluster,) = resources(gke, "google_container_cluster").values()
    assert cluster["enable_autopilot"] is True
    assert one(cluster["private_cluster_config"])["enable_private_nodes"] is True
    assert one(cluster["workload_identity_config"])["workload_pool"] == "${var.project_id}.svc.id.goog"
    assert one(cluster["release_channel"])["channel"] == "${var.gke_release_channel}"
    assert named(gke["variable"])["gke_release_channel"]["default"] == "REGULAR"
    assert one(cluster["master_authorized_networks_config"]) == {}, "no network reaches the IP endpoint"
    nodes = one(one(cluster["cluster_autoscaling"])["auto_provisioning_defaults"])
    assert nodes["service_account"] == "${google_service_account.gke_nodes[0].email}"


def test_the_datastore_bucket_is_hardened_like_the_artifact_bucket(gke: dict) -> None:
    bucket = resources(gke, "google_storage_bucket")["metaflow_datastore"]
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert bucket["force_destroy"] is False
    assert one(bucket["versioning"])["enabled"] is True
    assert one(bucket["logging"])["log_bucket"] == "${google_storage_bucket.access_logs.name}"
    conditions = [one(rule["condition"]) for rule in bucket["lifecycle_rule"]]
    assert {"age": "${var.metaflow_datastore_retention_days}"} in conditions
    assert {"days_since_noncurrent_time": "${var.noncurrent_version_retention_days}"} in conditions


def test_argo_workflows_comes_from_its_chart_pinned_and_watching_the_flows_namespace(gke: dict) -> None:
    release = resources(gke, "helm_release")["argo_workflows"]
    assert release["repository"] == "https://argoproj.github.io/argo-helm"
    assert release["chart"] == "argo-workflows"
    assert release["version"] == "${var.argo_workflows_chart_version}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", named(gke["variable"])["argo_workflows_chart_version"]["default"])
    values = release["values"][0]
    assert "workflowNamespaces = [var.metaflow_namespace]" in values
    assert "serviceAccount = {create = false, name = var.metaflow_kubernetes_service_account}" in values
    assert 'authModes = ["client"]' in values


def test_providers_reach_the_cluster_without_a_token_in_the_state(gke: dict) -> None:
    providers = named(gke["provider"])
    assert set(providers) == {"kubernetes", "helm"}
    assert "token" not in str(providers) and "client_key" not in str(providers)
    assert one(providers["kubernetes"]["exec"])["command"] == "${local.gke_auth_plugin.command}"
    assert named(gke["locals"])["gke_auth_plugin"]["command"] == "gke-gcloud-auth-plugin"
    versions = one(one(parse("versions.tf")["terraform"])["required_providers"])
    for name in ("kubernetes", "helm"):
        assert versions[name]["source"] == f"hashicorp/{name}"
        assert "<" in versions[name]["version"], f"{name} has no upper bound"


def test_the_profile_agrees_with_the_terraform_defaults(gke: dict) -> None:
    variables = named(gke["variable"])
    assert PROFILE["METAFLOW_KUBERNETES_NAMESPACE"] == variables["metaflow_namespace"]["default"]
    assert (
        PROFILE["METAFLOW_KUBERNETES_SERVICE_ACCOUNT"]
        == variables["metaflow_kubernetes_service_account"]["default"]
    )
    example = (TERRAFORM / "terraform.tfvars.example").read_text(encoding="utf-8")
    project = re.search(r'^project_id\s*=\s*"([^"]+)"', example, re.M).group(1)
    assert named(gke["locals"])["metaflow_bucket_name"].endswith('"${var.project_id}-metaflow")}')
    assert PROFILE["METAFLOW_DATASTORE_SYSROOT_GS"] == f"gs://{project}-metaflow/metaflow"
    assert PROFILE["METAFLOW_DEFAULT_DATASTORE"] == "gs"
    assert re.search(r"@sha256:[0-9a-f]{64}$", PROFILE["METAFLOW_KUBERNETES_CONTAINER_IMAGE"])
    repository = named(parse("variables_serving.tf")["variable"])["image_repository_id"]["default"]
    region = named(parse("variables.tf")["variable"])["region"]["default"]
    registry = f"{region}-docker.pkg.dev/{project}/{repository}"
    assert PROFILE["METAFLOW_KUBERNETES_CONTAINER_IMAGE"].startswith(f"{registry}/pipeline@sha256:")
    assert PROFILE["GPU_STEP_IMAGE"].startswith(f"{registry}/pipeline-gpu@sha256:")
    assert re.search(r"@sha256:[0-9a-f]{64}$", PROFILE["GPU_STEP_IMAGE"])
    # Autopilot gives a pod at most 10 GiB of ephemeral storage on general-purpose nodes.
    assert 0 < int(PROFILE["METAFLOW_KUBERNETES_DISK"]) < 10240
    assert PROFILE["GPU_STEPS"] == "1"


def test_checkov_passes_with_the_cluster_enabled(tmp_path: Path) -> None:
    variables = tmp_path / "gke.tfvars"
    variables.write_text(
        'enable_gke = true\nproject_id = "my-mlops-project"\n'
        f'metaflow_metadata_image = "netflixoss/metaflow_metadata_service:v2.5.1@{SAMPLE_DIGEST}"\n'
        f'metaflow_metadata_proxy_image = "gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.14.1@{SAMPLE_DIGEST}"\n',
        encoding="utf-8",
    )
    report = checkov(TERRAFORM, var_file=variables)
    assert report["summary"]["parsing_errors"] == 0
    failed = [
        f"{c['check_id']} {c['check_name']} on {c['resource']}" for c in report["results"]["failed_checks"]
    ]
    assert failed == [], "\n".join(failed)
    judged = {c["resource"] for c in report["results"]["passed_checks"] + report["results"]["skipped_checks"]}
    for address in (
        "google_container_cluster.metaflow[0]",
        "google_storage_bucket.metaflow_datastore[0]",
        "google_project_iam_member.metaflow_steps_cloudsql_client[0]",
        "kubernetes_service_account_v1.metaflow_steps[0]",
        "kubernetes_deployment_v1.metaflow_metadata[0]",
        "kubernetes_service_v1.metaflow_metadata[0]",
        "google_project_iam_member.metaflow_metadata_cloudsql_instance_user[0]",
    ):
        assert address in judged, f"checkov did not judge {address}"
    for check in report["results"]["skipped_checks"]:
        reason = check["check_result"].get("suppress_comment") or ""
        assert len(reason) >= 20, f"{check['check_id']} is skipped without a reason"


# ------------------------------------------------------------------ Argo Events (@trigger_on_finish)

EVENTS_CHART = TERRAFORM / "charts" / "metaflow-events"


def render(template: Path, values: dict) -> list[dict]:
    """The chart's template with its {{ .Values.x }} filled in (all this chart uses), as YAML documents."""

    def fill(match: re.Match) -> str:
        value = values[match.group(1)]
        return json.dumps(str(value)) if match.group(2) else str(value)

    text = re.sub(
        r"\{\{\s*\.Values\.(\w+)\s*(\|\s*quote\s*)?\}\}", fill, template.read_text(encoding="utf-8")
    )
    assert "{{" not in text, f"{template.name} uses more than .Values"
    return [doc for doc in yaml.safe_load_all(text) if doc]


def test_the_events_chart_names_what_the_profile_expects() -> None:
    values = yaml.safe_load((EVENTS_CHART / "values.yaml").read_text(encoding="utf-8"))
    assert values["eventBus"] == PROFILE["METAFLOW_ARGO_EVENTS_EVENT_BUS"]
    assert values["eventSource"] == PROFILE["METAFLOW_ARGO_EVENTS_EVENT_SOURCE"]
    assert values["event"] == PROFILE["METAFLOW_ARGO_EVENTS_EVENT"]
    assert values["sensorServiceAccount"] == PROFILE["METAFLOW_ARGO_EVENTS_SERVICE_ACCOUNT"]
    (source,) = render(EVENTS_CHART / "templates" / "eventsource.yaml", values)
    webhook = source["spec"]["webhook"][values["event"]]
    # Kubernetes names an EventSource's service <name>-eventsource-svc.
    assert PROFILE["METAFLOW_ARGO_EVENTS_WEBHOOK_URL"] == (
        f"http://{values['eventSource']}-eventsource-svc.{PROFILE['METAFLOW_KUBERNETES_NAMESPACE']}.svc:"
        f"{webhook['port']}{webhook['endpoint']}"
    )
    (bus,) = render(EVENTS_CHART / "templates" / "eventbus.yaml", values)
    assert bus["kind"] == "EventBus" and bus["spec"]["jetstream"]["replicas"] >= 3


def test_sensors_may_only_start_workflows_in_the_flows_namespace() -> None:
    values = yaml.safe_load((EVENTS_CHART / "values.yaml").read_text(encoding="utf-8"))
    documents = render(EVENTS_CHART / "templates" / "sensor-rbac.yaml", values)
    kinds = [d["kind"] for d in documents]
    assert kinds == ["ServiceAccount", "Role", "RoleBinding"], "a Role, never a ClusterRole"
    role = documents[1]
    verbs = {
        (resource, verb) for rule in role["rules"] for resource in rule["resources"] for verb in rule["verbs"]
    }
    assert verbs <= {
        ("workflows", "create"),
        ("workflows", "get"),
        ("workflows", "list"),
        ("workflowtemplates", "get"),
        ("workflowtemplates", "list"),
    }
    assert all(rule["apiGroups"] == ["argoproj.io"] for rule in role["rules"])


def test_argo_events_is_pinned_and_manages_the_flows_namespace_only(gke: dict) -> None:
    releases = resources(gke, "helm_release")
    events = releases["argo_events"]
    assert events["version"] == "${var.argo_events_chart_version}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", named(gke["variable"])["argo_events_chart_version"]["default"])
    assert "namespaced = true, managedNamespace = var.metaflow_namespace" in events["values"][0]
    objects = releases["metaflow_events"]
    assert objects["chart"] == "${path.module}/charts/metaflow-events"
    assert objects["namespace"] == "${kubernetes_namespace_v1.metaflow[0].metadata[0].name}"
    assert (EVENTS_CHART / "Chart.yaml").exists()


# ------------------------------------------------------------------ Metaflow's metadata service

METADATA_DB_SETTINGS = {  # the metaflow-service README's settings of its database
    "MF_METADATA_DB_HOST",
    "MF_METADATA_DB_PORT",
    "MF_METADATA_DB_USER",
    "MF_METADATA_DB_PSWD",
    "MF_METADATA_DB_NAME",
}


def pod_spec(gke: dict) -> dict:
    deployment = resources(gke, "kubernetes_deployment_v1")["metaflow_metadata"]
    return one(one(one(deployment["spec"])["template"])["spec"])


def containers(gke: dict) -> dict[str, dict]:
    spec = pod_spec(gke)
    return {c["name"]: c for c in spec["container"] + spec.get("init_container", [])}


def fill_defaults(text: str, gke: dict) -> str:
    """`text` with ${var.X} and ${local.X} of the metadata service replaced by their default values."""
    variables = named(gke["variable"])
    local_values = named(gke["locals"])
    example = (TERRAFORM / "terraform.tfvars.example").read_text(encoding="utf-8")
    project = re.search(r'^project_id\s*=\s*"([^"]+)"', example, re.M).group(1)
    for _ in range(3):  # locals that name locals
        text = re.sub(r"\$\{local\.(\w+)\}", lambda m: str(local_values[m.group(1)]), text)
    text = text.replace("${var.project_id}", project)
    return re.sub(r"\$\{var\.(\w+)\}", lambda m: str(variables[m.group(1)]["default"]), text)


def validation_pattern(variable: dict) -> re.Pattern:
    """The RE2 pattern of a variable's `regex(...)` validation (Python's re reads these the same)."""
    condition = one(variable["validation"])["condition"]
    pattern = re.search(r'regex\("((?:[^"\\]|\\.)*)"', condition).group(1)
    return re.compile(pattern.replace("\\\\", "\\"))


def test_the_metadata_service_is_created_only_with_the_cluster_and_pinned_images(gke: dict) -> None:
    tf = parse("metaflow_metadata.tf")
    made = all_resources(tf)
    assert {
        "google_sql_database.metaflow",
        "google_service_account.metaflow_metadata",
        "kubernetes_service_account_v1.metaflow_metadata",
        "kubernetes_deployment_v1.metaflow_metadata",
        "kubernetes_service_v1.metaflow_metadata",
        "kubernetes_network_policy_v1.metaflow_metadata",
    } <= set(made)
    assert all(body.get("count") == "${local.gke}" for body in made.values()), "enable_gke gates each"
    deployment = made["kubernetes_deployment_v1.metaflow_metadata"]
    (precondition,) = one(deployment["lifecycle"])["precondition"]
    assert precondition["condition"] == (
        "${var.metaflow_metadata_image != null && var.metaflow_metadata_proxy_image != null}"
    )
    variables = named(gke["variable"])
    images = {c["name"]: c["image"] for c in containers(gke).values()}
    assert images == {
        "metadata": "${var.metaflow_metadata_image}",
        "copy-migrations": "${var.metaflow_metadata_image}",
        "cloud-sql-proxy": "${var.metaflow_metadata_proxy_image}",
    }
    for name, example in (
        ("metaflow_metadata_image", "netflixoss/metaflow_metadata_service:v2.5.1"),
        ("metaflow_metadata_proxy_image", "gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.14.1"),
    ):
        assert variables[name]["default"] is None, f"{name}: no default a digest could go stale in"
        pinned = validation_pattern(variables[name])
        assert pinned.search(f"{example}@{SAMPLE_DIGEST}")
        assert pinned.search(f"{example.rsplit(':', 1)[0]}@{SAMPLE_DIGEST}")
        for loose in (example, example.rsplit(":", 1)[0] + ":latest", example + "@sha256:abc"):
            assert not pinned.search(loose), f"{name} accepts {loose}"


def test_the_metadata_service_logs_in_as_its_own_iam_database_user(gke: dict) -> None:
    project_members = resources(gke, "google_project_iam_member")
    grants = {
        m["role"]: one(m["condition"])["expression"]
        for m in project_members.values()
        if m["member"] == METADATA_MEMBER
    }
    assert grants == {"roles/cloudsql.client": INSTANCE_ONLY, "roles/cloudsql.instanceUser": INSTANCE_ONLY}
    database = resources(gke, "google_sql_database")["metaflow"]
    assert database["instance"] == "${google_sql_database_instance.mlflow.name}"
    assert named(gke["variable"])["metaflow_metadata_database_name"]["default"] == "metaflow"
    # No password anywhere: no API-made user, no secret; the proxy logs in with the IAM token.
    assert not resources(gke, "google_sql_user") and not resources(gke, "random_password")
    pods = containers(gke)
    proxy_args = pods["cloud-sql-proxy"]["args"]
    assert "--auto-iam-authn" in proxy_args and "--address=127.0.0.1" in proxy_args
    assert "${google_sql_database_instance.mlflow.connection_name}" in proxy_args
    env = {e["name"]: e for e in pods["metadata"]["env"]}
    assert set(env) >= METADATA_DB_SETTINGS
    assert all("value_from" not in e for e in env.values()), "no secret reaches the pod"
    assert env["MF_METADATA_DB_HOST"]["value"] == "127.0.0.1"
    assert env["MF_METADATA_DB_PSWD"]["value"] == ""
    assert env["MF_METADATA_DB_NAME"]["value"] == "${var.metaflow_metadata_database_name}"
    user = fill_defaults(env["MF_METADATA_DB_USER"]["value"], gke)
    # Cloud SQL's name of a service account's IAM user: its email without .gserviceaccount.com.
    assert user == "metaflow-metadata@my-mlops-project.iam"
    assert named(gke["variable"])["metaflow_metadata_service_account_id"]["default"] == "metaflow-metadata"
    # The migrations' URI: the same user (its @ written %40), no password, through the proxy.
    assert env["MIGRATION_DATABASE_URI"]["value"] == "${local.metaflow_metadata_database_uri}"
    assert named(gke["locals"])["metaflow_metadata_database_uri"] == (
        'postgresql://${replace(local.metaflow_metadata_database_user, "@", "%40")}:@127.0.0.1:5432/'
        "${var.metaflow_metadata_database_name}?sslmode=disable"
    )


def test_the_metadata_service_account_is_bound_only_to_its_own_google_account(gke: dict) -> None:
    bindings = [
        b
        for b in resources(gke, "google_service_account_iam_member").values()
        if b["role"] == "roles/iam.workloadIdentityUser"
    ]
    by_account = {b["service_account_id"]: b["member"] for b in bindings}
    assert by_account == {
        "${google_service_account.metaflow_steps[0].name}": "${local.metaflow_workload_identity_member}",
        "${google_service_account.metaflow_metadata[0].name}": "${local.metaflow_metadata_workload_identity_member}",
    }
    member = named(gke["locals"])["metaflow_metadata_workload_identity_member"]
    assert member == (
        "serviceAccount:${var.project_id}.svc.id.goog"
        "[${var.metaflow_namespace}/${var.metaflow_metadata_service_name}]"
    )
    accounts = resources(gke, "kubernetes_service_account_v1")
    metadata = one(accounts["metaflow_metadata"]["metadata"])
    assert metadata["name"] == "${var.metaflow_metadata_service_name}"
    assert metadata["annotations"] == {
        "iam.gke.io/gcp-service-account": "${google_service_account.metaflow_metadata[0].email}"
    }
    no_token = "${local.metaflow_metadata_uses_kubernetes_api}"
    assert named(gke["locals"])["metaflow_metadata_uses_kubernetes_api"] is False
    assert accounts["metaflow_metadata"]["automount_service_account_token"] == no_token
    spec = pod_spec(gke)
    assert (
        spec["service_account_name"]
        == "${kubernetes_service_account_v1.metaflow_metadata[0].metadata[0].name}"
    )
    assert spec["automount_service_account_token"] == no_token
    # The two Kubernetes accounts differ, so neither pod can act as the other's Google account.
    variables = named(gke["variable"])
    assert (
        variables["metaflow_metadata_service_name"]["default"]
        != variables["metaflow_kubernetes_service_account"]["default"]
    )
    # The steps' account gets nothing of the metadata service's, and the other way round.
    assert METADATA_MEMBER not in str(resources(gke, "google_storage_bucket_iam_member"))


def test_the_metadata_pod_runs_unprivileged_with_requests_and_probes(gke: dict) -> None:
    pods = containers(gke)
    assert set(pods) == {"copy-migrations", "cloud-sql-proxy", "metadata"}
    for name, container in pods.items():
        context = one(container["security_context"])
        assert context["allow_privilege_escalation"] is False, name
        assert context["read_only_root_filesystem"] is True, name
        assert one(context["capabilities"])["drop"] == ["ALL"], name
        requests = one(container["resources"])["requests"]
        assert requests.get("cpu") and requests.get("memory"), name
    for name in ("cloud-sql-proxy", "metadata"):
        context = one(pods[name]["security_context"])
        assert context["run_as_non_root"] is True and context["run_as_user"] > 0, name
        assert pods[name]["readiness_probe"] and pods[name]["liveness_probe"], name
    # The one root process only copies the image's migrations (kept under /root) out, and exits.
    copier = pods["copy-migrations"]
    assert one(copier["security_context"])["run_as_user"] == 0
    assert copier["command"][:2] == ["cp", "-R"] and copier["command"][-1] == "/migrations/"
    assert [m["name"] for m in copier["volume_mount"]] == ["migrations"]
    server = pods["metadata"]
    readiness = one(one(server["readiness_probe"])["http_get"])
    assert readiness == {"path": "/healthcheck", "port": "http"}, "ready only when the database answers"
    assert one(one(server["liveness_probe"])["http_get"])["path"] == "/ping"
    assert one(server["port"])["container_port"] == "${local.metaflow_metadata_port}"
    assert named(gke["locals"])["metaflow_metadata_port"] == 8080
    script = server["command"][-1]
    assert 'goose -dir /migrations postgres "$MIGRATION_DATABASE_URI" up' in script
    assert "exec /opt/latest/bin/python3 -m services.metadata_service.server" in script
    assert one(pod_spec(gke)["security_context"])["seccomp_profile"] == [{"type": "RuntimeDefault"}]
    deployment = resources(gke, "kubernetes_deployment_v1")["metaflow_metadata"]
    assert one(one(deployment["spec"])["strategy"])["type"] == "Recreate", "never two migrations at once"


def test_the_metadata_service_is_reachable_from_the_flows_namespace_only(gke: dict) -> None:
    labels = "${local.metaflow_metadata_labels}"
    service = resources(gke, "kubernetes_service_v1")["metaflow_metadata"]
    spec = one(service["spec"])
    assert spec["type"] == "ClusterIP" and spec["selector"] == labels
    assert "load_balancer_source_ranges" not in spec and "external_ips" not in spec
    (port,) = spec["port"]
    assert port["port"] == "${local.metaflow_metadata_port}" and "node_port" not in port
    assert one(service["metadata"])["name"] == "${var.metaflow_metadata_service_name}"
    assert one(service["metadata"])["namespace"] == "${kubernetes_namespace_v1.metaflow[0].metadata[0].name}"
    policy = one(resources(gke, "kubernetes_network_policy_v1")["metaflow_metadata"]["spec"])
    assert one(policy["pod_selector"])["match_labels"] == labels
    assert policy["policy_types"] == ["Ingress"]
    (rule,) = policy["ingress"]
    (source,) = rule["from"]
    # An empty pod selector and no namespace selector or IP block: this namespace's pods only.
    assert {k for k in source if k != "__comments__"} == {"pod_selector"}
    assert {k: v for k, v in one(source["pod_selector"]).items() if k != "__comments__"} == {}
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    pods = one(one(resources(gke, "kubernetes_deployment_v1")["metaflow_metadata"]["spec"])["template"])
    assert one(pods["metadata"])["labels"] == labels


def test_the_profile_uses_the_metadata_service_terraform_creates(gke: dict) -> None:
    url = fill_defaults(named(gke["locals"])["metaflow_service_url"], gke)
    assert url == "http://metaflow-metadata.operational-ml.svc:8080"
    assert PROFILE["METAFLOW_DEFAULT_METADATA"] == "service"
    assert PROFILE["METAFLOW_SERVICE_URL"] == url
    # What the step pods get (Metaflow writes it into every template as METAFLOW_SERVICE_URL).
    assert PROFILE["METAFLOW_SERVICE_INTERNAL_URL"] == url
    outputs = named(gke["output"])
    profile = outputs["metaflow_profile"]["value"].replace(" ", "")
    assert 'METAFLOW_DEFAULT_METADATA="service"' in profile
    assert "METAFLOW_SERVICE_URL=local.metaflow_service_url," in profile
    assert "METAFLOW_SERVICE_INTERNAL_URL=local.metaflow_service_url," in profile
    assert "local.metaflow_service_url" in outputs["metaflow_service_url"]["value"]
