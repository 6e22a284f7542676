"""One typed settings object: environment variables, then `.env`, then defaults.

Every tunable of the project is read here so that nothing else touches `os.environ`
for configuration. `.env.example` documents each variable.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import click
from dotenv import dotenv_values

from modules.errors import ConfigurationError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

SPLIT_PROTOCOLS = ("auto", "grouped", "random", "subject")
MISSING_VALUE_POLICIES = ("drop", "reject")
PIPELINE_ENVIRONMENTS = ("local", "production")

# The EEG dataset keeps the names its experiment and models have always had.
EEG_DATA_FILE = "emotions.csv"
EEG_EXPERIMENT_NAME = "eeg-emotions"
EEG_MODEL_NAME_PREFIX = "eeg-emotion"

_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no", "")


def read_environment(root: Path) -> dict[str, str]:
    """Environment variables win over `.env`, which wins over defaults."""
    values = {k: v for k, v in dotenv_values(root / ".env").items() if v is not None}
    values.update(os.environ)
    return values


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    """A whole-number variable, or `default` when unset; one-line error when it is not one."""
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigurationError(f"{name}={value} must be at least {minimum}")
    return value


def env_float(
    env: Mapping[str, str],
    name: str,
    default: float,
    low: float,
    high: float | None = None,
    *,
    low_inclusive: bool = False,
) -> float:
    """A number variable above `low` (strictly, unless `low_inclusive`) and below `high`, or `default`."""
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number") from None
    if low_inclusive:
        if not (low <= value and (high is None or value < high)):
            upper = "" if high is None else f" and below {high:g}"
            raise ConfigurationError(f"{name}={raw} must be at least {low:g}{upper}")
        return value
    if high is None and not value > low:
        raise ConfigurationError(f"{name}={raw} must be greater than {low:g}")
    if high is not None and not low < value < high:
        raise ConfigurationError(f"{name}={value} must be between {low} and {high} (exclusive)")
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A yes/no variable: 1/true/yes or 0/false/no/empty (any case), or `default` when unset."""
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(f"{name}={raw!r} must be 1/true/yes or 0/false/no")


def names_for_dataset(data_path: str | os.PathLike) -> tuple[str, str]:
    """Default (experiment name, registered-model name prefix) of a dataset file.

    The EEG dataset (`emotions.csv`) keeps `eeg-emotions` / `eeg-emotion`; any other file
    is named after its stem, made safe for MLflow registered-model names (lowercase,
    characters other than letters, digits, `-`, `_` and `.` become `-`): `digits.csv` ->
    (`digits`, `digits`), whose models are `digits-svm` and `digits-dnn`.
    """
    path = Path(data_path)
    if path.name == EEG_DATA_FILE:
        return EEG_EXPERIMENT_NAME, EEG_MODEL_NAME_PREFIX
    # Accents dropped first (`Émotions` -> `emotions`), then anything else becomes `-`.
    ascii_stem = unicodedata.normalize("NFKD", path.stem).encode("ascii", "ignore").decode()
    name = re.sub(r"[^a-z0-9\-_.]", "-", ascii_stem.lower())
    name = re.sub(r"-{2,}", "-", name).strip("-.") or "dataset"
    return name, name


def _as_choice(env: dict[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in choices:
        raise ConfigurationError(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value


def _as_path(env: dict[str, str], name: str, default: Path, root: Path) -> Path:
    raw = env.get(name)
    path = Path(raw).expanduser() if raw else default
    return path if path.is_absolute() else root / path


def _at_most(env: Mapping[str, str], name: str, value: int, maximum: int) -> int:
    if value > maximum:
        raise ConfigurationError(f"{name}={env.get(name)} must be at most {maximum}")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with embedded defaults that need no cloud account."""

    project_root: Path
    # Data
    data_path: Path
    label_column: str
    missing_values: str
    reports_dir: Path
    # Splitting
    split_protocol: str
    test_size: float
    cv_folds: int
    seed: int
    # Tuning budgets
    svm_max_candidates: int
    svm_n_jobs: int
    dnn_max_trials: int
    dnn_max_epochs: int
    pca_variance: float | None
    # Tracking
    mlflow_tracking_uri: str
    mlflow_artifact_root: str
    experiment_name: str
    model_name_prefix: str
    # Tracking server (`make mlflow_server`)
    mlflow_host: str
    mlflow_port: int
    run_dir: Path
    postgres: dict[str, str] = field(default_factory=dict)
    # Drift monitoring (modules.monitoring): a column drifts when its BH-corrected KS p-value is
    # below drift_alpha and its PSI at least drift_psi_floor; retrain when at least
    # drift_share_threshold of the columns drift, the predicted-label mix drifts, or the live
    # accuracy (drift_min_feedback_rows labelled rows or more) falls below the champion's test
    # accuracy minus drift_accuracy_tolerance.
    drift_alpha: float = 0.01
    drift_psi_floor: float = 0.1
    drift_share_threshold: float = 0.2
    drift_accuracy_tolerance: float = 0.05
    drift_min_feedback_rows: int = 30
    # Environment and promotion
    pipeline_env: str = "local"
    # The manifest that pins the production dataset's sha256 (DATA_MANIFEST; data/manifest.json).
    data_manifest: Path | None = None
    promotion_min_margin: float = 0.10
    allow_schema_change: bool = False
    # MLFLOW_EXPERIMENT_NAME / MODEL_NAME_PREFIX when set: they win over the dataset's names.
    experiment_name_override: str | None = None
    model_name_prefix_override: str | None = None
    # Online serving (`make serve`): loopback address, request size limit, alias poll interval.
    serve_host: str = "127.0.0.1"
    serve_port: int = 8080
    serve_max_body_bytes: int = 16 * 1024 * 1024
    serve_poll_s: int = 30
    # Prediction log of served requests and `make predict` batches (SQLite), rows kept per batch.
    prediction_log_path: Path | None = None
    prediction_log_sample_rows: int = 100
    # PREDICTION_LOG_URI: where the log goes instead of that file (a path, sqlite:///PATH, or
    # postgresql://USER@HOST:PORT/DB in production); its password is postgres["prediction_log_password"].
    prediction_log_uri: str = ""
    # Tracking calls during an outage: retries per request, backoff factor, seconds per attempt.
    tracking_max_retries: int = 3
    tracking_backoff_factor: int = 1
    tracking_timeout_s: int = 10
    # Promotion is serialised per registered model by a lease: held at most this long, waited for at most that.
    promotion_lease_ttl_s: int = 120
    promotion_lease_wait_s: int = 300
    # MODEL_FAMILIES: the model families TuningFlow tunes (empty: every registered one); the flows
    # check the names against the registry (`modules.models.families`).
    model_families: tuple[str, ...] = ()
    # SEARCH_CHUNKS: into how many parallel parts (Metaflow foreach branches, pods on Kubernetes)
    # TuningFlow splits each family's search; 1 (the default) searches each family in one step.
    search_chunks: int = 1

    @property
    def is_production(self) -> bool:
        """True when PIPELINE_ENV=production: data must match the pinned manifest digest."""
        return self.pipeline_env == "production"

    def for_data(self, data_path: str | os.PathLike) -> Settings:
        """These settings for another dataset (a flow's `--data-path`): its path and default names.

        A relative path is taken relative to the project folder, as DATA_PATH is.
        """
        path = Path(data_path).expanduser()
        path = path if path.is_absolute() else self.project_root / path
        experiment, prefix = names_for_dataset(path)
        return replace(
            self,
            data_path=path,
            experiment_name=self.experiment_name_override or experiment,
            model_name_prefix=self.model_name_prefix_override or prefix,
        )

    @property
    def uses_postgres(self) -> bool:
        """True when every POSTGRES_* connection value is set."""
        return all(self.postgres.get(k) for k in ("host", "port", "db", "user", "password"))

    @property
    def prediction_log_target(self) -> str:
        """Where the prediction log goes: PREDICTION_LOG_URI, else the SQLite file PREDICTION_LOG_PATH."""
        return self.prediction_log_uri or str(self.prediction_log_path)

    def model_name(self, family: str) -> str:
        """Registered model name of one model family, e.g. `eeg-emotion-svm`."""
        return f"{self.model_name_prefix}-{family}"


def load_settings(root: Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Build the settings from `env` (default: the process environment and `.env`)."""
    root = Path(root) if root else PROJECT_ROOT
    env = read_environment(root) if env is None else env
    mlruns = root / "mlruns"
    data_path = _as_path(env, "DATA_PATH", root / "data" / EEG_DATA_FILE, root)
    experiment_name, model_name_prefix = names_for_dataset(data_path)
    pca_raw = env.get("PCA_VARIANCE", "")
    pca_variance = (
        None if pca_raw in ("", "0", "none", "off") else env_float(env, "PCA_VARIANCE", 0.0, 0.0, 1.0)
    )
    return Settings(
        project_root=root,
        data_path=data_path,
        label_column=env.get("LABEL_COLUMN") or "label",
        missing_values=_as_choice(env, "MISSING_VALUES", "drop", MISSING_VALUE_POLICIES),
        reports_dir=_as_path(env, "REPORTS_DIR", root / "reports", root),
        split_protocol=_as_choice(env, "SPLIT_PROTOCOL", "auto", SPLIT_PROTOCOLS),
        test_size=env_float(env, "TEST_SIZE", 0.2, 0.0, 1.0),
        cv_folds=env_int(env, "CV_FOLDS", 5, minimum=2),
        seed=env_int(env, "SEED", 42),
        svm_max_candidates=env_int(env, "SVM_MAX_CANDIDATES", 48, minimum=1),
        svm_n_jobs=env_int(env, "SVM_N_JOBS", 2, minimum=1),
        dnn_max_trials=env_int(env, "DNN_MAX_TRIALS", 4, minimum=1),
        dnn_max_epochs=env_int(env, "DNN_MAX_EPOCHS", 15, minimum=1),
        pca_variance=pca_variance,
        mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{mlruns / 'mlflow.db'}",
        mlflow_artifact_root=env.get("MLFLOW_ARTIFACT_ROOT") or str(mlruns / "artifacts"),
        experiment_name=env.get("MLFLOW_EXPERIMENT_NAME") or experiment_name,
        model_name_prefix=env.get("MODEL_NAME_PREFIX") or model_name_prefix,
        mlflow_host=env.get("MLFLOW_HOST") or "127.0.0.1",
        mlflow_port=env_int(env, "MLFLOW_PORT", 5000, minimum=1),
        run_dir=_as_path(env, "RUN_DIR", root / ".run", root),
        postgres={
            "host": env.get("POSTGRES_HOST", ""),
            "port": env.get("POSTGRES_PORT", "5432"),
            "db": env.get("POSTGRES_DB", ""),
            "user": env.get("POSTGRES_USER", ""),
            "password": env.get("POSTGRES_PASSWORD", ""),
            # The prediction log's: this process's role, and the two roles `make db_init` creates.
            "prediction_log_password": env.get("PREDICTION_LOG_PASSWORD", ""),
            "prediction_writer_password": env.get("PREDICTION_WRITER_PASSWORD", ""),
            "prediction_reader_password": env.get("PREDICTION_READER_PASSWORD", ""),
        },
        drift_alpha=env_float(env, "DRIFT_ALPHA", 0.01, 0.0, 1.0),
        drift_psi_floor=env_float(env, "DRIFT_PSI_FLOOR", 0.1, 0.0, low_inclusive=True),
        drift_share_threshold=env_float(env, "DRIFT_SHARE_THRESHOLD", 0.2, 0.0, 1.0),
        drift_accuracy_tolerance=env_float(
            env, "DRIFT_ACCURACY_TOLERANCE", 0.05, 0.0, 1.0, low_inclusive=True
        ),
        drift_min_feedback_rows=env_int(env, "DRIFT_MIN_FEEDBACK_ROWS", 30, minimum=1),
        pipeline_env=_as_choice(env, "PIPELINE_ENV", "local", PIPELINE_ENVIRONMENTS),
        data_manifest=_as_path(env, "DATA_MANIFEST", root / "data" / "manifest.json", root),
        promotion_min_margin=env_float(env, "PROMOTION_MIN_MARGIN", 0.10, 0.0, 1.0, low_inclusive=True),
        allow_schema_change=env_bool(env, "ALLOW_SCHEMA_CHANGE", False),
        experiment_name_override=env.get("MLFLOW_EXPERIMENT_NAME") or None,
        model_name_prefix_override=env.get("MODEL_NAME_PREFIX") or None,
        serve_host=env.get("SERVE_HOST") or "127.0.0.1",
        serve_port=env_int(env, "SERVE_PORT", 8080, minimum=1),
        serve_max_body_bytes=env_int(env, "SERVE_MAX_BODY_BYTES", 16 * 1024 * 1024, minimum=1024),
        serve_poll_s=env_int(env, "SERVE_POLL_S", 30, minimum=1),
        prediction_log_path=_as_path(
            env, "PREDICTION_LOG_PATH", root / "predictions" / "predictions.db", root
        ),
        prediction_log_sample_rows=env_int(env, "PREDICTION_LOG_SAMPLE_ROWS", 100, minimum=1),
        prediction_log_uri=env.get("PREDICTION_LOG_URI", "").strip(),
        tracking_max_retries=_at_most(
            env, "TRACKING_MAX_RETRIES", env_int(env, "TRACKING_MAX_RETRIES", 3), 10
        ),
        tracking_backoff_factor=env_int(env, "TRACKING_BACKOFF_FACTOR", 1),
        tracking_timeout_s=env_int(env, "TRACKING_TIMEOUT_S", 10, minimum=1),
        promotion_lease_ttl_s=env_int(env, "PROMOTION_LEASE_TTL_S", 120, minimum=5),
        promotion_lease_wait_s=env_int(env, "PROMOTION_LEASE_WAIT_S", 300, minimum=0),
        model_families=tuple(n.strip() for n in env.get("MODEL_FAMILIES", "").split(",") if n.strip()),
        search_chunks=env_int(env, "SEARCH_CHUNKS", 1, minimum=1),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once."""
    return load_settings()


@click.group(
    "settings",
    help="Print a setting as resolved from the environment, then .env, then the defaults.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
def cli() -> None:
    """`python -m modules settings get NAME` (the Makefile's source of resolved settings)."""


@cli.command("get", short_help="print one setting, e.g. `get reports_dir`")
@click.argument("name")
def get_command(name: str) -> None:
    """Print one setting NAME, a field of the settings such as data_path, reports_dir or label_column."""
    settings = load_settings()
    if name not in Settings.__dataclass_fields__ or name == "postgres":
        raise ConfigurationError(
            f"unknown setting {name!r}; expected a field such as data_path or reports_dir"
        )
    print(getattr(settings, name))
