"""Compile the flows into Argo Workflows templates, offline (--dry-run) or onto the current cluster.

    python -m modules.deploy.argo --dry-run [--out build/argo]   # no cluster, no cloud account
    python -m modules.deploy.argo                                # the current kube context

Each flow is compiled by Metaflow itself (`FLOW --datastore=gs --with kubernetes argo-workflows
create`) with the GKE profile (infra/metaflow/config_gke.json unless METAFLOW_PROFILE/METAFLOW_HOME
say otherwise). Metaflow uploads the code package to the GCS datastore even for `--only-json`, so
the dry run starts gcp-storage-emulator on a free 127.0.0.1 port with the profile's bucket, points
Google's client at it with a throwaway credentials file, and stops it by its PID, also on failure.

It writes BUILD/<FlowName>.json (the WorkflowTemplate) for every flow and BUILD/<FlowName>-cron.json,
the weekly CronWorkflow of the scheduled flow (TuningFlow; Metaflow's `--only-json` emits no cron
objects). Without --dry-run the templates are created in the cluster and the CronWorkflow applied.

The profile records runs in the cluster's Metaflow metadata service. The dry run never contacts it
(`--only-json` skips Metaflow's version check); a real deployment first checks that it answers at
METAFLOW_SERVICE_URL, which from outside the cluster is a `kubectl port-forward`.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from modules.errors import OperationalMLError, run_cli
from modules.files import write_json_atomically
from modules.kubernetes import profile_config

PROJECT_ROOT = Path(__file__).resolve().parents[2]
METAFLOW_HOME = PROJECT_ROOT / "infra" / "metaflow"
DEFAULT_PROFILE = "gke"
FLOWS = (
    PROJECT_ROOT / "metaflows_flow" / "tuning_flow.py",
    PROJECT_ROOT / "metaflows_flow" / "ml_pipeline_flow.py",
    PROJECT_ROOT / "metaflows_flow" / "monitoring_flow.py",
)
# Monday 04:17 UTC, the GitHub workflow's weekly schedule (.github/workflows/pipeline.yml).
WEEKLY_SCHEDULE = "17 4 * * 1"
SCHEDULED_FLOW = "TuningFlow"
COMPILE_TIMEOUT_S = 600
# A token that never expires: Google's client uses it as is and never asks for another.
THROWAWAY_CREDENTIALS = {
    "type": "authorized_user",
    "client_id": "gcs-emulator",
    "client_secret": "gcs-emulator",
    "refresh_token": "gcs-emulator",
    "token": "gcs-emulator",
    "expiry": "2999-01-01T00:00:00Z",
}


class DeployError(OperationalMLError):
    """A flow could not be compiled or deployed to Argo Workflows."""


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def profile_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment with the GKE profile selected, unless another profile already is."""
    env = dict(os.environ if env is None else env)
    if not env.get("METAFLOW_PROFILE"):
        env["METAFLOW_PROFILE"] = DEFAULT_PROFILE
        env["METAFLOW_HOME"] = str(METAFLOW_HOME)
    if not env.get("METAFLOW_USER"):
        # Metaflow refuses to run as an unnamed user or as root (CI, containers).
        user = env.get("USER") or getpass.getuser()
        env["METAFLOW_USER"] = user if user and user != "root" else "operational-ml"
    return env


def datastore_bucket(env: Mapping[str, str]) -> str:
    """The bucket of METAFLOW_DATASTORE_SYSROOT_GS (environment, else the profile)."""
    root = env.get("METAFLOW_DATASTORE_SYSROOT_GS") or profile_config(env).get(
        "METAFLOW_DATASTORE_SYSROOT_GS"
    )
    if not root or not str(root).startswith("gs://") or len(str(root)) <= len("gs://"):
        raise DeployError(
            f"METAFLOW_DATASTORE_SYSROOT_GS={root!r}: expected gs://BUCKET/PREFIX "
            f"(profile {env.get('METAFLOW_PROFILE')} in {env.get('METAFLOW_HOME')})"
        )
    return str(root)[len("gs://") :].split("/", 1)[0]


# --------------------------------------------------------------------------- metadata service


def metadata_service_url(env: Mapping[str, str]) -> str | None:
    """METAFLOW_SERVICE_URL when the flows record their runs in Metaflow's metadata service, else None."""
    config = profile_config(env)
    provider = env.get("METAFLOW_DEFAULT_METADATA") or config.get("METAFLOW_DEFAULT_METADATA") or "local"
    if provider != "service":
        return None
    url = env.get("METAFLOW_SERVICE_URL") or config.get("METAFLOW_SERVICE_URL")
    if not url:
        raise DeployError(
            f"METAFLOW_DEFAULT_METADATA=service but METAFLOW_SERVICE_URL is not set "
            f"(profile {env.get('METAFLOW_PROFILE')} in {env.get('METAFLOW_HOME')})"
        )
    return str(url).rstrip("/")


def check_metadata_service(env: Mapping[str, str], timeout_s: float = 5) -> None:
    """Before a real deployment: the metadata service answers at METAFLOW_SERVICE_URL.

    Metaflow's `argo-workflows create` asks the service its version (not with --only-json). The
    profile's address is the cluster-internal one the pods use; from outside the cluster the service
    is reached through a port-forward, while the templates keep METAFLOW_SERVICE_INTERNAL_URL.
    """
    url = metadata_service_url(env)
    if url is None:
        return
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/ping", timeout=timeout_s) as response:
            if response.status < 300:
                return
            reason = f"HTTP {response.status}"
    except (urllib.error.URLError, OSError) as exc:
        reason = str(getattr(exc, "reason", exc))
    config = profile_config(env)
    namespace = env.get("METAFLOW_KUBERNETES_NAMESPACE") or config.get("METAFLOW_KUBERNETES_NAMESPACE")
    # The Service's name is the first label of the address the pods use (SERVICE.NAMESPACE.svc).
    internal = env.get("METAFLOW_SERVICE_INTERNAL_URL") or config.get("METAFLOW_SERVICE_INTERNAL_URL") or url
    service = (urllib.parse.urlsplit(internal).hostname or "SERVICE").split(".")[0]
    raise DeployError(
        f"METAFLOW_SERVICE_URL={url}: the Metaflow metadata service does not answer ({reason}); from "
        f"outside the cluster run `kubectl -n {namespace} port-forward svc/{service} 8080:8080` and set "
        "METAFLOW_SERVICE_URL=http://127.0.0.1:8080 (the pods keep METAFLOW_SERVICE_INTERNAL_URL)"
    )


# --------------------------------------------------------------------------- GCS stand-in


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bucket_answers(url: str, bucket: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/storage/v1/b/{bucket}", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _emulator_executable() -> str:
    beside = Path(sys.executable).parent / "gcp-storage-emulator"
    found = str(beside) if beside.exists() else shutil.which("gcp-storage-emulator")
    if not found:
        raise DeployError("gcp-storage-emulator is not installed: run `make install-dev`")
    return found


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Stop one process we started, by its PID: terminate, then kill after 10 s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextmanager
def gcs_stand_in(bucket: str, start_timeout_s: float = 30) -> Iterator[dict[str, str]]:
    """gcp-storage-emulator on a free 127.0.0.1 port with `bucket`; yields the variables that point at it."""
    workdir = Path(tempfile.mkdtemp(prefix="argo-dry-run-"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    credentials = workdir / "throwaway-credentials.json"
    credentials.write_text(json.dumps(THROWAWAY_CREDENTIALS), encoding="utf-8")
    log_path = workdir / "gcs-emulator.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                _emulator_executable(),
                *("-d", str(workdir / "data"), "start", "--host", "127.0.0.1", "--port", str(port)),
                *("--default-bucket", bucket, "--quiet"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + start_timeout_s
        while not _bucket_answers(url, bucket):
            if process.poll() is not None or time.monotonic() > deadline:
                raise DeployError(
                    f"gcp-storage-emulator did not serve bucket {bucket} on {url}: "
                    f"{log_path.read_text(errors='replace').strip()[-300:]}"
                )
            time.sleep(0.1)
        progress(f"GCS stand-in: gcp-storage-emulator on {url} (pid {process.pid}), bucket {bucket}")
        yield {
            "STORAGE_EMULATOR_HOST": url,
            "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
            "GOOGLE_CLOUD_PROJECT": "gcs-emulator",
        }
    finally:
        stop_process(process)
        shutil.rmtree(workdir, ignore_errors=True)
        progress(f"GCS stand-in stopped (pid {process.pid})")


# --------------------------------------------------------------------------- compiling


def argo_command(flow: Path, *, dry_run: bool) -> list[str]:
    """Metaflow's own compile (and, without dry_run, create) of one flow for Argo Workflows."""
    command = [sys.executable, str(flow), "--no-pylint", "--datastore=gs", "--with", "kubernetes"]
    command += ["argo-workflows", "create"]
    return command + (["--only-json"] if dry_run else [])


def _json_document(text: str) -> dict[str, Any]:
    """The JSON object Metaflow prints (after any log lines)."""
    start = text.find("{")
    try:
        document = json.loads(text[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        document = None
    if not isinstance(document, dict) or document.get("kind") != "WorkflowTemplate":
        raise DeployError(f"expected a WorkflowTemplate on stdout, got: {text.strip()[:300]!r}")
    return document


def _last_lines(text: str, count: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:]) or "no output"


def run_metaflow(flow: Path, env: Mapping[str, str], *, dry_run: bool) -> str:
    """Run the compile; its stdout, or one line naming the flow and Metaflow's last words."""
    if not flow.is_file():
        raise DeployError(f"{_shown(flow)}: no such flow file")
    try:
        result = subprocess.run(
            argo_command(flow, dry_run=dry_run),
            cwd=PROJECT_ROOT,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=COMPILE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DeployError(f"{_shown(flow)}: argo-workflows create took over {COMPILE_TIMEOUT_S} s") from None
    if result.returncode != 0:
        raise DeployError(
            f"{_shown(flow)}: argo-workflows create failed (exit {result.returncode}): "
            f"{_last_lines(result.stderr + result.stdout)}"
        )
    return result.stdout


def step_templates(template: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The templates that run a flow step, by step name (Argo adds DAG and hook templates)."""
    found = {}
    for item in template["spec"]["templates"]:
        step = (item.get("metadata") or {}).get("annotations", {}).get("metaflow/step_name")
        if step and "container" in item:
            found[step] = item
    return found


def flow_name(template: Mapping[str, Any]) -> str:
    """The Metaflow flow class name a template was compiled from."""
    return template["metadata"]["annotations"]["metaflow/flow_name"]


def cron_workflow(template: Mapping[str, Any], schedule: str = WEEKLY_SCHEDULE) -> dict[str, Any]:
    """A CronWorkflow that submits `template` on `schedule` (UTC), one run at a time.

    Named TEMPLATE-weekly: Metaflow removes a CronWorkflow named like the template when a flow
    without @schedule is deployed again.
    """
    name = template["metadata"]["name"]
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "CronWorkflow",
        "metadata": {
            "name": f"{name}-weekly",
            "namespace": template["metadata"].get("namespace"),
            "labels": {"app.kubernetes.io/part-of": "metaflow", "app.kubernetes.io/name": "operational-ml"},
        },
        "spec": {
            "schedule": schedule,
            "timezone": "UTC",
            # A run still going when the next one is due is left alone; a missed start is retried
            # for an hour, then skipped.
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 10,
            "failedJobsHistoryLimit": 10,
            "workflowSpec": {"workflowTemplateRef": {"name": name}},
        },
    }


def apply_cron_workflow(body: Mapping[str, Any]) -> None:
    """Create or replace the CronWorkflow in the current kube context (not run by the tests)."""
    from kubernetes import client, config

    config.load_kube_config()
    api = client.CustomObjectsApi()
    where = {"group": "argoproj.io", "version": "v1alpha1", "plural": "cronworkflows"}
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    try:
        current = api.get_namespaced_custom_object(namespace=namespace, name=name, **where)
    except client.rest.ApiException as exc:
        if exc.status != 404:
            raise DeployError(f"CronWorkflow {namespace}/{name}: {exc.reason}") from None
        api.create_namespaced_custom_object(namespace=namespace, body=dict(body), **where)
        return
    replacement = json.loads(json.dumps(body))
    replacement["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    api.replace_namespaced_custom_object(namespace=namespace, name=name, body=replacement, **where)


def compile_flows(
    flows: list[Path],
    out_dir: Path,
    *,
    dry_run: bool,
    scheduled_flow: str = SCHEDULED_FLOW,
    schedule: str = WEEKLY_SCHEDULE,
    env: Mapping[str, str] | None = None,
) -> list[Path]:
    """Compile every flow into OUT/<FlowName>.json (+ the scheduled flow's -cron.json); the paths written."""
    env = profile_environment(env)
    profile_config(env)  # a missing or broken profile: one line before anything starts
    written: list[Path] = []

    def compile_all(extra: Mapping[str, str]) -> None:
        for flow in flows:
            progress(f"{_shown(flow)}: compiling for Argo Workflows ...")
            started = time.monotonic()
            stdout = run_metaflow(flow, {**env, **extra}, dry_run=True)
            template = _json_document(stdout)
            name = flow_name(template)
            path = out_dir / f"{name}.json"
            write_json_atomically(path, template)
            written.append(path)
            steps = len(step_templates(template))
            progress(
                f"{_shown(flow)}: WorkflowTemplate {template['metadata']['name']} "
                f"({steps} steps) -> {_shown(path)} in {time.monotonic() - started:.0f} s"
            )
            if name == scheduled_flow:
                cron = cron_workflow(template, schedule)
                cron_path = out_dir / f"{name}-cron.json"
                write_json_atomically(cron_path, cron)
                written.append(cron_path)
                progress(
                    f"{_shown(flow)}: CronWorkflow {cron['metadata']['name']} ({schedule}) -> {_shown(cron_path)}"
                )
            if not dry_run:
                progress(f"{_shown(flow)}: creating the WorkflowTemplate in the current kube context ...")
                run_metaflow(flow, {**env, **extra}, dry_run=False)
                if name == scheduled_flow:
                    apply_cron_workflow(cron_workflow(template, schedule))
                progress(f"{_shown(flow)}: deployed")

    out_dir.mkdir(parents=True, exist_ok=True)
    if dry_run:
        with gcs_stand_in(datastore_bucket(env)) as stand_in:
            compile_all(stand_in)
    else:
        check_metadata_service(env)
        compile_all({})
    return written


@click.command(
    "deploy-argo",
    help="Compile the flows into Argo Workflows templates with the GKE Metaflow profile and write them to "
    "OUT/<FlowName>.json (plus the weekly CronWorkflow). --dry-run needs no cluster and no cloud account: "
    "it starts a local GCS emulator for the code package. Without it the templates are created in the "
    "current kube context.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option("--dry-run", is_flag=True, help="compile only, against a local GCS emulator")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=PROJECT_ROOT / "build" / "argo",
    show_default="build/argo",
    help="folder for the JSON files",
)
@click.option(
    "--flow",
    "flows",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="a flow file (repeatable; default: the tuning, training and monitoring flows)",
)
@click.option("--schedule", default=WEEKLY_SCHEDULE, show_default=True, help="cron schedule, UTC")
@click.option(
    "--scheduled-flow", default=SCHEDULED_FLOW, show_default=True, help="the flow the CronWorkflow starts"
)
def cli(dry_run: bool, out: Path, flows: tuple[Path, ...], schedule: str, scheduled_flow: str) -> None:
    if len(schedule.split()) != 5:
        raise DeployError(f"--schedule {schedule!r}: expected five cron fields, e.g. {WEEKLY_SCHEDULE!r}")
    chosen = [Path(flow).resolve() for flow in flows] or list(FLOWS)
    written = compile_flows(chosen, out, dry_run=dry_run, scheduled_flow=scheduled_flow, schedule=schedule)
    progress(f"wrote {len(written)} files to {_shown(out)}")


if __name__ == "__main__":
    run_cli(lambda: cli.main(prog_name="python -m modules.deploy.argo"))
