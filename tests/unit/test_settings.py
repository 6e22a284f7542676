"""modules.settings: environment over `.env` over defaults, and one-line errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from modules.errors import ConfigurationError
from modules.settings import load_settings, names_for_dataset


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
        ({"PIPELINE_ENV": "staging"}, "PIPELINE_ENV='staging' must be one of local, production"),
        ({"PROMOTION_MIN_MARGIN": "-0.1"}, "PROMOTION_MIN_MARGIN=-0.1 must be at least 0 and below 1"),
        ({"PROMOTION_MIN_MARGIN": "1"}, "PROMOTION_MIN_MARGIN=1 must be at least 0 and below 1"),
        ({"PROMOTION_MIN_MARGIN": "ten"}, "PROMOTION_MIN_MARGIN='ten' is not a number"),
        ({"ALLOW_SCHEMA_CHANGE": "maybe"}, "ALLOW_SCHEMA_CHANGE='maybe' must be 1/true/yes or 0/false/no"),
        ({"TRACKING_MAX_RETRIES": "11"}, "TRACKING_MAX_RETRIES=11 must be at most 10"),
        ({"TRACKING_MAX_RETRIES": "-1"}, "TRACKING_MAX_RETRIES=-1 must be at least 0"),
        ({"TRACKING_TIMEOUT_S": "0"}, "TRACKING_TIMEOUT_S=0 must be at least 1"),
        ({"PROMOTION_LEASE_TTL_S": "1"}, "PROMOTION_LEASE_TTL_S=1 must be at least 5"),
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


def test_environment_and_promotion_defaults(tmp_path: Path):
    settings = load_settings(root=tmp_path, env={})
    assert settings.pipeline_env == "local"
    assert not settings.is_production
    assert settings.promotion_min_margin == 0.10
    assert settings.allow_schema_change is False


@pytest.mark.parametrize(
    ("env", "production", "margin", "schema_change"),
    [
        ({"PIPELINE_ENV": "production"}, True, 0.10, False),
        ({"PIPELINE_ENV": ""}, False, 0.10, False),
        ({"PROMOTION_MIN_MARGIN": "0"}, False, 0.0, False),
        ({"PROMOTION_MIN_MARGIN": "0.25"}, False, 0.25, False),
        ({"ALLOW_SCHEMA_CHANGE": "1"}, False, 0.10, True),
        ({"ALLOW_SCHEMA_CHANGE": "True"}, False, 0.10, True),
        ({"ALLOW_SCHEMA_CHANGE": "yes"}, False, 0.10, True),
        ({"ALLOW_SCHEMA_CHANGE": "no"}, False, 0.10, False),
        ({"ALLOW_SCHEMA_CHANGE": "0"}, False, 0.10, False),
        ({"ALLOW_SCHEMA_CHANGE": ""}, False, 0.10, False),
    ],
)
def test_environment_and_promotion_values(
    tmp_path: Path, env: dict[str, str], production: bool, margin: float, schema_change: bool
):
    settings = load_settings(root=tmp_path, env=env)
    assert settings.is_production is production
    assert settings.promotion_min_margin == pytest.approx(margin)
    assert settings.allow_schema_change is schema_change


def test_tracking_and_lease_settings(tmp_path: Path):
    defaults = load_settings(root=tmp_path, env={})
    assert (defaults.tracking_max_retries, defaults.tracking_backoff_factor, defaults.tracking_timeout_s) == (
        3,
        1,
        10,
    )
    assert (defaults.promotion_lease_ttl_s, defaults.promotion_lease_wait_s) == (120, 300)
    env = {
        "TRACKING_MAX_RETRIES": "0",
        "TRACKING_BACKOFF_FACTOR": "2",
        "TRACKING_TIMEOUT_S": "30",
        "PROMOTION_LEASE_TTL_S": "60",
        "PROMOTION_LEASE_WAIT_S": "0",
    }
    settings = load_settings(root=tmp_path, env=env)
    assert (settings.tracking_max_retries, settings.tracking_backoff_factor, settings.tracking_timeout_s) == (
        0,
        2,
        30,
    )
    assert (settings.promotion_lease_ttl_s, settings.promotion_lease_wait_s) == (60, 0)


def test_dotenv_sets_the_pipeline_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / ".env").write_text("PIPELINE_ENV=production\nALLOW_SCHEMA_CHANGE=true\n")
    for name in ("PIPELINE_ENV", "ALLOW_SCHEMA_CHANGE"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(root=tmp_path)
    assert settings.is_production and settings.allow_schema_change


@pytest.mark.parametrize(
    ("data_path", "names"),
    [
        ("data/emotions.csv", ("eeg-emotions", "eeg-emotion")),
        ("/elsewhere/emotions.csv", ("eeg-emotions", "eeg-emotion")),
        ("data/digits.csv", ("digits", "digits")),
        ("My Data (v2).CSV", ("my-data-v2", "my-data-v2")),
        ("wine_quality.v1.csv", ("wine_quality.v1", "wine_quality.v1")),
        ("Émotions été.csv", ("emotions-ete", "emotions-ete")),
        ("???.csv", ("dataset", "dataset")),
    ],
)
def test_names_follow_the_dataset(data_path: str, names: tuple[str, str]):
    assert names_for_dataset(data_path) == names


def test_default_names_follow_data_path(tmp_path: Path):
    eeg = load_settings(root=tmp_path, env={})
    assert (eeg.experiment_name, eeg.model_name("svm")) == ("eeg-emotions", "eeg-emotion-svm")
    digits = load_settings(root=tmp_path, env={"DATA_PATH": "data/digits.csv"})
    assert digits.experiment_name == "digits"
    assert (digits.model_name("svm"), digits.model_name("dnn")) == ("digits-svm", "digits-dnn")


def test_names_set_in_the_environment_win(tmp_path: Path):
    env = {"DATA_PATH": "digits.csv", "MLFLOW_EXPERIMENT_NAME": "exp", "MODEL_NAME_PREFIX": "pr"}
    settings = load_settings(root=tmp_path, env=env)
    assert (settings.experiment_name, settings.model_name("svm")) == ("exp", "pr-svm")
    # Also for a data path given on a flow's command line.
    other = settings.for_data("data/emotions.csv")
    assert (other.experiment_name, other.model_name("dnn")) == ("exp", "pr-dnn")


def test_for_data_follows_a_command_line_data_path(tmp_path: Path):
    settings = load_settings(root=tmp_path, env={"SEED": "7"})
    digits = settings.for_data("data/digits.csv")
    assert digits.data_path == tmp_path / "data" / "digits.csv"
    assert (digits.experiment_name, digits.model_name("svm")) == ("digits", "digits-svm")
    assert digits.seed == 7
    # Back to the EEG data: its names come back, and the original settings are unchanged.
    eeg = digits.for_data(tmp_path / "emotions.csv")
    assert (eeg.data_path, eeg.experiment_name, eeg.model_name("svm")) == (
        tmp_path / "emotions.csv",
        "eeg-emotions",
        "eeg-emotion-svm",
    )
    assert settings.model_name("svm") == "eeg-emotion-svm"
    # Only one of the two names set: the other still follows the data.
    half = load_settings(root=tmp_path, env={"MODEL_NAME_PREFIX": "pr"}).for_data("digits.csv")
    assert (half.experiment_name, half.model_name("svm")) == ("digits", "pr-svm")
