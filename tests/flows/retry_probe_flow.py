"""A two-step flow for tests: its `fail` step (retried once) raises the project error it is told to.

python tests/flows/retry_probe_flow.py run --failure outage|bad-input
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from metaflow import FlowSpec, Parameter, retry, step

from metaflows_flow.flow_helpers import tracked
from modules.errors import ConfigurationError, ServiceUnavailableError


class RetryProbeFlow(FlowSpec):
    """Shows which failures of a `@tracked` step Metaflow's `@retry` retries."""

    failure = Parameter("failure", default="outage", help="outage or bad-input")

    @tracked
    @step
    def start(self):
        """Nothing to do."""
        self.next(self.fail)

    @retry(times=1, minutes_between_retries=0)
    @tracked
    @step
    def fail(self):
        """Fail the way the parameter says."""
        if self.failure == "outage":
            raise ServiceUnavailableError(
                "MLflow tracking server at http://127.0.0.1:9 is not answering: probe"
            )
        raise ConfigurationError(f"FAILURE={self.failure!r} is the probe's bad input")
        self.next(self.end)  # never reached; Metaflow reads the graph from it

    @step
    def end(self):
        """Never reached."""


if __name__ == "__main__":
    RetryProbeFlow()
