"""infra/terraform: parses, restricts Workload Identity to this repository, protects data.

Terraform itself is not installable offline, so python-hcl2 parses the files and the
tests assert on the parsed structure. Interpolated values come back as "${...}" strings.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import hcl2
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "infra" / "terraform"
TF_FILES = sorted(TERRAFORM.glob("*.tf"))
OPTIONS = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
SECRET_ATTRIBUTES = re.compile(r"(password|secret_data|private_key|credentials|api_key|token)$")
SECRET_VARIABLES = re.compile(r"(password|secret|private_key|credentials|api_key|token)")
REFERENCE = re.compile(r"^\$\{.*\b(var|local|random_password|google_secret_manager_secret_version)\.")


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


def test_oidc_provider_accepts_only_this_repository(tf: dict) -> None:
    (provider,) = resources(tf, "google_iam_workload_identity_pool_provider").values()
    condition = provider["attribute_condition"]
    assert "assertion.repository_id == '${var.github_repository_id}'" in condition
    assert "assertion.repository_owner_id == '${var.github_repository_owner_id}'" in condition
    assert "||" not in condition, "an alternative branch would widen the condition"
    mapping = provider["attribute_mapping"]
    assert mapping["attribute.repository_id"] == "assertion.repository_id"
    assert mapping["attribute.repository_owner_id"] == "assertion.repository_owner_id"
    assert mapping["google.subject"] == "assertion.sub"
    assert one(provider["oidc"])["issuer_uri"] == "https://token.actions.githubusercontent.com"


def test_only_this_repository_may_impersonate_the_service_account(tf: dict) -> None:
    bindings = resources(tf, "google_service_account_iam_member")
    (binding,) = [b for b in bindings.values() if b["role"] == "roles/iam.workloadIdentityUser"]
    assert binding["service_account_id"] == "${google_service_account.pipeline.name}"
    assert binding["member"] == (
        "principalSet://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}"
        "/attribute.repository_id/${var.github_repository_id}"
    )


def test_database_is_postgres_15_protected_backed_up_and_encrypted(tf: dict) -> None:
    (instance,) = resources(tf, "google_sql_database_instance").values()
    assert instance["database_version"] == "POSTGRES_15"
    assert instance["deletion_protection"] is True
    settings = one(instance["settings"])
    assert settings["deletion_protection_enabled"] is True
    backups = one(settings["backup_configuration"])
    assert backups["enabled"] is True and backups["point_in_time_recovery_enabled"] is True
    network = one(settings["ip_configuration"])
    assert network["ssl_mode"] == "ENCRYPTED_ONLY"
    assert "0.0.0.0/0" not in str(network)  # never open to the whole internet
    assert resources(tf, "google_sql_database") and resources(tf, "google_sql_user")


def test_open_networks_are_rejected_by_validation(tf: dict) -> None:
    variable = named(tf["variable"])["authorized_networks"]
    assert variable["default"] == []
    assert "/0" in one(variable["validation"])["condition"]


def test_bucket_is_private_versioned_and_expires_old_versions(tf: dict) -> None:
    (bucket,) = resources(tf, "google_storage_bucket").values()
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert bucket["force_destroy"] is False
    assert one(bucket["versioning"])["enabled"] is True
    actions = [one(rule["action"])["type"] for rule in bucket["lifecycle_rule"]]
    assert "Delete" in actions


def test_service_account_has_least_privilege(tf: dict) -> None:
    project_roles = {m["role"] for m in resources(tf, "google_project_iam_member").values()}
    assert project_roles == {"roles/cloudsql.client"}
    (bucket_member,) = resources(tf, "google_storage_bucket_iam_member").values()
    assert bucket_member["role"] == "roles/storage.objectAdmin"
    assert bucket_member["bucket"] == "${google_storage_bucket.artifacts.name}"
    everything = str(tf)
    for broad in ("roles/owner", "roles/editor", "roles/storage.admin", "roles/cloudsql.admin"):
        assert broad not in everything
    assert not resources(tf, "google_project_iam_binding"), (
        "authoritative bindings would remove others' access"
    )
    assert not resources(tf, "google_service_account_key"), "keys are what Workload Identity replaces"


def test_no_password_or_key_is_a_literal(tf: dict) -> None:
    assert literal_secrets(tf) == []
    (user,) = resources(tf, "google_sql_user").values()
    assert user["password"] == "${local.database_password}"


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
    assert {"project_id", "github_repository_id", "github_repository_owner_id"} <= {
        n for n, v in variables.items() if "default" not in v
    }


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
    assert read_by_workflow == set(outputs["github_variables"]["value"])
