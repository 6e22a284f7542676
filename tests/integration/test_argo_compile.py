"""`python -m modules.deploy.argo --dry-run`: the flows compiled to Argo Workflows offline, for real.

The command starts gcp-storage-emulator itself (Metaflow uploads the code package even for
`--only-json`), runs Metaflow's own `argo-workflows create --only-json` on each flow with the GKE
profile, and stops the emulator. The tests read the JSON it wrote, as a reviewer would, and validate
it against the Argo Workflows schema of the version infra/terraform installs (tests/integration/schemas).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PROFILE = json.loads((REPO / "infra" / "metaflow" / "config_gke.json").read_text(encoding="utf-8"))
FLOW_FILES = {
    "TuningFlow": REPO / "metaflows_flow" / "tuning_flow.py",
    "MLPipelineFlow": REPO / "metaflows_flow" / "ml_pipeline_flow.py",
    "MonitoringFlow": REPO / "metaflows_flow" / "monitoring_flow.py",
    "ArgoProbeFlow": REPO / "tests" / "integration" / "argo_probe_flow.py",
    "ArgoProbeTriggeredFlow": REPO / "tests" / "integration" / "argo_probe_triggered_flow.py",
}
# The Argo Workflows schema of the version infra/terraform installs, vendored whole and unedited
# (tests/integration/schemas/README.md: source, licence, and how the tests read it).
ARGO_VERSION = "v3.7.11"
ARGO_SCHEMA = REPO / "tests" / "integration" / "schemas" / f"argo-workflows-{ARGO_VERSION}.schema.json"
ARGO_SCHEMA_SHA256 = "7121a93025875991aa5372aa0c3f922797ba9af4899d9ed33c5b99d85aa6eb37"
# argo-helm's charts/argo-workflows/Chart.yaml: chart version -> appVersion.
CHART_APP_VERSIONS = {"0.47.5": "v3.7.11"}
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
STAND_IN = re.compile(r"gcp-storage-emulator on http://127\.0\.0\.1:(\d+) \(pid (\d+)\)")


@dataclass
class DryRun:
    returncode: int
    stderr: str
    out: Path

    def template(self, flow: str) -> dict:
        return json.loads((self.out / f"{flow}.json").read_text(encoding="utf-8"))

    def stand_in(self) -> tuple[int, int]:
        """Port and PID of the emulator the command started, from its progress line."""
        found = STAND_IN.search(self.stderr)
        assert found, self.stderr
        return int(found.group(1)), int(found.group(2))


def dry_run(out: Path, flows: list[Path]) -> DryRun:
    env = {key: value for key, value in os.environ.items() if not key.startswith("METAFLOW_")}
    command = [sys.executable, "-m", "modules.deploy.argo", "--dry-run", "--out", str(out)]
    for flow in flows:
        command += ["--flow", str(flow)]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    return DryRun(result.returncode, result.stderr, out)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> DryRun:
    run = dry_run(tmp_path_factory.mktemp("argo"), list(FLOW_FILES.values()))
    assert run.returncode == 0, run.stderr
    return run


def flow_steps(path: Path) -> set[str]:
    """Names of the @step methods in a flow file, read from its source (not from the compile)."""
    steps = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef) and any(
            isinstance(d, ast.Name) and d.id == "step" for d in node.decorator_list
        ):
            steps.add(node.name)
    return steps


def step_templates(template: dict) -> dict[str, dict]:
    return {
        t["metadata"]["annotations"]["metaflow/step_name"]: t
        for t in template["spec"]["templates"]
        if "container" in t and "metaflow/step_name" in (t.get("metadata") or {}).get("annotations", {})
    }


def environment(container: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"] if item.get("value") is not None}


def port_is_closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def pid_is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def close_structs(node: object) -> object:
    """Every object of the schema that lists its properties and says nothing of others (a Go struct)
    refuses unknown fields, as Argo's strict decoding does; maps keep their additionalProperties."""
    if isinstance(node, list):
        return [close_structs(item) for item in node]
    if not isinstance(node, dict):
        return node
    closed = {key: close_structs(value) for key, value in node.items()}
    if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
        closed["additionalProperties"] = False
    return closed


@functools.cache
def argo_validator(kind: str) -> Draft202012Validator:
    """A validator for one Argo kind, reading the vendored schema as the API server does (in memory;
    the file stays as Argo publishes it, see tests/integration/schemas/README.md)."""
    schema = close_structs(json.loads(ARGO_SCHEMA.read_text(encoding="utf-8")))
    # Argo's full CRD at the same tag: anyOf integer or string; the schema writes only the string.
    schema["definitions"][INT_OR_STRING] = {"type": ["integer", "string"]}
    registry = Registry().with_resource(schema["$id"], Resource.from_contents(schema))
    root = {"$ref": f"{schema['$id']}#/definitions/io.argoproj.workflow.v1alpha1.{kind}"}
    return Draft202012Validator(root, registry=registry)


def without_nulls(document: object) -> object:
    """Kubernetes reads a null field as an unset one; Metaflow writes unset fields as null."""
    if isinstance(document, dict):
        return {key: without_nulls(value) for key, value in document.items() if value is not None}
    if isinstance(document, list):
        return [without_nulls(item) for item in document]
    return document


def schema_errors(document: dict) -> list[tuple[str, str]]:
    """(JSON path, why) for every place where an Argo object breaks the Argo Workflows schema."""
    assert document["kind"] in ("WorkflowTemplate", "CronWorkflow"), document["kind"]
    errors = argo_validator(document["kind"]).iter_errors(without_nulls(document))
    return sorted((error.json_path, error.message[:300]) for error in errors)


def test_every_flow_gets_a_template_file_and_a_progress_line(compiled: DryRun) -> None:
    written = sorted(p.name for p in compiled.out.iterdir())
    assert written == sorted([f"{name}.json" for name in FLOW_FILES] + ["TuningFlow-cron.json"])
    for name, path in FLOW_FILES.items():
        assert f"WorkflowTemplate {name.lower()} " in compiled.stderr
        assert f"{path.relative_to(REPO)}: compiling for Argo Workflows" in compiled.stderr


@pytest.mark.parametrize("flow", list(FLOW_FILES))
def test_templates_carry_the_profile_namespace_account_image_and_datastore(
    compiled: DryRun, flow: str
) -> None:
    template = compiled.template(flow)
    assert template["apiVersion"] == "argoproj.io/v1alpha1"
    assert template["kind"] == "WorkflowTemplate"
    assert template["metadata"]["name"] == flow.lower()
    assert template["metadata"]["namespace"] == PROFILE["METAFLOW_KUBERNETES_NAMESPACE"] == "operational-ml"
    image = PROFILE["METAFLOW_KUBERNETES_CONTAINER_IMAGE"]
    assert re.fullmatch(r"[a-z0-9.-]+/[^@:]+@sha256:[0-9a-f]{64}", image), "the image is pinned by digest"
    code_root = PROFILE["METAFLOW_DATASTORE_SYSROOT_GS"] + f"/{flow}/"
    assert code_root.startswith("gs://")
    steps = step_templates(template)
    assert steps
    for name, step in steps.items():
        assert step["serviceAccountName"] == PROFILE["METAFLOW_KUBERNETES_SERVICE_ACCOUNT"], name
        container = step["container"]
        on_gpu = "nvidia.com/gpu" in (container["resources"]["limits"] or {})
        assert container["image"] == (PROFILE["GPU_STEP_IMAGE"] if on_gpu else image), name
        requests = container["resources"]["requests"]
        assert float(requests["cpu"]) > 0 and requests["memory"].endswith("M"), (name, requests)
        # Autopilot caps ephemeral storage well below Metaflow's 10 GB default.
        assert requests["ephemeral-storage"] == f"{PROFILE['METAFLOW_KUBERNETES_DISK']}M", name
        env = environment(container)
        assert env["METAFLOW_DEFAULT_DATASTORE"] == "gs"
        assert env["METAFLOW_CODE_URL"].startswith(code_root), env["METAFLOW_CODE_URL"]
        # The tracking server's address reaches every pod from one Kubernetes secret.
        secrets = [ref["secretRef"]["name"] for ref in container["envFrom"] if ref.get("secretRef")]
        assert secrets == [PROFILE["METAFLOW_KUBERNETES_SECRETS"]], name


@pytest.mark.parametrize("flow", list(FLOW_FILES))
def test_every_pod_records_its_run_in_the_clusters_metadata_service(compiled: DryRun, flow: str) -> None:
    """The steps run in separate pods, so they share Metaflow's metadata through the service that
    infra/terraform/metaflow_metadata.tf runs; the compile itself needed no service (--only-json
    skips Metaflow's version check), which this machine cannot reach."""
    url = PROFILE["METAFLOW_SERVICE_INTERNAL_URL"]
    assert url == PROFILE["METAFLOW_SERVICE_URL"] == "http://metaflow-metadata.operational-ml.svc:8080"
    containers = [t for t in compiled.template(flow)["spec"]["templates"] if "container" in t]
    steps = step_templates(compiled.template(flow))
    assert steps and len(containers) >= len(steps)
    for template in containers:
        env = environment(template["container"])
        assert env["METAFLOW_DEFAULT_METADATA"] == "service", template["name"]
        assert env["METAFLOW_SERVICE_URL"] == url, template["name"]
    for name, step in steps.items():
        # The step's own command names the provider too, and it wins over the environment.
        command = " ".join((step["container"].get("command") or []) + (step["container"].get("args") or []))
        assert set(re.findall(r"--metadata=(\w+)", command)) == {"service"}, name


@pytest.mark.parametrize("flow", list(FLOW_FILES))
def test_every_step_of_the_flow_file_is_a_template(compiled: DryRun, flow: str) -> None:
    expected = flow_steps(FLOW_FILES[flow])
    assert {"start", "end"} <= expected
    assert set(step_templates(compiled.template(flow))) == expected


def test_gpu_steps_alone_get_a_gpu_the_gke_node_selector_and_the_toleration(compiled: DryRun) -> None:
    steps = step_templates(compiled.template("ArgoProbeFlow"))
    gpu = steps["fit_chunk"]
    assert gpu["container"]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert gpu["container"]["resources"]["requests"]["cpu"] == "4"
    assert gpu["container"]["image"] == PROFILE["GPU_STEP_IMAGE"], "the CUDA image, by digest"
    assert gpu["nodeSelector"] == {"cloud.google.com/gke-accelerator": PROFILE["GPU_ACCELERATOR"]}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["tolerations"]
    for name, step in steps.items():
        if name != "fit_chunk":
            assert "nvidia.com/gpu" not in (step["container"]["resources"]["limits"] or {}), name
            assert not step.get("nodeSelector"), name
    # kubernetes_step("cpu") sized the start step; the others have Metaflow's defaults.
    assert steps["start"]["container"]["resources"]["requests"]["cpu"] == "2"
    assert steps["join"]["container"]["resources"]["requests"]["cpu"] == "1"


@pytest.mark.parametrize(("flow", "family_step"), [("TuningFlow", "tune"), ("MLPipelineFlow", "train")])
def test_the_pipelines_family_steps_get_the_gpu_the_dnn_asks_for(
    compiled: DryRun, flow: str, family_step: str
) -> None:
    """The registry's DNN declares accelerator "gpu": the foreach step over families gets the GPU node,
    the steps around it (data, registration, reports) do not."""
    steps = step_templates(compiled.template(flow))
    assert steps[family_step]["container"]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert steps[family_step]["nodeSelector"] == {
        "cloud.google.com/gke-accelerator": PROFILE["GPU_ACCELERATOR"]
    }
    for name, step in steps.items():
        if name != family_step:
            assert "nvidia.com/gpu" not in (step["container"]["resources"]["limits"] or {}), name


def test_the_training_flow_starts_when_the_tuning_flow_finishes(compiled: DryRun) -> None:
    annotations = compiled.template("MLPipelineFlow")["metadata"]["annotations"]
    assert json.loads(annotations["metaflow/triggers"]) == [
        {"name": "metaflow.TuningFlow.end", "type": "run"}
    ]


def test_the_foreach_fans_out_one_pod_per_chunk(compiled: DryRun) -> None:
    template = compiled.template("ArgoProbeFlow")
    tasks = [task for t in template["spec"]["templates"] if "dag" in t for task in t["dag"]["tasks"]]
    fan_out = [task for task in tasks if "withParam" in task]
    assert len(fan_out) == 1, fan_out
    assert "num-splits" in fan_out[0]["withParam"]


def test_a_flow_triggered_on_finish_names_its_trigger_and_sensor(compiled: DryRun) -> None:
    """What MLPipelineFlow gets from @trigger_on_finish(flow="TuningFlow"); the Sensor itself is
    created by `argo-workflows create` on a cluster (--only-json does not print it)."""
    annotations = compiled.template("ArgoProbeTriggeredFlow")["metadata"]["annotations"]
    assert json.loads(annotations["metaflow/triggers"]) == [
        {"name": "metaflow.ArgoProbeFlow.end", "type": "run"}
    ]
    assert annotations["metaflow/sensor_namespace"] == PROFILE["METAFLOW_KUBERNETES_NAMESPACE"]
    assert annotations["metaflow/sensor_name"] == "argoprobetriggeredflow"
    assert "metaflow/triggers" not in compiled.template("ArgoProbeFlow")["metadata"]["annotations"]
    # Every pod knows where to post the event that a run finished.
    step = step_templates(compiled.template("ArgoProbeFlow"))["end"]
    env = environment(step["container"])
    assert env["METAFLOW_ARGO_EVENTS_WEBHOOK_URL"] == PROFILE["METAFLOW_ARGO_EVENTS_WEBHOOK_URL"]


def test_the_weekly_cron_workflow_starts_the_tuning_template(compiled: DryRun) -> None:
    cron = json.loads((compiled.out / "TuningFlow-cron.json").read_text(encoding="utf-8"))
    assert cron["apiVersion"] == "argoproj.io/v1alpha1" and cron["kind"] == "CronWorkflow"
    assert cron["metadata"]["namespace"] == "operational-ml"
    spec = cron["spec"]
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "pipeline.yml").read_text(encoding="utf-8"))
    github_crons = [entry["cron"] for entry in workflow[True]["schedule"]]  # YAML reads `on` as True
    assert spec["schedule"] == "17 4 * * 1" and github_crons == [spec["schedule"]]
    assert spec["schedule"].split()[2:] == ["*", "*", "1"], "weekly, on Mondays"
    assert spec["timezone"] == "UTC" and spec["concurrencyPolicy"] == "Forbid"
    assert spec["workflowSpec"] == {"workflowTemplateRef": {"name": "tuningflow"}}
    assert cron["metadata"]["name"] != "tuningflow", "Metaflow deletes a CronWorkflow named like the template"


def test_the_vendored_schema_is_argos_own_for_the_version_terraform_installs() -> None:
    assert hashlib.sha256(ARGO_SCHEMA.read_bytes()).hexdigest() == ARGO_SCHEMA_SHA256, "never edit it by hand"
    variables = (REPO / "infra" / "terraform" / "variables_gke.tf").read_text(encoding="utf-8")
    found = re.search(
        r'variable "argo_workflows_chart_version" \{.*?default\s*=\s*"([^"]+)"', variables, re.S
    )
    assert found, "argo_workflows_chart_version has a default"
    chart = found.group(1)
    assert CHART_APP_VERSIONS.get(chart) == ARGO_VERSION, (
        f"chart {chart}: vendor the schema of its appVersion"
    )
    schema = json.loads(ARGO_SCHEMA.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    for kind in ("WorkflowTemplate", "CronWorkflow"):
        assert f"io.argoproj.workflow.v1alpha1.{kind}" in schema["definitions"]


@pytest.mark.parametrize("name", [*FLOW_FILES, "TuningFlow-cron"])
def test_every_template_and_the_cron_workflow_pass_the_argo_schema(compiled: DryRun, name: str) -> None:
    document = json.loads((compiled.out / f"{name}.json").read_text(encoding="utf-8"))
    assert document["kind"] == ("CronWorkflow" if name.endswith("-cron") else "WorkflowTemplate")
    assert schema_errors(document) == []


def request_cpu_as_a_list(template: dict) -> None:
    step_templates(template)["start"]["container"]["resources"]["requests"]["cpu"] = ["2"]


def misspell_the_node_selector(template: dict) -> None:
    step = step_templates(template)["tune"]
    step["nodeSelecter"] = step.pop("nodeSelector")


def give_an_environment_value_as_a_number(template: dict) -> None:
    env = step_templates(template)["start"]["container"]["env"]
    next(item for item in env if item.get("value") is not None)["value"] = 1


def give_the_deadline_as_an_object(template: dict) -> None:
    step_templates(template)["start"]["activeDeadlineSeconds"] = {"seconds": 432000}


def name_an_unknown_api_version(template: dict) -> None:
    template["apiVersion"] = "argoproj.io/v1"


def give_the_cron_template_reference_as_a_name(cron: dict) -> None:
    cron["spec"]["workflowSpec"]["workflowTemplateRef"] = "tuningflow"


STEP = r"\$\.spec\.templates\[\d+\]"


# (mutation, file, where the one error must be, what it must say)
BROKEN_COPIES = [
    (
        request_cpu_as_a_list,
        "TuningFlow",
        STEP + r"\.container\.resources\.requests\.cpu",
        "is not of type 'string'",
    ),
    (misspell_the_node_selector, "TuningFlow", STEP, "'nodeSelecter' was unexpected"),
    (
        give_an_environment_value_as_a_number,
        "MonitoringFlow",
        STEP + r"\.container\.env\[\d+\]\.value",
        "1 is not of type 'string'",
    ),
    (
        give_the_deadline_as_an_object,
        "MLPipelineFlow",
        STEP + r"\.activeDeadlineSeconds",
        "is not of type 'integer', 'string'",
    ),
    (
        name_an_unknown_api_version,
        "MLPipelineFlow",
        r"\$\.apiVersion",
        "'argoproj.io/v1alpha1' was expected",
    ),
    (
        give_the_cron_template_reference_as_a_name,
        "TuningFlow-cron",
        r"\$\.spec\.workflowSpec\.workflowTemplateRef",
        "is not of type 'object'",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "name", "where", "why"), BROKEN_COPIES, ids=[broken[0].__name__ for broken in BROKEN_COPIES]
)
def test_the_schema_check_rejects_a_broken_template_at_the_broken_field(
    compiled: DryRun, mutate: Callable[[dict], None], name: str, where: str, why: str
) -> None:
    """The same check on a copy broken in one place: exactly one error, at that place."""
    document = json.loads((compiled.out / f"{name}.json").read_text(encoding="utf-8"))
    mutate(document)
    errors = schema_errors(document)
    assert len(errors) == 1, errors
    path, message = errors[0]
    assert re.fullmatch(where, path) and why in message, errors[0]


def test_the_emulator_is_stopped_after_the_compile(compiled: DryRun) -> None:
    port, pid = compiled.stand_in()
    assert f"GCS stand-in stopped (pid {pid})" in compiled.stderr
    assert port_is_closed(port)
    assert pid_is_gone(pid)


def test_a_flow_that_fails_to_compile_is_one_line_and_the_emulator_still_stops(tmp_path: Path) -> None:
    broken = tmp_path / "broken_flow.py"
    broken.write_text("import a_module_that_does_not_exist\n", encoding="utf-8")
    run = dry_run(tmp_path / "out", [broken])
    assert run.returncode == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken_flow.py: argo-workflows create failed" in errors[0], run.stderr
    assert "a_module_that_does_not_exist" in errors[0]
    assert "Traceback" not in run.stderr
    port, pid = run.stand_in()
    assert port_is_closed(port) and pid_is_gone(pid)
    assert not list((tmp_path / "out").glob("*.json"))
