"""A small flow with the shapes the pipeline uses on Kubernetes: a CPU step, a foreach of GPU steps, a join.

Compiled by tests/integration/test_argo_compile.py to check where modules.kubernetes places each
step in the Argo WorkflowTemplate, and run by tests/integration/test_gcs_datastore.py on the GCS
datastore (ARGO_PROBE_FAIL_IN_JOIN=1 makes the join fail, for `resume`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from metaflow import FlowSpec, step

from modules.kubernetes import kubernetes_step


class ArgoProbeFlow(FlowSpec):
    """start -> fit_chunk (foreach, GPU) -> join -> end."""

    @kubernetes_step("cpu")
    @step
    def start(self):
        """Split the search space into chunks."""
        self.chunks = [0, 1]
        self.next(self.fit_chunk, foreach="chunks")

    @kubernetes_step("gpu")
    @step
    def fit_chunk(self):
        """One chunk per pod, on a GPU node."""
        self.chunk = self.input
        self.next(self.join)

    @step
    def join(self, inputs):
        """Gather the chunks."""
        if os.environ.get("ARGO_PROBE_FAIL_IN_JOIN"):
            raise RuntimeError("ARGO_PROBE_FAIL_IN_JOIN is set")
        self.chunks_done = sorted(i.chunk for i in inputs)
        self.next(self.end)

    @step
    def end(self):
        """Nothing left to do."""


if __name__ == "__main__":
    ArgoProbeFlow()
