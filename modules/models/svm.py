"""Search space and successive-halving search for the SVM classifier.

The original project ran a 48-candidate `GridSearchCV` (C x gamma x kernel) at cv=5 one
fit at a time: about 10 minutes on 2 cores. Twelve of those candidates are the linear
kernel with a `gamma` it ignores, so the space has 36 distinct candidates. We search
those 36 with `HalvingGridSearchCV`: every candidate is scored on a small share of the
training rows first, and only the best third moves on to more rows, so most fits are
cheap and only the last few candidates see every row.

The estimator searched is `preprocess` (see `modules.models.preprocessing`) followed by
`SVC`, so every fold fits its own preprocessing on its own training rows. With PCA, the
fitted preprocessing of each fold is cached for the duration of one search: all candidates
of a halving iteration share the same folds, so PCA runs once per fold and iteration
instead of once per candidate.

Tuning scores plain `SVC`s: class probabilities need an extra internal cross-validation
per fit and do not change accuracy. The final model (`build_svm_model`) adds them with
`CalibratedClassifierCV(SVC(...), ensemble=False)` (sigmoid / Platt scaling on
cross-validated decision values), the replacement scikit-learn 1.9 names for the
deprecated `SVC(probability=True)`; the evaluation needs them for the ROC AUC.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from joblib import parallel_config
from sklearn.calibration import CalibratedClassifierCV
from sklearn.experimental import enable_halving_search_cv  # noqa: F401  (registers the class)
from sklearn.model_selection import HalvingGridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

from modules.errors import ConfigurationError
from modules.models.preprocessing import build_preprocessor

C_VALUES = (0.1, 1.0, 10.0, 100.0)
GAMMA_VALUES = (1.0, 0.1, 0.01, 0.001)
KERNELS = ("linear", "rbf", "poly")
SCORING = "accuracy"
# Halving factor: each iteration keeps the best 1/FACTOR of the candidates and gives them
# FACTOR times more rows. 3 is scikit-learn's default; see bench/bench_tuning.py.
HALVING_FACTOR = 3

Progress = Callable[[str], None]


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


@dataclass
class CandidateScore:
    """Cross-validated score of one candidate at one halving iteration."""

    params: dict[str, Any]
    mean_score: float
    std_score: float
    fit_time: float  # mean seconds per fold fit
    iteration: int
    n_resources: int  # training rows available to this iteration (before the CV split)
    rank: int  # rank among the candidates of its iteration (1 = best)


@dataclass
class SvmTuningResult:
    """What the SVM search found, JSON-safe through `to_dict()`."""

    best_params: dict[str, Any]
    cv_mean: float
    cv_std: float
    candidates: list[CandidateScore]
    n_candidates: int
    n_iterations: int
    n_fits: int
    elapsed_s: float
    pca_variance: float | None
    halving_factor: int
    scoring: str = SCORING
    iterations: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of built-in types (for Metaflow artifacts, MLflow params/JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SvmTuningResult:
        """Inverse of `to_dict()`."""
        values = dict(data)
        values["candidates"] = [CandidateScore(**c) for c in values["candidates"]]
        return cls(**values)


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so results serialise to JSON."""
    return value.item() if isinstance(value, np.generic) else value


def _strip_prefix(params: dict[str, Any]) -> dict[str, Any]:
    return {key.removeprefix("svc__"): _plain(value) for key, value in params.items()}


class _ReportingHalvingGridSearchCV(HalvingGridSearchCV):
    """HalvingGridSearchCV that reports each halving iteration to a progress function.

    scikit-learn calls `evaluate_candidates` once per iteration; we wrap it to print
    one line before and one after, instead of joblib's per-fit lines.
    """

    progress_fn: Progress | None = None

    def _planned_iterations(self) -> int:
        """Number of iterations `_run_search` will run (same arithmetic as scikit-learn)."""
        n_required = 1 + math.floor(math.log(len(self._generate_candidate_params()), self.factor))
        min_resources = self.min_resources_
        if self.min_resources == "exhaust":
            min_resources = max(min_resources, self.max_resources_ // self.factor ** (n_required - 1))
        n_possible = 1 + math.floor(math.log(self.max_resources_ // min_resources, self.factor))
        return n_required if self.aggressive_elimination else min(n_required, n_possible)

    def _run_search(self, evaluate_candidates, *, callback_ctx=None):  # type: ignore[override]
        report = self.progress_fn or (lambda _line: None)
        n_iterations = self._planned_iterations()
        state = {"iteration": 0, "done": 0}

        def evaluate_and_report(candidate_params, cv, *args, **kwargs):
            n = len(candidate_params)
            state["iteration"] += 1
            more = kwargs.get("more_results") or {}
            rows = (more.get("n_resources") or ["?"])[0]
            report(
                f"svm: halving iteration {state['iteration']}/{n_iterations}: {n} candidates x "
                f"{self.n_splits_} folds on {rows} rows"
            )
            started = time.perf_counter()
            results = evaluate_candidates(candidate_params, cv, *args, **kwargs)
            state["done"] += n
            scores = np.asarray(results["mean_test_score"][-n:], dtype=float)
            best = float(np.nanmax(scores)) if np.isfinite(scores).any() else float("nan")
            report(
                f"svm: halving iteration {state['iteration']} done: {n}/{n} candidates in "
                f"{time.perf_counter() - started:.1f} s, best {SCORING} {best:.3f} "
                f"({state['done']} candidate evaluations so far)"
            )
            return results

        if callback_ctx is None:
            return super()._run_search(evaluate_and_report)
        return super()._run_search(evaluate_and_report, callback_ctx=callback_ctx)


def _candidate_grid(candidates: Iterable[dict[str, Any]]) -> list[dict[str, list[Any]]]:
    """One single-point grid per candidate, prefixed for the pipeline's `svc` step."""
    return [{f"svc__{key}": [value] for key, value in c.items()} for c in candidates]


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
    candidates = select_candidates(max_candidates, seed)
    # A plain float array: workers get it memory-mapped, and column names do not matter
    # while tuning (the final model is fitted on the DataFrame and keeps them).
    features = np.ascontiguousarray(np.asarray(X_train, dtype=np.float64))
    labels = np.asarray(y_train)
    if progress:
        progress(
            f"svm: {len(candidates)} candidates, halving factor {factor}, n_jobs={n_jobs}, "
            f"pca_variance={pca_variance}, {len(features)} training rows"
        )
    started = time.perf_counter()
    # Threads, not processes: libsvm releases the GIL while it fits and predicts, so
    # threads run SVC fits in parallel without starting worker processes or copying data.
    with parallel_config(backend=backend), tempfile.TemporaryDirectory(prefix="svm-cache-") as cache:
        search = _search(
            candidates, cv, pca_variance, factor, seed, n_jobs, progress, cache if pca_variance else None
        )
        search.fit(features, labels)
    elapsed = time.perf_counter() - started
    return _result(search, candidates, pca_variance, factor, elapsed, progress)


def _search(
    candidates: list[dict[str, Any]],
    cv: Any,
    pca_variance: float | None,
    factor: int,
    seed: int,
    n_jobs: int,
    progress: Progress | None,
    cache: str | None,
) -> _ReportingHalvingGridSearchCV:
    estimator = Pipeline([("preprocess", build_preprocessor(pca_variance)), ("svc", SVC())], memory=cache)
    search = _ReportingHalvingGridSearchCV(
        estimator,
        _candidate_grid(candidates),
        factor=factor,
        resource="n_samples",
        # "exhaust": start with as many rows as possible so the last iteration uses them all.
        min_resources="exhaust",
        cv=cv,
        scoring=SCORING,
        # The tuned SVC is thrown away: the final model is refitted with probabilities.
        refit=False,
        return_train_score=False,
        error_score="raise",
        random_state=seed,
        n_jobs=n_jobs,
    )
    search.progress_fn = progress
    return search


def _result(
    search: _ReportingHalvingGridSearchCV,
    candidates: list[dict[str, Any]],
    pca_variance: float | None,
    factor: int,
    elapsed: float,
    progress: Progress | None,
) -> SvmTuningResult:
    results = search.cv_results_
    scores: list[CandidateScore] = [
        CandidateScore(
            params=_strip_prefix(results["params"][i]),
            mean_score=float(results["mean_test_score"][i]),
            std_score=float(results["std_test_score"][i]),
            fit_time=float(results["mean_fit_time"][i]),
            iteration=int(results["iter"][i]),
            n_resources=int(results["n_resources"][i]),
            rank=0,
        )
        for i in range(len(results["params"]))
    ]
    for iteration in set(s.iteration for s in scores):
        members = sorted((s for s in scores if s.iteration == iteration), key=lambda s: -s.mean_score)
        for rank, member in enumerate(members, start=1):
            member.rank = rank
    iterations = [
        {"iteration": i, "n_candidates": int(n), "n_resources": int(r)}
        for i, (n, r) in enumerate(zip(search.n_candidates_, search.n_resources_, strict=True))
    ]
    best = search.best_index_
    result = SvmTuningResult(
        best_params=_strip_prefix(search.best_params_),
        cv_mean=float(results["mean_test_score"][best]),
        cv_std=float(results["std_test_score"][best]),
        candidates=scores,
        n_candidates=len(candidates),
        n_iterations=int(search.n_iterations_),
        n_fits=len(scores) * int(search.n_splits_),
        elapsed_s=round(elapsed, 3),
        pca_variance=pca_variance,
        halving_factor=factor,
        iterations=iterations,
    )
    if progress:
        progress(
            f"svm: best {result.best_params} {SCORING} {result.cv_mean:.3f} +/- {result.cv_std:.3f} "
            f"({result.n_fits} fits in {elapsed:.1f} s)"
        )
    return result


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
