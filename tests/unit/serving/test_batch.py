"""Evaluation numbers checked by hand, prediction with any model, reports and batch scoring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modules.errors import DataValidationError
from modules.models.scoring import (
    Evaluation,
    classification_report_text,
    evaluate,
    plot_confusion_matrix,
    predict,
)
from modules.serving.batch import score_batch

Y_TRUE = ["a", "a", "b", "b", "c", "c"]
Y_PRED = ["a", "b", "b", "b", "c", "a"]


def test_evaluate_known_labels() -> None:
    evaluation = evaluate(Y_TRUE, Y_PRED)

    assert evaluation.labels == ["a", "b", "c"]
    assert evaluation.accuracy == pytest.approx(4 / 6)
    assert evaluation.confusion_matrix == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    a, b, c = (evaluation.per_class[k] for k in "abc")
    assert (a.precision, a.recall, a.f1, a.support) == (pytest.approx(0.5), 0.5, pytest.approx(0.5), 2)
    assert (b.precision, b.recall, b.f1) == (pytest.approx(2 / 3), 1.0, pytest.approx(0.8))
    assert (c.precision, c.recall, c.f1) == (1.0, 0.5, pytest.approx(2 / 3))
    assert evaluation.macro_f1 == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert evaluation.roc_auc_ovr is None
    assert evaluation.n_rows == 6
    assert evaluation.metrics("test_")["test_f1_b"] == pytest.approx(0.8)
    # JSON round trip (MLflow artifacts, Metaflow cards).
    assert Evaluation.model_validate(json.loads(evaluation.model_dump_json())) == evaluation


def test_roc_auc_from_probabilities() -> None:
    # Binary, by hand: positives score 0.35 and 0.8, negatives 0.1 and 0.4 -> 3 of 4 pairs ordered.
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
    binary = evaluate(["n", "n", "p", "p"], ["n", "n", "n", "p"], proba, labels=["n", "p"])
    assert binary.roc_auc_ovr == pytest.approx(0.75)

    # Three classes, each row's own class most probable: every one-vs-rest AUC is 1.
    perfect = np.eye(3)[[0, 0, 1, 1, 2, 2]] * 0.8 + 0.2 / 3
    assert evaluate(Y_TRUE, Y_TRUE, perfect, labels=["a", "b", "c"]).roc_auc_ovr == pytest.approx(1.0)

    # A class with no true row: its one-vs-rest AUC is undefined.
    assert (
        evaluate(
            ["a", "a", "b", "b"], ["a", "a", "b", "b"], np.full((4, 3), 1 / 3), ["a", "b", "c"]
        ).roc_auc_ovr
        is None
    )


def test_evaluate_refuses_mismatched_inputs() -> None:
    with pytest.raises(DataValidationError, match="as many predictions"):
        evaluate(["a", "b"], ["a"])
    with pytest.raises(DataValidationError, match=r"shape \(2, 2\)"):
        evaluate(["a", "b"], ["a", "b"], np.ones((2, 3)), labels=["a", "b"])


@pytest.fixture()
def fitted() -> tuple[object, pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(90, 4)), columns=["f0", "f1", "f2", "f3"])
    y = np.array(["NEGATIVE", "NEUTRAL", "POSITIVE"])[np.digitize(X["f0"] + 0.3 * X["f1"], [-0.5, 0.5])]
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y), X, y


def test_predict_with_a_sklearn_pipeline(fitted) -> None:
    model, X, y = fitted
    prediction = predict(model, X)
    assert prediction.classes == ["NEGATIVE", "NEUTRAL", "POSITIVE"]
    assert len(prediction.labels) == 90 and len(prediction.probabilities) == 90
    np.testing.assert_allclose(np.sum(prediction.probabilities, axis=1), 1.0)
    assert np.mean(np.asarray(prediction.labels) == y) > 0.8


class LabelsOnly:
    """Like an MLflow pyfunc model: predict() returns a DataFrame of labels, no probabilities."""

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"label": np.where(X["f0"] > 0, "POSITIVE", "NEGATIVE")})


def test_predict_with_a_labels_only_model(fitted) -> None:
    _, X, _ = fitted
    prediction = predict(LabelsOnly(), X)
    assert prediction.probabilities is None and prediction.classes is None
    assert prediction.labels == np.where(X["f0"] > 0, "POSITIVE", "NEGATIVE").tolist()


def test_classification_report_text_lists_every_class() -> None:
    text = classification_report_text(evaluate(Y_TRUE, Y_PRED))
    lines = text.splitlines()
    assert lines[0].split() == ["precision", "recall", "f1-score", "support"]
    assert lines[2].split() == ["b", "0.667", "1.000", "0.800", "2"]
    assert "0.667" in next(line for line in lines if line.strip().startswith("accuracy"))
    assert "n/a" in lines[-1]


def test_plot_confusion_matrix_writes_a_png(tmp_path: Path) -> None:
    path = plot_confusion_matrix(evaluate(Y_TRUE, Y_PRED), tmp_path / "plots" / "cm.png", title="SVM")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_score_batch_writes_labels_and_probabilities(fitted, tmp_path: Path) -> None:
    model, X, y = fitted
    source = tmp_path / "rows.csv"
    # The published file's first header has numpy's "# " prefix; column order differs from training.
    frame = X[["f3", "f2", "f1", "f0"]].assign(label=y)
    frame.rename(columns={"f3": "# f3"}).to_csv(source, index=False)

    summary = score_batch(model, source, tmp_path / "out" / "scored.csv")

    scored = pd.read_csv(tmp_path / "out" / "scored.csv")
    assert list(scored.columns) == [
        "label",
        "predicted_label",
        "proba_NEGATIVE",
        "proba_NEUTRAL",
        "proba_POSITIVE",
    ]
    assert scored["predicted_label"].tolist() == model.predict(X).tolist()
    assert summary["rows"] == 90
    assert summary["accuracy"] == pytest.approx(np.mean(model.predict(X) == y))


def test_score_batch_names_missing_columns(fitted, tmp_path: Path) -> None:
    model, X, _ = fitted
    source = tmp_path / "rows.csv"
    X.drop(columns=["f2"]).to_csv(source, index=False)
    with pytest.raises(DataValidationError, match=r"rows.csv: missing feature columns f2"):
        score_batch(model, source, tmp_path / "scored.csv")
    assert not (tmp_path / "scored.csv").exists()


@pytest.fixture
def empty_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """A throwaway SQLite MLflow store that the command line's settings point at."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from modules.settings import get_settings
    from modules.tracking import client as tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    for name in ("DATA_PATH", "MODEL_NAME_PREFIX", "MLFLOW_EXPERIMENT_NAME", "REPORTS_DIR"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    tracking.connect(get_settings())
    MlflowClient().search_registered_models()  # creates the tables now: their log lines are not the CLI's
    capsys.readouterr()
    rows = tmp_path / "rows.csv"
    pd.DataFrame({"f0": [0.1, -0.2], "f1": [1.0, 2.0]}).to_csv(rows, index=False)
    yield rows
    get_settings.cache_clear()
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def run_prediction_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from modules.serving.batch import cli
    from tests.commands import exit_code

    return exit_code(cli, args), capsys.readouterr().err


@pytest.mark.slow
def test_predict_without_a_champion_says_so(
    empty_registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    client.create_registered_model("eeg-emotion-svm")
    # A version that did not pass the gate: challenger, never champion.
    version = client.create_model_version("eeg-emotion-svm", source=(tmp_path / "model").as_uri())
    client.set_registered_model_alias("eeg-emotion-svm", "challenger", version.version)

    code, err = run_prediction_cli([str(empty_registry), "--family", "svm"], capsys)

    assert code == 2
    assert err == (
        "error: no champion for eeg-emotion-svm: no version has passed the promotion gate yet "
        "(see reports/promotion.json)\n"
    )
    assert not (tmp_path / "predictions.csv").exists()


@pytest.mark.slow
def test_predict_names_the_model_of_the_dataset_when_none_is_registered(
    empty_registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_prediction_cli(
        [str(empty_registry), "--family", "dnn", "--data-path", "data/digits.csv"], capsys
    )
    assert code == 2
    assert err.startswith(
        "error: no champion for digits-dnn: no model of that name is registered in sqlite:///"
    )
    assert err.endswith("run `make train` first\n") and err.count("\n") == 1


@pytest.mark.slow
def test_predict_with_an_explicit_missing_version_keeps_the_generic_message(
    empty_registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_prediction_cli([str(empty_registry), "--model", "models:/eeg-emotion-svm/3"], capsys)
    assert code == 2
    assert err.startswith("error: cannot load models:/eeg-emotion-svm/3 from sqlite:///")
    assert err.count("\n") == 1
