"""Benchmark: `make tune` + `make train` against the original method, same data, split and machine.

The issue's target: the original pipeline (grid search on all features, then retraining)
takes about 540 s for tune + train on 2132 x 2548 on a 2-core machine; ours should take at
most a tenth of the baseline, at equal or better held-out accuracy.

For each split protocol this runs, in one process tree on one machine:
- the baseline (bench_tuning.run_baseline: GridSearchCV over the 48 original candidates,
  5-fold, sequential, scaler fitted on all rows, refit) on the same held-out rows as ours;
- `make tune` and `make train` as a user runs them (Metaflow flows, MLflow on SQLite,
  default budgets), into a throwaway store, timed end to end and per step.

    python bench/bench_pipeline.py                       # full baseline (~10 min per protocol)
    python bench/bench_pipeline.py --quick               # baseline extrapolated from 6 candidates
    python bench/bench_pipeline.py --protocols grouped   # one protocol
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
from bench_tuning import run_baseline  # noqa: E402

from modules.data.loading import load_dataset  # noqa: E402
from modules.data.sample import build_sample  # noqa: E402
from modules.data.splitting import make_split  # noqa: E402
from modules.errors import run_cli  # noqa: E402

STEP_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \[\d+/(?P<step>\w+)/\d+ \(pid \d+\)\] Task (?P<event>is starting|finished)"
)


def step_seconds(output: str) -> dict[str, float]:
    """Seconds per Metaflow step (task start to finish), parsed from the run's log lines."""
    started: dict[str, datetime] = {}
    seconds: dict[str, float] = {}
    for line in output.splitlines():
        match = STEP_LINE.match(line.strip())
        if not match:
            continue
        stamp = datetime.strptime(match["time"], "%Y-%m-%d %H:%M:%S.%f")
        if match["event"] == "is starting":
            started[match["step"]] = stamp
        elif match["step"] in started:
            seconds[match["step"]] = (stamp - started[match["step"]]).total_seconds()
    return seconds


def run_make(target: str, env: dict[str, str]) -> tuple[float, str]:
    """Run one make target as a user would; return its wall time and output."""
    started = time.perf_counter()
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), target],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        print(result.stdout[-4000:], result.stderr[-4000:], sep="\n")
        raise SystemExit(f"make {target} failed (exit {result.returncode})")
    return elapsed, result.stdout + result.stderr


def bench_protocol(data_path: Path, protocol: str, quick: bool, seed: int) -> dict[str, Any]:
    """Baseline and ours on one split protocol; prints both and the ratio."""
    dataset = load_dataset(data_path)
    split = make_split(dataset.features, dataset.labels, protocol=protocol, seed=seed)
    print(
        f"\n== protocol {protocol}: {len(split.train_index)} training rows, {len(split.test_index)} held out"
    )
    baseline = run_baseline(
        dataset.features,
        dataset.labels.to_numpy(),
        np.asarray(split.train_index),
        np.asarray(split.test_index),
        quick=quick,
        seed=seed,
    )
    baseline_seconds = sum(baseline["timings"].values())
    for name, value in baseline["timings"].items():
        print(f"  baseline {name:<36} {value:8.1f} s")
    print(f"  baseline held-out accuracy {baseline['accuracy']:.4f} ({baseline['best_params']})")

    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        env = {
            **os.environ,
            "DATA_PATH": str(data_path),
            "SPLIT_PROTOCOL": protocol,
            "SEED": str(seed),
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
            "MLFLOW_ARTIFACT_ROOT": f"{tmp}/artifacts",
            "METAFLOW_DATASTORE_SYSROOT_LOCAL": tmp,
            "REPORTS_DIR": f"{tmp}/reports",
            "METAFLOW_USER": os.environ.get("METAFLOW_USER", "bench"),
        }
        tune_seconds, tune_output = run_make("tune", env)
        train_seconds, train_output = run_make("train", env)
        promotion = json.loads(Path(tmp, "reports", "promotion.json").read_text())
    ours_seconds = tune_seconds + train_seconds
    for flow, output in (("TuningFlow", tune_output), ("MLPipelineFlow", train_output)):
        steps = ", ".join(f"{step} {sec:.1f}s" for step, sec in step_seconds(output).items())
        print(f"  {flow} steps: {steps}")
    accuracies = {row["family"]: row["test_accuracy"] for row in promotion["families"]}
    print(f"  ours make tune {tune_seconds:.1f} s + make train {train_seconds:.1f} s = {ours_seconds:.1f} s")
    print("  ours held-out accuracy: " + ", ".join(f"{f} {a:.4f}" for f, a in accuracies.items()))
    ratio = ours_seconds / baseline_seconds
    label = " (baseline EXTRAPOLATED)" if quick else ""
    print(
        f"  RATIO ours/baseline = {ratio:.3f}{label} (target <= 0.10); "
        f"accuracy ours best {max(accuracies.values()):.4f} vs baseline {baseline['accuracy']:.4f}"
    )
    return {"protocol": protocol, "ratio": ratio, "ours_s": ours_seconds, "baseline_s": baseline_seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="baseline on 6 candidates, extrapolated to 48")
    parser.add_argument("--protocols", default="grouped,random", help="comma-separated split protocols")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data", type=Path, default=None, help="dataset CSV (default: a fresh full sample)")
    args = parser.parse_args()
    one, five, _ = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {one:.1f} / {five:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        data_path = args.data or Path(tmp) / "emotions.csv"
        if args.data is None:
            build_sample(data_path, seed=args.seed)
        results = [
            bench_protocol(data_path, p.strip(), args.quick, args.seed) for p in args.protocols.split(",")
        ]
    print("\nsummary: " + "; ".join(f"{r['protocol']} ratio {r['ratio']:.3f}" for r in results))
    return 0


if __name__ == "__main__":
    run_cli(main)
