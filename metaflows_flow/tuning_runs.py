"""Find the TuningFlow run whose settings MLPipelineFlow trains with (Metaflow Client API)."""

from __future__ import annotations

from typing import Any

from metaflow import Flow, Run, namespace
from metaflow.exception import MetaflowNotFound

from modules.errors import ConfigurationError


def find_tuning_run(run_id: str) -> Any:
    """`latest` = the latest successful TuningFlow run; otherwise that run id, which must have succeeded."""
    # Runs of every user: CI and people share one datastore.
    namespace(None)
    try:
        run = Flow("TuningFlow").latest_successful_run if run_id == "latest" else Run(f"TuningFlow/{run_id}")
    except MetaflowNotFound:
        run = None
    if run is None and run_id == "latest":
        raise ConfigurationError(
            "no successful TuningFlow run found in this Metaflow datastore; run `make tune` first"
        )
    if run is None:
        raise ConfigurationError(
            f"tuning-flow-run-id {run_id!r}: no TuningFlow run with that id in this Metaflow datastore "
            "(use `latest` or an id printed by `make tune`)"
        )
    if not run.successful:
        raise ConfigurationError(
            f"TuningFlow/{run.id} did not finish successfully; pick another run or rerun `make tune`"
        )
    return run
