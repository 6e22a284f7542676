"""How the server scores with the project's models and follows an alias, without a registry."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

from modules.errors import ConfigurationError
from modules.models.preprocessing import build_preprocessor
from modules.serving import app
from modules.serving.app import AliasFollower, ServedModel, _fitted_columns, _scorers
from tests.commands import run_command

COLUMNS = ["a_a", "b_a", "c_b"]


class _PyFunc:
    def __init__(self, raw):
        self.raw = raw

    def unwrap_python_model(self):
        return self.raw

    def predict(self, frame):
        raise AssertionError("the server scores without MLflow's per-column checks")


def _served(pyfunc) -> ServedModel:
    labels_of, probabilities_of, classes = _scorers(pyfunc)
    fitted = _fitted_columns(pyfunc)
    return ServedModel(
        "m",
        "1",
        None,
        None,
        COLUMNS,
        classes,
        pyfunc,
        labels_of,
        probabilities_of,
        takes_values=fitted == COLUMNS,
    )


@pytest.fixture
def rows() -> pd.DataFrame:
    return pd.DataFrame(np.random.default_rng(0).normal(size=(40, 3)), columns=COLUMNS)


def test_the_svm_pipeline_is_called_with_values_and_gives_its_own_answers(rows):
    y = np.where(rows["a_a"] > 0, "POSITIVE", "NEGATIVE")
    pipeline = Pipeline([("preprocess", build_preprocessor()), ("clf", LogisticRegression())]).fit(rows, y)
    served = _served(_PyFunc(SimpleNamespace(_pipeline=pipeline)))
    assert served.takes_values and served.classes == ["NEGATIVE", "POSITIVE"]
    labels, probabilities = served.score(rows)
    assert labels.tolist() == pipeline.predict(rows).tolist()
    np.testing.assert_allclose(probabilities, pipeline.predict_proba(rows))


def test_a_calibrated_classifier_is_scored_in_one_pass_with_the_same_labels(rows):
    y = np.where(rows["a_a"] + 0.5 * rows["b_a"] > 0, "POSITIVE", "NEGATIVE")
    calibrated = CalibratedClassifierCV(SVC(kernel="linear"), cv=3, ensemble=False)
    pipeline = Pipeline([("preprocess", build_preprocessor()), ("svc", calibrated)]).fit(rows, y)
    served = _served(_PyFunc(SimpleNamespace(_pipeline=pipeline)))
    assert served.labels_of is None  # the labels come from the probabilities
    assert served.score(rows)[0].tolist() == pipeline.predict(rows).tolist()


def test_a_pipeline_fitted_on_other_columns_gets_the_frame(rows):
    other = rows.rename(columns={"a_a": "zz"})
    pipeline = Pipeline([("clf", LogisticRegression())]).fit(other, other["zz"] > 0)
    assert not _served(_PyFunc(SimpleNamespace(_pipeline=pipeline))).takes_values


def test_the_dnn_labels_are_the_most_probable_class(rows):
    class _Network:
        def predict_on_batch(self, features):
            assert features.dtype == np.float32
            return np.column_stack([features[:, 0], -features[:, 0], np.zeros(len(features))])

    raw = SimpleNamespace(
        _classes=np.asarray(["HIGH", "LOW", "MID"]),
        _model=_Network(),
        _preprocessor=SimpleNamespace(transform=lambda X: np.asarray(X)),
        predict_proba=lambda X: None,
    )
    labels, probabilities = _served(_PyFunc(raw)).score(rows)
    assert labels.tolist() == np.where(rows["a_a"] > 0, "HIGH", "LOW").tolist()
    assert probabilities.shape == (40, 3)


def test_the_follower_keeps_serving_when_a_new_version_is_refused(monkeypatch):
    alias = {"version": "1"}
    monkeypatch.setattr(app, "alias_version", lambda name, which: alias["version"])
    attempts: list[str] = []

    def load(name: str, version: str) -> ServedModel:
        attempts.append(version)
        if version == "2":
            raise app.TrackingError("model m v2: artifact digest mismatch; refusing to load")
        return SimpleNamespace(version=version)

    follower = AliasFollower("m", "champion", 0, load)
    assert follower.load_now().version == "1"
    assert follower.refresh() is False  # the alias has not moved
    alias["version"] = "2"
    with pytest.raises(app.TrackingError):
        follower.refresh()
    assert follower.current.version == "1" and follower.reload_failures == 1
    assert "digest mismatch" in follower.state()["last_error"]
    assert follower.refresh() is False  # not retried on every poll
    alias["version"] = "3"
    assert follower.refresh() is True and follower.current.version == "3"
    assert attempts == ["1", "2", "3"]


# ------------------------------------------------------------------ where the server may listen


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_addresses_need_no_opt_in(host):
    app.check_serve_bind(host, {})


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "serving.example.com"])
@pytest.mark.parametrize("flag", [None, "", "0", "no"])
def test_other_addresses_are_refused_without_the_container_opt_in(host, flag):
    env = {} if flag is None else {"SERVE_ALLOW_PUBLIC_BIND": flag}
    with pytest.raises(
        ConfigurationError, match=rf"SERVE_HOST={re.escape(host)} .*SERVE_ALLOW_PUBLIC_BIND=1"
    ):
        app.check_serve_bind(host, env)


@pytest.mark.parametrize("flag", ["1", "true", "YES"])
def test_the_container_opt_in_admits_every_address(flag):
    app.check_serve_bind("0.0.0.0", {"SERVE_ALLOW_PUBLIC_BIND": flag})


def test_the_command_refuses_a_public_bind_before_it_reaches_the_registry(monkeypatch):
    monkeypatch.delenv("SERVE_ALLOW_PUBLIC_BIND", raising=False)
    reached = []
    monkeypatch.setattr("modules.tracking.client.connect", lambda *a, **k: reached.append("connect"))
    with pytest.raises(ConfigurationError, match=re.escape("SERVE_HOST=0.0.0.0 ")):
        run_command(app.cli, ["--host", "0.0.0.0", "--prediction-log", "off"])
    assert reached == []
