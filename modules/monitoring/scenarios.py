"""Batches of rows for drift checks, drawn from the sample generator: unchanged, or shifted as in life.

Each function simulates fresh recordings of the simulated people of a sample (the same subjects
`build_sample(seed=sample_seed)` draws) and returns their rows with the published columns and
the label. What changes between scenarios is what changes in the field:

* `same_distribution_batch`: new recordings, same people, same states in the same mix. Nothing
  should be flagged.
* `reseated_headband_batch`: the headband was put on differently: two channels pick up 1.5 times
  the signal (a better contact) and every channel's DC offset moves. The raw signals change
  before the feature extraction, as they would on the device.
* `state_mix_batch`: the people only ever feel one state (e.g. everyone watches sad films), so the
  label and prediction mix moves while each state's signature stays the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from modules.data.eeg_features import recording_to_rows
from modules.data.sample import FIRST_TIMESTAMP, STATES, Subject, _make_subjects, simulate_recording

__all__ = [
    "RESEATED_GAINS",
    "RESEATED_OFFSETS_UV",
    "reseated_headband_batch",
    "same_distribution_batch",
    "simulate_batch",
    "state_mix_batch",
]

# Channel order TP9, AF7, AF8, TP10, Right AUX: both frontal channels pick up 1.5 times the signal.
RESEATED_GAINS = np.array([1.0, 1.5, 1.5, 1.0, 1.0])
# New DC offsets (microvolts) from the changed contact.
RESEATED_OFFSETS_UV = np.array([20.0, -25.0, 30.0, -15.0, 40.0])


def sample_subjects(sample_seed: int, count: int) -> list[Subject]:
    """The simulated people of `build_sample(seed=sample_seed, subjects=count)`.

    `build_sample` draws its people from the first child of the seed's SeedSequence, whatever
    the number of recordings, so the same call here gives the same people.
    """
    stream = np.random.SeedSequence(sample_seed).spawn(1)[0]
    return _make_subjects(np.random.default_rng(stream), count)


def simulate_batch(
    seed: int,
    *,
    sample_seed: int = 42,
    subjects: int = 2,
    states: Sequence[str] = STATES,
    repeats: int = 1,
    duration_s: float = 20.0,
    gains: np.ndarray | None = None,
    offsets_uv: np.ndarray | None = None,
) -> pd.DataFrame:
    """Rows of fresh recordings (`repeats` per subject and state), optionally re-seated.

    `seed` draws the recordings (a different seed, different recordings of the same people);
    `gains` multiply and `offsets_uv` are added to the raw signals (5 values each, SIGNALS order).
    """
    unknown = sorted(set(states) - set(STATES))
    if unknown:
        raise ValueError(f"unknown states {unknown}; expected some of {', '.join(STATES)}")
    people = sample_subjects(sample_seed, subjects)
    plan = [(person, state) for person in people for state in states for _ in range(repeats)]
    streams = np.random.SeedSequence([seed, sample_seed]).spawn(len(plan))
    frames = []
    for index, ((person, state), stream) in enumerate(zip(plan, streams, strict=True)):
        start = FIRST_TIMESTAMP + 3600.0 * (1000 + index)
        timestamps, signals = simulate_recording(
            np.random.default_rng(stream), person, state, duration_s, start
        )
        if gains is not None:
            signals = signals * np.asarray(gains, dtype=np.float64)
        if offsets_uv is not None:
            signals = signals + np.asarray(offsets_uv, dtype=np.float64)
        frames.append(recording_to_rows(timestamps, signals, state))
    return pd.concat(frames, ignore_index=True)


def same_distribution_batch(seed: int, **kwargs) -> pd.DataFrame:
    """Fresh recordings of the same people in every state: no drift expected."""
    return simulate_batch(seed, **kwargs)


def reseated_headband_batch(
    seed: int,
    *,
    gains: np.ndarray = RESEATED_GAINS,
    offsets_uv: np.ndarray = RESEATED_OFFSETS_UV,
    **kwargs,
) -> pd.DataFrame:
    """Fresh recordings with the headband re-seated: channel gains and offsets changed."""
    return simulate_batch(seed, gains=gains, offsets_uv=offsets_uv, **kwargs)


def state_mix_batch(seed: int, state: str = "NEGATIVE", **kwargs) -> pd.DataFrame:
    """Fresh recordings of the same people, all in one state: the label mix drifts."""
    return simulate_batch(seed, states=(state,), **kwargs)
