"""Raw Muse recording -> the 2548 published EEG features (Bird et al., 2018-2019).

The algorithm, step by step:

1. Windows: 1.0 s long, 0.5 s apart, starting at the first timestamp (t = 0). A window holds
   the samples from the last one at or before its start up to (not including) the last one at
   or before its end; its duration runs from its first sample to that last one. The scan stops
   at the first window that is empty (it would start past the end of the recording) or shorter
   than 0.9 s, so a 60 s recording at 256 Hz gives 119 windows (the last one is 0.996 s).
2. Each window is Fourier-resampled (`scipy.signal.resample`) to 150 samples x 5 signals
   (TP9, AF7, AF8, TP10, Right AUX).
3. Each window gives 1274 values, in this order: `mean_` (5), `mean_d_` (5, second half minus
   first half; halves split at row 75), quarter means (50; quarters split at rows 37/75/112; ten
   blocks q1, q2, q3, q4, q1-q2, q1-q3, q1-q4, q2-q3, q2-q4, q3-q4; k = 5*block + signal),
   `stddev_` and `stddev_d_` (population standard deviation), `moments_` (20; central moments of
   order 3..6, not standardised; k = 5*(order-3) + signal), `max_`, `max_d_`, `max_q_`, `min_`,
   `min_d_`, `min_q_`, `covmat_` (144), `eigen_` (12), `logm_` (78), `entropy` (5), `correlate_`
   (75) and `fft_` (750; real part of the 5-point DFT across the signals at each of the 150
   time points; k = 5*t + j).
4. A row is the previous window's vector (`_a`) followed by the current one's (`_b`); the first
   window makes no row, so a 60 s recording gives 118 rows.

`covmat_`: the 144 values [quarter means without their last 6 (44), max_q (50), min_q (50)] are
reshaped to 12 x 12 and their covariance is taken with rows as variables (`numpy.cov`, divisor
N - 1 = 11), then flattened row by row. We symmetrise it as (C + C.T) / 2 so that the published
duplicate columns (covmat_{12i+j} == covmat_{12j+i}) are exact.

`eigen_`: `numpy.linalg.eigvals` of that covariance (real part), in the unsorted order the general
LAPACK solver returns them, as in the original. Eigenvalues within 1e-12 x sum(|eigenvalues|) of
zero are rounding noise around the structural zero (see below) and are reported as exactly 0.

`fft_`: computed with the closed form of the 5-point DFT of real values, so the published
duplicates fft_{5t+1} == fft_{5t+4} and fft_{5t+2} == fft_{5t+3} hold exactly.

Numerical traps of the original and how this implementation handles them:

* `entropy` of signed values. The original treats the raw (signed microvolt) values as a
  distribution, which gives `-inf` or NaN as soon as a value is negative or zero. We use the
  magnitudes: p = |x| / sum(|x|) over the window's 150 samples and H = -sum(p ln p) in nats,
  with 0 ln 0 = 0. This is finite, lies in [0, ln 150], and is scale-invariant. A window whose
  signal is all zeros (e.g. a zero-filled AUX column) gets ln 150, the limit of any constant
  signal, so constants give the same entropy whatever their level.
* `logm_` of a rank-deficient matrix. The 12 x 12 covariance has rank at most 11 (12
  observations, centred), so one eigenvalue is about 0 and the matrix logarithm is undefined or
  dominated by rounding noise. We take the eigendecomposition C = V diag(w) V.T (`eigh`), clip
  the eigenvalues from below at max(1e-6 * trace(C) / 12, 1e-12), and return
  V diag(ln w_clipped) V.T. Only the near-null directions change; well-conditioned directions
  keep their exact logarithm, and the result is real, finite and symmetric. A constant window
  (C = 0) therefore gives ln(1e-12) on the diagonal.

All feature computation is vectorised over windows (`windows_to_features`); `window_features`
is the single-window form of the same code.

Real exports (`export_to_rows`): `modules.data.muse_exports` reads muse-lsl / BlueMuse and Mind Monitor
CSVs, repairs their timestamp jitter with one least-squares line per continuous segment, splits at
real gaps and fills short runs of missing samples. Each segment is windowed on its own (no window
spans a gap), on the nominal sample clock, and the rows of all segments are concatenated. A
recording whose segments are all shorter than MIN_RECORDING_S (two windows: 1.41 s at 256 Hz) is
refused with one line naming its duration and that minimum.

Command line (a muse-lsl / BlueMuse CSV with `timestamps`, TP9, AF7, AF8, TP10, Right AUX, or a
Mind Monitor CSV with `TimeStamp`, RAW_TP9, RAW_AF7, RAW_AF8, RAW_TP10, AUX_RIGHT):

    python -m modules extract RECORDING.csv --label POSITIVE --out rows.csv [--sampling-rate 256]

writes the rows with the published header (`# mean_0_a,...,label`, three significant figures).
A 4-signal export without a right AUX signal is refused unless `--zero-aux` fills it with zeros.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
import pandas as pd
import scipy.signal

from modules.data.muse_exports import (
    SAMPLING_RATE,
    SIGNALS,
    TIMESTAMP_COLUMN,
    MuseExport,
    read_muse_export,
)
from modules.errors import ConfigurationError, DataValidationError
from modules.files import write_atomically

WINDOW_S = 1.0
STEP_S = 0.5
MIN_WINDOW_S = 0.9
# The shortest continuous recording that gives one row: windows at 0 s and 0.5 s, the second >= 0.9 s.
MIN_RECORDING_S = STEP_S + MIN_WINDOW_S
RESAMPLED_ROWS = 150
N_SIGNALS = len(SIGNALS)
N_WINDOW_FEATURES = 1274
# Row boundaries inside a resampled window (published: quarters 37/75/112, halves 75).
HALF = 75
QUARTERS = ((0, 37), (37, 75), (75, 112), (112, 150))
# Quarter blocks: q1..q4 then the six pairwise differences, in the published order.
QUARTER_PAIRS = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
# Eigenvalue clipping for the matrix logarithm (see the module docstring).
LOGM_RELATIVE_FLOOR = 1e-6
LOGM_ABSOLUTE_FLOOR = 1e-12
EIGEN_NOISE = 1e-12
# Windows whose features are computed together (see windows_to_features).
FEATURE_CHUNK = 64
# Values in the published CSV have about three significant figures.
CSV_FLOAT_FORMAT = "%.3g"

# (name stem, count) per window, in the published order; "quarter_mean" has its own naming rule.
FEATURE_GROUPS: tuple[tuple[str, int], ...] = (
    ("mean_", 5),
    ("mean_d_", 5),
    ("quarter_mean", 50),
    ("stddev_", 5),
    ("stddev_d_", 5),
    ("moments_", 20),
    ("max_", 5),
    ("max_d_", 5),
    ("max_q_", 50),
    ("min_", 5),
    ("min_d_", 5),
    ("min_q_", 50),
    ("covmat_", 144),
    ("eigen_", 12),
    ("logm_", 78),
    ("entropy", 5),
    ("correlate_", 75),
    ("fft_", 750),
)

# cos(2 pi / 5) and cos(4 pi / 5): the 5-point DFT of real values needs only these two.
_COS1 = float(np.cos(2.0 * np.pi / 5.0))
_COS2 = float(np.cos(4.0 * np.pi / 5.0))
# Upper triangle of a 12 x 12 matrix read diagonal by diagonal (offset 0, 1, ..., 11).
_DIAGONAL_ROWS = np.concatenate([np.arange(12 - d) for d in range(12)])
_DIAGONAL_COLS = np.concatenate([np.arange(d, 12) for d in range(12)])


def _window_names(half: str) -> list[str]:
    """The 1274 names of one window's vector, for half "a" or "b"."""
    names: list[str] = []
    for stem, count in FEATURE_GROUPS:
        if stem == "quarter_mean":
            # Published quirk: the quarter means re-use the `mean_d_` stem; the first five get a "2".
            names += [f"mean_d_{k}_{half}2" if k < 5 else f"mean_d_{k}_{half}" for k in range(count)]
        else:
            names += [f"{stem}{k}_{half}" for k in range(count)]
    return names


def feature_names() -> list[str]:
    """The 2548 normalised feature names (no "# ", no label), in the published order."""
    return _window_names("a") + _window_names("b")


def published_header() -> list[str]:
    """The 2549 CSV header names as published: "# mean_0_a", ..., "label"."""
    names = feature_names()
    return [f"# {names[0]}", *names[1:], "label"]


def window_bounds(timestamps: np.ndarray) -> np.ndarray:
    """Sample ranges [start, stop) of the 1 s windows, 0.5 s apart, as an (n, 2) int array."""
    t = np.asarray(timestamps, dtype=np.float64)
    if t.ndim != 1 or t.size < 2:
        return np.empty((0, 2), dtype=np.int64)
    t = t - t[0]
    starts = STEP_S * np.arange(int(np.floor(t[-1] / STEP_S)) + 1)
    first = np.searchsorted(t, starts, side="right") - 1
    last = np.searchsorted(t, starts + WINDOW_S, side="right") - 1
    duration = t[last] - t[first]
    ok = (last > first) & (duration >= MIN_WINDOW_S)
    # The scan stops at the first window that fails, like the original's `break`.
    n = int(np.argmin(ok)) if not ok.all() else ok.size
    return np.stack([first[:n], last[:n]], axis=1).astype(np.int64)


def resample_windows(timestamps: np.ndarray, signals: np.ndarray) -> np.ndarray:
    """Cut the windows and Fourier-resample each to (150, 5): returns (n_windows, 150, 5)."""
    signals = np.asarray(signals, dtype=np.float64)
    bounds = window_bounds(timestamps)
    out = np.empty((len(bounds), RESAMPLED_ROWS, signals.shape[1]))
    lengths = bounds[:, 1] - bounds[:, 0]
    # Windows of equal length are resampled together, FEATURE_CHUNK at a time: one FFT call per block
    # (an hour's windows in one call take about twenty times longer, bench/bench_features.py).
    for length in np.unique(lengths):
        same = np.flatnonzero(lengths == length)
        for lo in range(0, len(same), FEATURE_CHUNK):
            picked = same[lo : lo + FEATURE_CHUNK]
            index = bounds[picked, 0][:, None] + np.arange(length)
            out[picked] = scipy.signal.resample(signals[index], RESAMPLED_ROWS, axis=1)
    return out


def _quarter_blocks(windows: np.ndarray, stat: Callable[..., np.ndarray]) -> np.ndarray:
    """The 50 quarter values of `stat`: q1..q4 then pairwise differences, k = 5*block + signal."""
    q = [stat(windows[:, lo:hi], axis=1) for lo, hi in QUARTERS]
    blocks = q + [q[i] - q[j] for i, j in QUARTER_PAIRS]
    return np.concatenate(blocks, axis=1)


def _entropy(windows: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each signal's magnitudes treated as a distribution."""
    magnitude = np.abs(windows)
    total = magnitude.sum(axis=1, keepdims=True)
    p = np.divide(magnitude, total, out=np.zeros_like(magnitude), where=total > 0)
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    entropy = -plogp.sum(axis=1)
    # An all-zero signal gets ln(n), the entropy of any constant signal.
    return np.where(total[:, 0, :] > 0, entropy, np.log(windows.shape[1]))


def _covariance(matrices: np.ndarray) -> np.ndarray:
    """Covariance of each 12 x 12 matrix with rows as variables (divisor 11), exactly symmetric."""
    centred = matrices - matrices.mean(axis=2, keepdims=True)
    cov = centred @ centred.transpose(0, 2, 1) / (matrices.shape[2] - 1)
    return (cov + cov.transpose(0, 2, 1)) / 2.0


def _eigenvalues(cov: np.ndarray) -> np.ndarray:
    """Unsorted eigenvalues (LAPACK general solver order); rounding noise around 0 becomes 0."""
    values = np.linalg.eigvals(cov).real
    scale = np.abs(values).sum(axis=1, keepdims=True)
    return np.where(np.abs(values) <= EIGEN_NOISE * scale, 0.0, values)


def _log_covariance(cov: np.ndarray) -> np.ndarray:
    """Matrix logarithm with eigenvalues clipped at max(1e-6 * trace / 12, 1e-12); 78 values."""
    w, v = np.linalg.eigh(cov)
    n = cov.shape[1]
    floor = np.maximum(LOGM_RELATIVE_FLOOR * np.trace(cov, axis1=1, axis2=2) / n, LOGM_ABSOLUTE_FLOOR)
    log_w = np.log(np.maximum(w, floor[:, None]))
    logm = (v * log_w[:, None, :]) @ v.transpose(0, 2, 1)
    return logm[:, _DIAGONAL_ROWS, _DIAGONAL_COLS]


def _signal_dft_real(windows: np.ndarray) -> np.ndarray:
    """Real part of the 5-point DFT across the signals at each time point, k = 5*t + j."""
    x0, x1, x2, x3, x4 = (windows[:, :, i] for i in range(5))
    s14, s23 = x1 + x4, x2 + x3
    r1 = x0 + _COS1 * s14 + _COS2 * s23  # = Re X_1 = Re X_4 (conjugate symmetry)
    r2 = x0 + _COS2 * s14 + _COS1 * s23  # = Re X_2 = Re X_3
    dft = np.stack([x0 + s14 + s23, r1, r2, r2, r1], axis=2)
    return dft.reshape(len(windows), windows.shape[1] * N_SIGNALS)


def windows_to_features(windows: np.ndarray) -> np.ndarray:
    """Feature vectors of many resampled windows: (n, 150, 5) -> (n, 1274)."""
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim != 3 or w.shape[1:] != (RESAMPLED_ROWS, N_SIGNALS):
        raise ValueError(f"windows must have shape (n, {RESAMPLED_ROWS}, {N_SIGNALS}), got {w.shape}")
    if len(w) <= FEATURE_CHUNK:
        return _chunk_features(w)
    # Blocks of windows whose temporaries stay in the CPU cache: an hour's 7199 windows in one block
    # take about 3.5 times longer (bench/bench_features.py).
    return np.concatenate(
        [_chunk_features(w[i : i + FEATURE_CHUNK]) for i in range(0, len(w), FEATURE_CHUNK)]
    )


def _chunk_features(w: np.ndarray) -> np.ndarray:
    """`windows_to_features` of one block of windows."""
    first, second = w[:, :HALF], w[:, HALF:]

    mean = w.mean(axis=1)
    mean_d = second.mean(axis=1) - first.mean(axis=1)
    mean_q = _quarter_blocks(w, np.mean)
    std = w.std(axis=1)
    std_d = second.std(axis=1) - first.std(axis=1)
    # Central moments by repeated products: `x ** k` goes through pow() and is ~20x slower.
    c1 = w - mean[:, None, :]
    c2 = c1 * c1
    c3 = c2 * c1
    moments = np.concatenate([m.mean(axis=1) for m in (c3, c2 * c2, c3 * c2, c3 * c3)], axis=1)
    maximum = w.max(axis=1)
    max_d = second.max(axis=1) - first.max(axis=1)
    max_q = _quarter_blocks(w, np.max)
    minimum = w.min(axis=1)
    min_d = second.min(axis=1) - first.min(axis=1)
    min_q = _quarter_blocks(w, np.min)

    matrices = np.concatenate([mean_q[:, :44], max_q, min_q], axis=1).reshape(-1, 12, 12)
    cov = _covariance(matrices)
    eigen = _eigenvalues(cov)
    logm = _log_covariance(cov)

    entropy = _entropy(w)
    correlate = (first * second).sum(axis=2)
    fft = _signal_dft_real(w)

    groups = [mean, mean_d, mean_q, std, std_d, moments, maximum, max_d, max_q, minimum, min_d, min_q]
    groups += [cov.reshape(len(w), 144), eigen, logm, entropy, correlate, fft]
    return np.concatenate(groups, axis=1)


def window_features(window: np.ndarray) -> np.ndarray:
    """Feature vector of one resampled window: (150, 5) -> (1274,)."""
    window = np.asarray(window, dtype=np.float64)
    if window.shape != (RESAMPLED_ROWS, N_SIGNALS):
        raise ValueError(f"window must have shape ({RESAMPLED_ROWS}, {N_SIGNALS}), got {window.shape}")
    return windows_to_features(window[None])[0]


def recording_to_rows(timestamps: np.ndarray, signals: np.ndarray, label: str) -> pd.DataFrame:
    """Published rows of one recording: previous window (_a) + current window (_b) + label.

    `timestamps` are seconds (n,), `signals` the five Muse signals (n, 5) in SIGNALS order.
    A recording too short for two windows (under about 1.5 s) gives an empty frame.
    """
    timestamps = np.asarray(timestamps, dtype=np.float64)
    signals = np.asarray(signals, dtype=np.float64)
    if signals.ndim != 2 or signals.shape != (len(timestamps), N_SIGNALS):
        raise ValueError(
            f"signals must have shape ({len(timestamps)}, {N_SIGNALS}) to match the timestamps, "
            f"got {signals.shape}"
        )
    if np.any(np.diff(timestamps) < 0):
        raise ValueError("timestamps must not decrease")
    vectors = windows_to_features(resample_windows(timestamps, signals))
    if len(vectors) < 2:
        values = np.empty((0, 2 * N_WINDOW_FEATURES))
    else:
        values = np.concatenate([vectors[:-1], vectors[1:]], axis=1)
    rows = pd.DataFrame(values, columns=feature_names())
    rows["label"] = pd.Series([label] * len(rows), dtype=object)
    return rows


def format_row_lines(rows: pd.DataFrame, float_format: str = CSV_FLOAT_FORMAT) -> str:
    """The data lines of feature rows in the published CSV format (no header), each ending in a newline."""
    names = feature_names()
    missing = [n for n in [*names, "label"] if n not in rows.columns]
    if missing:
        raise ValueError(f"rows lack {len(missing)} published columns, first {missing[0]!r}")
    values = rows[names].to_numpy(dtype=np.float64)
    labels = rows["label"].astype(str).tolist()
    # One %-format call per row: about ten times faster than pandas' to_csv for 2.5k columns.
    row_format = ",".join([float_format] * len(names)) + ",%s\n"
    return "".join([row_format % (*v, lab) for v, lab in zip(values.tolist(), labels, strict=True)])


def format_rows(rows: pd.DataFrame, float_format: str = CSV_FLOAT_FORMAT) -> str:
    """CSV text of feature rows with the published header (`# mean_0_a,...,label`)."""
    return ",".join(published_header()) + "\n" + format_row_lines(rows, float_format)


def write_rows(rows: pd.DataFrame, out: Path) -> None:
    """Write feature rows atomically as the published CSV (header, three significant figures)."""
    write_atomically(Path(out), format_rows(rows))


def read_muse_csv(path: Path, zero_aux: bool = False, sampling_rate: float = SAMPLING_RATE) -> MuseExport:
    """A muse-lsl / BlueMuse or Mind Monitor CSV export, read and repaired (`modules.data.muse_exports`)."""
    return read_muse_export(path, sampling_rate=sampling_rate, zero_aux=zero_aux)


def min_recording_samples(sampling_rate: float) -> int:
    """Fewest samples of a continuous recording that give one row (360 at 256 Hz: 1.41 s)."""
    # The second window starts at STEP_S and must reach MIN_WINDOW_S past that sample.
    return math.ceil(round(MIN_RECORDING_S * sampling_rate, 9)) + 1


def _too_short(export: MuseExport) -> DataValidationError:
    """One line: the recording's duration (or its longest segment's) and the minimum."""
    minimum = min_recording_samples(export.sampling_rate) / export.sampling_rate
    need = (
        f"the features need at least {minimum:.2f} s of continuous signal (two {WINDOW_S:g} s windows "
        f"{STEP_S:g} s apart)"
    )
    if export.n_samples == 0:
        what = "is an empty file" if export.format == "empty" else "has no samples"
        return DataValidationError(f"{export.path}: recording {what} (0.00 s), too short for one row: {need}")
    if len(export.segments) > 1:
        return DataValidationError(
            f"{export.path}: no continuous stretch is long enough for one row: the longest of its "
            f"{len(export.segments)} segments (split at {len(export.gaps)} gaps) lasts "
            f"{export.longest_segment_s:.2f} s of {export.duration_s:.2f} s; {need}"
        )
    return DataValidationError(
        f"{export.path}: recording lasts {export.duration_s:.2f} s, too short for one row: {need}"
    )


def export_to_rows(export: MuseExport, label: str) -> pd.DataFrame:
    """Published rows of a read export: each continuous segment windowed on its own, rows concatenated.

    Raises DataValidationError (one line with the duration and the minimum) when no segment is long
    enough for a row.
    """
    parts = [recording_to_rows(t, s, label) for t, s in export.segment_arrays()]
    parts = [part for part in parts if len(part)]
    if not parts:
        raise _too_short(export)
    return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)


def extract_file(
    recording: Path,
    label: str,
    out: Path,
    zero_aux: bool = False,
    sampling_rate: float = SAMPLING_RATE,
) -> tuple[int, MuseExport]:
    """Turn one Muse CSV export into published rows written to `out`; returns the row count and the export."""
    out = Path(out)
    if out.is_dir():
        raise ConfigurationError(f"--out {out} is a folder; expected a CSV file path such as rows.csv")
    export = read_muse_csv(recording, zero_aux=zero_aux, sampling_rate=sampling_rate)
    rows = export_to_rows(export, label)
    try:
        write_rows(rows, out)
    except OSError as exc:
        raise ConfigurationError(f"cannot write {out}: {exc.strerror or exc}") from None
    return len(rows), export


def check_label(label: str) -> str:
    """A label fit for the published CSV: a non-empty word without commas or quotes."""
    if not label.strip() or any(c in label for c in ',"\r\n'):
        raise ConfigurationError(f"--label {label!r} must be a non-empty word without commas or quotes")
    return label


@click.command(
    "extract",
    help="Compute the published EEG emotion features (Bird et al.) from one Muse CSV export: muse-lsl / "
    f"BlueMuse ({TIMESTAMP_COLUMN}, {', '.join(SIGNALS)}) or Mind Monitor (TimeStamp, RAW_TP9 ... RAW_TP10, "
    "AUX_RIGHT). Timestamp jitter is repaired, the recording is split at real gaps, and one row is written "
    "per pair of consecutive 1 s windows (0.5 s step), with the published header.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.argument("recording", type=click.Path(path_type=Path))
@click.option("--label", required=True, help="label written on every row, e.g. POSITIVE")
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="output CSV (replaced atomically)"
)
@click.option(
    "--zero-aux",
    is_flag=True,
    help="accept a 4-signal export without a right AUX signal by filling that column with zeros (its "
    "features become constants; the published data had a real AUX signal)",
)
@click.option(
    "--sampling-rate",
    type=float,
    default=float(SAMPLING_RATE),
    help=f"the device's sampling rate in Hz (default {SAMPLING_RATE}; the 2014 Muse records at 220); a "
    "recording whose effective rate is more than 1% off is refused",
)
def cli(recording: Path, label: str, out: Path, zero_aux: bool, sampling_rate: float) -> None:
    """`python -m modules extract`: one Muse CSV export -> published feature rows."""
    check_label(label)
    n, export = extract_file(recording, label, out, zero_aux=zero_aux, sampling_rate=sampling_rate)
    for warning in export.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {n} rows x {2 * N_WINDOW_FEATURES} features from {recording} to {out} ({export.summary()})")
