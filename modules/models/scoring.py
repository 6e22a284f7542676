"""Scoring a fitted model on labelled rows: predictions, typed metrics, the confusion matrix.

`predict` works with anything that has `predict` (and optionally `predict_proba`): a
fitted scikit-learn Pipeline, or an MLflow pyfunc model, which returns labels only.
`evaluate` turns labels (and class probabilities when available) into an `Evaluation`
that serialises to JSON (`model_dump()`), for MLflow metrics and reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

from modules.errors import DataValidationError


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
