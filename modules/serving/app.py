"""Serve `models:/NAME@champion` over HTTP with MLflow's scoring contract, following the alias.

`python -m modules serve` (what `make serve` runs) resolves the alias to a version, loads it
through `modules.tracking.client.load_model` (its files checked against the registry's digest first;
a mismatch is one line and exit code 2, before the port is bound), then runs a FastAPI app on
uvicorn, bound to 127.0.0.1 by default. The app has no authentication of its own, so any other
SERVE_HOST (`--host`) is refused unless SERVE_ALLOW_PUBLIC_BIND=1 says that something in front
authenticates every request: the container image sets both for Cloud Run, whose IAM invoker
check does (docker/Dockerfile, infra/terraform/serving.tf).

- `POST /invocations`: `{"dataframe_split": ...}`, `{"dataframe_records": ...}` or a CSV body
  (`Content-Type: text/csv`), as `mlflow models serve` takes them; answers
  `{"predictions": [...]}` plus `probabilities`/`classes` where the model has them. A missing,
  unexpected or non-numeric column is a 400 with one line naming it; a body over
  SERVE_MAX_BODY_BYTES is a 413.
- `GET /ping`, `GET /health` (model, prediction log and reload counters), `GET /version`
  (name, version, run id, artifact digest, signature column count).
- `POST /reload`: look at the alias now. A background thread also looks every SERVE_POLL_S
  seconds; a new version is loaded and checked off the request path, then swapped in as one
  reference, so requests in flight finish on the version they started with.

MLflow's own server (`mlflow models serve -m models:/NAME@champion`) remains the fallback: it
takes the same bodies but checks the schema one column at a time (about 0.5 s per row at 2548
columns) and does not verify the digest.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import traceback
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import click
import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import Response

from modules.errors import ConfigurationError, OperationalMLError, TrackingError
from modules.serving.contract import RequestError, parse_request
from modules.serving.prediction_log import PredictionLog, PredictionRecord, new_request_id


@dataclass(frozen=True)
class ServedModel:
    """One loaded, digest-checked model version and the fastest way to score with it."""

    name: str
    version: str
    run_id: str | None
    digest: str | None
    columns: list[str]
    classes: list[str] | None
    pyfunc: Any
    labels_of: Callable[[pd.DataFrame], np.ndarray] | None  # None: the most probable class
    probabilities_of: Callable[[pd.DataFrame], np.ndarray] | None
    # True when the model was fitted on exactly the signature's columns in its order: it is then
    # given the frame's values, which spares scikit-learn a per-column pandas dtype check (about
    # 25 ms for one row of 2548 columns, against 3 ms for the whole prediction).
    takes_values: bool = False
    loaded_at: float = field(default_factory=time.time)

    def score(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels and (when available) class probabilities of rows already checked against the signature."""
        rows: Any = frame
        with warnings.catch_warnings():
            if self.takes_values:
                rows = frame.to_numpy()
                warnings.filterwarnings(
                    "ignore", message="X does not have valid feature names", category=UserWarning
                )
            probabilities = None if self.probabilities_of is None else np.asarray(self.probabilities_of(rows))
            if self.labels_of is None:
                return np.asarray(self.classes)[np.argmax(probabilities, axis=1)], probabilities
            return np.asarray(self.labels_of(rows)).ravel(), probabilities

    def describe(self) -> dict[str, Any]:
        """What `/version` answers."""
        return {
            "model_name": self.name,
            "model_version": self.version,
            "run_id": self.run_id,
            "artifact_digest": self.digest,
            "signature_columns": len(self.columns),
            "classes": self.classes,
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
        }


def _fitted_columns(pyfunc: Any) -> list[str] | None:
    """The column names the model's scikit-learn part was fitted on, in order, when it knows them."""
    try:
        raw = pyfunc.unwrap_python_model()
    except Exception:  # not a Python model: it gets the frame
        return None
    fitted = getattr(raw, "_pipeline", None) or getattr(raw, "_preprocessor", None)
    names = getattr(fitted, "feature_names_in_", None)
    return None if names is None else [str(n) for n in names]


def _predicts_most_probable(pipeline: Any) -> bool:
    """True when the pipeline's `predict` is by definition the argmax of its `predict_proba`.

    So for scikit-learn's CalibratedClassifierCV (our SVM); not for a bare `SVC(probability=True)`,
    whose Platt-scaled probabilities can disagree with its decision function.
    """
    from sklearn.calibration import CalibratedClassifierCV

    final = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    return isinstance(final, CalibratedClassifierCV)


def _scorers(pyfunc: Any) -> tuple[Callable | None, Callable | None, list[str] | None]:
    """(labels, probabilities, classes) of the project's pyfunc models, skipping MLflow's per-column checks.

    The request was already checked against the signature as a whole frame; MLflow's
    `PyFuncModel.predict` would check it again one column at a time (about 30 ms at 2548
    columns). The SVM pyfunc holds a scikit-learn Pipeline (`predict`, `predict_proba`); the DNN
    pyfunc has `predict_proba` and its classes, its labels being their argmax. Any other model
    is scored through `pyfunc.predict`, labels only.
    """
    try:
        raw = pyfunc.unwrap_python_model()
    except Exception:  # not a Python model: MLflow's predict, schema checks included
        raw = None
    pipeline = getattr(raw, "_pipeline", None)
    if pipeline is not None and hasattr(pipeline, "predict"):
        proba = pipeline.predict_proba if hasattr(pipeline, "predict_proba") else None
        classes = getattr(pipeline, "classes_", None)
        classes = None if classes is None else [str(c) for c in classes]
        if proba is not None and classes is not None and _predicts_most_probable(pipeline):
            return None, proba, classes  # one pass through the pipeline instead of two
        return pipeline.predict, proba, classes
    classes = getattr(raw, "_classes", None)
    if raw is not None and hasattr(raw, "predict_proba") and classes is not None:
        network, preprocessor = getattr(raw, "_model", None), getattr(raw, "_preprocessor", None)
        if hasattr(network, "predict_on_batch") and hasattr(preprocessor, "transform"):
            # Keras' `predict` sets up a dataset pipeline per call (about 50 ms for one row);
            # `predict_on_batch` gives the same probabilities in well under a millisecond.
            def probabilities(rows: Any) -> np.ndarray:
                features = np.asarray(preprocessor.transform(rows), dtype="float32")
                return np.asarray(network.predict_on_batch(features))

            return None, probabilities, [str(c) for c in classes]
        return None, raw.predict_proba, [str(c) for c in classes]
    return pyfunc.predict, None, None


def load_served_model(name: str, version: str) -> ServedModel:
    """Load `models:/NAME/VERSION` after its digest check (`modules.tracking.client.load_model`)."""
    from mlflow.tracking import MlflowClient

    from modules.models.integrity import DIGEST_TAG
    from modules.tracking import client as tracking

    details = MlflowClient().get_model_version(name, version)
    pyfunc = tracking.load_model(f"models:/{name}/{version}")
    schema = pyfunc.metadata.get_input_schema()
    if schema is None or not schema.has_input_names():
        raise TrackingError(f"model {name} v{version} has no signature naming its columns; cannot serve it")
    labels_of, probabilities_of, classes = _scorers(pyfunc)
    columns = [str(c) for c in schema.input_names()]
    fitted = _fitted_columns(pyfunc)
    return ServedModel(
        name=name,
        version=str(version),
        run_id=details.run_id,
        digest=(details.tags or {}).get(DIGEST_TAG),
        columns=columns,
        classes=classes,
        pyfunc=pyfunc,
        labels_of=labels_of,
        probabilities_of=probabilities_of,
        takes_values=fitted == columns,
    )


def alias_version(name: str, alias: str) -> str:
    """The version an alias points at now; one line when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        raise TrackingError(
            f"no version of {name} has the alias {alias!r} ({exc.error_code}); run `make train` first"
        ) from None


class AliasFollower:
    """Holds the served model and swaps in the alias's new version once it is loaded and checked."""

    def __init__(
        self, name: str, alias: str, poll_s: float, loader: Callable[[str, str], ServedModel]
    ) -> None:
        self.name = name
        self.alias = alias
        self.poll_s = poll_s
        self._loader = loader
        self._lock = threading.Lock()  # one load at a time; requests never take it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refused: str | None = None
        self.current: ServedModel | None = None
        self.reloads = 0
        self.reload_failures = 0
        self.last_error: str | None = None

    def load_now(self) -> ServedModel:
        """Load the alias's version (at start: errors are raised for the command line)."""
        self.current = self._loader(self.name, alias_version(self.name, self.alias))
        return self.current

    def refresh(self, *, force: bool = False) -> bool:
        """Follow the alias if it moved: True when another version now answers.

        A version that failed to load (a digest mismatch, say) is not tried again on every poll,
        only when the alias moves again or on `force` (`POST /reload`); the old one keeps serving.
        """
        with self._lock:
            version = alias_version(self.name, self.alias)
            if self.current is not None and version == self.current.version:
                return False
            if version == self._refused and not force:
                return False
            try:
                loaded = self._loader(self.name, version)
            except Exception as exc:
                self._refused = version
                self.reload_failures += 1
                self.last_error = (
                    f"{self.name} v{version}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                )
                raise
            self.current = loaded  # one reference swap: requests in flight keep the model they read
            self._refused = None
            self.reloads += 1
            return True

    def start_polling(self) -> None:
        if self.poll_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._poll, name="alias-follower", daemon=True)
            self._thread.start()

    def stop_polling(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                if self.refresh():
                    print(
                        f"now serving {self.name} v{self.current.version} ({self.alias})",
                        file=sys.stderr,
                        flush=True,
                    )
            except Exception as exc:  # keep serving the old version; say why once per poll
                print(f"warning: not following {self.name}@{self.alias}: {exc}", file=sys.stderr, flush=True)

    def state(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "poll_s": self.poll_s,
            "reloads": self.reloads,
            "reload_failures": self.reload_failures,
            "last_error": self.last_error,
        }


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload), status_code=status, media_type="application/json", headers=headers)


def _error(message: str, status: int) -> Response:
    # MLflow's scoring server answers errors with the same two keys.
    code = {400: "BAD_REQUEST", 413: "REQUEST_TOO_LARGE", 415: "BAD_REQUEST"}.get(status, "INTERNAL_ERROR")
    return _json({"error_code": code, "message": message}, status)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"the body has {int(declared)} bytes; at most {limit} are accepted", status=413)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(
                f"the body has more than {limit} bytes; at most {limit} are accepted", status=413
            )
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(follower: AliasFollower, log: PredictionLog | None, *, max_body_bytes: int) -> FastAPI:
    """The scoring app around an already loaded `follower`; polling starts and the log closes with it."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        follower.start_polling()
        try:
            yield
        finally:
            follower.stop_polling()
            if log is not None:
                stats = log.close()
                if stats.failed or stats.dropped:
                    print(
                        f"warning: prediction log: {stats.failed} record(s) failed, {stats.dropped} dropped "
                        f"({stats.last_error})",
                        file=sys.stderr,
                        flush=True,
                    )

    app = FastAPI(title="operational-ml scoring", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.get("/ping")
    def ping() -> Response:
        return Response("\n", media_type="application/json")

    @app.get("/health")
    def health() -> Response:
        model = follower.current
        return _json(
            {
                "status": "ok",
                "model": None if model is None else model.describe(),
                "reload": follower.state(),
                "prediction_log": None if log is None else log.stats().to_dict(),
            }
        )

    @app.get("/version")
    def version() -> Response:
        return _json(follower.current.describe())

    @app.post("/reload")
    def reload() -> Response:
        try:
            changed = follower.refresh(force=True)
        except OperationalMLError as exc:
            return _json(
                {"error_code": "RELOAD_REFUSED", "message": str(exc), **follower.current.describe()}, 409
            )
        return _json({"changed": changed, **follower.current.describe()})

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        model = follower.current  # this request is answered by this version, whatever moves meanwhile
        request_id = request.headers.get("x-request-id") or new_request_id()
        headers = {"X-Request-Id": request_id, "X-Model-Version": model.version}
        try:
            body = await _read_body(request, max_body_bytes)
            started = time.perf_counter()
            frame = parse_request(body, request.headers.get("content-type"), model.columns)
            labels, probabilities = model.score(frame)
            latency_ms = (time.perf_counter() - started) * 1000.0
        except RequestError as exc:
            return _error(str(exc), exc.status)
        except Exception as exc:  # a bug or a model failure: one line to the client, the trace to the log
            traceback.print_exc(file=sys.stderr)
            return _error(f"the model failed on these rows ({type(exc).__name__})", 500)
        payload: dict[str, Any] = {"predictions": labels.tolist()}
        if probabilities is not None and model.classes is not None:
            payload["probabilities"] = probabilities.tolist()
            payload["classes"] = model.classes
        if log is not None:
            log.append(
                PredictionRecord(
                    source="http",
                    request_id=request_id,
                    model_name=model.name,
                    model_version=model.version,
                    inputs=frame,
                    labels=labels,
                    probabilities=probabilities,
                    classes=model.classes,
                    latency_ms=latency_ms,
                )
            )
        return _json(payload, headers=headers)

    return app


# The container's opt-in to listen beyond loopback (docker/Dockerfile sets it; nothing else should).
ALLOW_PUBLIC_BIND_VAR = "SERVE_ALLOW_PUBLIC_BIND"


def check_serve_bind(host: str, env: Mapping[str, str]) -> None:
    """Refuse an address other machines reach unless SERVE_ALLOW_PUBLIC_BIND=1 (a platform authenticates)."""
    from modules.tracking.server import is_loopback

    if is_loopback(host) or (env.get(ALLOW_PUBLIC_BIND_VAR) or "").strip().lower() in ("1", "true", "yes"):
        return
    raise ConfigurationError(
        f"SERVE_HOST={host} would open the unauthenticated model server to other machines: bind "
        f"127.0.0.1, or set {ALLOW_PUBLIC_BIND_VAR}=1 where a platform in front authenticates "
        "every request (the container image on Cloud Run does)"
    )


@click.command(
    "serve",
    help="Serve models:/NAME@ALIAS over HTTP with MLflow's scoring contract (/invocations, /ping, /health, "
    "/version, /reload); the model's digest is checked before it is loaded.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option("--family", default=None, help="model family, e.g. svm or dnn (default: svm)")
@click.option(
    "--model-name", default=None, help="a registered model name instead of --family, e.g. eeg-emotion-dnn"
)
@click.option(
    "--data-path",
    default=None,
    help="the dataset the model was trained on; names the registered model like the flows do (default: "
    "DATA_PATH; emotions.csv -> eeg-emotion-FAMILY)",
)
@click.option("--alias", default="champion", show_default=True, help="the alias to serve and follow")
@click.option("--host", default=None, help="address to bind (default: SERVE_HOST, 127.0.0.1)")
@click.option("--port", type=int, default=None, help="port (default: SERVE_PORT)")
@click.option(
    "--poll-s",
    type=float,
    default=None,
    help="seconds between looks at the alias; 0 = only on POST /reload (default: SERVE_POLL_S)",
)
@click.option(
    "--max-body-bytes",
    type=int,
    default=None,
    help="larger request bodies get 413 (default: SERVE_MAX_BODY_BYTES)",
)
@click.option(
    "--prediction-log",
    default=None,
    help="prediction log: a SQLite file or postgresql://USER@HOST:PORT/DB (password: PREDICTION_LOG_PASSWORD); "
    "'off' to log nothing (default: PREDICTION_LOG_URI or PREDICTION_LOG_PATH)",
)
def cli(
    family: str | None,
    model_name: str | None,
    data_path: str | None,
    alias: str,
    host: str | None,
    port: int | None,
    poll_s: float | None,
    max_body_bytes: int | None,
    prediction_log: str | None,
) -> None:
    """`python -m modules serve`: serve a registered model's alias over HTTP (what `make serve` runs)."""
    import uvicorn

    from modules.serving.prediction_log import open_prediction_log
    from modules.settings import get_settings
    from modules.tracking import client as tracking

    if family is not None and model_name is not None:
        raise click.UsageError("give --family or --model-name, not both")
    settings = get_settings()
    host = settings.serve_host if host is None else host
    port = settings.serve_port if port is None else port
    poll_s = settings.serve_poll_s if poll_s is None else poll_s
    max_body_bytes = settings.serve_max_body_bytes if max_body_bytes is None else max_body_bytes
    prediction_log = prediction_log or settings.prediction_log_target
    check_serve_bind(host, os.environ)  # before anything is loaded or bound
    if data_path is not None:
        settings = settings.for_data(data_path)
    from modules.models.families import get_family

    name = model_name or settings.model_name(get_family(family or "svm").name)
    masked = tracking.connect(settings)
    follower = AliasFollower(name, alias, poll_s, load_served_model)
    model = follower.load_now()  # a tampered or missing model stops here: one line, exit 2
    log = None
    if prediction_log != "off":
        log = open_prediction_log(
            prediction_log,
            sample_rows=settings.prediction_log_sample_rows,
            password=settings.postgres.get("prediction_log_password", ""),
        )
    app = create_app(follower, log, max_body_bytes=max_body_bytes)
    print(
        f"Serving {name} v{model.version} ({alias}, {len(model.columns)} columns) from {masked} "
        f"on http://{host}:{port}; prediction log: {prediction_log}",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
