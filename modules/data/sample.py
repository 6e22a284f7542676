"""Simulated Muse recordings -> a sample `emotions.csv` built offline, deterministically.

The real dataset (Kaggle, Bird et al.) needs credentials and internet. This module simulates
raw Muse recordings (TP9, AF7, AF8, TP10, Right AUX at 256 Hz, microvolts), runs them through
the published feature extraction (`modules.data.eeg_features`) and writes a CSV with exactly the
published header: by default 2 subjects x 3 recordings x 3 states x 60 s = 18 recordings,
118 rows each, 2124 rows in all, shuffled like the real file.

What the simulation contains, and why (all amplitudes in microvolts):

* Background EEG with a 1/f spectrum, partly shared across channels (volume conduction).
* Rhythms with slowly waxing and waning envelopes: theta (4-8 Hz), alpha (around a subject's
  own peak, +-2 Hz) and beta (13-30 Hz).
* State effects (`PROFILES`), after the affective EEG literature on film clips:
  NEUTRAL has about twice the alpha everywhere (relaxed viewing), less beta, fewer blinks and
  almost no muscle activity; POSITIVE has much lower alpha at AF7 than at AF8 (left-frontal
  activation: frontal alpha asymmetry), more beta and frontal muscle tension (smiling, about
  18 uV RMS at AF7/AF8); NEGATIVE has the opposite asymmetry, more frontal theta and beta, more
  blinks and temporal muscle tension (frowning, jaw clenching, about 24 uV at TP9/TP10). Facial
  muscle activity is the strongest cue, as it is in real film-clip recordings; the published
  features are time-domain statistics, so states must differ in amplitude and shape, not only
  in spectrum, to be visible at all. The tension is strong enough that NEGATIVE is louder than
  NEUTRAL at the temporal sites even though NEUTRAL has twice the alpha there.
* Artefacts: eye blinks (60-150 uV deflections on AF7/AF8), EMG bursts (20-100 Hz noise),
  50 Hz mains hum (strong on the unconnected Right AUX) whose phase wanders against the
  windows (`_mains_hum`: a phase-locked hum stamps every recording with a fingerprint), slow
  electrode drift.
* Nuisance variation that keeps the task from being trivial: each subject has its own channel
  gains (about +-10 %), DC offsets (+-15 uV; about -300 uV on the AUX), alpha peak (9-11 Hz)
  and strength of response (+-6 %); each recording re-seats the headband (gains +-4 %, offsets
  +-1 uV) and varies the state effects (+-5 %), the muscle tension (+-8 %) and the artefact
  rates (+-10 %, then Poisson counts). The nuisance stays below the state contrasts, so the
  state signature is the same across recordings and subjects and a model trained on some
  recordings recognises the state of others. (Generator version 1 had a phase-locked hum,
  +-15 % subject gains and weaker muscle tension: on held-out recordings of seed 42 a linear
  SVM scored 0.52, an RBF SVM 0.36 and the DNN about 0.30.)

How hard it is, measured with `bench/bench_sample_learnability.py` (the pipeline's default
settings: tuned SVM and DNN, held-out accuracy; the majority-class baseline is 0.33):

    sample seed             42            7             123
    SVM grouped / random    0.93 / 0.99   0.96 / 0.97   0.96 / 0.97
    DNN grouped / random    0.88 / 0.97   0.95 / 0.96   0.93 / 0.96

The grouped split holds out whole recordings (three, one per state); the random row split
scores higher because neighbouring rows of one recording share 1 s of signal. Most grouped
errors are windows of a recording whose blink rate or muscle tension falls near another
state's (seed 42: S1-POSITIVE-2 blinks at about NEUTRAL's rate and is partly read as NEUTRAL).

Row k's `_b` block equals row k+1's `_a` block exactly within a recording (the same feature
vector, written with the same format), so recordings can be rebuilt by chaining rows, as in
the real file. The metadata file beside the CSV (`metadata_path`) records the recording of
every row so that tests and analyses can check that.

Command line: `python -m modules sample --out data/emotions.csv [--seed 42] [--force]`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
import pandas as pd

from modules.data.eeg_features import (
    CSV_FLOAT_FORMAT,
    SAMPLING_RATE,
    SIGNALS,
    feature_names,
    format_rows,
    recording_to_rows,
)
from modules.data.loading import metadata_path
from modules.errors import ConfigurationError
from modules.files import write_atomically

GENERATOR_VERSION = "2"
STATES = ("NEGATIVE", "NEUTRAL", "POSITIVE")
DEFAULT_SUBJECTS = 2
DEFAULT_REPEATS = 3
DEFAULT_DURATION_S = 60.0
# Recordings start at plausible Unix times, as in a Muse export (2019-01-01 UTC).
FIRST_TIMESTAMP = 1_546_300_800.0

# Channel order follows SIGNALS: TP9, AF7, AF8, TP10, Right AUX.
_EEG = slice(0, 4)


@dataclass(frozen=True)
class StateProfile:
    """How one emotional state changes the simulated signals (multipliers on the baseline)."""

    theta: tuple[float, float, float, float]
    alpha: tuple[float, float, float, float]
    beta: tuple[float, float, float, float]
    blinks_per_min: float
    emg_bursts_per_min: float
    emg_weights: tuple[float, float, float, float]
    emg_tone: tuple[float, float, float, float]  # steady muscle tension, uV RMS of 20-100 Hz


PROFILES: dict[str, StateProfile] = {
    "NEUTRAL": StateProfile(
        theta=(1.0, 1.0, 1.0, 1.0),
        alpha=(2.0, 1.8, 1.8, 2.0),
        beta=(0.7, 0.7, 0.7, 0.7),
        blinks_per_min=10.0,
        emg_bursts_per_min=1.0,
        emg_weights=(0.6, 0.5, 0.5, 0.6),
        emg_tone=(1.0, 1.0, 1.0, 1.0),
    ),
    "POSITIVE": StateProfile(
        theta=(1.0, 1.1, 1.1, 1.0),
        alpha=(1.0, 0.4, 1.2, 1.0),
        beta=(1.4, 1.5, 1.5, 1.4),
        blinks_per_min=14.0,
        emg_bursts_per_min=6.0,
        emg_weights=(0.5, 1.0, 1.0, 0.5),
        emg_tone=(3.0, 18.0, 18.0, 3.0),
    ),
    "NEGATIVE": StateProfile(
        theta=(1.3, 1.8, 1.8, 1.3),
        alpha=(0.8, 1.2, 0.4, 0.8),
        beta=(1.8, 2.0, 2.0, 1.8),
        blinks_per_min=18.0,
        emg_bursts_per_min=8.0,
        emg_weights=(1.0, 0.4, 0.4, 1.0),
        emg_tone=(24.0, 4.0, 4.0, 24.0),
    ),
}

# Baseline RMS amplitudes (microvolts) of the four EEG channels.
_BACKGROUND_RMS = np.array([6.0, 5.0, 5.0, 6.0])
_THETA_RMS = np.array([3.0, 4.0, 4.0, 3.0])
_ALPHA_RMS = np.array([8.0, 7.0, 7.0, 8.0])
_BETA_RMS = np.array([2.5, 3.0, 3.0, 2.5])


@dataclass(frozen=True)
class Subject:
    """One simulated person: what stays the same across their recordings."""

    number: int
    gains: np.ndarray  # (5,) channel gains
    offsets: np.ndarray  # (5,) DC offsets, microvolts
    alpha_peak_hz: float
    responsiveness: float  # how strongly the states show in this person's EEG


@dataclass(frozen=True)
class SampleInfo:
    """What `build_sample` did: where the files are, their size and where the time went."""

    path: Path
    metadata_path: Path
    created: bool
    rows: int | None = None
    recordings: int | None = None
    seed: int | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def message(self) -> str:
        """One line for people."""
        if not self.created:
            return f"{self.path} already exists; kept it (pass --force, or force=True, to rebuild it)"
        return (
            f"wrote {self.rows} rows from {self.recordings} simulated recordings (seed {self.seed}) "
            f"to {self.path}, metadata in {self.metadata_path}"
        )


def _band_noise(rng: np.random.Generator, n: int, low: float, high: float, channels: int) -> np.ndarray:
    """Gaussian noise limited to [low, high] Hz, unit RMS per channel: (n, channels)."""
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLING_RATE)
    spectrum = rng.standard_normal((freqs.size, channels)) + 1j * rng.standard_normal((freqs.size, channels))
    spectrum[(freqs < low) | (freqs > high)] = 0.0
    noise = np.fft.irfft(spectrum, n, axis=0)
    # A recording too short to hold the band (e.g. 0.01-0.3 Hz drift in 3 s) gets none of it.
    rms = noise.std(axis=0)
    return np.divide(noise, rms, out=np.zeros_like(noise), where=rms > 0)


def _pink_noise(rng: np.random.Generator, n: int, channels: int) -> np.ndarray:
    """1/f noise from 0.5 to 100 Hz, unit RMS per channel: (n, channels)."""
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLING_RATE)
    spectrum = rng.standard_normal((freqs.size, channels)) + 1j * rng.standard_normal((freqs.size, channels))
    shape = np.where((freqs >= 0.5) & (freqs <= 100.0), 1.0 / np.sqrt(np.maximum(freqs, 0.5)), 0.0)
    noise = np.fft.irfft(spectrum * shape[:, None], n, axis=0)
    return noise / noise.std(axis=0)


def _envelope(rng: np.random.Generator, n: int, channels: int, depth: float = 0.15) -> np.ndarray:
    """Slowly waxing and waning amplitude (0.05-0.5 Hz), mean about 1: (n, channels)."""
    slow = _band_noise(rng, n, 0.05, 0.5, 1)
    own = _band_noise(rng, n, 0.05, 0.5, channels)
    env = np.exp(depth * (0.7 * slow + 0.7 * own))
    return env / env.mean(axis=0)


def _rhythm(rng: np.random.Generator, n: int, low: float, high: float, rms: np.ndarray) -> np.ndarray:
    """A rhythm on the four EEG channels, partly shared between them, with a slow envelope."""
    shared = _band_noise(rng, n, low, high, 1)
    own = _band_noise(rng, n, low, high, 4)
    return (0.6 * shared + 0.8 * own) * _envelope(rng, n, 4) * rms


def _blinks(rng: np.random.Generator, n: int, per_min: float) -> np.ndarray:
    """Eye blinks: smooth 0.2-0.4 s deflections of 60-150 uV, mostly on the frontal channels."""
    out = np.zeros((n, 5))
    count = rng.poisson(per_min * n / SAMPLING_RATE / 60.0)
    t = np.arange(n) / SAMPLING_RATE
    spread = np.array([0.08, 1.0, 0.95, 0.08, 0.02])
    for centre, amplitude, width in zip(
        rng.uniform(0, n / SAMPLING_RATE, count),
        rng.uniform(60.0, 150.0, count),
        rng.uniform(0.04, 0.08, count),
        strict=True,
    ):
        near = np.abs(t - centre) < 5 * width
        out[near] += amplitude * np.exp(-0.5 * ((t[near] - centre) / width) ** 2)[:, None] * spread
    return out


def _emg_bursts(rng: np.random.Generator, n: int, per_min: float, weights: np.ndarray) -> np.ndarray:
    """Muscle artefacts: bursts (0.2-1.5 s) of 20-100 Hz noise, 10-35 uV RMS."""
    out = np.zeros((n, 5))
    count = rng.poisson(per_min * n / SAMPLING_RATE / 60.0)
    if count == 0:
        return out
    noise = _band_noise(rng, n, 20.0, 100.0, 4)
    for start, length, rms in zip(
        rng.integers(0, n, count),
        rng.integers(int(0.2 * SAMPLING_RATE), int(1.5 * SAMPLING_RATE), count),
        rng.uniform(10.0, 35.0, count),
        strict=True,
    ):
        stop = min(n, start + length)
        ramp = np.hanning(stop - start)[:, None]
        out[start:stop, _EEG] += noise[start:stop] * ramp * rms * weights
    return out


def _mains_hum(rng: np.random.Generator, n: int) -> np.ndarray:
    """50 Hz mains hum whose phase wanders against the sample clock: (n,), amplitude about 1.

    A pure 50 Hz sine would be phase-locked to the windows (their 0.5 s step holds 25 whole
    cycles), so every window of a recording would carry the same hum waveform and each
    recording a fingerprint of its own random phase, in every feature that sees raw values
    (fft_, correlate_, quarter means). In a real recording the mains frequency and the
    headband's clock drift and the coupling changes as the person moves: a narrow band
    (49.5-50.5 Hz) keeps the hum's level and frequency but lets its phase wander.
    """
    return np.sqrt(2.0) * _band_noise(rng, n, 49.5, 50.5, 1)[:, 0]


def _make_subjects(rng: np.random.Generator, count: int) -> list[Subject]:
    """Per-person nuisance: gains, offsets, alpha peak, strength of the state effects."""
    subjects = []
    for number in range(1, count + 1):
        offsets = np.append(rng.normal(0.0, 15.0, 4), rng.normal(-300.0, 80.0))
        subjects.append(
            Subject(
                number=number,
                gains=np.exp(rng.normal(0.0, 0.1, 5)),
                offsets=offsets,
                alpha_peak_hz=float(rng.uniform(9.0, 11.0)),
                responsiveness=float(np.exp(rng.normal(0.0, 0.06))),
            )
        )
    return subjects


def simulate_recording(
    rng: np.random.Generator, subject: Subject, state: str, duration_s: float, start: float
) -> tuple[np.ndarray, np.ndarray]:
    """One raw Muse recording: timestamps (n,) in seconds and signals (n, 5) in microvolts."""
    profile = PROFILES[state]
    n = round(duration_s * SAMPLING_RATE)

    def effect(multipliers: tuple[float, ...]) -> np.ndarray:
        # The person's responsiveness scales the state effect; each recording varies it a little.
        base = 1.0 + (np.asarray(multipliers) - 1.0) * subject.responsiveness
        return np.maximum(base * np.exp(rng.normal(0.0, 0.05, 4)), 0.1)

    eeg = np.zeros((n, 5))
    shared = _pink_noise(rng, n, 1)
    eeg[:, _EEG] = (0.6 * shared + 0.8 * _pink_noise(rng, n, 4)) * _BACKGROUND_RMS
    eeg[:, _EEG] += _rhythm(rng, n, 4.0, 8.0, _THETA_RMS * effect(profile.theta))
    peak = subject.alpha_peak_hz + rng.normal(0.0, 0.2)
    eeg[:, _EEG] += _rhythm(rng, n, peak - 2.0, peak + 2.0, _ALPHA_RMS * effect(profile.alpha))
    eeg[:, _EEG] += _rhythm(rng, n, 13.0, 30.0, _BETA_RMS * effect(profile.beta))
    tone = np.asarray(profile.emg_tone) * subject.responsiveness * np.exp(rng.normal(0.0, 0.08, 4))
    eeg[:, _EEG] += _band_noise(rng, n, 20.0, 100.0, 4) * _envelope(rng, n, 4) * tone

    rate_jitter = np.exp(rng.normal(0.0, 0.1, 2))
    eeg += _blinks(rng, n, profile.blinks_per_min * rate_jitter[0])
    emg_rate = 1.0 + (profile.emg_bursts_per_min - 1.0) * subject.responsiveness
    eeg += _emg_bursts(rng, n, emg_rate * rate_jitter[1], np.asarray(profile.emg_weights))

    # Unconnected Right AUX: mostly mains hum and wide noise; every channel drifts slowly.
    t = np.arange(n) / SAMPLING_RATE
    hum = _mains_hum(rng, n)
    eeg[:, 4] += 25.0 * hum + 15.0 * _pink_noise(rng, n, 1)[:, 0]
    eeg[:, _EEG] += 0.5 * hum[:, None]
    drift = _band_noise(rng, n, 0.01, 0.3, 5) * np.array([1.2, 1.2, 1.2, 1.2, 9.0])

    # Re-seating the headband changes gains and offsets a little for every recording.
    gains = subject.gains * np.exp(rng.normal(0.0, 0.04, 5))
    offsets = subject.offsets + rng.normal(0.0, 1.0, 5)
    signals = (eeg + drift) * gains + offsets
    return start + t, signals


def _recording_plan(subjects: int, repeats: int) -> list[tuple[int, str, int]]:
    """(subject, state, repeat) of every recording, in a fixed order."""
    return [(s, state, r) for s in range(1, subjects + 1) for state in STATES for r in range(1, repeats + 1)]


def _random_streams(seed: int, recordings: int) -> dict:
    """Independent seeded streams: subjects, one per recording, and the row shuffle.

    A recording's signals depend only on the seed and its position, not on what was drawn before.
    """
    children = np.random.SeedSequence(seed).spawn(recordings + 2)
    return {"subjects": children[0], "recordings": children[1:-1], "shuffle": children[-1]}


@dataclass(frozen=True)
class _Recording:
    id: str
    subject: int
    state: str
    repeat: int
    rows: pd.DataFrame


def _simulate_all(
    seed: int,
    subjects: int,
    repeats: int,
    duration_s: float,
    progress: Callable[[int, int, str], None] | None,
    timings: dict[str, float],
) -> list[_Recording]:
    """Simulate every recording and turn it into rows; each recording has its own random stream."""
    plan = _recording_plan(subjects, repeats)
    streams = _random_streams(seed, len(plan))
    people = _make_subjects(np.random.default_rng(streams["subjects"]), subjects)
    recordings = []
    for index, (subject, state, repeat) in enumerate(plan):
        began = time.perf_counter()
        start = FIRST_TIMESTAMP + 3600.0 * index
        rng = np.random.default_rng(streams["recordings"][index])
        timestamps, signals = simulate_recording(rng, people[subject - 1], state, duration_s, start)
        simulated = time.perf_counter()
        rows = recording_to_rows(timestamps, signals, state)
        timings["simulate"] += simulated - began
        timings["extract"] += time.perf_counter() - simulated
        recording_id = f"S{subject}-{state}-{repeat}"
        recordings.append(_Recording(recording_id, subject, state, repeat, rows))
        if progress:
            progress(index + 1, len(plan), recording_id)
    return recordings


def _existing_info(out: Path) -> SampleInfo:
    """SampleInfo for a dataset that is already there (from its metadata when present)."""
    meta = metadata_path(out)
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
        return SampleInfo(
            out, meta, False, data.get("rows"), len(data.get("recordings", [])), data.get("seed")
        )
    except (OSError, ValueError, TypeError):
        return SampleInfo(out, meta, False)


def build_sample(
    out: Path,
    seed: int = 42,
    force: bool = False,
    *,
    subjects: int = DEFAULT_SUBJECTS,
    repeats: int = DEFAULT_REPEATS,
    duration_s: float = DEFAULT_DURATION_S,
    progress: Callable[[int, int, str], None] | None = None,
) -> SampleInfo:
    """Simulate recordings and write the sample CSV (published header) and its metadata.

    An existing `out` is kept unless `force` is true (the returned info has created=False).
    Both files are written to temporary files beside `out` and renamed into place, so a crash
    never leaves a half-written dataset. `subjects`, `repeats` and `duration_s` make smaller
    samples for quick tries; the defaults give the documented 2124-row sample.
    """
    out = Path(out)
    if seed < 0:
        raise ConfigurationError(f"seed={seed} must be a whole number of at least 0")
    if subjects < 1 or repeats < 1:
        raise ConfigurationError(f"subjects={subjects} and repeats={repeats} must both be at least 1")
    if duration_s < 1.5:
        raise ConfigurationError(
            f"duration_s={duration_s} must be at least 1.5 s (one row needs two windows)"
        )
    if out.is_dir():
        raise ConfigurationError(f"{out} is a folder; expected a CSV file path such as data/emotions.csv")
    if out.exists() and not force:
        return _existing_info(out)

    timings = {"simulate": 0.0, "extract": 0.0, "write": 0.0}
    recordings = _simulate_all(seed, subjects, repeats, duration_s, progress, timings)

    began = time.perf_counter()
    rows = pd.concat([r.rows for r in recordings], ignore_index=True)
    row_recording = np.concatenate([[r.id] * len(r.rows) for r in recordings])
    # Shuffle the rows like the real file; the permutation has its own seeded stream.
    shuffle = np.random.default_rng(_random_streams(seed, len(recordings))["shuffle"])
    order = shuffle.permutation(len(rows))
    rows = rows.iloc[order].reset_index(drop=True)
    row_recording = row_recording[order]
    if not np.isfinite(rows[feature_names()].to_numpy()).all():
        raise RuntimeError("simulated features contain non-finite values (a bug in the feature code)")

    text = format_rows(rows)
    payload = text.encode("utf-8")
    metadata = {
        "source": "sample",
        "synthetic": True,
        "seed": seed,
        "generator_version": GENERATOR_VERSION,
        "rows": len(rows),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "sampling_rate_hz": SAMPLING_RATE,
        "signals": list(SIGNALS),
        "duration_s": duration_s,
        "subjects": subjects,
        "repeats": repeats,
        "float_format": CSV_FLOAT_FORMAT,
        "recordings": [
            {"id": r.id, "subject": r.subject, "state": r.state, "repeat": r.repeat, "rows": len(r.rows)}
            for r in recordings
        ],
        "row_recording": row_recording.tolist(),
    }
    # Metadata first, CSV last: a complete CSV on disk always has the metadata describing it
    # (its sha256 names the CSV it belongs to); each file is renamed into place only when whole.
    try:
        write_atomically(metadata_path(out), json.dumps(metadata, indent=1).encode("utf-8"))
        write_atomically(out, payload)
    except OSError as exc:
        raise ConfigurationError(f"cannot write {out}: {exc.strerror or exc}") from None
    timings["write"] = time.perf_counter() - began
    return SampleInfo(out, metadata_path(out), True, len(rows), len(recordings), seed, timings)


@click.command(
    "sample",
    help="Build the offline sample of the EEG emotions dataset: simulated Muse recordings (2 subjects x 3 "
    "states x 3 recordings x 60 s) turned into the 2548 published features, with the published header. "
    "Deterministic for a given seed.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="output CSV (default: DATA_PATH)")
@click.option("--seed", type=int, default=42, show_default=True, help="random seed")
@click.option("--force", is_flag=True, help="replace an existing file at --out")
@click.option("--subjects", type=int, default=DEFAULT_SUBJECTS, show_default=True, help="simulated people")
@click.option(
    "--repeats", type=int, default=DEFAULT_REPEATS, show_default=True, help="recordings per person and state"
)
@click.option(
    "--duration-s", type=float, default=DEFAULT_DURATION_S, show_default=True, help="seconds per recording"
)
def cli(out: Path | None, seed: int, force: bool, subjects: int, repeats: int, duration_s: float) -> None:
    """`python -m modules sample`: build the simulated sample dataset."""
    if out is None:
        from modules.settings import get_settings

        out = get_settings().data_path

    def report(done: int, total: int, recording_id: str) -> None:
        print(f"  recording {done}/{total} done ({recording_id})", file=sys.stderr, flush=True)

    info = build_sample(
        out,
        seed=seed,
        force=force,
        subjects=subjects,
        repeats=repeats,
        duration_s=duration_s,
        progress=report,
    )
    print(info.message)
    if info.created:
        t = info.timings
        print(
            f"time: simulate {t['simulate']:.1f} s, extract {t['extract']:.1f} s, write {t['write']:.1f} s",
            file=sys.stderr,
        )
