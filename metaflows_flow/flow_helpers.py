"""What both flows' steps share: tracking that fails in one line, honest run states, data and tags."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from metaflow import current, user_step_decorator

from modules.errors import EXIT_UNAVAILABLE, OperationalMLError
from modules.settings import Settings, get_settings

# Metaflow does not retry a task that exits with this code (METAFLOW_EXIT_DISALLOW_RETRY):
# a project error other than an outage (bad data, bad settings) would fail the same way again.
EXIT_NOT_RETRIED = 202
# A step that stops because a service is not answering leaves this file behind, so that the
# flow's own process (Metaflow's runtime exits 1 for any failed step) can exit 69 too.
OUTAGE_MARKER_ENV = "OPERATIONAL_ML_OUTAGE_MARKER"


def run_flow(flow_class: type) -> None:
    """A flow file's entry point: Metaflow's command line, exiting 69 when an outage stopped the flow."""
    if os.environ.get(OUTAGE_MARKER_ENV):  # a step's own process (Metaflow runs this file per task)
        flow_class()
        return
    with tempfile.TemporaryDirectory(prefix="flow-outage-") as tmp:
        marker = Path(tmp) / "outage"
        os.environ[OUTAGE_MARKER_ENV] = str(marker)  # inherited by every step's process
        try:
            flow_class()
        except SystemExit as exc:
            if exc.code not in (0, None) and marker.exists():
                raise SystemExit(EXIT_UNAVAILABLE) from None
            raise
        finally:
            del os.environ[OUTAGE_MARKER_ENV]


def flow_settings() -> Settings:
    """The settings a flow file reads when it is loaded (its parameters' defaults).

    A bad value (SEARCH_CHUNKS=0, CV_FOLDS=x) stops the flow before Metaflow starts, in one line
    with the project's exit code, instead of a traceback from the import.
    """
    try:
        return get_settings()
    except OperationalMLError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None


def _record_outage(step_name: str, *, outage: bool) -> None:
    marker = os.environ.get(OUTAGE_MARKER_ENV)
    if not marker:
        return
    if outage:
        Path(marker).write_text(step_name)
    else:  # a later failure for another reason is what the flow's exit code should say
        Path(marker).unlink(missing_ok=True)


@user_step_decorator
def tracked(step_name: str, flow: Any, inputs: Any = None) -> Any:
    """Every step: bounded tracking calls, one line and an exit code on failure, honest run states.

    Before the step: connect to the tracking store with the settings' retries and timeouts; in a
    resumed run, give the flow's parent run back to it (RUNNING, named and tagged after the
    resumed run; runs the earlier attempt left RUNNING become KILLED). When the step fails: one
    line on stderr for a project error or an unreachable server (no traceback), the parent run
    marked FAILED once no retry is left, and exit code 69 for an outage (which `@retry` retries).
    Any other project error exits with its own code (2), or with 202 in a step that has retries
    left: Metaflow does not retry that code, and bad input would fail the same way again.
    """
    from modules.tracking import client as tracking

    try:
        with tracking.outages_as_errors():
            tracking.connect(get_settings())
            parent_id = _parent_run_id(flow, inputs)
            if parent_id and current.origin_run_id:
                _reopen_after_resume(parent_id)
            yield
    except OperationalMLError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        _record_outage(step_name, outage=exc.exit_code == EXIT_UNAVAILABLE)
        if exc.exit_code == EXIT_UNAVAILABLE:
            sys.exit(EXIT_UNAVAILABLE)  # the server may be back for a retry; too soon to mark anything
        _mark_failed(flow, inputs, step_name, final=True)
        # Bad input fails the same way again: a step that has retries left asks Metaflow not to retry.
        sys.exit(EXIT_NOT_RETRIED if _retries_left(flow, step_name) > 0 else exc.exit_code)
    except Exception:  # a bug: its traceback is for us, the parent run still tells the truth
        _record_outage(step_name, outage=False)
        _mark_failed(flow, inputs, step_name)
        raise


def _parent_run_id(flow: Any, inputs: Any) -> str | None:
    """The flow's parent run id: an artifact of this step, or of its inputs before a join merges them."""
    run_id = getattr(flow, "mlflow_run_id", None)
    if run_id is None and inputs:
        run_id = getattr(inputs[0], "mlflow_run_id", None)
    return run_id


def _retries_left(flow: Any, step_name: str) -> int:
    step = getattr(type(flow), step_name)
    times = sum(int(deco.attributes["times"]) for deco in step.decorators if deco.name == "retry")
    return times - current.retry_count


def _mark_failed(flow: Any, inputs: Any, step_name: str, *, final: bool = False) -> None:
    """A failed step marks the parent run FAILED, unless Metaflow will retry it (best effort)."""
    from modules.tracking import client as tracking

    parent_id = _parent_run_id(flow, inputs)
    if parent_id is None or (not final and _retries_left(flow, step_name) > 0):
        return
    try:
        tracking.fail_flow_run(parent_id, close_steps=False)
    except Exception as exc:  # the server may be gone too: the exit hook or the next run closes it
        print(
            f"could not mark MLflow run {parent_id} FAILED: {tracking.describe_failure(exc)}", file=sys.stderr
        )


def _reopen_after_resume(parent_id: str) -> None:
    from modules.tracking import client as tracking

    pathspec = f"{current.flow_name}/{current.run_id}"
    tags = {
        "metaflow.pathspec": pathspec,
        tracking.RESUMED_FROM_TAG: f"{current.flow_name}/{current.origin_run_id}",
        **runtime_tags(),
    }
    killed = tracking.reopen_flow_run(parent_id, pathspec, tags)
    if killed is not None:
        print(
            f"MLflow run {parent_id} reopened for {pathspec} (resumed from {tags[tracking.RESUMED_FROM_TAG]}); "
            f"{len(killed)} run(s) the earlier attempt left RUNNING marked KILLED"
        )


def family_step(env: Any = None) -> Any:
    """Resources of the per-family `foreach` steps: on Kubernetes a GPU node when a chosen family asks
    for one (the DNN), else CPU. Locally `@resources`, which local runs ignore (the registry is not
    even loaded), so `make run` is unchanged."""
    from modules.kubernetes import kubernetes_step, on_kubernetes

    if not on_kubernetes(env):
        return kubernetes_step("cpu", env)
    from modules.models.families import get_family, select_families

    chosen = select_families(get_settings().model_families)
    wants_gpu = any(get_family(name).accelerator == "gpu" for name in chosen)
    return kubernetes_step("gpu" if wants_gpu else "cpu", env)


def runtime_tags() -> dict[str, str]:
    """The parent run's tag naming the process that runs the flow (this step's parent, Metaflow's runtime)."""
    from modules.tracking import client as tracking

    return {tracking.RUNTIME_TAG: tracking.process_identity(os.getppid())}


def close_failed_flow(run: Any = None) -> None:
    """Exit hook of a failed flow: its parent run FAILED, the runs its killed steps left RUNNING KILLED.

    Runs in its own process after the flow stopped; prints one line, never a traceback. When the
    server does not answer, the next run of a flow (or `resume`) closes them instead.
    """
    from modules.tracking import client as tracking

    try:
        parent_id = run["start"].task.data.mlflow_run_id
    except Exception:  # the flow failed before it created its parent run: nothing to close
        return
    try:
        with tracking.outages_as_errors():
            tracking.connect(get_settings(), timeout_s=3)
            killed = tracking.fail_flow_run(parent_id)
    except Exception as exc:
        print(
            f"MLflow runs of {run.pathspec} not closed ({tracking.describe_failure(exc)}); "
            "the next run of a flow or `resume` closes them"
        )
        return
    print(
        f"MLflow run {parent_id} of {run.pathspec} marked FAILED; {len(killed)} run(s) left RUNNING marked KILLED"
    )


class SplitDataSteps:
    """Mixin for flows whose artifacts hold `dataset`, `split`, `data_path` and `run_tags`.

    The dataset is loaded, validated and hashed once, in TuningFlow's `start`; every later step
    (and MLPipelineFlow) uses that artifact, so all of them see exactly the rows that were split.
    """

    def _settings(self) -> Settings:
        """The settings for this run's dataset (its experiment and registered-model names)."""
        return get_settings().for_data(self.data_path)

    def _data(self) -> Any:
        """The dataset and the split made in TuningFlow's start step."""
        from modules.data.splitting import Split
        from modules.models.training import PreparedData

        return PreparedData(dataset=self.dataset, split=Split.from_dict(self.split))

    def _start_parent_run(self, settings: Settings) -> str:
        """The flow run's parent MLflow run, tagged with the process that runs the flow."""
        from modules.tracking import client as tracking

        pathspec = f"{current.flow_name}/{current.run_id}"
        return tracking.start_parent_run(settings, pathspec, {**self.run_tags, **runtime_tags()})

    def _flow_tags(self) -> dict[str, str]:
        """The flow run's tags, naming this run also when `start` was cloned by a resume."""
        from modules.tracking import client as tracking

        tags = {**self.run_tags, "metaflow.pathspec": f"{current.flow_name}/{current.run_id}"}
        if current.origin_run_id:
            tags[tracking.RESUMED_FROM_TAG] = f"{current.flow_name}/{current.origin_run_id}"
        return tags

    def _step_tags(self) -> dict[str, str]:
        """The flow run's tags, with this step's pathspec and the parent run's id."""
        from modules.tracking import client as tracking

        return {
            **self._flow_tags(),
            "metaflow.pathspec": current.pathspec,
            tracking.PARENT_RUN_TAG: self.mlflow_run_id,
        }

    def _finish_parent_run(self) -> None:
        """The flow's last step: the parent run ends FINISHED (runs failed attempts left open: KILLED)."""
        from modules.tracking import client as tracking

        killed = tracking.finish_flow_run(self.mlflow_run_id)
        if killed:
            print(f"{len(killed)} MLflow run(s) left RUNNING by failed attempts marked KILLED")
