"""Benchmark: build the full sample dataset and say where the time goes.

Prints the build time against the 30 s target (as a ratio: below 1.0 is within target), the
split between simulation, feature extraction and writing, the time to parse the CSV back,
and, as a same-run baseline, the vectorised extractor against one-window-at-a-time calls.

    python bench/bench_sample.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modules.data import eeg_features as ef
from modules.data.sample import build_sample

TARGET_S = 30.0


def time_build(folder: Path) -> tuple[float, dict[str, float], Path, int]:
    """Build the default sample once; returns wall time, its phase timings, the path, rows."""
    out = folder / "emotions.csv"
    began = time.perf_counter()
    info = build_sample(out, force=True)
    return time.perf_counter() - began, info.timings, out, info.rows or 0


def time_extraction_baseline(windows: np.ndarray) -> tuple[float, float]:
    """Seconds for the batched extractor and for a loop of single-window calls, same windows."""
    began = time.perf_counter()
    batched = ef.windows_to_features(windows)
    vectorised = time.perf_counter() - began
    began = time.perf_counter()
    looped = np.stack([ef.window_features(w) for w in windows])
    loop = time.perf_counter() - began
    assert np.allclose(batched, looped)
    return vectorised, loop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="builds to time (the best is reported)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        runs = [time_build(Path(tmp)) for _ in range(max(1, args.repeats))]
        total, timings, out, rows = min(runs, key=lambda run: run[0])
        size_mb = out.stat().st_size / 1e6
        began = time.perf_counter()
        pd.read_csv(out)
        parse = time.perf_counter() - began

    rng = np.random.default_rng(0)
    windows = rng.normal(0.0, 20.0, size=(2142, ef.RESAMPLED_ROWS, ef.N_SIGNALS))  # ~ the sample's windows
    vectorised, loop = time_extraction_baseline(windows)

    other = total - sum(timings.values())
    print(f"sample build: {rows} rows, {size_mb:.1f} MB, best of {len(runs)}: {total:.2f} s")
    print(f"  against the {TARGET_S:.0f} s target: ratio {total / TARGET_S:.3f} (below 1.0 is within target)")
    for phase in ("simulate", "extract", "write"):
        print(f"  {phase:<9} {timings[phase]:6.2f} s  ({timings[phase] / total:5.1%})")
    print(f"  other     {other:6.2f} s  ({other / total:5.1%})")
    print(f"parse the CSV back with pandas: {parse:.2f} s")
    print(
        f"extractor on {len(windows)} windows: batched {vectorised:.3f} s, one at a time {loop:.3f} s "
        f"(batched is {loop / vectorised:.1f}x faster)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
