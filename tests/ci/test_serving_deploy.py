"""Serving in production: the images, the Cloud Run service, the deploy job and the retrain trigger.

Everything here is static: this repository's test machines have no Docker daemon and no
cloud account, so the Dockerfiles are parsed (and scanned by checkov's Dockerfile checks),
the Terraform is parsed with python-hcl2, and the workflows are read as YAML with their
`if:` conditions and the Workload Identity conditions evaluated by tests/ci/conditions.py.
The serve image's command does run, as a process with the image's environment, to show that
its opt-in gets past the bind check. Only `test_the_serve_image_builds_and_answers` builds an
image, where a daemon answers and DOCKER_BUILD_TESTS=1 asks for it. Each home-made checker also
runs on a planted bad example.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.ci.conditions import evaluate
from tests.ci.test_terraform import (
    CHECKOV,
    PRODUCTION_CLAIMS,
    SAMPLE_VARIABLES,
    condition_with,
    named,
    one,
    parse_all,
    resources,
    walk,
)
from tests.ci.test_workflows import PIPELINE, WORKFLOWS, jobs_that_run, load, step_using, steps

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
DOCKERFILE_GPU = REPO / "docker" / "Dockerfile.gpu"
DOCKERIGNORE = REPO / ".dockerignore"
MONITOR = WORKFLOWS / "monitor.yml"
# An exact release (3.11.13, 2.14.1) or a digest; `latest`, `3.11`, `slim` move.
EXACT_TAG = re.compile(
    r"^[a-z0-9./_-]+:(?:[^:@]*\d+\.\d+\.\d+[^:@]*)(?:@sha256:[0-9a-f]{64})?$|@sha256:[0-9a-f]{64}$"
)
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|PRIVATE_KEY|CREDENTIALS)", re.IGNORECASE)
MAIN = {"github.ref": "refs/heads/main"}
PRODUCTION_EVENTS = [{**MAIN, "github.event_name": e} for e in ("push", "schedule", "workflow_dispatch")]
PULL_REQUEST = {"github.event_name": "pull_request", "github.ref": "refs/pull/7/merge"}
BRANCH_DISPATCH = {"github.event_name": "workflow_dispatch", "github.ref": "refs/heads/feature"}


# ------------------------------------------------------------------ a small Dockerfile reader


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def read_dockerfile(text: str) -> list[Stage]:
    """The stages of a Dockerfile: FROM base [AS name] and its instructions (continuations joined)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    stages: list[Stage] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, words[0]))
        elif stages:
            stages[-1].instructions.append((keyword, rest.strip()))
    return stages


def stage_chain(stages: list[Stage], target: str) -> list[Stage]:
    """`target` and the stages it is built FROM, outermost base first."""
    by_name = {s.name: s for s in stages}
    chain = [by_name[target]]
    while chain[0].base in by_name:
        chain.insert(0, by_name[chain[0].base])
    return chain


def effective_user(stages: list[Stage], target: str) -> str:
    """The USER the target's process runs as (root when no stage of its chain sets one)."""
    user = "root"
    for stage in stage_chain(stages, target):
        for keyword, value in stage.instructions:
            if keyword == "USER":
                user = value
    return user


def environment(stages: list[Stage], target: str) -> dict[str, str]:
    """ENV KEY=VALUE of the target's chain (quotes dropped)."""
    env: dict[str, str] = {}
    for stage in stage_chain(stages, target):
        for keyword, value in stage.instructions:
            if keyword == "ENV":
                for pair in shlex.split(value):
                    key, _, val = pair.partition("=")
                    env[key] = val
    return env


def problems_of(text: str, targets: list[str]) -> list[str]:
    """What makes a Dockerfile unfit here: moving bases, unhashed installs, root, secrets, remote files."""
    stages = read_dockerfile(text)
    names = {s.name for s in stages}
    found = []
    for stage in stages:
        if stage.base not in names and not EXACT_TAG.search(stage.base):
            found.append(f"stage {stage.name}: base {stage.base} is not an exact version or a digest")
        for keyword, value in stage.instructions:
            if keyword == "RUN":
                for install in re.findall(r"pip3? install[^&;|]*", value):
                    if "--require-hashes" not in install or not re.search(r"-r \S+\.lock", install):
                        found.append(f"stage {stage.name}: `{install.strip()}` is not a hash-locked install")
            if keyword in ("ARG", "ENV") and SECRET_NAME.search(value.split("=")[0]):
                found.append(f"stage {stage.name}: {keyword} {value} looks like a secret")
            if keyword == "ADD" and re.search(r"https?://", value):
                found.append(f"stage {stage.name}: ADD of a URL (unverified download)")
            if keyword == "COPY" and not value.startswith("--from") and SECRET_NAME.search(value):
                found.append(f"stage {stage.name}: COPY {value} looks like a secret")
    for target in targets:
        if target not in names:
            found.append(f"no target {target}")
        elif effective_user(stages, target) in ("root", "0", "0:0", "root:root"):
            found.append(f"target {target} runs as root")
    return found


def copied_sources(text: str) -> list[str]:
    """The build-context paths COPY takes (not those --from another stage)."""
    sources = []
    for stage in read_dockerfile(text):
        for keyword, value in stage.instructions:
            if keyword == "COPY" and not value.startswith("--from"):
                words = [w for w in value.split() if not w.startswith("--")]
                sources += [w.rstrip("/") for w in words[:-1]]
    return sources


# ------------------------------------------------------------------ .dockerignore, as Docker reads it


def _pattern(text: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(text):
        if text.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif text.startswith("**", i):
            out += ".*"
            i += 2
        elif text[i] == "*":
            out += "[^/]*"
            i += 1
        elif text[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(text[i])
            i += 1
    return re.compile(out + r"\Z")


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        rules.append((keep, _pattern(line.lstrip("!").strip("/"))))
    return rules


def excluded(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents decides."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for keep, pattern in rules:
        if any(pattern.match(p) for p in prefixes):
            verdict = not keep
    return verdict


# ------------------------------------------------------------------ the images


def test_both_dockerfiles_pin_their_base_install_hash_locked_and_run_as_non_root() -> None:
    assert problems_of(DOCKERFILE.read_text(encoding="utf-8"), ["serve", "pipeline"]) == []
    assert problems_of(DOCKERFILE_GPU.read_text(encoding="utf-8"), ["pipeline-gpu"]) == []


def test_the_dockerfile_checker_flags_a_planted_bad_dockerfile() -> None:
    bad = (
        "FROM python:3.11-slim AS build\n"
        "ARG GITHUB_TOKEN\n"
        "RUN pip install -r requirements.txt && pip install --require-hashes -r requirements.lock\n"
        "FROM build AS serve\n"
        "COPY .env /app/.env\n"
        "ADD https://example.com/tool.tgz /opt/\n"
        'CMD ["python", "-m", "modules", "serve"]\n'
    )
    problems = problems_of(bad, ["serve", "pipeline"])
    assert len(problems) == 6, problems
    for expected in ("python:3.11-slim", "requirements.txt", "GITHUB_TOKEN", "ADD of a URL", "runs as root"):
        assert any(expected in p for p in problems), (expected, problems)
    assert "no target pipeline" in problems
    assert problems_of("FROM python:latest\nUSER 10001\n", ["0"]) == [
        "stage 0: base python:latest is not an exact version or a digest"
    ]
    digest = "python@sha256:" + "a" * 64
    assert problems_of(f"FROM {digest} AS x\nUSER app\n", ["x"]) == []


def test_the_serve_target_listens_on_cloud_runs_port_with_the_explicit_opt_in() -> None:
    stages = read_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    serve = environment(stages, "serve")
    assert serve["SERVE_HOST"] == "0.0.0.0" and serve["SERVE_ALLOW_PUBLIC_BIND"] == "1"
    (cmd,) = [v for k, v in stage_chain(stages, "serve")[-1].instructions if k == "CMD"]
    command = " ".join(json.loads(cmd))
    assert "exec python -m modules serve" in command and '--port "${PORT}"' in command
    # Only the serving container opts in: the pipeline image keeps the loopback default.
    pipeline = environment(stages, "pipeline")
    assert "SERVE_HOST" not in pipeline and "SERVE_ALLOW_PUBLIC_BIND" not in pipeline
    # And the app really refuses a public bind without that flag (tests/unit/serving/test_app.py).
    app_source = (REPO / "modules" / "serving" / "app.py").read_text(encoding="utf-8")
    assert 'ALLOW_PUBLIC_BIND_VAR = "SERVE_ALLOW_PUBLIC_BIND"' in app_source
    assert re.search(r"check_serve_bind\(\w+, os\.environ\)", app_source)


@pytest.mark.parametrize("opted_in", [True, False], ids=["image-env", "without-the-opt-in"])
def test_the_serve_command_with_the_images_environment_gets_past_the_bind_check(
    tmp_path: Path, opted_in: bool
) -> None:
    """The CMD and ENV of `serve`, run as a process here (no Docker): the opt-in is what lets it bind 0.0.0.0."""
    stages = read_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    image_env = environment(stages, "serve")
    (cmd,) = [v for k, v in stage_chain(stages, "serve")[-1].instructions if k == "CMD"]
    served = {k: image_env[k] for k in ("SERVE_HOST", "SERVE_ALLOW_PUBLIC_BIND", "PORT")}
    if not opted_in:
        del served["SERVE_ALLOW_PUBLIC_BIND"]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SERVE_", "MLFLOW_", "PREDICTION_LOG"))},
        **served,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "SERVE_MODEL_NAME": "no-such-model",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PREDICTION_LOG_PATH": str(tmp_path / "predictions.db"),
    }
    result = subprocess.run(
        json.loads(cmd), env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    if opted_in:  # past the bind check, it looks for the model: one line naming it
        assert last.startswith("error: ") and "no-such-model" in last and "champion" in last, last
    else:
        assert last.startswith("error: SERVE_HOST=0.0.0.0 would open"), last


def test_the_gpu_image_runs_keras_on_jax_from_a_hash_locked_cuda_requirement_file() -> None:
    stages = read_dockerfile(DOCKERFILE_GPU.read_text(encoding="utf-8"))
    env = environment(stages, "pipeline-gpu")
    assert env["KERAS_BACKEND"] == "jax"
    installs = " ".join(v for s in stages for k, v in s.instructions if k == "RUN")
    assert "-r /tmp/requirements-gpu.lock" in installs and "-r /tmp/requirements.lock" in installs
    wanted = (REPO / "docker" / "requirements-gpu.txt").read_text(encoding="utf-8")
    (jax_pin,) = re.findall(r"^jax\[cuda12\]==(\S+)$", wanted, flags=re.MULTILINE)
    lock = (REPO / "docker" / "requirements-gpu.lock").read_text(encoding="utf-8")
    entries = re.split(r"\n(?=[A-Za-z0-9])", lock.split("\n", 2)[2])
    pins = dict(re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", e).groups() for e in entries if "==" in e)
    assert pins["jax"] == jax_pin and pins["jaxlib"] == jax_pin and pins["jax-cuda12-plugin"] == jax_pin
    assert all("--hash=sha256:" in e for e in entries if "==" in e)
    # Both locks go into one environment with --no-deps: shared packages must agree.
    runtime = dict(
        re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\", (REPO / "requirements.lock").read_text(), re.M)
    )
    clashes = {n: (v, runtime[n]) for n, v in pins.items() if n in runtime and runtime[n] != v}
    assert clashes == {}


def test_dockerignore_keeps_secrets_stores_data_and_reports_out_of_the_context() -> None:
    rules = ignore_rules(DOCKERIGNORE.read_text(encoding="utf-8"))
    for path in (
        ".env",
        ".env.production",
        "mlruns/mlflow.db",
        "data/emotions.csv",
        ".metaflow/TuningFlow/1/_parameters",
        "reports/promotion.json",
        "predictions/predictions.db",
        "infra/terraform/terraform.tfvars",
        "gha-creds-1234.json",
        ".git/config",
        ".venv/bin/python",
        "modules/.env",
        "modules/serving/__pycache__/app.cpython-311.pyc",
        "modules/local.db",
    ):
        assert excluded(path, rules), f"{path} would be sent to the Docker build"
    for dockerfile in (DOCKERFILE, DOCKERFILE_GPU):
        for source in copied_sources(dockerfile.read_text(encoding="utf-8")):
            assert not excluded(source, rules), (
                f"{dockerfile.name} copies {source}, which .dockerignore leaves out"
            )
            assert (REPO / source).exists(), source
    assert not excluded("modules/serving/app.py", rules)


def test_the_dockerignore_reader_follows_dockers_last_match_rule() -> None:
    rules = ignore_rules("*\n!modules/\n**/*.db\n!keep.db\n")
    assert excluded("README.md", rules) and excluded("data/x.csv", rules)
    assert not excluded("modules/a/b.py", rules)
    assert excluded("modules/a/b.db", rules) and not excluded("keep.db", rules)
    assert not excluded("anything", ignore_rules("# only a comment\n"))


def test_checkov_finds_nothing_in_the_dockerfiles() -> None:
    assert CHECKOV.exists(), f"checkov is not installed at {CHECKOV}: run `make install-dev`"
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"}
    command = [str(CHECKOV), "-d", str(REPO / "docker"), "--framework", "dockerfile"]
    result = subprocess.run(
        [*command, "--skip-download", "--compact", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [f"{c['check_id']} in {c['file_path']}" for r in reports for c in r["results"]["failed_checks"]]
    assert failed == []
    assert sum(r["summary"]["passed"] for r in reports) >= 50  # both files were read


def _docker_daemon() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False).returncode == 0


@pytest.mark.skipif(
    os.environ.get("DOCKER_BUILD_TESTS") != "1" or not _docker_daemon(),
    reason="builds an image of several GB: needs a Docker daemon (none on this project's test machines) "
    "and DOCKER_BUILD_TESTS=1",
)
def test_the_serve_image_builds_and_answers() -> None:
    """Build `serve`, check who it runs as, and that it refuses to start without a registry (one line, exit 2)."""
    tag = "operational-ml-serve:test"
    subprocess.run(
        ["docker", "build", "-f", str(DOCKERFILE), "--target", "serve", "-t", tag, str(REPO)],
        check=True,
        timeout=3600,
    )
    user = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "id", tag, "-u"], capture_output=True, text=True, check=True
    )
    assert user.stdout.strip() == "10001"
    run = subprocess.run(
        ["docker", "run", "--rm", "-e", "MLFLOW_TRACKING_URI=sqlite:////tmp/empty.db", tag],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 2 and run.stderr.strip().startswith("error:"), run.stderr[-2000:]


# ------------------------------------------------------------------ Terraform: registry, serving, monitoring


@pytest.fixture(scope="module")
def tf() -> dict[str, list]:
    return parse_all()


def validation_regex(variable: dict) -> re.Pattern[str]:
    """The first regex(...) of a variable's validation, as Python reads it."""
    condition = one(variable["validation"])["condition"]
    (pattern,) = re.findall(r'regex\("((?:[^"\\]|\\.)*)"', condition)[:1]
    return re.compile(pattern.replace("\\\\", "\\"))


def test_the_image_repository_is_immutable_encrypted_and_writable_by_the_pipeline_only(tf: dict) -> None:
    (repository,) = resources(tf, "google_artifact_registry_repository").values()
    assert repository["format"] == "DOCKER"
    assert one(repository["docker_config"])["immutable_tags"] is True
    assert repository["kms_key_name"] == "${google_kms_crypto_key.images.id}"
    members = resources(tf, "google_artifact_registry_repository_iam_member").values()
    # Readers (such as nodes that pull the pipeline image) may be added; only the pipeline pushes.
    writers = [(m["role"], m["member"]) for m in members if m["role"] != "roles/artifactregistry.reader"]
    assert writers == [("roles/artifactregistry.writer", "${local.pipeline_member}")]
    assert "roles/artifactregistry" not in str(resources(tf, "google_project_iam_member"))


def project_roles(tf: dict, member: str) -> dict[str, dict]:
    return {
        m["role"]: m for m in resources(tf, "google_project_iam_member").values() if m["member"] == member
    }


def test_the_serving_account_has_no_project_wide_role_and_reads_the_bucket_only(tf: dict) -> None:
    roles = project_roles(tf, "${local.serving_member}")
    assert set(roles) == {"roles/cloudsql.client", "roles/cloudsql.instanceUser"}
    for member in roles.values():
        condition = one(member["condition"])["expression"]
        assert (
            "resource.name == 'projects/${var.project_id}/instances/${google_sql_database_instance.mlflow.name}'"
            in condition
        ), "limited to the MLflow instance"
    bucket_roles = [
        (b["bucket"], b["role"])
        for b in resources(tf, "google_storage_bucket_iam_member").values()
        if b["member"] == "${local.serving_member}"
    ]
    assert bucket_roles == [("${google_storage_bucket.artifacts.name}", "roles/storage.objectViewer")]
    members = [value for _, key, value in walk(tf.get("resource", [])) if key in ("member", "members")]
    assert members and not [m for m in members if re.search(r"allUsers|allAuthenticatedUsers", str(m))]
    for authoritative in (
        "google_cloud_run_v2_service_iam_binding",
        "google_cloud_run_v2_service_iam_policy",
    ):
        assert not resources(tf, authoritative)
    assert not resources(tf, "google_secret_manager_secret_iam_member"), (
        "the service logs in without a password"
    )


def test_the_service_runs_as_its_account_by_digest_internal_and_with_named_invokers(tf: dict) -> None:
    service = resources(tf, "google_cloud_run_v2_service")["serving"]
    template = one(service["template"])
    assert template["service_account"] == "${google_service_account.serving.email}"
    scaling = one(template["scaling"])
    assert scaling == {
        "min_instance_count": "${var.serving_min_instances}",
        "max_instance_count": "${var.serving_max_instances}",
    }
    containers = {c["name"]: c for c in template["containers"]}
    assert containers["serve"]["image"] == "${var.serving_image}"
    assert containers["serve"]["depends_on"] == ["cloud-sql-proxy"]
    assert "--auto-iam-authn" in containers["cloud-sql-proxy"]["args"]
    env = {e["name"]: e for e in containers["serve"]["env"]}
    assert "PGPASSWORD" not in env and "PREDICTION_LOG_PASSWORD" not in env
    assert env["MLFLOW_TRACKING_URI"]["value"] == "${local.serving_database_uri}"
    variables = named(tf["variable"])
    image = validation_regex(variables["serving_image"])
    digest = "us-central1-docker.pkg.dev/p/operational-ml/serve@sha256:" + "0" * 64
    assert image.search(digest)
    assert not image.search("us-central1-docker.pkg.dev/p/operational-ml/serve:latest")
    assert not image.search("us-central1-docker.pkg.dev/p/operational-ml/serve:abc123")
    assert service["ingress"] == "${var.serving_ingress}"
    assert variables["serving_ingress"]["default"] == "INGRESS_TRAFFIC_INTERNAL_ONLY"
    invokers = resources(tf, "google_cloud_run_v2_service_iam_member")["serving_invokers"]
    assert invokers["role"] == "roles/run.invoker" and invokers["member"] == "${each.value}"
    principal = validation_regex(variables["serving_invokers"])
    assert principal.search("serviceAccount:client@p.iam.gserviceaccount.com")
    assert not principal.search("allUsers") and not principal.search("allAuthenticatedUsers")
    assert variables["serving_invokers"]["default"] == []
    proxy = validation_regex(variables["cloud_sql_proxy_image"])
    assert proxy.search(variables["cloud_sql_proxy_image"]["default"])
    assert not proxy.search("gcr.io/cloud-sql-connectors/cloud-sql-proxy:latest")


def test_the_pipeline_may_deploy_that_service_only(tf: dict) -> None:
    deployers = resources(tf, "google_cloud_run_v2_service_iam_member")["pipeline_deploys_serving"]
    assert (deployers["role"], deployers["member"]) == ("roles/run.developer", "${local.pipeline_member}")
    acts_as = resources(tf, "google_service_account_iam_member")["pipeline_acts_as_serving"]
    assert acts_as["service_account_id"] == "${google_service_account.serving.name}"
    assert acts_as["role"] == "roles/iam.serviceAccountUser"
    assert "roles/run." not in str(resources(tf, "google_project_iam_member"))


def monitoring_admits(tf: dict, **claims: str) -> bool:
    provider = resources(tf, "google_iam_workload_identity_pool_provider")["github_monitoring"]
    context = {
        **PRODUCTION_CLAIMS,
        "assertion.sub": "repo:octo-org/Operational_ML:environment:monitoring",
        "assertion.event_name": "schedule",
        **{f"assertion.{k}": v for k, v in claims.items()},
    }
    return evaluate(condition_with(provider["attribute_condition"], SAMPLE_VARIABLES), context) is True


def test_the_monitoring_provider_admits_only_the_monitoring_environment_on_main(tf: dict) -> None:
    assert monitoring_admits(tf) and monitoring_admits(tf, event_name="workflow_dispatch")
    for changes in (
        {"sub": "repo:octo-org/Operational_ML:environment:production"},
        {"event_name": "push"},
        {"event_name": "pull_request", "ref": "refs/pull/7/merge"},
        {"ref": "refs/heads/feature"},
        {"repository_id": "111"},
    ):
        assert not monitoring_admits(tf, **changes), changes
    # And production's provider does not admit the monitoring environment.
    production = resources(tf, "google_iam_workload_identity_pool_provider")["github"]
    claims = {**PRODUCTION_CLAIMS, "assertion.sub": "repo:octo-org/Operational_ML:environment:monitoring"}
    assert evaluate(condition_with(production["attribute_condition"], SAMPLE_VARIABLES), claims) is False


def test_the_monitoring_account_cannot_promote_deploy_or_change_a_stored_file(tf: dict) -> None:
    binding = resources(tf, "google_service_account_iam_member")["monitoring_workload_identity_user"]
    assert binding["service_account_id"] == "${google_service_account.monitoring.name}"
    assert binding["member"].endswith("/subject/${local.monitoring_subject}")
    assert (
        named(tf["locals"])["monitoring_subject"] == "repo:${local.github_repository}:environment:monitoring"
    )
    roles = project_roles(tf, "${local.monitoring_member}")
    assert set(roles) == {"roles/cloudsql.client", "roles/cloudsql.instanceUser"}
    assert all(
        "sqladmin.googleapis.com/Instance" in one(m["condition"])["expression"] for m in roles.values()
    )
    bucket_roles = sorted(
        b["role"]
        for b in resources(tf, "google_storage_bucket_iam_member").values()
        if b["member"] == "${local.monitoring_member}"
    )
    # objectCreator adds objects and cannot replace or delete one (that needs storage.objects.delete).
    assert bucket_roles == ["roles/storage.objectCreator", "roles/storage.objectViewer"]
    everything_it_holds = str(
        [r for kind in tf.get("resource", []) for r in kind.values() if "monitoring_member" in str(r)]
    )
    for forbidden in ("objectUser", "objectAdmin", "roles/run.", "artifactregistry", "secretmanager"):
        assert forbidden not in everything_it_holds


# ------------------------------------------------------------------ workflows


def test_image_and_deploy_run_only_on_main_in_production() -> None:
    pipeline = load(PIPELINE)
    for job_id in ("image", "deploy-serving"):
        job = pipeline["jobs"][job_id]
        assert job["environment"] == "production"
        (auth,) = step_using({"jobs": {job_id: job}}, "google-github-actions/auth")
        assert auth["with"]["service_account"] == "${{ vars.GCP_SERVICE_ACCOUNT }}"
    for context in PRODUCTION_EVENTS:
        assert {"image", "deploy-serving"} <= set(jobs_that_run(pipeline, context))
    for context in (PULL_REQUEST, BRANCH_DISPATCH):
        assert not {"image", "deploy-serving"} & set(jobs_that_run(pipeline, context))


def test_deploy_needs_the_image_and_a_promotion() -> None:
    pipeline = load(PIPELINE)
    deploy = pipeline["jobs"]["deploy-serving"]
    assert set(deploy["needs"]) == {"image", "pipeline"}
    assert pipeline["jobs"]["pipeline"]["outputs"]["champion_moved"] == "${{ steps.promotion.outputs.moved }}"
    for moved, image, runs in (
        ("true", "r/serve@sha256:" + "0" * 64, True),
        ("false", "r/serve@sha256:" + "0" * 64, False),
        ("", "r/serve@sha256:" + "0" * 64, False),
        ("true", "", False),
    ):
        context = {
            **PRODUCTION_EVENTS[0],
            "needs.pipeline.outputs.champion_moved": moved,
            "needs.image.outputs.serve": image,
        }
        assert bool(evaluate(deploy["if"], context)) is runs, (moved, image)
    (script,) = [s for _, s in steps({"jobs": {"d": deploy}}) if "gcloud run deploy" in str(s.get("run"))]
    assert script["env"]["IMAGE"] == "${{ needs.image.outputs.serve }}"
    assert '--container serve --image "$IMAGE"' in script["run"] and "*@sha256:*" in script["run"]
    image = pipeline["jobs"]["image"]
    assert image["outputs"]["serve"] == "${{ steps.push.outputs.serve }}"
    (push,) = [s for _, s in steps({"jobs": {"i": image}}) if s.get("id") == "push"]
    assert '"$1=$IMAGE_REPOSITORY/$2@$digest"' in push["run"]
    for target in (
        "docker/Dockerfile serve",
        "docker/Dockerfile pipeline",
        "docker/Dockerfile.gpu pipeline-gpu",
    ):
        assert target in push["run"]


@pytest.mark.parametrize(
    ("promoted", "expected"),
    [([True, False], ("true", "svm")), ([False, False], ("false", "")), ([], ("false", ""))],
)
def test_the_promotion_step_tells_whether_a_champion_moved(
    tmp_path: Path, promoted: list[bool], expected: tuple[str, str]
) -> None:
    """Run the step's own script on a promotion.json like the training step writes."""
    pipeline = load(PIPELINE)
    (step,) = [s for job_id, s in steps(pipeline) if job_id == "pipeline" and s.get("id") == "promotion"]
    script = step["run"].split("<<'EOF'\n", 1)[1].rsplit("EOF", 1)[0]
    families = [
        {
            "family": family,
            "model_name": f"eeg-emotion-{family}",
            "new_version": "4",
            "test_accuracy": 0.95,
            "champion_before": "3",
            "champion_after": "4" if moved else "3",
            "promoted": moved,
            "reason": "test",
        }
        for family, moved in zip(("svm", "dnn"), promoted, strict=False)
    ]
    promotion = tmp_path / "promotion.json"
    promotion.write_text(json.dumps({"families": families}), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-", str(promotion)],
        input=script,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    assert result.stdout.splitlines() == [f"moved={expected[0]}", f"families={expected[1]}"]


def test_monitor_runs_daily_on_main_only_and_never_for_pull_requests() -> None:
    monitor = load(MONITOR)
    on = monitor.get("on", monitor.get(True))
    assert set(on) == {"schedule", "workflow_dispatch"}
    (cron,) = [entry["cron"] for entry in on["schedule"]]
    assert cron.split()[2:] == ["*", "*", "*"], "daily"
    assert jobs_that_run(monitor, {**MAIN, "github.event_name": "schedule"}) == ["check", "retrain"]
    assert (
        jobs_that_run(monitor, {"github.event_name": "workflow_dispatch", "github.ref": "refs/heads/x"}) == []
    )
    assert jobs_that_run(monitor, PULL_REQUEST) == []


def test_the_check_job_reads_with_the_monitoring_identity_and_writes_nothing_to_github() -> None:
    monitor = load(MONITOR)
    check = monitor["jobs"]["check"]
    assert check["environment"] == "monitoring"
    assert check["permissions"] == {"contents": "read", "id-token": "write"}
    (auth,) = step_using({"jobs": {"check": check}}, "google-github-actions/auth")
    assert auth["with"] == {
        "workload_identity_provider": "${{ vars.GCP_MONITORING_WORKLOAD_IDENTITY_PROVIDER }}",
        "service_account": "${{ vars.GCP_MONITORING_SERVICE_ACCOUNT }}",
    }
    text = MONITOR.read_text(encoding="utf-8")
    assert "secrets." not in text and "vars.GCP_SERVICE_ACCOUNT" not in text
    assert "vars.GCP_WORKLOAD_IDENTITY_PROVIDER" not in text
    (proxy,) = [s for _, s in steps({"jobs": {"c": check}}) if "cloud-sql-proxy" in str(s.get("run"))]
    assert "--auto-iam-authn" in proxy["run"]
    (decide,) = [s for _, s in steps({"jobs": {"c": check}}) if s.get("id") == "check"]
    assert "modules drift --fail-on-drift" in decide["run"]
    assert '3) echo "retrain=true"' in decide["run"] and '0) echo "retrain=false"' in decide["run"]
    assert check["outputs"]["retrain"] == "${{ steps.check.outputs.retrain }}"
    # Every variable it reads is one Terraform prints for the monitoring environment.
    outputs = named(parse_all()["output"])
    assert set(re.findall(r"vars\.([A-Z0-9_]+)", text)) == set(
        outputs["monitoring_github_variables"]["value"]
    )


def test_the_retrain_job_may_only_start_workflows_and_starts_the_pipeline_on_main() -> None:
    retrain = load(MONITOR)["jobs"]["retrain"]
    assert retrain["permissions"] == {"actions": "write"}
    assert "environment" not in retrain and retrain["needs"] == "check"
    assert not step_using({"jobs": {"r": retrain}}, "google-github-actions/auth")
    for retrain_said, runs in (("true", True), ("false", False), ("", False)):
        context = {**MAIN, "github.event_name": "schedule", "needs.check.outputs.retrain": retrain_said}
        assert bool(evaluate(retrain["if"], context)) is runs
    (dispatch,) = retrain["steps"]
    assert dispatch["env"]["GH_TOKEN"] == "${{ github.token }}"
    assert 'gh workflow run pipeline.yml --repo "$REPOSITORY" --ref main' in dispatch["run"]
    # The pipeline it starts accepts that event on main as a production run.
    assert "workflow_dispatch" in load(PIPELINE).get("on", load(PIPELINE).get(True))
