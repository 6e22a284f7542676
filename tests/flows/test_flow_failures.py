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
