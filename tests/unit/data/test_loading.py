"""modules.data.loading: loading and validating any classification CSV, and fetching the EEG dataset."""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import json
import logging
import lzma
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_wine

from modules.data import fetch as dataset_fetch
from modules.data import loading as data_module
from modules.data.fetch import cli, fetch_dataset, kaggle_credentials
from modules.data.loading import (
    WIDE_DATASET_COLUMNS,
    CsvFormat,
    Dataset,
    dataset_schema_summary,
    detect_csv_format,
    load_dataset,
    read_raw_csv,
)
from modules.errors import ConfigurationError, DataValidationError, run_cli
from tests.commands import run_command

PROJECT_ROOT = Path(__file__).resolve().parents[3]
HAS_SAMPLE_BUILDER = importlib.util.find_spec("modules.data.sample") is not None


def write_table(
    path: Path, rows: int = 15, features: int = 4, classes: tuple[str, ...] = ("a", "b", "c"), seed: int = 0
) -> Path:
    """A small valid CSV in the published style: savetxt's `# ` before the first header, label last."""
    rng = np.random.default_rng(seed)
    values = np.round(rng.normal(size=(rows, features)), 3)
    names = [f"f{k}" for k in range(features)]
    frame = pd.DataFrame(values, columns=names)
    frame["label"] = [classes[i % len(classes)] for i in range(rows)]
    frame.to_csv(path, index=False)
    text = path.read_text()
    path.write_text("# " + text)
    return path


def edit_cell(path: Path, row: int, column: int, value: str) -> Path:
    """Replace one data cell's text (row counts from 1, header excluded)."""
    lines = path.read_text().splitlines()
    cells = lines[row].split(",")
    cells[column] = value
    lines[row] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    return path


# Every bad input: how to make it, extra CLI options, the words the one-line error must contain.
def _missing(tmp: Path) -> Path:
    return tmp / "nowhere.csv"


def _empty(tmp: Path) -> Path:
    path = tmp / "empty.csv"
    path.write_text("")
    return path


def _binary(tmp: Path) -> Path:
    path = tmp / "binary.csv"
    path.write_bytes(b"PK\x03\x04\x00\x00\x08\x00" + bytes(range(256)) * 4)
    return path


def _single_column(tmp: Path) -> Path:
    path = tmp / "semicolons.csv"
    path.write_text("f0;f1;label\n1;2;a\n3;4;b\n")
    return path


def _ragged(tmp: Path) -> Path:
    path = write_table(tmp / "ragged.csv")
    return edit_cell(path, 4, 2, "0.5,0.7")


def _no_label(tmp: Path) -> Path:
    path = tmp / "nolabel.csv"
    frame = pd.DataFrame(np.zeros((3, 6)), columns=[f"mean_{k}_a" for k in range(6)])
    frame.to_csv(path, index=False)
    path.write_text("# " + path.read_text())
    return path


def _single_class(tmp: Path) -> Path:
    return write_table(tmp / "oneclass.csv", classes=("POSITIVE",))


def _non_numeric(tmp: Path) -> Path:
    return edit_cell(write_table(tmp / "text.csv"), 3, 1, "abc")


def _infinite(tmp: Path) -> Path:
    return edit_cell(write_table(tmp / "inf.csv"), 5, 0, "-inf")


def _duplicate(tmp: Path) -> Path:
    path = write_table(tmp / "dup.csv")
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace("f3", "f1")
    path.write_text("\n".join(lines) + "\n")
    return path


def _few_rows(tmp: Path) -> Path:
    return write_table(tmp / "few.csv", rows=7)  # a 3, b 2, c 2


def _with_missing(tmp: Path) -> Path:
    path = write_table(tmp / "gaps.csv")
    edit_cell(path, 2, 0, "")
    return edit_cell(path, 9, 3, "NaN")


def _semicolons_wide(tmp: Path) -> Path:
    """A 2,600-column semicolon-separated file: its header alone is about 30,000 characters."""
    path = tmp / "wide_semicolons.csv"
    names = [f"mean_{k}_a" for k in range(2600)] + ["label"]
    path.write_text(";".join(names) + "\n" + ";".join(["0.5"] * 2600 + ["a"]) + "\n")
    return path


def _long_cell(tmp: Path) -> Path:
    return edit_cell(write_table(tmp / "longcell.csv"), 3, 1, "x" * 5000)


def _zip_archive(tmp: Path) -> Path:
    import zipfile

    path = tmp / "inside.csv"
    with zipfile.ZipFile(path, "w") as bundle:
        bundle.writestr("emotions.csv", "f0,label\n1,a\n")
    return path


def _broken_gzip(tmp: Path) -> Path:
    path = tmp / "broken.csv"
    path.write_bytes(gzip.compress(write_table(tmp / "plain.csv").read_bytes())[:40])
    (tmp / "plain.csv").unlink()
    return path


def _binary_in_gzip(tmp: Path) -> Path:
    path = tmp / "packed_binary.csv.gz"
    path.write_bytes(gzip.compress(bytes(range(256)) * 8))
    return path


BAD_INPUTS = {
    "missing file": (_missing, {}, ["dataset not found", "nowhere.csv"]),
    "empty file": (_empty, {}, ["empty.csv is empty"]),
    "binary file": (_binary, {}, ["not a CSV text file"]),
    "single column": (_single_column, {}, ["single column 'f0;f1;label'; expected comma-separated"]),
    "parser error": (_ragged, {}, ["not a well-formed CSV", "Expected 5 fields in line 5, saw 6"]),
    "no label column": (
        _no_label,
        {},
        ["no label column 'label'", "'# mean_0_a', 'mean_1_a', ... (6 columns)", "--label-column"],
    ),
    "single class": (_single_class, {}, ["single class 'POSITIVE' (15 rows)"]),
    "non-numeric": (_non_numeric, {}, ["column 'f1' is not numeric", "'abc'", "row 3"]),
    "infinite": (_infinite, {}, ["column 'f0' has an infinite value", "row 5"]),
    "duplicate names": (_duplicate, {}, ["duplicate column name 'f1'", "columns 2 and 4"]),
    "too few rows for CV": (
        _few_rows,
        {"min_class_rows": 3},
        ["class 'b' has 2 rows", "3-fold cross-validation", "a 3, b 2, c 2"],
    ),
    "missing values rejected": (
        _with_missing,
        {"missing": "reject"},
        ["2 of 15 rows have missing values", "row 2", "column 'f0'", "MISSING_VALUES=drop"],
    ),
    "semicolon-separated wide header": (
        _semicolons_wide,
        {},
        [
            "has a single column 'mean_0_a;mean_1_a;",
            "... (30095 characters); expected comma-separated",
            "(its header holds 2600 semicolons: save the file comma-separated)",
        ],
    ),
    "long cell value": (
        _long_cell,
        {},
        ["column 'f1' is not numeric: value 'xxxx", "... (5000 characters) at row 3"],
    ),
    "zip archive": (_zip_archive, {}, ["inside.csv is not a CSV text file: it is a ZIP archive"]),
    "broken gzip": (_broken_gzip, {}, ["broken.csv is gzip-compressed but cannot be decompressed"]),
    "binary inside gzip": (
        _binary_in_gzip,
        {},
        ["not a CSV text file (binary content inside its gzip compression)"],
    ),
}


def _cli_args(path: Path, options: dict) -> list[str]:
    args = ["validate", str(path), "--min-class-rows", str(options.get("min_class_rows", 1))]
    if "missing" in options:
        args += ["--missing", options["missing"]]
    return args


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_one_line_naming_the_problem(tmp_path: Path, case: str) -> None:
    make, options, expected = BAD_INPUTS[case]
    path = make(tmp_path)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(DataValidationError) as caught:
        load_dataset(path, **options)
    message = str(caught.value)
    assert "\n" not in message
    assert len(message) < 700  # long headers and values are cut, with their length
    for words in expected:
        assert words in message
    assert sorted(tmp_path.iterdir()) == before  # nothing written


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_cli_prints_one_error_line_and_exits_nonzero(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    make, options, expected = BAD_INPUTS[case]
    with pytest.raises(SystemExit) as stopped:
        run_cli(lambda: run_command(cli, _cli_args(make(tmp_path), options)))
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert expected[0] in lines[0]
    assert captured.out == ""


def write_classes(path: Path, counts: dict[str, int], features: int = 4, seed: int = 0) -> Path:
    """A CSV with `counts[name]` rows of each class (no recordings: the split is random)."""
    rng = np.random.default_rng(seed)
    labels = [name for name, count in counts.items() for _ in range(count)]
    frame = pd.DataFrame(
        np.round(rng.normal(size=(len(labels), features)), 3), columns=[f"f{k}" for k in range(features)]
    )
    frame["label"] = labels
    frame.to_csv(path, index=False)
    return path


def _class_of_cv_folds_rows(tmp: Path) -> Path:
    """Class C has exactly CV_FOLDS (5) rows: enough for the old check, not once the test split takes one."""
    return write_classes(tmp / "five.csv", {"A": 20, "B": 20, "C": 5})


def _class_short_after_dropping(tmp: Path) -> Path:
    """Class C has 6 rows, one of them without its label: once it is dropped, 5 are left (as above)."""
    path = write_classes(tmp / "six_one_missing.csv", {"A": 20, "B": 20, "C": 6})
    return edit_cell(path, 46, 4, "")


# Inputs that load but that the split and its CV folds cannot use: the CLI splits as tuning will.
SPLIT_BAD_INPUTS = {
    "class of exactly CV_FOLDS rows": (
        _class_of_cv_folds_rows,
        "class 'C' has 5 rows; the held-out split takes 1 (TEST_SIZE=0.2), leaving 4 for training, but "
        "5-fold cross-validation needs 5 training rows per class, so 6 rows in all",
    ),
    "the same after dropping a row with a missing label": (
        _class_short_after_dropping,
        "class 'C' has 5 rows; the held-out split takes 1",
    ),
}


@pytest.mark.parametrize("case", list(SPLIT_BAD_INPUTS))
def test_class_too_small_for_the_split_and_folds_fails_validation(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    make, expected = SPLIT_BAD_INPUTS[case]
    path = make(tmp_path)
    assert load_dataset(path, min_class_rows=5).class_counts["C"] == 5  # the old check passes it
    with pytest.raises(SystemExit) as stopped:
        run_cli(lambda: run_command(cli, ["validate", str(path), "--cv-folds", "5"]))
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0]
    assert "Traceback" not in captured.err and captured.out == ""


def test_a_class_with_one_row_more_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_classes(tmp_path / "six.csv", {"A": 20, "B": 20, "C": 6})
    assert run_command(cli, ["validate", str(path), "--cv-folds", "5"]) == 0
    assert "split: random split (seed 42, test_size 0.2): 37 train rows, 9 test rows; 5-fold" in (
        capsys.readouterr().out
    )


def _run_module(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "modules", "data", *args],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_real_process_exit_code(tmp_path: Path, case: str) -> None:
    make, options, expected = BAD_INPUTS[case]
    result = _run_module(*_cli_args(make(tmp_path), options))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected[0] in lines[0]


# The split cases in a real process, with the defaults the pipeline uses.
SPLIT_DEFAULTS = {"CV_FOLDS": "5", "TEST_SIZE": "0.2", "SPLIT_PROTOCOL": "auto", "SEED": "42"}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(SPLIT_BAD_INPUTS))
def test_split_bad_input_real_process_exit_code(tmp_path: Path, case: str) -> None:
    make, expected = SPLIT_BAD_INPUTS[case]
    result = _run_module("validate", str(make(tmp_path)), env=SPLIT_DEFAULTS)
    assert result.returncode == 2, result.stdout
    assert result.stdout == "" and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0]


def test_first_header_loses_the_savetxt_prefix(tmp_path: Path) -> None:
    dataset = load_dataset(write_table(tmp_path / "ok.csv"))
    assert isinstance(dataset, Dataset)
    assert list(dataset.features.columns) == ["f0", "f1", "f2", "f3"]
    assert (dataset.features.dtypes == np.float64).all()
    assert dataset.labels.tolist()[:4] == ["a", "b", "c", "a"]
    assert dataset.classes == ["a", "b", "c"]
    assert dataset.class_counts == {"a": 5, "b": 5, "c": 5}
    assert dataset.source == "user" and dataset.dropped_rows == 0
    assert len(dataset.digest) == 64


def test_missing_values_are_dropped_with_one_warning_that_counts_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _with_missing(tmp_path)
    with caplog.at_level(logging.WARNING, logger="modules.data.loading"):
        dataset = load_dataset(path)
    assert dataset.dropped_rows == 2
    assert len(dataset.features) == len(dataset.labels) == 13
    assert list(dataset.features.index) == list(range(13))
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "dropped 2 of 15 rows with missing values" in warnings[0]


def _read_like_plain(path: Path, plain: Path) -> None:
    """`path` loads to exactly what the plain UTF-8 `plain` loads to."""
    got, want = load_dataset(path), load_dataset(plain)
    pd.testing.assert_frame_equal(got.features, want.features)
    assert got.labels.tolist() == want.labels.tolist()


@pytest.mark.parametrize(
    ("name", "encode", "expected"),
    [
        ("gzip, any name", lambda text: gzip.compress(text.encode()), CsvFormat("gzip", "utf-8")),
        ("bz2", lambda text: bz2.compress(text.encode()), CsvFormat("bz2", "utf-8")),
        ("xz", lambda text: lzma.compress(text.encode()), CsvFormat("xz", "utf-8")),
        ("utf-16 with BOM", lambda text: text.encode("utf-16"), CsvFormat(None, "utf-16")),
        ("utf-16 without BOM", lambda text: text.encode("utf-16-le"), CsvFormat(None, "utf-16-le")),
        ("utf-8 with BOM", lambda text: text.encode("utf-8-sig"), CsvFormat(None, "utf-8-sig")),
        ("utf-32", lambda text: text.encode("utf-32"), CsvFormat(None, "utf-32")),
        ("gzip of utf-16", lambda text: gzip.compress(text.encode("utf-16")), CsvFormat("gzip", "utf-16")),
    ],
)
def test_compressed_and_unicode_csvs_are_read(tmp_path: Path, name: str, encode, expected: CsvFormat) -> None:
    plain = write_table(tmp_path / "plain.csv")
    path = tmp_path / "table.csv"  # the name says nothing: the content decides
    path.write_bytes(encode(plain.read_text()))
    assert detect_csv_format(path) == expected
    _read_like_plain(path, plain)
    pd.testing.assert_frame_equal(read_raw_csv(path), pd.read_csv(plain))


def test_gz_name_on_a_plain_file_is_read_as_plain_text(tmp_path: Path) -> None:
    plain = write_table(tmp_path / "plain.csv")
    misnamed = tmp_path / "table.csv.gz"
    misnamed.write_bytes(plain.read_bytes())
    _read_like_plain(misnamed, plain)


def test_blanks_around_labels_are_removed_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spaces.csv"
    path.write_text("x,y,label\n1,2,NEUTRAL \n3,4,NEUTRAL\n5,6, POSITIVE\n7,8,POSITIVE\n9,10,  \n")
    with caplog.at_level(logging.WARNING, logger="modules.data.loading"):
        dataset = load_dataset(path)
    assert dataset.classes == ["NEUTRAL", "POSITIVE"]
    assert dataset.class_counts == {"NEUTRAL": 2, "POSITIVE": 2}
    assert dataset.dropped_rows == 1  # a blank label is a missing one
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 2
    assert warnings[0] == (
        f"{path}: removed blanks around 3 of 5 values of label column 'label' "
        "(e.g. 'NEUTRAL ' -> 'NEUTRAL'); they would have been classes of their own"
    )
    assert (
        "dropped 1 of 5 rows with missing values (first at row 5, column 'label' (the label))" in warnings[1]
    )


def test_each_warning_is_logged_once_per_file_content(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A pipeline loads its dataset in several places: the same news once is enough."""
    path = _with_missing(tmp_path)
    with caplog.at_level(logging.WARNING, logger="modules.data.loading"):
        for _ in range(3):
            assert load_dataset(path).dropped_rows == 2
        assert len(caplog.records) == 1
        edit_cell(path, 5, 1, "")  # new content, new digest: worth saying again
        load_dataset(path)
        assert len(caplog.records) == 2
        fresh = write_table(tmp_path / "fresh.csv", seed=3)
        edit_cell(fresh, 2, 0, "")
        assert load_dataset(fresh, quiet=True).dropped_rows == 1  # a reload by digest says nothing
        assert len(caplog.records) == 2
    assert "dropped 3 of 15 rows" in caplog.records[1].getMessage()


def test_schema_summary_of_a_very_wide_dataset_is_compact() -> None:
    columns = 19_500  # MLflow refuses a dataset schema this wide
    features = pd.DataFrame(np.zeros((3, columns)), columns=[f"c{k}" for k in range(columns)])
    features["c7"] = features["c7"].astype(np.int64)
    labels = pd.Series(["a", "b", "a"], name="target")
    summary = dataset_schema_summary(features, labels, "f" * 64)
    assert columns > WIDE_DATASET_COLUMNS == 10_000
    assert summary == {
        "digest": "f" * 64,
        "rows": 3,
        "columns": columns + 1,
        "feature_columns": columns,
        "first_columns": ["c0", "c1", "c2", "c3", "c4"],
        "last_columns": [f"c{k}" for k in range(columns - 5, columns)],
        "dtypes": {"float64": columns - 1, "int64": 1},
        "label_column": "target",
        "label_dtype": str(labels.dtype),
        "classes": 2,
    }
    assert len(json.dumps(summary)) < 1000
    narrow = dataset_schema_summary(features.iloc[:, :7], labels, "0")
    assert narrow["first_columns"] == ["c0", "c1", "c2", "c3", "c4"] and narrow["last_columns"] == [
        "c5",
        "c6",
    ]


def test_missing_label_counts_as_a_missing_value(tmp_path: Path) -> None:
    path = edit_cell(write_table(tmp_path / "nolabelvalue.csv"), 4, 4, "")
    dataset = load_dataset(path)
    assert dataset.dropped_rows == 1 and "nan" not in dataset.labels.tolist()


def test_wine_csv_with_another_label_column_and_numeric_labels(tmp_path: Path) -> None:
    wine = load_wine(as_frame=True).frame  # 13 features, then "target" with 0, 1, 2
    path = tmp_path / "wine.csv"
    wine.to_csv(path, index=False)
    dataset = load_dataset(path, label_column="target", min_class_rows=5)
    assert dataset.features.shape == (178, 13)
    assert "target" not in dataset.features.columns
    assert dataset.classes == ["0", "1", "2"]
    assert dataset.class_counts == {"0": 59, "1": 71, "2": 48}
    np.testing.assert_allclose(dataset.features["alcohol"].to_numpy(), wine["alcohol"].to_numpy())
    with pytest.raises(
        DataValidationError, match=r"no label column 'label'.*'alcohol', 'malic_acid', \.\.\. \(14 columns\)"
    ):
        load_dataset(path)


def test_numeric_labels_stay_as_written_when_some_are_missing(tmp_path: Path) -> None:
    path = tmp_path / "codes.csv"
    path.write_text("x,y,code\n1,2,1\n3,4,2\n5,6,\n7,8,1\n9,10,2\n")
    dataset = load_dataset(path, label_column="code")
    assert dataset.labels.tolist() == ["1", "2", "1", "2"]
    assert dataset.dropped_rows == 1


def test_validate_cli_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "wine.csv"
    load_wine(as_frame=True).frame.to_csv(path, index=False)
    assert run_command(cli, ["validate", str(path), "--label-column", "target"]) == 0
    out = capsys.readouterr().out
    assert "rows: 178 (dropped for missing values: 0)" in out
    assert "features: 13" in out
    assert "classes: 3 (0 59, 1 71, 2 48)" in out
    assert "source: user" in out
    assert "sha256: " + load_dataset(path, "target").digest[:12] in out


@pytest.mark.slow
def test_validate_cli_in_a_real_process_with_label_column(tmp_path: Path) -> None:
    path = tmp_path / "wine.csv"
    load_wine(as_frame=True).frame.to_csv(path, index=False)
    result = _run_module("validate", str(path), "--label-column", "target")
    assert result.returncode == 0, result.stderr
    assert "classes: 3 (0 59, 1 71, 2 48)" in result.stdout


def test_source_comes_from_the_metadata_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_table(tmp_path / "emotions.csv")
    meta = tmp_path / "emotions.metadata.json"
    meta.write_text(json.dumps({"source": "sample"}))
    assert load_dataset(path).source == "sample"
    meta.write_text(json.dumps({"source": "kaggle", "sha256": data_module.file_digest(path)}))
    assert load_dataset(path).source == "kaggle"
    # Metadata that describes another file (the CSV was replaced) is not believed.
    meta.write_text(json.dumps({"source": "kaggle", "sha256": "0" * 64}))
    with caplog.at_level(logging.WARNING, logger="modules.data.loading"):
        assert load_dataset(path).source == "user"
    assert "changed since its metadata" in caplog.text


def test_bad_settings_are_configuration_errors(tmp_path: Path) -> None:
    path = write_table(tmp_path / "ok.csv")
    with pytest.raises(ConfigurationError, match="missing='keep' must be one of drop, reject"):
        load_dataset(path, missing="keep")


# --------------------------------------------------------------------------- fetch


@pytest.fixture
def no_kaggle_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME without ~/.kaggle and no KAGGLE_* variables."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    return home


def test_credentials_are_found_where_kaggle_looks(
    no_kaggle_credentials: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert kaggle_credentials() is None
    (no_kaggle_credentials / ".kaggle").mkdir()
    (no_kaggle_credentials / ".kaggle" / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    assert kaggle_credentials().endswith(".kaggle/kaggle.json")
    monkeypatch.setenv("KAGGLE_USERNAME", "u")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    assert kaggle_credentials() == "KAGGLE_USERNAME/KAGGLE_KEY"


@pytest.fixture
def sample_builder(monkeypatch: pytest.MonkeyPatch) -> str:
    """The real sample builder when helper modules exist; a tiny stand-in otherwise."""
    if HAS_SAMPLE_BUILDER:
        return "real"

    def build(out: Path, seed: int, force: bool) -> str:
        write_table(out, rows=30, seed=seed)
        (out.with_suffix(".metadata.json")).write_text(json.dumps({"source": "sample"}))
        return "Offline sample: stand-in."

    monkeypatch.setattr(dataset_fetch, "_build_offline_sample", build)
    return "stand-in"


@pytest.mark.slow
def test_fetch_without_credentials_builds_the_sample_and_keeps_existing_files(
    no_kaggle_credentials: Path, sample_builder: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "data" / "emotions.csv"
    out.parent.mkdir()
    write_table(out)  # a user's own file is there first
    before = out.read_bytes()

    assert fetch_dataset(out) == "existing"
    assert out.read_bytes() == before
    assert "make data FORCE=1" in capsys.readouterr().out

    assert fetch_dataset(out, force=True) == "sample"
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "No Kaggle credentials (KAGGLE_USERNAME/KAGGLE_KEY or ~/.kaggle/kaggle.json): "
        "building the offline sample instead."
    )
    dataset = load_dataset(out)
    assert dataset.source == "sample"
    if sample_builder == "real":
        assert dataset.features.shape[1] == 2548 and dataset.classes == ["NEGATIVE", "NEUTRAL", "POSITIVE"]
    built = out.read_bytes()

    assert fetch_dataset(out, seed=7) == "existing"
    assert out.read_bytes() == built
    assert not (no_kaggle_credentials / ".kaggle").exists()  # kaggle was never imported


def test_fetch_into_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="is a folder; give the CSV file's path"):
        fetch_dataset(tmp_path)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_fetch_with_credentials_but_no_network_reports_one_line(tmp_path: Path) -> None:
    """Fake credentials and a proxy nobody listens on: the download fails fast, as offline."""
    home = tmp_path / "home"
    home.mkdir()
    proxy = f"http://127.0.0.1:{_closed_port()}"
    env = {
        "HOME": str(home),
        "KAGGLE_USERNAME": "someone",
        "KAGGLE_KEY": "0123456789abcdef",
        "HTTPS_PROXY": proxy,
        "https_proxy": proxy,
        "NO_PROXY": "",
        "no_proxy": "",
    }
    out = tmp_path / "emotions.csv"
    write_table(out)
    # An existing Kaggle download is kept when a forced refresh cannot reach Kaggle.
    out.with_suffix(".metadata.json").write_text(json.dumps({"source": "kaggle"}))
    before = out.read_bytes()
    result = _run_module("fetch", "--out", str(out), "--force", env=env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Kaggle download failed (cannot reach api.kaggle.com")
    assert "keeping the existing Kaggle dataset" in lines[0]
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".kaggle-")] == []  # temp dir removed

    if HAS_SAMPLE_BUILDER:  # with nothing to keep, it falls back to the offline sample
        fresh = tmp_path / "fresh" / "emotions.csv"
        result = _run_module("fetch", "--out", str(fresh), env=env)
        assert result.returncode == 0, result.stderr
        first = result.stdout.splitlines()[0]
        assert first.startswith("Kaggle download failed (cannot reach api.kaggle.com")
        assert first.endswith("building the offline sample instead.")
        assert load_dataset(fresh).source == "sample"


def test_kaggle_source_comes_from_the_data_manifest(tmp_path):
    from modules.data.fetch import kaggle_source
    from modules.data.loading import KAGGLE_DATASET, KAGGLE_FILE

    manifest = tmp_path / "manifest.json"
    assert kaggle_source(manifest) == (KAGGLE_DATASET, KAGGLE_FILE)
    manifest.write_text('{"kaggle_dataset": "someone/other-eeg", "file": "rows.csv", "version": 2}')
    assert kaggle_source(manifest) == ("someone/other-eeg", "rows.csv")
    manifest.write_text("{not json")
    with pytest.raises(ConfigurationError, match=r"manifest\.json: not readable JSON"):
        kaggle_source(manifest)


def test_the_shipped_manifest_names_the_eeg_dataset():
    from modules.data.fetch import kaggle_source
    from modules.data.loading import DATA_MANIFEST, KAGGLE_DATASET, KAGGLE_FILE

    assert kaggle_source(DATA_MANIFEST) == (KAGGLE_DATASET, KAGGLE_FILE)
