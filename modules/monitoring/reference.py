"""The champion's training reference: what monitoring compares live data with.

Built once from the training part when a model is trained, logged as an artifact of that run,
so monitoring never needs the training data itself. It holds, per feature column, the
quantile bin edges and reference shares for the population stability index (computed on every
training row), summary statistics, and a random sample of training rows for the
Kolmogorov-Smirnov test; plus the label and prediction mix and the champion's test accuracy.

Saved as plain files, no pickle: `reference.npz` (numbers, float64) and `reference.json`
(column names, label mixes, accuracy, sizes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from modules.errors import DataValidationError

__all__ = ["ARRAYS_FILE", "DEFAULT_BINS", "META_FILE", "Reference", "bin_counts", "build_reference"]

ARRAYS_FILE = "reference.npz"
META_FILE = "reference.json"
FORMAT_VERSION = 1
DEFAULT_BINS = 10
SUMMARY_QUANTILES = (0.05, 0.5, 0.95)


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Rows per bin of every column at once: values (n, k), inner edges (b-1, k) -> counts (b, k).

    Bin j holds edges[j-1] <= x < edges[j]. Repeated edges (a column with few distinct values)
    give empty bins, which is harmless: an empty bin is empty on both sides.
    """
    index = np.zeros(values.shape, dtype=np.int16)
    for edge in edges:  # b-1 passes over the data, each vectorised over all columns
        index += values >= edge
    bins = edges.shape[0] + 1
    offsets = np.arange(values.shape[1]) * bins
    flat = np.bincount((index + offsets).ravel(), minlength=bins * values.shape[1])
    return flat.reshape(values.shape[1], bins).T


def _label_counts(labels: Sequence | None) -> dict[str, int] | None:
    if labels is None:
        return None
    counts = pd.Series(np.asarray(labels, dtype=object)).astype(str).value_counts()
    return {str(key): int(value) for key, value in sorted(counts.items())}


@dataclass(frozen=True)
class Reference:
    """Training-side statistics of the feature columns, the label mix and the test accuracy."""

    columns: list[str]
    edges: np.ndarray  # (bins-1, k) inner quantile edges per column
    shares: np.ndarray  # (bins, k) share of training rows per bin
    sample: np.ndarray  # (rows, k) random training rows, for the KS test
    mean: np.ndarray  # (k,)
    std: np.ndarray  # (k,)
    quantiles: np.ndarray  # (len(SUMMARY_QUANTILES), k)
    training_rows: int
    label_counts: dict[str, int]
    prediction_counts: dict[str, int] | None = None
    test_accuracy: float | None = None

    def save(self, folder: Path) -> list[Path]:
        """Write `reference.npz` and `reference.json` into `folder` (created); return both paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = folder / ARRAYS_FILE
        np.savez_compressed(
            arrays,
            edges=self.edges,
            shares=self.shares,
            sample=self.sample,
            mean=self.mean,
            std=self.std,
            quantiles=self.quantiles,
        )
        meta = {
            "format_version": FORMAT_VERSION,
            "columns": self.columns,
            "training_rows": self.training_rows,
            "sample_rows": int(self.sample.shape[0]),
            "bins": int(self.shares.shape[0]),
            "summary_quantiles": list(SUMMARY_QUANTILES),
            "label_counts": self.label_counts,
            "prediction_counts": self.prediction_counts,
            "test_accuracy": self.test_accuracy,
        }
        meta_path = folder / META_FILE
        meta_path.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        return [arrays, meta_path]

    @classmethod
    def load(cls, folder: Path) -> Reference:
        """Read a reference written by `save`; one-line error when a file is missing or foreign."""
        folder = Path(folder)
        arrays_path, meta_path = folder / ARRAYS_FILE, folder / META_FILE
        for path in (arrays_path, meta_path):
            if not path.is_file():
                raise DataValidationError(
                    f"{path} not found; expected a drift reference ({ARRAYS_FILE} + {META_FILE}) "
                    "logged with the champion's training run"
                )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DataValidationError(f"{meta_path} is not valid JSON: {exc}") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise DataValidationError(
                f"{meta_path} has format_version {meta.get('format_version')!r}; expected {FORMAT_VERSION}"
            )
        with np.load(arrays_path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in ("edges", "shares", "sample", "mean", "std", "quantiles")}
        reference = cls(
            columns=list(meta["columns"]),
            training_rows=int(meta["training_rows"]),
            label_counts=dict(meta["label_counts"]),
            prediction_counts=meta.get("prediction_counts"),
            test_accuracy=meta.get("test_accuracy"),
            **arrays,
        )
        if arrays["sample"].shape[1] != len(reference.columns):
            raise DataValidationError(
                f"{arrays_path} has {arrays['sample'].shape[1]} columns but {meta_path} names "
                f"{len(reference.columns)}"
            )
        return reference


def build_reference(
    features: pd.DataFrame,
    labels: Sequence,
    predicted_labels: Sequence | None = None,
    *,
    test_accuracy: float | None = None,
    sample_rows: int = 1000,
    bins: int = DEFAULT_BINS,
    seed: int = 42,
) -> Reference:
    """The reference of a training part: `features` (numeric columns only), its labels, and
    optionally the model's predictions on it and its held-out test accuracy.

    Bin edges are the training quantiles (equal-mass bins), so PSI weighs every part of each
    distribution alike; `sample_rows` training rows are kept at random (seeded) for the KS test.
    """
    if len(features) != len(labels):
        raise DataValidationError(f"features have {len(features)} rows but labels {len(labels)}")
    if len(features) < bins:
        raise DataValidationError(
            f"a drift reference needs at least {bins} training rows, got {len(features)}"
        )
    values = _numeric_values(features, "training features")
    quantile_points = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    edges = np.quantile(values, quantile_points, axis=0)
    shares = bin_counts(values, edges) / len(values)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(values), size=min(sample_rows, len(values)), replace=False))
    return Reference(
        columns=[str(c) for c in features.columns],
        edges=edges,
        shares=shares,
        sample=values[keep].copy(),
        mean=values.mean(axis=0),
        std=values.std(axis=0),
        quantiles=np.quantile(values, SUMMARY_QUANTILES, axis=0),
        training_rows=len(values),
        label_counts=_label_counts(labels) or {},
        prediction_counts=_label_counts(predicted_labels),
        test_accuracy=None if test_accuracy is None else float(test_accuracy),
    )


def _numeric_values(frame: pd.DataFrame, what: str) -> np.ndarray:
    """The frame as a finite float64 array; one-line error naming the first bad column."""
    try:
        values = frame.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
        raise DataValidationError(f"{what}: column {bad[0]!r} is not numeric") from None
    finite = np.isfinite(values)
    if not finite.all():
        column = frame.columns[int(np.argmin(finite.all(axis=0)))]
        raise DataValidationError(f"{what}: column {column!r} has missing or infinite values")
    return values
