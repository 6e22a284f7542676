"""analysis.eda: the JSON, PNG and HTML files it writes, and the numbers in them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.eda import (
    describe_features,
    feature_stem,
    find_constant_columns,
    find_duplicate_columns,
    main,
    run_eda,
)
from modules.errors import DataValidationError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES = ["NEGATIVE", "NEUTRAL", "POSITIVE"]


def write_planted_csv(path: Path, rows: int = 90, seed: int = 0) -> pd.DataFrame:
    """A small table with known structure: a duplicate pair, a constant column, missing values."""
    rng = np.random.default_rng(seed)
    labels = np.array(CLASSES * (rows // 3))
    rng.shuffle(labels)
    frame = pd.DataFrame(
        {
            "signal": rng.normal(size=rows),
            "wide": rng.normal(scale=1e6, size=rows),
            "copy_source": rng.normal(size=rows),
            "constant": np.full(rows, 3.0),
            "gappy": rng.normal(size=rows),
        }
    )
    frame["copy"] = frame["copy_source"]
    frame.loc[[4, 9], "gappy"] = np.nan
    frame.loc[17, "signal"] = np.nan
    frame["label"] = labels
    frame.to_csv(path, index=False)
    return frame


def write_chained_csv(path: Path, chain_lengths: tuple[int, ...] = (12, 7), seed: int = 1) -> None:
    """Rows made from consecutive windows (`_a` = previous, `_b` = current), shuffled, as in the EEG file."""
    rng = np.random.default_rng(seed)
    rows = []
    for number, length in enumerate(chain_lengths):
        windows = np.round(rng.normal(size=(length + 1, 2)), 3)
        for k in range(1, length + 1):
            rows.append([*windows[k - 1], *windows[k], CLASSES[number % 3]])
    frame = pd.DataFrame(rows, columns=["m0_a", "m1_a", "m0_b", "m1_b", "label"])
    frame.sample(frac=1.0, random_state=seed).to_csv(path, index=False)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, dict, Path]:
    folder = tmp_path_factory.mktemp("eda_planted")
    frame = write_planted_csv(folder / "planted.csv")
    summary = run_eda(folder / "planted.csv", folder / "reports")
    return frame, summary, folder / "reports"


def test_writes_json_html_and_png_files(planted: tuple[pd.DataFrame, dict, Path]) -> None:
    _, summary, out = planted
    assert (out / "eda.json").is_file()
    assert json.loads((out / "eda.json").read_text()) == summary
    for name in summary["files"]["figures"].values():
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
    assert set(summary["files"]["figures"]) == {"labels", "scales", "missing"}  # no recordings here
    page = (out / "eda.html").read_text()
    assert "<title>Exploratory data analysis</title>" in page
    assert page.count("data:image/png;base64,") == 3
    for heading in ("Label distribution", "Missing values", "Constant and duplicate columns", "Recordings"):
        assert f"<h2>{heading}" in page


def test_label_counts_equal_the_rows_used(planted: tuple[pd.DataFrame, dict, Path]) -> None:
    frame, summary, _ = planted
    kept = frame.dropna()
    assert summary["labels"]["classes"] == CLASSES
    assert summary["labels"]["counts"] == kept["label"].value_counts().to_dict()
    assert sum(summary["labels"]["fractions"].values()) == pytest.approx(1.0)
    assert summary["dataset"]["rows"] == len(kept)
    assert summary["dataset"]["features"] == 6


def test_missing_values_are_counted_per_column(planted: tuple[pd.DataFrame, dict, Path]) -> None:
    _, summary, _ = planted
    missing = summary["missing_values"]
    assert missing["by_column"] == {"signal": 1, "gappy": 2}
    assert missing["total"] == 3
    assert missing["rows_with_missing"] == 3 == summary["dataset"]["dropped_rows"]
    assert missing["rows_in_file"] == 90


def test_constant_and_duplicate_columns_are_reported(planted: tuple[pd.DataFrame, dict, Path]) -> None:
    _, summary, _ = planted
    assert summary["constant_columns"] == ["constant"]
    duplicates = summary["duplicate_columns"]
    assert duplicates["groups"] == [["copy_source", "copy"]]
    assert duplicates["n_redundant_columns"] == 1


def test_feature_stats_match_pandas_describe(planted: tuple[pd.DataFrame, dict, Path]) -> None:
    frame, summary, _ = planted
    expected = frame.dropna().drop(columns="label").describe()
    assert set(summary["feature_stats"]) == set(expected.columns)
    for column in expected.columns:
        for stat in ("count", "mean", "std", "min", "25%", "50%", "75%", "max"):
            assert summary["feature_stats"][column][stat] == pytest.approx(expected.loc[stat, column])
    assert summary["largest_scale_features"][0]["feature"] == "wide"


def test_recordings_are_found_and_sized(tmp_path: Path) -> None:
    write_chained_csv(tmp_path / "chained.csv", chain_lengths=(12, 7))
    summary = run_eda(tmp_path / "chained.csv", tmp_path / "out")
    recordings = summary["recordings"]
    assert recordings["found"] is True
    assert recordings["n_chains"] == 2
    assert recordings["sizes"] == [12, 7]
    assert recordings["chains_with_mixed_labels"] == 0
    assert (tmp_path / "out" / "eda_recordings.png").read_bytes().startswith(PNG_MAGIC)


def test_a_table_without_window_pairs_has_no_recordings(planted: tuple[pd.DataFrame, dict, Path]) -> None:
    _, summary, out = planted
    assert summary["recordings"]["found"] is False
    assert not (out / "eda_recordings.png").exists()


def test_wine_with_another_label_column(tmp_path: Path) -> None:
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True)
    frame = wine.data.copy()
    frame["cultivar"] = [f"cultivar_{code}" for code in wine.target]
    frame.to_csv(tmp_path / "wine.csv", index=False)

    summary = run_eda(tmp_path / "wine.csv", tmp_path / "out", label_column="cultivar")
    assert summary["labels"]["counts"] == {"cultivar_0": 59, "cultivar_1": 71, "cultivar_2": 48}
    assert summary["dataset"]["features"] == 13
    assert summary["dataset"]["label_column"] == "cultivar"
    assert summary["recordings"]["n_chains"] == 178 and not summary["recordings"]["found"]
    assert len(summary["feature_groups"]) == 13  # names without numbers are their own group
    assert summary["largest_scale_features"][0]["feature"] == "proline"


def test_bad_data_raises_before_creating_the_output(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("a,b,label\n1,x,POS\n2,3,NEG\n")
    with pytest.raises(DataValidationError, match="'b'"):
        run_eda(tmp_path / "bad.csv", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_prints_one_line_error_and_exits_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from modules.errors import run_cli

    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main([str(tmp_path / "missing.csv"), str(tmp_path / "out")]))
    assert exit_info.value.code != 0
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error
    assert not (tmp_path / "out").exists()


def test_cli_writes_the_report_and_prints_paths(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_planted_csv(tmp_path / "data.csv", rows=30)
    assert (
        main([str(tmp_path / "data.csv"), str(tmp_path / "nested" / "out"), "--label-column", "label"]) == 0
    )
    printed = capsys.readouterr().out
    assert f"Wrote {tmp_path / 'nested' / 'out' / 'eda.json'}" in printed
    assert (tmp_path / "nested" / "out" / "eda.html").is_file()


def test_feature_stem_groups_eeg_and_generic_names() -> None:
    assert feature_stem("fft_749_a") == "fft_"
    assert feature_stem("mean_d_0_b2") == "mean_d_"
    assert feature_stem("mean_d_12_a") == "mean_d_"
    assert feature_stem("entropy3_b") == "entropy"
    assert feature_stem("x12") == "x"
    assert feature_stem("od280/od315_of_diluted_wines") == "od280/od315_of_diluted_wines"


def test_duplicate_detection_is_exact() -> None:
    frame = pd.DataFrame(
        {
            "a": [0.0, 1.0, np.nan],
            "b": [-0.0, 1.0, np.nan],  # -0.0 == 0.0 and NaN in the same place: equal
            "c": [0.0, 1.0, 2.0],
            "d": [0.0, 1.0 + 1e-12, np.nan],  # close is not equal
            "e": [0.0, 1.0, 2.0],
        }
    )
    assert find_duplicate_columns(frame) == [["a", "b"], ["c", "e"]]
    assert find_constant_columns(pd.DataFrame({"k": [2.0, 2.0], "v": [1.0, 2.0], "n": [np.nan, np.nan]})) == [
        "k",
        "n",
    ]


def test_describe_features_counts_missing_values() -> None:
    stats = describe_features(pd.DataFrame({"x": [1.0, np.nan, 3.0]}))
    assert stats["x"]["count"] == 2 and stats["x"]["missing"] == 1
    assert stats["x"]["mean"] == pytest.approx(2.0) and stats["x"]["50%"] == pytest.approx(2.0)
