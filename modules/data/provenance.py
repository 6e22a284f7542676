"""Which data production may train on: the dataset whose sha256 is pinned in `data/manifest.json`.

A local run trains on whatever it is given. A production run (`PIPELINE_ENV=production`)
refuses, before training and in one line, the synthetic sample, a file whose digest
differs from the pinned one, and a manifest with no digest. After downloading the real
dataset, pin it and commit the manifest:

    make data
    python -m modules provenance pin data/emotions.csv
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import click

from modules.data.loading import DATA_MANIFEST, load_dataset
from modules.errors import DataValidationError
from modules.files import write_json_atomically
from modules.settings import PROJECT_ROOT, Settings

_SHA256 = re.compile(r"[0-9a-f]{64}")
# Enough of a digest to tell two apart in a message.
_SHOWN = 12


def _shown(path: Path) -> str:
    """A path as people type it: relative to the project when inside it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def _pin_command(data_path: Path) -> str:
    return f"`make data` then `python -m modules provenance pin {_shown(data_path)}`, and commit the manifest"


def read_manifest(manifest: Path = DATA_MANIFEST) -> dict[str, Any]:
    """The manifest as a dict; one-line DataValidationError when it is missing or not a JSON object."""
    manifest = Path(manifest)
    try:
        values = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataValidationError(f"{_shown(manifest)}: no such file; expected the data manifest") from None
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataValidationError(f"{_shown(manifest)}: not readable JSON ({reason})") from None
    if not isinstance(values, dict):
        raise DataValidationError(f"{_shown(manifest)}: expected a JSON object, got {type(values).__name__}")
    return values


def pinned_digest(manifest: Path = DATA_MANIFEST) -> str | None:
    """The sha256 pinned in the manifest (lowercase), None when there is none."""
    manifest = Path(manifest)
    pinned = read_manifest(manifest).get("sha256")
    if pinned in (None, ""):
        return None
    if not isinstance(pinned, str) or not _SHA256.fullmatch(pinned.strip().lower()):
        raise DataValidationError(
            f"{_shown(manifest)}: sha256 {pinned!r} is not a sha256 digest (64 hexadecimal characters)"
        )
    return pinned.strip().lower()


def verify_for_environment(
    settings: Settings,
    *,
    data_path: str | os.PathLike,
    digest: str,
    source: str,
    manifest: Path | None = None,
) -> str:
    """Refuse data production cannot vouch for; returns one line saying what was verified.

    `digest` and `source` are the dataset's, already computed by the caller (`Dataset.digest`,
    `Dataset.source`): nothing is hashed here. Local runs pass anything. Production refuses
    the synthetic sample, a manifest without a digest and a digest that differs from the
    pinned one, each with a DataValidationError that names the file.
    """
    if not settings.is_production:
        return "local: data not checked against the manifest"
    data_path = Path(data_path)
    # The settings' DATA_MANIFEST unless the caller names one.
    manifest = Path(manifest or settings.data_manifest or DATA_MANIFEST)
    if source == "sample":
        raise DataValidationError(
            f"{_shown(data_path)} is the synthetic sample (source: sample); production trains only on "
            f"the real dataset pinned in {_shown(manifest)}: {_pin_command(data_path)}"
        )
    pinned = pinned_digest(manifest)
    if pinned is None:
        raise DataValidationError(
            f"{_shown(manifest)} pins no sha256, so production cannot vouch for {_shown(data_path)} "
            f"(sha256 {digest[:_SHOWN]}...): {_pin_command(data_path)}"
        )
    if digest.lower() != pinned:
        raise DataValidationError(
            f"{_shown(data_path)} has sha256 {digest[:_SHOWN]}..., but {_shown(manifest)} pins "
            f"{pinned[:_SHOWN]}...; production trains only on the pinned data (another file, or "
            f"it changed since it was pinned)"
        )
    return f"production: digest {pinned[:_SHOWN]}... matches {_shown(manifest)}"


def pin_dataset(
    data_path: str | os.PathLike,
    *,
    manifest: Path = DATA_MANIFEST,
    label_column: str | None = None,
) -> dict[str, Any]:
    """Record the dataset's sha256, size and rows in the manifest; returns the new manifest.

    The file is loaded as the pipeline would load it, so only a usable table is pinned. The
    synthetic sample and a file other than the one the manifest names are refused.
    """
    data_path = Path(data_path)
    manifest = Path(manifest)
    values = read_manifest(manifest)
    named = values.get("file")
    if named and named != data_path.name:
        raise DataValidationError(
            f"{_shown(manifest)} names the file {named!r}, not {data_path.name!r}; "
            f'edit its "file" first if the pipeline should train on {data_path.name}'
        )
    dataset = load_dataset(data_path, label_column or str(values.get("label_column") or "label"))
    if dataset.source == "sample":
        raise DataValidationError(
            f"{_shown(data_path)} is the synthetic sample (source: sample); pin the real dataset "
            f"(`make data` with Kaggle credentials, FORCE=1 to replace the sample)"
        )
    values.update(
        {
            "sha256": dataset.digest,
            "size_bytes": data_path.stat().st_size,
            "rows": len(dataset.features) + dataset.dropped_rows,
        }
    )
    write_json_atomically(manifest, values)
    return values


@click.group(
    "provenance",
    help="Pin the dataset production trains on (its sha256 in data/manifest.json), or check a dataset as "
    "the pipeline would before training.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
def cli() -> None:
    """`python -m modules provenance`."""


def _dataset_options(command: Any) -> Any:
    command = click.option(
        "--label-column",
        default=None,
        help="label column (default: pin: the manifest's label_column; verify: LABEL_COLUMN)",
    )(command)
    command = click.option(
        "--manifest",
        type=click.Path(path_type=Path),
        default=DATA_MANIFEST,
        help=f"the manifest (default: {_shown(DATA_MANIFEST)})",
    )(command)
    return click.argument("path", type=click.Path(path_type=Path))(command)


@cli.command(
    "pin",
    short_help="write a dataset's sha256, size and rows into the manifest",
    help="Load the dataset as the pipeline would, then write its sha256, size and rows into the manifest "
    "(atomically). Refuses the synthetic sample. Commit the manifest afterwards.",
)
@_dataset_options
def pin_command(path: Path, manifest: Path, label_column: str | None) -> None:
    values = pin_dataset(path, manifest=manifest, label_column=label_column)
    print(
        f"Pinned {_shown(path)} (sha256 {values['sha256'][:_SHOWN]}..., {values['rows']} rows) "
        f"in {_shown(manifest)}; commit it."
    )


@cli.command(
    "verify",
    short_help="check a dataset against the manifest for PIPELINE_ENV",
    help="Check a dataset as the pipeline does before training: nothing locally; in production "
    "(PIPELINE_ENV=production) not the sample and the sha256 pinned in the manifest.",
)
@_dataset_options
def verify_command(path: Path, manifest: Path, label_column: str | None) -> None:
    from modules.settings import get_settings

    settings = get_settings()
    dataset = load_dataset(path, label_column or settings.label_column)
    print(
        verify_for_environment(
            settings, data_path=path, digest=dataset.digest, source=dataset.source, manifest=manifest
        )
    )
