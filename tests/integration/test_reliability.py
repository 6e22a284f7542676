"""Reliability with real processes: a tracking-server outage, a killed training step, parallel promotions.

Every flow here trains from one TuningFlow run (tiny budgets) against the PostgreSQL-backed
MLflow server of the session, except the outage test, which kills a server of its own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from modules.errors import EXIT_UNAVAILABLE
from modules.settings import load_settings
from modules.tracking import client as tracking
from tests.flow_runs import TINY_BUDGETS, FlowEnvironment, StartedFlow, make_flow_environment
from tests.integration.servers import free_port, launch_mlflow_server

pytestmark = [pytest.mark.integration, pytest.mark.flows, pytest.mark.slow]

# The DNN (its training is slow enough to catch mid-run) and one more family make the branches
# these tests need; the logistic regression would add processes to the parallel trainings only.
FAMILIES = ("svm", "dnn")
# What a flow may spend after the server died besides the configured bound: finishing the
# computation it was in, Metaflow stopping the sibling branch (up to 5 s), the exit hook.
START_UP_ALLOWANCE_S = 60
# The outage test's tracking settings: 3 attempts of at most 5 s, backoff 0 + 2 s (+ jitter).
OUTAGE_SETTINGS = {"TRACKING_MAX_RETRIES": "2", "TRACKING_BACKOFF_FACTOR": "1", "TRACKING_TIMEOUT_S": "5"}


@pytest.fixture(autouse=True)
def _client_state_restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`tracking.connect` in this process sets MLflow's retry variables and URIs: undo it after each test."""
    for name in tracking.client_environment(load_settings(env={})):
        monkeypatch.delenv(name, raising=False)
    yield
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def _client(uri: str) -> MlflowClient:
    """A client of one server, for runs and for the registry (never the process-wide registry URI)."""
    return MlflowClient(uri, registry_uri=uri)


@pytest.fixture(scope="module")
def reliability_flows(tmp_path_factory: pytest.TempPathFactory, mlflow_server: Any) -> FlowEnvironment:
    return make_flow_environment(
        tmp_path_factory.mktemp("reliability-flows"),
        tracking_uri=mlflow_server.tracking_uri,
        MLFLOW_EXPERIMENT_NAME="reliability",
        MODEL_NAME_PREFIX="reliability",
        SPLIT_PROTOCOL="random",
        MODEL_FAMILIES=",".join(FAMILIES),
    )


@pytest.fixture(scope="module")
def tuning(reliability_flows: FlowEnvironment) -> Any:
    return reliability_flows.run("tuning_flow.py", **TINY_BUDGETS)


def _wait_for(check: Callable[[], Any], what: str, flow: StartedFlow, timeout: float = 600) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        assert flow.process.poll() is None, f"the flow ended before {what}:\n{flow.output}"
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout} s:\n{flow.output}")


def _runs(client: MlflowClient, experiment: str) -> list[Any]:
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], max_results=1000) if found else []


def _step_runs(client: MlflowClient, experiment: str, status: str) -> set[str]:
    return {run.info.run_name for run in _runs(client, experiment) if run.info.status == status}


def _finished_families(flows: FlowEnvironment, flow: StartedFlow, step: str) -> set[str]:
    """The families whose `step` task of the running flow Metaflow has recorded as successful.

    A task closes its MLflow run before Metaflow stores its artifacts and its success: a kill in
    between leaves a FINISHED run but no finished task, which `resume` then runs again.
    """
    run_id = flow.run_id()
    if run_id is None:
        return set()
    try:
        tasks = flows.metaflow_run(f"MLPipelineFlow/{run_id}")[step]
        return {task.data.family for task in tasks if task.successful}
    except Exception:  # the run, the step or a task's record is not (fully) in the datastore yet
        return set()


# --------------------------------------------------------------------------- finding 1: outages


def test_a_tracking_outage_fails_the_flow_in_one_line_within_the_bound(
    reliability_flows: FlowEnvironment, tuning: Any, tmp_path: Path
):
    server_env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'outage.db'}",
        "MLFLOW_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(free_port()),
        "RUN_DIR": str(tmp_path / "run"),
        "MLFLOW_WORKERS": "1",
        "MLFLOW_SERVER_START_TIMEOUT": "180",
    }
    server = launch_mlflow_server(server_env)
    env = {
        **reliability_flows.env,
        **OUTAGE_SETTINGS,
        "MLFLOW_TRACKING_URI": server.tracking_uri,
        "MLFLOW_EXPERIMENT_NAME": "outage",
        "MODEL_NAME_PREFIX": "outage",
    }
    settings = load_settings(env=env)
    bound = tracking.outage_bound_s(settings)
    tracking.connect(settings)
    client = _client(server.tracking_uri)
    flow = reliability_flows.start("ml_pipeline_flow.py", "run", "--tuning-flow-run-id", tuning.id, env=env)
    try:
        _wait_for(
            lambda: _step_runs(client, "outage", "RUNNING") & {f"train_{f}" for f in FAMILIES},
            "training",
            flow,
        )
        # The server dies mid-training, as a crashed or redeployed server would.
        os.killpg(server.handle.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        flow.wait(timeout=bound + 600)
        elapsed = time.monotonic() - killed_at
    finally:
        flow.kill()
        server.stop()
    output = flow.output
    assert flow.process.returncode == EXIT_UNAVAILABLE, output  # the flow's own process says "outage" too
    # One line per step that was tracking when the server died (the other branches may be killed first).
    errors = re.findall(r"\(pid \d+\)\] error: (.*)", output)
    assert 1 <= len(errors) <= len(FAMILIES), output
    for error in errors:
        assert re.fullmatch(
            rf"MLflow tracking server at {re.escape(server.tracking_uri)} is not answering: "
            r"/api/\S+ failed after 3 attempts \(connection refused\)",
            error,
        ), error
    assert "Traceback" not in output
    assert elapsed < bound + START_UP_ALLOWANCE_S, f"{elapsed:.0f} s after the server died:\n{output}"

    # The server is back: the next flow run's start closes what the outage left RUNNING.
    server = launch_mlflow_server(server_env)
    try:
        tracking.connect(settings)
        parent_id = _parent_run_id(reliability_flows, flow)
        assert client.get_run(parent_id).info.status == "RUNNING"
        next_run = tracking.start_parent_run(settings, "MLPipelineFlow/next", {})
        tracking.finish_flow_run(next_run)
        assert client.get_run(parent_id).info.status == "FAILED"
        assert _step_runs(client, "outage", "RUNNING") == set()
    finally:
        server.stop()


def _parent_run_id(flows: FlowEnvironment, flow: StartedFlow) -> str:
    run = flows.metaflow_run(f"MLPipelineFlow/{flow.run_id()}")
    return run["start"].task.data.mlflow_run_id


# --------------------------------------------------------------------------- findings 2 and 3: a killed step


def test_a_killed_training_step_registers_nothing_and_resume_registers_one_version_per_family(
    reliability_flows: FlowEnvironment, tuning: Any, mlflow_server: Any
):
    env = {**reliability_flows.env, "MLFLOW_EXPERIMENT_NAME": "killed", "MODEL_NAME_PREFIX": "killed"}
    client = _client(mlflow_server.tracking_uri)
    flow = reliability_flows.start("ml_pipeline_flow.py", "run", "--tuning-flow-run-id", tuning.id, env=env)
    try:
        # Freeze the DNN step once its run is open, let the SVM branch finish, then kill the whole
        # flow (runtime and tasks, as a lost machine would): no exit hook gets to close anything.
        _wait_for(lambda: "train_dnn" in _step_runs(client, "killed", "RUNNING"), "train_dnn's run", flow)
        _signal_task(flow, "train", signal.SIGSTOP, split_index=FAMILIES.index("dnn"))
        others = {f"train_{f}" for f in FAMILIES if f != "dnn"}
        _wait_for(lambda: others <= _step_runs(client, "killed", "FINISHED"), "the other branches", flow)
        # Their tasks, not only their MLflow runs, must be finished before the machine is lost.
        other_families = {f for f in FAMILIES if f != "dnn"}
        _wait_for(
            lambda: other_families <= _finished_families(reliability_flows, flow, "train"),
            "the other branches' tasks",
            flow,
        )
    finally:
        flow.kill()
    origin = f"MLPipelineFlow/{flow.run_id()}"
    parent_id = _parent_run_id(reliability_flows, flow)
    assert client.search_registered_models("name LIKE 'killed-%'") == []
    assert client.get_run(parent_id).info.status == "RUNNING"  # nobody could close it
    assert "train_dnn" in _step_runs(client, "killed", "RUNNING")

    with reliability_flows.runner("ml_pipeline_flow.py", env=env).resume(
        origin_run_id=flow.run_id()
    ) as running:
        output = running.stdout + running.stderr
        assert running.status == "successful", output
        resumed = running.run
    pathspec = resumed.pathspec
    assert f"MLflow run {parent_id} reopened for {pathspec} (resumed from {origin}); 1 run(s)" in output

    for family in FAMILIES:
        versions = client.search_model_versions(f"name='killed-{family}'")
        assert len(versions) == 1, family
        assert versions[0].tags["metaflow.pathspec"] == pathspec
        assert str(versions[0].version) == resumed.data.models[family]["version"]
    # The SVM branch was cloned from the killed run, the DNN branch trained again.
    # (The killed DNN task left no artifacts: only finished tasks are asked for their family.)
    origin_svm = next(
        t for t in reliability_flows.metaflow_run(origin)["train"] if t.successful and t.data.family == "svm"
    )
    assert resumed.data.models["svm"]["run_id"] == origin_svm.data.trained["run_id"]

    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == parent.data.tags["metaflow.pathspec"] == pathspec
    assert parent.data.tags[tracking.RESUMED_FROM_TAG] == origin
    statuses = {(run.info.run_name, run.info.status) for run in _runs(client, "killed")}
    assert ("train_dnn", "KILLED") in statuses and ("train_dnn", "FINISHED") in statuses
    assert not [run for run in _runs(client, "killed") if run.info.status == "RUNNING"]


def _signal_task(flow: StartedFlow, step: str, signum: int, *, split_index: int | None = None) -> None:
    """Signal the task process of one step of a flow we started (a child of its Metaflow runtime).

    `split_index`: the branch of a foreach step (the family's position in the flow's list).
    """
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        branch = split_index is None or _argument(command, b"--split-index") == str(split_index).encode()
        if parent == flow.process.pid and b"step" in command and step.encode() in command and branch:
            os.kill(int(entry.name), signum)
            return
    raise AssertionError(f"no running task of {step} found:\n{flow.output}")


def _argument(command: list[bytes], option: bytes) -> bytes | None:
    """The value after `option` in a process's command line (None when absent)."""
    return command[command.index(option) + 1] if option in command[:-1] else None


# --------------------------------------------------------------------------- finding 4: parallel promotions

# Three trainings at once are enough to race for each model's aliases; each adds a flow's processes.
PARALLEL_OVERRIDES = [
    {"svm": {"C": c}, "dnn": {"epochs": epochs}} for c, epochs in ((0.01, 1), (1.0, 3), (10.0, 4))
]


def test_parallel_trainings_leave_aliases_consistent_with_their_recorded_decisions(
    reliability_flows: FlowEnvironment, tuning: Any, mlflow_server: Any
):
    env = {**reliability_flows.env, "MLFLOW_EXPERIMENT_NAME": "parallel", "MODEL_NAME_PREFIX": "parallel"}
    flows = [
        reliability_flows.start(
            "ml_pipeline_flow.py",
            "run",
            "--tuning-flow-run-id",
            tuning.id,
            "--params-override",
            json.dumps(overrides),
            env=env,
        )
        for overrides in PARALLEL_OVERRIDES
    ]
    try:
        for flow in flows:
            assert flow.wait(timeout=1200) == 0, flow.output
    finally:
        for flow in flows:
            flow.kill()
    client = _client(mlflow_server.tracking_uri)
    runs = [reliability_flows.metaflow_run(f"MLPipelineFlow/{flow.run_id()}") for flow in flows]
    for family in FAMILIES:
        decisions = [p for run in runs for p in run.data.promotions if p["family"] == family]
        check_aliases_follow_decisions(client, f"parallel-{family}", decisions)


def check_aliases_follow_decisions(client: MlflowClient, name: str, decisions: list[dict[str, Any]]) -> None:
    """The invariant of serialised promotions, from the decisions each run recorded.

    Each version went through the gate once, its decision recorded on it; `challenger` is the
    newest version; the promoted decisions form one chain (each replaced the champion the one
    before it made), so no two promotions decided against the same champion; `champion` is the
    end of that chain, and it has the best accuracy of every version that passed the baseline.
    """
    versions = {str(v.version): v for v in client.search_model_versions(f"name='{name}'")}
    assert sorted(versions) == sorted(d["new_version"] for d in decisions)
    for decision in decisions:
        recorded = json.loads(versions[decision["new_version"]].tags[tracking.DECISION_TAG])
        assert recorded == decision
        assert versions[decision["new_version"]].tags["gate.promoted"] == str(decision["promoted"]).lower()
    assert str(client.get_model_version_by_alias(name, "challenger").version) == max(versions, key=int)

    promoted = {d["new_version"]: d for d in decisions if d["promoted"]}
    assert promoted, "the first version over the baseline is always promoted"
    replaced = [d["champion_before"] for d in promoted.values()]
    assert len(set(replaced)) == len(replaced), f"two promotions replaced the same champion: {replaced}"
    assert replaced.count(None) == 1
    assert set(replaced) - {None} <= set(promoted)
    (last,) = set(promoted) - set(replaced)
    assert str(client.get_model_version_by_alias(name, "champion").version) == last
    passed_floor = [d for d in decisions if _check(d, "beats_baseline")]
    assert promoted[last]["new_score"] == max(d["new_score"] for d in passed_floor)
    for decision in passed_floor:
        if not decision["promoted"]:  # refused by a champion at least as good, scored fresh
            assert decision["champion_before_score"] >= decision["new_score"]


def _check(decision: dict[str, Any], name: str) -> bool:
    return next(c["passed"] for c in decision["checks"] if c["name"] == name) is True
