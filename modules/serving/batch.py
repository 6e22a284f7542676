"""Batch scoring (`make predict`): a CSV scored with a registered model, predictions written atomically.

The scoring itself (`predict`, `evaluate`) lives in `modules.models.scoring`, shared with training.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd

from modules.data.loading import normalise_column_name, read_raw_csv
from modules.errors import DataValidationError
from modules.files import write_atomically
from modules.models.scoring import Prediction, predict
from modules.serving.model_choice import chosen_model, model_choice


def _with_clean_header(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename(columns=lambda name: normalise_column_name(str(name)))


def score_batch(
    model: Any,
    csv_path: str | Path,
    out_path: str | Path,
    *,
    label_column: str = "label",
    on_scored: Callable[[pd.DataFrame, Prediction, float], None] | None = None,
) -> dict[str, Any]:
    """Score every row of a feature CSV and write `predicted_label` (+ `proba_<class>`) to out_path.

    The label column, when present, is copied to the output and used to report accuracy.
    Columns are matched by name when the model knows its input names (`feature_names_in_`).
    `on_scored(rows, prediction, latency_ms)` is called once the rows are scored (the prediction log).
    Returns a summary: rows, output path, accuracy (or None without labels).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataValidationError(f"{csv_path}: no such file; expected a CSV of feature columns")
    try:
        frame = _with_clean_header(read_raw_csv(csv_path))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataValidationError(f"{csv_path}: not a readable CSV ({exc})") from None
    truth = frame.pop(label_column).astype(str) if label_column in frame.columns else None
    expected = getattr(model, "feature_names_in_", None)
    if expected is not None:
        expected = [str(name) for name in expected]
        missing = [name for name in expected if name not in frame.columns]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise DataValidationError(f"{csv_path}: missing feature columns {shown}")
        frame = frame[expected]
    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise DataValidationError(
            f"{csv_path}: column {non_numeric[0]!r} is not numeric; expected feature values"
        )

    # Registered models declare double columns; integers written by a CSV tool are still features.
    frame = frame.astype("float64")
    started = time.perf_counter()
    try:
        result = predict(model, frame)
    except Exception as exc:  # MLflow's schema errors list every column: keep the gist
        gist = str(exc).split("Error:")[-1].strip().splitlines()[0][:300]
        raise DataValidationError(f"{csv_path}: the model refused these rows: {gist}") from None
    if on_scored is not None:
        on_scored(frame, result, (time.perf_counter() - started) * 1000.0)
    output = pd.DataFrame({"predicted_label": result.labels})
    if truth is not None:
        output.insert(0, label_column, truth.to_numpy())
    if result.probabilities is not None and result.classes:
        for column, name in enumerate(result.classes):
            output[f"proba_{name}"] = np.asarray(result.probabilities)[:, column]
    out_path = Path(out_path)
    write_atomically(out_path, output.to_csv(index=False))
    accuracy = None if truth is None else float(np.mean(truth.to_numpy() == np.asarray(result.labels)))
    return {"rows": len(output), "out_path": str(out_path), "accuracy": accuracy}


def _why_no_alias(
    model_uri: str, masked_uri: str, promotion_report: Path, advice: str = "run `make train` first"
) -> str | None:
    """One line when `models:/NAME@ALIAS` names no registered model or an alias no version holds.

    None for any other URI or failure (then the caller's generic message applies).
    """
    import re

    match = re.fullmatch(r"models:/([^/@]+)@([^/@]+)", model_uri)
    if match is None:
        return None
    name, alias = match.groups()
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    # Only asked after the load failed, to say why in words a person can act on.
    try:
        registered = MlflowClient().get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            return None
        return f"no {alias} for {name}: no model of that name is registered in {masked_uri}; {advice}"
    except Exception:  # an unreachable server: the generic message says where
        return None
    if alias in (registered.aliases or {}):
        return None
    if alias == "champion":
        gate = f"no version has passed the promotion gate yet (see {promotion_report})"
        return f"no champion for {name}: {gate}"
    return f"no version of {name} has the alias {alias!r}"


def load_registered_model(
    settings: Any, model_uri: str, *, advice: str = "run `make train` first"
) -> tuple[Any, str, str | None]:
    """Load MODEL_URI from the settings' tracking store, digest-verified: (model, name, version).

    The version is the one the URI named when it was loaded (None when it cannot be told). A
    model that cannot be loaded is one line saying why, ending in `advice` when no model is
    registered; a digest mismatch is ModelIntegrityError (retraining is not the answer).
    """
    from modules.errors import TrackingError
    from modules.models.integrity import ModelIntegrityError, resolve_model
    from modules.tracking import client as tracking

    masked = tracking.connect(settings)
    try:
        model = tracking.load_model(model_uri)  # only after its files match the registry's digest
    except ModelIntegrityError:
        raise  # names the version and what differs: retraining is not the answer
    except Exception as exc:  # MLflow raises many kinds; the person needs one line
        report = settings.reports_dir / "promotion.json"
        if report.is_relative_to(settings.project_root):
            report = report.relative_to(settings.project_root)
        reason = _why_no_alias(model_uri, masked, report, advice)
        raise TrackingError(
            reason or f"cannot load {model_uri} from {masked} ({type(exc).__name__}); {advice}"
        ) from None
    try:
        pinned = resolve_model(model_uri)  # the version the alias named when it was loaded
        return model, pinned.name or model_uri, pinned.version
    except Exception:  # the log names the URI then; the prediction does not depend on it
        return model, model_uri, None


@click.command(
    "predict",
    help="Score every row of a feature CSV with a registered MLflow model; writes predicted labels. By "
    "default the champion of the SVM trained on DATA_PATH (e.g. models:/eeg-emotion-svm@champion).",
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.argument("data", type=click.Path(path_type=Path), required=False)
@model_choice
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="output CSV (default: REPORTS_DIR/predictions.csv)",
)
@click.option("--label-column", default=None, help="label column, if present (default: LABEL_COLUMN)")
def cli(
    data: Path | None,
    family: str | None,
    model: str | None,
    data_path: Path | None,
    out: Path | None,
    label_column: str | None,
) -> None:
    """`python -m modules predict DATA`: score a CSV with a registered model (the champion by default)."""
    from modules.serving.prediction_log import open_configured_prediction_log, scored_rows_logger
    from modules.settings import get_settings

    settings = get_settings()
    data = data or settings.data_path
    out = out or settings.reports_dir / "predictions.csv"
    settings, model_uri = chosen_model(settings, family, model, data_path)
    loaded, model_name, model_version = load_registered_model(settings, model_uri)
    log = open_configured_prediction_log(settings)

    log_rows = scored_rows_logger(log, "batch", model_name, model_version)

    def log_batch(rows: pd.DataFrame, result: Prediction, latency_ms: float) -> None:
        log_rows(rows, result.labels, result.probabilities, result.classes, latency_ms)

    try:
        summary = score_batch(
            loaded, data, out, label_column=label_column or settings.label_column, on_scored=log_batch
        )
    finally:
        stats = log.close()
    if stats.failed or stats.dropped:  # reported, never fatal: the predictions are written
        print(f"warning: prediction log {settings.prediction_log_target}: not written ({stats.last_error})")
    accuracy = "" if summary["accuracy"] is None else f", accuracy {summary['accuracy']:.4f}"
    print(f"Scored {summary['rows']} rows of {data} with {model_uri}{accuracy}: {summary['out_path']}")
