"""A family's search split into chunks (SEARCH_CHUNKS): dealing, the join's final round, the DNN's merge."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from modules.errors import ConfigurationError
from modules.models.dnn import DnnTuningResult, TrialRecord, best_epoch, merge_dnn_searches, trial_shares
from modules.models.halving import (
    chunk_rows,
    final_candidates,
    final_round,
    finalists,
    halving_search,
    split_candidates,
)


def test_candidates_are_dealt_in_turn_into_non_empty_chunks() -> None:
    candidates = [{"C": c} for c in range(7)]
    chunks = split_candidates(candidates, 3)
    assert chunks == [[{"C": 0}, {"C": 3}, {"C": 6}], [{"C": 1}, {"C": 4}], [{"C": 2}, {"C": 5}]]
    # More chunks than candidates: one candidate each, no empty chunk.
    assert split_candidates(candidates[:2], 5) == [[{"C": 0}], [{"C": 1}]]
    with pytest.raises(ConfigurationError, match="chunks=0"):
        split_candidates(candidates, 0)


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], 60)
    X = rng.normal(size=(180, 12)) + y[:, None] * np.linspace(0.1, 0.6, 12)
    folds = list(StratifiedKFold(n_splits=3, shuffle=True, random_state=1).split(X, y))
    return X, y, folds


def test_the_final_round_scores_the_best_third_of_the_chunks_finalists_on_all_rows_with_the_same_folds() -> (
    None
):
    X, y, folds = _data()
    candidates = [{"C": c} for c in (1e-5, 1e-4, 1e-3, 0.01, 0.1, 1.0, 3.0, 10.0, 30.0)]
    parts = [
        halving_search(
            LogisticRegression(max_iter=500),
            share,
            X,
            y,
            folds,
            step="lr",
            label=f"chunk {i}",
            max_resources=chunk_rows(len(X)),
            progress=None,
        )
        for i, share in enumerate(split_candidates(candidates, 3))
    ]
    # Each chunk stopped at a third of the rows: the round on all rows is the join's.
    assert {
        c.n_resources for part in parts for c in part.candidates if c.iteration == part.n_iterations - 1
    } == {chunk_rows(len(X))}
    lines: list[str] = []
    merged = final_round(
        LogisticRegression(max_iter=500), parts, X, y, folds, step="lr", label="lr", progress=lines.append
    )

    final = [c for c in merged.candidates if c.chunk is None]
    survivors = [params for part in parts for params in finalists(part)]
    chunk_scores = {
        c.params["C"]: c.mean_score for part in parts for c in part.candidates if c.params in finalists(part)
    }
    # The halving rule over the finalists: the best third of them by their chunks' scores.
    assert len(final) == -(-len(survivors) // 3) < len(survivors)
    assert min(chunk_scores[c.params["C"]] for c in final) >= max(
        score for C, score in chunk_scores.items() if C not in {c.params["C"] for c in final}
    )
    assert {c.n_resources for c in final} == {len(X)}
    assert {c.iteration for c in final} == {merged.n_iterations - 1}
    assert [c.rank for c in sorted(final, key=lambda c: -c.mean_score)] == list(range(1, len(final) + 1))
    # Every chunk's own candidates are kept, marked with their chunk.
    assert {c.chunk for c in merged.candidates if c.chunk is not None} == {0, 1, 2}
    assert merged.n_candidates == len(candidates)
    assert [chunk["finalists"] for chunk in merged.chunks] == [finalists(part) for part in parts]

    # The winner's figure is an ordinary cross-validation on all rows with the chunks' folds.
    best = max(final, key=lambda c: c.mean_score)
    assert merged.best_params == best.params
    expected = cross_val_score(
        Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression(max_iter=500, **best.params))]),
        X,
        y,
        cv=folds,
    )
    assert merged.cv_mean == pytest.approx(expected.mean())
    assert merged.cv_std == pytest.approx(expected.std())
    assert "final round of 3 chunks" in lines[0]


def test_the_final_round_finds_the_best_candidate_whichever_chunk_holds_it() -> None:
    X, y, folds = _data(seed=3)
    # Regularised down to the heaviest class's prior (one class), except the last candidate.
    one_class = {0: 1000.0, 1: 1.0, 2: 1.0}
    candidates = [{"C": 1e-7, "class_weight": one_class}, {"C": 1e-6, "class_weight": one_class}, {"C": 1.0}]
    parts = [
        halving_search(
            LogisticRegression(max_iter=500), [c], X, y, folds, step="lr", label="c", progress=None
        )
        for c in candidates
    ]
    assert final_candidates(parts, factor=3) == [{"C": 1.0}]
    # With every finalist let through, the one-class candidates score the majority share on all rows.
    assert [round(p.cv_mean, 3) for p in parts[:2]] == [0.333, 0.333]
    merged = final_round(
        LogisticRegression(max_iter=500), parts, X, y, folds, step="lr", label="lr", progress=None
    )
    assert merged.best_params == {"C": 1.0}
    assert [c.params for c in merged.candidates if c.chunk is None] == [{"C": 1.0}]
    assert merged.cv_mean > 0.5


def test_the_trials_of_a_dnn_search_are_shared_out_evenly() -> None:
    assert trial_shares(7, 3) == [3, 2, 2]
    assert trial_shares(4, 4) == [1, 1, 1, 1]
    with pytest.raises(ConfigurationError, match="cannot split 2 trials into 3 chunks"):
        trial_shares(2, 3)


def _dnn_part(seed: int, scores: list[float], cv_mean: float) -> DnnTuningResult:
    trials = [
        TrialRecord(
            trial_id=f"{i:02d}",
            hyperparameters={"units": 16 * (i + 1)},
            history={"val_accuracy": [score / 2, score, score - 0.01]},
            best_val_accuracy=score,
            epochs_run=3,
            status="COMPLETED",
            elapsed_s=1.0 + i,
        )
        for i, score in enumerate(scores)
    ]
    best = max(trials, key=lambda t: t.best_val_accuracy)
    return DnnTuningResult(
        best_hyperparameters=best.hyperparameters,
        best_val_accuracy=best.best_val_accuracy,
        best_trial_id=best.trial_id,
        trials=trials,
        elapsed_s=sum(t.elapsed_s for t in trials),
        n_features=10,
        n_classes=3,
        max_trials=len(trials),
        max_epochs=3,
        seed=seed,
        cv_mean=cv_mean,
        cv_std=0.01,
        cv_scores=[cv_mean] * 3,
    )


def test_the_dnn_chunks_merge_into_one_search_won_by_the_best_validation_accuracy() -> None:
    parts = [_dnn_part(42, [0.6, 0.7], 0.65), _dnn_part(43, [0.8, 0.5], 0.78), _dnn_part(44, [0.8], 0.7)]
    merged = merge_dnn_searches(parts)
    assert merged.best_val_accuracy == 0.8
    # The first of equals wins: chunk 2 (1-based), its trial 00, with the CV figures of that chunk.
    assert merged.best_trial_id == "2-00"
    assert merged.cv_mean == 0.78
    assert merged.best_hyperparameters == {"units": 16}
    assert [t.trial_id for t in merged.trials] == ["1-00", "1-01", "2-00", "2-01", "3-00"]
    assert merged.max_trials == 5
    assert merged.elapsed_s == max(part.elapsed_s for part in parts)
    assert [chunk["seed"] for chunk in merged.chunks] == [42, 43, 44]
    assert best_epoch(merged) == 2  # the winning trial peaked at its second epoch
    assert DnnTuningResult.from_dict(merged.to_dict()) == merged
    with pytest.raises(ConfigurationError):
        merge_dnn_searches([])


def test_the_cards_table_puts_the_chosen_candidate_first_when_scores_tie() -> None:
    from modules.models.reports import candidate_rows

    def row(C: float, score: float, iteration: int, rank: int, chunk: int | None) -> dict:
        return {
            "params": {"C": C},
            "mean_score": score,
            "std_score": 0.03,
            "fit_time": 0.5,
            "iteration": iteration,
            "n_resources": 100 if chunk is not None else 300,
            "rank": rank,
            "chunk": chunk,
        }

    # C=0.1 is met first (its chunk), but the final round ranked C=100 first among equals.
    search = {
        "candidates": [
            row(0.1, 0.90, 0, 1, 0),
            row(100.0, 0.90, 0, 1, 1),
            row(100.0, 0.956, 1, 1, None),
            row(0.1, 0.956, 1, 2, None),
        ]
    }
    assert [r[0] for r in candidate_rows(search)] == ["C=100.0", "C=0.1"]
