"""Benchmark: loading the 2548-feature CSV and rebuilding its recordings, against targets and baselines.

Targets (2 cores): `load_dataset` under 2 s, `detect_recordings` under 1 s. Baselines measured
in the same run, so the ratios hold on any machine: plain `pd.read_csv` (default engine, no
validation) and pandas' pyarrow engine for loading; a naive all-pairs comparison of `_b`
and `_a` blocks (timed on a subset, scaled by n^2) for chain detection.

    python bench/bench_data.py [--repeat 5] [--synthetic] [--strict]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modules.data.loading import load_dataset
from modules.data.splitting import cv_folds, detect_recordings, make_split, paired_half_columns

LOAD_TARGET_S = 2.0
DETECT_TARGET_S = 1.0


def timed(function: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Best and median wall time of `repeat` calls (best is the least disturbed by neighbours)."""
    times = []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


def synthesise(path: Path, recordings: int = 18, half: int = 1274, seed: int = 0) -> None:
    """A same-size stand-in (2132 x 2549): chained `_a`/`_b` blocks, three significant figures, `# ` header."""
    rng = np.random.default_rng(seed)
    names = [f"x_{k}" for k in range(half)]
    rows, labels = [], []
    for r in range(recordings):
        windows = 119 + (r < 8)  # 10 recordings of 118 rows and 8 of 119: 2132 rows as published
        series = rng.normal(size=(windows, half)) * 10.0 ** rng.integers(-2, 5, size=half)
        rows.append(np.hstack([series[:-1], series[1:]]))
        labels += [("NEGATIVE", "NEUTRAL", "POSITIVE")[r % 3]] * (windows - 1)
    order = rng.permutation(len(labels))
    frame = pd.DataFrame(
        np.vstack(rows)[order], columns=[f"{n}_a" for n in names] + [f"{n}_b" for n in names]
    )
    frame["label"] = np.array(labels)[order]
    frame.to_csv(path, index=False, float_format="%.3g")
    path.write_text("# " + path.read_text())


def naive_chain_links(features: pd.DataFrame, rows: int) -> int:
    """All-pairs comparison of each row's `_b` block with every row's `_a` block (O(n^2 * width))."""
    a_cols, b_cols = paired_half_columns(list(features.columns))
    values = features.to_numpy()[:rows]
    a, b = values[:, a_cols], values[:, b_cols]
    return sum(int((a == b[i]).all(axis=1).sum()) for i in range(rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per measurement")
    parser.add_argument("--naive-rows", type=int, default=400, help="rows for the naive O(n^2) baseline")
    parser.add_argument(
        "--synthetic", action="store_true", help="use the synthesised stand-in even when sample_data exists"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        path = Path(tmp) / "emotions.csv"
        started = time.perf_counter()
        try:
            if args.synthetic:
                raise ImportError("the stand-in was asked for")
            from modules.data.sample import build_sample

            build_sample(path, seed=42)
            origin = "modules.data.sample.build_sample"
        except ImportError:
            synthesise(path)
            origin = "synthesised stand-in"
        header = pd.read_csv(path, nrows=0).shape[1]
        size_mb = path.stat().st_size / 1e6
        print(
            f"dataset: {origin}, {header} columns, {size_mb:.1f} MB (made in {time.perf_counter() - started:.1f} s)"
        )
        load = getattr(os, "getloadavg", lambda: (float("nan"),) * 3)()
        print(
            f"machine: {os.cpu_count()} cores, load average {load[0]:.2f}; best / median of {args.repeat} runs"
        )

        load_best, load_median = timed(lambda: load_dataset(path), args.repeat)
        c_best, c_median = timed(lambda: pd.read_csv(path), args.repeat)
        arrow_best, arrow_median = timed(lambda: pd.read_csv(path, engine="pyarrow"), args.repeat)
        dataset = load_dataset(path)
        rows, features = dataset.features.shape
        print(
            f"\nload_dataset ({rows} x {features + 1}, validated):  {load_best:.3f} s / {load_median:.3f} s"
        )
        print(f"  baseline pd.read_csv (C engine, no checks):   {c_best:.3f} s / {c_median:.3f} s")
        print(f"  pd.read_csv(engine='pyarrow'):                {arrow_best:.3f} s / {arrow_median:.3f} s")
        print(
            f"  ratio load_dataset / read_csv: {load_best / c_best:.2f}x (validation, sha256, float64 matrix)"
        )
        load_ok = load_best < LOAD_TARGET_S
        print(
            f"  target < {LOAD_TARGET_S:g} s: {'met' if load_ok else 'MISSED'} ({load_best / LOAD_TARGET_S:.0%})"
        )

        detect_best, detect_median = timed(lambda: detect_recordings(dataset.features), args.repeat)
        recordings = detect_recordings(dataset.features)
        subset = min(args.naive_rows, rows)
        naive_best, _ = timed(lambda: naive_chain_links(dataset.features, subset), 1)
        naive_full = naive_best * (rows / subset) ** 2
        print(f"\ndetect_recordings: {detect_best:.3f} s / {detect_median:.3f} s -> {recordings.summary()}")
        print(
            f"  baseline naive all-pairs: {naive_best:.3f} s on {subset} rows, about {naive_full:.1f} s "
            f"for {rows} rows (scaled by n^2)"
        )
        print(f"  ratio naive / detect_recordings: {naive_full / detect_best:.0f}x")
        detect_ok = detect_best < DETECT_TARGET_S
        verdict = "met" if detect_ok else "MISSED"
        print(f"  target < {DETECT_TARGET_S:g} s: {verdict} ({detect_best / DETECT_TARGET_S:.0%})")

        split_best, _ = timed(
            lambda: make_split(dataset.features, dataset.labels, recordings=recordings), args.repeat
        )
        split = make_split(dataset.features, dataset.labels, recordings=recordings)
        folds_best, _ = timed(lambda: cv_folds(split, dataset.labels, n_splits=5), args.repeat)
        print(f"\nmake_split (given recordings): {split_best:.3f} s; cv_folds(5): {folds_best:.3f} s")
        print(f"  {split.describe()}")

    if args.strict and not (load_ok and detect_ok):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
