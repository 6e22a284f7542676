"""infra/terraform: parses, admits only production on main, least privilege, protects data.

Terraform's providers cannot be downloaded offline, so python-hcl2 parses the files and
the tests assert on the parsed structure (interpolated values come back as "${...}"
strings). The Workload Identity condition is evaluated against sample GitHub claims,
checkov scans the folder, and `terraform fmt -check` runs where a terraform binary exists.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import hcl2
import pytest
import yaml

from tests.ci.conditions import evaluate

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "infra" / "terraform"
TF_FILES = sorted(TERRAFORM.glob("*.tf"))
OPTIONS = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
SECRET_ATTRIBUTES = re.compile(r"(password|secret_data|private_key|credentials|api_key|token)$")
SECRET_VARIABLES = re.compile(r"(password|secret|private_key|credentials|api_key|token)")
REFERENCE = re.compile(r"^\$\{.*\b(var|local|random_password|google_secret_manager_secret_version)\.")
# `make install-dev` gives checkov an environment of its own next to the project's (.venv).
CHECKOV = Path(sys.executable).parent.parent / "tools" / "checkov" / "bin" / "checkov"
# Sample inputs, put in place of ${var.NAME} before a condition is evaluated.
SAMPLE_VARIABLES = {
    "github_repository_id": "123456789",
    "github_repository_owner_id": "987654",
    "github_owner": "octo-org",
    "github_repository_name": "Operational_ML",
}
# The claims GitHub puts in the OIDC token of a production job started by a push to main.
PRODUCTION_CLAIMS = {
    "assertion.repository_id": "123456789",
    "assertion.repository_owner_id": "987654",
    "assertion.sub": "repo:octo-org/Operational_ML:environment:production",
    "assertion.environment": "production",
    "assertion.ref": "refs/heads/main",
    "assertion.event_name": "push",
}
# The provider's condition before production had its own environment: repository only.
REPOSITORY_ONLY_CONDITION = (
    "assertion.repository_id == '${var.github_repository_id}' && "
    "assertion.repository_owner_id == '${var.github_repository_owner_id}'"
)


def parse_text(text: str) -> dict:
    return hcl2.load(io.StringIO(text), serialization_options=OPTIONS)


def parse_all() -> dict[str, list]:
    """Every top-level block type (resource, variable, ...) across the .tf files."""
    merged: dict[str, list] = {}
    for path in TF_FILES:
        with path.open(encoding="utf-8") as handle:
            for kind, blocks in hcl2.load(handle, serialization_options=OPTIONS).items():
                merged.setdefault(kind, []).extend(blocks)
    return merged


@pytest.fixture(scope="module")
def tf() -> dict[str, list]:
    return parse_all()


def resources(tf: dict, kind: str) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for block in tf.get("resource", []):
        found.update(block.get(kind, {}))
    return found


def named(blocks: list[dict]) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for block in blocks:
        found.update(block)
    return found


def one(value: object) -> dict:
    """A nested block parsed as a one-element list."""
    assert isinstance(value, list) and len(value) == 1, value
    return value[0]


def walk(node: object, path: str = "") -> Iterator[tuple[str, str, object]]:
    """(path, attribute name, value) of every attribute, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from walk(item, f"{path}[{index}]")


def literal_secrets(tf: dict) -> list[str]:
    """Secret-looking attributes whose value is not a reference, and secret variables with defaults."""
    problems = []
    for path, key, value in walk(tf.get("resource", []) + tf.get("locals", []) + tf.get("provider", [])):
        if isinstance(value, (dict, list)):
            continue  # a block or a resource type, not an attribute
        if SECRET_ATTRIBUTES.search(key) and not (isinstance(value, str) and REFERENCE.match(value)):
            problems.append(f"{path}.{key} = {value!r} is a literal")
    for name, variable in named(tf.get("variable", [])).items():
        if SECRET_VARIABLES.search(name):
            if variable.get("default") is not None:
                problems.append(f"variable {name} has a default value")
            if variable.get("sensitive") is not True:
                problems.append(f"variable {name} is not marked sensitive")
    return problems


def test_every_file_parses_and_none_is_empty() -> None:
    names = {p.name for p in TF_FILES}
    assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf"} <= names
    for path in TF_FILES:
        with path.open(encoding="utf-8") as handle:
            assert hcl2.load(handle, serialization_options=OPTIONS), f"{path.name} parsed to nothing"


def test_providers_are_pinned(tf: dict) -> None:
    providers = one(one(tf["terraform"])["required_providers"])
    assert providers["google"]["source"] == "hashicorp/google"
    assert ">= 6.0" in providers["google"]["version"], "ssl_mode needs provider 6.x"


def the_provider(tf: dict) -> dict:
    """Production's provider (other providers in the pool admit other environments only)."""
    return resources(tf, "google_iam_workload_identity_pool_provider")["github"]


def condition_with(condition: str, variables: dict[str, str]) -> str:
    """The CEL text with every ${var.NAME} replaced by a sample value."""
    text = re.sub(r"\$\{var\.([a-z_]+)\}", lambda match: variables[match.group(1)], condition)
    assert "${" not in text, f"an interpolation the test cannot fill: {text}"
    return text


def admits(condition: str, **changes: str) -> bool:
    """Whether `condition` accepts a production token with some of its claims changed."""
    claims = {**PRODUCTION_CLAIMS, **{f"assertion.{k}": v for k, v in changes.items()}}
    result = evaluate(condition_with(condition, SAMPLE_VARIABLES), claims)
    assert isinstance(result, bool), result
    return result


# ------------------------------------------------------------------ Workload Identity


def test_oidc_provider_checks_ids_subject_ref_and_event(tf: dict) -> None:
    provider = the_provider(tf)
    condition = provider["attribute_condition"]
    assert "assertion.repository_id == '${var.github_repository_id}'" in condition
    assert "assertion.repository_owner_id == '${var.github_repository_owner_id}'" in condition
    assert "assertion.ref == 'refs/heads/main'" in condition
    assert "||" not in condition, "an alternative branch would widen the condition"
    mapping = provider["attribute_mapping"]
    assert mapping["attribute.repository_id"] == "assertion.repository_id"
    assert mapping["attribute.repository_owner_id"] == "assertion.repository_owner_id"
    assert mapping["google.subject"] == "assertion.sub"
    assert one(provider["oidc"])["issuer_uri"] == "https://token.actions.githubusercontent.com"


@pytest.mark.parametrize("event", ["push", "schedule", "workflow_dispatch"])
def test_condition_admits_production_jobs_on_main(tf: dict, event: str) -> None:
    assert admits(the_provider(tf)["attribute_condition"], event_name=event)


REJECTED = [
    {"event_name": "pull_request", "ref": "refs/pull/7/merge"},
    {"ref": "refs/pull/7/merge"},
    {"ref": "refs/pull/7/head"},
    {"event_name": "pull_request"},
    # pull_request_target and workflow_run run with main's ref, for code nobody reviewed.
    {"event_name": "pull_request_target"},
    {"event_name": "workflow_run"},
    {"ref": "refs/heads/feature"},
    {"ref": "refs/heads/feature", "event_name": "workflow_dispatch"},
    {"ref": "refs/heads/main-copy"},
    {"ref": "refs/tags/v1.0.0"},
    # A job outside the production environment, or in another environment.
    {"sub": "repo:octo-org/Operational_ML:ref:refs/heads/main"},
    {"sub": "repo:octo-org/Operational_ML:environment:staging"},
    {"sub": "repo:octo-org/Operational_ML:pull_request"},
    # Another repository, or this name re-registered by someone else.
    {"repository_id": "111", "sub": "repo:evil/Operational_ML:environment:production"},
    {"repository_owner_id": "222"},
    {"sub": "repo:octo-org/Other:environment:production"},
]


@pytest.mark.parametrize("changes", REJECTED, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_condition_rejects_pull_requests_branches_and_other_identities(tf: dict, changes: dict) -> None:
    assert not admits(the_provider(tf)["attribute_condition"], **changes)


def test_the_repository_only_condition_admitted_pull_requests() -> None:
    """What the condition above fixes: any branch and any pull request got production."""
    assert admits(REPOSITORY_ONLY_CONDITION, event_name="pull_request", ref="refs/pull/7/merge")
    assert admits(
        REPOSITORY_ONLY_CONDITION, ref="refs/heads/feature", sub="repo:octo-org/Operational_ML:ref:x"
    )


def test_only_the_production_subject_may_impersonate_the_service_account(tf: dict) -> None:
    bindings = resources(tf, "google_service_account_iam_member")
    (binding,) = [
        b
        for b in bindings.values()
        if b["role"] == "roles/iam.workloadIdentityUser"
        and b["service_account_id"] == "${google_service_account.pipeline.name}"
    ]
    assert binding["member"] == (
        "principal://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}"
        "/subject/${local.production_subject}"
    )
    local = named(tf["locals"])
    assert local["production_subject"] == "repo:${local.github_repository}:environment:production"
    assert local["github_repository"] == "${var.github_owner}/${var.github_repository_name}"
    # The condition checks the same subject, spelled out where checkov can read it.
    assert (
        "assertion.sub == 'repo:${var.github_owner}/${var.github_repository_name}:environment:production'"
        in the_provider(tf)["attribute_condition"]
    )


# ------------------------------------------------------------------ Cloud SQL


def flags(instance: dict) -> dict[str, str]:
    return {flag["name"]: flag["value"] for flag in one(instance["settings"])["database_flags"]}


def test_database_is_postgres_15_protected_and_backed_up(tf: dict) -> None:
    (instance,) = resources(tf, "google_sql_database_instance").values()
    assert instance["database_version"] == "POSTGRES_15"
    assert instance["deletion_protection"] is True
    settings = one(instance["settings"])
    assert settings["deletion_protection_enabled"] is True
    backups = one(settings["backup_configuration"])
    assert backups["enabled"] is True and backups["point_in_time_recovery_enabled"] is True
    assert resources(tf, "google_sql_database")


def test_database_admits_only_iam_authorised_connectors(tf: dict) -> None:
    (instance,) = resources(tf, "google_sql_database_instance").values()
    settings = one(instance["settings"])
    assert settings["connector_enforcement"] == "REQUIRED"
    network = one(settings["ip_configuration"])
    assert network["ssl_mode"] == "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"
    assert "authorized_networks" not in network, "direct connections would bypass IAM"
    assert "authorized_networks" not in named(tf["variable"])
    assert "0.0.0.0/0" not in str(instance)
    assert flags(instance)["cloudsql.iam_authentication"] == "on"


def test_database_logs_connections_schema_changes_and_errors(tf: dict) -> None:
    (instance,) = resources(tf, "google_sql_database_instance").values()
    expected = {
        "log_connections": "on",
        "log_disconnections": "on",
        "log_hostname": "on",
        "log_statement": "ddl",
        "log_duration": "on",
        "log_min_error_statement": "error",
        "log_checkpoints": "on",
        "log_lock_waits": "on",
        "cloudsql.enable_pgaudit": "on",
    }
    assert expected.items() <= flags(instance).items()


def test_no_database_user_is_created_through_the_cloud_sql_api(tf: dict) -> None:
    """Users made by the API join cloudsqlsuperuser; infra/postgres/init.sql makes a plain role."""
    assert not resources(tf, "google_sql_user")
    assert not resources(tf, "random_password")
    assert not resources(tf, "google_secret_manager_secret_version"), "it would put the password in the state"
    assert resources(tf, "google_secret_manager_secret"), "the operator keeps the password there"


# ------------------------------------------------------------------ buckets and roles


def test_buckets_are_private_versioned_and_expire_old_versions(tf: dict) -> None:
    buckets = resources(tf, "google_storage_bucket")
    assert set(buckets) == {"artifacts", "access_logs", "metaflow_datastore"}  # the last: gke.tf
    for bucket in buckets.values():
        assert bucket["uniform_bucket_level_access"] is True
        assert bucket["public_access_prevention"] == "enforced"
        assert bucket["force_destroy"] is False
        assert one(bucket["versioning"])["enabled"] is True
        actions = [one(rule["action"])["type"] for rule in bucket["lifecycle_rule"]]
        assert "Delete" in actions


def test_artifact_access_is_logged_into_the_log_bucket(tf: dict) -> None:
    artifacts = resources(tf, "google_storage_bucket")["artifacts"]
    assert one(artifacts["logging"])["log_bucket"] == "${google_storage_bucket.access_logs.name}"
    writers = [
        member
        for member in resources(tf, "google_storage_bucket_iam_member").values()
        if member["bucket"] == "${google_storage_bucket.access_logs.name}"
    ]
    assert writers == [
        {
            "bucket": "${google_storage_bucket.access_logs.name}",
            "role": "roles/storage.objectCreator",
            "member": "group:cloud-storage-analytics@google.com",
        }
    ]


def test_service_account_has_least_privilege(tf: dict) -> None:
    (project_member,) = [
        m
        for m in resources(tf, "google_project_iam_member").values()
        if m["member"] == "${local.pipeline_member}"
    ]
    assert project_member["role"] == "roles/cloudsql.client"
    assert project_member["member"] == "${local.pipeline_member}"
    condition = one(project_member["condition"])["expression"]
    assert "resource.type == 'sqladmin.googleapis.com/Instance'" in condition
    assert (
        "resource.name == 'projects/${var.project_id}/instances/${google_sql_database_instance.mlflow.name}'"
        in condition
    ), "cloudsql.client must be limited to the MLflow instance"
    pipeline_bucket_roles = [
        member
        for member in resources(tf, "google_storage_bucket_iam_member").values()
        if member["member"] == "${local.pipeline_member}"
    ]
    assert pipeline_bucket_roles == [
        {
            "bucket": "${google_storage_bucket.artifacts.name}",
            "role": "roles/storage.objectUser",
            "member": "${local.pipeline_member}",
        }
    ]
    everything = str(tf)
    for broad in (
        "roles/owner",
        "roles/editor",
        "roles/storage.admin",
        "roles/storage.objectAdmin",
        "roles/cloudsql.admin",
        "roles/secretmanager",
    ):
        assert broad not in everything
    assert not resources(tf, "google_project_iam_binding"), (
        "authoritative bindings would remove others' access"
    )
    assert not resources(tf, "google_service_account_key"), "keys are what Workload Identity replaces"


def test_no_password_or_key_is_a_literal(tf: dict) -> None:
    assert literal_secrets(tf) == []


def test_secret_checker_flags_planted_literals() -> None:
    planted = parse_text(
        'variable "db_password" {\n  type = string\n  default = "hunter2hunter2hunter2"\n}\n'
        'resource "google_sql_user" "u" {\n  name = "x"\n  password = "hunter2"\n}\n'
        'resource "google_sql_user" "ok" {\n  name = "y"\n  password = var.db_password\n}\n'
    )
    problems = literal_secrets(planted)
    assert any("google_sql_user" in p and "'hunter2'" in p for p in problems), problems
    assert "variable db_password has a default value" in problems
    assert "variable db_password is not marked sensitive" in problems
    assert len(problems) == 3, problems


def test_variables_are_described_and_required_ones_validated(tf: dict) -> None:
    variables = named(tf["variable"])
    for name, variable in variables.items():
        assert variable.get("description"), f"variable {name} has no description"
        if "default" not in variable:
            assert variable.get("validation"), f"required variable {name} has no validation"
    assert {
        "project_id",
        "github_owner",
        "github_repository_name",
        "github_repository_id",
        "github_repository_owner_id",
    } <= {n for n, v in variables.items() if "default" not in v}


def test_outputs_give_the_workflow_every_repository_variable_it_reads(tf: dict) -> None:
    outputs = named(tf["output"])
    for name in (
        "workload_identity_provider",
        "service_account",
        "bucket",
        "artifact_root",
        "cloud_sql_connection_name",
        "database_name",
        "database_user",
    ):
        assert outputs[name].get("description"), f"output {name} missing or undescribed"
    assert outputs["artifact_root"]["value"].startswith("gs://")
    assert outputs["workload_identity_provider"]["value"] == (
        "${google_iam_workload_identity_pool_provider.github.name}"
    )
    pipeline = (REPO / ".github" / "workflows" / "pipeline.yml").read_text(encoding="utf-8")
    assert yaml.safe_load(pipeline)
    read_by_workflow = set(re.findall(r"vars\.([A-Z0-9_]+)", pipeline))
    assert read_by_workflow == set(outputs["github_variables"]["value"]) | set(
        outputs["serving_github_variables"]["value"]
    ) | set(outputs["argo_github_variables"]["value"])


# ------------------------------------------------------------------ state, lock, format, checkov


def test_state_lives_in_a_gcs_backend_and_never_in_git(tf: dict) -> None:
    backends = one(tf["terraform"]).get("backend")
    assert backends and "gcs" in one(backends), 'remote state: backend "gcs" in versions.tf'
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", "infra/terraform/terraform.tfstate"],
        cwd=REPO,
        check=False,
    )
    assert ignored.returncode == 0, "terraform.tfstate must be git-ignored"


def test_provider_lock_file_is_not_ignored() -> None:
    """`terraform init` writes .terraform.lock.hcl; it must be committable (README explains)."""
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", "infra/terraform/.terraform.lock.hcl"],
        cwd=REPO,
        check=False,
    )
    assert ignored.returncode == 1, ".terraform.lock.hcl is git-ignored"
    assert ".terraform.lock.hcl" in (TERRAFORM / "README.md").read_text(encoding="utf-8")


@pytest.mark.skipif(shutil.which("terraform") is None, reason="no terraform binary on PATH")
def test_terraform_files_are_formatted() -> None:
    result = subprocess.run(
        ["terraform", "fmt", "-check", "-diff", "-no-color", str(TERRAFORM)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"run `terraform fmt infra/terraform`:\n{result.stdout}{result.stderr}"


def checkov(directory: Path, var_file: Path | None = None) -> dict:
    """checkov's JSON report of one folder, offline (no platform download, no update check),
    with the variables of `var_file` when given (e.g. enable_gke = true)."""
    assert CHECKOV.exists(), f"checkov is not installed at {CHECKOV}: run `make install-dev`"
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"}
    result = subprocess.run(
        [
            str(CHECKOV),
            "-d",
            str(directory),
            "--framework",
            "terraform",
            "--skip-download",
            "--compact",
            "-o",
            "json",
            *(("--var-file", str(var_file)) if var_file else ()),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    # 0: no failed check, 1: failed checks; anything else is checkov itself failing.
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


def test_checkov_finds_no_failed_check_and_every_skip_has_a_reason() -> None:
    report = checkov(TERRAFORM)
    summary = report["summary"]
    failed = [
        f"{c['check_id']} {c['check_name']} on {c['resource']}" for c in report["results"]["failed_checks"]
    ]
    assert failed == [] and summary["failed"] == 0, "\n".join(failed)
    assert summary["parsing_errors"] == 0
    assert summary["passed"] >= 35, summary
    skipped = report["results"]["skipped_checks"]
    for check in skipped:
        reason = check["check_result"].get("suppress_comment") or ""
        assert len(reason) >= 20, f"{check['check_id']} is skipped without a reason"
    # CKV_GCP_12/65/69: the GKE Autopilot cluster (gke.tf), where Autopilot differs from the checks.
    allowed = {"CKV_GCP_60", "CKV_GCP_62", "CKV_GCP_79", "CKV_GCP_12", "CKV_GCP_65", "CKV_GCP_69"}
    assert {c["check_id"] for c in skipped} <= allowed, skipped


def test_checkov_fails_the_repository_only_trust_condition(tmp_path: Path) -> None:
    """The scan really judges the OIDC condition: the old one fails CKV_GCP_125."""
    (tmp_path / "main.tf").write_text(
        'resource "google_iam_workload_identity_pool_provider" "github" {\n'
        '  workload_identity_pool_id          = "pool"\n'
        '  workload_identity_pool_provider_id = "github"\n'
        '  attribute_mapping = { "google.subject" = "assertion.sub" }\n'
        f'  attribute_condition = "{REPOSITORY_ONLY_CONDITION}"\n'
        '  oidc {\n    issuer_uri = "https://token.actions.githubusercontent.com"\n  }\n}\n',
        encoding="utf-8",
    )
    failed = {c["check_id"] for c in checkov(tmp_path)["results"]["failed_checks"]}
    assert "CKV_GCP_125" in failed, failed
