"""The model-family registry, a throwaway family added through the interface alone, and the logistic family."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.dummy import DummyClassifier
from sklearn.pipeline import Pipeline

from modules.data.splitting import cv_folds
from modules.errors import ConfigurationError
from modules.models.evaluation import CrossValidation
from modules.models.families import (
    ModelFamily,
    TuningContext,
    TuningOutcome,
    family_names,
    get_family,
    plot_search_scores,
    register,
    select_families,
    unregister,
)
from modules.models.halving import halving_search
from modules.models.integrity import untrusted_types
from modules.models.preprocessing import build_preprocessor
from modules.models.reports import dnn_trial_rows, figure_png
from modules.models.training import PreparedData, TrainedModel, prepare_data, train_pipeline
from modules.settings import load_settings
from modules.tracking import client as tracking

LABELS = np.array(["NEGATIVE", "NEUTRAL", "POSITIVE"])


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    """A small learnable three-class CSV, loaded and split as the flows do (random rows)."""
    X, y = make_classification(
        n_samples=150, n_features=8, n_informative=5, n_classes=3, n_clusters_per_class=1, random_state=0
    )
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(8)]).assign(label=LABELS[y])
    path = tmp_path_factory.mktemp("families") / "rows.csv"
    frame.to_csv(path, index=False)
    return prepare_data(path, "label", protocol="random", test_size=0.2, cv_folds_count=3, seed=0)


CONTEXT = TuningContext(cv_folds=3, pca_variance=None, seed=0, n_jobs=1)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[None]:
    """A temporary SQLite MLflow store with an experiment, as the flows' tracking sees it."""
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "MLFLOW_EXPERIMENT_NAME": "families",
    }
    settings = load_settings(root=tmp_path, env=env)
    tracking.connect(settings)
    tracking.ensure_experiment(settings)
    yield
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


# --------------------------------------------------------------------------- a throwaway family
class PriorFamily(ModelFamily):
    """Predicts the class prior: the smallest family there can be, written against the interface only."""

    name = "prior"
    title = "Prior"
    search_title = "Prior candidates"

    def tune(self, data: PreparedData, context: TuningContext) -> TuningOutcome:
        folds = cv_folds(data.split, data.dataset.labels, n_splits=context.cv_folds, seed=context.seed)
        result = halving_search(
            DummyClassifier(),
            [{"strategy": "prior"}, {"strategy": "most_frequent"}],
            data.X_train,
            data.y_train.to_numpy(),
            folds,
            step="dummy",
            label=self.name,
            n_jobs=context.n_jobs,
            seed=context.seed,
            progress=None,
        )
        best = {
            "params": result.best_params,
            "cv_accuracy": result.cv_mean,
            "cv_std": result.cv_std,
            "cv_folds": context.cv_folds,
        }
        return TuningOutcome(best=best, metrics={"cv_accuracy_mean": result.cv_mean}, search=result.to_dict())

    def train(
        self,
        data: PreparedData,
        best: dict[str, Any],
        context: TuningContext,
        *,
        cv: CrossValidation | None = None,
    ) -> TrainedModel:
        def fit(X: pd.DataFrame, y: pd.Series) -> Pipeline:
            steps = [
                ("preprocess", build_preprocessor(context.pca_variance)),
                ("dummy", DummyClassifier(**best["params"])),
            ]
            return Pipeline(steps).fit(X, y.to_numpy())

        return train_pipeline(data, self.name, fit, seed=context.seed, cv=cv)

    def log_model(self, trained: TrainedModel, input_example: Any) -> str:
        return tracking.log_sklearn_model(trained.model, input_example)


@pytest.fixture
def prior_family() -> Iterator[ModelFamily]:
    family = register(PriorFamily())
    yield family
    unregister(family.name)


def _log_register_load(family: ModelFamily, trained: TrainedModel, data: PreparedData) -> Any:
    with mlflow.start_run():
        uri = family.log_model(trained, data.X_test.head(3))
    version = tracking.register_model(uri, f"test-{family.name}", idempotency_key=f"{family.name}/1", tags={})
    return tracking.load_model(f"models:/test-{family.name}/{version}")


def test_a_family_added_through_the_interface_alone_tunes_trains_reports_and_loads(
    prior_family, data, store
) -> None:
    # Registered after the built-in families, whichever was asked for first.
    assert family_names()[:3] == ["svm", "dnn", "logistic"] and family_names()[-1] == "prior"
    assert select_families("prior") == ["prior"]
    family = get_family("prior")

    tuned = family.tune(data, CONTEXT)
    assert tuned.best["params"]["strategy"] in ("prior", "most_frequent")
    cv = CrossValidation(mean=tuned.best["cv_accuracy"], std=tuned.best["cv_std"], folds=3, protocol="random")
    trained = family.train(data, tuned.best, CONTEXT, cv=cv)

    # The shared held-out report: a prior predicts the majority class, exactly the baseline.
    report = trained.report
    assert report.evaluation.accuracy == pytest.approx(report.baseline.accuracy)
    assert report.margin_over_baseline == pytest.approx(0.0)
    assert report.interval.low <= report.evaluation.accuracy <= report.interval.high
    assert report.cross_validation.folds == 3
    assert trained.preprocessing["n_input_columns"] == 8

    model = _log_register_load(family, trained, data)
    predicted = np.asarray(model.predict(data.X_test)).astype(str)
    assert set(predicted) == {report.baseline.predicted_label}
    assert model.metadata.get_input_schema().input_names() == list(data.X_test.columns)

    # The card's table and figure come from the interface's defaults.
    headers, rows = family.search_table(tuned.search)
    assert headers[0] == "candidate" and len(rows) == 2
    assert figure_png(plot_search_scores({"prior": tuned.search})).startswith(b"\x89PNG")


def test_the_registry_lists_the_built_in_families_and_refuses_unknown_names() -> None:
    assert family_names()[:3] == ["svm", "dnn", "logistic"]
    assert select_families("") == family_names()
    assert select_families("logistic, svm") == ["svm", "logistic"]
    with pytest.raises(
        ConfigurationError, match=r"^MODEL_FAMILIES: unknown model family xgb; known: svm, dnn"
    ):
        select_families("svm,xgb")
    with pytest.raises(ConfigurationError, match="unknown model family 'xgb'"):
        get_family("xgb")
    with pytest.raises(ConfigurationError, match="must be a Python identifier"):
        register(type("Bad", (PriorFamily,), {"name": "no-dash"})())


def test_model_families_setting_is_read_as_a_list() -> None:
    assert load_settings(env={"MODEL_FAMILIES": " svm, logistic "}).model_families == ("svm", "logistic")
    assert load_settings(env={}).model_families == ()


def test_overrides_merge_into_params_and_the_dnn_epochs_stay_apart() -> None:
    best = {"params": {"C": 1.0, "kernel": "rbf"}, "cv_accuracy": 0.9}
    assert get_family("svm").apply_override(best, {"C": 0.5})["params"] == {"C": 0.5, "kernel": "rbf"}
    dnn = get_family("dnn").apply_override(
        {"params": {"layers": 1}, "epochs": 7}, {"epochs": 2, "dropout": 0.3}
    )
    assert dnn == {"params": {"layers": 1, "dropout": 0.3}, "epochs": 2}


# --------------------------------------------------------------------------- the logistic family
def test_logistic_family_tunes_c_trains_with_probabilities_beats_the_baseline_and_loads(data, store) -> None:
    from modules.models.logistic import C_VALUES

    family = get_family("logistic")
    tuned = family.tune(data, CONTEXT)
    assert tuned.best["params"]["C"] in C_VALUES
    assert 0.0 < tuned.best["cv_accuracy"] <= 1.0 and tuned.best["cv_folds"] == 3
    assert {c["params"]["C"] for c in tuned.search["candidates"]} == set(C_VALUES)
    assert tuned.metrics["cv_accuracy_mean"] == tuned.best["cv_accuracy"]

    trained = family.train(data, tuned.best, CONTEXT)
    report = trained.report
    assert report.evaluation.accuracy > report.baseline.accuracy + 0.2
    assert report.evaluation.roc_auc_ovr is not None
    probabilities = trained.model.predict_proba(data.X_test)
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    # Its skops file needs no type beyond the reviewed allowlist.
    assert untrusted_types(trained.model) == []

    model = _log_register_load(family, trained, data)
    predicted = np.asarray(model.predict(data.X_test)).astype(str)
    assert float(np.mean(predicted == data.y_test.to_numpy())) == pytest.approx(report.evaluation.accuracy)


def test_logistic_search_is_repeatable_with_the_same_seed(data) -> None:
    from modules.models.logistic import tune_logistic

    folds = cv_folds(data.split, data.dataset.labels, n_splits=3, seed=0)
    first = tune_logistic(data.X_train, data.y_train.to_numpy(), folds, n_jobs=1, seed=1, progress=None)
    second = tune_logistic(data.X_train, data.y_train.to_numpy(), folds, n_jobs=1, seed=1, progress=None)
    assert first.best_params == second.best_params
    assert [c.mean_score for c in first.candidates] == [c.mean_score for c in second.candidates]


def test_dnn_trials_sort_failed_trials_last_and_keep_a_zero_score() -> None:
    trials = [
        {"trial_id": "a", "hyperparameters": {}, "best_val_accuracy": None, "epochs_run": 0},
        {"trial_id": "b", "hyperparameters": {}, "best_val_accuracy": 0.0, "epochs_run": 1},
        {"trial_id": "c", "hyperparameters": {}, "best_val_accuracy": 0.7, "epochs_run": 3},
    ]
    assert [row[0] for row in dnn_trial_rows({"trials": trials})] == ["c", "b", "a"]
