"""Preprocessing built once and fitted on training rows only.

`build_preprocessor()` returns an unfitted scikit-learn `Pipeline`:

1. `DropDuplicateAndConstantColumns`: learns, from the rows it is fitted on, which
   columns are exact copies of an earlier column or constant, and drops them
   (the published EEG features have 732 duplicated columns out of 2548);
2. `StandardScaler`: the features span many orders of magnitude (`moments_`);
3. optionally `PCA` keeping a share of the explained variance.

The same configuration is used for tuning and for the final training, and the pipeline
is always a step of the estimator that is cross-validated, so every fold fits it on its
own training rows. (The original project scaled and projected all rows before splitting,
and tuned without PCA but trained with it.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from modules.errors import ConfigurationError, DataValidationError

DEDUP_STEP = "drop_duplicate_constant"
SCALE_STEP = "scale"
PCA_STEP = "pca"


def _column_fingerprints(values: np.ndarray) -> list[int]:
    """One hash per column, of its raw bytes (a cheap first pass before exact comparison)."""
    columns = np.ascontiguousarray(values.T)
    return [hash(column.tobytes()) for column in columns]


class DropDuplicateAndConstantColumns(TransformerMixin, BaseEstimator):
    """Drop columns that are constant, or an exact copy of an earlier column, in the fit rows.

    Columns are compared by a hash of their values first and then exactly, so a hash
    collision never drops a column. The first column of each group of copies is kept,
    which keeps the published column order. NaN equals NaN for this comparison.

    Fitted attributes: `keep_indices_` (positions of the kept columns),
    `duplicate_of_` ({dropped position: kept position}), `constant_indices_`,
    `n_features_in_` and, for DataFrames, `feature_names_in_`.
    """

    def fit(self, X: Any, y: Any = None) -> DropDuplicateAndConstantColumns:
        """Learn which columns to keep from these (training) rows only."""
        values = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan", reset=True)
        # -0.0 and 0.0 are equal values with different bytes: adding 0.0 maps -0.0 to 0.0.
        values = values + 0.0
        n_columns = values.shape[1]
        first = values[0]
        same_as_first = (values == first) | (np.isnan(values) & np.isnan(first))
        constant = same_as_first.all(axis=0)

        keep: list[int] = []
        duplicate_of: dict[int, int] = {}
        kept_by_hash: dict[int, list[int]] = {}
        for index, fingerprint in enumerate(_column_fingerprints(values)):
            if constant[index]:
                continue
            candidates = kept_by_hash.setdefault(fingerprint, [])
            match = next(
                (k for k in candidates if np.array_equal(values[:, k], values[:, index], equal_nan=True)),
                None,
            )
            if match is None:
                candidates.append(index)
                keep.append(index)
            else:
                duplicate_of[index] = match
        if not keep:
            raise DataValidationError(
                f"all {n_columns} feature columns are constant in the {values.shape[0]} training rows; "
                "expected at least one varying column"
            )
        self.keep_indices_ = np.asarray(keep, dtype=np.intp)
        self.duplicate_of_ = duplicate_of
        self.constant_indices_ = np.flatnonzero(constant)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Keep the columns chosen at fit time; returns a float64 numpy array."""
        check_is_fitted(self, "keep_indices_")
        values = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan", reset=False)
        return values[:, self.keep_indices_]

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the kept columns (input names when fitted on a DataFrame)."""
        check_is_fitted(self, "keep_indices_")
        if input_features is None:
            input_features = getattr(self, "feature_names_in_", None)
        if input_features is None:
            input_features = [f"x{i}" for i in range(self.n_features_in_)]
        return np.asarray(input_features, dtype=object)[self.keep_indices_]


def build_preprocessor(pca_variance: float | None = None) -> Pipeline:
    """Unfitted preprocessing: drop duplicate/constant columns, standardise, optional PCA.

    `pca_variance` in (0, 1) keeps the fewest principal components explaining that share
    of the variance; None (or 0) skips PCA. Accepts DataFrames or arrays, outputs numpy.
    """
    steps: list[tuple[str, Any]] = [
        (DEDUP_STEP, DropDuplicateAndConstantColumns()),
        (SCALE_STEP, StandardScaler()),
    ]
    if pca_variance:
        if not 0.0 < float(pca_variance) < 1.0:
            raise ConfigurationError(
                f"pca_variance={pca_variance!r} must be between 0 and 1 (exclusive), or None to skip PCA"
            )
        # svd_solver="full" is required for a fractional n_components.
        steps.append((PCA_STEP, PCA(n_components=float(pca_variance), svd_solver="full")))
    return Pipeline(steps)


def describe_preprocessor(fitted: Pipeline) -> dict[str, Any]:
    """How many columns each stage of a fitted preprocessor keeps (JSON-safe).

    Accepts the preprocessor itself or any Pipeline that contains it as a step named
    `preprocess` (the SVM pipeline of `modules.models.svm`).
    """
    preprocessor = fitted
    if DEDUP_STEP not in fitted.named_steps and "preprocess" in fitted.named_steps:
        preprocessor = fitted.named_steps["preprocess"]
    dedup: DropDuplicateAndConstantColumns = preprocessor.named_steps[DEDUP_STEP]
    check_is_fitted(dedup, "keep_indices_")
    n_after_dedup = len(dedup.keep_indices_)
    pca: PCA | None = preprocessor.named_steps.get(PCA_STEP)
    description: dict[str, Any] = {
        "n_input_columns": int(dedup.n_features_in_),
        "n_constant_columns": len(dedup.constant_indices_),
        "n_duplicate_columns": len(dedup.duplicate_of_),
        "n_after_dedup": n_after_dedup,
        "pca_variance": None,
        "n_after_pca": None,
        "pca_explained_variance": None,
        "n_output_columns": n_after_dedup,
    }
    if pca is not None:
        check_is_fitted(pca, "components_")
        description.update(
            pca_variance=float(pca.n_components),
            n_after_pca=int(pca.n_components_),
            pca_explained_variance=float(np.sum(pca.explained_variance_ratio_)),
            n_output_columns=int(pca.n_components_),
        )
    return description
