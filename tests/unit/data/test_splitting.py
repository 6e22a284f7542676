"""modules.data.splitting: recordings rebuilt from overlapping windows, the held-out split, CV folds."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_wine

from tests.commands import run_command
from modules.errors import ConfigurationError, DataValidationError
from modules.data.splitting import (
    CALIBRATION_FOLDS,
    Split,
    check_folds_possible,
    cv_folds,
    detect_recordings,
    groups_from_metadata,
    cli,
    make_split,
    min_rows_per_class,
    paired_half_columns,
)

HAS_SAMPLE_BUILDER = importlib.util.find_spec("modules.data.sample") is not None
CLASSES = ("NEGATIVE", "NEUTRAL", "POSITIVE")


def half_names(half: str) -> list[str]:
    """A miniature of the published naming, including the `_a2`/`_b2` quarter-mean names."""
    return (
        [f"mean_{k}_{half}" for k in range(3)]
        + [f"mean_d_{k}_{half}2" for k in range(2)]
        + [f"mean_d_{k}_{half}" for k in range(2)]
        + [f"fft_{k}_{half}" for k in range(3)]
    )


def chained_table(
    sizes: list[int], labels: list[str] | None = None, seed: int = 0
) -> tuple[pd.DataFrame, pd.Series, np.ndarray]:
    """Shuffled rows of several recordings: row k of a recording is (window k, window k+1).

    Returns features, labels and the true recording of every row.
    """
    rng = np.random.default_rng(seed)
    labels = labels or [CLASSES[i % 3] for i in range(len(sizes))]
    blocks, ys, truth = [], [], []
    for recording, rows in enumerate(sizes):
        windows = np.round(rng.normal(scale=10.0, size=(rows + 1, 10)), 2)
        blocks.append(np.hstack([windows[:-1], windows[1:]]))
        ys += [labels[recording]] * rows
        truth += [recording] * rows
    order = rng.permutation(sum(sizes))
    features = pd.DataFrame(np.vstack(blocks)[order], columns=half_names("a") + half_names("b"))
    return features, pd.Series(np.array(ys)[order], name="label"), np.array(truth)[order]


def partition(ids: np.ndarray) -> set[frozenset[int]]:
    return {frozenset(np.flatnonzero(ids == g).tolist()) for g in np.unique(ids)}


def wine_table() -> tuple[pd.DataFrame, pd.Series]:
    wine = load_wine(as_frame=True)
    return wine.data, wine.target.astype(str)


# --------------------------------------------------------------------------- recordings


def test_half_columns_pair_by_suffix_including_a2() -> None:
    names = half_names("a") + half_names("b") + ["other"]
    a_cols, b_cols = paired_half_columns(names)
    assert len(a_cols) == 10
    assert [names[i] for i in b_cols] == half_names("b")
    assert names[a_cols[3]] == "mean_d_0_a2" and names[b_cols[3]] == "mean_d_0_b2"


def test_chained_rows_are_regrouped_into_their_recordings_exactly() -> None:
    sizes = [5, 8, 12, 3, 20, 9]
    features, _, truth = chained_table(sizes)
    recordings = detect_recordings(features)
    assert recordings.found
    assert recordings.n_chains == 6
    assert sorted(recordings.sizes) == sorted(sizes)
    assert partition(recordings.group_ids) == partition(truth)
    assert recordings.n_links == sum(sizes) - len(sizes)
    assert [recordings.sizes[g] for g in recordings.group_ids] == [sizes[t] for t in truth]
    assert recordings.summary() == "6 recordings found in 57 rows (51 links): 3-20 rows each (median 8.5)"


def test_group_ids_do_not_depend_on_scipy_numbering() -> None:
    features, _, _ = chained_table([4, 6, 5])
    ids = detect_recordings(features).group_ids
    first_seen = list(dict.fromkeys(ids.tolist()))
    assert first_seen == [0, 1, 2]


def test_negative_zero_equals_zero_when_chaining() -> None:
    features, _, truth = chained_table([4, 4])
    values = features.to_numpy()
    a, b = values[:, :10], values[:, 10:]
    i, j = next((i, j) for i in range(len(a)) for j in range(len(a)) if np.array_equal(b[i], a[j]))
    features.iat[i, 19] = -0.0  # fft_2_b of row i ...
    features.iat[j, 9] = 0.0  # ... still equals fft_2_a of its successor
    assert partition(detect_recordings(features).group_ids) == partition(truth)


def test_table_without_half_columns_has_one_group_per_row() -> None:
    features, _ = wine_table()
    recordings = detect_recordings(features)
    assert not recordings.found
    assert recordings.n_chains == len(features) == 178
    assert recordings.group_ids.tolist() == list(range(178))
    assert "no _a/_b column pairs" in recordings.summary()


def test_half_columns_without_links_are_not_recordings() -> None:
    rng = np.random.default_rng(1)
    features = pd.DataFrame(rng.normal(size=(30, 20)), columns=half_names("a") + half_names("b"))
    recordings = detect_recordings(features)
    assert not recordings.found and recordings.n_chains == 30
    assert "no row's _b block equals another row's _a block (10 column pairs)" in recordings.summary()


# --------------------------------------------------------------------------- split


def test_grouped_split_keeps_every_recording_on_one_side_and_every_class_in_test() -> None:
    features, labels, truth = chained_table([10, 11, 12, 13, 9, 10, 12, 11, 10, 14, 9, 13])
    split = make_split(features, labels, protocol="grouped", test_size=0.25, seed=3)
    assert split.protocol == "grouped" and split.requested_protocol == "grouped"
    assert set(truth[split.train_index]).isdisjoint(truth[split.test_index])
    assert split.recordings_on_both_sides == 0
    assert set(labels.iloc[split.test_index]) == set(CLASSES)
    assert set(labels.iloc[split.train_index]) == set(CLASSES)
    assert len(set(truth[split.test_index])) == 3  # one of the four recordings of each class
    assert split.n_recordings == 12
    assert sorted(np.concatenate([split.train_index, split.test_index]).tolist()) == list(range(len(labels)))


def test_random_split_is_stratified_and_reports_its_leakage() -> None:
    features, labels, _ = chained_table([30, 30, 30, 20, 20, 20])
    split = make_split(features, labels, protocol="random", test_size=0.2, seed=1)
    assert split.protocol == "random"
    test_counts = labels.iloc[split.test_index].value_counts().to_dict()
    assert test_counts == {"NEGATIVE": 10, "NEUTRAL": 10, "POSITIVE": 10}  # 20% of each 50-row class
    assert split.recordings_on_both_sides == 6  # near-copies on both sides: why "grouped" exists
    assert "6 on both sides" in split.describe()


def test_auto_picks_grouped_with_recordings_and_random_without() -> None:
    features, labels, _ = chained_table([8, 8, 8, 8, 8, 8])
    assert make_split(features, labels).protocol == "grouped"
    wine_x, wine_y = wine_table()
    split = make_split(wine_x, wine_y)
    assert split.protocol == "random" and split.requested_protocol == "auto"
    assert split.groups is None and split.n_recordings == 0
    counts = wine_y.iloc[split.test_index].value_counts().to_dict()
    assert counts == {"0": 12, "1": 14, "2": 10}  # round(0.2 * 59, 71, 48)


def test_grouped_without_recordings_is_a_clear_error() -> None:
    wine_x, wine_y = wine_table()
    with pytest.raises(ConfigurationError) as caught:
        make_split(wine_x, wine_y, protocol="grouped")
    message = str(caught.value)
    assert "\n" not in message
    assert "split protocol 'grouped' needs recordings, but none were found in 178 rows" in message
    assert "SPLIT_PROTOCOL=random" in message


@pytest.mark.parametrize("test_size", [0, 1, 1.5, -0.2, True, "0.2"])
def test_test_size_must_be_a_fraction(test_size: object) -> None:
    features, labels, _ = chained_table([5, 5, 5, 5, 5, 5])
    with pytest.raises(ConfigurationError, match=r"test_size=.* must be a fraction between 0 and 1"):
        make_split(features, labels, test_size=test_size)


def test_unknown_protocol_is_a_configuration_error() -> None:
    features, labels, _ = chained_table([5, 5, 5])
    with pytest.raises(ConfigurationError, match="'stratified' must be one of auto, grouped, random"):
        make_split(features, labels, protocol="stratified")


def test_same_seed_same_split_and_another_seed_another_one() -> None:
    features, labels, _ = chained_table([8] * 12)
    first = make_split(features, labels, seed=5)
    again = make_split(features, labels, seed=5)
    other = make_split(features, labels, seed=6)
    assert np.array_equal(first.test_index, again.test_index)
    assert not np.array_equal(first.test_index, other.test_index)


def test_recordings_that_mix_labels_are_stratified_by_their_majority(
    caplog: pytest.LogCaptureFixture,
) -> None:
    features, labels, truth = chained_table([10] * 9)
    labels = labels.copy()
    labels.iloc[np.flatnonzero(truth == 0)[:2]] = "NEUTRAL"  # recording 0 is mostly NEGATIVE
    with caplog.at_level(logging.WARNING, logger="modules.data.splitting"):
        split = make_split(features, labels, protocol="grouped", test_size=0.34, seed=0)
    assert "1 recordings mix labels" in caplog.text
    assert set(truth[split.train_index]).isdisjoint(truth[split.test_index])


def test_split_round_trips_through_json() -> None:
    features, labels, _ = chained_table([8] * 15)
    split = make_split(features, labels, seed=11)
    stored = json.loads(json.dumps(split.to_dict()))
    restored = Split.from_dict(stored)
    assert restored.protocol == split.protocol and restored.seed == 11 and restored.test_size == 0.2
    assert restored.n_recordings == split.n_recordings == 15
    for name in ("train_index", "test_index", "groups"):
        assert np.array_equal(getattr(restored, name), getattr(split, name))
    assert restored.to_dict() == split.to_dict()
    folds, again = cv_folds(split, labels, n_splits=3), cv_folds(restored, labels, n_splits=3)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))


def test_inconsistent_stored_split_is_refused() -> None:
    features, labels, _ = chained_table([8] * 6)
    stored = make_split(features, labels).to_dict()
    stored["test_index"] = stored["test_index"] + stored["train_index"][:1]
    with pytest.raises(ConfigurationError, match=r"cover rows 0\.\.n-1 exactly once"):
        Split.from_dict(stored)
    with pytest.raises(ConfigurationError, match="lacks train_index"):
        Split.from_dict({k: v for k, v in stored.items() if k != "train_index"})


# --------------------------------------------------------------------------- CV folds


def test_grouped_folds_never_share_a_recording() -> None:
    features, labels, truth = chained_table([9, 10, 11, 12, 10, 9, 11, 12, 10, 9, 12, 11, 10, 9, 11])
    split = make_split(features, labels, protocol="grouped", seed=2)
    folds = cv_folds(split, labels, n_splits=4)
    train_truth = truth[split.train_index]
    assert len(folds) == 4
    seen = []
    for fit, validation in folds:
        assert set(train_truth[fit]).isdisjoint(train_truth[validation])
        assert max(fit.max(), validation.max()) < len(split.train_index)  # relative positions
        seen += validation.tolist()
    assert sorted(seen) == list(range(len(split.train_index)))
    # Training-row labels give the same folds as all rows' labels.
    same = cv_folds(split, labels.iloc[split.train_index], n_splits=4)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, same, strict=True))


def test_folds_follow_the_split_seed_by_default() -> None:
    features, labels, _ = chained_table([9] * 15)
    split = make_split(features, labels, seed=4)
    default = cv_folds(split, labels, n_splits=3)
    explicit = cv_folds(split, labels, n_splits=3, seed=4)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(default, explicit, strict=True))


def test_random_folds_are_stratified_and_usable_as_sklearn_cv() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    wine_x, wine_y = wine_table()
    split = make_split(wine_x, wine_y, seed=0)
    folds = cv_folds(split, wine_y, n_splits=5)
    y_train = wine_y.iloc[split.train_index].to_numpy()
    for _, validation in folds:
        assert set(y_train[validation]) == {"0", "1", "2"}
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    scores = cross_val_score(model, wine_x.iloc[split.train_index], y_train, cv=folds)
    assert len(scores) == 5 and scores.mean() > 0.9


def test_too_few_recordings_for_the_folds_names_the_numbers() -> None:
    features, labels, _ = chained_table([8] * 6)
    split = make_split(features, labels, test_size=0.34, seed=0)  # 3 recordings left for training
    with pytest.raises(
        DataValidationError, match="training part has 3 recordings, fewer than the 5 CV folds"
    ):
        cv_folds(split, labels, n_splits=5)
    with pytest.raises(ConfigurationError, match="n_splits=1 must be a whole number of at least 2"):
        cv_folds(split, labels, n_splits=1)


def test_too_few_rows_of_a_class_for_random_folds() -> None:
    wine_x, wine_y = wine_table()
    split = make_split(wine_x.iloc[:70], wine_y.iloc[:70], seed=0)  # class "1" has 11 rows there
    with pytest.raises(DataValidationError) as caught:
        cv_folds(split, wine_y.iloc[:70], n_splits=10)
    assert str(caught.value) == (
        "class '1' has 11 rows; the held-out split takes 2 (TEST_SIZE=0.2), leaving 9 for training, but "
        "10-fold cross-validation needs 10 training rows per class, so 12 rows in all: "
        "add rows of '1' or set CV_FOLDS to 9 or less"
    )
    with pytest.raises(DataValidationError, match="class '1' has 9 training rows, but 10-fold"):
        cv_folds(split, wine_y.iloc[:70].iloc[split.train_index], n_splits=10)  # training labels only


def table_with_classes(counts: dict[str, int], seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Rows of separable classes, no recordings (a random split)."""
    rng = np.random.default_rng(seed)
    labels = [name for name, count in counts.items() for _ in range(count)]
    centres = {name: k for k, name in enumerate(counts)}
    features = pd.DataFrame(
        rng.normal(size=(len(labels), 4)) + np.array([[centres[y]] for y in labels]),
        columns=["f0", "f1", "f2", "f3"],
    )
    return features, pd.Series(labels, name="label")


@pytest.mark.parametrize(
    ("n_splits", "test_size", "rows"),
    [(5, 0.2, 6), (10, 0.2, 12), (3, 0.2, 4), (2, 0.2, 4), (5, 0.5, 9), (2, 0.9, 25), (5, 0.05, 6)],
)
def test_fewest_rows_per_class_for_the_split_and_its_folds(
    n_splits: int, test_size: float, rows: int
) -> None:
    assert min_rows_per_class(n_splits, test_size) == rows
    # The decision table agrees with what make_split and cv_folds really do, at the edge.
    for count, works in ((rows - 1, False), (rows, True)):
        features, labels = table_with_classes({"A": 40, "B": 40, "C": count})
        split = make_split(features, labels, protocol="random", test_size=test_size, seed=0)
        if works:
            assert len(cv_folds(split, labels, n_splits=n_splits)) == n_splits
            make_split(features, labels, protocol="random", test_size=test_size, seed=0, n_splits=n_splits)
        else:
            with pytest.raises(DataValidationError, match=f"class 'C' has {count} rows"):
                make_split(
                    features, labels, protocol="random", test_size=test_size, seed=0, n_splits=n_splits
                )


def test_a_class_of_exactly_cv_folds_rows_fails_at_the_split_not_in_the_search() -> None:
    features, labels = table_with_classes({"A": 20, "B": 20, "C": 5})
    with pytest.raises(DataValidationError) as caught:
        make_split(features, labels, protocol="random", test_size=0.2, seed=42, n_splits=5)
    assert str(caught.value) == (
        "class 'C' has 5 rows; the held-out split takes 1 (TEST_SIZE=0.2), leaving 4 for training, but "
        "5-fold cross-validation needs 5 training rows per class, so 6 rows in all: "
        "add rows of 'C' or set CV_FOLDS to 4 or less"
    )
    assert make_split(features, labels, protocol="random", test_size=0.2, seed=42).n_rows == 45  # unchecked


def test_two_folds_still_leave_the_svm_its_calibration_rows() -> None:
    features, labels = table_with_classes({"A": 20, "B": 20, "C": 3})
    with pytest.raises(DataValidationError) as caught:
        make_split(features, labels, protocol="random", seed=0, n_splits=2)
    assert (
        f"leaving 2 for training, but 2-fold cross-validation with the SVM's {CALIBRATION_FOLDS}-fold "
        "probability calibration needs 3 training rows per class, so 4 rows in all: add rows of 'C'"
    ) in str(caught.value)


@pytest.mark.slow
@pytest.mark.parametrize("n_splits", [2, 5])
def test_the_smallest_class_that_passes_is_enough_for_tuning_and_the_final_fit(n_splits: int) -> None:
    """The real minimum: the SVM search on the CV folds and the calibrated final fit both run."""
    from modules.models.svm import fit_svm_model, tune_svm

    rows = min_rows_per_class(n_splits, 0.2)
    features, labels = table_with_classes({"A": 30, "B": 30, "C": rows})
    split = make_split(features, labels, protocol="random", seed=0, n_splits=n_splits)
    X, y = features.iloc[split.train_index], labels.iloc[split.train_index].to_numpy()
    result = tune_svm(
        X, y, cv_folds(split, labels, n_splits=n_splits), max_candidates=2, n_jobs=1, progress=None
    )
    model = fit_svm_model(result.best_params, X, y, n_jobs=1)
    assert sorted(model.classes_) == ["A", "B", "C"]


def test_grouped_folds_need_enough_recordings_of_every_class() -> None:
    # Three recordings a class: the held-out split takes one, two are left for three folds.
    features, labels, _ = chained_table([8] * 9)
    split = make_split(features, labels, protocol="grouped", seed=0)
    with pytest.raises(DataValidationError) as caught:
        check_folds_possible(split, labels, 3)
    assert str(caught.value) == (
        "class 'NEGATIVE' has 3 recordings; the held-out split takes 1 (TEST_SIZE=0.2), leaving 2 for "
        "training, but grouped 3-fold cross-validation (each fold validates on whole recordings) needs 3 "
        "training recordings per class: add recordings of 'NEGATIVE'"
    )  # two folds would not help: the SVM's calibration folds need three recordings of each class
    with pytest.raises(DataValidationError, match="class 'NEGATIVE' has 3 recordings"):
        make_split(features, labels, protocol="grouped", seed=0, n_splits=3)
    # Two folds would do, but the SVM's calibration folds need three recordings of each class too.
    with pytest.raises(DataValidationError, match="grouped 2-fold cross-validation with the SVM's 3-fold"):
        cv_folds(split, labels, n_splits=2)
    features, labels, _ = chained_table([8] * 12)  # four a class: three left for training
    split = make_split(features, labels, protocol="grouped", seed=0, n_splits=3)
    y_train = labels.iloc[split.train_index].to_numpy()
    for n_splits in (2, 3):
        folds = cv_folds(split, labels, n_splits=n_splits)
        assert all(set(y_train[validation]) == set(CLASSES) for _, validation in folds)


def test_long_class_names_are_cut_in_messages() -> None:
    name = "N" * 1000
    features, labels = table_with_classes({"A": 20, "B": 20, name: 5})
    with pytest.raises(DataValidationError) as caught:
        make_split(features, labels, protocol="random", n_splits=5)
    assert "... (1000 characters) has 5 rows" in str(caught.value) and len(str(caught.value)) < 700


def test_labels_of_the_wrong_length_are_refused() -> None:
    features, labels, _ = chained_table([8] * 6)
    split = make_split(features, labels)
    with pytest.raises(DataValidationError, match="5 labels for a split of 48 rows"):
        cv_folds(split, labels.iloc[:5])


# --------------------------------------------------------------------------- command line and real sample


def test_cli_prints_chains_and_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    features, labels, _ = chained_table([10, 12, 10, 11, 10, 12])
    table = features.assign(label=labels)
    path = tmp_path / "chained.csv"
    table.to_csv(path, index=False)
    assert run_command(cli, [str(path), "--test-size", "0.34"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "6 recordings found in 65 rows (59 links): 10-12 rows each (median 10.5)"
    assert out[1] == "recording sizes: 12 rows x 2, 11 rows x 1, 10 rows x 3"
    assert out[2].startswith("grouped split (seed 42, test_size 0.34)")


@pytest.mark.skipif(not HAS_SAMPLE_BUILDER, reason="modules.data.sample is not there yet")
def test_chains_of_the_simulated_sample_are_its_recordings(tmp_path: Path) -> None:
    from modules.data.loading import load_dataset, metadata_path
    from modules.data.sample import build_sample

    out = tmp_path / "emotions.csv"
    build_sample(out, seed=3, subjects=2, repeats=1, duration_s=12.0)
    truth = np.array(json.loads(metadata_path(out).read_text())["row_recording"])
    dataset = load_dataset(out)
    recordings = detect_recordings(dataset.features)
    assert dataset.features.shape[1] == 2548
    assert recordings.n_chains == len(set(truth.tolist()))
    assert partition(recordings.group_ids) == partition(np.unique(truth, return_inverse=True)[1])
    split = make_split(dataset.features, dataset.labels, seed=0)
    assert split.protocol == "grouped"
    assert set(truth[split.train_index]).isdisjoint(truth[split.test_index])


# --------------------------------------------------------------------------- subjects and metadata


def subject_table(subjects: int = 5, seed: int = 0) -> tuple[pd.DataFrame, pd.Series, np.ndarray, np.ndarray]:
    """Each subject records every class once: features, labels, recording and subject of every row."""
    sizes = [6 + (k % 3) for k in range(3 * subjects)]
    features, labels, truth = chained_table(sizes, seed=seed)
    subject_of_recording = np.repeat([f"S{k + 1}" for k in range(subjects)], 3)
    return features, labels, truth, subject_of_recording[truth]


def test_subject_split_keeps_every_subject_on_one_side() -> None:
    features, labels, _, subjects = subject_table(subjects=5)
    split = make_split(features, labels, protocol="subject", subjects=subjects, test_size=0.2, seed=1)
    assert split.protocol == "subject" and split.n_subjects == 5
    assert set(subjects[split.train_index]).isdisjoint(subjects[split.test_index])
    assert len(set(subjects[split.test_index])) == 1  # 0.2 of 5 subjects
    assert set(labels.iloc[split.test_index]) == set(CLASSES)
    assert split.recordings_on_both_sides == 0
    assert "5 subjects (1 held out, none on both sides)" in split.describe()
    assert Split.from_dict(json.loads(json.dumps(split.to_dict()))).subjects.tolist() == subjects.tolist()


def test_subject_folds_never_share_a_subject() -> None:
    features, labels, _, subjects = subject_table(subjects=5)
    split = make_split(
        features, labels, protocol="subject", subjects=subjects, test_size=0.2, seed=0, n_splits=3
    )
    train_subjects = subjects[split.train_index]
    folds = cv_folds(split, labels, n_splits=3)
    assert len(folds) == 3
    for train, validation in folds:
        assert set(train_subjects[train]).isdisjoint(train_subjects[validation])
    assert sorted(np.concatenate([v for _, v in folds]).tolist()) == list(range(len(split.train_index)))


def test_subject_protocol_needs_subjects_and_enough_of_them() -> None:
    features, labels, _, subjects = subject_table(subjects=3)
    with pytest.raises(ConfigurationError, match="needs the subject of every row"):
        make_split(features, labels, protocol="subject")
    with pytest.raises(DataValidationError, match="only 1 subject \\('S1'\\)"):
        make_split(features, labels, protocol="subject", subjects=["S1"] * len(labels))
    split = make_split(features, labels, protocol="subject", subjects=subjects, seed=0)
    with pytest.raises(DataValidationError, match="training part has 2 subjects, fewer than the 5 CV folds"):
        cv_folds(split, labels, n_splits=5)
    with pytest.raises(DataValidationError, match="subject 2-fold cross-validation with the SVM's 3-fold"):
        cv_folds(split, labels, n_splits=2)


def write_with_metadata(path: Path, features: pd.DataFrame, labels: pd.Series, metadata: dict) -> Path:
    from modules.data.loading import file_digest, metadata_path

    features.assign(label=labels).to_csv(path, index=False)
    metadata_path(path).write_text(json.dumps({"sha256": file_digest(path), **metadata}))
    return path


def test_groups_from_metadata_give_true_recordings_and_subjects(tmp_path: Path) -> None:
    from modules.data.loading import file_digest

    features, labels, truth, subjects = subject_table(subjects=4)
    names = [f"{subjects[i]}/rec{truth[i]}.csv" for i in range(len(truth))]
    path = write_with_metadata(
        tmp_path / "built.csv", features, labels, {"row_recording": names, "row_subject": subjects.tolist()}
    )
    known = groups_from_metadata(path, len(labels), file_digest(path))
    assert known is not None and known.recordings.source == "metadata"
    assert partition(known.recordings.group_ids) == partition(truth)
    assert known.subjects.tolist() == subjects.tolist() and known.n_subjects == 4
    assert known.recording_names[known.recordings.group_ids[0]] == names[0]
    assert "12 recordings named in the metadata" in known.summary() and "4 subjects" in known.summary()
    # Rows added or dropped since, or a changed file: the metadata no longer describes the rows.
    assert groups_from_metadata(path, len(labels) - 1) is None
    assert groups_from_metadata(path, len(labels), digest="0" * 64) is None


def test_subjects_of_the_offline_sample_come_from_its_recordings_list(tmp_path: Path) -> None:
    features, labels, truth, subjects = subject_table(subjects=2)
    ids = [f"{subjects[i]}-rec{truth[i]}" for i in range(len(truth))]
    recordings = [{"id": i, "subject": int(i[1])} for i in sorted(set(ids))]
    path = write_with_metadata(
        tmp_path / "sample.csv", features, labels, {"row_recording": ids, "recordings": recordings}
    )
    known = groups_from_metadata(path, len(labels))
    assert known is not None and known.subjects.tolist() == [s[1] for s in subjects]
    path = write_with_metadata(tmp_path / "nosubject.csv", features, labels, {"row_recording": ids})
    assert groups_from_metadata(path, len(labels)).subjects is None


def test_cli_uses_the_recordings_and_subjects_of_the_metadata(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    features, labels, truth, subjects = subject_table(subjects=4)
    names = [f"rec{t}" for t in truth]
    path = write_with_metadata(
        tmp_path / "built.csv", features, labels, {"row_recording": names, "row_subject": subjects.tolist()}
    )
    assert run_command(cli, [str(path), "--protocol", "subject", "--test-size", "0.25"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("12 recordings named in the metadata") and out[0].endswith("; 4 subjects")
    assert out[2].startswith("subject split (seed 42, test_size 0.25)") and "1 held out" in out[2]


def test_subject_split_of_the_offline_sample_says_what_it_needs(tmp_path: Path) -> None:
    from modules.data.loading import load_dataset
    from modules.data.sample import build_sample

    out = tmp_path / "emotions.csv"
    build_sample(out, seed=3, subjects=2, repeats=1, duration_s=6.0)
    dataset = load_dataset(out)
    known = groups_from_metadata(out, len(dataset.labels), dataset.digest)
    assert known.n_subjects == 2 and known.recordings.n_chains == 6
    with pytest.raises(DataValidationError) as caught:
        make_split(dataset.features, dataset.labels, protocol="subject", subjects=known.subjects, n_splits=2)
    assert str(caught.value).startswith("the training part has 1 subject, fewer than the 2 CV folds")
    assert "add subjects" in str(caught.value)
    grouped = make_split(dataset.features, dataset.labels, recordings=known.recordings, seed=0)
    assert "subjects" not in grouped.to_dict()  # other splits keep their stored form
