"""Successive-halving grid search over explicit candidates, for any scikit-learn family.

Every candidate is scored on a small share of the training rows first, and only the best
1/`factor` move on to more rows, so most fits are cheap and only the last few candidates see
every row. The estimator searched is `preprocess` (see `modules.models.preprocessing`)
followed by the family's classifier step, so every fold fits its own preprocessing on its own
training rows. With PCA, the fitted preprocessing of each fold is cached for the duration of
one search: all candidates of a halving iteration share the same folds, so PCA runs once per
fold and iteration instead of once per candidate.

The SVM (`modules.models.svm`) and the logistic regression (`modules.models.logistic`) search
with it; the result (`HalvingTuningResult`) is the same JSON-safe shape for both.
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
from sklearn.experimental import enable_halving_search_cv  # noqa: F401  (registers the class)
from sklearn.model_selection import HalvingGridSearchCV
from sklearn.pipeline import Pipeline

from modules.errors import ConfigurationError
from modules.models.family import TuningOutcome
from modules.models.preprocessing import build_preprocessor

SCORING = "accuracy"
# Halving factor: each iteration keeps the best 1/FACTOR of the candidates and gives them
# FACTOR times more rows. 3 is scikit-learn's default; see bench/bench_tuning.py.
HALVING_FACTOR = 3

Progress = Callable[[str], None]


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
class HalvingTuningResult:
    """What a halving search found, JSON-safe through `to_dict()`."""

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

    def outcome(self, cv_folds: int) -> TuningOutcome:
        """The search as a family's tuning outcome: best settings, the figures logged, the record."""
        return TuningOutcome(
            best={
                "params": self.best_params,
                "cv_accuracy": self.cv_mean,
                "cv_std": self.cv_std,
                "cv_folds": cv_folds,
            },
            metrics={
                "cv_accuracy_mean": self.cv_mean,
                "cv_accuracy_std": self.cv_std,
                "search_seconds": self.elapsed_s,
            },
            search=self.to_dict(),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HalvingTuningResult:
        """Inverse of `to_dict()`."""
        values = dict(data)
        values["candidates"] = [CandidateScore(**c) for c in values["candidates"]]
        return cls(**values)


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so results serialise to JSON."""
    return value.item() if isinstance(value, np.generic) else value


def _strip_prefix(params: dict[str, Any], step: str) -> dict[str, Any]:
    return {key.removeprefix(f"{step}__"): _plain(value) for key, value in params.items()}


class _ReportingHalvingGridSearchCV(HalvingGridSearchCV):
    """HalvingGridSearchCV that reports each halving iteration to a progress function.

    scikit-learn calls `evaluate_candidates` once per iteration; we wrap it to print
    one line before and one after, instead of joblib's per-fit lines.
    """

    progress_fn: Progress | None = None
    label: str = "search"

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
        label = self.label

        def evaluate_and_report(candidate_params, cv, *args, **kwargs):
            n = len(candidate_params)
            state["iteration"] += 1
            more = kwargs.get("more_results") or {}
            rows = (more.get("n_resources") or ["?"])[0]
            report(
                f"{label}: halving iteration {state['iteration']}/{n_iterations}: {n} candidates x "
                f"{self.n_splits_} folds on {rows} rows"
            )
            started = time.perf_counter()
            results = evaluate_candidates(candidate_params, cv, *args, **kwargs)
            state["done"] += n
            scores = np.asarray(results["mean_test_score"][-n:], dtype=float)
            best = float(np.nanmax(scores)) if np.isfinite(scores).any() else float("nan")
            report(
                f"{label}: halving iteration {state['iteration']} done: {n}/{n} candidates in "
                f"{time.perf_counter() - started:.1f} s, best {SCORING} {best:.3f} "
                f"({state['done']} candidate evaluations so far)"
            )
            return results

        if callback_ctx is None:
            return super()._run_search(evaluate_and_report)
        return super()._run_search(evaluate_and_report, callback_ctx=callback_ctx)


def _candidate_grid(candidates: Iterable[dict[str, Any]], step: str) -> list[dict[str, list[Any]]]:
    """One single-point grid per candidate, prefixed for the pipeline's classifier step."""
    return [{f"{step}__{key}": [value] for key, value in c.items()} for c in candidates]


def halving_search(
    classifier: Any,
    candidates: list[dict[str, Any]],
    X_train: Any,
    y_train: Sequence[Any],
    cv: Any,
    *,
    step: str,
    label: str,
    pca_variance: float | None = None,
    n_jobs: int = 2,
    seed: int = 42,
    factor: int = HALVING_FACTOR,
    backend: str = "threading",
    progress: Progress | None = print,
) -> HalvingTuningResult:
    """Successive-halving search of `preprocess` + `classifier` (named `step`) over `candidates`.

    `cv` is a list of (train, validation) row positions relative to `X_train`
    (`modules.data.splitting.cv_folds`) or anything scikit-learn accepts as `cv=`.
    `n_jobs` candidates/folds are fitted at once, on joblib's `backend`. `label` prefixes the
    progress lines (one per halving iteration); `progress=None` is silent.
    """
    if factor < 2:
        raise ConfigurationError(f"factor={factor} must be at least 2")
    # A plain float array: workers get it memory-mapped, and column names do not matter
    # while tuning (the final model is fitted on the DataFrame and keeps them).
    features = np.ascontiguousarray(np.asarray(X_train, dtype=np.float64))
    labels = np.asarray(y_train)
    if progress:
        progress(
            f"{label}: {len(candidates)} candidates, halving factor {factor}, n_jobs={n_jobs}, "
            f"pca_variance={pca_variance}, {len(features)} training rows"
        )
    started = time.perf_counter()
    with parallel_config(backend=backend), tempfile.TemporaryDirectory(prefix=f"{label}-cache-") as cache:
        estimator = Pipeline(
            [("preprocess", build_preprocessor(pca_variance)), (step, classifier)],
            memory=cache if pca_variance else None,
        )
        search = _ReportingHalvingGridSearchCV(
            estimator,
            _candidate_grid(candidates, step),
            factor=factor,
            resource="n_samples",
            # "exhaust": start with as many rows as possible so the last iteration uses them all.
            min_resources="exhaust",
            cv=cv,
            scoring=SCORING,
            # The tuned estimator is thrown away: the family refits its final model.
            refit=False,
            return_train_score=False,
            error_score="raise",
            random_state=seed,
            n_jobs=n_jobs,
        )
        search.progress_fn = progress
        search.label = label
        search.fit(features, labels)
    elapsed = time.perf_counter() - started
    return _result(search, candidates, step, label, pca_variance, factor, elapsed, progress)


def _result(
    search: _ReportingHalvingGridSearchCV,
    candidates: list[dict[str, Any]],
    step: str,
    label: str,
    pca_variance: float | None,
    factor: int,
    elapsed: float,
    progress: Progress | None,
) -> HalvingTuningResult:
    results = search.cv_results_
    scores: list[CandidateScore] = [
        CandidateScore(
            params=_strip_prefix(results["params"][i], step),
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
    result = HalvingTuningResult(
        best_params=_strip_prefix(search.best_params_, step),
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
            f"{label}: best {result.best_params} {SCORING} {result.cv_mean:.3f} +/- {result.cv_std:.3f} "
            f"({result.n_fits} fits in {elapsed:.1f} s)"
        )
    return result
