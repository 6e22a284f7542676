"""Model files are checked against a digest kept in the registry before anything in them is read.

Whoever can write the artifact store (the bucket) but not the registry's database must not
get their code run when a model is loaded (the promotion gate scores the champion inside the
credentialed training job; `make predict` loads it on a person's machine). So:

- every logged model gets the SHA-256 of its files (`artifact_digest`) as the tag
  `model.sha256`, computed right after it was written; registration checks the files against
  it and copies it onto the model version, which is created with the tag;
- `download_verified` resolves `models:/NAME@ALIAS`, `models:/NAME/VERSION` or a logged model
  `models:/m-...` to one version, downloads its files to a private folder and compares their
  digest with the tag before any file is parsed, imported or deserialised; a mismatch is one
  line naming the version (exit 2); the model's Python file is then replaced by the project's
  own copy, so only reviewed code runs even if someone could also rewrite the tag;
- the skops files inside models are loaded with `load_skops`, which trusts only the types in
  `TRUSTED_SKOPS_TYPES` (this file, reviewed code), never a list stored with the model.

A version registered before digests existed has no tag and is refused. After checking its
files, an operator may record their digest: `python -m modules integrity stamp NAME VERSION`.
"""

from __future__ import annotations

import getpass
import hashlib
import importlib
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from modules.errors import ConfigurationError, TrackingError

DIGEST_TAG = "model.sha256"
STAMPED_BY_TAG = "model.sha256.stamped_by"

# Types beyond skops' own safe defaults that the project's skops files may hold: scikit-learn's
# calibration internals and folds, and our own transformer. Anything else is refused at load
# time. A new estimator or transformer is added here, in a reviewed change, never by a model.
TRUSTED_SKOPS_TYPES: tuple[str, ...] = (
    "modules.models.preprocessing.DropDuplicateAndConstantColumns",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.model_selection._split.StratifiedKFold",
)
# Where our own types lived before the package layout (models registered then name them so).
# Loading maps each old module path to its new home; the type itself stays on the list above.
LEGACY_MODULE_PATHS: dict[str, str] = {"modules.feature_transformation": "modules.models.preprocessing"}

# The models-from-code files our models are logged with (modules/models/). The loader runs the
# project's own copy, never the one stored with a model. `svm_model_code.py`: SVM versions
# registered before the scikit-learn families shared `sklearn_model_code.py`.
MODEL_CODE_FILES = ("sklearn_model_code.py", "dnn_model_code.py", "svm_model_code.py")
_PROJECT_MODULES = Path(__file__).resolve().parent
_LOGGED_MODEL_ID = re.compile(r"m-[0-9a-f]{32}")
_MLFLOW_NOTE = "registered_model_meta"  # written by MLflow's loader, outside the digest
_CHUNK = 1 << 20


class ModelIntegrityError(TrackingError):
    """A model's files differ from the digest the registry holds, or hold code we do not trust."""


# --------------------------------------------------------------------------- digests
def artifact_digest(root: str | Path) -> str:
    """SHA-256 over every file under `root`: sorted relative paths, each path and content length-prefixed.

    Any changed byte, added, removed or renamed file changes it. Links are refused: a model's
    files are plain files, and a link could point the loader at something outside the folder.
    """
    root = Path(root)
    files: list[tuple[str, Path]] = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        for name in [*dirs, *names]:
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                raise ModelIntegrityError(f"{relative}: a link inside a model's files; refusing to load")
            if name in names:
                if not path.is_file():
                    raise ModelIntegrityError(f"{relative}: not a regular file; refusing to load")
                files.append((relative, path))
    digest = hashlib.sha256()
    for relative, path in sorted(files):
        name = relative.encode()
        digest.update(len(name).to_bytes(8, "big") + name)
        digest.update(path.stat().st_size.to_bytes(8, "big"))
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _short(digest: str | None) -> str:
    return f"{digest[:12]}..." if digest else "none"


@dataclass(frozen=True)
class ModelFiles:
    """Where one model's files are, and the digest the registry holds for them."""

    label: str  # `model NAME v3` or `logged model m-...`, for messages
    location: str  # the artifact URI of the model's folder
    expected: str | None  # the `model.sha256` tag, None when the model has none
    name: str | None = None
    version: str | None = None


def _client() -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def resolve_model(model_uri: str) -> ModelFiles:
    """The model a URI names, pinned to one version, with the digest tag the registry holds for it.

    `models:/NAME@ALIAS` and `models:/NAME/VERSION` name a registered version; `models:/m-...` a
    logged model. Other URIs (`runs:/`, paths) carry no digest and are refused.
    """
    if not model_uri.startswith("models:/"):
        raise ModelIntegrityError(
            f"{model_uri}: only registered models (models:/NAME/VERSION, models:/NAME@ALIAS) or logged "
            "models (models:/m-...) can be checked against their digest; refusing to load"
        )
    client = _client()
    target = model_uri.removeprefix("models:/").strip("/")
    if _LOGGED_MODEL_ID.fullmatch(target):
        logged = client.get_logged_model(target)
        return ModelFiles(
            f"logged model {target}", logged.artifact_location, (logged.tags or {}).get(DIGEST_TAG)
        )
    if "@" in target:
        name, alias = target.rsplit("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    else:
        name, _, number = target.rpartition("/")
        if not name or not number.isdigit():
            raise ModelIntegrityError(
                f"{model_uri}: name a version (models:/NAME/VERSION) or an alias (models:/NAME@ALIAS)"
            )
        version = client.get_model_version(name, number)
    number = str(version.version)
    return ModelFiles(
        label=f"model {name} v{number}",
        location=client.get_model_version_download_uri(name, number),
        expected=(version.tags or {}).get(DIGEST_TAG),
        name=name,
        version=number,
    )


def _download(location: str, destination: Path) -> Path:
    """The model's files, copied into `destination` (never the store's own folder, even when local).

    MLflow's `registered_model_meta` note is dropped from the copy: `mlflow.pyfunc.load_model`
    writes it into the model's folder of a local store, and nothing reads it.
    """
    import mlflow.artifacts

    destination.mkdir(parents=True, exist_ok=True)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(destination)))
    note = local / _MLFLOW_NOTE
    if note.is_file() and not note.is_symlink():
        note.unlink()
    return local


def _missing_tag(model: ModelFiles) -> ModelIntegrityError:
    if model.version is None:
        return ModelIntegrityError(
            f"{model.label} has no {DIGEST_TAG} tag (logged before digests were recorded); "
            "refusing to load: retrain it (`make train`)"
        )
    return ModelIntegrityError(
        f"{model.label} has no {DIGEST_TAG} tag (registered before digests were recorded); refusing to "
        f"load: retrain it (`make train`), or after checking its files record their digest with "
        f"`python -m modules integrity stamp {model.name} {model.version}`"
    )


def download_verified(model_uri: str, destination: str | Path) -> Path:
    """Download a model's files into `destination` and check them against its digest tag.

    Returns the folder to load the model from. Nothing in the files is parsed before the check;
    load from the returned copy only (a second download could differ). Raises
    ModelIntegrityError (one line, naming the version) on a missing tag or a mismatch. A model
    logged from code then gets the project's own copy of its code file (`use_project_code`).
    """
    model = resolve_model(model_uri)
    if not model.expected:
        raise _missing_tag(model)
    local = _download(model.location, Path(destination))
    actual = artifact_digest(local)
    if actual != model.expected:
        raise ModelIntegrityError(
            f"{model.label}: artifact digest mismatch (expected {_short(model.expected)}, "
            f"got {_short(actual)}); refusing to load"
        )
    use_project_code(local, model.label)
    return local


def use_project_code(local: Path, label: str) -> None:
    """Make a checked model run the project's code: its code file replaced by ours, nothing else.

    A second line of defence for someone who could change the registry's digest as well as the
    files: the model must name one of `MODEL_CODE_FILES`, ship no `code/` folder and keep its
    artifacts inside its folder. A model not logged from code (registered before, and stamped by
    an operator) is left as it is: the stamp trusted its files.
    """
    import yaml

    flavors = (yaml.safe_load((local / "MLmodel").read_text()) or {}).get("flavors") or {}
    pyfunc = flavors.get("python_function") or {}
    if not pyfunc.get("model_code_path"):
        return
    # MLflow runs the file of this base name in the model's folder.
    name = os.path.basename(str(pyfunc["model_code_path"]))
    if name not in MODEL_CODE_FILES or pyfunc.get("code") or set(flavors) != {"python_function"}:
        raise ModelIntegrityError(
            f"{label}: logged with code this project does not ship ({name}); refusing to load"
        )
    root = local.resolve()
    for artifact in (pyfunc.get("artifacts") or {}).values():
        if not (root / str((artifact or {}).get("path", ""))).resolve().is_relative_to(root):
            raise ModelIntegrityError(
                f"{label}: an artifact path leaves the model's folder; refusing to load"
            )
    shutil.copyfile(_PROJECT_MODULES / name, local / name)


def record_logged_digest(model_id: str) -> str:
    """Compute a just-logged model's digest from the store and tag the logged model with it."""
    import mlflow

    logged = _client().get_logged_model(model_id)
    with tempfile.TemporaryDirectory(prefix="model-digest-") as tmp:
        digest = artifact_digest(_download(logged.artifact_location, Path(tmp)))
    mlflow.set_logged_model_tags(model_id, {DIGEST_TAG: digest})
    return digest


def digest_for_registration(model_uri: str) -> str:
    """The digest a new model version is registered with: its files as logged, checked when possible.

    For a logged model (`models:/m-...`) tagged at log time the files must still match that
    tag: a change between training and registration is refused like one before loading.
    """
    target = model_uri.removeprefix("models:/").strip("/")
    expected, label, location = None, model_uri, model_uri
    if model_uri.startswith("models:/") and _LOGGED_MODEL_ID.fullmatch(target):
        logged = _client().get_logged_model(target)
        expected, label = (logged.tags or {}).get(DIGEST_TAG), f"logged model {target}"
        location = logged.artifact_location
    with tempfile.TemporaryDirectory(prefix="model-digest-") as tmp:
        actual = artifact_digest(_download(location, Path(tmp)))
    if expected and actual != expected:
        raise ModelIntegrityError(
            f"{label}: artifact digest mismatch (expected {_short(expected)}, got {_short(actual)}); "
            "refusing to register"
        )
    return actual


# --------------------------------------------------------------------------- skops
def untrusted_types(obj: Any) -> list[str]:
    """The types in `obj` that skops would refuse and `TRUSTED_SKOPS_TYPES` does not list."""
    import skops.io

    found = skops.io.get_untrusted_types(data=skops.io.dumps(obj))
    return sorted(set(found) - set(TRUSTED_SKOPS_TYPES))


def check_skops_types(obj: Any, what: str) -> None:
    """Refuse to log an object whose skops file could not be loaded back with our allowlist."""
    refused = untrusted_types(obj)
    if refused:
        raise ConfigurationError(
            f"{what} holds types the skops allowlist does not list ({', '.join(refused)}); "
            "after review, add them to TRUSTED_SKOPS_TYPES in modules/models/integrity.py"
        )


def load_skops(path: str | Path) -> Any:
    """Load a skops file trusting only `TRUSTED_SKOPS_TYPES` (and skops' own safe defaults)."""
    import skops.io

    path = Path(path)
    found = skops.io.get_untrusted_types(file=path)
    refused = sorted({t for t in found if _current_type_path(t) not in TRUSTED_SKOPS_TYPES})
    if refused:
        shown = ", ".join(refused[:5]) + (f" and {len(refused) - 5} more" if len(refused) > 5 else "")
        raise ModelIntegrityError(
            f"{path.name}: holds types this project does not trust ({shown}); refusing to load"
        )
    for old, new in LEGACY_MODULE_PATHS.items():
        if any(t.startswith(old + ".") for t in found):
            sys.modules.setdefault(old, importlib.import_module(new))
    return skops.io.load(path, trusted=list(found))


def _current_type_path(type_path: str) -> str:
    """A type's path today, for one written by a model registered before the package layout."""
    for old, new in LEGACY_MODULE_PATHS.items():
        if type_path.startswith(old + "."):
            return new + type_path[len(old) :]
    return type_path


# --------------------------------------------------------------------------- command line
def stamp(name: str, version: str) -> str:
    """Record the digest of a registered version's current files (for versions registered before digests)."""
    client = _client()
    existing = (client.get_model_version(name, version).tags or {}).get(DIGEST_TAG)
    if existing:
        raise ConfigurationError(
            f"model {name} v{version} already has a digest ({_short(existing)}); a stamp never replaces one"
        )
    with tempfile.TemporaryDirectory(prefix="model-digest-") as tmp:
        digest = artifact_digest(_download(client.get_model_version_download_uri(name, version), Path(tmp)))
    client.set_model_version_tag(name, version, DIGEST_TAG, digest)
    client.set_model_version_tag(name, version, STAMPED_BY_TAG, getpass.getuser())
    return digest


@click.group(
    "integrity",
    help="Check a registered model's files against the digest in the registry, or record the digest of a "
    "version registered before digests existed.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
def cli() -> None:
    """`python -m modules integrity verify|stamp ...`."""
    import mlflow

    from modules.settings import load_settings

    # The registry only (not modules.tracking.client, which imports this module to check every load).
    uri = load_settings().mlflow_tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


@cli.command("verify", short_help="download a model and compare its files with its digest tag")
@click.argument("model")
def verify_command(model: str) -> None:
    """Download MODEL (models:/NAME/VERSION, models:/NAME@ALIAS or models:/m-...) and compare its files
    with its digest tag."""
    with tempfile.TemporaryDirectory(prefix="verified-model-") as tmp:
        download_verified(model, tmp)
    print(f"{model}: files match their digest")


@cli.command("stamp", short_help="record the digest of a version that has none (check its files first)")
@click.argument("name")
@click.argument("version")
def stamp_command(name: str, version: str) -> None:
    """Record the digest of registered model NAME, version VERSION, which has none (check its files first)."""
    digest = stamp(name, version)
    print(f"model {name} v{version}: recorded {DIGEST_TAG}={digest}")
