"""How a failing `@tracked` step ends: which failures Metaflow retries, and what MLflow shows after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.flow_runs import FlowEnvironment

pytestmark = [pytest.mark.flows, pytest.mark.slow]

PROBE = Path(__file__).resolve().parent / "retry_probe_flow.py"


def _run_probe(flow_env: FlowEnvironment, failure: str) -> tuple[Any, str]:
    from metaflow import Runner

    with Runner(str(PROBE), env=flow_env.env, cwd=str(flow_env.root), show_output=False).run(
        failure=failure
    ) as running:
        assert running.status == "failed"
        return running.run, running.stdout + running.stderr


@pytest.mark.parametrize(("failure", "attempts"), [("outage", 2), ("bad-input", 1)])
def test_retry_retries_an_outage_but_not_bad_input(flow_env, failure, attempts):
    run, output = _run_probe(flow_env, failure)
    assert int(run["fail"].task.metadata_dict["attempt"]) + 1 == attempts
    assert output.count("error: ") == attempts
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("flow", "setting", "message"),
    [
        ("tuning_flow.py", {"SEARCH_CHUNKS": "0"}, "error: SEARCH_CHUNKS=0 must be at least 1"),
        ("monitoring_flow.py", {"CV_FOLDS": "many"}, "error: CV_FOLDS='many' is not a whole number"),
    ],
)
def test_a_bad_setting_stops_the_flow_file_in_one_line_before_metaflow_starts(
    flow: str, setting: dict[str, str], message: str, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    from tests.flow_runs import FLOWS

    env = {
        **os.environ,
        "METAFLOW_USER": "tests",
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path),
        **setting,
    }
    result = subprocess.run(
        [sys.executable, str(FLOWS / flow), "run"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == message
    assert not (tmp_path / ".metaflow").exists()  # nothing was started
