"""One monitoring check of a champion: its training reference against a window of what it saw.

The training flow logs the reference (`log_training_reference`) with the run that produced
each model, so a check needs neither the training data nor the training flow: it reads the
registry's `champion`, downloads that version's reference, takes a window of rows (the
prediction log, or a CSV), lets the champion predict them, and decides `retrain: yes/no`.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd

from modules.data.loading import normalise_column_name, read_raw_csv
from modules.errors import DataValidationError
from modules.monitoring.drift import DriftSummary, DriftThresholds, detect_drift
from modules.monitoring.reference import Reference, build_reference
from modules.monitoring.report import write_drift_report
from modules.settings import Settings
from modules.tracking import client as tracking

# Where a training step run keeps its model's drift reference.
REFERENCE_ARTIFACTS = "monitoring_reference"


def log_training_reference(
    features: pd.DataFrame, labels: pd.Series, *, test_accuracy: float, seed: int
) -> None:
    """Log the drift reference of a model's training rows to the active (step) run."""
    reference = build_reference(features, labels.to_numpy(), test_accuracy=test_accuracy, seed=seed)
    with tempfile.TemporaryDirectory(prefix="reference-") as tmp:
        reference.save(Path(tmp))
        tracking.log_directory(Path(tmp), REFERENCE_ARTIFACTS)


@dataclass
class Window:
    """The rows to check, with their request ids when they came from the prediction log."""

    features: pd.DataFrame
    request_ids: list[str] | None
    source: str


def window_from_csv(path: Path, columns: list[str]) -> Window:
    """A CSV of feature rows (extra columns such as a label or `request_id` are allowed)."""
    frame = read_raw_csv(Path(path))
    frame.columns = [normalise_column_name(str(c)) for c in frame.columns]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataValidationError(f"{path}: lacks the champion's feature columns {shown}")
    if frame.empty:
        raise DataValidationError(f"{path} has no rows to check")
    ids = frame["request_id"].astype(str).tolist() if "request_id" in frame.columns else None
    return Window(frame[columns].astype("float64"), ids, f"{path} ({len(frame)} rows)")


def window_from_log(log_path: str | Path, model_name: str, rows: int, *, password: str = "") -> Window:
    """The most recent `rows` logged input rows scored by `model_name` (served or batch).

    `log_path` is a SQLite file or a PostgreSQL location (see `parse_log_location`).
    """
    from modules.serving.prediction_log import parse_log_location, read_prediction_log

    location = parse_log_location(log_path)
    if location.path is not None and not location.path.is_file():
        raise DataValidationError(
            f"{log_path}: no prediction log yet; serve or predict first, or check a CSV with DATA=..."
        )
    # Every record keeps at least one row, so the newest `rows` records hold the window.
    log = read_prediction_log(location, model_name=model_name, last=rows, password=password)
    frames, ids, taken = [], [], 0
    for record in log.iloc[::-1].itertuples():
        inputs = json.loads(record.inputs)
        frame = pd.DataFrame(inputs["data"], columns=inputs["columns"])
        frames.append(frame)
        ids += [str(record.request_id)] * len(frame)
        taken += len(frame)
        if taken >= rows:
            break
    if not frames:
        raise DataValidationError(f"{log_path}: no logged predictions of {model_name} to check")
    window = pd.concat(frames[::-1], ignore_index=True).tail(rows)
    ids = ids[::-1][-len(window) :]
    return Window(window.astype("float64"), ids, f"prediction log {log_path} ({len(window)} rows)")


@dataclass
class CheckResult:
    """What one check found and where its report is."""

    model_name: str
    version: str
    summary: DriftSummary
    report: dict[str, Any]
    window_source: str
    out_dir: Path

    def decision_line(self) -> str:
        """`retrain: yes (reason; reason)` or `retrain: no (...)`."""
        verdict = "yes" if self.summary.retrain else "no"
        reasons = "; ".join(self.summary.reasons) or "no threshold crossed"
        return f"retrain: {verdict} ({reasons})"


def check_champion(
    settings: Settings,
    *,
    family: str,
    window_rows: int,
    out_dir: Path,
    data_path: Path | None = None,
    feedback_path: Path | None = None,
) -> CheckResult:
    """Compare the champion's training reference with a window of its inputs, and decide."""
    from modules.models.families import get_family

    model_name = settings.model_name(get_family(family).name)  # an unknown family is one line
    champion = tracking.champion_version(model_name)
    with tempfile.TemporaryDirectory(prefix="reference-") as tmp:
        folder = tracking.download_run_directory(champion.run_id, REFERENCE_ARTIFACTS, Path(tmp))
        reference = Reference.load(folder)
    if data_path is not None:
        window = window_from_csv(data_path, reference.columns)
    else:
        window = window_from_log(
            settings.prediction_log_target,
            model_name,
            window_rows,
            password=settings.postgres.get("prediction_log_password", ""),
        )
    model = tracking.load_model(f"models:/{model_name}/{champion.version}")
    predicted = np.asarray(model.predict(window.features[reference.columns])).astype(str)
    feedback = None
    if feedback_path is not None:
        feedback = read_raw_csv(Path(feedback_path))
    summary = detect_drift(
        reference,
        window.features,
        predicted_labels=predicted,
        request_ids=window.request_ids,
        feedback=feedback,
        thresholds=DriftThresholds.from_settings(settings),
    )
    title = f"Drift of {model_name} v{champion.version} on {window.source}"
    report = write_drift_report(summary, reference, window.features, Path(out_dir), title=title)
    return CheckResult(model_name, str(champion.version), summary, report, window.source, Path(out_dir))


@click.command(
    "drift",
    help="Print the decision of the last drift check (make monitor writes it to "
    "REPORTS_DIR/monitoring/drift.json).",
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--report", type=click.Path(path_type=Path), default=None, help="drift.json (default: the last check's)"
)
@click.option("--fail-on-drift", is_flag=True, help="exit 3 when the decision is retrain: yes")
def cli(report: Path | None, fail_on_drift: bool) -> None:
    """`python -m modules drift [--fail-on-drift]`: the last check's decision (exit 3 on `retrain: yes`)."""
    from modules.settings import get_settings

    path = report or get_settings().reports_dir / "monitoring" / "drift.json"
    if not path.is_file():
        raise DataValidationError(f"{path}: no drift check yet; run `make monitor` first")
    decision = json.loads(path.read_text())
    retrain = bool(decision.get("retrain"))
    reasons = "; ".join(decision.get("reasons") or []) or "no threshold crossed"
    print(f"retrain: {'yes' if retrain else 'no'} ({reasons})")
    if retrain and fail_on_drift:
        raise SystemExit(3)
