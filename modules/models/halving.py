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

A search can also run in chunks (TuningFlow's SEARCH_CHUNKS, one pod each on Kubernetes):
`split_candidates` deals the candidates into chunks, each chunk runs the early iterations of a
halving search (up to 1/`factor` of the training rows, `chunk_rows`), and `final_round` (in the
flow's join) scores every chunk's finalists on all the training rows with the same folds, so the
winner is chosen like the last iteration of one search would choose it.
"""

from __future__ import annotations

import math
import tempfile
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from joblib import parallel_config
from sklearn.experimental import enable_halving_search_cv  # noqa: F401  (registers the class)
from sklearn.model_selection import GridSearchCV, HalvingGridSearchCV
from sklearn.pipeline import Pipeline

from modules.data.splitting import cv_folds
from modules.errors import ConfigurationError
from modules.models.family import SklearnPipelineFamily, TuningContext, TuningOutcome
from modules.models.preprocessing import build_preprocessor

if TYPE_CHECKING:
    from modules.models.training import PreparedData

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
    chunk: int | None = None  # the chunk that scored it, in a search run in chunks (None: final round)


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
    # A search run in chunks: one entry per chunk (its candidates, iterations, seconds, finalists).
    chunks: list[dict[str, Any]] = field(default_factory=list)

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


def _search_arrays(X_train: Any, y_train: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Features as one plain float array, labels as an array: workers get them memory-mapped, and
    column names do not matter while tuning (the final model is fitted on the DataFrame and keeps them)."""
    return np.ascontiguousarray(np.asarray(X_train, dtype=np.float64)), np.asarray(y_train)


def _search_pipeline(classifier: Any, step: str, pca_variance: float | None, cache: str) -> Pipeline:
    """`preprocess` + `classifier`; with PCA, fitted preprocessing is cached in `cache` (one search)."""
    return Pipeline(
        [("preprocess", build_preprocessor(pca_variance)), (step, classifier)],
        memory=cache if pca_variance else None,
    )


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
    max_resources: int | None = None,
    progress: Progress | None = print,
) -> HalvingTuningResult:
    """Successive-halving search of `preprocess` + `classifier` (named `step`) over `candidates`.

    `max_resources` caps the rows of the last iteration (default: every training row); a chunk
    of a search stops at a share of them and leaves the round on all rows to `final_round`.

    `cv` is a list of (train, validation) row positions relative to `X_train`
    (`modules.data.splitting.cv_folds`) or anything scikit-learn accepts as `cv=`.
    `n_jobs` candidates/folds are fitted at once, on joblib's `backend`. `label` prefixes the
    progress lines (one per halving iteration); `progress=None` is silent.
    """
    if factor < 2:
        raise ConfigurationError(f"factor={factor} must be at least 2")
    features, labels = _search_arrays(X_train, y_train)
    if progress:
        progress(
            f"{label}: {len(candidates)} candidates, halving factor {factor}, n_jobs={n_jobs}, "
            f"pca_variance={pca_variance}, {len(features)} training rows"
        )
    started = time.perf_counter()
    with parallel_config(backend=backend), tempfile.TemporaryDirectory(prefix="halving-cache-") as cache:
        search = _ReportingHalvingGridSearchCV(
            _search_pipeline(classifier, step, pca_variance, cache),
            _candidate_grid(candidates, step),
            factor=factor,
            resource="n_samples",
            max_resources=max_resources or "auto",
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


# --------------------------------------------------------------------------- searches run in chunks
def split_candidates(candidates: Sequence[dict[str, Any]], chunks: int) -> list[list[dict[str, Any]]]:
    """`candidates` dealt in turn into at most `chunks` non-empty chunks.

    Dealing in turn (not in blocks) gives every chunk a share of each region of the space (each
    SVM kernel, small and large C), so no chunk holds only the weak candidates.
    """
    if chunks < 1:
        raise ConfigurationError(f"chunks={chunks} must be at least 1")
    return [list(candidates[i::chunks]) for i in range(min(chunks, len(candidates)))]


def chunk_rows(n_rows: int, factor: int = HALVING_FACTOR) -> int:
    """The most rows a chunk's last iteration uses: the iteration before the final round's all rows."""
    return max(1, n_rows // factor)


def _last_iteration(result: HalvingTuningResult) -> list[CandidateScore]:
    last = max(c.iteration for c in result.candidates)
    return sorted((c for c in result.candidates if c.iteration == last), key=lambda c: c.rank)


def finalists(result: HalvingTuningResult) -> list[dict[str, Any]]:
    """The candidates that reached a search's last iteration, best first."""
    return [c.params for c in _last_iteration(result)]


def final_candidates(parts: Sequence[HalvingTuningResult], factor: int) -> list[dict[str, Any]]:
    """The halving rule over the chunks' finalists: the best 1/`factor` by their chunks' last scores.

    Every chunk's last iteration used about the same rows (`chunk_rows`), so their scores compare
    as the candidates of one iteration do; the first of equals (by chunk) goes on.
    """
    scored: list[tuple[dict[str, Any], float]] = []
    for part in parts:
        scored.extend(
            (c.params, c.mean_score) for c in _last_iteration(part) if c.params not in [p for p, _ in scored]
        )
    ranked = sorted(scored, key=lambda item: -item[1])  # stable: chunk order among equals
    return [params for params, _ in ranked[: max(1, math.ceil(len(ranked) / factor))]]


def final_round(
    classifier: Any,
    parts: Sequence[HalvingTuningResult],
    X_train: Any,
    y_train: Sequence[Any],
    cv: Any,
    *,
    step: str,
    label: str,
    n_jobs: int = 2,
    backend: str = "threading",
    progress: Progress | None = print,
) -> HalvingTuningResult:
    """The last iteration of a search run in chunks: the best of the chunks' finalists, all rows, the same folds.

    `parts` are the chunks' results in chunk order, `cv` the folds the chunks used. The best
    1/factor of the finalists (`final_candidates`) are cross-validated on every training row. The
    result holds every chunk's candidates (marked with their chunk) and the final round as the
    last iteration; its best settings and CV figures are the final round's.
    """
    if not parts:
        raise ConfigurationError("a search run in chunks needs at least one chunk's result")
    pca_variance = parts[0].pca_variance
    survivors = final_candidates(parts, parts[0].halving_factor)
    features, labels = _search_arrays(X_train, y_train)
    if progress:
        progress(
            f"{label}: final round of {len(parts)} chunks: the best {len(survivors)} of their finalists "
            f"on all {len(features)} training rows"
        )
    started = time.perf_counter()
    with parallel_config(backend=backend), tempfile.TemporaryDirectory(prefix="halving-cache-") as cache:
        search = GridSearchCV(
            _search_pipeline(classifier, step, pca_variance, cache),
            _candidate_grid(survivors, step),
            cv=cv,
            scoring=SCORING,
            refit=False,
            return_train_score=False,
            error_score="raise",
            n_jobs=n_jobs,
        )
        search.fit(features, labels)
    elapsed = time.perf_counter() - started
    results = search.cv_results_
    last_iteration = max(c.iteration for part in parts for c in part.candidates) + 1
    order = sorted(range(len(survivors)), key=lambda i: -float(results["mean_test_score"][i]))  # stable
    final = [
        CandidateScore(
            params=_strip_prefix(results["params"][i], step),
            mean_score=float(results["mean_test_score"][i]),
            std_score=float(results["std_test_score"][i]),
            fit_time=float(results["mean_fit_time"][i]),
            iteration=last_iteration,
            n_resources=len(features),
            rank=rank,
        )
        for rank, i in enumerate(order, start=1)
    ]
    best = final[0]
    result = HalvingTuningResult(
        best_params=best.params,
        cv_mean=best.mean_score,
        cv_std=best.std_score,
        candidates=[replace(c, chunk=i) for i, part in enumerate(parts) for c in part.candidates] + final,
        n_candidates=sum(part.n_candidates for part in parts),
        n_iterations=last_iteration + 1,
        n_fits=sum(part.n_fits for part in parts) + len(final) * int(search.n_splits_),
        # Wall-clock with the chunks in parallel: the slowest chunk, then the final round.
        elapsed_s=round(max(part.elapsed_s for part in parts) + elapsed, 3),
        pca_variance=pca_variance,
        halving_factor=parts[0].halving_factor,
        iterations=[{"iteration": last_iteration, "n_candidates": len(final), "n_resources": len(features)}],
        chunks=[
            {
                "chunk": i,
                "n_candidates": part.n_candidates,
                "n_iterations": part.n_iterations,
                "elapsed_s": part.elapsed_s,
                "finalists": finalists(part),
            }
            for i, part in enumerate(parts)
        ],
    )
    if progress:
        progress(
            f"{label}: best {result.best_params} {SCORING} {result.cv_mean:.3f} +/- {result.cv_std:.3f} "
            f"(final round: {len(final)} finalists in {elapsed:.1f} s)"
        )
    return result


# --------------------------------------------------------------------------- the families' side
class HalvingFamily(SklearnPipelineFamily):
    """A scikit-learn family tuned by successive halving over explicit candidates, whole or in chunks.

    A family says which candidates this run searches, which classifier they configure, and the
    classifier's step name; the search, its chunks and the join's final round are shared.
    """

    step: str  # the classifier's step name in the pipeline (the candidates' parameter prefix)

    @abstractmethod
    def candidates(self, context: TuningContext) -> list[dict[str, Any]]:
        """The candidates this run searches (the family's budget applied), in a fixed order."""

    @abstractmethod
    def classifier(self, context: TuningContext) -> Any:
        """The unfitted classifier that each candidate's settings configure."""

    def limits(self) -> AbstractContextManager[Any]:
        """Held while this family's models are fitted (e.g. BLAS thread limits); none by default."""
        return nullcontext()

    def search(
        self,
        data: PreparedData,
        context: TuningContext,
        candidates: list[dict[str, Any]],
        label: str,
        *,
        max_resources: int | None = None,
    ) -> HalvingTuningResult:
        """Successive halving over `candidates` on the split's CV folds of the training part."""
        with self.limits():
            return halving_search(
                self.classifier(context),
                candidates,
                data.X_train,
                data.y_train.to_numpy(),
                self._folds(data, context),
                step=self.step,
                label=label,
                pca_variance=context.pca_variance,
                n_jobs=context.n_jobs,
                seed=context.seed,
                max_resources=max_resources,
            )

    def tune(self, data: PreparedData, context: TuningContext) -> TuningOutcome:
        return self.search(data, context, self.candidates(context), self.name).outcome(context.cv_folds)

    def search_chunks(self, context: TuningContext, requested: int) -> int:
        return len(split_candidates(self.candidates(context), requested))

    def tune_chunk(
        self, data: PreparedData, context: TuningContext, chunk: int, chunks: int
    ) -> TuningOutcome:
        share = split_candidates(self.candidates(context), chunks)[chunk]
        label = f"{self.name} chunk {chunk + 1}/{chunks}"
        result = self.search(data, context, share, label, max_resources=chunk_rows(len(data.X_train)))
        return result.outcome(context.cv_folds)

    def merge_chunks(
        self, data: PreparedData, context: TuningContext, parts: list[TuningOutcome]
    ) -> TuningOutcome:
        with self.limits():
            result = final_round(
                self.classifier(context),
                [HalvingTuningResult.from_dict(part.search) for part in parts],
                data.X_train,
                data.y_train.to_numpy(),
                self._folds(data, context),
                step=self.step,
                label=self.name,
                n_jobs=context.n_jobs,
            )
        return result.outcome(context.cv_folds)

    @staticmethod
    def _folds(data: PreparedData, context: TuningContext) -> list[tuple[np.ndarray, np.ndarray]]:
        return cv_folds(data.split, data.dataset.labels, n_splits=context.cv_folds, seed=context.seed)
