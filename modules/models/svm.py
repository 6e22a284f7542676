"""Search space and successive-halving search for the SVM classifier.

The original project ran a 48-candidate `GridSearchCV` (C x gamma x kernel) at cv=5 one
fit at a time: about 10 minutes on 2 cores. Twelve of those candidates are the linear
kernel with a `gamma` it ignores, so the space has 36 distinct candidates. We search
those 36 by successive halving (`modules.models.halving`): every candidate is scored on a
small share of the training rows first, and only the best third moves on to more rows.

Tuning scores plain `SVC`s: class probabilities need an extra internal cross-validation
per fit and do not change accuracy. The final model (`build_svm_model`) adds them with
`CalibratedClassifierCV(SVC(...), ensemble=False)` (sigmoid / Platt scaling on
cross-validated decision values), the replacement scikit-learn 1.9 names for the
deprecated `SVC(probability=True)`; the evaluation needs them for the ROC AUC.

`SvmFamily` is the SVM's entry in the model-family registry (`modules.models.families`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from joblib import parallel_config
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

from modules.data.splitting import CALIBRATION_FOLDS, cv_folds
from modules.errors import ConfigurationError
from modules.models.evaluation import CrossValidation
from modules.models.family import TuningContext
from modules.models.halving import (
    HALVING_FACTOR,
    HalvingFamily,
    HalvingTuningResult,
    Progress,
    halving_search,
)
from modules.models.halving import SCORING as SCORING  # re-exported: callers import it from here
from modules.models.halving import CandidateScore as CandidateScore
from modules.models.preprocessing import build_preprocessor
from modules.models.training import PreparedData, TrainedModel, train_pipeline

C_VALUES = (0.1, 1.0, 10.0, 100.0)
GAMMA_VALUES = (1.0, 0.1, 0.01, 0.001)
KERNELS = ("linear", "rbf", "poly")


def search_space() -> list[dict[str, Any]]:
    """The 36 distinct candidates: 4 linear (C) + 16 rbf + 16 poly (C x gamma)."""
    candidates: list[dict[str, Any]] = []
    for kernel in KERNELS:
        for c in C_VALUES:
            if kernel == "linear":
                candidates.append({"kernel": kernel, "C": c})
                continue
            for gamma in GAMMA_VALUES:
                candidates.append({"kernel": kernel, "C": c, "gamma": gamma})
    return candidates


def original_search_space() -> dict[str, list[Any]]:
    """The original 48-candidate grid, linear-with-gamma included (used by the benchmark)."""
    return {"C": list(C_VALUES), "gamma": list(GAMMA_VALUES), "kernel": list(KERNELS)}


def select_candidates(max_candidates: int, seed: int = 42) -> list[dict[str, Any]]:
    """At most `max_candidates` of the space, the same ones for the same seed.

    Kernels take turns (each kernel's candidates in a seeded random order), so that even a
    budget of 3 tries every kernel. A budget of 36 or more returns the whole space.
    """
    if max_candidates < 1:
        raise ConfigurationError(f"max_candidates={max_candidates} must be at least 1")
    space = search_space()
    if max_candidates >= len(space):
        return space
    rng = np.random.default_rng(seed)
    queues = []
    for kernel in KERNELS:
        members = [c for c in space if c["kernel"] == kernel]
        queues.append([members[i] for i in rng.permutation(len(members))])
    chosen: list[dict[str, Any]] = []
    while len(chosen) < max_candidates:
        for queue in queues:
            if queue and len(chosen) < max_candidates:
                chosen.append(queue.pop(0))
    # Report in the space's own order, whatever the draw order was.
    return [c for c in space if c in chosen]


# The SVM's search result is the shared halving result (kept under its old name).
SvmTuningResult = HalvingTuningResult


def tune_svm(
    X_train: Any,
    y_train: Sequence[Any],
    cv: Any,
    *,
    pca_variance: float | None = None,
    max_candidates: int = 48,
    n_jobs: int = 2,
    seed: int = 42,
    factor: int = HALVING_FACTOR,
    backend: str = "threading",
    progress: Progress | None = print,
) -> SvmTuningResult:
    """Successive-halving search of the SVM over the training part.

    `cv` is a list of (train, validation) row positions relative to `X_train`
    (`modules.data.splitting.cv_folds`) or anything scikit-learn accepts as `cv=`.
    `max_candidates` caps the 36 distinct candidates (seeded subsample when smaller).
    `n_jobs` candidates/folds are fitted at once, on joblib's `backend` ("threading" by
    default; "loky" for processes). `progress` gets one line per halving iteration; None is silent.
    """
    if factor < 2:
        raise ConfigurationError(f"factor={factor} must be at least 2")
    # Threads, not processes: libsvm releases the GIL while it fits and predicts, so
    # threads run SVC fits in parallel without starting worker processes or copying data.
    return halving_search(
        SVC(),
        select_candidates(max_candidates, seed),
        X_train,
        y_train,
        cv,
        step="svc",
        label="svm",
        pca_variance=pca_variance,
        n_jobs=n_jobs,
        seed=seed,
        factor=factor,
        backend=backend,
        progress=progress,
    )


def build_svm_model(
    best_params: dict[str, Any],
    pca_variance: float | None = None,
    seed: int = 42,
    *,
    calibration_cv: int | Any = 3,
    n_jobs: int | None = None,
) -> Pipeline:
    """Unfitted final pipeline: the same preprocessing + a calibrated SVC with `best_params`.

    The SVC is fitted once on all rows; `CalibratedClassifierCV(..., ensemble=False)` fits a
    sigmoid per class on decision values cross-validated over `calibration_cv` (an int:
    stratified folds shuffled with `seed`; or explicit folds such as `cv_folds(...)`, which
    keep recordings together), which gives `predict_proba` (for the ROC AUC). 3 folds cost
    4 SVC fits instead of libsvm's 6 for `probability=True`. `predict` is the most probable
    class. `n_jobs` runs the calibration folds in parallel (see `fit_svm_model`).
    """
    params = {k: v for k, v in best_params.items() if k in ("C", "gamma", "kernel", "degree", "coef0")}
    if isinstance(calibration_cv, int):
        calibration_cv = StratifiedKFold(n_splits=calibration_cv, shuffle=True, random_state=seed)
    return Pipeline(
        [
            ("preprocess", build_preprocessor(pca_variance)),
            (
                "svc",
                CalibratedClassifierCV(
                    SVC(**params), method="sigmoid", cv=calibration_cv, ensemble=False, n_jobs=n_jobs
                ),
            ),
        ]
    )


def fit_svm_model(
    best_params: dict[str, Any],
    X_train: Any,
    y_train: Sequence[Any],
    *,
    pca_variance: float | None = None,
    seed: int = 42,
    calibration_cv: int | Any = 3,
    n_jobs: int = 2,
    backend: str = "threading",
) -> Pipeline:
    """`build_svm_model(...)` fitted on the whole training part, calibration folds in parallel threads."""
    model = build_svm_model(best_params, pca_variance, seed, calibration_cv=calibration_cv, n_jobs=n_jobs)
    with parallel_config(backend=backend):
        return model.fit(X_train, np.asarray(y_train))


# --------------------------------------------------------------------------- the pipeline's SVM
def run_svm_tuning(
    data: PreparedData,
    *,
    cv_folds_count: int,
    max_candidates: int,
    n_jobs: int,
    pca_variance: float | None,
    seed: int,
) -> SvmTuningResult:
    """Successive-halving SVM search with the split's own CV folds."""
    folds = cv_folds(data.split, data.dataset.labels, n_splits=cv_folds_count, seed=seed)
    return tune_svm(
        data.X_train,
        data.y_train.to_numpy(),
        folds,
        pca_variance=pca_variance,
        max_candidates=max_candidates,
        n_jobs=n_jobs,
        seed=seed,
    )


def svm_calibration_folds(data: PreparedData, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds for the SVM's probability calibration: by recording on a grouped split, so the
    sigmoids are fitted on decision values of recordings the SVC did not see."""
    return cv_folds(data.split, data.dataset.labels, n_splits=CALIBRATION_FOLDS, seed=seed)


def train_svm(
    data: PreparedData,
    best_params: dict[str, Any],
    *,
    pca_variance: float | None,
    seed: int,
    cv: CrossValidation | None = None,
) -> TrainedModel:
    """Fit the best SVM on the whole training part, evaluate it on the held-out rows."""
    calibration = svm_calibration_folds(data, seed)

    def fit(X: pd.DataFrame, y: pd.Series) -> Pipeline:
        return fit_svm_model(
            best_params, X, y.to_numpy(), pca_variance=pca_variance, seed=seed, calibration_cv=calibration
        )

    def refit(X: pd.DataFrame, y: pd.Series) -> Pipeline:
        # The leak gap's extra fit is on a part of the training rows: the split's folds do not apply.
        return fit_svm_model(best_params, X, y.to_numpy(), pca_variance=pca_variance, seed=seed)

    return train_pipeline(data, "svm", fit, refit=refit, seed=seed, cv=cv)


class SvmFamily(HalvingFamily):
    """The calibrated SVM: successive halving over C x gamma x kernel."""

    name = "svm"
    title = "SVM"
    search_title = "SVM candidates"
    step = "svc"

    def candidates(self, context: TuningContext) -> list[dict[str, Any]]:
        return select_candidates(context.budgets.get("svm_max_candidates", 48), context.seed)

    def classifier(self, context: TuningContext) -> SVC:
        return SVC()

    def train(
        self,
        data: PreparedData,
        best: dict[str, Any],
        context: TuningContext,
        *,
        cv: CrossValidation | None = None,
    ) -> TrainedModel:
        return train_svm(data, best["params"], pca_variance=context.pca_variance, seed=context.seed, cv=cv)
