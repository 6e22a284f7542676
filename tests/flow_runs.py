"""Run the real Metaflow flows from tests, on a small sample, into throwaway stores."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FLOWS = PROJECT_ROOT / "metaflows_flow"

# A small sample: 18 short recordings, a few hundred rows.
SAMPLE_DURATION_S = 20
TINY_BUDGETS = {"svm_max_candidates": 4, "dnn_max_trials": 2, "dnn_max_epochs": 4}


@dataclass
class FlowEnvironment:
    """Where one test session's flows keep their data, runs, models and reports."""

    root: Path
    data_path: Path
    tracking_uri: str
    env: dict[str, str]

    def runner(self, flow_file: str, env: dict[str, str] | None = None) -> Any:
        from metaflow import Runner

        return Runner(str(FLOWS / flow_file), env=env or self.env, cwd=str(self.root), show_output=False)

    def run(self, flow_file: str, *, settings: dict[str, str] | None = None, **parameters: Any) -> Any:
        """Run a flow to the end and return its Metaflow Run; fail with the flow's output.

        `settings` are environment variables on top of this environment's (e.g. MODEL_FAMILIES).
        """
        env = {**self.env, **settings} if settings else None
        with self.runner(flow_file, env=env).run(**parameters) as running:
            assert running.status == "successful", running.stdout + running.stderr
            return running.run

    def start(self, flow_file: str, *args: str, env: dict[str, str] | None = None) -> StartedFlow:
        """Start `python FLOW ARGS...` in its own process group, so a test can kill all of it."""
        log = self.root / f"flow-{os.urandom(4).hex()}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, str(FLOWS / flow_file), *args],
                env=env or self.env,
                cwd=self.root,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return StartedFlow(process, log)

    def metaflow_run(self, pathspec: str) -> Any:
        """A Metaflow Run of this environment's datastore, by pathspec."""
        from metaflow import Run

        return Run(pathspec, _namespace_check=False, _current_metadata=f"local@{self.root}")


@dataclass
class StartedFlow:
    """A flow started by `FlowEnvironment.start`: its process and its combined output."""

    process: subprocess.Popen[bytes]
    log: Path

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def run_id(self) -> str | None:
        """The Metaflow run id, once the flow has printed it."""
        for line in self.output.splitlines():
            if "(run-id " in line:
                return line.split("(run-id ", 1)[1].split(")", 1)[0].strip()
        return None

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the flow's whole process group: the Metaflow runtime and every task it started."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def make_flow_environment(root: Path, tracking_uri: str | None = None, **settings: str) -> FlowEnvironment:
    """A sample dataset under `root` and the environment that points the flows at `root`."""
    from modules.data.sample import build_sample

    data_path = root / "emotions.csv"
    build_sample(data_path, seed=7, duration_s=SAMPLE_DURATION_S)
    tracking_uri = tracking_uri or f"sqlite:///{root / 'mlflow.db'}"
    env = {
        "METAFLOW_USER": os.environ.get("METAFLOW_USER", "tests"),
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(root),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_ARTIFACT_ROOT": str(root / "artifacts"),
        "MLFLOW_EXPERIMENT_NAME": "flow-tests",
        "REPORTS_DIR": str(root / "reports"),
        "DATA_PATH": str(data_path),
        "CV_FOLDS": "3",
        "SVM_N_JOBS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": str(PROJECT_ROOT),
        **settings,
    }
    return FlowEnvironment(root=root, data_path=data_path, tracking_uri=tracking_uri, env=env)
