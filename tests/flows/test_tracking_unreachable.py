"""A dead tracking server stops the flow in its first step, before any training, in one line."""

from __future__ import annotations

import socket

import pytest

from modules.errors import EXIT_UNAVAILABLE

pytestmark = [pytest.mark.flows]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_flow_fails_fast_naming_the_masked_tracking_uri(flow_env):
    port = _closed_port()
    env = {**flow_env.env, "MLFLOW_TRACKING_URI": f"http://alice:s3cret-pw@127.0.0.1:{port}"}
    with flow_env.runner("tuning_flow.py", env=env).run() as running:
        output = running.stdout + running.stderr
        assert running.status == "failed"
        assert running.returncode == EXIT_UNAVAILABLE  # the flow's process exits as the step did
        steps = [step.id for step in running.run]
    assert f"error: MLflow tracking server at http://alice:***@127.0.0.1:{port} is not reachable" in output
    assert "s3cret-pw" not in output
    assert "Traceback" not in output
    # Nothing past the first step ran: no tuning started.
    assert steps == ["start"]
