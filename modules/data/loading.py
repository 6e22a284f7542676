"""Load, validate and describe a tabular classification dataset.

`load_dataset` turns any CSV with numeric feature columns and one label column into a
`Dataset`, or raises `DataValidationError` with one line that names the file, column or
value at fault. Fetching the EEG dataset and the `data` command line are in
`modules.data.fetch` (`python -m modules data fetch|validate`).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import io
import json
import logging
import lzma
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from modules.errors import ConfigurationError, DataValidationError
from modules.settings import PROJECT_ROOT

logger = logging.getLogger(__name__)

KAGGLE_DATASET = "birdy654/eeg-brainwave-dataset-feeling-emotions"
KAGGLE_FILE = "emotions.csv"
# Names the dataset the pipeline trains on; a change to it retrains in the cloud pipeline.
DATA_MANIFEST = PROJECT_ROOT / "data" / "manifest.json"
MISSING_POLICIES = ("drop", "reject")
SOURCES = ("kaggle", "sample", "user")
# Bytes looked at to tell text from binary; a NUL byte never appears in a CSV text file.
_SNIFF_BYTES = 8192


@dataclass
class Dataset:
    """A validated classification table: float64 features, string labels, and where it came from."""

    features: pd.DataFrame
    labels: pd.Series
    path: Path
    digest: str
    source: str
    dropped_rows: int = 0

    @property
    def classes(self) -> list[str]:
        """The distinct labels, sorted (the order LabelEncoder uses)."""
        return sorted(self.labels.unique().tolist())

    @property
    def class_counts(self) -> dict[str, int]:
        """Rows per class, in `classes` order."""
        counts = self.labels.value_counts()
        return {name: int(counts[name]) for name in self.classes}

    def summary(self) -> str:
        """A few human-readable lines: rows, features, classes, dropped rows, source, digest."""
        classes = ", ".join(f"{name} {count}" for name, count in self.class_counts.items())
        return "\n".join(
            [
                f"dataset: {self.path}",
                f"rows: {len(self.features)} (dropped for missing values: {self.dropped_rows})",
                f"features: {self.features.shape[1]}",
                f"classes: {len(self.classes)} ({classes})",
                f"source: {self.source}",
                f"sha256: {self.digest[:12]}",
            ]
        )


# --------------------------------------------------------------------------- loading

# Longest value (a header, a cell, a class name) quoted whole in a message; longer ones are cut.
MESSAGE_VALUE_CHARS = 200
# Above this many columns, tracking records `dataset_schema_summary` instead of the full schema
# (MLflow refuses a dataset schema of about 19,000 columns as too long; the EEG data has 2548).
WIDE_DATASET_COLUMNS = 10_000
# Magic bytes of compressed files we read, and of files we can name but not read.
_COMPRESSIONS = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz"}
_NOT_CSV = {
    b"PK\x03\x04": "a ZIP archive (or an .xlsx workbook); extract or export the CSV first",
    b"PAR1": "a Parquet file; export it as CSV first",
    b"\xd0\xcf\x11\xe0": "an Office document (.xls); export it as CSV first",
    b"\x28\xb5\x2f\xfd": "zstd-compressed; decompress it first (`zstd -d`)",
    b"7z\xbc\xaf\x27\x1c": "a 7-Zip archive; extract the CSV first",
}
# Byte-order marks, longest first (the UTF-32 LE mark starts with the UTF-16 LE one).
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


def _clip(text: str, limit: int = MESSAGE_VALUE_CHARS) -> str:
    """`text`, or its first `limit` characters, `...` and its length: one line stays readable."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def quote_value(value: object, limit: int = MESSAGE_VALUE_CHARS) -> str:
    """repr() of a value for a message, cut like `_clip`: `'mean_0_a;mean_1_a'... (27000 characters)`."""
    text = str(value)
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def _abbreviate(names: Sequence[str], shown: int = 2) -> str:
    """`'a', 'b', ... (2549 columns)`: enough of a header to recognise it on one line."""
    quoted = [quote_value(name, MESSAGE_VALUE_CHARS // 2) for name in names]
    if len(quoted) <= shown + 2:
        return ", ".join(quoted) + f" ({len(quoted)} columns)"
    return ", ".join(quoted[:shown]) + f", ... ({len(quoted)} columns)"


def _one_line(text: object, limit: int = MESSAGE_VALUE_CHARS) -> str:
    """First line of a library message, shortened: our errors are one line."""
    line = next((part.strip() for part in str(text).splitlines() if part.strip()), "")
    return _clip(line, limit)


_WARNED: set[tuple[str, ...]] = set()


def _warn_once(key: tuple[str, ...], message: str, *args: object) -> None:
    """Log a warning once per process: the same file (same content) loaded again says it no more."""
    if key in _WARNED:
        return
    _WARNED.add(key)
    logger.warning(message, *args)


def normalise_column_name(name: str) -> str:
    """Strip numpy `savetxt`'s `# ` comment prefix (first header of emotions.csv) and blanks."""
    name = name.strip().lstrip("\ufeff")
    if name.startswith("#"):
        name = name[1:]
    return name.strip()


@dataclass(frozen=True)
class CsvFormat:
    """How a CSV file is stored: its compression (None, "gzip", "bz2", "xz") and text encoding."""

    compression: str | None = None
    encoding: str = "utf-8"

    def describe(self) -> str:
        """`gzip-compressed UTF-16`: for messages."""
        parts = [f"{self.compression}-compressed"] if self.compression else []
        if self.encoding != "utf-8":
            parts.append(self.encoding.upper().replace("-SIG", " with a byte-order mark"))
        return " ".join(parts) or "UTF-8"

    def read_options(self) -> dict[str, str | None]:
        """`pd.read_csv(path, **fmt.read_options())`: the compression found by content (never pandas'
        guess from the file name) and the encoding."""
        return {"compression": self.compression, "encoding": self.encoding}


def _open_binary(path: Path, compression: str | None) -> BinaryIO:
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "bz2":
        return bz2.open(path, "rb")
    if compression == "xz":
        return lzma.open(path, "rb")
    return path.open("rb")


def _text_encoding(head: bytes) -> str | None:
    """The encoding of a text's first bytes: a byte-order mark, UTF-16 without one, or UTF-8; None for binary."""
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding
    if b"\x00" not in head:
        return "utf-8"
    # ASCII text in UTF-16 without a byte-order mark: every other byte is NUL.
    sample = head[: len(head) - len(head) % 2][:512]
    if len(sample) >= 4:
        even, odd = sample[0::2], sample[1::2]
        if odd.count(0) == len(odd) and even.count(0) == 0:
            return "utf-16-le"
        if even.count(0) == len(even) and odd.count(0) == 0:
            return "utf-16-be"
    return None


def detect_csv_format(path: str | os.PathLike) -> CsvFormat:
    """Compression (by magic bytes, whatever the file's name) and text encoding (by byte-order mark).

    Raises DataValidationError naming what the file is when it is no CSV text we can read
    (a ZIP archive, a Parquet file, binary content, an empty file).
    """
    path = Path(path)
    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if not head.strip():
        raise DataValidationError(f"{path} is empty; expected a CSV with a header row and data rows")
    for magic, what in _NOT_CSV.items():
        if head.startswith(magic):
            raise DataValidationError(f"{path} is not a CSV text file: it is {what}")
    compression = next((name for magic, name in _COMPRESSIONS.items() if head.startswith(magic)), None)
    if compression:
        try:
            with _open_binary(path, compression) as stream:
                head = stream.read(_SNIFF_BYTES)
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise DataValidationError(
                f"{path} is {compression}-compressed but cannot be decompressed: {_one_line(exc)}"
            ) from None
        if not head.strip():
            raise DataValidationError(f"{path} is empty once decompressed ({compression})")
    encoding = _text_encoding(head)
    if encoding is None:
        inner = f" inside its {compression} compression" if compression else ""
        raise DataValidationError(f"{path} is not a CSV text file (binary content{inner})")
    return CsvFormat(compression, encoding)


def read_raw_csv(path: str | os.PathLike, **options: Any) -> pd.DataFrame:
    """`pd.read_csv` of a file as `load_dataset` reads it (gzip, UTF-16, ...), without validation:
    for reports that need the file as written (missing values before rows were dropped)."""
    return pd.read_csv(path, **detect_csv_format(path).read_options(), **options)


def read_csv_header(path: Path, fmt: CsvFormat) -> list[str]:
    """The raw header names, read with the csv module so quoting is honoured."""
    try:
        with (
            _open_binary(path, fmt.compression) as raw,
            io.TextIOWrapper(raw, fmt.encoding, newline="") as text,
        ):
            first = text.readline()
    except UnicodeDecodeError:
        raise DataValidationError(
            f"{path} is not a {fmt.describe()} CSV text file (cannot decode its header); save it as UTF-8"
        ) from None
    try:
        header = next(csv.reader([first.rstrip("\r\n")]))
    except (csv.Error, StopIteration) as exc:
        raise DataValidationError(f"{path} has an unreadable CSV header: {_one_line(exc)}") from None
    return header


def _separator_hint(header: str) -> str:
    """Why a header may be one column: another separator, named with how often it occurs."""
    for separator, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes")):
        count = header.count(separator)
        if count:
            return f" (its header holds {count} {name}: save the file comma-separated)"
    return ""


def _check_header(path: Path, raw: list[str], label_column: str) -> list[str]:
    """Normalise the names and reject headers we cannot use; returns the normalised names."""
    names = [normalise_column_name(name) for name in raw]
    if len(names) < 2:
        first = raw[0] if raw else ""
        raise DataValidationError(
            f"{path} has a single column {quote_value(first)}; expected comma-separated feature "
            f"columns and a label column{_separator_hint(first)}"
        )
    seen: dict[str, int] = {}
    for position, name in enumerate(names):
        if name in seen:
            # pandas would silently rename the second one to `name.1`: refuse instead.
            raise DataValidationError(
                f"{path} has duplicate column name {quote_value(name)} (columns {seen[name] + 1} and "
                f"{position + 1}); column names must be unique"
            )
        seen[name] = position
    if label_column not in seen:
        raise DataValidationError(
            f"{path} has no label column {quote_value(label_column)}; columns found: {_abbreviate(raw)}; "
            f"name the label column with --label-column (LABEL_COLUMN)"
        )
    if "" in seen:
        raise DataValidationError(
            f"{path} has an unnamed column (column {seen[''] + 1}); every column needs a name"
        )
    return names


def _parse_csv(path: Path, names: list[str], label_column: str, fmt: CsvFormat) -> pd.DataFrame:
    """Parse with pandas' C parser (about 0.2-0.4 s for the 44 MB file, see bench/bench_data.py)."""
    # The compression we found by content, never pandas' guess from the file name.
    options = {"header": 0, "names": names, "index_col": False, **fmt.read_options()}
    try:
        # index_col=False: never turn a first column into the index when rows end with a comma.
        frame = pd.read_csv(path, **options)
    except pd.errors.EmptyDataError:
        raise DataValidationError(f"{path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError, EOFError) as exc:
        raise DataValidationError(f"{path} is not a well-formed CSV: {_one_line(exc)}") from None
    labels = frame[label_column]
    if pd.api.types.is_numeric_dtype(labels) or pd.api.types.is_bool_dtype(labels):
        # Numeric labels: re-read that one column as text so `1` stays "1", not "1.0" when some are missing.
        frame[label_column] = pd.read_csv(path, **options, usecols=[label_column], dtype={label_column: str})[
            label_column
        ]
    return frame


def _first_bad_value(column: pd.Series) -> tuple[int, str]:
    """Position and text of the first value in a column that is present but not a number."""
    as_numbers = pd.to_numeric(column, errors="coerce")
    bad = np.flatnonzero(as_numbers.isna().to_numpy() & column.notna().to_numpy())
    position = int(bad[0]) if len(bad) else 0
    return position, str(column.iloc[position])


def _check_feature_types(path: Path, frame: pd.DataFrame, feature_names: list[str]) -> None:
    """Every feature column must be numeric (int or float, not bool or text)."""
    # One look at the dtypes (not one frame[name] per column: that alone cost 0.3 s on 2548 columns).
    kinds = {name: getattr(dtype, "kind", "O") for name, dtype in frame.dtypes.items()}
    non_numeric = [name for name in feature_names if kinds[name] not in "iuf"]
    if not non_numeric:
        return
    name = non_numeric[0]
    position, value = _first_bad_value(frame[name])
    more = f" (and {len(non_numeric) - 1} more non-numeric columns)" if len(non_numeric) > 1 else ""
    raise DataValidationError(
        f"{path}: feature column {quote_value(name)} is not numeric: value {quote_value(value)} at row {position + 1} "
        f"(line {position + 2}){more}; every column except the label must hold numbers"
    )


def _check_values(path: Path, values: np.ndarray, feature_names: list[str]) -> None:
    """Reject infinite values and columns that are empty in every row."""
    infinite = np.isinf(values)
    if infinite.any():
        rows, cols = np.nonzero(infinite)
        n_cols = len(np.unique(cols))
        more = f" (infinite values in {n_cols} columns)" if n_cols > 1 else ""
        raise DataValidationError(
            f"{path}: column {quote_value(feature_names[cols[0]])} has an infinite value at row {rows[0] + 1} "
            f"(line {rows[0] + 2}){more}; features must be finite numbers"
        )
    empty = np.isnan(values).all(axis=0)
    if empty.any():
        name = feature_names[int(np.flatnonzero(empty)[0])]
        raise DataValidationError(
            f"{path}: column {quote_value(name)} has no value in any row; remove it or fill it"
        )


def _strip_labels(labels: pd.Series) -> tuple[pd.Series, int, str]:
    """Labels without surrounding blanks ("NEUTRAL " is "NEUTRAL"; a blank label is missing).

    Returns the labels, how many values changed and one example (`'NEUTRAL ' -> 'NEUTRAL'`).
    """
    try:
        stripped = labels.str.strip()
    except AttributeError:  # no text at all (every label missing): nothing to strip
        return labels, 0, ""
    changed = (labels.notna() & (stripped != labels)).to_numpy()
    n_changed = int(changed.sum())
    if not n_changed:
        return labels, 0, ""
    first = int(np.flatnonzero(changed)[0])
    example = f"{quote_value(labels.iloc[first], 40)} -> {quote_value(stripped.iloc[first], 40)}"
    return stripped.mask(stripped == ""), n_changed, example


def _handle_missing(
    path: Path, values: np.ndarray, labels: pd.Series, feature_names: list[str], missing: str
) -> tuple[np.ndarray, str]:
    """Boolean mask of rows to keep, and the warning to give when rows are dropped (or reject the file)."""
    missing_cells = np.isnan(values)
    missing_rows = missing_cells.any(axis=1) | labels.isna().to_numpy()
    n_missing = int(missing_rows.sum())
    if n_missing == 0:
        return ~missing_rows, ""
    first = int(np.flatnonzero(missing_rows)[0])
    where = (
        quote_value(feature_names[int(np.flatnonzero(missing_cells[first])[0])])
        if missing_cells[first].any()
        else f"{quote_value(labels.name)} (the label)"
    )
    if missing == "reject":
        raise DataValidationError(
            f"{path}: {n_missing} of {len(values)} rows have missing values (first at row {first + 1}, "
            f"column {where}); set MISSING_VALUES=drop to drop such rows"
        )
    if n_missing == len(values):
        raise DataValidationError(f"{path}: every one of its {len(values)} rows has a missing value")
    return ~missing_rows, (
        f"{path}: dropped {n_missing} of {len(values)} rows with missing values "
        f"(first at row {first + 1}, column {where})"
    )


def _class_counts_text(counts: pd.Series) -> str:
    return _clip(", ".join(f"{_clip(str(name), 40)} {int(count)}" for name, count in counts.items()))


def _check_classes(path: Path, labels: pd.Series, label_column: str, min_class_rows: int | None) -> None:
    """At least two classes, and enough rows in each for cross-validation."""
    counts = labels.value_counts().sort_index()
    if len(counts) < 2:
        only = f"{quote_value(counts.index[0])} ({int(counts.iloc[0])} rows)" if len(counts) else "none"
        raise DataValidationError(
            f"{path}: label column {quote_value(label_column)} has a single class {only}; "
            f"classification needs at least two"
        )
    if min_class_rows is not None:
        small = counts[counts < min_class_rows]
        if len(small):
            raise DataValidationError(
                f"{path}: class {quote_value(small.index[0])} has {int(small.iloc[0])} rows, fewer than the "
                f"{min_class_rows} needed for {min_class_rows}-fold cross-validation "
                f"(rows per class: {_class_counts_text(counts)})"
            )


def encode_labels(
    labels: Sequence[Any], classes: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """String labels -> integer codes 0..K-1 in sorted class order (LabelEncoder's order)."""
    values = [str(label) for label in np.asarray(labels).astype(str)]
    classes = sorted(set(values)) if classes is None else [str(c) for c in classes]
    index = {name: code for code, name in enumerate(classes)}
    unknown = sorted(set(values) - set(index))
    if unknown:
        raise DataValidationError(
            f"labels {_clip(str(unknown))} are not among the classes {_clip(str(classes))}"
        )
    return np.asarray([index[v] for v in values], dtype=np.int64), classes


def metadata_path(csv_path: Path) -> Path:
    """Where a dataset's metadata lives: `emotions.csv` -> `emotions.metadata.json`."""
    return Path(csv_path).with_suffix(".metadata.json")


def read_metadata(csv_path: Path) -> dict:
    """The metadata JSON next to the CSV, or {} when there is none or it cannot be read."""
    meta = metadata_path(Path(csv_path))
    if not meta.is_file():
        return {}
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        reason = _one_line(exc)
        _warn_once(
            ("metadata", str(meta.resolve()), reason), "%s: ignoring unreadable metadata (%s)", meta, reason
        )
        return {}
    return data if isinstance(data, dict) else {}


def _source_of(path: Path, digest: str, quiet: bool = False) -> str:
    """'kaggle' or 'sample' from the metadata file, 'user' when absent or when it describes another file."""
    metadata = read_metadata(path)
    source = metadata.get("source")
    if source not in SOURCES:
        return "user"
    recorded = metadata.get("sha256")
    if recorded and recorded != digest:
        if not quiet:
            _warn_once(
                ("metadata-stale", str(path.resolve()), digest),
                "%s: the file changed since its metadata was written; treating it as a user file",
                path,
            )
        return "user"
    return str(source)


def file_digest(path: Path) -> str:
    """sha256 of the file's bytes: identifies the exact data a run used."""
    sha = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def load_dataset(
    path: str | os.PathLike,
    label_column: str = "label",
    *,
    missing: str = "drop",
    min_class_rows: int | None = None,
    quiet: bool = False,
) -> Dataset:
    """Read a CSV of numeric features and one label column into a validated `Dataset`.

    The file may be gzip-, bz2- or xz-compressed (found by content, whatever its name) and
    UTF-8, UTF-16 or UTF-32 (by byte-order mark). The first header's `# ` prefix (numpy
    savetxt) is removed; blanks around labels are removed ("NEUTRAL " is "NEUTRAL"). Rows
    with a missing value are dropped (`missing="drop"`) or refused (`missing="reject"`).
    Each warning (dropped rows, changed labels) is logged once per process for a file's
    content; `quiet=True` logs none (a later step reloading a file already reported on).
    Any other problem raises `DataValidationError` with one line naming the file, column or value.
    """
    if missing not in MISSING_POLICIES:
        raise ConfigurationError(f"missing={missing!r} must be one of {', '.join(MISSING_POLICIES)}")
    if min_class_rows is not None and min_class_rows < 1:
        raise ConfigurationError(f"min_class_rows={min_class_rows} must be at least 1")
    path = Path(path)
    if not path.exists():
        raise DataValidationError(f"dataset not found: {path} (run `make data` to download or build it)")
    if not path.is_file():
        raise DataValidationError(f"{path} is not a file; expected a CSV file")
    fmt = detect_csv_format(path)
    names = _check_header(path, read_csv_header(path, fmt), label_column)
    frame = _parse_csv(path, names, label_column, fmt)
    if frame.empty:
        raise DataValidationError(f"{path} has a header but no data rows")
    feature_names = [name for name in names if name != label_column]
    _check_feature_types(path, frame, feature_names)
    digest = file_digest(path)

    def warn(kind: str, message: str) -> None:
        if message and not quiet:
            _warn_once((kind, str(path.resolve()), digest), "%s", message)

    labels, n_stripped, example = _strip_labels(frame[label_column])
    if n_stripped:
        warn(
            "labels-stripped",
            f"{path}: removed blanks around {n_stripped} of {len(labels)} values of label column "
            f"{quote_value(label_column)} (e.g. {example}); they would have been classes of their own",
        )
    features = frame[feature_names]
    values = features.to_numpy(dtype=np.float64)
    _check_values(path, values, feature_names)
    keep, dropped_message = _handle_missing(path, values, labels, feature_names, missing)
    warn("missing-values", dropped_message)
    dropped = int((~keep).sum())
    if dropped:
        values = values[keep]
        labels = labels[keep]

    labels = pd.Series(labels.astype(str).to_numpy(), name=label_column)
    _check_classes(path, labels, label_column, min_class_rows)
    return Dataset(
        features=pd.DataFrame(values, columns=feature_names, copy=False),
        labels=labels,
        path=path,
        digest=digest,
        source=_source_of(path, digest, quiet),
        dropped_rows=dropped,
    )


def dataset_schema_summary(features: pd.DataFrame, labels: pd.Series, digest: str, *, shown: int = 5) -> dict:
    """A compact, JSON-safe description of a (very wide) dataset, in place of its full schema.

    Digest, row and column counts, the first and last `shown` feature names (cut to 100
    characters each), how many columns have each dtype, and the label column. Tracking logs
    this instead of the per-column schema when there are more than `WIDE_DATASET_COLUMNS`.
    """
    names = [_clip(str(name), 100) for name in features.columns]
    dtypes = features.dtypes.astype(str).value_counts()
    return {
        "digest": digest,
        "rows": len(features),
        "columns": len(names) + 1,
        "feature_columns": len(names),
        "first_columns": names[:shown],
        "last_columns": names[shown:][-shown:],
        "dtypes": {str(dtype): int(count) for dtype, count in sorted(dtypes.items())},
        "label_column": str(labels.name if labels.name is not None else "label"),
        "label_dtype": str(labels.dtype),
        "classes": int(labels.nunique()),
    }
