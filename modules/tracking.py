"""MLflow glue: every MLflow call of the project goes through this module.

Layout of what a flow run leaves in MLflow:
- one experiment per task (settings.experiment_name), tagged so the UI opens on training runs;
- one parent run per Metaflow run, named after its pathspec (`TuningFlow/17`); its id is a
  Metaflow artifact and later steps reopen it with `reopen_run`;
- nested child runs per step (and per DNN trial), each tagged with the pathspec, the git
  commit, the dataset digest and source, and the split protocol;
- models logged with signature, input example and explicit pip requirements, registered
  under one name per family, with the aliases `challenger` (newest) and `champion` (serving).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from modules.data import WIDE_DATASET_COLUMNS, dataset_schema_summary
from modules.errors import TrackingError
from modules.promotion import Candidate, Champion, Schema, decide_promotion, needs_champion_score
from modules.redaction import mask_password
from modules.settings import PROJECT_ROOT, Settings
from modules.tracking_server import check_tracking_server

CHAMPION = "champion"
CHALLENGER = "challenger"
# The MLflow 3 UI opens an experiment on its GenAI pages unless told it holds models.
_EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")
# The models-from-code files logged with our models; their classes are imported from the project.
_PROJECT_PACKAGE = PROJECT_ROOT / "modules"


# --------------------------------------------------------------------------- connection
def connect(settings: Settings, *, timeout_s: float = 5.0) -> str:
    """Point MLflow at the configured store, fail fast when a server is unreachable.

    Returns the tracking URI with its password masked, for log lines.
    """
    uri = settings.mlflow_tracking_uri
    masked = mask_password(uri)
    if uri.startswith(("http://", "https://")):
        check_tracking_server(uri, timeout=timeout_s)
    elif uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return masked


def ensure_experiment(settings: Settings) -> str:
    """Create the experiment once (artifacts under the project on the embedded store)."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is None:
        location = None
        if not settings.mlflow_tracking_uri.startswith(("http://", "https://")):
            root = settings.mlflow_artifact_root
            location = root if "://" in root else Path(root).resolve().as_uri()
        try:
            experiment_id = client.create_experiment(settings.experiment_name, artifact_location=location)
        except mlflow.exceptions.MlflowException:
            # Two parallel steps may race to create it; the loser reads the winner's.
            experiment_id = client.get_experiment_by_name(settings.experiment_name).experiment_id
    else:
        experiment_id = experiment.experiment_id
    client.set_experiment_tag(experiment_id, *_EXPERIMENT_KIND_TAG)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


# --------------------------------------------------------------------------- tags and runs
def git_commit(root: Path = PROJECT_ROOT) -> str:
    """The commit the code runs from (`+dirty` when uncommitted changes exist), or `unknown`."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}+dirty" if dirty else commit


def run_tags(
    pathspec: str, *, dataset_digest: str, dataset_source: str, split_protocol: str
) -> dict[str, str]:
    """The tags every run of a flow carries."""
    return {
        "metaflow.pathspec": pathspec,
        "git.commit": git_commit(),
        "dataset.digest": dataset_digest,
        "dataset.source": dataset_source,
        "split.protocol": split_protocol,
    }


def start_parent_run(settings: Settings, run_name: str, tags: dict[str, str]) -> str:
    """Create the parent run of one flow run and return its id (reopened by later steps)."""
    experiment_id = ensure_experiment(settings)
    run = MlflowClient().create_run(experiment_id, run_name=run_name, tags=tags)
    return run.info.run_id


@contextlib.contextmanager
def reopen_run(run_id: str) -> Iterator[mlflow.ActiveRun]:
    """Reopen the parent run in a step; it ends FINISHED, or FAILED when the step raises."""
    mlflow.set_experiment(experiment_id=MlflowClient().get_run(run_id).info.experiment_id)
    with mlflow.start_run(run_id=run_id) as run:
        yield run


@contextlib.contextmanager
def step_run(parent_run_id: str, name: str, tags: dict[str, str] | None = None) -> Iterator[mlflow.ActiveRun]:
    """The run of one parallel step, nested under the parent without reopening it.

    Parallel branches never touch the parent's status (a sibling killed by Metaflow after a
    failure could otherwise leave it RUNNING); a failing step marks the parent FAILED itself.
    """
    experiment_id = MlflowClient().get_run(parent_run_id).info.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    try:
        with mlflow.start_run(run_name=name, parent_run_id=parent_run_id, tags=tags or {}) as run:
            yield run
    except BaseException:
        MlflowClient().set_terminated(parent_run_id, status="FAILED")
        raise


@contextlib.contextmanager
def child_run(name: str, tags: dict[str, str] | None = None) -> Iterator[mlflow.ActiveRun]:
    """A run nested under the active run (one per step, trial or model)."""
    with mlflow.start_run(run_name=name, nested=True, tags=tags or {}) as run:
        yield run


def log_params(params: dict[str, Any], prefix: str = "") -> None:
    """Log parameters, flattening nested dicts and stringifying values."""
    flat = {f"{prefix}{k}": (json.dumps(v) if isinstance(v, dict | list) else v) for k, v in params.items()}
    mlflow.log_params(flat)


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Log numeric metrics; None values are skipped."""
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None}, step=step)


def log_history(history: dict[str, list[float]]) -> None:
    """Per-epoch metrics as one batch (one step per epoch)."""
    run_id = mlflow.active_run().info.run_id
    now = int(time.time() * 1000)
    metrics = [
        mlflow.entities.Metric(key, float(value), now, step)
        for key, values in history.items()
        for step, value in enumerate(values)
    ]
    for start in range(0, len(metrics), 1000):
        MlflowClient().log_batch(run_id, metrics=metrics[start : start + 1000])


def log_dict(data: dict[str, Any] | list[Any], artifact_file: str) -> None:
    """A JSON artifact of the active run."""
    mlflow.log_dict(data, artifact_file)


def log_text(text: str, artifact_file: str) -> None:
    """A text artifact (HTML report, classification report) of the active run."""
    mlflow.log_text(text, artifact_file)


def log_image_bytes(png: bytes, artifact_file: str) -> None:
    """A PNG image artifact of the active run."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        path.write_bytes(png)
        mlflow.log_artifact(str(path), str(Path(artifact_file).parent) if "/" in artifact_file else None)


def log_dataset(features: pd.DataFrame, labels: pd.Series, *, path: Path, digest: str, context: str) -> None:
    """Record the dataset as a run input (name, source, digest, schema).

    MLflow refuses a schema longer than about a megabyte (some 19,000 columns): a very wide
    dataset is described compactly (digest, column count, a sample of names) instead.
    """
    if features.shape[1] > WIDE_DATASET_COLUMNS:
        mlflow.log_dict(dataset_schema_summary(features, labels, digest), f"datasets/{context}_schema.json")
        mlflow.set_tag("dataset.columns", str(features.shape[1]))
        return
    frame = features.head(0).assign(**{labels.name or "label": pd.Series(dtype=str)})
    dataset = mlflow.data.from_pandas(
        frame, source=str(path), targets=labels.name or "label", name=Path(path).name, digest=digest[:20]
    )
    mlflow.log_input(dataset, context=context)


# --------------------------------------------------------------------------- models
def pip_requirements(*packages: str) -> list[str]:
    """Exact pins of the installed packages (skips MLflow's slow requirement inference)."""
    pins = []
    for package in packages:
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pins.append(package)
    return pins


def log_sklearn_model(pipeline: Any, input_example: pd.DataFrame, *, name: str = "model") -> str:
    """Log a fitted scikit-learn Pipeline (raw columns in, string labels out); returns its URI.

    Logged from code (`modules/svm_model_code.py`): the pipeline is a skops file loaded with the
    project's allowlist; the model's digest is recorded right after it is written.
    """
    import skops.io

    from modules.model_integrity import check_skops_types, record_logged_digest

    check_skops_types(pipeline, "the scikit-learn pipeline")
    predictions = pipeline.predict(input_example)
    signature = mlflow.models.infer_signature(input_example, pd.Series(predictions, name="label"))
    with tempfile.TemporaryDirectory() as tmp:
        pipeline_path = Path(tmp) / "model.skops"
        skops.io.dump(pipeline, pipeline_path)
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(_PROJECT_PACKAGE / "svm_model_code.py"),
            artifacts={"pipeline": str(pipeline_path)},
            signature=signature,
            input_example=input_example,
            pip_requirements=pip_requirements("mlflow", "scikit-learn", "skops", "numpy", "pandas", "scipy"),
        )
    record_logged_digest(info.model_id)
    return info.model_uri


def log_dnn_model(
    preprocessor: Any,
    keras_model: Any,
    classes: list[str],
    input_example: pd.DataFrame,
    *,
    name: str = "model",
) -> str:
    """Log the DNN as a pyfunc: fitted preprocessor -> Keras model -> string labels.

    Logged from code (`modules/dnn_model_code.py`, no pickled object); the preprocessor is a skops
    file, the network a `.keras` file; the model's digest is recorded right after it is written.
    """
    import skops.io

    from modules.dnn_pyfunc import KerasLabelClassifier
    from modules.model_integrity import check_skops_types, record_logged_digest

    check_skops_types(preprocessor, "the DNN's preprocessor")
    with tempfile.TemporaryDirectory() as tmp:
        keras_path = Path(tmp) / "model.keras"
        keras_model.save(keras_path)
        preprocessor_path = Path(tmp) / "preprocessor.skops"
        skops.io.dump(preprocessor, preprocessor_path)
        classes_path = Path(tmp) / "classes.json"
        classes_path.write_text(json.dumps({"classes": classes}))
        artifacts = {
            "keras_model": str(keras_path),
            "preprocessor": str(preprocessor_path),
            "classes": str(classes_path),
        }
        # Labels of the example rows, for the signature, from the very files being logged.
        python_model = KerasLabelClassifier()
        python_model.load_context(mlflow.pyfunc.PythonModelContext(artifacts=artifacts, model_config={}))
        predictions = python_model.predict(None, input_example)
        signature = mlflow.models.infer_signature(input_example, pd.Series(predictions, name="label"))
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(_PROJECT_PACKAGE / "dnn_model_code.py"),
            artifacts=artifacts,
            signature=signature,
            input_example=input_example,
            pip_requirements=pip_requirements(
                "mlflow", "tensorflow", "keras", "scikit-learn", "skops", "numpy", "pandas", "scipy"
            ),
        )
    record_logged_digest(info.model_id)
    return info.model_uri


def load_model(model_uri: str) -> Any:
    """Load a registered or logged model as a pyfunc, only after its files match their digest.

    `models:/NAME@champion`, `models:/NAME/VERSION` or `models:/m-...`: the files are downloaded
    to a private folder and checked against the `model.sha256` tag the registry holds before
    anything in them is parsed or imported; the model is loaded from that checked copy. Raises
    ModelIntegrityError (one line naming the version) on a mismatch or a missing tag.
    """
    from modules.model_integrity import download_verified

    with tempfile.TemporaryDirectory(prefix="verified-model-") as tmp:
        local = download_verified(model_uri, tmp)
        return mlflow.pyfunc.load_model(str(local))


# --------------------------------------------------------------------------- registry
def register_model(model_uri: str, name: str, *, idempotency_key: str, tags: dict[str, str]) -> str:
    """Register a model version once per key (a retried step reuses its version), tagged with its digest."""
    client = MlflowClient()
    with contextlib.suppress(mlflow.exceptions.MlflowException):
        for existing in client.search_model_versions(f"name='{name}'"):
            if existing.tags.get("idempotency_key") == idempotency_key:
                return str(existing.version)
    from modules.model_integrity import DIGEST_TAG, digest_for_registration

    # The version is created with its files' digest: every load checks the files against it.
    digest = digest_for_registration(model_uri)
    version_info = mlflow.register_model(
        model_uri, name, tags={**tags, "idempotency_key": idempotency_key, DIGEST_TAG: digest}
    )
    return str(version_info.version)


@dataclass
class Promotion:
    """What the promotion gate decided for one new model version, with every check's figures."""

    family: str
    model_name: str
    new_version: str
    new_score: float
    baseline_score: float
    champion_before: str | None
    champion_before_score: float | None
    champion_after: str | None
    promoted: bool
    reason: str
    checks: list[dict[str, Any]]
    metric: str = "accuracy"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def current_champion(model_name: str) -> Champion | None:
    """The registered model's `champion` version and the schema it was trained on, or None."""
    client = MlflowClient()
    try:
        version = client.get_model_version_by_alias(model_name, CHAMPION)
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise TrackingError(f"cannot read the champion of {model_name}: {_gist(exc)}") from None
    schema = Schema.from_tags(version.tags or {})
    if schema is None:
        # A version registered before schema tags existed: its signature still names its columns.
        schema = _schema_from_signature(f"models:/{model_name}/{version.version}")
    return Champion(version=str(version.version), schema=schema)


def _schema_from_signature(model_uri: str) -> Schema | None:
    try:
        signature = mlflow.models.get_model_info(model_uri).signature
    except Exception:  # unreadable model: the gate then scores it and fails on the error
        return None
    if signature is None or signature.inputs is None:
        return None
    return Schema.of(signature.inputs.input_names(), labels=())


def _gist(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def promote_through_gate(
    family: str,
    model_name: str,
    candidate: Candidate,
    *,
    score_model: Callable[[str], float],
    min_margin: float,
    allow_schema_change: bool,
) -> Promotion:
    """Mark the new version `challenger`, run the gate, and move `champion` only when it says yes.

    `score_model(model_uri)` scores a registered model on the held-out rows the candidate was
    evaluated on. The champion is scored only when the gate needs it; any failure to score it
    (download, server, load, schema) keeps the champion and raises a one-line TrackingError:
    the gate never promotes on an exception. The decision and every check's figures become
    tags of the new version.
    """
    client = MlflowClient()
    client.set_registered_model_alias(model_name, CHALLENGER, candidate.version)
    champion = current_champion(model_name)
    if needs_champion_score(candidate, champion):
        uri = f"models:/{model_name}/{champion.version}"
        try:
            score = float(score_model(uri))
        except Exception as exc:
            raise TrackingError(
                f"cannot score champion v{champion.version} of {model_name} on the held-out rows "
                f"({_gist(exc)}); champion kept, v{candidate.version} stays challenger"
            ) from None
        champion = replace(champion, accuracy=score)
    decision = decide_promotion(
        candidate, champion, min_margin=min_margin, allow_schema_change=allow_schema_change
    )
    for key, value in {**decision.tags(), "test_accuracy": f"{candidate.accuracy:.6f}"}.items():
        client.set_model_version_tag(model_name, candidate.version, key, value[:5000])
    if decision.promote:
        client.set_registered_model_alias(model_name, CHAMPION, candidate.version)
    after = candidate.version if decision.promote else (champion.version if champion else None)
    return Promotion(
        family=family,
        model_name=model_name,
        new_version=candidate.version,
        new_score=candidate.accuracy,
        baseline_score=candidate.baseline_accuracy,
        champion_before=champion.version if champion else None,
        champion_before_score=champion.accuracy if champion else None,
        champion_after=after,
        promoted=decision.promote,
        reason=decision.reason,
        checks=[asdict(check) for check in decision.checks],
    )


def accuracy_of(model_uri: str, features: pd.DataFrame, labels: pd.Series) -> float:
    """Accuracy of a logged model on raw rows (used to score the current champion)."""
    predictions = np.asarray(load_model(model_uri).predict(features)).astype(str)
    return float(np.mean(predictions == labels.astype(str).to_numpy()))
