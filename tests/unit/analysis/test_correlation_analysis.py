"""analysis.correlation_analysis: correlations, ranking, and the files written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.correlation_analysis import (
    correlation_ratios,
    correlations_with_label,
    encode_labels,
    main,
    run_correlation_analysis,
)
from modules.errors import ConfigurationError, DataValidationError, run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES = ["NEGATIVE", "NEUTRAL", "POSITIVE"]


def write_planted_csv(path: Path, rows: int = 120, noise_columns: int = 40, seed: int = 0) -> pd.DataFrame:
    """Noise columns plus: a perfect linear function of the code, its exact copy, a constant, a weak one."""
    rng = np.random.default_rng(seed)
    labels = np.array(CLASSES * (rows // 3))
    rng.shuffle(labels)
    codes = np.searchsorted(CLASSES, labels).astype(float)
    frame = pd.DataFrame(
        rng.normal(size=(rows, noise_columns)), columns=[f"noise_{i}" for i in range(noise_columns)]
    )
    frame.insert(3, "perfect", 2.5 * codes - 7.0)
    frame["perfect_copy"] = frame["perfect"]
    frame["constant"] = 1.5
    frame["weak"] = codes + rng.normal(scale=2.0, size=rows)
    frame["label"] = labels
    frame.to_csv(path, index=False)
    return frame


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, dict, Path]:
    folder = tmp_path_factory.mktemp("correlation_planted")
    frame = write_planted_csv(folder / "planted.csv")
    summary = run_correlation_analysis(folder / "planted.csv", folder / "reports", top_n=10)
    return frame, summary, folder / "reports"


def test_writes_json_html_and_png_files(planted: tuple[pd.DataFrame, dict, Path]) -> None:
    _, summary, out = planted
    assert json.loads((out / "correlation.json").read_text()) == summary
    assert set(summary["files"]["figures"]) == {"bars", "heatmap", "by_class"}
    for name in summary["files"]["figures"].values():
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
    page = (out / "correlation.html").read_text()
    assert "<title>Correlation with the label</title>" in page
    assert page.count("data:image/png;base64,") == 3
    assert "NEGATIVE=0, NEUTRAL=1, POSITIVE=2" in page


def test_label_encoding_follows_label_encoder(planted: tuple[pd.DataFrame, dict, Path]) -> None:
    from sklearn.preprocessing import LabelEncoder

    frame, summary, _ = planted
    assert summary["label_encoding"] == {"NEGATIVE": 0, "NEUTRAL": 1, "POSITIVE": 2}
    codes, _ = encode_labels(frame["label"])
    assert codes.tolist() == LabelEncoder().fit_transform(frame["label"]).tolist()


def test_planted_perfect_feature_ranks_first(planted: tuple[pd.DataFrame, dict, Path]) -> None:
    _, summary, _ = planted
    first = summary["top_features"][0]
    assert first["feature"] == "perfect"
    assert first["rank"] == 1
    assert first["r"] == pytest.approx(1.0) and first["abs_r"] == pytest.approx(1.0)
    assert first["eta"] == pytest.approx(1.0)
    assert first["duplicates"] == ["perfect_copy"]
    assert summary["top_features"][1]["feature"] == "weak"
    assert summary["summary"]["max_abs_r"] == pytest.approx(1.0)


def test_duplicates_are_ranked_once_and_constants_excluded(planted: tuple[pd.DataFrame, dict, Path]) -> None:
    _, summary, _ = planted
    ranked = [item["feature"] for item in summary["top_features"]]
    assert len(ranked) == 10 == summary["top_n"]
    assert "perfect_copy" not in ranked and "constant" not in ranked
    assert summary["excluded"] == {"constant_columns": ["constant"], "duplicate_columns": 1}
    assert summary["correlations"]["constant"] is None  # undefined r is null, not NaN, in the JSON
    assert summary["correlations"]["perfect_copy"] == pytest.approx(1.0)
    abs_r = [item["abs_r"] for item in summary["top_features"]]
    assert abs_r == sorted(abs_r, reverse=True)


def test_correlations_match_pandas(planted: tuple[pd.DataFrame, dict, Path]) -> None:
    frame, summary, _ = planted
    codes = pd.Series(np.searchsorted(CLASSES, frame["label"]), dtype=float)
    expected = frame.drop(columns=["label", "constant"]).corrwith(codes)
    for column, value in expected.items():
        assert summary["correlations"][column] == pytest.approx(value, abs=1e-12)
    assert len(summary["correlations"]) == frame.shape[1] - 1


def test_heatmap_matrix_covers_top_features_and_label(planted: tuple[pd.DataFrame, dict, Path]) -> None:
    _, summary, _ = planted
    block = summary["top_intercorrelation"]
    assert block["features"] == [item["feature"] for item in summary["top_features"]] + ["label (encoded)"]
    matrix = np.array(block["matrix"], dtype=float)
    assert matrix.shape == (11, 11)
    assert np.allclose(np.diag(matrix), 1.0)
    assert matrix[0, -1] == pytest.approx(1.0)  # `perfect` with the label


def test_correlation_ratio_is_order_free() -> None:
    codes = np.array([0, 0, 1, 1, 2, 2], dtype=float)
    middle_only = np.array([[0.0], [0.0], [5.0], [5.0], [0.0], [0.0]])
    assert correlations_with_label(middle_only, codes)[0] == pytest.approx(0.0)
    assert correlation_ratios(middle_only, codes, 3)[0] == pytest.approx(1.0)


def test_wine_with_another_label_column(tmp_path: Path) -> None:
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True)
    frame = wine.data.copy()
    frame["cultivar"] = [f"cultivar_{code}" for code in wine.target]
    frame.to_csv(tmp_path / "wine.csv", index=False)

    summary = run_correlation_analysis(tmp_path / "wine.csv", tmp_path / "out", label_column="cultivar")
    assert summary["label_encoding"] == {"cultivar_0": 0, "cultivar_1": 1, "cultivar_2": 2}
    assert len(summary["top_features"]) == 13  # fewer columns than --top-n: all of them
    expected = wine.data.corrwith(pd.Series(wine.target, dtype=float)).abs().idxmax()
    assert summary["top_features"][0]["feature"] == expected
    assert (tmp_path / "out" / "correlation_heatmap.png").is_file()


def test_bad_inputs_raise_before_creating_the_output(tmp_path: Path) -> None:
    write_planted_csv(tmp_path / "data.csv", rows=30, noise_columns=3)
    with pytest.raises(ConfigurationError, match="--top-n"):
        run_correlation_analysis(tmp_path / "data.csv", tmp_path / "out", top_n=0)
    with pytest.raises(DataValidationError, match="'target'"):
        run_correlation_analysis(tmp_path / "data.csv", tmp_path / "out", label_column="target")
    assert not (tmp_path / "out").exists()


def test_cli_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main([str(tmp_path / "empty.csv"), str(tmp_path / "out")]))
    assert exit_info.value.code != 0
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error
    assert not (tmp_path / "out").exists()


def test_cli_top_n_option(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_planted_csv(tmp_path / "data.csv", rows=30, noise_columns=8)
    assert main([str(tmp_path / "data.csv"), str(tmp_path / "out"), "--top-n", "4"]) == 0
    assert f"Wrote {tmp_path / 'out' / 'correlation.json'}" in capsys.readouterr().out
    saved = json.loads((tmp_path / "out" / "correlation.json").read_text())
    assert len(saved["top_features"]) == 4
    assert len(saved["top_intercorrelation"]["features"]) == 5
