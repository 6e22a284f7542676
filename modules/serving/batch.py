"""Predict with any fitted model, evaluate predictions as typed results, score CSV files.

`predict` works with anything that has `predict` (and optionally `predict_proba`): a
fitted scikit-learn Pipeline, or an MLflow pyfunc model, which returns labels only.
`evaluate` turns labels (and class probabilities when available) into an `Evaluation`
that serialises to JSON (`model_dump()`), for MLflow metrics and reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

from modules.data.loading import read_raw_csv
from modules.errors import DataValidationError
from modules.files import write_atomically


class ClassMetrics(BaseModel):
    """Precision, recall and F1 of one class, and how many true rows it has."""

    model_config = ConfigDict(frozen=True)

    precision: float
    recall: float
    f1: float
    support: int


class Evaluation(BaseModel):
    """Quality of one model's predictions on one set of rows."""

    model_config = ConfigDict(frozen=True)

    accuracy: float
    macro_f1: float
    per_class: dict[str, ClassMetrics]
    confusion_matrix: list[list[int]]  # rows: true label, columns: predicted, in `labels` order
    labels: list[str]
    roc_auc_ovr: float | None  # macro one-vs-rest ROC AUC; None without probabilities
    n_rows: int

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat numeric metrics for MLflow (`test_accuracy`, `test_f1_POSITIVE`, ...)."""
        values = {f"{prefix}accuracy": self.accuracy, f"{prefix}macro_f1": self.macro_f1}
        if self.roc_auc_ovr is not None:
            values[f"{prefix}roc_auc_ovr"] = self.roc_auc_ovr
        for label, scores in self.per_class.items():
            values[f"{prefix}f1_{label}"] = scores.f1
        return values


class Prediction(BaseModel):
    """Predicted labels, and class probabilities when the model gives them."""

    labels: list[str]
    probabilities: list[list[float]] | None  # columns in `classes` order
    classes: list[str] | None


def evaluate(
    y_true: Sequence[Any],
    y_pred: Sequence[Any],
    y_proba: np.ndarray | None = None,
    labels: Sequence[Any] | None = None,
) -> Evaluation:
    """Accuracy, macro F1, per-class scores, confusion matrix and one-vs-rest ROC AUC.

    `labels` fixes the class order (default: sorted union of true and predicted labels);
    the columns of `y_proba` must follow it. The ROC AUC is None when `y_proba` is None
    or when a class has no true row (its one-vs-rest AUC is undefined).
    """
    true = np.asarray(y_true).astype(str)
    pred = np.asarray(y_pred).astype(str)
    if true.shape != pred.shape or true.ndim != 1:
        raise DataValidationError(
            f"expected as many predictions as true labels, got {pred.shape} and {true.shape}"
        )
    if true.size == 0:
        raise DataValidationError("cannot evaluate zero rows")
    names = sorted(set(true) | set(pred)) if labels is None else [str(label) for label in labels]
    precision, recall, f1, support = precision_recall_fscore_support(
        true, pred, labels=names, zero_division=0.0
    )
    matrix = confusion_matrix(true, pred, labels=names)
    return Evaluation(
        accuracy=float(accuracy_score(true, pred)),
        macro_f1=float(np.mean(f1)),
        per_class={
            name: ClassMetrics(precision=float(p), recall=float(r), f1=float(f), support=int(s))
            for name, p, r, f, s in zip(names, precision, recall, f1, support, strict=True)
        },
        confusion_matrix=matrix.astype(int).tolist(),
        labels=names,
        roc_auc_ovr=_roc_auc(true, y_proba, names),
        n_rows=int(true.size),
    )


def _roc_auc(true: np.ndarray, y_proba: np.ndarray | None, names: list[str]) -> float | None:
    if y_proba is None:
        return None
    proba = np.asarray(y_proba, dtype=float)
    if proba.shape != (true.size, len(names)):
        raise DataValidationError(
            f"expected class probabilities of shape ({true.size}, {len(names)}) in the order {names}, "
            f"got {proba.shape}"
        )
    if any(name not in set(true) for name in names) or len(names) < 2:
        return None
    if len(names) == 2:
        return float(roc_auc_score(true == names[1], proba[:, 1]))
    # roc_auc_score wants rows summing to 1; models may be off by rounding.
    proba = proba / proba.sum(axis=1, keepdims=True)
    return float(roc_auc_score(true, proba, multi_class="ovr", average="macro", labels=names))


def _model_classes(model: Any) -> list[str] | None:
    classes = getattr(model, "classes_", None)
    return None if classes is None else [str(c) for c in classes]


def predict(model: Any, X: pd.DataFrame) -> Prediction:
    """Labels (and probabilities when the model has `predict_proba`) for the rows of X.

    Probabilities' columns follow the model's `classes_`. A model that returns a 2-D array
    of class scores from `predict` with known `classes_` is turned into labels by argmax.
    """
    classes = _model_classes(model)
    probabilities = None
    if hasattr(model, "predict_proba"):
        probabilities = np.asarray(model.predict_proba(X), dtype=float)
    # predict() gives the labels even with probabilities: an SVC's Platt-scaled
    # probabilities can disagree with its decision function on borderline rows.
    raw = model.predict(X)
    if isinstance(raw, pd.DataFrame):
        raw = raw.iloc[:, 0] if raw.shape[1] == 1 else raw.to_numpy()
    values = np.asarray(raw)
    if values.ndim == 2 and values.shape[1] > 1:
        if not classes or values.shape[1] != len(classes):
            raise DataValidationError(
                f"the model returned {values.shape[1]} scores per row but its classes are unknown ({classes})"
            )
        probabilities = values.astype(float) if probabilities is None else probabilities
        values = np.asarray(classes)[np.argmax(values, axis=1)]
    labels = [str(v) for v in values.ravel()]
    return Prediction(
        labels=labels,
        probabilities=None if probabilities is None else probabilities.tolist(),
        classes=classes,
    )


def classification_report_text(evaluation: Evaluation) -> str:
    """A plain-text report: one line per class, then accuracy, macro F1 and ROC AUC."""
    width = max([len(label) for label in evaluation.labels] + [len("macro avg")])
    lines = [f"{'':>{width}}  precision  recall  f1-score  support"]
    for label in evaluation.labels:
        m = evaluation.per_class[label]
        lines.append(f"{label:>{width}}  {m.precision:9.3f}  {m.recall:6.3f}  {m.f1:8.3f}  {m.support:7d}")
    macro_p = float(np.mean([m.precision for m in evaluation.per_class.values()]))
    macro_r = float(np.mean([m.recall for m in evaluation.per_class.values()]))
    lines += [
        "",
        f"{'accuracy':>{width}}  {'':9}  {'':6}  {evaluation.accuracy:8.3f}  {evaluation.n_rows:7d}",
        f"{'macro avg':>{width}}  {macro_p:9.3f}  {macro_r:6.3f}  {evaluation.macro_f1:8.3f}  {evaluation.n_rows:7d}",
    ]
    auc = (
        "n/a (no class probabilities)" if evaluation.roc_auc_ovr is None else f"{evaluation.roc_auc_ovr:.3f}"
    )
    lines.append(f"ROC AUC (one-vs-rest, macro): {auc}")
    return "\n".join(lines) + "\n"


def plot_confusion_matrix(evaluation: Evaluation, path: str | Path, title: str = "Confusion matrix") -> Path:
    """Write the confusion matrix as a PNG: class names on both axes, counts in the cells."""
    # The object-oriented API with the Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = np.asarray(evaluation.confusion_matrix)
    labels = evaluation.labels
    size = max(4.0, 1.2 * len(labels) + 2.0)
    figure = Figure(figsize=(size, size * 0.85), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(range(len(labels)), labels=labels, rotation=30, ha="right")
    axes.set_yticks(range(len(labels)), labels=labels)
    axes.set_xlabel("Predicted label")
    axes.set_ylabel("True label")
    axes.set_title(f"{title}\naccuracy {evaluation.accuracy:.3f}, {evaluation.n_rows} rows")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(
            column,
            row,
            str(count),
            ha="center",
            va="center",
            color="white" if count > threshold else "black",
        )
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def _normalise_columns(frame: pd.DataFrame) -> pd.DataFrame:
    # The published CSV was written by numpy.savetxt, which prefixes the header with "# ".
    return frame.rename(columns=lambda name: str(name).removeprefix("# ").strip())


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
        frame = _normalise_columns(read_raw_csv(csv_path))
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
@click.option(
    "--family",
    default=None,
    help="model family whose champion scores the rows, e.g. svm or dnn (default: svm); its registered name "
    "follows the settings and --data-path",
)
@click.option(
    "--model",
    default=None,
    help="an explicit model URI instead of --family, e.g. models:/eeg-emotion-dnn@champion or models:/NAME/3",
)
@click.option(
    "--data-path",
    type=click.Path(path_type=Path),
    default=None,
    help="the dataset the models were trained on; names the registered model like the flows do (default: "
    "DATA_PATH; emotions.csv -> eeg-emotion-FAMILY, digits.csv -> digits-FAMILY)",
)
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

    if family is not None and model is not None:
        raise click.UsageError("give --family or --model, not both")
    settings = get_settings()
    data = data or settings.data_path
    out = out or settings.reports_dir / "predictions.csv"
    if data_path is not None:
        settings = settings.for_data(data_path)
    model_uri = model or f"models:/{settings.model_name(family or 'svm')}@champion"
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
