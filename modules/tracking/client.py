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
import os
import random
import re
import socket
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import requests
import urllib3
from mlflow.tracking import MlflowClient

from modules.data.loading import WIDE_DATASET_COLUMNS, dataset_schema_summary
from modules.errors import ServiceUnavailableError, TrackingError
from modules.models.promotion import Candidate, Champion, Schema, decide_promotion, needs_champion_score
from modules.settings import PROJECT_ROOT, Settings
from modules.tracking.redaction import mask_password
from modules.tracking.store import check_tracking_server, make_private_sqlite

CHAMPION = "champion"
CHALLENGER = "challenger"
# The MLflow 3 UI opens an experiment on its GenAI pages unless told it holds models.
_EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")
# The models-from-code files logged with our models; their classes are imported from the project.
_MODEL_CODE = PROJECT_ROOT / "modules" / "models"  # the models-from-code files


# --------------------------------------------------------------------------- connection
# Seconds of random jitter MLflow adds to each backoff sleep (its default; set explicitly so the
# worst case stays what `outage_bound_s` says).
_BACKOFF_JITTER_S = 1.0


def outage_bound_s(settings: Settings) -> float:
    """Worst case seconds one tracking call spends before it gives up on a server that does not answer.

    Every attempt waits at most TRACKING_TIMEOUT_S; urllib3 retries at once after the first
    failure, then after factor x 4, x 8, ... seconds (factor x 2 for the second retry), each
    sleep plus up to a second of jitter. A refused connection (server down) costs only the sleeps.
    """
    retries, factor = settings.tracking_max_retries, settings.tracking_backoff_factor
    sleeps = factor * (2**retries - 2) if retries >= 2 else 0
    jitter = _BACKOFF_JITTER_S * max(retries - 1, 0)
    return (retries + 1) * settings.tracking_timeout_s + sleeps + jitter


def client_environment(settings: Settings) -> dict[str, str]:
    """MLflow's HTTP client variables for our retries and timeouts (its own: 7 retries, 120 s, minutes of backoff)."""
    return {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(settings.tracking_max_retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(settings.tracking_backoff_factor),
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": str(_BACKOFF_JITTER_S),
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(settings.tracking_timeout_s),
        # A Retry-After header could otherwise make one sleep as long as the server likes.
        "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "false",
    }


def bound_tracking_calls(settings: Settings) -> None:
    """Give this process's MLflow client (read at every request) our retries and timeouts."""
    os.environ.update(client_environment(settings))


def connect(settings: Settings, *, timeout_s: float = 5.0) -> str:
    """Point MLflow at the configured store with bounded retries; fail fast when a server is unreachable.

    Returns the tracking URI with its password masked, for log lines. An unreachable server is
    a ServiceUnavailableError (exit code 69).
    """
    uri = settings.mlflow_tracking_uri
    masked = mask_password(uri)
    bound_tracking_calls(settings)
    if uri.startswith(("http://", "https://")):
        try:
            check_tracking_server(uri, timeout=timeout_s)
        except TrackingError as exc:
            raise ServiceUnavailableError(str(exc)) from None
    elif uri.startswith("sqlite:///"):
        make_private_sqlite(uri)  # runs, params and the registry: readable by their owner only
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return masked


# Exceptions that mean "the server did not answer", wherever MLflow wraps them.
_OUTAGE_TYPES: tuple[type[BaseException], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.RetryError,
    urllib3.exceptions.MaxRetryError,
    ConnectionError,
    TimeoutError,
)
_FAILED_REQUEST = re.compile(r"API request to (\S+) failed with")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_outage(exc: BaseException) -> bool:
    """True when a tracking call failed because the server did not answer (not a bad request)."""
    return any(
        isinstance(link, (ServiceUnavailableError, *_OUTAGE_TYPES))
        or (isinstance(link, mlflow.exceptions.MlflowException) and _FAILED_REQUEST.search(str(link)))
        for link in _chain(exc)
    )


def describe_outage(exc: BaseException) -> str:
    """One line: which server, which call, how many attempts, and what went wrong."""
    uri = mlflow.get_tracking_uri()
    server = mask_password(uri)
    call = "a tracking call"
    for link in _chain(exc):
        match = _FAILED_REQUEST.search(str(link))
        if match:
            call = urllib.parse.urlsplit(match.group(1)).path or call
            break
    text = " ".join(str(link) for link in _chain(exc))
    if "Connection refused" in text or "NewConnectionError" in text:
        cause = "connection refused"
    elif "timed out" in text.lower() or "timeout" in text.lower():
        cause = "no answer in time"
    elif match := re.search(r"too many (\d+) error responses", text):
        cause = f"answered HTTP {match.group(1)}"
    else:
        cause = _gist(next(iter(reversed(list(_chain(exc))))))
    attempts = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    tries = f" after {int(attempts) + 1} attempts" if attempts and attempts.isdigit() else ""
    return f"MLflow tracking server at {server} is not answering: {call} failed{tries} ({cause})"


def describe_failure(exc: BaseException) -> str:
    """One line for any failed tracking call: the outage line, or the error's type and first line."""
    if isinstance(exc, TrackingError):
        return str(exc)
    return describe_outage(exc) if is_outage(exc) else _gist(exc)


@contextlib.contextmanager
def outages_as_errors() -> Iterator[None]:
    """Turn a tracking call that found the server down into one ServiceUnavailableError line."""
    try:
        yield
    except ServiceUnavailableError:
        raise
    except Exception as exc:
        if not is_outage(exc):
            raise
        raise ServiceUnavailableError(describe_outage(exc)) from None


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
    key, value = _EXPERIMENT_KIND_TAG
    if client.get_experiment(experiment_id).tags.get(key) != value:
        try:
            client.set_experiment_tag(experiment_id, key, value)
        except mlflow.exceptions.MlflowException:
            # Parallel runs may set it at the same moment (PostgreSQL refuses the second insert).
            if client.get_experiment(experiment_id).tags.get(key) != value:
                raise
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


# Tags that tie a flow run's MLflow runs together and tell whether the flow still runs.
PARENT_RUN_TAG = "flow.parent_run_id"  # on every step and trial run: the id of the flow's parent run
RUNTIME_TAG = "flow.runtime"  # on the parent: `host:pid:start` of the process that runs the flow
RESUMED_FROM_TAG = "metaflow.resumed_from"  # on the parent of a resumed flow: the pathspec it resumed


def start_parent_run(settings: Settings, run_name: str, tags: dict[str, str]) -> str:
    """Create the parent run of one flow run (RUNNING until the flow's last step) and return its id.

    Runs that killed flows left RUNNING in this experiment are closed first (see
    `close_abandoned_runs`), so a new run never starts next to stale ones.
    """
    experiment_id = ensure_experiment(settings)
    for pathspec, closed in close_abandoned_runs(experiment_id).items():
        print(
            f"{pathspec} was killed: its parent run marked FAILED, {len(closed)} run(s) left RUNNING marked KILLED"
        )
    run = MlflowClient().create_run(experiment_id, run_name=run_name, tags=tags)
    return run.info.run_id


def _forget_active_run() -> None:
    """Leave the active fluent run without ending it: no call to the server.

    MLflow's fluent API can only leave a run by ending it; a parent run must stay RUNNING between
    steps, and a run whose server is down cannot be ended. mlflow.end_run minus set_terminated.
    """
    from mlflow.tracking import fluent

    stack = fluent._active_run_stack.get()
    if stack:
        stack.pop()
    fluent.MLFLOW_RUN_ID.unset()


@contextlib.contextmanager
def _ended_on_exit(run: mlflow.ActiveRun) -> Iterator[mlflow.ActiveRun]:
    """End a fluent run FINISHED, FAILED when the block raises, untouched when the server is down."""
    try:
        yield run
    except BaseException as exc:
        if is_outage(exc):
            _forget_active_run()  # ending it would wait out the retries a second time
        else:
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            with contextlib.suppress(Exception):
                mlflow.end_run(status)
            _forget_active_run()
        raise
    mlflow.end_run()


@contextlib.contextmanager
def reopen_run(run_id: str) -> Iterator[mlflow.ActiveRun]:
    """Log to the parent run in a step; it stays RUNNING (`finish_flow_run` ends it)."""
    mlflow.set_experiment(experiment_id=MlflowClient().get_run(run_id).info.experiment_id)
    run = mlflow.start_run(run_id=run_id)
    try:
        yield run
    finally:
        _forget_active_run()


@contextlib.contextmanager
def step_run(parent_run_id: str, name: str, tags: dict[str, str] | None = None) -> Iterator[mlflow.ActiveRun]:
    """The run of one step, nested under the parent without reopening it.

    It ends FINISHED, or FAILED when the step raises; the step's wrapper marks the parent FAILED
    (`fail_flow_run`). Parallel branches never touch the parent's status otherwise.
    """
    experiment_id = MlflowClient().get_run(parent_run_id).info.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    run = mlflow.start_run(run_name=name, parent_run_id=parent_run_id, tags=tags or {})
    with _ended_on_exit(run):
        yield run


@contextlib.contextmanager
def child_run(name: str, tags: dict[str, str] | None = None) -> Iterator[mlflow.ActiveRun]:
    """A run nested under the active run (one per step, trial or model)."""
    run = mlflow.start_run(run_name=name, nested=True, tags=tags or {})
    with _ended_on_exit(run):
        yield run


# --------------------------------------------------------------------------- run states
def _left_running(client: MlflowClient, parent_run_id: str) -> list[Any]:
    """The step and trial runs of a flow's parent run that are still RUNNING."""
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}' and attributes.status = 'RUNNING'",
        max_results=1000,
    )


def _kill_left_running(client: MlflowClient, parent_run_id: str, keep_prefix: str | None = None) -> list[str]:
    killed = []
    for run in _left_running(client, parent_run_id):
        if keep_prefix and run.data.tags.get("metaflow.pathspec", "").startswith(keep_prefix):
            continue  # a step of the flow run that is running now
        client.set_terminated(run.info.run_id, status="KILLED")
        killed.append(run.info.run_id)
    return killed


def finish_flow_run(parent_run_id: str) -> list[str]:
    """The flow's last step: runs that failed attempts left RUNNING become KILLED, the parent FINISHED."""
    client = MlflowClient()
    killed = _kill_left_running(client, parent_run_id)
    client.set_terminated(parent_run_id, status="FINISHED")
    return killed


def fail_flow_run(parent_run_id: str, *, close_steps: bool = True) -> list[str]:
    """The flow failed: the parent becomes FAILED and, with `close_steps`, runs still RUNNING under it KILLED.

    Close steps only once the flow has stopped (its exit hook, a resume, the next run): a failing
    step's siblings may still be running. Returns the ids marked KILLED.
    """
    client = MlflowClient()
    killed = _kill_left_running(client, parent_run_id) if close_steps else []
    client.set_terminated(parent_run_id, status="FAILED")
    return killed


def reopen_flow_run(parent_run_id: str, run_name: str, tags: dict[str, str]) -> list[str] | None:
    """A resumed flow takes its parent run back, once: RUNNING again, named and tagged after itself.

    `tags` must carry the resumed run's `metaflow.pathspec`; runs the earlier attempt left
    RUNNING (killed steps) are marked KILLED, those of the resumed run itself are kept. Returns
    the ids marked KILLED, or None when the parent already carries this name (nothing to do).
    """
    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    if parent.info.run_name == run_name and parent.info.status == "RUNNING":
        return None
    killed = _kill_left_running(client, parent_run_id, keep_prefix=f"{run_name}/")
    client.update_run(parent_run_id, status="RUNNING", name=run_name)
    for key, value in tags.items():
        client.set_tag(parent_run_id, key, value)
    return killed


def process_identity(pid: int) -> str:
    """`host:pid:start-time` of a process, so that a recycled PID is never taken for it."""
    return f"{socket.gethostname()}:{pid}:{_process_start(pid) or 'unknown'}"


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc), or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    return stat.rsplit(")", 1)[1].split()[19]


def process_is_gone(identity: str) -> bool:
    """True only when `identity` names a process of this host that no longer runs.

    Unknown hosts, malformed values and systems without /proc count as alive: a run is never
    closed on a guess.
    """
    host, _, rest = identity.partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit() or start in ("", "unknown"):
        return False
    if not Path("/proc/self/stat").exists():
        return False
    return _process_start(int(pid)) != start


def close_abandoned_runs(experiment_id: str) -> dict[str, list[str]]:
    """Close the runs of flows whose process died without closing them (killed, host restarted).

    A parent run still RUNNING, or one with step runs still RUNNING, whose `flow.runtime` process
    is gone from this host: its RUNNING step and trial runs become KILLED, the parent FAILED.
    Returns {flow pathspec: ids marked KILLED}. Flows of other hosts are left to their own resume.
    """
    client = MlflowClient()
    running = client.search_runs(
        [experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
    )
    parent_ids = {run.data.tags.get(PARENT_RUN_TAG) for run in running} | {
        run.info.run_id for run in running if RUNTIME_TAG in run.data.tags
    }
    closed: dict[str, list[str]] = {}
    for parent_id in sorted(filter(None, parent_ids)):
        try:
            parent = client.get_run(parent_id)
        except mlflow.exceptions.MlflowException:
            continue
        if not process_is_gone(parent.data.tags.get(RUNTIME_TAG, "")):
            continue
        killed = _kill_left_running(client, parent_id)
        if parent.info.status == "RUNNING":
            client.set_terminated(parent_id, status="FAILED")
        closed[parent.data.tags.get("metaflow.pathspec", parent_id)] = killed
    return closed


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


def log_directory(folder: Path, artifact_path: str) -> None:
    """Every file of a folder as artifacts of the active run, under `artifact_path`."""
    mlflow.log_artifacts(str(folder), artifact_path)


def download_run_directory(run_id: str, artifact_path: str, destination: Path) -> Path:
    """A folder of a run's artifacts, downloaded into `destination`; one line when it is missing."""
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=str(destination)
        )
    except Exception as exc:
        raise TrackingError(f"run {run_id} has no {artifact_path!r} artifacts ({_gist(exc)})") from None
    return Path(local)


def champion_version(model_name: str) -> Any:
    """The registry's `champion` version of a model (name, version, run id, tags); one line when none."""
    try:
        return MlflowClient().get_model_version_by_alias(model_name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        raise TrackingError(
            f"no champion for {model_name}: no version has passed the promotion gate yet; run `make train`"
        ) from None


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
    """Log a fitted scikit-learn Pipeline of any family (raw columns in, string labels out); its URI.

    Logged from code (`modules/models/sklearn_model_code.py`): the pipeline is a skops file loaded with
    the project's allowlist; the model's digest is recorded right after it is written.
    """
    import skops.io

    from modules.models.integrity import check_skops_types, record_logged_digest

    check_skops_types(pipeline, "the scikit-learn pipeline")
    predictions = pipeline.predict(input_example)
    signature = mlflow.models.infer_signature(input_example, pd.Series(predictions, name="label"))
    with tempfile.TemporaryDirectory() as tmp:
        pipeline_path = Path(tmp) / "model.skops"
        skops.io.dump(pipeline, pipeline_path)
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(_MODEL_CODE / "sklearn_model_code.py"),
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

    Logged from code (`modules/models/dnn_model_code.py`, no pickled object); the preprocessor is a skops
    file, the network a `.keras` file; the model's digest is recorded right after it is written.
    """
    import skops.io

    from modules.models.dnn_pyfunc import KerasLabelClassifier
    from modules.models.integrity import check_skops_types, record_logged_digest

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
            python_model=str(_MODEL_CODE / "dnn_model_code.py"),
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
    from modules.models.integrity import download_verified

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
    from modules.models.integrity import DIGEST_TAG, digest_for_registration

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


# --------------------------------------------------------------------------- promotion lease
LEASE_TAG = "promotion.lease"
DECISION_TAG = "gate.decision"
# A claim must be written within this many seconds of reading the lease free, and is confirmed
# only after as long again: two runs can then never both see their own claim (see PromotionLease).
CLAIM_WINDOW_S = 1.0


@dataclass
class PromotionLease:
    """The right to move one registered model's aliases, held by one run for a bounded time.

    Kept as the registered-model tag `promotion.lease` = `owner|expiry` (expiry in Unix seconds),
    through the server's API only. Taking it: read the tag; when it is absent or expired, write
    our claim, then (only if that write finished within CLAIM_WINDOW_S of the read) wait
    CLAIM_WINDOW_S and read it again: it is ours when our claim is still there. A rival that read
    the tag free before our write must have written within CLAIM_WINDOW_S of its read, so before
    our second read, which then shows its claim, not ours; so at most one run holds the lease.
    A holder that dies loses it at expiry; a holder checks its time (`ensure`) before each write.
    Hosts need clocks in step (NTP) to within a small part of the time to live.
    """

    model_name: str
    owner: str
    ttl_s: float
    expires_at: float = 0.0  # time.monotonic() of our expiry, with CLAIM_WINDOW_S to spare

    def claim(self, client: MlflowClient) -> None:
        wall_expiry = time.time() + self.ttl_s
        client.set_registered_model_tag(self.model_name, LEASE_TAG, f"{self.owner}|{wall_expiry:.3f}")
        self.expires_at = time.monotonic() + self.ttl_s - CLAIM_WINDOW_S

    def ensure(self, client: MlflowClient) -> None:
        """Raise unless the lease is still ours for a while; renew it when half its time is gone."""
        remaining = self.expires_at - time.monotonic()
        if remaining <= 0 or _lease_holder(client, self.model_name)[0] != self.owner:
            raise ServiceUnavailableError(
                f"lost the promotion lease on {self.model_name} (held over {self.ttl_s:.0f} s); "
                "aliases left as they were, run the join again (resume) to promote"
            )
        if remaining < self.ttl_s / 2:
            self.claim(client)


def _lease_holder(client: MlflowClient, model_name: str) -> tuple[str | None, float]:
    """(owner, expiry in Unix seconds) of the lease on a registered model; (None, 0) when free."""
    value = client.get_registered_model(model_name).tags.get(LEASE_TAG, "")
    owner, _, expiry = value.rpartition("|")
    try:
        return (owner or None), float(expiry)
    except ValueError:
        return None, 0.0


def _claimed(client: MlflowClient, lease: PromotionLease) -> bool:
    """Write our claim; False when a rival's claim landed at the same moment (PostgreSQL refuses one)."""
    try:
        lease.claim(client)
    except mlflow.exceptions.MlflowException as exc:
        if is_outage(exc):
            raise
        return False
    return True


@contextlib.contextmanager
def promotion_lease(model_name: str, owner: str, *, ttl_s: float, wait_s: float) -> Iterator[PromotionLease]:
    """Hold the promotion lease of `model_name` for the block; wait up to `wait_s` seconds for it.

    Raises ServiceUnavailableError (one line naming the holder) when it stays taken; releases it
    on the way out, also when the block raises.
    """
    client = MlflowClient()
    lease = PromotionLease(model_name, f"{owner}#{uuid.uuid4().hex[:8]}", ttl_s)
    deadline = time.monotonic() + wait_s
    while True:
        read_at = time.monotonic()
        holder, expiry = _lease_holder(client, model_name)
        if holder is None or expiry < time.time():
            if _claimed(client, lease) and time.monotonic() - read_at < CLAIM_WINDOW_S:
                time.sleep(CLAIM_WINDOW_S)
                if _lease_holder(client, model_name)[0] == lease.owner:
                    break
            holder, expiry = _lease_holder(client, model_name)
        if time.monotonic() > deadline:
            raise ServiceUnavailableError(
                f"promotion of {model_name} is held by {holder} for {max(expiry - time.time(), 0):.0f} s more; "
                f"waited {wait_s:.0f} s (PROMOTION_LEASE_WAIT_S), aliases left as they were"
            )
        time.sleep(0.5 + random.random())
    try:
        yield lease
    finally:
        with contextlib.suppress(Exception):
            if _lease_holder(client, model_name)[0] == lease.owner:
                client.delete_registered_model_tag(model_name, LEASE_TAG)


def _advance_challenger(client: MlflowClient, model_name: str, version: str) -> None:
    """`challenger` = the newest evaluated version: moved to `version` unless a newer one holds it."""
    try:
        current = int(client.get_model_version_by_alias(model_name, CHALLENGER).version)
    except mlflow.exceptions.MlflowException:
        current = 0
    if int(version) > current:
        client.set_registered_model_alias(model_name, CHALLENGER, version)


def _alias_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def recorded_promotion(model_name: str, version: str) -> Promotion | None:
    """The gate's decision recorded on a version (tag `gate.decision`), or None before the gate ran."""
    tags = MlflowClient().get_model_version(model_name, version).tags or {}
    try:
        return Promotion(**json.loads(tags[DECISION_TAG]))
    except (KeyError, ValueError, TypeError):
        return None


def promote_through_gate(
    family: str,
    model_name: str,
    candidate: Candidate,
    *,
    score_model: Callable[[str], float],
    min_margin: float,
    allow_schema_change: bool,
    owner: str = "",
    lease_ttl_s: float = 120.0,
    lease_wait_s: float = 300.0,
) -> Promotion:
    """Under the model's promotion lease: advance `challenger`, run the gate, move `champion` only on yes.

    `challenger` is the newest version that went through the gate: a slower run never moves it
    back to an older version. `score_model(model_uri)` scores a registered model on the held-out
    rows the candidate was evaluated on. The champion is scored only when the gate needs it; any
    failure to score it (download, server, load, schema) keeps the champion and raises a one-line
    TrackingError: the gate never promotes on an exception. The decision (`gate.decision`) and
    every check's figures become tags of the new version before `champion` moves. A version already
    promoted (a retried or resumed join) keeps its recorded decision, and `champion` is moved to it
    only if nothing moved it since; a version the gate refused is simply decided again.
    """
    client = MlflowClient()
    owner = owner or f"{socket.gethostname()}:{os.getpid()}"
    with promotion_lease(model_name, owner, ttl_s=lease_ttl_s, wait_s=lease_wait_s) as lease:
        _advance_challenger(client, model_name, candidate.version)
        recorded = recorded_promotion(model_name, candidate.version)
        if recorded is not None and recorded.promoted:
            # Deciding again would compare the version with itself; finish moving `champion`
            # only if nothing moved it since (a newer, better version may hold it now).
            if _alias_version(client, model_name, CHAMPION) == recorded.champion_before:
                client.set_registered_model_alias(model_name, CHAMPION, candidate.version)
            return recorded
        promotion, gate_tags = _decide(
            family,
            model_name,
            candidate,
            score_model,
            min_margin=min_margin,
            allow_schema_change=allow_schema_change,
        )
        lease.ensure(client)
        decision_tags = {
            **gate_tags,
            "test_accuracy": f"{candidate.accuracy:.6f}",
            DECISION_TAG: json.dumps(promotion.to_dict()),
        }
        for key, value in decision_tags.items():
            client.set_model_version_tag(model_name, candidate.version, key, value[:5000])
        if promotion.promoted:
            lease.ensure(client)
            client.set_registered_model_alias(model_name, CHAMPION, candidate.version)
    return promotion


def _decide(
    family: str,
    model_name: str,
    candidate: Candidate,
    score_model: Callable[[str], float],
    *,
    min_margin: float,
    allow_schema_change: bool,
) -> tuple[Promotion, dict[str, str]]:
    """The gate's decision against the current champion (scored fresh when needed), and its tags."""
    champion = current_champion(model_name)
    if needs_champion_score(candidate, champion):
        uri = f"models:/{model_name}/{champion.version}"
        try:
            score = float(score_model(uri))
        except Exception as exc:
            error = ServiceUnavailableError if is_outage(exc) else TrackingError
            raise error(
                f"cannot score champion v{champion.version} of {model_name} on the held-out rows "
                f"({_gist(exc)}); champion kept, v{candidate.version} stays challenger"
            ) from None
        champion = replace(champion, accuracy=score)
    decision = decide_promotion(
        candidate, champion, min_margin=min_margin, allow_schema_change=allow_schema_change
    )
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
    ), decision.tags()


def accuracy_of(model_uri: str, features: pd.DataFrame, labels: pd.Series) -> float:
    """Accuracy of a logged model on raw rows (used to score the current champion)."""
    predictions = np.asarray(load_model(model_uri).predict(features)).astype(str)
    return float(np.mean(predictions == labels.astype(str).to_numpy()))
