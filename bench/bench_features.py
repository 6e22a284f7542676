"""Benchmark: the feature extractor on an hour of Muse recording, and the folder build on 1 vs all cores.

Target: one hour of 256 Hz five-signal recording turned into its 7198 published rows in well under
a minute on one core (one process, one BLAS thread). Baselines measured in the same run, so the
ratios hold on any machine: the time to simulate that hour (`modules.data.sample`), and the
single-window extractor (`window_features`, one call per window) scaled to the hour's windows.
Also timed: reading the hour back from a jittered muse-lsl CSV (parse, dejitter, gap search), and
`modules.data.recordings.build_dataset` on a folder of recordings with 1 process and with one
per core, with the cores each kept busy (CPU seconds of the process and its workers over wall
seconds): on a machine shared with other work the speed-up is bounded by the cores left free.

    python bench/bench_features.py [--minutes 60] [--files 16] [--file-seconds 120] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modules.data import eeg_features as ef
from modules.data.muse_exports import read_muse_export
from modules.data.recordings import build_dataset
from modules.data.sample import STATES, _make_subjects, simulate_recording

TARGET_S = 60.0
START = 1_546_300_800.0


def write_jittered(path: Path, t: np.ndarray, signals: np.ndarray, seed: int) -> None:
    """A muse-lsl CSV whose chunk timestamps run up to 15 ms late and step back (as LSL tools write)."""
    rng = np.random.default_rng(seed)
    late = np.repeat(rng.uniform(0.0, 0.015, len(t) // 12 + 1), 12)[: len(t)]
    table = pd.DataFrame(np.round(signals, 3), columns=list(ef.SIGNALS))
    table.insert(0, "timestamps", t + late)
    table.to_csv(path, index=False, float_format="%.6f")


def best_of(repeats: int, function: Callable[[], object]) -> tuple[float, object]:
    """Least wall time of `repeats` calls (the least disturbed by other load) and the last result."""
    times, result = [], None
    for _ in range(max(1, repeats)):
        began = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - began)
    return min(times), result


def time_hour(minutes: float, folder: Path, repeats: int) -> dict[str, float]:
    """Simulate, extract (one core), the single-window baseline, and reading back from CSV."""
    rng = np.random.default_rng(0)
    subject = _make_subjects(rng, 1)[0]
    figures: dict[str, float] = {}
    figures["simulate"], (t, signals) = best_of(
        1, lambda: simulate_recording(rng, subject, "POSITIVE", 60.0 * minutes, START)
    )
    with threadpool_limits(1):
        figures["extract"], rows = best_of(repeats, lambda: ef.recording_to_rows(t, signals, "POSITIVE"))
        cpu = time.process_time()
        ef.recording_to_rows(t, signals, "POSITIVE")
        figures["extract_cpu"] = time.process_time() - cpu
        figures["rows"] = len(rows)
        figures["resample"], windows = best_of(repeats, lambda: ef.resample_windows(t, signals))
        figures["features"], _ = best_of(repeats, lambda: ef.windows_to_features(windows))
        sample = windows[:: max(1, len(windows) // 300)]
        one_by_one, _ = best_of(repeats, lambda: [ef.window_features(w) for w in sample])
        figures["single_window_x_windows"] = one_by_one / len(sample) * len(windows)
        path = folder / "hour.csv"
        write_jittered(path, t, signals, seed=1)
        figures["read"], _ = best_of(repeats, lambda: read_muse_export(path))
        figures["csv_mb"] = path.stat().st_size / 1e6
        figures["format"], _ = best_of(1, lambda: ef.format_row_lines(rows))
    return figures


@dataclass(frozen=True)
class FolderTiming:
    """One folder build: wall seconds and the cores its processes kept busy (CPU seconds / wall)."""

    seconds: float
    cores_busy: float
    jobs: int
    rows: int


def timed_build(source: Path, out: Path, jobs: int) -> FolderTiming:
    """The quicker of two builds with `jobs` processes, with the CPU time of this process and its workers."""
    best: FolderTiming | None = None
    for _ in range(2):
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu, began = time.process_time(), time.perf_counter()
        info = build_dataset(source, out, jobs=jobs, force=True)
        wall = time.perf_counter() - began
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (
            time.process_time()
            - cpu
            + (after.ru_utime + after.ru_stime)
            - (children.ru_utime + children.ru_stime)
        )
        if best is None or wall < best.seconds:
            best = FolderTiming(wall, cpu / wall, info.jobs, info.rows)
    assert best is not None
    return best


def time_folder(files: int, seconds: float, folder: Path) -> tuple[FolderTiming, FolderTiming, float]:
    """build_dataset on `files` jittered recordings with 1 process and with one per core, and the
    one-minute load average when the timing began (other processes compete for the cores)."""
    rng = np.random.default_rng(1)
    people = _make_subjects(rng, max(1, files // 3))
    for k in range(files):
        state = STATES[k % 3]
        t, signals = simulate_recording(rng, people[(k // 3) % len(people)], state, seconds, START + 3600 * k)
        target = folder / "recordings" / f"S{(k // 3) % len(people) + 1}" / state
        target.mkdir(parents=True, exist_ok=True)
        write_jittered(target / f"take{k}.csv", t, signals, seed=k)
    load = os.getloadavg()[0]
    with threadpool_limits(1):
        one = timed_build(folder / "recordings", folder / "one.csv", 1)
    every = timed_build(folder / "recordings", folder / "all.csv", os.cpu_count() or 1)
    # The same bytes whatever the number of processes: rows in the order of the files.
    assert (folder / "one.csv").read_bytes() == (folder / "all.csv").read_bytes()
    return one, every, load


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the long recording")
    parser.add_argument("--files", type=int, default=16, help="recordings in the folder build")
    parser.add_argument("--file-seconds", type=float, default=120.0, help="length of each of them")
    parser.add_argument("--repeats", type=int, default=3, help="timings to take (the best is reported)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        hour = time_hour(args.minutes, Path(tmp), args.repeats)
        one, every, load = time_folder(args.files, args.file_seconds, Path(tmp))

    extract = hour["extract"]
    target = TARGET_S * args.minutes / 60.0
    print(
        f"extract {args.minutes:g} min of 256 Hz x 5 signals ({int(hour['rows'])} rows), one core, "
        f"best of {args.repeats}: {extract:.2f} s (CPU time of one run {hour['extract_cpu']:.2f} s)"
    )
    print(f"  against the {target:.0f} s target: ratio {extract / target:.3f} (below 1.0 is within target)")
    print(
        f"  against simulating that signal ({hour['simulate']:.2f} s): ratio {extract / hour['simulate']:.2f}"
    )
    print(
        f"  against one-window-at-a-time calls ({hour['single_window_x_windows']:.2f} s estimated): "
        f"ratio {extract / hour['single_window_x_windows']:.2f}"
    )
    print(f"  resampling {hour['resample']:.2f} s, features {hour['features']:.2f} s")
    print(
        f"read it back from a jittered muse-lsl CSV ({hour['csv_mb']:.0f} MB; parse, dejitter, gap search): "
        f"{hour['read']:.2f} s; format its rows as CSV text: {hour['format']:.2f} s"
    )
    print(
        f"folder build, {args.files} x {args.file_seconds:g} s recordings ({one.rows} rows): 1 process "
        f"{one.seconds:.2f} s ({one.cores_busy:.2f} cores busy), {every.jobs} processes {every.seconds:.2f} s "
        f"({every.cores_busy:.2f} cores busy): speed-up {one.seconds / every.seconds:.2f}x on "
        f"{os.cpu_count()} cores, load average {load:.1f} when it began (other processes' load included)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
