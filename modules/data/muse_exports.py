"""Real Muse exports -> repaired timestamps and signals: format, dejitter, gaps, missing samples.

Two formats are recognised by their header; anything else is refused with one line:

* **muse-lsl / BlueMuse CSV** (`muselsl record`, also BlueMuse's stream recorded that way):
  `timestamps` (seconds), `TP9`, `AF7`, `AF8`, `TP10`, optional `Right AUX`, optional marker
  columns (`Marker0`, ...).
* **Mind Monitor CSV**: `TimeStamp` as a local date-time (`2025-07-01 14:56:05.592`),
  `RAW_TP9`, `RAW_AF7`, `RAW_AF8`, `RAW_TP10`, `AUX_RIGHT`. Its band powers (`Delta_TP9`, ...),
  motion, PPG, HSI, battery and `Elements` columns are ignored by design, and rows that carry
  no raw sample (only an `Elements` event such as `/muse/event/connected`, a blink or a marker)
  are skipped.

Columns that neither format uses are named in one warning line. Without a right AUX signal the
export is refused unless `zero_aux` fills that column with zeros.

**Timestamps.** Lab Streaming Layer tools write the host time at which each chunk of samples
arrived (`muselsl record` without `--dejitter`, BlueMuse), and Mind Monitor stamps each
Bluetooth packet of 12 samples with about one time: uneven spacing and backward steps of a
few milliseconds are normal, not corruption. They are repaired as LSL does (`pylsl`'s
dejitter post-processing, `pyxdf.load_xdf`, `muselsl record --dejitter`): a least-squares line
of time on sample index, one per continuous segment (a segment shorter than MIN_FIT_SAMPLES, 1 s,
keeps the nominal spacing: its fitted slope would be noise).

Segments end at real gaps (a dropped Bluetooth packet, a pause). A chunk is stamped when it
arrives, so timestamps are late, never early: the floor (minimum) of the lag of the timestamps
behind the nominal sample clock (t_i - t_0 - i / rate) over a stretch of samples is that stretch's
shortest delay, which late chunks and bursts of packets leave alone. At every irregular jump
between two samples the floors of the GAP_CONTEXT_SAMPLES samples (2 s) before and after are
compared; a difference of more than GAP_SAMPLES sample periods (23 ms at 256 Hz; one lost packet
is 12 samples, 47 ms) is a gap, placed at the first jump that shows it. A step back in time of
that size (a clock reset, two files joined) splits the recording the same way. Limits: within
2 s of either end of a recording only jumps over EDGE_GAP_S (0.25 s) count as gaps, since one
floor there rests on few samples; two gaps closer than 2 s are found as one; when packets arrive
in bursts, a gap is placed to within a burst. Gaps are reported, and the features are computed
per segment, never across a gap.

**Sampling rate.** The effective rate is the number of samples over the fitted duration of all
segments (as pyxdf computes it). The headband samples on its own clock, so a rate more than
RATE_TOLERANCE (1 %) off the nominal one (256 Hz, or `sampling_rate`) means another device
setting (the 2014 Muse samples at 220 Hz) or broken timestamps, and is refused; recordings
shorter than a few seconds get a wider margin (RATE_TIMING_ALLOWANCE_S over their length),
since their fit is noisier. Within that tolerance, windows are counted in samples at the nominal
rate (`MuseExport.segment_arrays`: a 1 s window is 256 samples, as in a clean recording), so the
fit's rounding cannot move a window boundary by one sample; `MuseExport.timestamps` keeps the
fitted host times.

**Missing samples** are empty cells or `nan`. Runs of up to MAX_FILLED_RUN (12) missing values
in a signal, one Bluetooth packet, are filled by linear interpolation and reported; a longer
run is refused with its data rows (1 = the first row after the header). Other text (`n/a`,
`error`) and infinite values are refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from modules.data.loading import (
    CsvFormat,
    detect_csv_format,
    normalise_column_name,
    quote_value,
    read_csv_header,
)
from modules.errors import ConfigurationError, DataValidationError

SIGNALS = ("TP9", "AF7", "AF8", "TP10", "Right AUX")
SAMPLING_RATE = 256
TIMESTAMP_COLUMN = "timestamps"

MUSE_LSL = "muse-lsl"
MIND_MONITOR = "mind-monitor"
EMPTY = "empty"
FORMAT_NAMES = {MUSE_LSL: "muse-lsl / BlueMuse CSV", MIND_MONITOR: "Mind Monitor CSV", EMPTY: "empty file"}

MIND_MONITOR_TIME = "TimeStamp"
MIND_MONITOR_SIGNALS = ("RAW_TP9", "RAW_AF7", "RAW_AF8", "RAW_TP10", "AUX_RIGHT")
MIND_MONITOR_EVENTS = "Elements"
# Mind Monitor columns the features do not use, by design: no warning for these.
_MIND_MONITOR_KNOWN = re.compile(
    r"^(?:(?:Delta|Theta|Alpha|Beta|Gamma)_\w+|RAW_\w+|AUX_\w+|HSI_\w+|Accelerometer_[XYZ]|Gyro_[XYZ]"
    r"|PPG\w*|Optics\w*|Heart_Rate|HeadBandOn|Battery|Elements|Mellow|Concentration)$"
)
_MARKER = re.compile(r"^Marker\d*$", re.IGNORECASE)

# Cells that mean "no sample" (what pandas, numpy and Mind Monitor write for a missing value).
MISSING_TEXTS = ("", "nan", "NaN", "NAN")
# A lasting step of more than this many sample periods in the timeline is a gap.
GAP_SAMPLES = 6
# Samples before and after a jump whose lag floors decide whether the step lasts (2 s at 256 Hz).
GAP_CONTEXT_SAMPLES = 512
# Nearer an end of the recording than GAP_CONTEXT_SAMPLES, only a jump over EDGE_GAP_S is a gap.
EDGE_GAP_S = 0.25
# Segments shorter than this keep the nominal spacing (their fitted slope would be noise).
MIN_FIT_SAMPLES = 256
# Relative tolerance of the effective sampling rate, and the timing error allowed over short recordings.
RATE_TOLERANCE = 0.01
RATE_TIMING_ALLOWANCE_S = 0.05
# Longest run of missing values in a signal that is interpolated (one Bluetooth packet).
MAX_FILLED_RUN = 12
# Candidate jumps are examined in blocks, to bound the memory of the floor windows.
_BLOCK = 4096


@dataclass(frozen=True)
class Gap:
    """A real break in the timeline: `seconds` missing before data row `row` (negative: time steps back)."""

    row: int
    seconds: float

    def describe(self) -> str:
        """`2.000 s missing before data row 769`."""
        if self.seconds < 0:
            return f"time steps back {-self.seconds:.3f} s at data row {self.row}"
        return f"{self.seconds:.3f} s missing before data row {self.row}"


@dataclass(frozen=True)
class Segment:
    """A continuous stretch of samples [start, stop), data rows first_row..last_row of the file."""

    start: int
    stop: int
    first_row: int
    last_row: int
    effective_rate: float

    @property
    def n_samples(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class MuseExport:
    """One Muse recording as read from its export, with repaired timestamps.

    `timestamps` are the fitted host times in seconds (one least-squares line per segment),
    `signals` the five signals (n, 5) in SIGNALS order, missing values interpolated.
    """

    path: Path
    format: str
    timestamps: np.ndarray
    signals: np.ndarray
    segments: tuple[Segment, ...]
    gaps: tuple[Gap, ...]
    sampling_rate: float
    effective_rate: float
    warnings: tuple[str, ...] = ()
    backward_steps: int = 0
    max_jitter_s: float = 0.0
    skipped_rows: int = 0
    filled_values: int = 0
    rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    @property
    def n_samples(self) -> int:
        return len(self.timestamps)

    @property
    def duration_s(self) -> float:
        """Seconds of signal: samples over the nominal rate (gaps not counted)."""
        return self.n_samples / self.sampling_rate

    @property
    def longest_segment_s(self) -> float:
        return max((s.n_samples for s in self.segments), default=0) / self.sampling_rate

    def segment_arrays(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(timestamps, signals) of every segment for windowing: seconds from the segment's first
        sample on the nominal sample clock (i / rate), so that windows are whole samples."""
        return [
            (np.arange(s.n_samples) / self.sampling_rate, self.signals[s.start : s.stop])
            for s in self.segments
        ]

    def summary(self) -> str:
        """One line for people: format, length, segments, rate and what was repaired."""
        if self.n_samples == 0:
            return f"{FORMAT_NAMES[self.format]}, no samples"
        parts = [
            f"{FORMAT_NAMES[self.format]}, {self.duration_s:.1f} s in {len(self.segments)} "
            f"segment{'s' if len(self.segments) != 1 else ''}",
            f"effective rate {self.effective_rate:.2f} Hz",
        ]
        if self.backward_steps or self.max_jitter_s > 0.5 / self.sampling_rate:
            parts.append(
                f"timestamp jitter up to {1000 * self.max_jitter_s:.1f} ms repaired "
                f"({self.backward_steps} backward steps)"
            )
        if self.gaps:
            parts.append(f"{len(self.gaps)} gap{'s' if len(self.gaps) != 1 else ''}")
        if self.filled_values:
            parts.append(f"{self.filled_values} missing values interpolated")
        if self.skipped_rows:
            parts.append(f"{self.skipped_rows} rows without a sample skipped")
        return ", ".join(parts)


# --------------------------------------------------------------------------- header and format


def _read_header(path: Path, fmt: CsvFormat) -> list[str]:
    """The header names as `load_dataset` reads them (quoting honoured), stripped of blanks."""
    return [normalise_column_name(name) for name in read_csv_header(path, fmt)]


def _column_list(names: Sequence[str], shown: int = 6) -> str:
    quoted = [quote_value(n) if n else f"(unnamed column {i + 1})" for i, n in enumerate(names)]
    if len(quoted) > shown:
        quoted = [*quoted[:shown], f"... ({len(names)} columns)"]
    return ", ".join(quoted)


def detect_format(path: Path, header: Sequence[str]) -> str:
    """MUSE_LSL or MIND_MONITOR from the header; one-line DataValidationError for anything else."""
    names = set(header)
    if MIND_MONITOR_TIME in names and TIMESTAMP_COLUMN not in names:
        return MIND_MONITOR
    if TIMESTAMP_COLUMN in names:
        return MUSE_LSL
    separator = ""
    if len(header) == 1:
        for sep, word in ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes")):
            if sep in header[0]:
                separator = f"; its header is one column holding {word}: save the file comma-separated"
                break
    raise DataValidationError(
        f"{path}: not a recognised Muse export: no '{TIMESTAMP_COLUMN}' column (muse-lsl / BlueMuse CSV: "
        f"{TIMESTAMP_COLUMN}, {', '.join(SIGNALS)}) and no '{MIND_MONITOR_TIME}' column (Mind Monitor CSV: "
        f"{MIND_MONITOR_TIME}, {', '.join(MIND_MONITOR_SIGNALS)}); columns found: {_column_list(header)}"
        f"{separator}"
    )


def _check_unique(path: Path, header: Sequence[str]) -> None:
    seen: dict[str, int] = {}
    for position, name in enumerate(header):
        if name and name in seen:
            raise DataValidationError(
                f"{path}: duplicate column name {quote_value(name)} (columns {seen[name] + 1} and "
                f"{position + 1}); column names must be unique"
            )
        seen[name] = position


def _read_columns(path: Path, fmt: CsvFormat, header: list[str], wanted: list[str], text: Sequence[str] = ()):
    """The wanted columns of the file; missing-sample cells become NaN, other text stays text."""
    names = [name or f"(unnamed column {i + 1})" for i, name in enumerate(header)]
    try:
        return pd.read_csv(
            path,
            header=0,
            names=names,
            usecols=wanted,
            index_col=False,
            keep_default_na=False,
            na_values=list(MISSING_TEXTS),
            dtype=dict.fromkeys(text, str),
            low_memory=False,
            **fmt.read_options(),
        )
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=wanted)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError, EOFError) as exc:
        reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise DataValidationError(f"{path}: not a well-formed CSV file ({reason})") from None


def _numbers(path: Path, column: pd.Series, name: str, rows: np.ndarray, what: str) -> np.ndarray:
    """A column as floats: NaN where a sample is missing; text and infinities are refused."""
    if pd.api.types.is_numeric_dtype(column):
        values = column.to_numpy(dtype=np.float64)
    else:
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(np.isnan(values) & column.notna().to_numpy())
        if bad.size:
            first = int(bad[0])
            raise DataValidationError(
                f"{path}: column {quote_value(name)} has {bad.size} non-numeric value"
                f"{'s' if bad.size != 1 else ''} (first at data row {int(rows[first])}: "
                f"{quote_value(column.iloc[first])}); expected {what} (a missing sample is an empty cell or nan)"
            )
    infinite = np.flatnonzero(np.isinf(values))
    if infinite.size:
        first = int(infinite[0])
        raise DataValidationError(
            f"{path}: column {quote_value(name)} has {infinite.size} infinite value"
            f"{'s' if infinite.size != 1 else ''} (first at data row {int(rows[first])}: {float(values[first])}); "
            f"expected {what}"
        )
    return values


# --------------------------------------------------------------------------- the two formats


@dataclass
class _Parsed:
    timestamps: np.ndarray
    signals: np.ndarray
    rows: np.ndarray
    warnings: list[str]
    skipped_rows: int = 0


def _extra_columns_warning(path: Path, extra: list[str]) -> list[str]:
    if not extra:
        return []
    return [
        f"{path}: ignoring {len(extra)} column{'s' if len(extra) != 1 else ''} the features do not use: "
        f"{_column_list(extra, shown=8)}"
    ]


def _missing_signals(path: Path, missing: list[str], expected: str, aux: str) -> DataValidationError:
    hint = "; pass --zero-aux to fill it with zeros" if missing == [aux] else ""
    return DataValidationError(
        f"{path}: missing column {', '.join(quote_value(m) for m in missing)} (expected {expected}){hint}"
    )


def _parse_muse_lsl(path: Path, fmt: CsvFormat, header: list[str], zero_aux: bool) -> _Parsed:
    expected = ", ".join([TIMESTAMP_COLUMN, *SIGNALS])
    present = [s for s in SIGNALS if s in header]
    missing = [s for s in SIGNALS if s not in header]
    if missing and not (zero_aux and missing == ["Right AUX"]):
        raise _missing_signals(path, missing, expected, "Right AUX")
    extra = [h for h in header if h not in (TIMESTAMP_COLUMN, *SIGNALS)]
    warnings = _extra_columns_warning(path, extra)
    table = _read_columns(path, fmt, header, [TIMESTAMP_COLUMN, *present])
    rows = np.arange(1, len(table) + 1)
    timestamps = _numbers(path, table[TIMESTAMP_COLUMN], TIMESTAMP_COLUMN, rows, "seconds")
    signals = np.zeros((len(table), len(SIGNALS)))
    for k, name in enumerate(SIGNALS):
        if name in present:
            signals[:, k] = _numbers(path, table[name], name, rows, "microvolts")
    return _Parsed(timestamps, signals, rows, warnings)


def _parse_date_times(path: Path, column: pd.Series, rows: np.ndarray) -> np.ndarray:
    """Mind Monitor's local date-times as seconds (NaN where empty); unreadable text is refused."""
    text = column.astype("string")
    parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
    bad = np.flatnonzero(parsed.isna().to_numpy() & text.notna().to_numpy())
    if bad.size:
        first = int(bad[0])
        raise DataValidationError(
            f"{path}: column '{MIND_MONITOR_TIME}' has {bad.size} value{'s' if bad.size != 1 else ''} that "
            f"are not dates (first at data row {int(rows[first])}: {quote_value(text.iloc[first])}); "
            "expected date-times such as 2025-07-01 14:56:05.592"
        )
    seconds = (parsed - pd.Timestamp("1970-01-01")).dt.total_seconds()
    return seconds.to_numpy(dtype=np.float64, na_value=np.nan)


def _parse_mind_monitor(path: Path, fmt: CsvFormat, header: list[str], zero_aux: bool) -> _Parsed:
    expected = ", ".join([MIND_MONITOR_TIME, *MIND_MONITOR_SIGNALS])
    raw = [s for s in MIND_MONITOR_SIGNALS[:4] if s in header]
    if not raw:
        raise DataValidationError(
            f"{path}: Mind Monitor CSV without raw EEG columns ({', '.join(MIND_MONITOR_SIGNALS[:4])}): "
            "only band powers were recorded; the features need the raw signals (record raw EEG at the "
            "full sampling rate)"
        )
    missing = [s for s in MIND_MONITOR_SIGNALS if s not in header]
    if missing and not (zero_aux and missing == ["AUX_RIGHT"]):
        raise _missing_signals(path, missing, expected, "AUX_RIGHT")
    extra = [h for h in header if h != MIND_MONITOR_TIME and not _MIND_MONITOR_KNOWN.match(h)]
    warnings = _extra_columns_warning(path, extra)
    signal_columns = [s for s in MIND_MONITOR_SIGNALS if s in header]
    events = [MIND_MONITOR_EVENTS] if MIND_MONITOR_EVENTS in header else []
    table = _read_columns(
        path, fmt, header, [MIND_MONITOR_TIME, *signal_columns, *events], text=[MIND_MONITOR_TIME, *events]
    )
    all_rows = np.arange(1, len(table) + 1)
    values = (
        np.column_stack([_numbers(path, table[s], s, all_rows, "microvolts") for s in signal_columns])
        if len(table)
        else np.empty((0, len(signal_columns)))
    )
    # A row with none of the raw EEG values carries no sample (an Elements event, a band-power row).
    has_sample = ~np.isnan(values[:, :4]).all(axis=1) if len(table) else np.zeros(0, dtype=bool)
    skipped = int((~has_sample).sum())
    if skipped:
        only_events = 0
        if events:
            event_text = table[MIND_MONITOR_EVENTS].astype("string").fillna("").str.strip()
            only_events = int(((event_text != "").to_numpy() & ~has_sample).sum())
        others = skipped - only_events
        detail = [f"{only_events} carrying only an Elements event"] if only_events else []
        detail += [f"{others} with no raw EEG values"] if others else []
        if others:
            warnings.append(f"{path}: skipped {skipped} rows without a raw sample ({', '.join(detail)})")
    rows = all_rows[has_sample]
    timestamps = _parse_date_times(path, table[MIND_MONITOR_TIME][has_sample], rows)
    signals = np.zeros((len(rows), len(SIGNALS)))
    for k, name in enumerate(MIND_MONITOR_SIGNALS):
        if name in signal_columns:
            signals[:, k] = values[has_sample, signal_columns.index(name)]
    if "AUX_RIGHT" in signal_columns and len(rows) and np.isnan(signals[:, 4]).all():
        if not zero_aux:
            raise DataValidationError(
                f"{path}: column 'AUX_RIGHT' is empty in every row (the right AUX input was not recorded); "
                "pass --zero-aux to fill it with zeros"
            )
        signals[:, 4] = 0.0
    return _Parsed(timestamps, signals, rows, warnings, skipped)


# --------------------------------------------------------------------------- missing samples


def _nan_runs(missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of True in a boolean vector."""
    padded = np.concatenate([[False], missing, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    starts, stops = edges[0::2], edges[1::2]
    return starts, stops - starts


def fill_missing_samples(
    path: Path, signals: np.ndarray, rows: np.ndarray, max_run: int = MAX_FILLED_RUN
) -> tuple[np.ndarray, int, list[str]]:
    """Interpolate runs of up to `max_run` missing values per signal; refuse longer runs with their rows.

    Returns the filled signals, how many values were filled, and a warning when any were.
    """
    missing = np.isnan(signals)
    if not missing.any():
        return signals, 0, []
    filled = signals.copy()
    longest_runs: list[str] = []
    index = np.arange(len(signals))
    for k, name in enumerate(SIGNALS):
        starts, lengths = _nan_runs(missing[:, k])
        if not len(starts):
            continue
        long = lengths > max_run
        if long.any():
            described = [
                f"data rows {int(rows[s])}-{int(rows[s + n - 1])} ({int(n)} samples)"
                for s, n in zip(starts[long][:3], lengths[long][:3], strict=True)
            ]
            more = int(long.sum()) - len(described)
            raise DataValidationError(
                f"{path}: signal {quote_value(name)} has {int(long.sum())} run{'s' if long.sum() != 1 else ''} "
                f"of missing values longer than {max_run} samples: {', '.join(described)}"
                f"{f' and {more} more' if more > 0 else ''}; runs of up to {max_run} (one Bluetooth packet) "
                "are interpolated, longer ones are refused: cut the recording there or re-export it"
            )
        known = ~missing[:, k]
        if not known.any():
            raise DataValidationError(f"{path}: signal {quote_value(name)} has no values")
        filled[~known, k] = np.interp(index[~known], index[known], signals[known, k])
        longest_runs.append(
            f"{quote_value(name)} {int(missing[:, k].sum())} (longest run {int(lengths.max())})"
        )
    count = int(missing.sum())
    warning = (
        f"{path}: interpolated {count} missing value{'s' if count != 1 else ''} "
        f"(runs of up to {max_run} samples): {', '.join(longest_runs)}"
    )
    return filled, count, [warning]


# --------------------------------------------------------------------------- timeline


@dataclass(frozen=True)
class Timeline:
    """Repaired timestamps, the segment boundaries and what the repair found."""

    timestamps: np.ndarray
    bounds: tuple[tuple[int, int], ...]
    segment_rates: tuple[float, ...]
    effective_rate: float
    fitted_span_s: float
    gap_seconds: tuple[float, ...]
    backward_steps: int
    max_jitter_s: float


def _gap_starts_in(lag: np.ndarray, jump: np.ndarray, threshold: float, context: int) -> list[int]:
    """Sample positions (relative) where a new segment starts inside one stretch of lags."""
    candidates = np.flatnonzero(np.abs(jump) > threshold / 2)
    if not candidates.size:
        return []
    padded = np.concatenate([np.full(context, np.nan), lag, np.full(context, np.nan)])
    view = sliding_window_view(padded, context)
    steps = np.empty(candidates.size)
    for lo in range(0, candidates.size, _BLOCK):
        picked = candidates[lo : lo + _BLOCK]
        # Before the jump after sample k: samples k-context+1..k; after it: k+1..k+context.
        before = np.nanmin(view[picked + 1], axis=1)
        after = np.nanmin(view[picked + 1 + context], axis=1)
        steps[lo : lo + _BLOCK] = after - before
    # Nearer an end than `context` samples one window is short and its floor is biased up (the minimum
    # of fewer samples): there only a long jump is a gap.
    m = len(lag)
    near_edge = (np.minimum(candidates + 1, m - candidates - 1) < context) & (
        np.abs(jump[candidates]) <= EDGE_GAP_S
    )
    hits = np.flatnonzero((np.abs(steps) > threshold) & ~near_edge)
    if not hits.size:
        return []
    # With the floor of the lag, every jump within `context` after a gap sees the gap's step (its
    # "before" window still reaches behind the gap), and every jump before a step back sees that one:
    # the gap is the first jump of a run of forward steps, the last of a run of backward ones.
    starts: list[int] = []
    run = [int(hits[0])]
    for h in hits[1:]:
        same_way = np.sign(steps[h]) == np.sign(steps[run[-1]])
        if same_way and candidates[h] - candidates[run[-1]] < context:
            run.append(int(h))
            continue
        starts.append(int(candidates[run[0] if steps[run[0]] > 0 else run[-1]]) + 1)
        run = [int(h)]
    starts.append(int(candidates[run[0] if steps[run[0]] > 0 else run[-1]]) + 1)
    return starts


def find_segments(raw: np.ndarray, rate: float) -> list[tuple[int, int]]:
    """[start, stop) sample ranges of the continuous segments of raw timestamps (see the module doc)."""
    n = len(raw)
    if n < 2:
        return [(0, n)] if n else []
    period = 1.0 / rate
    lag = raw - raw[0] - np.arange(n) * period
    jump = np.diff(raw) - period
    starts = _gap_starts_in(lag, jump, GAP_SAMPLES * period, GAP_CONTEXT_SAMPLES)
    bounds = [0, *sorted(set(starts)), n]
    return list(pairwise(bounds))


def _line_fit(y: np.ndarray) -> tuple[float, float]:
    """Intercept and slope of the least-squares line of y on 0..m-1."""
    m = len(y)
    if m < 2:
        return float(y[0]) if m else 0.0, 0.0
    x = np.arange(m, dtype=np.float64)
    x_mean = (m - 1) / 2.0
    y_mean = float(y.mean())
    slope = float(((x - x_mean) * (y - y_mean)).sum() / ((x - x_mean) ** 2).sum())
    return y_mean - slope * x_mean, slope


def repair_timeline(raw: np.ndarray, rate: float) -> Timeline:
    """Split raw timestamps at real gaps and fit one line of time on sample index per segment."""
    raw = np.asarray(raw, dtype=np.float64)
    n = len(raw)
    bounds = find_segments(raw, rate)
    fitted = np.empty(n)
    rates: list[float] = []
    samples = 0
    span = 0.0
    for a, b in bounds:
        base = raw[a]
        x = np.arange(b - a)
        if b - a >= MIN_FIT_SAMPLES:
            intercept, slope = _line_fit(raw[a:b] - base)
            rates.append(1.0 / slope if slope > 0 else -1.0)
            samples += b - a
            span += (b - a) * slope
        else:
            slope = 1.0 / rate
            intercept = float((raw[a:b] - base - slope * x).mean())
            rates.append(float("nan"))
        fitted[a:b] = base + intercept + slope * x
    gap_seconds = tuple(float(fitted[a] - fitted[a - 1] - 1.0 / rate) for a, _ in bounds[1:])
    diffs = np.diff(raw)
    return Timeline(
        timestamps=fitted,
        bounds=tuple(bounds),
        segment_rates=tuple(rates),
        effective_rate=samples / span if span > 0 else float("nan"),
        fitted_span_s=span,
        gap_seconds=gap_seconds,
        backward_steps=int((diffs < 0).sum()),
        max_jitter_s=float(np.abs(raw - fitted).max()) if n else 0.0,
    )


def _check_rate(path: Path, timeline: Timeline, rate: float, rows: np.ndarray) -> None:
    """Refuse an effective sampling rate far from the nominal one (see the module doc)."""
    stalled = [i for i, r in enumerate(timeline.segment_rates) if r < 0]
    if stalled:
        a, b = timeline.bounds[stalled[0]]
        raise DataValidationError(
            f"{path}: timestamps do not advance over data rows {int(rows[a])}-{int(rows[b - 1])}; expected "
            f"seconds that grow by about {1.0 / rate:.6f} s per sample"
        )
    effective = timeline.effective_rate
    if not np.isfinite(effective):
        return
    allowed = max(RATE_TOLERANCE, RATE_TIMING_ALLOWANCE_S / timeline.fitted_span_s)
    if abs(effective - rate) > allowed * rate:
        raise DataValidationError(
            f"{path}: effective sampling rate {effective:.2f} Hz is far from the expected {rate:g} Hz "
            f"(more than {100 * allowed:.3g} % off); if the device records at about {round(effective)} Hz, "
            f"pass --sampling-rate {round(effective)}"
        )


# --------------------------------------------------------------------------- reading


def read_muse_export(
    path: str | Path, *, sampling_rate: float = SAMPLING_RATE, zero_aux: bool = False
) -> MuseExport:
    """Read a muse-lsl / BlueMuse or Mind Monitor CSV export and repair its timeline.

    Raises DataValidationError (one line naming the file) for an unknown format, missing
    columns, non-numeric values, long runs of missing samples and a sampling rate far from
    `sampling_rate`. A header-only or empty file gives an export without samples.
    """
    path = Path(path)
    if isinstance(sampling_rate, bool) or not np.isfinite(sampling_rate) or sampling_rate <= 0:
        raise ConfigurationError(f"--sampling-rate {sampling_rate} must be a positive number of Hz, e.g. 256")
    if not path.is_file():
        raise DataValidationError(
            f"{path}: file not found (expected a Muse CSV export: muse-lsl / BlueMuse or Mind Monitor)"
        )
    with path.open("rb") as handle:
        if not handle.read(4096).strip():
            return _empty(path, EMPTY, float(sampling_rate), [])
    fmt = detect_csv_format(path)
    header = _read_header(path, fmt)
    kind = detect_format(path, header)
    _check_unique(path, header)
    parser = _parse_muse_lsl if kind == MUSE_LSL else _parse_mind_monitor
    parsed = parser(path, fmt, header, zero_aux)
    if len(parsed.timestamps) == 0:
        return _empty(path, kind, float(sampling_rate), parsed.warnings)
    missing_time = np.flatnonzero(np.isnan(parsed.timestamps))
    if missing_time.size:
        shown = ", ".join(str(int(parsed.rows[i])) for i in missing_time[:5])
        column = TIMESTAMP_COLUMN if kind == MUSE_LSL else MIND_MONITOR_TIME
        raise DataValidationError(
            f"{path}: column '{column}' is empty in {missing_time.size} row{'s' if missing_time.size != 1 else ''} "
            f"with samples (data rows {shown}{', ...' if missing_time.size > 5 else ''}); every sample needs a time"
        )
    signals, filled, fill_warnings = fill_missing_samples(path, parsed.signals, parsed.rows)
    timeline = repair_timeline(parsed.timestamps, float(sampling_rate))
    _check_rate(path, timeline, float(sampling_rate), parsed.rows)
    rows = parsed.rows
    segments = tuple(
        Segment(a, b, int(rows[a]), int(rows[b - 1]), rate)
        for (a, b), rate in zip(timeline.bounds, timeline.segment_rates, strict=True)
    )
    gaps = tuple(
        Gap(int(rows[a]), seconds)
        for (a, _), seconds in zip(timeline.bounds[1:], timeline.gap_seconds, strict=True)
    )
    warnings = [*parsed.warnings, *fill_warnings]
    if gaps:
        shown = "; ".join(g.describe() for g in gaps[:3])
        more = f"; and {len(gaps) - 3} more" if len(gaps) > 3 else ""
        warnings.append(
            f"{path}: {len(gaps)} gap{'s' if len(gaps) != 1 else ''} in the timestamps (longer than "
            f"{GAP_SAMPLES} samples), so the recording is split into {len(segments)} segments and no "
            f"window spans a gap: {shown}{more}"
        )
    return MuseExport(
        path=path,
        format=kind,
        timestamps=timeline.timestamps,
        signals=signals,
        segments=segments,
        gaps=gaps,
        sampling_rate=float(sampling_rate),
        effective_rate=timeline.effective_rate,
        warnings=tuple(warnings),
        backward_steps=timeline.backward_steps,
        max_jitter_s=timeline.max_jitter_s,
        skipped_rows=parsed.skipped_rows,
        filled_values=filled,
        rows=rows,
    )


def _empty(path: Path, kind: str, rate: float, warnings: list[str]) -> MuseExport:
    return MuseExport(
        path=path,
        format=kind,
        timestamps=np.empty(0),
        signals=np.empty((0, len(SIGNALS))),
        segments=(),
        gaps=(),
        sampling_rate=rate,
        effective_rate=float("nan"),
        warnings=tuple(warnings),
    )
