"""Recording groups, the one held-out test split, and cross-validation folds.

Each row of the EEG emotions table is two consecutive windows of one recording: the
`_a` half is the previous window, the `_b` half the current one. Within a recording, row
k's `_b` block is exactly row k+1's `_a` block, so chaining rows on that equality rebuilds
the recordings. Splitting by recording keeps near-copies from landing on both sides of a
split, which random splits do (and which inflates every published accuracy).

When the dataset's metadata names the recording of every row (`row_recording`: the offline
sample and datasets built by `modules.data.recordings` do), `groups_from_metadata` gives those
true recordings instead of rebuilding chains, and the subject of every row when known
(`row_subject`, or the sample's `recordings` list). The "subject" protocol then holds out whole
subjects, and its CV folds never split a subject either: the honest estimate for a new person.

The split is made once (`make_split`), stored (`Split.to_dict`), and reused; the
cross-validation folds are derived from it deterministically (`cv_folds`).

Command line:
    python -m modules split data/emotions.csv [--protocol subject]
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from modules.data.loading import quote_value, read_metadata
from modules.errors import ConfigurationError, DataValidationError

logger = logging.getLogger(__name__)

PROTOCOLS = ("auto", "grouped", "random", "subject")
# The final SVM calibrates its probabilities on 3 folds of the training part (`cv_folds` of the
# split, so by recording on a grouped split): every class needs that many training rows, or
# recordings. The pipeline's calibration should use this constant.
CALIBRATION_FOLDS = 3
_HALF = re.compile(r"^(?P<stem>.*)_(?P<half>[ab])(?P<tail>2?)$")


@dataclass
class Recordings:
    """Recording (chain) id of every row; `sizes[g]` is the number of rows of recording g."""

    group_ids: np.ndarray
    sizes: list[int]
    n_links: int = 0
    paired_columns: int = 0
    # "chains" (rebuilt from the _a/_b overlap) or "metadata" (recorded when the dataset was built).
    source: str = "chains"

    @property
    def n_chains(self) -> int:
        """Number of recordings, counting rows that chain to nothing as recordings of one row."""
        return len(self.sizes)

    @property
    def found(self) -> bool:
        """True when at least one chain has more than one row."""
        return any(size > 1 for size in self.sizes)

    def summary(self) -> str:
        """One line: how many chains and how big."""
        if not self.found:
            reason = (
                "no _a/_b column pairs"
                if self.paired_columns == 0
                else f"no row's _b block equals another row's _a block ({self.paired_columns} column pairs)"
            )
            return f"no recordings found in {len(self.group_ids)} rows: {reason}; every row is its own group"
        sizes = np.array(self.sizes)
        chained = sizes[sizes > 1]
        singles = int((sizes == 1).sum())
        low, high = int(chained.min()), int(chained.max())
        span = (
            f"{low} rows each"
            if low == high
            else f"{low}-{high} rows each (median {float(np.median(chained)):g})"
        )
        if self.source == "metadata":
            return f"{len(self.sizes)} recordings named in the metadata of {len(self.group_ids)} rows: {span}"
        return (
            f"{len(chained)} recordings found in {len(self.group_ids)} rows ({self.n_links} links): {span}"
            + (f", plus {singles} rows that chain to nothing" if singles else "")
        )

    def size_counts(self) -> str:
        """Chain sizes with how often each occurs, largest first: `118 rows x 16, 117 rows x 2`."""
        sizes, counts = np.unique(np.array(self.sizes, dtype=np.int64), return_counts=True)
        pairs = zip(sizes[::-1], counts[::-1], strict=True)
        return ", ".join(f"{int(size)} rows x {int(count)}" for size, count in pairs)


def paired_half_columns(columns: Sequence[str]) -> tuple[list[int], list[int]]:
    """Positions of matching `_a`/`_b` columns: `x_a`<->`x_b`, `x_a2`<->`x_b2`, in column order."""
    position = {name: i for i, name in enumerate(columns)}
    a_cols: list[int] = []
    b_cols: list[int] = []
    for i, name in enumerate(columns):
        match = _HALF.match(str(name))
        if match and match["half"] == "a":
            partner = f"{match['stem']}_b{match['tail']}"
            if partner in position:
                a_cols.append(i)
                b_cols.append(position[partner])
    return a_cols, b_cols


def _row_keys(block: np.ndarray) -> list[bytes]:
    """The exact bytes of every row (+0.0 turns -0.0 into 0.0 so equal numbers give equal bytes)."""
    block = np.ascontiguousarray(block + 0.0, dtype=np.float64)
    return [row.tobytes() for row in block]


def detect_recordings(features: pd.DataFrame) -> Recordings:
    """Chain rows whose `_b` block equals another row's `_a` block exactly; each chain is one recording.

    Rows are linked i -> j when b_i == a_j byte for byte (dictionary of the `_a` blocks' bytes),
    and the recordings are the connected components of those links. Without `_a`/`_b` column
    pairs, or without any link, every row is its own group (`found` is False).
    """
    n_rows = len(features)
    a_cols, b_cols = paired_half_columns(list(features.columns))
    if not a_cols or n_rows == 0:
        return Recordings(group_ids=np.arange(n_rows), sizes=[1] * n_rows, paired_columns=len(a_cols))
    values = features.to_numpy(dtype=np.float64)
    a_keys = _row_keys(values[:, a_cols])
    b_keys = _row_keys(values[:, b_cols])
    starts: dict[bytes, list[int]] = {}
    for row, key in enumerate(a_keys):
        starts.setdefault(key, []).append(row)
    sources: list[int] = []
    targets: list[int] = []
    for row, key in enumerate(b_keys):
        for successor in starts.get(key, ()):
            if successor != row:  # a constant signal would link a row to itself
                sources.append(row)
                targets.append(successor)
    graph = coo_matrix((np.ones(len(sources)), (sources, targets)), shape=(n_rows, n_rows))
    _, components = connected_components(graph, directed=False)
    # Number the recordings by first appearance so ids do not depend on scipy's internals.
    _, first_rows, inverse = np.unique(components, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first_rows))
    group_ids = order[inverse]
    sizes = np.bincount(group_ids, minlength=len(first_rows)).tolist()
    return Recordings(group_ids=group_ids, sizes=sizes, n_links=len(sources), paired_columns=len(a_cols))


def _ids_by_first_appearance(values: Sequence) -> np.ndarray:
    """Integer ids 0, 1, ... numbered in the order the distinct values first appear."""
    _, first_rows, inverse = np.unique(np.asarray(values).astype(str), return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first_rows))
    return order[inverse].astype(np.int64)


def recordings_from_ids(recording_of_row: Sequence) -> Recordings:
    """Recordings from a known recording name (or number) per row, e.g. a metadata `row_recording`."""
    group_ids = _ids_by_first_appearance(recording_of_row)
    sizes = np.bincount(group_ids).tolist() if len(group_ids) else []
    return Recordings(group_ids=group_ids, sizes=sizes, source="metadata")


@dataclass(frozen=True)
class KnownGroups:
    """Recordings (and subjects, when known) of every row, as the dataset's metadata records them."""

    recordings: Recordings
    recording_names: list[str]
    subjects: np.ndarray | None

    @property
    def n_subjects(self) -> int:
        return 0 if self.subjects is None else len(np.unique(self.subjects))

    def summary(self) -> str:
        text = self.recordings.summary()
        if self.subjects is not None:
            text += f"; {self.n_subjects} subjects"
        return text


def groups_from_metadata(path: str | Path, n_rows: int, digest: str | None = None) -> KnownGroups | None:
    """The recording and subject of every row from the metadata beside the CSV, or None.

    None when there is no metadata, it names no `row_recording`, its row count differs from
    `n_rows` (rows were dropped or added), or its `sha256` differs from `digest` (the CSV changed
    since). Subjects come from `row_subject`, else from the `recordings` list (`id` -> `subject`,
    as the offline sample writes it); `subjects` is None when any row's subject is unknown.
    """
    metadata = read_metadata(Path(path))
    per_row = metadata.get("row_recording")
    if not isinstance(per_row, list) or len(per_row) != n_rows or n_rows == 0:
        return None
    recorded = metadata.get("sha256")
    if digest and recorded and recorded != digest:
        logger.warning("%s: its metadata describes another version of the file; rebuilding recordings", path)
        return None
    recordings = recordings_from_ids(per_row)
    names = [""] * len(recordings.sizes)
    for row, group in enumerate(recordings.group_ids):
        if not names[group]:
            names[group] = str(per_row[row])
    subjects = metadata.get("row_subject")
    if not isinstance(subjects, list):
        by_recording = {
            str(r.get("id")): r.get("subject")
            for r in metadata.get("recordings", [])
            if isinstance(r, dict) and r.get("subject") is not None
        }
        subjects = [by_recording.get(str(name)) for name in per_row]
    known = len(subjects) == n_rows and all(s is not None and str(s).strip() for s in subjects)
    return KnownGroups(
        recordings=recordings,
        recording_names=names,
        subjects=np.asarray([str(s).strip() for s in subjects]) if known else None,
    )


@dataclass
class Split:
    """The held-out test split, made once and stored; every result carries its protocol.

    `groups` holds the recording id of every row whenever recordings were found (also for a
    "random" split, so its leakage can be reported), and is None otherwise. `subjects` holds the
    subject of every row for a "subject" split (and None otherwise).
    """

    protocol: str
    train_index: np.ndarray
    test_index: np.ndarray
    groups: np.ndarray | None
    seed: int
    test_size: float
    n_recordings: int
    requested_protocol: str = field(default="")
    subjects: np.ndarray | None = None

    @property
    def n_subjects(self) -> int:
        """Distinct subjects (0 unless the split is by subject)."""
        return 0 if self.subjects is None else len(np.unique(self.subjects))

    @property
    def n_rows(self) -> int:
        """Rows of the dataset the split was made on."""
        return len(self.train_index) + len(self.test_index)

    @property
    def recordings_on_both_sides(self) -> int:
        """Recordings with rows in both train and test: 0 for a grouped split, leakage for a random one."""
        if self.groups is None:
            return 0
        shared = np.intersect1d(self.groups[self.train_index], self.groups[self.test_index])
        return len(shared)

    def describe(self) -> str:
        """One line for logs and reports."""
        text = (
            f"{self.protocol} split (seed {self.seed}, test_size {self.test_size:g}): "
            f"{len(self.train_index)} train rows, {len(self.test_index)} test rows"
        )
        if self.subjects is not None:
            held_out = len(np.unique(self.subjects[self.test_index]))
            text += f", {self.n_subjects} subjects ({held_out} held out, none on both sides)"
        if self.groups is not None:
            text += (
                f", {self.n_recordings} recordings, {self.recordings_on_both_sides} on both sides"
                if self.protocol == "random"
                else f", {self.n_recordings} recordings, none on both sides"
            )
        return text

    def to_dict(self) -> dict:
        """JSON-safe form (plain ints and lists) for Metaflow and MLflow artifacts (`subjects` only
        for a subject split, so other splits keep their earlier form)."""
        data = {
            "protocol": self.protocol,
            "requested_protocol": self.requested_protocol or self.protocol,
            "seed": int(self.seed),
            "test_size": float(self.test_size),
            "n_recordings": int(self.n_recordings),
            "train_index": [int(i) for i in self.train_index],
            "test_index": [int(i) for i in self.test_index],
            "groups": None if self.groups is None else [int(g) for g in self.groups],
        }
        if self.subjects is not None:
            data["subjects"] = [str(x) for x in self.subjects]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Split:
        """Rebuild a stored split, checking that it is whole and consistent."""
        required = ("protocol", "seed", "test_size", "n_recordings", "train_index", "test_index")
        lacking = [key for key in required if key not in data]
        if lacking:
            raise ConfigurationError(
                f"stored split lacks {', '.join(lacking)}; expected Split.to_dict() output"
            )
        if data["protocol"] not in ("grouped", "random", "subject"):
            raise ConfigurationError(
                f"stored split has protocol {data['protocol']!r}; expected grouped, random or subject"
            )
        train = np.asarray(data["train_index"], dtype=np.int64)
        test = np.asarray(data["test_index"], dtype=np.int64)
        groups = None if data.get("groups") is None else np.asarray(data["groups"], dtype=np.int64)
        n_rows = len(train) + len(test)
        positions = np.sort(np.concatenate([train, test]))
        if not np.array_equal(positions, np.arange(n_rows)):
            raise ConfigurationError(
                "stored split is inconsistent: train and test indices must cover rows 0..n-1 exactly once"
            )
        if groups is not None and len(groups) != n_rows:
            raise ConfigurationError(f"stored split has {len(groups)} group ids for {n_rows} rows")
        subjects = None if data.get("subjects") is None else np.asarray([str(x) for x in data["subjects"]])
        if subjects is not None and len(subjects) != n_rows:
            raise ConfigurationError(f"stored split has {len(subjects)} subjects for {n_rows} rows")
        if data["protocol"] == "subject" and subjects is None:
            raise ConfigurationError("stored subject split lacks the subject of every row")
        return cls(
            protocol=data["protocol"],
            train_index=train,
            test_index=test,
            groups=groups,
            seed=int(data["seed"]),
            test_size=float(data["test_size"]),
            n_recordings=int(data["n_recordings"]),
            requested_protocol=data.get("requested_protocol", data["protocol"]),
            subjects=subjects,
        )


def _check_test_size(test_size: float) -> None:
    if isinstance(test_size, bool) or not isinstance(test_size, int | float) or not 0.0 < test_size < 1.0:
        raise ConfigurationError(f"test_size={test_size!r} must be a fraction between 0 and 1 (exclusive)")


def _group_labels(groups: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Distinct group ids, the most common label of each, and how many groups mix labels."""
    frame = pd.DataFrame({"group": groups, "label": labels})
    counts = frame.groupby(["group", "label"]).size().reset_index(name="n")
    mixed = int((counts.groupby("group").size() > 1).sum())
    # Ties go to the smallest label so the choice does not depend on row order.
    top = counts.sort_values(["group", "n", "label"], ascending=[True, False, True]).drop_duplicates("group")
    return top["group"].to_numpy(), top["label"].to_numpy(), mixed


def held_out_count(n: int, test_size: float) -> int:
    """How many of a class's `n` rows (or recordings) the held-out split takes: about `test_size`
    of them, at least one when there are two or more, never all."""
    return 0 if n < 2 else min(max(1, round(test_size * n)), n - 1)


def min_rows_per_class(n_splits: int, test_size: float) -> int:
    """Fewest rows a class needs under the random protocol: once the held-out split has taken its
    share, StratifiedKFold needs `n_splits` training rows of every class (and the final SVM's
    calibration CALIBRATION_FOLDS). With 5 folds and test_size 0.2 that is 6, not 5."""
    need = max(n_splits, CALIBRATION_FOLDS)
    # n - held_out_count(n) is never above n * (1 - test_size) + 0.5: no smaller n can do.
    rows = max(need, int((need - 1) / (1.0 - test_size)))
    while rows - held_out_count(rows, test_size) < need:
        rows += 1
    return rows


def _stratified_take(items: np.ndarray, strata: np.ndarray, test_size: float, seed: int) -> np.ndarray:
    """A stratified random sample of `items` of about test_size of each stratum (at least one
    from every stratum with two or more items, and never a whole stratum)."""
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for stratum in sorted(set(strata.tolist())):
        members = items[strata == stratum]
        if len(members) < 2:
            continue
        take = held_out_count(len(members), test_size)
        chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=items.dtype)


def make_split(
    features: pd.DataFrame,
    labels: Sequence | pd.Series | np.ndarray,
    protocol: str = "auto",
    test_size: float = 0.2,
    seed: int = 42,
    *,
    recordings: Recordings | None = None,
    subjects: Sequence | np.ndarray | None = None,
    n_splits: int | None = None,
) -> Split:
    """Split rows once into train and held-out test.

    "grouped": whole recordings go to one side (stratified by each recording's label);
    "random": rows stratified by label; "auto": grouped when recordings are found, random
    otherwise; "subject": whole subjects go to one side (about test_size of them, at least one,
    never all), which needs `subjects`, the subject of every row. Pass `recordings` to reuse a
    `detect_recordings` result or the true recordings of `groups_from_metadata`, and `n_splits`
    (CV_FOLDS) to check at once that the training part can give that many stratified CV folds
    (`check_folds_possible`), so that a too-small class fails here and not in the search.
    """
    if n_splits is not None:
        _check_n_splits(n_splits)
    if protocol not in PROTOCOLS:
        raise ConfigurationError(f"split protocol {protocol!r} must be one of {', '.join(PROTOCOLS)}")
    _check_test_size(test_size)
    y = np.asarray(labels).astype(str)
    if len(y) != len(features):
        raise DataValidationError(
            f"{len(y)} labels for {len(features)} feature rows; expected one label per row"
        )
    subject_of_row = None
    if protocol == "subject":
        if subjects is None:
            raise ConfigurationError(
                f"split protocol 'subject' needs the subject of every row, and none is known for these "
                f"{len(y)} rows: build the dataset with `python -m modules features` (a labels.csv "
                "`subject` column or DIR/SUBJECT/LABEL/ folders), whose metadata records them"
            )
        subject_of_row = np.asarray(subjects).astype(str)
        if len(subject_of_row) != len(y):
            raise DataValidationError(
                f"{len(subject_of_row)} subjects for {len(y)} rows; expected the subject of every row"
            )
    recordings = recordings if recordings is not None else detect_recordings(features)
    if protocol == "grouped" and not recordings.found:
        raise ConfigurationError(
            f"split protocol 'grouped' needs recordings, but none were found in {len(y)} rows "
            f"({recordings.summary().split(': ', 1)[-1]}); use SPLIT_PROTOCOL=random or auto"
        )
    if protocol == "subject":
        chosen = "subject"
    else:
        chosen = "grouped" if protocol == "grouped" or (protocol == "auto" and recordings.found) else "random"
    rows = np.arange(len(y))
    classes, class_counts = np.unique(y, return_counts=True)
    unit = {"grouped": "recordings", "subject": "subjects"}.get(chosen, "rows")

    if chosen == "subject":
        names, subject_ids = np.unique(subject_of_row, return_inverse=True)
        if len(names) < 2:
            raise DataValidationError(
                f"only {len(names)} subject ({quote_value(names[0])}) in {len(y)} rows; a subject split "
                "needs at least 2 subjects"
            )
        n_test = held_out_count(len(names), test_size)
        test_subjects = np.random.default_rng(seed).choice(len(names), size=n_test, replace=False)
        in_test = np.isin(subject_ids, test_subjects)
    elif chosen == "grouped":
        group_ids, group_label, mixed = _group_labels(recordings.group_ids, y)
        if mixed:
            logger.warning(
                "%d recordings mix labels; stratifying by each recording's most common label", mixed
            )
        if len(group_ids) < 2:
            raise DataValidationError(
                f"only {len(group_ids)} recording found; a grouped split needs at least 2"
            )
        test_groups = _stratified_take(group_ids, group_label, test_size, seed)
        if len(test_groups) == 0:
            # Every class has a single recording: stratification is impossible, take whole groups at random.
            n_test = min(max(1, round(test_size * len(group_ids))), len(group_ids) - 1)
            test_groups = np.sort(np.random.default_rng(seed).choice(group_ids, size=n_test, replace=False))
        in_test = np.isin(recordings.group_ids, test_groups)
    else:
        small = classes[class_counts < 2]
        if len(small):
            raise DataValidationError(
                f"class {quote_value(small[0])} has {int(class_counts[classes == small[0]][0])} row; "
                f"a stratified split needs at least 2 rows per class"
            )
        in_test = np.isin(rows, _stratified_take(rows, y, test_size, seed))

    train_index, test_index = rows[~in_test], rows[in_test]
    missing_train = sorted(set(classes.tolist()) - set(y[train_index].tolist()))
    if missing_train:
        raise DataValidationError(
            f"the {chosen} split left no training rows of class {quote_value(missing_train[0])}; "
            f"it needs more {unit} of that class or a smaller test_size (now {test_size:g})"
        )
    missing_test = sorted(set(classes.tolist()) - set(y[test_index].tolist()))
    if missing_test:
        logger.warning("the %s test part has no rows of class(es) %s", chosen, ", ".join(missing_test))
    split = Split(
        protocol=chosen,
        train_index=train_index,
        test_index=test_index,
        groups=recordings.group_ids.copy() if recordings.found else None,
        seed=seed,
        test_size=float(test_size),
        n_recordings=recordings.n_chains if recordings.found else 0,
        requested_protocol=protocol,
        subjects=subject_of_row if chosen == "subject" else None,
    )
    if n_splits is not None:
        check_folds_possible(split, y, n_splits)
    return split


def _check_n_splits(n_splits: object) -> None:
    if isinstance(n_splits, bool) or not isinstance(n_splits, int) or n_splits < 2:
        raise ConfigurationError(f"n_splits={n_splits!r} must be a whole number of at least 2 (CV_FOLDS)")


def _training_labels(
    split: Split, labels: Sequence | pd.Series | np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """The training rows' labels, and all rows' labels when they were given (else None)."""
    y = np.asarray(labels).astype(str)
    if len(y) == split.n_rows:
        return y[split.train_index], y
    if len(y) != len(split.train_index):
        raise DataValidationError(
            f"{len(y)} labels for a split of {split.n_rows} rows ({len(split.train_index)} in training); "
            f"pass all rows' labels or the training rows' labels"
        )
    return y, None


def _shortfall(
    name: str,
    unit: str,
    total: int | None,
    train: int,
    need: int,
    why: str,
    test_size: float,
    in_all: int | None = None,
) -> DataValidationError:
    """One line: the class, its rows or recordings, what the held-out split took, what is needed."""
    if total is None:
        had = f"class {quote_value(name)} has {train} training {unit}"
    else:
        had = (
            f"class {quote_value(name)} has {total} {unit}; the held-out split takes {total - train} "
            f"(TEST_SIZE={test_size:g}), leaving {train} for training"
        )
    # Fewer folds help only when they still leave every class its calibration rows or recordings.
    lower = f" or set CV_FOLDS to {train} or less" if train >= CALIBRATION_FOLDS else ""
    so = f", so {in_all} {unit} in all" if in_all else ""
    return DataValidationError(
        f"{had}, but {why} needs {need} training {unit} per class{so}: "
        f"add {unit} of {quote_value(name)}{lower}"
    )


def _fold_groups(split: Split) -> tuple[np.ndarray, str] | None:
    """What the CV folds keep whole: (group of every row, its name in messages), None for rows."""
    if split.protocol == "grouped":
        if split.groups is None:
            raise ConfigurationError("a grouped split without group ids cannot give grouped folds")
        return split.groups, "recordings"
    if split.protocol == "subject":
        if split.subjects is None:
            raise ConfigurationError("a subject split without the subject of every row cannot give folds")
        return split.subjects, "subjects"
    return None


def check_folds_possible(split: Split, labels: Sequence | pd.Series | np.ndarray, n_splits: int) -> None:
    """Raise DataValidationError (one line naming the class, its counts and what is needed) when the
    training part cannot give `n_splits` stratified CV folds.

    Random protocol: StratifiedKFold needs `n_splits` training rows of every class, and the final
    SVM's probability calibration CALIBRATION_FOLDS (so a class needs `min_rows_per_class` rows in
    all). Grouped protocol: at least `n_splits` recordings in training, and max(`n_splits`,
    CALIBRATION_FOLDS) training recordings of every class, so that every fold validates on every class.
    Subject protocol: the same with subjects in place of recordings.
    """
    _check_n_splits(n_splits)
    y_train, y_all = _training_labels(split, labels)
    classes, train_counts = np.unique(y_train, return_counts=True)
    totals = None if y_all is None else dict(zip(*np.unique(y_all, return_counts=True), strict=True))
    fold_groups = _fold_groups(split)
    if fold_groups is not None:
        all_groups, unit = fold_groups
        groups = all_groups[split.train_index]
        n_groups = len(np.unique(groups))
        if n_groups < n_splits:
            lower = (
                f"lower CV_FOLDS to {n_groups} or less"
                if n_groups >= CALIBRATION_FOLDS
                else f"add {unit} (the SVM's calibration needs {CALIBRATION_FOLDS} training {unit} per class)"
            )
            counted = f"{n_groups} {unit}" if n_groups != 1 else f"1 {unit[:-1]}"
            raise DataValidationError(
                f"the training part has {counted}, fewer than the {n_splits} CV folds asked for; {lower}"
            )
        train_groups = pd.DataFrame({"g": groups, "y": y_train}).drop_duplicates().groupby("y").size()
        all_counts = (
            None
            if y_all is None
            else pd.DataFrame({"g": all_groups, "y": y_all}).drop_duplicates().groupby("y").size()
        )
        need = max(n_splits, CALIBRATION_FOLDS)
        short = train_groups[train_groups < need]
        if len(short):
            name = str(short.sort_values(kind="stable").index[0])
            why = f"{split.protocol} {n_splits}-fold cross-validation"
            if n_splits < CALIBRATION_FOLDS:
                why += f" with the SVM's {CALIBRATION_FOLDS}-fold probability calibration"
            raise _shortfall(
                name,
                unit,
                None if all_counts is None else int(all_counts[name]),
                int(train_groups[name]),
                need,
                why + f" (each fold validates on whole {unit})",
                split.test_size,
            )
    need = max(n_splits, CALIBRATION_FOLDS)
    if train_counts.min() < need:
        position = int(np.argmin(train_counts))
        name = str(classes[position])
        why = f"{n_splits}-fold cross-validation"
        if n_splits < CALIBRATION_FOLDS:
            why += f" with the SVM's {CALIBRATION_FOLDS}-fold probability calibration"
        in_all = min_rows_per_class(n_splits, split.test_size) if split.protocol == "random" else None
        total = None if totals is None else int(totals[classes[position]])
        raise _shortfall(name, "rows", total, int(train_counts[position]), need, why, split.test_size, in_all)


def cv_folds(
    split: Split,
    labels: Sequence | pd.Series | np.ndarray,
    n_splits: int = 5,
    seed: int | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-validation folds over the training part, as positions relative to `split.train_index`.

    StratifiedGroupKFold over recordings for a grouped split (over subjects for a subject split),
    StratifiedKFold otherwise; the folds depend only on the stored split and `seed` (default: the
    split's seed). `labels`
    may be all rows' labels or only the training rows'. Usable directly as scikit-learn `cv=`.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    check_folds_possible(split, labels, n_splits)
    seed = split.seed if seed is None else seed
    y, _ = _training_labels(split, labels)
    fold_groups = _fold_groups(split)
    if fold_groups is not None:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        folds = list(splitter.split(np.zeros(len(y)), y, fold_groups[0][split.train_index]))
    else:
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        folds = list(splitter.split(np.zeros(len(y)), y))
    empty = [k for k, (_, validation) in enumerate(folds) if len(validation) == 0]
    if empty:
        raise DataValidationError(f"CV fold {empty[0] + 1} of {n_splits} is empty; lower CV_FOLDS")
    return [(np.asarray(train, dtype=np.int64), np.asarray(val, dtype=np.int64)) for train, val in folds]


@click.command(
    "split",
    help="Find the recordings of a dataset (named in its metadata, or rebuilt as chains of rows whose _b "
    "half equals another row's _a half) and show the held-out split the pipeline would make.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--label-column", default=None, help="name of the label column (default: LABEL_COLUMN)")
@click.option(
    "--protocol", type=click.Choice(PROTOCOLS), default=None, help="split protocol (default: SPLIT_PROTOCOL)"
)
@click.option("--test-size", type=float, default=None, help="held-out fraction (default: TEST_SIZE)")
@click.option("--seed", type=int, default=None, help="random seed (default: SEED)")
def cli(
    path: Path, label_column: str | None, protocol: str | None, test_size: float | None, seed: int | None
) -> None:
    """`python -m modules split`."""
    from modules.data.loading import load_dataset
    from modules.settings import get_settings

    settings = get_settings()
    dataset = load_dataset(path, label_column or settings.label_column, missing=settings.missing_values)
    known = groups_from_metadata(dataset.path, len(dataset.labels), dataset.digest)
    recordings = known.recordings if known else detect_recordings(dataset.features)
    print(known.summary() if known else recordings.summary())
    if recordings.found:
        print(f"recording sizes: {recordings.size_counts()}")
    split = make_split(
        dataset.features,
        dataset.labels,
        protocol=protocol or settings.split_protocol,
        test_size=settings.test_size if test_size is None else test_size,
        seed=settings.seed if seed is None else seed,
        recordings=recordings,
        subjects=known.subjects if known else None,
    )
    print(split.describe())
