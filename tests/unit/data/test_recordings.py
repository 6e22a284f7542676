"""modules.data.recordings: a folder of Muse recordings -> one published-format dataset whose metadata
feeds the grouped and subject splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modules.data import eeg_features as ef
from modules.data.loading import load_dataset, metadata_path
from modules.data.muse_exports import read_muse_export
from modules.data.recordings import build_dataset, cli
from modules.data.sample import STATES, _make_subjects, simulate_recording
from modules.data.splitting import cv_folds, groups_from_metadata, make_split
from modules.errors import ConfigurationError, DataValidationError
from tests.commands import exit_code
from tests.unit.data.test_muse_exports import lsl_jitter, write_mind_monitor, write_muse_lsl

SECONDS = 4.0  # 6 rows a recording


def make_folder(root: Path, subjects: int = 4, *, by_subject: bool = True, seed: int = 0) -> Path:
    """DIR/SUBJECT/LABEL/take1.csv (or DIR/LABEL/Sk-take1.csv): one jittered muse-lsl export per
    subject and state, the last subject's POSITIVE one written by Mind Monitor."""
    rng = np.random.default_rng(seed)
    for k, person in enumerate(_make_subjects(rng, subjects)):
        for state in STATES:
            t, signals = simulate_recording(rng, person, state, SECONDS, 1_546_300_800.0 + 600 * k)
            folder = root / f"S{k + 1}" / state if by_subject else root / state
            folder.mkdir(parents=True, exist_ok=True)
            name = "take1.csv" if by_subject else f"S{k + 1}-take1.csv"
            if k == subjects - 1 and state == "POSITIVE":
                write_mind_monitor(folder / name, t, np.round(signals, 3), seed=k)
            else:
                write_muse_lsl(folder / name, t + lsl_jitter(len(t), seed=k), np.round(signals, 3))
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    root = make_folder(tmp_path_factory.mktemp("recordings") / "mine")
    out = root.parent / "data" / "mine.csv"
    calls: list[tuple[int, int, str]] = []
    info = build_dataset(root, out, jobs=2, progress=lambda *call: calls.append(call))
    assert [c[:2] for c in sorted(calls)] == [(i, 12) for i in range(1, 13)]
    return root, out, info


def test_a_folder_of_recordings_becomes_a_published_dataset(built) -> None:
    _, out, info = built
    assert info.rows == 72 and info.recordings == 12 and info.subjects == 4 and info.skipped == []
    assert info.class_counts == {"NEGATIVE": 24, "NEUTRAL": 24, "POSITIVE": 24}
    assert out.read_text().splitlines()[0].split(",") == ef.published_header()
    dataset = load_dataset(out)
    assert dataset.features.shape == (72, 2548) and dataset.classes == list(STATES)
    assert dataset.source == "user"  # the metadata's digest matches the file


def test_metadata_names_every_rows_recording_and_subject(built) -> None:
    root, out, _ = built
    metadata = json.loads(metadata_path(out).read_text())
    assert len(metadata["row_recording"]) == len(metadata["row_subject"]) == 72
    lines = out.read_text().splitlines()[1:]
    # The rows of S2/NEUTRAL/take1.csv are exactly that file's rows, in the published format.
    picked = [
        line + "\n"
        for line, rec in zip(lines, metadata["row_recording"], strict=True)
        if rec == "S2/NEUTRAL/take1.csv"
    ]
    expected = ef.format_row_lines(
        ef.export_to_rows(read_muse_export(root / "S2/NEUTRAL/take1.csv"), "NEUTRAL")
    )
    assert "".join(picked) == expected
    assert {
        r for r, s in zip(metadata["row_recording"], metadata["row_subject"], strict=True) if s == "S4"
    } == {
        "S4/NEGATIVE/take1.csv",
        "S4/NEUTRAL/take1.csv",
        "S4/POSITIVE/take1.csv",
    }
    mind_monitor = next(r for r in metadata["recordings"] if r["id"] == "S4/POSITIVE/take1.csv")
    assert mind_monitor["format"] == "mind-monitor" and mind_monitor["segments"] == 1
    assert mind_monitor["effective_rate_hz"] == pytest.approx(256, rel=0.01)


def test_subject_split_and_folds_of_the_built_dataset_keep_subjects_apart(built) -> None:
    _, out, _ = built
    dataset = load_dataset(out)
    known = groups_from_metadata(out, len(dataset.labels), dataset.digest)
    assert known is not None and known.n_subjects == 4
    split = make_split(
        dataset.features,
        dataset.labels,
        protocol="subject",
        test_size=0.25,
        seed=0,
        recordings=known.recordings,
        subjects=known.subjects,
        n_splits=3,
    )
    subjects = known.subjects
    assert set(subjects[split.train_index]).isdisjoint(subjects[split.test_index])
    assert split.n_recordings == 12 and split.recordings_on_both_sides == 0
    train_subjects = subjects[split.train_index]
    for train, validation in cv_folds(split, dataset.labels, n_splits=3):
        assert set(train_subjects[train]).isdisjoint(train_subjects[validation])


def test_grouped_split_uses_the_true_recordings(built) -> None:
    _, out, _ = built
    dataset = load_dataset(out)
    known = groups_from_metadata(out, len(dataset.labels), dataset.digest)
    split = make_split(dataset.features, dataset.labels, protocol="grouped", recordings=known.recordings)
    names = np.array(json.loads(metadata_path(out).read_text())["row_recording"])
    assert set(names[split.train_index]).isdisjoint(names[split.test_index])
    assert split.n_recordings == 12


def test_all_cores_give_the_same_bytes_as_one(built, tmp_path: Path) -> None:
    root, out, _ = built
    single = build_dataset(root, tmp_path / "single.csv", jobs=1)
    assert single.jobs == 1
    assert (tmp_path / "single.csv").read_bytes() == out.read_bytes()


def test_labels_csv_gives_labels_and_subjects_and_names_unlisted_files(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "flat", subjects=2, by_subject=False)
    listed = [f"{state}/S{k}-take1.csv" for k in (1, 2) for state in STATES if (k, state) != (2, "NEUTRAL")]
    labels = tmp_path / "labels.csv"
    pd.DataFrame(
        {
            "file": listed,
            "label": [p.split("/")[0] for p in listed],
            "subject": [p.split("/")[1].split("-")[0] for p in listed],
        }
    ).to_csv(labels, index=False)
    info = build_dataset(root, tmp_path / "out.csv", labels=labels, jobs=1)
    assert info.recordings == 5 and info.subjects == 2
    (warning,) = info.warnings
    assert "1 CSV file is not in labels.csv" in warning and "NEUTRAL/S2-take1.csv" in warning
    metadata = json.loads(metadata_path(tmp_path / "out.csv").read_text())
    assert set(metadata["row_subject"]) == {"S1", "S2"}


def test_folder_labels_without_subjects_cannot_split_by_subject(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "flat", subjects=2, by_subject=False)
    info = build_dataset(root, tmp_path / "out.csv", jobs=1)
    assert info.subjects is None
    assert "row_subject" not in json.loads(metadata_path(tmp_path / "out.csv").read_text())
    dataset = load_dataset(tmp_path / "out.csv")
    known = groups_from_metadata(tmp_path / "out.csv", len(dataset.labels))
    assert known.subjects is None and known.recordings.n_chains == 6
    with pytest.raises(ConfigurationError, match="split protocol 'subject' needs the subject of every row"):
        make_split(dataset.features, dataset.labels, protocol="subject", subjects=known.subjects)


def test_a_bad_file_stops_the_build_with_nothing_written_unless_skipped(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "mine", subjects=2)
    bad = root / "S1" / "NEUTRAL" / "broken.csv"
    bad.write_text("timestamps,TP9,AF7,AF8,TP10,Right AUX\n" + "0.0,1,2,3,4,5\n" * 3)
    out = tmp_path / "out.csv"
    with pytest.raises(DataValidationError) as error:
        build_dataset(root, out, jobs=2)
    assert "broken.csv" in str(error.value) and "too short for one row" in str(error.value)
    assert "nothing written" in str(error.value)
    assert not out.exists() and not metadata_path(out).exists()
    info = build_dataset(root, out, skip_bad=True, jobs=2)
    assert info.recordings == 6 and [file for file, _ in info.skipped] == ["S1/NEUTRAL/broken.csv"]
    assert json.loads(metadata_path(out).read_text())["skipped"][0]["file"] == "S1/NEUTRAL/broken.csv"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("exists", "already exists; pass --force"),
        ("loose", "lies directly in"),
        ("labels_column", "no 'label' column"),
        ("empty", "no CSV recordings found"),
    ],
)
def test_cli_problems_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, case: str, expected: str
) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    out = tmp_path / "out.csv"
    argv = [str(root), "--out", str(out), "--jobs", "1"]
    if case == "exists":
        out.write_text("x\n")
    if case in ("exists", "loose", "labels_column"):
        write_muse_lsl(root / "a.csv", np.arange(512) / 256, np.zeros((512, 5)))
    if case == "labels_column":
        (tmp_path / "labels.csv").write_text("file,emotion\na.csv,POSITIVE\n")
        argv += ["--labels", str(tmp_path / "labels.csv")]
    assert exit_code(cli, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err


def test_cli_builds_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_folder(tmp_path / "mine", subjects=2)
    out = tmp_path / "data" / "mine.csv"
    assert exit_code(cli, [str(root), "--out", str(out), "--jobs", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(
        "wrote 36 rows (NEGATIVE 12, NEUTRAL 12, POSITIVE 12) from 6 recordings, 2 subjects"
    )
    assert "[6/6]" in captured.err and out.is_file()
