"""The GitHub Actions workflows: schema, security audit, triggers, permissions, pins.

Everything here runs offline: check-jsonschema uses its vendored GitHub workflow
schema and zizmor runs with --offline. Each home-made checker is also run on a planted
bad snippet so that a checker that silently finds nothing would fail.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

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
    assert minting == ["pages", "pipeline"]
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
        assert "requirements.txt" in options["cache-dependency-path"]
        assert "requirements-dev.txt" in options["cache-dependency-path"]
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


def test_pipeline_authenticates_with_workload_identity_from_repository_variables() -> None:
    pipeline = load(PIPELINE)
    (auth,) = step_using(pipeline, "google-github-actions/auth")
    assert auth["with"] == {
        "workload_identity_provider": "${{ vars.GCP_WORKLOAD_IDENTITY_PROVIDER }}",
        "service_account": "${{ vars.GCP_SERVICE_ACCOUNT }}",
    }
    (gcloud,) = step_using(pipeline, "google-github-actions/setup-gcloud")
    assert "cloud-sql-proxy" in gcloud["with"]["install_components"]
    names = [step.get("uses", step.get("run", "")) for _, step in steps(pipeline)]
    first = {
        key: next(i for i, n in enumerate(names) if key in str(n))
        for key in ("actions/checkout", "google-github-actions/auth", "google-github-actions/setup-gcloud")
    }
    assert (
        first["actions/checkout"]
        < first["google-github-actions/auth"]
        < first["google-github-actions/setup-gcloud"]
    )


def test_pipeline_runs_the_make_targets_in_order_and_always_stops_the_server() -> None:
    pipeline = load(PIPELINE)
    scripts = [str(step.get("run", "")) for _, step in steps(pipeline)]
    order = [
        next(i for i, s in enumerate(scripts) if s.strip() == f"make {t}")
        for t in ("data", "eda", "tune", "train")
    ]
    assert order == sorted(order)
    stop = step_running(pipeline, "make stop")
    assert stop["if"] == "always()"
    server = step_running(pipeline, "make mlflow_server")
    assert server["env"]["POSTGRES_PASSWORD"] == "${{ secrets.POSTGRES_PASSWORD }}"
    assert server["env"]["MLFLOW_ARTIFACT_ROOT"] == "${{ vars.MLFLOW_ARTIFACT_ROOT }}"
    proxy = step_running(pipeline, "cloud-sql-proxy")
    assert "127.0.0.1" in proxy["run"]
    data = step_running(pipeline, "make data")
    assert data["env"] == {
        "KAGGLE_USERNAME": "${{ secrets.KAGGLE_USERNAME }}",
        "KAGGLE_KEY": "${{ secrets.KAGGLE_KEY }}",
    }


def test_cloud_steps_are_skipped_when_no_identity_token_exists() -> None:
    pipeline = load(PIPELINE)
    detect = next(step for _, step in steps(pipeline) if step.get("id") == "cloud")
    assert "ACTIONS_ID_TOKEN_REQUEST_URL" in detect["run"]
    assert "GITHUB_STEP_SUMMARY" in detect["run"] and "skipped" in detect["run"].lower()
    guarded = [
        *step_using(pipeline, "google-github-actions/auth"),
        *step_using(pipeline, "google-github-actions/setup-gcloud"),
        *(step_running(pipeline, f"make {t}") for t in ("data", "eda", "tune", "train")),
    ]
    for step in guarded:
        condition = str(step.get("if", ""))
        assert "steps.cloud.outputs.available" in condition or "steps.tracking.outputs" in condition, step


def test_pipeline_publishes_reports_and_a_job_summary() -> None:
    pipeline = load(PIPELINE)
    (artifact,) = step_using(pipeline, "actions/upload-artifact")
    assert artifact["with"]["path"].rstrip("/") == "reports"
    summary = step_running(pipeline, ".github/scripts/pipeline_summary.py")
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
