"""The SVM search space, its successive-halving search and the final model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.model_selection import StratifiedKFold

from modules.errors import ConfigurationError
from modules.models.svm import (
    SvmTuningResult,
    build_svm_model,
    fit_svm_model,
    search_space,
    select_candidates,
    tune_svm,
)


@pytest.fixture(scope="module")
def tiny() -> tuple[pd.DataFrame, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    X, y = make_classification(
        n_samples=120, n_features=10, n_informative=6, n_classes=3, n_clusters_per_class=1, random_state=0
    )
    labels = np.array(["NEGATIVE", "NEUTRAL", "POSITIVE"])[y]
    folds = list(StratifiedKFold(n_splits=3, shuffle=True, random_state=0).split(X, labels))
    return pd.DataFrame(X, columns=[f"f{i}" for i in range(10)]), labels, folds


def test_search_space_has_36_distinct_candidates_without_gamma_for_linear() -> None:
    space = search_space()
    assert len(space) == 36
    assert len({json.dumps(c, sort_keys=True) for c in space}) == 36
    kernels = [c["kernel"] for c in space]
    assert (kernels.count("linear"), kernels.count("rbf"), kernels.count("poly")) == (4, 16, 16)
    assert all("gamma" not in c for c in space if c["kernel"] == "linear")


def test_candidate_budget_is_a_deterministic_subset_that_tries_every_kernel() -> None:
    three = select_candidates(3, seed=7)
    assert three == select_candidates(3, seed=7)
    assert sorted(c["kernel"] for c in three) == ["linear", "poly", "rbf"]
    ten = select_candidates(10, seed=7)
    assert len(ten) == 10 and all(c in search_space() for c in ten)
    assert select_candidates(48) == search_space()
    with pytest.raises(ConfigurationError, match="max_candidates=0"):
        select_candidates(0)


def test_tune_svm_reports_best_params_cv_scores_and_every_candidate(tiny) -> None:
    X, y, folds = tiny
    lines: list[str] = []
    result = tune_svm(X, y, folds, max_candidates=6, n_jobs=2, seed=3, progress=lines.append)

    chosen = select_candidates(6, seed=3)
    assert result.n_candidates == 6
    assert result.best_params in chosen
    first_round = [c for c in result.candidates if c.iteration == 0]
    assert sorted(json.dumps(c.params, sort_keys=True) for c in first_round) == sorted(
        json.dumps(c, sort_keys=True) for c in chosen
    )
    for candidate in result.candidates:
        assert 0.0 <= candidate.mean_score <= 1.0
        assert candidate.std_score >= 0.0
        assert candidate.fit_time > 0.0
        assert candidate.n_resources > 0
    # The best is the top of the last iteration and carries its CV mean/std.
    last = max(c.iteration for c in result.candidates)
    top = max((c for c in result.candidates if c.iteration == last), key=lambda c: c.mean_score)
    assert top.params == result.best_params and top.rank == 1
    assert (result.cv_mean, result.cv_std) == (top.mean_score, top.std_score)
    assert result.n_fits == len(result.candidates) * len(folds)
    assert [i["n_candidates"] for i in result.iterations] == [
        sum(1 for c in result.candidates if c.iteration == k) for k in range(result.n_iterations)
    ]
    assert result.scoring == "accuracy"
    # One line per iteration start and end, plus a header and the result: no flood.
    assert len(lines) == 2 * result.n_iterations + 2
    assert "1/" in lines[1] and "candidates" in lines[1]

    data = json.loads(json.dumps(result.to_dict()))
    assert SvmTuningResult.from_dict(data) == result


def test_tune_svm_is_repeatable_with_the_same_seed(tiny) -> None:
    X, y, folds = tiny
    first = tune_svm(X, y, folds, max_candidates=4, n_jobs=1, seed=5, progress=None)
    second = tune_svm(X, y, folds, max_candidates=4, n_jobs=1, seed=5, progress=None)
    assert first.best_params == second.best_params
    assert [c.mean_score for c in first.candidates] == [c.mean_score for c in second.candidates]


def test_tune_svm_with_pca_uses_the_same_preprocessing_config(tiny) -> None:
    X, y, folds = tiny
    result = tune_svm(X, y, folds, max_candidates=3, pca_variance=0.9, n_jobs=2, progress=None)
    assert result.pca_variance == 0.9
    assert result.best_params in search_space()


def test_final_svm_model_gives_probabilities_in_class_order(tiny) -> None:
    X, y, _ = tiny
    model = build_svm_model({"kernel": "rbf", "C": 10.0, "gamma": 0.1}, seed=1)
    model.fit(X, y)
    assert list(model.classes_) == ["NEGATIVE", "NEUTRAL", "POSITIVE"]
    svc = model.named_steps["svc"].estimator
    assert (svc.kernel, svc.C, svc.gamma) == ("rbf", 10.0, 0.1)
    proba = model.predict_proba(X)
    assert proba.shape == (120, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(model.predict(X), model.classes_[proba.argmax(axis=1)])
    assert np.mean(model.predict(X) == y) > 0.8
    # Fitted on the DataFrame: it knows its input columns (for batch scoring and serving).
    assert list(model.feature_names_in_) == list(X.columns)


def test_fit_svm_model_matches_build_then_fit(tiny) -> None:
    X, y, _ = tiny
    params = {"kernel": "linear", "C": 1.0}
    threaded = fit_svm_model(params, X, y, seed=2, n_jobs=2)
    sequential = build_svm_model(params, seed=2).fit(X, y)
    np.testing.assert_allclose(threaded.predict_proba(X), sequential.predict_proba(X))
