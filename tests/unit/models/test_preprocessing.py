"""The preprocessor drops duplicate/constant columns learned from training rows only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.model_selection import cross_validate
from sklearn.pipeline import Pipeline

from modules.errors import ConfigurationError, DataValidationError
from modules.models.preprocessing import (
    DropDuplicateAndConstantColumns,
    build_preprocessor,
    describe_preprocessor,
)


def _frame(rows: int = 40, seed: int = 0) -> pd.DataFrame:
    """Columns: row_id, a, b, a_copy (== a), constant, c."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=rows)
    return pd.DataFrame(
        {
            "row_id": np.arange(rows, dtype=float),
            "a": a,
            "b": rng.normal(size=rows) * 1000,
            "a_copy": a.copy(),
            "constant": np.full(rows, 7.0),
            "c": rng.normal(size=rows),
        }
    )


def test_duplicates_and_constants_are_dropped_and_counted() -> None:
    frame = _frame()
    preprocessor = build_preprocessor().fit(frame)
    out = preprocessor.transform(frame)

    assert isinstance(out, np.ndarray)
    assert out.shape == (40, 4)
    dedup = preprocessor.named_steps["drop_duplicate_constant"]
    assert list(dedup.get_feature_names_out()) == ["row_id", "a", "b", "c"]
    assert dedup.duplicate_of_ == {3: 1}
    assert describe_preprocessor(preprocessor) == {
        "n_input_columns": 6,
        "n_constant_columns": 1,
        "n_duplicate_columns": 1,
        "n_after_dedup": 4,
        "pca_variance": None,
        "n_after_pca": None,
        "pca_explained_variance": None,
        "n_output_columns": 4,
    }
    # Standardised on the fit rows.
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-12)


def test_columns_to_drop_are_learned_from_the_training_rows_only() -> None:
    frame = _frame(rows=30)
    train, test = frame.iloc[:20].copy(), frame.iloc[20:].copy()
    train["c"] = 1.5  # constant in train, varies in test
    train["b"] = train["a"]  # a copy of `a` in train only
    test["a_copy"] = test["a"] + 1.0  # no longer a copy in test: irrelevant, decided on train

    dedup = DropDuplicateAndConstantColumns().fit(train)
    kept = list(dedup.get_feature_names_out())
    assert kept == ["row_id", "a"]
    assert dedup.transform(test).shape == (10, 2)
    np.testing.assert_array_equal(dedup.transform(test), test[["row_id", "a"]].to_numpy())


def test_preprocessor_in_each_cv_fold_sees_only_that_folds_training_rows() -> None:
    frame = _frame(rows=60)
    labels = np.array(["x", "y", "z"] * 20)
    folds = [
        (np.arange(0, 40), np.arange(40, 60)),
        (np.arange(20, 60), np.arange(0, 20)),
        (np.r_[0:20, 40:60], np.arange(20, 40)),
    ]
    # In the fold whose training rows are 0..39, column `c` is constant: it must be dropped
    # there and only there.
    frame.loc[:39, "c"] = 3.0
    pipeline = Pipeline([("preprocess", build_preprocessor()), ("model", DummyClassifier())])

    results = cross_validate(pipeline, frame, labels, cv=folds, return_estimator=True)

    for (train, _), fitted in zip(folds, results["estimator"], strict=True):
        preprocess = fitted.named_steps["preprocess"]
        scaler = preprocess.named_steps["scale"]
        kept = list(preprocess.named_steps["drop_duplicate_constant"].get_feature_names_out())
        assert scaler.n_samples_seen_ == len(train)
        # The scaler's mean of `row_id` is the mean of exactly this fold's training rows.
        assert scaler.mean_[kept.index("row_id")] == pytest.approx(train.mean())
        np.testing.assert_allclose(scaler.mean_, frame.iloc[train][kept].mean().to_numpy())
        assert ("c" in kept) == (train.max() >= 40)


def test_pca_keeps_the_requested_share_of_variance() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(size=(80, 3))
    # 12 columns that are noisy mixtures of 3 sources: a few components explain them.
    frame = pd.DataFrame(base @ rng.normal(size=(3, 12)) + 0.01 * rng.normal(size=(80, 12)))
    preprocessor = build_preprocessor(pca_variance=0.95).fit(frame)
    description = describe_preprocessor(preprocessor)

    assert description["n_after_dedup"] == 12
    assert description["n_after_pca"] == 3
    assert description["pca_explained_variance"] >= 0.95
    assert preprocessor.transform(frame).shape == (80, 3)


@pytest.mark.parametrize("value", [1.0, 1.5, -0.2])
def test_pca_variance_outside_zero_one_is_refused(value: float) -> None:
    with pytest.raises(ConfigurationError, match="pca_variance"):
        build_preprocessor(pca_variance=value)


def test_all_constant_training_rows_are_refused_with_a_clear_message() -> None:
    with pytest.raises(DataValidationError, match="all 3 feature columns are constant"):
        DropDuplicateAndConstantColumns().fit(np.ones((5, 3)))


def test_signed_zero_and_nan_compare_as_equal_values() -> None:
    values = np.array([[0.0, -0.0, np.nan, np.nan], [1.0, 1.0, 2.0, 2.0], [2.0, 2.0, np.nan, np.nan]])
    dedup = DropDuplicateAndConstantColumns().fit(values)
    assert dedup.keep_indices_.tolist() == [0, 2]
