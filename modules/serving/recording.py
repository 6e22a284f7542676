"""A Muse recording -> the emotion it shows, window by window, with the registry's champion.

    python -m modules predict-recording rec.csv [--out windows.csv] [--family svm|dnn]

The export (muse-lsl / BlueMuse or Mind Monitor) is read and repaired as the folder build reads
it (`modules.data.muse_exports`: dejitter, split at gaps, interpolate short NaN runs) and turned
into the published feature rows by the same code (`modules.data.eeg_features.export_to_rows`).
Row k of a continuous segment pairs the 1 s windows starting k * 0.5 s and (k + 1) * 0.5 s after
the segment's first sample; it is reported at the first of them, in seconds from the start of
the recording (gaps included). The rows are scored by the champion of the model trained on
DATA_PATH (or `--data-path`), loaded only after its files match the registry's digest
(`modules.serving.batch.load_registered_model`), locally or from a tracking server.

The recording's overall label is the label of most windows (a tie goes to the higher mean
probability); its share is the fraction of windows with that label, and its mean probability
the model's probability of that class averaged over every window.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd

from modules.data.eeg_features import STEP_S, export_to_rows, window_bounds
from modules.data.muse_exports import SAMPLING_RATE, MuseExport, read_muse_export
from modules.errors import ConfigurationError, DataValidationError
from modules.files import write_atomically
from modules.serving.model_choice import chosen_model, model_choice

# Up to this many windows are listed one per line; more are condensed into runs of one label.
MAX_LISTED_WINDOWS = 20
# The label every row carries through the feature code; it is dropped before scoring.
UNLABELLED = "UNKNOWN"


@dataclass(frozen=True)
class Overall:
    """The recording's label: the most frequent window label, its share and mean probability."""

    label: str
    windows: int
    share: float
    mean_probability: float | None


@dataclass(frozen=True)
class RecordingPrediction:
    """Every window's label over time and the recording's overall label."""

    path: Path
    summary: str  # what was read: format, length, segments, rate, repairs
    model: str  # e.g. `eeg-emotion-svm v3`
    windows: pd.DataFrame  # start_s, segment, predicted_label, probability, proba_<class>...
    overall: Overall
    warnings: tuple[str, ...] = ()


def window_starts(export: MuseExport) -> tuple[np.ndarray, np.ndarray]:
    """(start in seconds from the recording's first sample, segment number) of every feature row.

    Rows follow `export_to_rows`: segment by segment, row k of a segment starting k * STEP_S after
    the segment's first sample; a segment too short for a row gives none.
    """
    starts, segments = [], []
    origin = float(export.timestamps[0]) if export.n_samples else 0.0
    for number, ((t, _), segment) in enumerate(zip(export.segment_arrays(), export.segments, strict=True)):
        rows = max(0, len(window_bounds(t)) - 1)
        offset = float(export.timestamps[segment.start]) - origin
        starts.append(offset + STEP_S * np.arange(rows))
        segments.append(np.full(rows, number))
    if not starts:
        return np.empty(0), np.empty(0, dtype=int)
    return np.concatenate(starts), np.concatenate(segments).astype(int)


def feature_rows(export: MuseExport) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(feature rows, start of each in seconds, segment of each): the folder build's rows, unlabelled.

    Raises DataValidationError (one line with the duration and the minimum) when too short for a row.
    """
    rows = export_to_rows(export, UNLABELLED).drop(columns="label")
    starts, segments = window_starts(export)
    if len(starts) != len(rows):  # the two must walk the windows alike; a mismatch is a bug
        raise AssertionError(f"{len(starts)} window times for {len(rows)} rows")
    return rows, starts, segments


def _model_columns(model: Any) -> list[str] | None:
    """The column names the model's signature asks for, in order (None when it names none)."""
    metadata = getattr(model, "metadata", None)
    schema = None if metadata is None else metadata.get_input_schema()
    if schema is None or not schema.has_input_names():
        return None
    return [str(name) for name in schema.input_names()]


def score_rows(model: Any, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """(labels, class probabilities or None, classes or None) of feature rows.

    The project's pyfunc models are scored as `make serve` scores them (their scikit-learn or
    Keras parts, probabilities included); any other model through its `predict`, labels only.
    """
    from modules.serving.app import _scorers

    labels_of, probabilities_of, classes = _scorers(model)
    probabilities = None if probabilities_of is None else np.asarray(probabilities_of(rows), dtype=float)
    if labels_of is None:
        labels = np.asarray(classes)[np.argmax(probabilities, axis=1)]
    else:
        labels = np.asarray(labels_of(rows))
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
    return np.asarray([str(label) for label in np.ravel(labels)]), probabilities, classes


def overall_label(windows: pd.DataFrame, classes: list[str] | None) -> Overall:
    """The label of most windows (ties: higher mean probability, then name), share and mean probability."""
    counts = windows["predicted_label"].value_counts()
    total = len(windows)

    def mean_probability(label: str) -> float | None:
        column = f"proba_{label}"
        return float(windows[column].mean()) if classes and column in windows.columns else None

    ranked = sorted(
        counts.index, key=lambda label: (-counts[label], -(mean_probability(label) or 0.0), label)
    )
    label = str(ranked[0])
    return Overall(label, int(counts[label]), counts[label] / total, mean_probability(label))


def predict_recording(
    export: MuseExport,
    model: Any,
    *,
    model_label: str = "the model",
    features: tuple[pd.DataFrame, np.ndarray, np.ndarray] | None = None,
    on_scored: Callable[[pd.DataFrame, np.ndarray, np.ndarray | None, list[str] | None, float], None]
    | None = None,
) -> RecordingPrediction:
    """Turn a read Muse export (`read_muse_export`) into feature rows and label every window with `model`.

    `features` are its `feature_rows` when already computed. `on_scored(rows, labels, probabilities,
    classes, latency_ms)` is called once the rows are scored
    (the prediction log). Raises DataValidationError (one line) for a recording too short for a row
    and for a model whose columns a recording does not give.
    """
    rows, starts, segments = feature_rows(export) if features is None else features
    columns = _model_columns(model)
    if columns is not None:
        missing = [name for name in columns if name not in rows.columns]
        if missing:
            raise DataValidationError(
                f"{model_label} expects columns a Muse recording does not give ({', '.join(missing[:3])}"
                f"{', ...' if len(missing) > 3 else ''}); was it trained on features of Muse recordings?"
            )
        rows = rows[columns]
    rows = rows.astype("float64")
    began = time.perf_counter()
    labels, probabilities, classes = score_rows(model, rows)
    latency_ms = (time.perf_counter() - began) * 1000.0
    if on_scored is not None:
        on_scored(rows, labels, probabilities, classes, latency_ms)

    windows = pd.DataFrame({"start_s": np.round(starts, 3), "segment": segments, "predicted_label": labels})
    if probabilities is not None and classes:
        windows["probability"] = probabilities.max(axis=1)
        for column, name in enumerate(classes):
            windows[f"proba_{name}"] = probabilities[:, column]
    return RecordingPrediction(
        path=export.path,
        summary=export.summary(),
        model=model_label,
        windows=windows,
        overall=overall_label(windows, classes if probabilities is not None else None),
        warnings=export.warnings,
    )


def label_runs(windows: pd.DataFrame) -> list[tuple[float, float, str, int, float | None]]:
    """Consecutive windows of one label in one segment: (from s, to s, label, windows, mean top probability).

    A window is counted for the STEP_S seconds from its start, so the runs of a segment tile it.
    """
    runs: list[tuple[float, float, str, int, float | None]] = []
    has_probability = "probability" in windows.columns
    key = windows["predicted_label"].astype(str) + "\0" + windows["segment"].astype(str)
    run_id = (key != key.shift()).cumsum()
    for _, run in windows.groupby(run_id, sort=False):
        probability = float(run["probability"].mean()) if has_probability else None
        start, stop = float(run["start_s"].iloc[0]), float(run["start_s"].iloc[-1]) + STEP_S
        runs.append((start, stop, str(run["predicted_label"].iloc[0]), len(run), probability))
    return runs


def _probability(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.2f}"


def format_prediction(result: RecordingPrediction, max_listed: int = MAX_LISTED_WINDOWS) -> str:
    """The report for people: what was read, labels over time (runs when many windows), the overall label."""
    windows = result.windows
    lines = [f"{result.path}: {result.summary}", f"{len(windows)} windows labelled by {result.model}:"]
    width = max(len(label) for label in windows["predicted_label"])
    has_probability = "probability" in windows.columns
    if len(windows) <= max_listed:
        lines.append(f"  {'start':>8}  {'label':<{width}}  probability")
        for row in windows.itertuples(index=False):
            probability = row.probability if has_probability else None
            lines.append(
                f"  {row.start_s:>6.1f} s  {row.predicted_label:<{width}}  {_probability(probability)}"
            )
    else:
        for start, stop, label, count, probability in label_runs(windows):
            span = f"{start:.1f}-{stop:.1f} s"
            lines.append(
                f"  {span:>14}  {label:<{width}}  ({count} window{'s' if count != 1 else ''}, "
                f"mean probability {_probability(probability)})"
            )
    overall = result.overall
    lines.append(
        f"overall: {overall.label} ({overall.windows} of {len(windows)} windows, {100 * overall.share:.0f} %; "
        f"mean probability {_probability(overall.mean_probability)})"
    )
    return "\n".join(lines) + "\n"


def write_windows(result: RecordingPrediction, out: str | Path) -> Path:
    """Write the per-window table (start_s, segment, predicted_label, probability, proba_<class>) atomically."""
    out = Path(out)
    if out.is_dir():
        raise ConfigurationError(f"--out {out} is a folder; expected a CSV file path such as windows.csv")
    try:
        write_atomically(out, result.windows.to_csv(index=False, float_format="%.6g"))
    except OSError as exc:
        raise ConfigurationError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out


@click.command(
    "predict-recording",
    help="Label a Muse recording (muse-lsl / BlueMuse or Mind Monitor CSV) window by window with a registered "
    "model, by default the champion of the SVM trained on DATA_PATH; prints the labels over time and the "
    "recording's overall label.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.argument("recording", type=click.Path(path_type=Path))
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="write the per-window table to this CSV"
)
@model_choice
@click.option(
    "--sampling-rate",
    type=float,
    default=float(SAMPLING_RATE),
    help=f"the device's sampling rate in Hz (default {SAMPLING_RATE}; the 2014 Muse records at 220)",
)
@click.option("--zero-aux", is_flag=True, help="fill a missing right AUX signal with zeros")
def cli(
    recording: Path,
    out: Path | None,
    family: str | None,
    model: str | None,
    data_path: Path | None,
    sampling_rate: float,
    zero_aux: bool,
) -> None:
    """`python -m modules predict-recording FILE`: label a Muse recording window by window with the champion."""
    from modules.serving.batch import load_registered_model
    from modules.serving.prediction_log import open_configured_prediction_log, scored_rows_logger
    from modules.settings import get_settings

    if out is not None and out.is_dir():
        raise ConfigurationError(f"--out {out} is a folder; expected a CSV file path such as windows.csv")
    settings, model_uri = chosen_model(get_settings(), family, model, data_path)
    # A bad recording is one line before any connection is made.
    export = read_muse_export(recording, sampling_rate=sampling_rate, zero_aux=zero_aux)
    features = feature_rows(export)
    loaded, model_name, model_version = load_registered_model(
        settings, model_uri, advice="run `make run` first"
    )
    model_label = model_uri if model_version is None else f"{model_name} v{model_version}"
    log = open_configured_prediction_log(settings)

    log_windows = scored_rows_logger(log, "recording", model_name, model_version)
    try:
        result = predict_recording(
            export, loaded, model_label=model_label, features=features, on_scored=log_windows
        )
    finally:
        stats = log.close()
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if stats.failed or stats.dropped:  # reported, never fatal: the labels are printed
        print(
            f"warning: prediction log {settings.prediction_log_target}: not written ({stats.last_error})",
            file=sys.stderr,
        )
    sys.stdout.write(format_prediction(result))
    if out is not None:
        print(f"per-window table: {write_windows(result, out)}")
