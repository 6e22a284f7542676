"""The GitHub Actions workflows: schema, security audit, triggers, permissions, pins.

Everything here runs offline: check-jsonschema uses its vendored GitHub workflow
schema and zizmor runs with --offline. Each home-made checker is also run on a planted
bad snippet so that a checker that silently finds nothing would fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.ci.conditions import evaluate

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
CI = WORKFLOWS / "ci.yml"
PIPELINE = WORKFLOWS / "pipeline.yml"
WORKFLOW_FILES = sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])
BIN = Path(sys.executable).parent

# owner/repo[/path]@<40 hex>; a tag or branch can be moved to other code, a commit cannot.
SHA_PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(?:/[^@\s]+)?@[0-9a-f]{40}$")
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*['\"]?([^'\"\s#]+)['\"]?\s*(#.*)?$")
VERSION_COMMENT = re.compile(r"#\s*v\d+(\.\d+)*\b")
UNTRUSTED = re.compile(r"\$\{\{[^}]*?(github\.event\.|github\.head_ref|inputs\.)")
PROMOTION_ENV = ("SVM_MAX_CANDIDATES", "DNN_MAX_TRIALS", "DNN_MAX_EPOCHS", "SPLIT_PROTOCOL")
MAKEFILE = REPO / "Makefile"
# What GitHub sets for the events that reach the pipeline workflow.
PULL_REQUEST = {"github.event_name": "pull_request", "github.ref": "refs/pull/7/merge"}
BRANCH_DISPATCH = {"github.event_name": "workflow_dispatch", "github.ref": "refs/heads/feature"}
PRODUCTION_EVENTS = [
    {"github.event_name": event, "github.ref": "refs/heads/main"}
    for event in ("push", "schedule", "workflow_dispatch")
]
# Anything that gives a job production's identity, data or schema.
PRODUCTION_MARKERS = re.compile(
    r"secrets\.|vars\.GCP_|vars\.CLOUD_SQL|vars\.POSTGRES|vars\.MLFLOW|google-github-actions/auth"
    r"|id-token|db_upgrade|db-upgrade|mlflow db upgrade|production"
)


def tool(name: str) -> Path:
    """A command-line tool from the test environment's own bin folder."""
    path = BIN / name
    assert path.exists(), f"{name} is not installed next to {sys.executable}: run `make install-dev`"
    return path


def load(path: Path) -> dict:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def triggers(workflow: dict) -> dict:
    """The `on:` mapping. YAML 1.1 reads the bare key `on` as the boolean True."""
    value = workflow.get("on", workflow.get(True))
    if isinstance(value, str):
        return {value: None}
    if isinstance(value, list):
        return dict.fromkeys(value)
    return value or {}


def steps(workflow: dict) -> Iterator[tuple[str, dict]]:
    for job_id, job in workflow.get("jobs", {}).items():
        for step in job.get("steps", []) or []:
            yield job_id, step


def step_using(workflow: dict, action: str) -> list[dict]:
    return [step for _, step in steps(workflow) if str(step.get("uses", "")).startswith(action + "@")]


def step_running(workflow: dict, command: str) -> dict:
    matches = [step for _, step in steps(workflow) if command in str(step.get("run", ""))]
    assert matches, f"no step runs {command!r}"
    return matches[0]


def unpinned_uses(text: str) -> list[str]:
    """`uses:` lines not pinned to a full commit SHA with a `# vX` comment (local ./ excepted)."""
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = USES_LINE.match(line)
        if not match:
            continue
        ref, comment = match.group(1), match.group(2) or ""
        if ref.startswith("./"):
            continue
        if not SHA_PINNED.match(ref):
            problems.append(f"line {number}: {ref} is not pinned to a 40-hex commit SHA")
        elif not VERSION_COMMENT.search(comment):
            problems.append(f"line {number}: {ref} has no '# vX.Y.Z' version comment")
    return problems


def expressions_in_run(workflow: dict) -> list[str]:
    """Every `run:` script that contains a `${{ }}` expression (values belong in `env:`)."""
    found = []
    for job_id, step in steps(workflow):
        script = str(step.get("run", ""))
        if "${{" in script:
            untrusted = " (untrusted input!)" if UNTRUSTED.search(script) else ""
            found.append(f"{job_id} / {step.get('name', step.get('id', '?'))}{untrusted}")
    return found


def job_uses(job: dict, action: str) -> bool:
    return any(str(step.get("uses", "")).startswith(action + "@") for step in job.get("steps", []) or [])


# ------------------------------------------------------------------ files, schema, zizmor


def test_both_workflows_exist() -> None:
    assert CI in WORKFLOW_FILES and PIPELINE in WORKFLOW_FILES, WORKFLOW_FILES


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_workflow_matches_githubs_schema(path: Path) -> None:
    result = subprocess.run(
        [str(tool("check-jsonschema")), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  build:\n    steps: not-a-list\n", encoding="utf-8")
    result = subprocess.run(
        [str(tool("check-jsonschema")), "--builtin-schema", "vendor.github-workflows", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0, result.stdout


def zizmor_findings(paths: list[Path], cwd: Path) -> list[dict]:
    """zizmor's JSON findings; --no-ignores so that inline ignore comments cannot hide one."""
    result = subprocess.run(
        [
            str(tool("zizmor")),
            "--offline",
            "--no-progress",
            "--no-config",
            "--no-ignores",
            "--format",
            "json",
            *map(str, paths),
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # Exit codes 10-14 mean "findings reported"; anything else non-zero is a tool failure.
    assert result.returncode == 0 or 10 <= result.returncode <= 14, result.stderr
    return json.loads(result.stdout or "[]")


def describe(findings: list[dict]) -> str:
    lines = []
    for f in findings:
        where = f["locations"][0]["symbolic"]["key"]["Local"]["verbatim_path"] if f["locations"] else "?"
        row = f["locations"][0]["concrete"]["location"]["start_point"]["row"] + 1 if f["locations"] else 0
        lines.append(f"{f['determinations']['severity']} {f['ident']} at {where}:{row}: {f['desc']}")
    return "\n".join(lines)


def test_zizmor_finds_no_high_severity_issue() -> None:
    findings = zizmor_findings(WORKFLOW_FILES, REPO)
    high = [f for f in findings if f["determinations"]["severity"] == "High"]
    assert high == [], describe(high)


def test_zizmor_flags_a_planted_insecure_workflow(tmp_path: Path) -> None:
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    bad = workflows / "bad.yml"
    bad.write_text(
        "name: bad\non:\n  pull_request:\npermissions:\n  contents: read\njobs:\n  x:\n"
        "    runs-on: ubuntu-24.04\n    steps:\n      - uses: actions/checkout@v4\n"
        '      - run: echo "${{ github.event.pull_request.title }}"\n',
        encoding="utf-8",
    )
    high = {f["ident"] for f in zizmor_findings([bad], tmp_path) if f["determinations"]["severity"] == "High"}
    assert {"template-injection", "unpinned-uses"} <= high, high


# ------------------------------------------------------------------ pins, checkouts, expressions


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit_with_its_version(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "uses:" in text
    assert unpinned_uses(text) == []


def test_pin_checker_flags_tags_branches_and_missing_comments() -> None:
    planted = (
        "      - uses: actions/checkout@v4\n"
        "      - uses: google-github-actions/auth@main\n"
        "      - uses: actions/setup-python@a309ff8b426b58ec0e2a45f0f869d46889d02405\n"
        "      - uses: actions/upload-artifact@043fb46d1a93c77aae656e7c1c64a875d1fc6a0a # v7.0.1\n"
        "      - uses: ./.github/actions/local\n"
    )
    problems = unpinned_uses(planted)
    assert len(problems) == 3, problems
    assert "actions/checkout@v4" in problems[0] and "auth@main" in problems[1]
    assert "version comment" in problems[2]


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_every_checkout_drops_the_token(path: Path) -> None:
    checkouts = step_using(load(path), "actions/checkout")
    assert checkouts, f"{path.name} has no checkout step"
    for step in checkouts:
        assert (step.get("with") or {}).get("persist-credentials") is False, step


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_no_expression_inside_a_run_script(path: Path) -> None:
    assert expressions_in_run(load(path)) == []


def test_expression_checker_flags_a_planted_injection() -> None:
    planted = {
        "jobs": {
            "x": {
                "steps": [
                    {"name": "bad", "run": 'git checkout "${{ github.head_ref }}"'},
                    {"name": "also bad", "run": "echo ${{ steps.a.outputs.b }}"},
                    {"name": "good", "env": {"REF": "${{ github.head_ref }}"}, "run": 'git checkout "$REF"'},
                ]
            }
        }
    }
    assert expressions_in_run(planted) == ["x / bad (untrusted input!)", "x / also bad"]


# ------------------------------------------------------------------ permissions


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_token_permissions_are_minimal_and_id_token_is_job_level(path: Path) -> None:
    workflow = load(path)
    assert workflow.get("permissions") in ({}, {"contents": "read"}), workflow.get("permissions")
    for job_id, job in workflow["jobs"].items():
        permissions = job.get("permissions")
        assert isinstance(permissions, dict), f"{job_id} must declare its permissions"
        wants_token = job_uses(job, "google-github-actions/auth") or job_uses(job, "actions/deploy-pages")
        assert (permissions.get("id-token") == "write") == wants_token, (job_id, permissions)
        assert "write-all" not in str(permissions)


def test_only_the_pipeline_and_pages_jobs_can_mint_identity_tokens() -> None:
    pipeline = load(PIPELINE)
    minting = sorted(
        j for j, job in pipeline["jobs"].items() if job["permissions"].get("id-token") == "write"
    )
    assert minting == ["argo", "deploy-serving", "image", "migrate", "pages", "pipeline"]
    assert all(job["permissions"].get("id-token") is None for job in load(CI)["jobs"].values())


# ------------------------------------------------------------------ CI workflow


def test_ci_runs_on_pull_requests_and_pushes() -> None:
    on = triggers(load(CI))
    assert "pull_request" in on and "push" in on


def test_ci_lints_and_runs_the_readme_test_command() -> None:
    ci = load(CI)
    assert step_running(ci, "make lint")
    assert step_running(ci, "make test")
    assert ci["env"]["METAFLOW_USER"] not in ("", "root")


def test_ci_caches_pip_on_the_requirements_and_cancels_superseded_runs() -> None:
    ci = load(CI)
    for step in step_using(ci, "actions/setup-python"):
        options = step["with"]
        assert str(options["python-version"]) == "3.11"
        assert options["cache"] == "pip"
        assert "requirements.lock" in options["cache-dependency-path"]
        assert "requirements-dev.lock" in options["cache-dependency-path"]
    assert ci["concurrency"]["cancel-in-progress"] is True
    assert "github.ref" in ci["concurrency"]["group"]


# ------------------------------------------------------------------ pipeline workflow


def test_pipeline_triggers_cover_push_pr_schedule_dispatch_and_new_data() -> None:
    on = triggers(load(PIPELINE))
    assert on["push"]["branches"] == ["main"]
    assert "data/manifest.json" in on["push"]["paths"]
    assert on["pull_request"]["branches"] == ["main"]
    crons = [entry["cron"] for entry in on["schedule"]]
    assert len(crons) == 1 and len(crons[0].split()) == 5
    assert crons[0].split()[2:4] == ["*", "*"], "weekly: every month, every day of month"
    inputs = on["workflow_dispatch"]["inputs"]
    assert {"svm_max_candidates", "dnn_max_trials", "dnn_max_epochs", "split_protocol"} <= set(inputs)
    assert inputs["split_protocol"]["type"] == "choice"
    assert inputs["split_protocol"]["options"] == ["auto", "grouped", "random"]


def test_budgets_and_protocol_reach_make_under_the_settings_names() -> None:
    job = load(PIPELINE)["jobs"]["pipeline"]
    settings_source = (REPO / "modules" / "settings.py").read_text(encoding="utf-8")
    for name, source in zip(
        PROMOTION_ENV,
        [
            "inputs.svm_max_candidates",
            "inputs.dnn_max_trials",
            "inputs.dnn_max_epochs",
            "inputs.split_protocol",
        ],
        strict=True,
    ):
        assert source in job["env"][name], (name, job["env"].get(name))
        assert f'"{name}"' in settings_source, f"modules/settings.py does not read {name}"
    for name in ("MODEL_NAME_PREFIX", "MLFLOW_EXPERIMENT_NAME", "POSTGRES_HOST", "POSTGRES_PORT"):
        assert f'"{name}"' in settings_source, f"modules/settings.py does not read {name}"


def job_steps(workflow: dict, job_id: str) -> list[dict]:
    return workflow["jobs"][job_id].get("steps", [])


def job_as_workflow(workflow: dict, job_id: str) -> dict:
    return {"jobs": {job_id: workflow["jobs"][job_id]}}


@pytest.mark.parametrize("job_id", ["migrate", "pipeline"])
def test_production_jobs_authenticate_with_workload_identity_from_environment_variables(job_id: str) -> None:
    job = job_as_workflow(load(PIPELINE), job_id)
    (auth,) = step_using(job, "google-github-actions/auth")
    assert auth["with"] == {
        "workload_identity_provider": "${{ vars.GCP_WORKLOAD_IDENTITY_PROVIDER }}",
        "service_account": "${{ vars.GCP_SERVICE_ACCOUNT }}",
    }
    (gcloud,) = step_using(job, "google-github-actions/setup-gcloud")
    assert "cloud-sql-proxy" in gcloud["with"]["install_components"]
    names = [step.get("uses", step.get("run", "")) for _, step in steps(job)]
    first = {
        key: next(i for i, n in enumerate(names) if key in str(n))
        for key in ("actions/checkout", "google-github-actions/auth", "google-github-actions/setup-gcloud")
    }
    assert (
        first["actions/checkout"]
        < first["google-github-actions/auth"]
        < first["google-github-actions/setup-gcloud"]
    )


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_setup_gcloud_installs_a_pinned_sdk_version(path: Path) -> None:
    for step in step_using(load(path), "google-github-actions/setup-gcloud"):
        version = str((step.get("with") or {}).get("version", ""))
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"setup-gcloud version {version!r} is not pinned"


def make_order(workflow: dict, job_id: str, targets: tuple[str, ...]) -> list[int]:
    scripts = [str(step.get("run", "")).strip() for step in job_steps(workflow, job_id)]
    return [scripts.index(f"make {target}") for target in targets]


def test_production_runs_the_make_targets_in_order_and_always_stops_the_server() -> None:
    pipeline = load(PIPELINE)
    order = make_order(pipeline, "pipeline", ("install", "data", "eda", "tune", "train"))
    assert order == sorted(order)
    job = job_as_workflow(pipeline, "pipeline")
    stop = step_running(job, "make stop")
    assert stop["if"] == "always()"
    server = step_running(job, "make mlflow_server")
    assert server["env"]["POSTGRES_PASSWORD"] == "${{ secrets.POSTGRES_PASSWORD }}"
    assert server["env"]["MLFLOW_ARTIFACT_ROOT"] == "${{ vars.MLFLOW_ARTIFACT_ROOT }}"
    proxy = step_running(job, "start_cloud_sql_proxy.sh")
    assert proxy["env"] == {"CLOUD_SQL_CONNECTION_NAME": "${{ vars.CLOUD_SQL_CONNECTION_NAME }}"}
    script = (REPO / ".github" / "scripts" / "start_cloud_sql_proxy.sh").read_text(encoding="utf-8")
    assert "--address 127.0.0.1" in script
    data = step_running(job, "make data")
    assert data["env"] == {
        "KAGGLE_USERNAME": "${{ secrets.KAGGLE_USERNAME }}",
        "KAGGLE_KEY": "${{ secrets.KAGGLE_KEY }}",
    }
    assert pipeline["jobs"]["pipeline"]["env"]["PIPELINE_ENV"] == "production"


def test_pull_requests_rehearse_the_whole_pipeline_on_embedded_defaults() -> None:
    pipeline = load(PIPELINE)
    order = make_order(pipeline, "rehearsal", ("install", "sample", "eda", "tune", "train"))
    assert order == sorted(order)
    job = pipeline["jobs"]["rehearsal"]
    assert job["env"]["PIPELINE_ENV"] == "local"
    assert not any(k.startswith(("POSTGRES_", "MLFLOW_TRACKING")) for k in job["env"])
    (artifact,) = step_using(job_as_workflow(pipeline, "rehearsal"), "actions/upload-artifact")
    assert artifact["with"]["path"].rstrip("/") == "reports"
    assert (
        "pipeline_summary.py"
        in step_running(job_as_workflow(pipeline, "rehearsal"), "pipeline_summary.py")["run"]
    )


def test_cloud_steps_are_skipped_when_no_identity_token_exists() -> None:
    job = job_as_workflow(load(PIPELINE), "pipeline")
    detect = next(step for _, step in steps(job) if step.get("id") == "cloud")
    assert "ACTIONS_ID_TOKEN_REQUEST_URL" in detect["run"]
    assert "GITHUB_STEP_SUMMARY" in detect["run"] and "skipped" in detect["run"].lower()
    guarded = [
        *step_using(job, "google-github-actions/auth"),
        *step_using(job, "google-github-actions/setup-gcloud"),
        *(step_running(job, f"make {t}") for t in ("data", "eda", "tune", "train")),
    ]
    for step in guarded:
        condition = str(step.get("if", ""))
        assert "steps.cloud.outputs.available" in condition or "steps.tracking.outputs" in condition, step


def test_pipeline_publishes_reports_and_a_job_summary() -> None:
    pipeline = load(PIPELINE)
    (artifact,) = step_using(job_as_workflow(pipeline, "pipeline"), "actions/upload-artifact")
    assert artifact["with"]["path"].rstrip("/") == "reports"
    summary = step_running(job_as_workflow(pipeline, "pipeline"), ".github/scripts/pipeline_summary.py")
    assert "GITHUB_STEP_SUMMARY" in summary["run"] and "promotion.json" in summary["run"]
    assert (REPO / ".github" / "scripts" / "pipeline_summary.py").is_file()
    assert step_using(pipeline, "actions/upload-pages-artifact")
    pages = pipeline["jobs"]["pages"]
    assert pages["needs"] == "pipeline"
    assert pages["permissions"] == {"pages": "write", "id-token": "write"}
    assert pages["environment"]["name"] == "github-pages"
    assert "refs/heads/main" in pages["if"]
    assert job_uses(pages, "actions/deploy-pages")


def test_secrets_reach_steps_only_through_env_and_are_never_echoed() -> None:
    for path in WORKFLOW_FILES:
        for job_id, step in steps(load(path)):
            script = str(step.get("run", ""))
            assert "secrets." not in script, (path.name, job_id, step.get("name"))
            for name, value in (step.get("env") or {}).items():
                if "secrets." in str(value):
                    assert not re.search(rf"echo[^\n|>]*\${{?{name}\b", script), (path.name, name)


# ------------------------------------------------------------------ who runs what: PR path vs production


def dispatch_inputs(workflow: dict, context: dict[str, str]) -> dict[str, str]:
    """`inputs.NAME` as GitHub fills them: a dispatch gets each input's default, other events none ('')."""
    declared = ((triggers(workflow).get("workflow_dispatch") or {}).get("inputs")) or {}
    dispatched = context.get("github.event_name") == "workflow_dispatch"
    return {
        f"inputs.{name}": str(spec.get("default", "")) if dispatched else ""
        for name, spec in declared.items()
    }


def jobs_that_run(workflow: dict, context: dict[str, str]) -> list[str]:
    """Jobs whose `if:` holds for `context` and whose `needs` all run (job `if`s only, step `if`s ignored).

    A job output read in an `if:` (needs.X.outputs.Y) counts as 'true', the worst case. Inputs the
    context does not give take what GitHub would (dispatch_inputs).
    """
    jobs = workflow["jobs"]
    running: dict[str, bool] = {}
    given = {**dispatch_inputs(workflow, context), **context}

    def runs(job_id: str) -> bool:
        if job_id not in running:
            job = jobs[job_id]
            needs = job.get("needs", [])
            needs = [needs] if isinstance(needs, str) else needs
            names = dict(given)
            for need in needs:
                for output in jobs[need].get("outputs", {}):
                    names[f"needs.{need}.outputs.{output}"] = "true"
            condition = job.get("if")
            allowed = True if condition is None else bool(evaluate(str(condition), names))
            running[job_id] = allowed and all(runs(need) for need in needs)
        return running[job_id]

    return sorted(job_id for job_id in jobs if runs(job_id))


def production_references(job: dict) -> list[str]:
    """Secrets, cloud variables, identity tokens, environments and migrations a job touches."""
    text = yaml.safe_dump(job, sort_keys=False)
    found = sorted(set(PRODUCTION_MARKERS.findall(text)))
    if job.get("environment"):
        found.append(f"environment {job['environment']}")
    return found


def make_targets_reached(target: str, makefile: str) -> set[str]:
    """`target` and every target its prerequisites or `$(MAKE) ...` recipe lines lead to."""
    rules: dict[str, tuple[list[str], str]] = {}
    current = None
    for line in makefile.splitlines():
        rule = re.match(r"^([A-Za-z0-9_.-]+):(?!=)([^#]*)", line)
        if rule:
            current = rule.group(1)
            prerequisites = rule.group(2).split("|")[0].split()
            rules[current] = ([p for p in prerequisites if not p.startswith("$")], "")
        elif line.startswith("\t") and current:
            rules[current] = (rules[current][0], rules[current][1] + line + "\n")
        elif line.strip() and not line.startswith("#"):
            current = None
    reached: set[str] = set()
    todo = [target]
    while todo:
        name = todo.pop()
        if name in reached or name not in rules:
            continue
        reached.add(name)
        prerequisites, recipe = rules[name]
        todo += prerequisites
        todo += re.findall(r"\$\(MAKE\)[^\n]*?\s([a-z_-]+)\s*$", recipe, flags=re.MULTILINE)
    return reached


def make_recipe_text(targets: set[str], makefile: str) -> str:
    lines, keep = [], False
    for line in makefile.splitlines():
        rule = re.match(r"^([A-Za-z0-9_.-]+):(?!=)", line)
        if rule:
            keep = rule.group(1) in targets
        if keep:
            lines.append(line)
    return "\n".join(lines)


@pytest.mark.parametrize(
    "context", [PULL_REQUEST, BRANCH_DISPATCH], ids=["pull_request", "dispatch-on-branch"]
)
def test_pull_requests_and_branches_run_only_the_rehearsal(context: dict[str, str]) -> None:
    assert jobs_that_run(load(PIPELINE), context) == ["rehearsal"]


@pytest.mark.parametrize("context", PRODUCTION_EVENTS, ids=lambda c: c["github.event_name"])
def test_main_runs_production_and_not_the_rehearsal(context: dict[str, str]) -> None:
    assert jobs_that_run(load(PIPELINE), context) == [
        "deploy-serving",
        "image",
        "migrate",
        "pages",
        "pipeline",
    ]


def test_the_pull_request_path_has_no_secret_identity_environment_or_migration() -> None:
    pipeline = load(PIPELINE)
    makefile = MAKEFILE.read_text(encoding="utf-8")
    for context in (PULL_REQUEST, BRANCH_DISPATCH):
        for job_id in jobs_that_run(pipeline, context):
            job = pipeline["jobs"][job_id]
            assert production_references(job) == [], job_id
            assert (job.get("permissions") or {}).get("id-token") is None
            # Nor through make: no target it runs leads to a migration.
            for script in (str(step.get("run", "")) for step in job.get("steps", [])):
                for target in re.findall(r"\bmake ([a-z_-]+)", script):
                    reached = make_targets_reached(target, makefile)
                    assert "db_upgrade" not in reached, (job_id, target)
                    assert "db-upgrade" not in make_recipe_text(reached, makefile), (job_id, target)


def test_the_checkers_flag_the_old_shared_identity_design() -> None:
    """One job for pull requests and main, secrets outside an environment, db_upgrade on PRs."""
    old = {
        "jobs": {
            "pipeline": {
                "permissions": {"contents": "read", "id-token": "write"},
                "env": {
                    "PIPELINE_ENV": "${{ github.event_name != 'pull_request' && 'production' || 'local' }}"
                },
                "steps": [
                    {"uses": "google-github-actions/auth@" + "0" * 40},
                    {
                        "run": "make db_upgrade",
                        "env": {"POSTGRES_PASSWORD": "${{ secrets.POSTGRES_PASSWORD }}"},
                    },
                ],
            }
        }
    }
    assert jobs_that_run(old, PULL_REQUEST) == ["pipeline"]
    assert {"secrets.", "id-token", "db_upgrade", "google-github-actions/auth"} <= set(
        production_references(old["jobs"]["pipeline"])
    )
    assert "db_upgrade" in make_targets_reached("db_upgrade", MAKEFILE.read_text(encoding="utf-8"))


def test_every_job_that_reads_a_secret_runs_in_the_production_environment() -> None:
    for path in WORKFLOW_FILES:
        for job_id, job in load(path)["jobs"].items():
            if "secrets." in yaml.safe_dump(job):
                assert job.get("environment") == "production", (path.name, job_id)


def test_migrations_run_only_in_their_own_serialised_job_before_training() -> None:
    pipeline = load(PIPELINE)
    with_migrations = [
        job_id
        for job_id, job in pipeline["jobs"].items()
        if re.search(r"db_upgrade|db-upgrade", yaml.safe_dump(job))
    ]
    assert with_migrations == ["migrate"]
    migrate = pipeline["jobs"]["migrate"]
    assert migrate["environment"] == "production"
    assert migrate["concurrency"]["cancel-in-progress"] is False
    assert "${{" not in migrate["concurrency"]["group"], "one group for every run, so two never overlap"
    assert pipeline["jobs"]["pipeline"]["needs"] == "migrate"
    assert step_running(job_as_workflow(pipeline, "migrate"), "make db_upgrade")["env"][
        "POSTGRES_PASSWORD"
    ] == ("${{ secrets.POSTGRES_PASSWORD }}")


# ------------------------------------------------------------------ zizmor, pedantic


def zizmor_persona_findings(persona: str) -> list[dict]:
    result = subprocess.run(
        [
            str(tool("zizmor")),
            "--offline",
            "--no-progress",
            "--no-config",
            "--no-ignores",
            f"--persona={persona}",
            "--format",
            "json",
            *map(str, WORKFLOW_FILES),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0 or 10 <= result.returncode <= 14, result.stderr
    return json.loads(result.stdout or "[]")


def explained(finding: dict) -> bool:
    """A finding accepted by a `# zizmor: ignore[ident] reason` comment on its own line."""
    location = finding["locations"][0]
    path = REPO / location["symbolic"]["key"]["Local"]["given_path"]
    line = path.read_text(encoding="utf-8").splitlines()[
        location["concrete"]["location"]["start_point"]["row"]
    ]
    comment = re.search(rf"#\s*zizmor:\s*ignore\[{re.escape(finding['ident'])}\]\s*(.*)$", line)
    return bool(comment and len(comment.group(1).strip()) >= 15)


@pytest.mark.parametrize("persona", ["pedantic", "auditor"])
def test_zizmor_finds_nothing_of_medium_or_higher_severity(persona: str) -> None:
    findings = [
        f
        for f in zizmor_persona_findings(persona)
        if f["determinations"]["severity"] in ("Medium", "High") and not explained(f)
    ]
    assert findings == [], describe(findings)


# ------------------------------------------------------------------ reproducible installs


def pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line (extras and markers dropped)."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^\s;\\]+)", line)
        if match:
            found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return found


@pytest.mark.parametrize(
    ("source", "lock"),
    [("requirements.txt", "requirements.lock"), ("requirements-dev.txt", "requirements-dev.lock")],
)
def test_lock_files_pin_every_requirement_with_hashes(source: str, lock: str) -> None:
    wanted = pins(REPO / source)
    if source == "requirements-dev.txt":
        wanted |= pins(REPO / "requirements.txt")
    locked = pins(REPO / lock)
    stale = {
        name: (version, locked.get(name)) for name, version in wanted.items() if locked.get(name) != version
    }
    assert stale == {}, f"{lock} is out of date (wanted, locked): run `make lock`"
    text = (REPO / lock).read_text(encoding="utf-8")
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    unhashed = [e.split()[0] for e in entries if "==" in e and "--hash=sha256:" not in e]
    assert unhashed == []


def test_runtime_lock_agrees_with_the_dev_lock() -> None:
    """The tests run on exactly the versions the pipeline installs."""
    runtime, dev = pins(REPO / "requirements.lock"), pins(REPO / "requirements-dev.lock")
    assert {n: (v, dev.get(n)) for n, v in runtime.items() if dev.get(n) != v} == {}


def test_installs_use_the_hash_locked_files() -> None:
    makefile = MAKEFILE.read_text(encoding="utf-8")
    installs = re.findall(r"\$\(PIP\) install[^\n]*-r [^\n]*", makefile)
    assert installs and all("--require-hashes" in i and ".lock" in i for i in installs), installs
    assert re.search(r"^lock:.*##", makefile, flags=re.MULTILINE), "`make lock` regenerates the locks"
    for path in WORKFLOW_FILES:
        for job_id, step in steps(load(path)):
            script = str(step.get("run", ""))
            for command in re.findall(r"pip install[^\n]*", script):
                assert "--require-hashes" in command, (path.name, job_id, command)


# ------------------------------------------------------------------ engine: this runner or Argo Workflows

ENGINES = ("runner", "argo")
EVENTS = ("push", "schedule", "workflow_dispatch", "pull_request")
REFS = ("refs/heads/main", "refs/heads/feature", "refs/pull/7/merge")
ARGO_DISPATCH = {
    "github.event_name": "workflow_dispatch",
    "github.ref": "refs/heads/main",
    "inputs.engine": "argo",
}
TUNING_FLOW = REPO / "metaflows_flow" / "tuning_flow.py"
# The budget inputs and the TuningFlow parameters they become on Argo.
BUDGET_PARAMETERS = {
    "svm_max_candidates": ("SVM_MAX_CANDIDATES", "svm-max-candidates"),
    "dnn_max_trials": ("DNN_MAX_TRIALS", "dnn-max-trials"),
    "dnn_max_epochs": ("DNN_MAX_EPOCHS", "dnn-max-epochs"),
    "split_protocol": ("SPLIT_PROTOCOL", "split-protocol"),
}


def contexts() -> Iterator[dict[str, str]]:
    """Every event, ref and engine (push and schedule carry no input: engine '')."""
    for event in EVENTS:
        for ref in REFS:
            for engine in ENGINES if event == "workflow_dispatch" else ("",):
                yield {"github.event_name": event, "github.ref": ref, "inputs.engine": engine}


def is_argo_dispatch_on_main(context: dict[str, str]) -> bool:
    return context == ARGO_DISPATCH


def test_the_engine_input_chooses_runner_or_argo_and_defaults_to_the_runner() -> None:
    engine = triggers(load(PIPELINE))["workflow_dispatch"]["inputs"]["engine"]
    assert engine["type"] == "choice"
    assert engine["options"] == ["runner", "argo"]
    assert engine["default"] == "runner"
    assert engine.get("required", False) is False and engine["description"]


def test_the_argo_job_runs_only_for_a_dispatch_with_engine_argo_on_main() -> None:
    pipeline = load(PIPELINE)
    argo = pipeline["jobs"]["argo"]
    for context in contexts():
        assert bool(evaluate(argo["if"], context)) is is_argo_dispatch_on_main(context), context
    assert argo["environment"] == "production"
    assert argo["needs"] == "image", "it deploys the images this run pushed"
    assert jobs_that_run(pipeline, ARGO_DISPATCH) == ["argo", "image"]


def test_the_runner_path_is_skipped_for_engine_argo_and_unchanged_otherwise() -> None:
    pipeline = load(PIPELINE)
    runner_path = {"migrate", "pipeline", "deploy-serving", "pages"}
    for context in contexts():
        running = set(jobs_that_run(pipeline, context))
        if is_argo_dispatch_on_main(context):
            assert not running & runner_path, running
        elif context["github.event_name"] != "pull_request" and context["github.ref"] == "refs/heads/main":
            assert running == runner_path | {"image"}, context
        else:
            assert running == {"rehearsal"}, context
    # The default of a dispatch (no engine given) is the runner, as before the input existed.
    dispatch = {"github.event_name": "workflow_dispatch", "github.ref": "refs/heads/main"}
    assert "pipeline" in jobs_that_run(pipeline, dispatch) and "argo" not in jobs_that_run(pipeline, dispatch)


def test_the_checker_flags_an_argo_job_without_the_engine_or_event_check() -> None:
    pipeline = load(PIPELINE)

    def with_condition(condition: str, *job_ids: str) -> dict:
        jobs = {**pipeline["jobs"], **{j: {**pipeline["jobs"][j], "if": condition} for j in job_ids}}
        return {**pipeline, "jobs": jobs}

    loose = with_condition("github.ref == 'refs/heads/main'", "argo")
    assert "argo" in jobs_that_run(loose, PRODUCTION_EVENTS[0]), "push would deploy to Argo"
    greedy = with_condition("github.ref == 'refs/heads/main'", "migrate", "pipeline")
    assert "pipeline" in jobs_that_run(greedy, ARGO_DISPATCH), "engine argo would also train in the runner"


def test_the_argo_job_has_only_a_read_token_and_an_identity_token() -> None:
    argo = load(PIPELINE)["jobs"]["argo"]
    assert argo["permissions"] == {"contents": "read", "id-token": "write"}
    assert "secrets." not in yaml.safe_dump(argo), "it needs no secret: Workload Identity and IAM only"
    assert argo["concurrency"]["cancel-in-progress"] is False
    assert "${{" not in argo["concurrency"]["group"], "one deployment at a time, whatever run starts it"


def test_the_argo_job_pins_every_action_to_a_commit() -> None:
    argo = load(PIPELINE)["jobs"]["argo"]
    used = [str(step["uses"]) for step in argo["steps"] if "uses" in step]
    assert {u.split("@")[0] for u in used} >= {
        "actions/checkout",
        "google-github-actions/auth",
        "google-github-actions/setup-gcloud",
        "actions/setup-python",
    }
    assert all(SHA_PINNED.match(u) for u in used), used
    assert unpinned_uses(yaml.safe_dump({"uses": "google-github-actions/auth@v3"})) != []


def test_the_argo_job_acts_as_its_own_account_and_reaches_the_cluster_by_its_dns_endpoint() -> None:
    job = job_as_workflow(load(PIPELINE), "argo")
    (auth,) = step_using(job, "google-github-actions/auth")
    assert auth["with"] == {
        "workload_identity_provider": "${{ vars.GCP_WORKLOAD_IDENTITY_PROVIDER }}",
        "service_account": "${{ vars.GCP_ARGO_SERVICE_ACCOUNT }}",
    }, "the argo-deployer account, not the pipeline's"
    (gcloud,) = step_using(job, "google-github-actions/setup-gcloud")
    assert gcloud["with"]["install_components"] == "gke-gcloud-auth-plugin,kubectl"
    credentials = step_running(job, "gcloud container clusters get-credentials")
    assert "--dns-endpoint" in credentials["run"]
    assert credentials["env"] == {
        "GKE_CLUSTER": "${{ vars.GKE_CLUSTER }}",
        "GKE_LOCATION": "${{ vars.GKE_LOCATION }}",
        "GKE_PROJECT": "${{ vars.GKE_PROJECT }}",
    }
    outputs = (REPO / "infra" / "terraform" / "outputs_gke.tf").read_text(encoding="utf-8")
    assert "get-credentials ${var.gke_cluster_name} --region ${var.region}" in outputs
    assert "--dns-endpoint" in outputs


def test_the_argo_job_deploys_with_the_gke_profile_then_starts_tuning_with_the_budgets() -> None:
    pipeline = load(PIPELINE)
    argo = pipeline["jobs"]["argo"]
    assert argo["env"]["METAFLOW_PROFILE"] == "gke"
    assert argo["env"]["METAFLOW_HOME"].endswith("/infra/metaflow")
    assert (REPO / "infra" / "metaflow" / f"config_{argo['env']['METAFLOW_PROFILE']}.json").is_file()
    scripts = [str(step.get("run", "")).strip() for step in argo["steps"]]
    deploy = next(i for i, s in enumerate(scripts) if s == "make deploy-argo")
    trigger = next(i for i, s in enumerate(scripts) if s.startswith("make trigger-argo"))
    credentials = next(i for i, s in enumerate(scripts) if "get-credentials" in s)
    assert credentials < deploy < trigger
    # The images this run pushed, by digest; no budget at deploy time (the weekly cron keeps the defaults).
    deploy_env = argo["steps"][deploy]["env"]
    assert deploy_env["METAFLOW_KUBERNETES_CONTAINER_IMAGE"] == "${{ needs.image.outputs.pipeline }}"
    assert deploy_env["GPU_STEP_IMAGE"] == "${{ needs.image.outputs.pipeline_gpu }}"
    assert not set(deploy_env) & set(PROMOTION_ENV) and not set(argo["env"]) & set(PROMOTION_ENV)
    # The budgets reach the trigger through env, as the flow parameters they map to.
    trigger_env = argo["steps"][trigger]["env"]
    flow = TUNING_FLOW.read_text(encoding="utf-8")
    makefile = MAKEFILE.read_text(encoding="utf-8")
    for source, (name, parameter) in BUDGET_PARAMETERS.items():
        assert trigger_env[name] == f"${{{{ inputs.{source} }}}}", name
        assert f'Parameter(\n        "{parameter}"' in flow or f'Parameter("{parameter}"' in flow, parameter
        assert f'--{parameter} "$${name}"' in makefile, parameter
    assert "RUN_ID_FILE=" in scripts[trigger]


def test_the_argo_job_reports_the_run_and_does_not_wait_for_it() -> None:
    argo = load(PIPELINE)["jobs"]["argo"]
    summary = step_running({"jobs": {"argo": argo}}, "GITHUB_STEP_SUMMARY")
    assert "argo-run-id" in summary["run"] and "$run_id" in summary["run"]
    assert "argo-run-id" in next(s["run"] for s in argo["steps"] if "trigger-argo" in str(s.get("run")))
    everything = yaml.safe_dump(argo)
    for waiting in ("--wait", "argo wait", "kubectl wait", "watch", "sleep"):
        assert waiting not in everything, waiting
    assert argo["timeout-minutes"] <= 60


def test_the_argo_job_refuses_a_budget_that_is_not_a_whole_number(tmp_path: Path) -> None:
    """Run the job's own check script with good and bad budgets."""
    argo = load(PIPELINE)["jobs"]["argo"]
    check = next(s for s in argo["steps"] if "Bad budget" in str(s.get("run", "")))
    script = tmp_path / "check.sh"
    script.write_text(check["run"], encoding="utf-8")
    configured = {
        "WORKLOAD_IDENTITY_PROVIDER": "projects/1/locations/global/workloadIdentityPools/p/providers/g",
        "SERVICE_ACCOUNT": "argo-deployer@p.iam.gserviceaccount.com",
        "GKE_CLUSTER": "operational-ml",
        "GKE_LOCATION": "us-central1",
        "GKE_PROJECT": "p",
        "PIPELINE_IMAGE": "r/pipeline@sha256:" + "0" * 64,
        "PATH": "/usr/bin:/bin",
    }

    def status(**changes: str) -> int:
        env = {**configured, "SVM_MAX_CANDIDATES": "", "DNN_MAX_TRIALS": "", "DNN_MAX_EPOCHS": "", **changes}
        return subprocess.run(
            ["bash", "-e", str(script)], env=env, capture_output=True, check=False
        ).returncode

    assert status() == 0
    assert status(SVM_MAX_CANDIDATES="24", DNN_MAX_TRIALS="4", DNN_MAX_EPOCHS="20") == 0
    for bad in ("0", "-1", "2.5", "1; echo x", "$(id)", "1e3"):
        assert status(SVM_MAX_CANDIDATES=bad) != 0, bad
    assert status(GKE_CLUSTER="") != 0
    assert status(PIPELINE_IMAGE="r/pipeline:latest") != 0


def test_trigger_argo_reads_budgets_from_the_environment_without_make_expanding_them() -> None:
    planted = "$(shell echo EXPANDED-BY-MAKE >&2)"
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", "trigger-argo", "RUN_ID_FILE=/tmp/run-id"],
        cwd=REPO,
        env={
            **_plain_env(),
            "SVM_MAX_CANDIDATES": planted,
            "DNN_MAX_TRIALS": "4",
            "SPLIT_PROTOCOL": "grouped",
            "SEARCH_CHUNKS": "3",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "EXPANDED-BY-MAKE" not in result.stdout + result.stderr
    command = result.stdout[result.stdout.index("tuning_flow.py") :]
    assert "argo-workflows trigger" in command
    assert '--svm-max-candidates "$SVM_MAX_CANDIDATES"' in command
    assert '--dnn-max-trials "$DNN_MAX_TRIALS"' in command
    assert '--split-protocol "$SPLIT_PROTOCOL"' in command
    assert '--search-chunks "$SEARCH_CHUNKS"' in command
    assert "--dnn-max-epochs" not in command, "an empty budget keeps the template's value"
    assert '--run-id-file "$RUN_ID_FILE"' in command
    assert "METAFLOW_PROFILE=gke" in result.stdout and "infra/metaflow" in result.stdout


def _plain_env() -> dict[str, str]:
    """The test's environment without the budgets and Metaflow profile a developer may have set."""
    dropped = (
        *PROMOTION_ENV,
        "METAFLOW_PROFILE",
        "METAFLOW_HOME",
        "RUN_ID_FILE",
        "MAKEFLAGS",
        "SEARCH_CHUNKS",
    )
    return {k: v for k, v in os.environ.items() if k not in dropped}


# ------------------------------------------------------------------ Argo: the metadata service through a port-forward

PORT_FORWARD_SCRIPT = REPO / ".github" / "scripts" / "start_metadata_port_forward.sh"
GKE_PROFILE = REPO / "infra" / "metaflow" / "config_gke.json"


def test_the_argo_job_reaches_the_metadata_service_through_a_port_forward_for_deploy_and_trigger() -> None:
    argo = load(PIPELINE)["jobs"]["argo"]
    scripts = [str(step.get("run", "")).strip() for step in argo["steps"]]
    forward = scripts.index(f"bash {PORT_FORWARD_SCRIPT.relative_to(REPO)}")
    credentials = next(i for i, s in enumerate(scripts) if "get-credentials" in s)
    deploy = scripts.index("make deploy-argo")
    trigger = next(i for i, s in enumerate(scripts) if s.startswith("make trigger-argo"))
    assert credentials < forward < deploy < trigger
    step = argo["steps"][forward]
    assert step["id"] == "metadata" and "if" not in step
    local = f"http://127.0.0.1:{step['env']['LOCAL_PORT']}"
    assert local == "http://127.0.0.1:8080"
    for index in (deploy, trigger):
        assert argo["steps"][index]["env"]["METAFLOW_SERVICE_URL"] == local, scripts[index]
    # The pods keep the cluster address: the job never overrides the internal URL.
    everything = yaml.safe_dump(argo)
    assert "METAFLOW_SERVICE_INTERNAL_URL" not in everything
    assert "METAFLOW_SERVICE_URL" not in argo["env"], "only deploy and trigger talk to the service"
    profile = json.loads(GKE_PROFILE.read_text(encoding="utf-8"))
    assert ".svc:" in profile["METAFLOW_SERVICE_INTERNAL_URL"] and "127.0.0.1" not in json.dumps(profile)
    script = PORT_FORWARD_SCRIPT.read_text(encoding="utf-8")
    assert 'port-forward --address 127.0.0.1 "svc/$service"' in script


def test_the_argo_job_stops_the_port_forward_by_its_pid_even_after_a_failure() -> None:
    argo = load(PIPELINE)["jobs"]["argo"]
    stop = next(s for s in argo["steps"] if "PORT_FORWARD_PID" in str(s.get("run", "")))
    assert stop is argo["steps"][-1], "after every step that uses the port-forward"
    assert stop["if"] == "always() && steps.metadata.outputs.pid != ''"
    assert stop["env"] == {"PORT_FORWARD_PID": "${{ steps.metadata.outputs.pid }}"}
    assert stop["run"].startswith('kill "$PORT_FORWARD_PID"')
    assert "pkill" not in yaml.safe_dump(argo) and "killall" not in yaml.safe_dump(argo)


def _fake_kubectl(bin_dir: Path, behaviour: str) -> None:
    """A kubectl that records its arguments, then serves /ping on the local port, serves nothing, or fails."""
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "kubectl"
    fake.write_text(
        f"""#!{sys.executable}
import http.server, os, sys, time
with open(os.environ["FAKE_ARGS"], "w", encoding="utf-8") as handle:
    handle.write(" ".join(sys.argv[1:]))
behaviour = {behaviour!r}
if behaviour == "forbidden":
    print('error: pods "metaflow-metadata-5d9c" is forbidden: cannot create resource "pods/portforward"', file=sys.stderr)
    sys.exit(1)
if behaviour == "silent":
    time.sleep(3600)
local = int(sys.argv[-1].split(":")[0])

class Ping(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/ping" else 404)
        self.end_headers()
        self.wfile.write(b"pong")

print(f"Forwarding from 127.0.0.1:{{local}} -> 8080", flush=True)
http.server.HTTPServer(("127.0.0.1", local), Ping).serve_forever()
""",
        encoding="utf-8",
    )
    fake.chmod(0o755)


def _run_port_forward_script(tmp_path: Path, behaviour: str, profile: dict | None = None) -> tuple:
    """Run the job's script against a fake kubectl; its result, the pid it recorded, kubectl's arguments."""
    _fake_kubectl(tmp_path / "bin", behaviour)
    home = tmp_path / "metaflow"
    home.mkdir(exist_ok=True)
    config = profile if profile is not None else json.loads(GKE_PROFILE.read_text(encoding="utf-8"))
    (home / "config_gke.json").write_text(json.dumps(config), encoding="utf-8")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    output, args = tmp_path / "github_output", tmp_path / "kubectl-args"
    output.write_text("", encoding="utf-8")
    env = {
        "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "METAFLOW_HOME": str(home),
        "METAFLOW_PROFILE": "gke",
        "LOCAL_PORT": str(port),
        "GITHUB_OUTPUT": str(output),
        "RUNNER_TEMP": str(tmp_path),
        "FAKE_ARGS": str(args),
        "TRIES": "3",
    }
    result = subprocess.run(
        ["bash", str(PORT_FORWARD_SCRIPT)], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    pids = re.findall(r"^pid=(\d+)$", output.read_text(encoding="utf-8"), flags=re.MULTILINE)
    recorded = args.read_text(encoding="utf-8") if args.exists() else None
    return result, pids, recorded, port


def _stop(pids: list[str]) -> None:
    """End the fake kubectl this test started, by the pid the script recorded."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGTERM)


def test_the_port_forward_script_forwards_the_profiles_service_on_127_0_0_1_and_waits_for_ping(
    tmp_path: Path,
) -> None:
    result, pids, recorded, port = _run_port_forward_script(tmp_path, "serve")
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        assert len(pids) == 1, "pid=PID for the stop step"
        assert (
            recorded
            == f"-n operational-ml port-forward --address 127.0.0.1 svc/metaflow-metadata {port}:8080"
        )
        assert f"answers at http://127.0.0.1:{port}" in result.stdout
        os.kill(int(pids[0]), 0)  # still running for the steps that follow
    finally:
        _stop(pids)


def test_the_port_forward_script_fails_with_kubectls_words_when_kubectl_is_refused(tmp_path: Path) -> None:
    result, pids, _, _ = _run_port_forward_script(tmp_path, "forbidden")
    _stop(pids)
    assert result.returncode != 0
    assert "::error title=Port-forward failed::" in result.stdout
    assert 'cannot create resource "pods/portforward"' in result.stdout
    assert len(pids) == 1, "the pid is recorded before the wait, so the stop step runs anyway"


def test_the_port_forward_script_gives_up_after_its_tries_when_nothing_answers(tmp_path: Path) -> None:
    result, pids, _, _ = _run_port_forward_script(tmp_path, "silent")
    _stop(pids)
    assert result.returncode != 0
    assert "::error title=Metadata service unreachable::" in result.stdout
    assert "did not answer in 3 tries" in result.stdout and "svc/metaflow-metadata" in result.stdout


def test_the_port_forward_script_refuses_a_profile_without_a_cluster_address(tmp_path: Path) -> None:
    profile = {"METAFLOW_SERVICE_INTERNAL_URL": "http://127.0.0.1:8080"}
    result, pids, recorded, _ = _run_port_forward_script(tmp_path, "serve", profile)
    _stop(pids)
    assert result.returncode != 0 and recorded is None and pids == []
    assert "expected http://SERVICE.NAMESPACE.svc:PORT" in result.stdout + result.stderr
