"""A folder of Muse recordings -> one dataset in the published format, with the metadata of every row.

    python -m modules features DIR --labels labels.csv --out data/mine.csv
    python -m modules features DIR --out data/mine.csv      # labels from the folders

Where the labels come from:

* `--labels labels.csv`: one line per recording, columns `file` (its path, relative to DIR),
  `label` (e.g. POSITIVE) and optionally `subject` (who was recorded). Other CSV files under
  DIR are left out, named in one warning.
* Without `--labels`, the folders say it: `DIR/LABEL/*.csv`, or `DIR/SUBJECT/LABEL/*.csv` when
  the level above the label names the subject.

Every recording (a muse-lsl / BlueMuse or Mind Monitor CSV, read by `modules.data.muse_exports`) is
turned into the published feature rows (`modules.data.eeg_features.export_to_rows`) in a process
pool over all cores (`jobs`). The dataset CSV has exactly the published header; its metadata
file beside it (`modules.data.loading.metadata_path`) records, for every row, its recording
(`row_recording`, the file's path under DIR) and, when known, its subject (`row_subject`), plus
per recording its label, rows, duration, segments, gaps and effective sampling rate. The grouped
split then uses the true recordings instead of rebuilding chains, and `SPLIT_PROTOCOL=subject`
holds out whole subjects (`modules.data.splitting.groups_from_metadata`).

A bad recording (unknown format, too short, long dropout, ...) stops the build with its one-line
reason and nothing written; with `skip_bad` (`--skip-bad`) it is reported, left out and listed
in the metadata. Both files are written to temporary files and renamed into place (metadata
first), so a crash never leaves a half-written dataset. An existing `out` is replaced only with
`force` (`--force`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import click
import pandas as pd

from modules.data.eeg_features import (
    CSV_FLOAT_FORMAT,
    check_label,
    export_to_rows,
    format_row_lines,
    published_header,
)
from modules.data.loading import metadata_path, quote_value
from modules.data.muse_exports import SAMPLING_RATE, SIGNALS, read_muse_export
from modules.errors import ConfigurationError, DataValidationError, OperationalMLError
from modules.files import write_atomically

Progress = Callable[[int, int, str], None]
RECORDING_SUFFIXES = (".csv", ".csv.gz")
LABELS_COLUMNS = ("file", "label", "subject")


@dataclass(frozen=True)
class PlannedRecording:
    """One recording to read: its file, its id (path under the folder), label and subject."""

    path: Path
    id: str
    label: str
    subject: str | None = None


@dataclass(frozen=True)
class RecordingResult:
    """What one recording gave: its rows as published CSV lines, or the reason it was refused."""

    index: int
    lines: str = ""
    rows: int = 0
    error: str | None = None
    details: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class BuildInfo:
    """What `build_dataset` did."""

    path: Path
    metadata_path: Path
    rows: int
    recordings: int
    skipped: list[tuple[str, str]]
    subjects: int | None
    class_counts: dict[str, int]
    warnings: list[str]
    seconds: float
    jobs: int

    @property
    def message(self) -> str:
        """One line for people."""
        subjects = f", {self.subjects} subjects" if self.subjects else ""
        classes = ", ".join(f"{label} {count}" for label, count in sorted(self.class_counts.items()))
        skipped = (
            f"; skipped {len(self.skipped)} bad file{'s' if len(self.skipped) != 1 else ''}"
            if self.skipped
            else ""
        )
        return (
            f"wrote {self.rows} rows ({classes}) from {self.recordings} recordings{subjects} to {self.path}, "
            f"metadata in {self.metadata_path}{skipped} ({self.seconds:.1f} s, {self.jobs} processes)"
        )


# --------------------------------------------------------------------------- what to read


def _is_recording(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and not name.startswith(".") and name.endswith(RECORDING_SUFFIXES)


def _recordings_under(folder: Path) -> list[Path]:
    """CSV files under the folder (hidden files and folders left out), in a stable order."""
    found = [
        p
        for p in folder.rglob("*")
        if _is_recording(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _label_of(label: str, where: str) -> str:
    try:
        return check_label(label.strip())
    except ConfigurationError:
        raise DataValidationError(
            f"{where}: label {quote_value(label)} must be a non-empty word without commas or quotes"
        ) from None


def plan_from_folders(folder: Path) -> list[PlannedRecording]:
    """Labels (and subjects) from the folder names: DIR/LABEL/*.csv or DIR/SUBJECT/LABEL/*.csv."""
    files = _recordings_under(folder)
    if not files:
        raise DataValidationError(
            f"{folder}: no CSV recordings found; expected DIR/LABEL/*.csv or DIR/SUBJECT/LABEL/*.csv "
            "(or pass --labels labels.csv)"
        )
    depths = {len(p.relative_to(folder).parts) for p in files}
    loose = [p for p in files if len(p.relative_to(folder).parts) == 1]
    if loose:
        raise DataValidationError(
            f"{loose[0]} lies directly in {folder}: put recordings in DIR/LABEL/ (or DIR/SUBJECT/LABEL/) "
            "folders, or list them in a labels.csv (columns file, label[, subject]) and pass --labels"
        )
    if len(depths) > 1 or max(depths) > 3:
        shallow = min(files, key=lambda p: len(p.relative_to(folder).parts))
        deep = max(files, key=lambda p: len(p.relative_to(folder).parts))
        raise DataValidationError(
            f"{folder}: recordings lie at different folder depths ({shallow.relative_to(folder).as_posix()} "
            f"and {deep.relative_to(folder).as_posix()}); expected all in DIR/LABEL/ or all in "
            "DIR/SUBJECT/LABEL/ (or pass --labels labels.csv)"
        )
    plan = []
    for path in files:
        parts = path.relative_to(folder).parts
        label = _label_of(parts[-2], f"{folder}/{'/'.join(parts[:-1])}")
        subject = parts[0] if len(parts) == 3 else None
        plan.append(PlannedRecording(path, path.relative_to(folder).as_posix(), label, subject))
    return plan


def plan_from_labels(folder: Path, labels: Path) -> tuple[list[PlannedRecording], list[str]]:
    """Recordings listed in labels.csv (file, label[, subject]); a warning names unlisted CSV files."""
    if not labels.is_file():
        raise ConfigurationError(
            f"--labels {labels}: file not found (expected a CSV with columns file, label)"
        )
    try:
        table = pd.read_csv(labels, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        reason = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise DataValidationError(f"{labels}: not a readable CSV file ({reason})") from None
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = [c for c in LABELS_COLUMNS[:2] if c not in table.columns]
    if missing:
        raise DataValidationError(
            f"{labels}: no {' or '.join(repr(m) for m in missing)} column (expected columns file, label and "
            f"optionally subject; found {', '.join(repr(c) for c in table.columns)})"
        )
    if table.empty:
        raise DataValidationError(f"{labels}: no recordings listed (a header only)")
    has_subjects = "subject" in table.columns
    plan: list[PlannedRecording] = []
    seen: dict[str, int] = {}
    for row, record in enumerate(table.itertuples(index=False), start=2):
        where = f"{labels} line {row}"
        name = str(record.file).strip()
        if not name:
            raise DataValidationError(
                f"{where}: empty 'file'; expected a recording's path relative to {folder}"
            )
        path = Path(name) if Path(name).is_absolute() else folder / name
        key = path.resolve().as_posix()
        if key in seen:
            raise DataValidationError(
                f"{where}: {quote_value(name)} is listed twice (also on line {seen[key]})"
            )
        seen[key] = row
        subject = str(record.subject).strip() if has_subjects else None
        if has_subjects and not subject:
            raise DataValidationError(
                f"{where}: empty 'subject' for {quote_value(name)}; give every recording one"
            )
        recording_id = path.relative_to(folder).as_posix() if path.is_relative_to(folder) else name
        plan.append(PlannedRecording(path, recording_id, _label_of(str(record.label), where), subject))
    listed = {p.path.resolve() for p in plan}
    unlisted = [
        p.relative_to(folder).as_posix()
        for p in _recordings_under(folder)
        if p.resolve() not in listed and p.resolve() != labels.resolve()
    ]
    warnings = []
    if unlisted:
        shown = ", ".join(unlisted[:5]) + (f", ... ({len(unlisted)} in all)" if len(unlisted) > 5 else "")
        are = "files are" if len(unlisted) != 1 else "file is"
        warnings.append(f"{folder}: {len(unlisted)} CSV {are} not in {labels.name} and left out: {shown}")
    return plan, warnings


# --------------------------------------------------------------------------- one recording


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 4)


def extract_recording(
    index: int, planned: PlannedRecording, sampling_rate: float = SAMPLING_RATE, zero_aux: bool = False
) -> RecordingResult:
    """Read one recording and format its rows; a bad recording gives its one-line reason as `error`."""
    try:
        if not planned.path.is_file():
            raise DataValidationError(f"{planned.path}: file not found")
        export = read_muse_export(planned.path, sampling_rate=sampling_rate, zero_aux=zero_aux)
        rows = export_to_rows(export, planned.label)
    except OperationalMLError as exc:
        return RecordingResult(index, error=str(exc))
    details = {
        "format": export.format,
        "duration_s": round(export.duration_s, 3),
        "segments": len(export.segments),
        "gaps": [{"row": g.row, "seconds": round(g.seconds, 4)} for g in export.gaps],
        "effective_rate_hz": _finite(export.effective_rate),
        "max_jitter_ms": round(1000 * export.max_jitter_s, 2),
        "interpolated_values": export.filled_values,
    }
    return RecordingResult(index, format_row_lines(rows), len(rows), None, details, export.warnings)


def _limit_threads() -> None:
    """One BLAS thread per worker process: the pool already uses every core."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass


def _run_all(
    plan: list[PlannedRecording],
    jobs: int,
    sampling_rate: float,
    zero_aux: bool,
    on_result: Callable[[RecordingResult], bool],
) -> None:
    """Extract every recording, `jobs` at a time; `on_result` returns False to stop the build."""
    if jobs == 1:
        for index, planned in enumerate(plan):
            if not on_result(extract_recording(index, planned, sampling_rate, zero_aux)):
                return
        return
    with ProcessPoolExecutor(max_workers=jobs, initializer=_limit_threads) as pool:
        pending: set[Future] = {
            pool.submit(extract_recording, index, planned, sampling_rate, zero_aux)
            for index, planned in enumerate(plan)
        }
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                if not on_result(future.result()):
                    for other in pending:
                        other.cancel()
                    return


# --------------------------------------------------------------------------- the dataset


def build_dataset(
    folder: str | Path,
    out: str | Path,
    labels: str | Path | None = None,
    skip_bad: bool = False,
    jobs: int | None = None,
    progress: Progress | None = None,
    *,
    sampling_rate: float = SAMPLING_RATE,
    zero_aux: bool = False,
    force: bool = False,
) -> BuildInfo:
    """Turn a folder of Muse recordings into one dataset CSV (published format) and its metadata.

    `labels` is a labels.csv (file, label[, subject]); without it the labels (and subjects) come
    from the folders. `jobs` processes extract the recordings (default: every core). A bad
    recording raises DataValidationError and nothing is written, unless `skip_bad`. `progress`
    is called as progress(done, total, message) after every recording.
    """
    began = time.perf_counter()
    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise ConfigurationError(f"{folder}: not a folder (expected a folder of Muse CSV recordings)")
    if out.is_dir():
        raise ConfigurationError(f"--out {out} is a folder; expected a CSV file path such as data/mine.csv")
    if out.exists() and not force:
        raise ConfigurationError(f"{out} already exists; pass --force to replace it")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ConfigurationError(f"--jobs {jobs} must be a whole number of at least 1")
    if labels is not None:
        plan, warnings = plan_from_labels(folder, Path(labels))
    else:
        plan, warnings = plan_from_folders(folder), []
    subjects_known = all(p.subject is not None for p in plan)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(plan)))

    results: dict[int, RecordingResult] = {}
    failure: list[str] = []

    def collect(result: RecordingResult) -> bool:
        results[result.index] = result
        planned = plan[result.index]
        warnings.extend(result.warnings)
        if result.error is not None and not skip_bad:
            failure.append(result.error)
        if progress:
            if result.error is None:
                state = f"{result.rows} rows"
            else:
                state = f"{'skipped' if skip_bad else 'refused'}: {result.error}"
            progress(len(results), len(plan), f"{planned.id} ({planned.label}): {state}")
        return not failure

    _run_all(plan, jobs, float(sampling_rate), zero_aux, collect)
    if failure:
        raise DataValidationError(f"{failure[0]}; nothing written (pass --skip-bad to leave bad files out)")
    used = [(plan[i], results[i]) for i in sorted(results) if results[i].error is None]
    skipped = [(plan[i].id, results[i].error or "") for i in sorted(results) if results[i].error is not None]
    if not used:
        raise DataValidationError(
            f"{folder}: none of the {len(plan)} recordings gave rows ({skipped[0][1]}); nothing written"
        )

    text = ",".join(published_header()) + "\n" + "".join(result.lines for _, result in used)
    payload = text.encode("utf-8")
    row_recording = [planned.id for planned, result in used for _ in range(result.rows)]
    class_counts: dict[str, int] = {}
    for planned, result in used:
        class_counts[planned.label] = class_counts.get(planned.label, 0) + result.rows
    metadata = {
        "source": "user",
        "built_from": "muse-recordings",
        "folder": str(folder),
        "labels_file": None if labels is None else str(labels),
        "rows": len(row_recording),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "sampling_rate_hz": float(sampling_rate),
        "signals": list(SIGNALS),
        "float_format": CSV_FLOAT_FORMAT,
        "recordings": [
            {
                "id": planned.id,
                "label": planned.label,
                "subject": planned.subject,
                "rows": result.rows,
                **result.details,
                "warnings": list(result.warnings),
            }
            for planned, result in used
        ],
        "skipped": [{"file": file, "reason": reason} for file, reason in skipped],
        "row_recording": row_recording,
    }
    if subjects_known:
        metadata["row_subject"] = [planned.subject for planned, result in used for _ in range(result.rows)]
    # Metadata first, CSV last: a complete CSV on disk always has the metadata describing it.
    try:
        write_atomically(metadata_path(out), json.dumps(metadata, indent=1).encode("utf-8"))
        write_atomically(out, payload)
    except OSError as exc:
        raise ConfigurationError(f"cannot write {out}: {exc.strerror or exc}") from None
    return BuildInfo(
        path=out,
        metadata_path=metadata_path(out),
        rows=len(row_recording),
        recordings=len(used),
        skipped=skipped,
        subjects=len({planned.subject for planned, _ in used}) if subjects_known else None,
        class_counts=class_counts,
        warnings=warnings,
        seconds=time.perf_counter() - began,
        jobs=jobs,
    )


@click.command(
    "features",
    help="Build one dataset in the published format (Bird et al. features, published header) from a folder "
    "of Muse recordings (muse-lsl / BlueMuse or Mind Monitor CSVs), with a metadata file that records every "
    "row's recording and subject. Labels come from --labels labels.csv (columns file, label[, subject]) or "
    "from the folders: DIR/LABEL/*.csv or DIR/SUBJECT/LABEL/*.csv.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--labels",
    type=click.Path(path_type=Path),
    default=None,
    help="labels.csv: file (relative to FOLDER), label, optional subject",
)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="dataset CSV to write, e.g. data/mine.csv"
)
@click.option("--skip-bad", is_flag=True, help="report and leave out bad recordings")
@click.option(
    "--sampling-rate",
    type=float,
    default=float(SAMPLING_RATE),
    help=f"the devices' sampling rate in Hz (default {SAMPLING_RATE})",
)
@click.option("--zero-aux", is_flag=True, help="fill a missing right AUX signal with zeros")
@click.option("--jobs", type=int, default=None, help="processes (default: every core)")
@click.option("--force", is_flag=True, help="replace an existing --out file")
def cli(
    folder: Path,
    labels: Path | None,
    out: Path,
    skip_bad: bool,
    sampling_rate: float,
    zero_aux: bool,
    jobs: int | None,
    force: bool,
) -> None:
    """`python -m modules features`: a folder of Muse recordings -> one dataset CSV and its metadata."""

    def report(done: int, total: int, message: str) -> None:
        print(f"  [{done}/{total}] {message}", file=sys.stderr, flush=True)

    info = build_dataset(
        folder,
        out,
        labels=labels,
        skip_bad=skip_bad,
        jobs=jobs,
        progress=report,
        sampling_rate=sampling_rate,
        zero_aux=zero_aux,
        force=force,
    )
    for warning in info.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for file, reason in info.skipped:
        print(f"skipped {file}: {reason}", file=sys.stderr)
    print(info.message)
