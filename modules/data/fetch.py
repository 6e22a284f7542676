"""Fetch the EEG dataset (Kaggle, or the offline sample), and the `data` command line.

`fetch_dataset` downloads the Kaggle EEG emotions file when credentials and network exist and
builds the offline sample otherwise. The command line (`python -m modules data fetch|validate`)
lives here, above the loader, the splitter and the sample builder, so that none of those
imports another one back.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import click

from modules.data.loading import (
    DATA_MANIFEST,
    KAGGLE_DATASET,
    KAGGLE_FILE,
    MISSING_POLICIES,
    _one_line,
    load_dataset,
    metadata_path,
    read_metadata,
)
from modules.errors import ConfigurationError
from modules.files import write_json_atomically

# --------------------------------------------------------------------------- fetching


def kaggle_credentials() -> str | None:
    """Where Kaggle credentials were found, or None. Looked up without importing kaggle."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    home = Path.home()
    folders = [Path(os.environ["KAGGLE_CONFIG_DIR"])] if os.environ.get("KAGGLE_CONFIG_DIR") else []
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"
    folders += [home / ".kaggle", xdg]
    for folder in folders:
        for name in ("kaggle.json", "access_token"):
            if (folder / name).is_file():
                return str(folder / name)
    return None


def kaggle_source(manifest: Path = DATA_MANIFEST) -> tuple[str, str]:
    """The Kaggle dataset and file to download: `data/manifest.json` when present, else the EEG data."""
    try:
        values = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return KAGGLE_DATASET, KAGGLE_FILE
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"{manifest}: not readable JSON ({_one_line(exc)})") from None
    return str(values.get("kaggle_dataset") or KAGGLE_DATASET), str(values.get("file") or KAGGLE_FILE)


def _download_from_kaggle(folder: Path, dataset: str, file: str) -> Path:
    """Download one file of a Kaggle dataset into `folder` with the kaggle package; returns its path."""
    # Imported here: importing kaggle authenticates at once and prints help or exits without credentials.
    with contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi

        api = KaggleApi()
        api.authenticate()
        api.dataset_download_file(dataset, file, path=str(folder), force=True, quiet=True)
    target = folder / file
    archive = folder / f"{file}.zip"
    if not target.is_file() and archive.is_file():
        # Kaggle serves large files zipped.
        with zipfile.ZipFile(archive) as bundle:
            member = next(name for name in bundle.namelist() if name.endswith(".csv"))
            with bundle.open(member) as source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink)
    if not target.is_file():
        raise FileNotFoundError(f"the download did not contain {file}")
    return target


def _describe_failure(exc: BaseException) -> str:
    """Why a Kaggle download failed, in a few words (the library's messages run to several lines)."""
    try:
        import requests
    except ImportError:  # pragma: no cover - requests comes with kaggle
        requests = None
    if requests is not None and isinstance(exc, requests.exceptions.ConnectionError):
        return "cannot reach api.kaggle.com: no network, or a proxy refused the connection"
    if requests is not None and isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status in (401, 403):
            return f"Kaggle refused the credentials (HTTP {status}); check them or accept the dataset's terms"
        return f"Kaggle answered HTTP {status}"
    if isinstance(exc, SystemExit):
        return "the kaggle package could not authenticate"
    return f"{type(exc).__name__}: {_one_line(exc) or 'no message'}"


def _build_offline_sample(out: Path, seed: int, force: bool) -> str:
    """Build the simulated sample (modules.data.sample, imported only when needed); one line about it."""
    from modules.data.sample import build_sample

    info = build_sample(out, seed=seed, force=force)
    return f"Offline sample: {info.message}."


def _fetch_from_kaggle(out: Path) -> None:
    """Download into a temporary folder beside `out`, validate, then move into place atomically."""
    with tempfile.TemporaryDirectory(prefix=".kaggle-", dir=out.parent) as tmp:
        kaggle_dataset, kaggle_file = kaggle_source()
        downloaded = _download_from_kaggle(Path(tmp), kaggle_dataset, kaggle_file)
        dataset = load_dataset(downloaded)
        metadata = {
            "source": "kaggle",
            "dataset": kaggle_dataset,
            "file": kaggle_file,
            "downloaded_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "sha256": dataset.digest,
            "rows": len(dataset.features),
        }
        meta = metadata_path(out)
        # Old metadata goes first: a CSV without metadata reads as "user", never as a stale "sample".
        meta.unlink(missing_ok=True)
        os.replace(downloaded, out)
        write_json_atomically(meta, metadata)


def fetch_dataset(out: str | os.PathLike, force: bool = False, seed: int = 42) -> str:
    """Put the EEG dataset at `out`: "kaggle" (downloaded), "sample" (built offline) or "existing" (kept)."""
    out = Path(out)
    if out.is_dir():
        raise ConfigurationError(
            f"--out {out} is a folder; give the CSV file's path, e.g. {out / KAGGLE_FILE}"
        )
    if out.exists() and not force:
        print(
            f"Dataset {out} already exists (source: {read_metadata(out).get('source', 'user')}); keeping it. "
            f"Run `make data FORCE=1` (or pass --force) to replace it."
        )
        return "existing"
    out.parent.mkdir(parents=True, exist_ok=True)
    where = kaggle_credentials()
    if where is None:
        print(
            "No Kaggle credentials (KAGGLE_USERNAME/KAGGLE_KEY or ~/.kaggle/kaggle.json): "
            "building the offline sample instead."
        )
    else:
        try:
            _fetch_from_kaggle(out)
        except (Exception, SystemExit) as exc:  # no network, bad credentials, Kaggle errors: all one line
            reason = _describe_failure(exc)
            if out.exists() and read_metadata(out).get("source") == "kaggle":
                print(f"Kaggle download failed ({reason}); keeping the existing Kaggle dataset {out}.")
                return "existing"
            print(f"Kaggle download failed ({reason}): building the offline sample instead.")
        else:
            print(f"Downloaded {'/'.join(kaggle_source())} to {out} (credentials: {where}).")
            return "kaggle"
    print(_build_offline_sample(out, seed=seed, force=force))
    return "sample"


# --------------------------------------------------------------------------- command line


@click.group(
    "data",
    help="Fetch the EEG emotions dataset, or validate any classification CSV.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
def cli() -> None:
    """`python -m modules data`."""


@cli.command(
    "fetch",
    short_help="download emotions.csv from Kaggle, or build the offline sample without credentials",
    help="Download birdy654/eeg-brainwave-dataset-feeling-emotions (emotions.csv) with Kaggle credentials "
    "(KAGGLE_USERNAME/KAGGLE_KEY or ~/.kaggle/kaggle.json); otherwise build the offline sample.",
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="where to write the CSV (default: DATA_PATH)"
)
@click.option("--force", is_flag=True, help="replace an existing dataset")
@click.option("--seed", type=int, default=None, help="seed of the offline sample (default: SEED)")
def fetch_command(out: Path | None, force: bool, seed: int | None) -> None:
    from modules.settings import get_settings

    settings = get_settings()
    fetch_dataset(out or settings.data_path, force=force, seed=settings.seed if seed is None else seed)


@cli.command(
    "validate",
    short_help="check a CSV and print a short summary",
    help="Load and split a CSV as the pipeline would and print rows, features, classes, source and the "
    "split; exit non-zero with one line naming the problem otherwise.",
)
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--label-column", default=None, help="name of the label column (default: LABEL_COLUMN)")
@click.option(
    "--missing",
    type=click.Choice(MISSING_POLICIES),
    default=None,
    help="drop rows with missing values or reject the file (default: MISSING_VALUES)",
)
@click.option(
    "--min-class-rows",
    type=int,
    default=None,
    help="fewest rows a class may have (default: CV_FOLDS, the number of cross-validation folds)",
)
@click.option(
    "--cv-folds",
    type=int,
    default=None,
    help="check that the split (SPLIT_PROTOCOL, TEST_SIZE, SEED) leaves every class enough training rows "
    "for this many CV folds (default: CV_FOLDS)",
)
def validate_command(
    path: Path,
    label_column: str | None,
    missing: str | None,
    min_class_rows: int | None,
    cv_folds: int | None,
) -> None:
    from modules.data.splitting import make_split
    from modules.settings import get_settings

    settings = get_settings()
    cv_folds = settings.cv_folds if cv_folds is None else cv_folds
    dataset = load_dataset(
        path,
        label_column or settings.label_column,
        missing=missing or settings.missing_values,
        min_class_rows=cv_folds if min_class_rows is None else min_class_rows,
    )
    # The split and its CV folds need more rows per class than the folds alone: check them as tuning will.
    split = make_split(
        dataset.features,
        dataset.labels,
        protocol=settings.split_protocol,
        test_size=settings.test_size,
        seed=settings.seed,
        n_splits=cv_folds,
    )
    print(dataset.summary())
    print(f"split: {split.describe()}; {cv_folds}-fold cross-validation possible")
