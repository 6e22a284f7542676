"""Multinomial logistic regression: the cheap third family, a linear yardstick beside the SVM and DNN.

The search is the SVM's successive halving (`modules.models.halving`) over a small grid of
the inverse regularisation strength `C`, on the same preprocessing (deduplicate, standardise,
optional PCA), so the comparison with the other families is like for like. Logistic
regression gives class probabilities of its own (the ROC AUC needs them): the final model is
the plain pipeline, no calibration step. With 2548 standardised columns and a few hundred to
two thousand rows, the whole search takes seconds.

Registered as `LogisticFamily` in `modules.models.families`; its models are `<prefix>-logistic`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from modules.models.evaluation import CrossValidation
from modules.models.family import TuningContext
from modules.models.halving import HalvingFamily, HalvingTuningResult, Progress, halving_search
from modules.models.preprocessing import build_preprocessor
from modules.models.training import PreparedData, TrainedModel, train_pipeline

# Strong to weak regularisation; with thousands of correlated columns the best C is small.
C_VALUES = (0.001, 0.01, 0.1, 1.0)
# lbfgs converges within a few hundred iterations on standardised features at these C values.
MAX_ITER = 1000
STEP = "logistic"


def _one_blas_thread() -> threadpool_limits:
    # lbfgs is a chain of small matrix products: BLAS threads on top of the search's own
    # workers (or beside the flow's other branches) make it about ten times slower, not faster.
    return threadpool_limits(limits=1, user_api="blas")


def search_space() -> list[dict[str, Any]]:
    """The candidates: one per C."""
    return [{"C": c} for c in C_VALUES]


def build_logistic_model(
    params: dict[str, Any], pca_variance: float | None = None, seed: int = 42
) -> Pipeline:
    """Unfitted final pipeline: the shared preprocessing + logistic regression with `params`."""
    chosen = {k: v for k, v in params.items() if k in ("C", "max_iter", "tol", "class_weight")}
    classifier = LogisticRegression(**{"max_iter": MAX_ITER, "random_state": seed, **chosen})
    return Pipeline([("preprocess", build_preprocessor(pca_variance)), (STEP, classifier)])


def tune_logistic(
    X_train: Any,
    y_train: Sequence[Any],
    cv: Any,
    *,
    pca_variance: float | None = None,
    n_jobs: int = 2,
    seed: int = 42,
    progress: Progress | None = print,
) -> HalvingTuningResult:
    """Successive-halving search of C on the training part's folds (`cv` as for `tune_svm`)."""
    with _one_blas_thread():
        return halving_search(
            LogisticRegression(max_iter=MAX_ITER, random_state=seed),
            search_space(),
            X_train,
            y_train,
            cv,
            step=STEP,
            label="logistic",
            pca_variance=pca_variance,
            n_jobs=n_jobs,
            seed=seed,
            progress=progress,
        )


def train_logistic(
    data: PreparedData,
    params: dict[str, Any],
    *,
    pca_variance: float | None,
    seed: int,
    cv: CrossValidation | None = None,
) -> TrainedModel:
    """Fit the best logistic regression on the whole training part, evaluate it on the held-out rows."""

    def fit(X: pd.DataFrame, y: pd.Series) -> Pipeline:
        with _one_blas_thread():
            return build_logistic_model(params, pca_variance, seed).fit(X, np.asarray(y))

    return train_pipeline(data, "logistic", fit, seed=seed, cv=cv)


class LogisticFamily(HalvingFamily):
    """Logistic regression: a halving search over C, probabilities without calibration."""

    name = "logistic"
    title = "Logistic regression"
    search_title = "Logistic regression candidates"
    step = STEP

    def candidates(self, context: TuningContext) -> list[dict[str, Any]]:
        return search_space()

    def classifier(self, context: TuningContext) -> LogisticRegression:
        return LogisticRegression(max_iter=MAX_ITER, random_state=context.seed)

    def limits(self) -> threadpool_limits:
        return _one_blas_thread()

    def train(
        self,
        data: PreparedData,
        best: dict[str, Any],
        context: TuningContext,
        *,
        cv: CrossValidation | None = None,
    ) -> TrainedModel:
        return train_logistic(
            data, best["params"], pca_variance=context.pca_variance, seed=context.seed, cv=cv
        )
