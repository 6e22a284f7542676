"""`make data` then `make eda`, as a user runs them: no Kaggle credentials, so the offline sample."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_make(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """Run `make -C PROJECT_ROOT ARGS` with a clean HOME and no Kaggle settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("KAGGLE_") and key not in {"XDG_CONFIG_HOME", "MAKEFLAGS", "MFLAGS"}
    }
    env["HOME"] = str(home)
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(PROJECT_ROOT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"make {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_make_data_then_make_eda_writes_sensible_reports(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    data = tmp_path / "data" / "emotions.csv"
    reports = tmp_path / "reports"

    fetched = run_make("data", f"DATA={data}", home=home)
    assert "offline sample" in fetched.stdout
    assert data.is_file()
    assert json.loads(data.with_suffix(".metadata.json").read_text())["source"] == "sample"

    made = run_make("eda", f"DATA={data}", f"REPORTS={reports}", home=home)
    for name in ("eda.json", "eda.html", "correlation.json", "correlation.html"):
        assert f"Wrote {reports / name}" in made.stdout
    for name in (
        "eda_label_distribution.png",
        "eda_feature_scales.png",
        "eda_recordings.png",
        "correlation_top_features.png",
        "correlation_heatmap.png",
        "correlation_top_by_class.png",
    ):
        assert (reports / name).read_bytes().startswith(PNG_MAGIC), name

    eda = json.loads((reports / "eda.json").read_text())
    assert eda["dataset"]["source"] == "sample"
    assert eda["dataset"]["features"] == 2548
    assert 2000 <= eda["dataset"]["rows"] <= 2200
    assert eda["labels"]["classes"] == ["NEGATIVE", "NEUTRAL", "POSITIVE"]
    assert sum(eda["labels"]["counts"].values()) == eda["dataset"]["rows"]
    assert eda["missing_values"]["total"] == 0
    assert eda["recordings"]["found"] is True
    assert eda["recordings"]["n_chains"] == 18
    assert eda["recordings"]["chains_with_mixed_labels"] == 0
    # fft_ (5t+1 = 5t+4, 5t+2 = 5t+3) and the symmetric covmat_ repeat 732 columns, as in the real file.
    assert eda["duplicate_columns"]["n_redundant_columns"] == 732

    correlation = json.loads((reports / "correlation.json").read_text())
    assert correlation["label_encoding"] == {"NEGATIVE": 0, "NEUTRAL": 1, "POSITIVE": 2}
    assert len(correlation["top_features"]) == 30
    assert len(correlation["correlations"]) == 2548
    top = correlation["top_features"][0]
    assert top["abs_r"] == max(abs(r) for r in correlation["correlations"].values() if r is not None)
    assert "data:image/png;base64," in (reports / "correlation.html").read_text()
