"""modules.settings: environment over `.env` over defaults, and one-line errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from modules.errors import ConfigurationError
from modules.settings import load_settings


def test_defaults_need_nothing(tmp_path: Path):
    settings = load_settings(root=tmp_path, env={})
    assert settings.data_path == tmp_path / "data" / "emotions.csv"
    assert settings.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert settings.split_protocol == "auto"
    assert settings.pca_variance is None
    assert settings.model_name("svm") == "eeg-emotion-svm"
    assert not settings.uses_postgres


def test_environment_wins_over_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / ".env").write_text("SEED=7\nCV_FOLDS=3\nDATA_PATH=other.csv\n")
    monkeypatch.setenv("SEED", "11")
    monkeypatch.delenv("CV_FOLDS", raising=False)
    monkeypatch.delenv("DATA_PATH", raising=False)
    settings = load_settings(root=tmp_path)
    assert settings.seed == 11
    assert settings.cv_folds == 3
    assert settings.data_path == tmp_path / "other.csv"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CV_FOLDS": "five"}, "CV_FOLDS='five' is not a whole number"),
        ({"CV_FOLDS": "1"}, "CV_FOLDS=1 must be at least 2"),
        ({"TEST_SIZE": "1.5"}, "TEST_SIZE=1.5 must be between 0.0 and 1.0"),
        ({"SPLIT_PROTOCOL": "leaky"}, "SPLIT_PROTOCOL='leaky' must be one of auto, grouped, random"),
        ({"PCA_VARIANCE": "lots"}, "PCA_VARIANCE='lots' is not a number"),
    ],
)
def test_bad_values_are_named(tmp_path: Path, env: dict[str, str], message: str):
    with pytest.raises(ConfigurationError) as error:
        load_settings(root=tmp_path, env=env)
    assert str(error.value).startswith(message)


def test_postgres_needs_every_value(tmp_path: Path):
    partial = load_settings(root=tmp_path, env={"POSTGRES_HOST": "127.0.0.1", "POSTGRES_DB": "mlflow"})
    assert not partial.uses_postgres
    full = load_settings(
        root=tmp_path,
        env={
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": "5432",
            "POSTGRES_DB": "mlflow",
            "POSTGRES_USER": "mlflow",
            "POSTGRES_PASSWORD": "secret",
        },
    )
    assert full.uses_postgres
