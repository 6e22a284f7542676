"""A flow started when ArgoProbeFlow finishes (@trigger_on_finish), as MLPipelineFlow after TuningFlow.

Compiled (never run) by tests/integration/test_argo_compile.py: Metaflow refuses to compile a
triggered flow unless the profile names the Argo Events event, source and sensor account.
"""

from __future__ import annotations

from metaflow import FlowSpec, step, trigger_on_finish


@trigger_on_finish(flow="ArgoProbeFlow")
class ArgoProbeTriggeredFlow(FlowSpec):
    """start -> end, once per finished ArgoProbeFlow run."""

    @step
    def start(self):
        """Nothing to do but be started."""
        self.next(self.end)

    @step
    def end(self):
        """Done."""


if __name__ == "__main__":
    ArgoProbeTriggeredFlow()
