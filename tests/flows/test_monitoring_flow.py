"""MonitoringFlow on the session's champion: fresh recordings pass, a re-seated headband asks for retraining."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.flow_runs import SAMPLE_DURATION_S, FlowEnvironment

pytestmark = [pytest.mark.flows, pytest.mark.slow]
SAMPLE_SEED = 7  # the seed make_flow_environment builds the session's sample with


def _check(flow_env: FlowEnvironment, batch: Any, name: str) -> Any:
    path = flow_env.root / f"{name}.csv"
    batch.to_csv(path, index=False)
    return flow_env.run("monitoring_flow.py", data_path=str(path))


def test_fresh_recordings_of_the_same_people_do_not_trigger_retraining(flow_env, training_run, mlflow_client):
    from modules.monitoring.scenarios import same_distribution_batch

    batch = same_distribution_batch(3, sample_seed=SAMPLE_SEED, duration_s=SAMPLE_DURATION_S)
    run = _check(flow_env, batch, "fresh")
    assert run.data.decision["retrain"] is False, run.data.decision
    assert run.data.model_name == "eeg-emotion-svm"
    assert run.data.model_version == training_run.data.models["svm"]["version"]
    parent = mlflow_client.get_run(run.data.mlflow_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["monitoring.retrain"] == "false"
    assert parent.data.metrics["drift_drifted_share"] < 0.2


def test_a_reseated_headband_triggers_retraining_with_a_report(flow_env, training_run, mlflow_client):
    from modules.monitoring.scenarios import reseated_headband_batch

    batch = reseated_headband_batch(3, sample_seed=SAMPLE_SEED, duration_s=SAMPLE_DURATION_S)
    run = _check(flow_env, batch, "reseated")
    assert run.data.decision["retrain"] is True
    assert any("drifted" in reason for reason in run.data.decision["reasons"]), run.data.decision
    report = flow_env.root / "reports" / "monitoring"
    assert json.loads((report / "drift.json").read_text())["retrain"] is True
    assert (report / "drift_report.html").stat().st_size > 10_000
    artifacts = {a.path for a in mlflow_client.list_artifacts(run.data.mlflow_run_id)}
    assert {"drift.json", "drift_report.html"} <= artifacts

    # `make monitor FAIL_ON_DRIFT=1` ends with this command: exit 3 for scripts.
    command = [sys.executable, "-m", "modules", "drift", "--fail-on-drift"]
    result = subprocess.run(command, env=flow_env.env, capture_output=True, text=True, check=False)
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout.startswith("retrain: yes (")
