""".github/scripts/pipeline_summary.py: the job summary, annotations and Pages site it writes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / ".github" / "scripts" / "pipeline_summary.py"

_spec = importlib.util.spec_from_file_location("pipeline_summary", SCRIPT)
summary = importlib.util.module_from_spec(_spec)
sys.modules["pipeline_summary"] = summary  # dataclasses look the module up by name
_spec.loader.exec_module(summary)

ONE_PROMOTED_ONE_REGRESSED = {
    "families": [
        {
            "family": "svm",
            "model_name": "eeg-emotion-svm",
            "new_version": "4",
            "test_accuracy": 0.953,
            "champion_before": "3",
            "champion_before_test_accuracy": 0.96,
            "champion_after": "3",
            "promoted": False,
            "reason": "test accuracy 0.9530 < champion 0.9600 | kept",
        },
        {
            "family": "dnn",
            "model_name": "eeg-emotion-dnn",
            "new_version": 2,
            "test_accuracy": 0.97,
            "champion_before": {"version": 1, "test_accuracy": 0.91},
            "champion_after": {"version": 2, "test_accuracy": 0.97},
            "promoted": True,
            "reason": "<b>better</b>",
        },
    ]
}


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_summary_table_says_which_champion_changed_and_which_regression_was_caught(tmp_path: Path) -> None:
    promotion = write(tmp_path / "promotion.json", ONE_PROMOTED_ONE_REGRESSED)
    out = tmp_path / "summary.md"
    out.write_text("## Earlier step\n", encoding="utf-8")
    result = run_script("--promotion", str(promotion), "--summary", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text(encoding="utf-8")
    assert text.startswith("## Earlier step\n## Pipeline result"), "the summary is appended, not overwritten"
    rows = [line for line in text.splitlines() if line.startswith("| ") and "eeg-emotion" in line]
    assert rows == [
        "| svm | `eeg-emotion-svm` | v4 | 0.9530 | n/a | n/a | v3 (0.9600) | v3 | **not promoted** "
        "| test accuracy 0.9530 < champion 0.9600 \\| kept |",
        "| dnn | `eeg-emotion-dnn` | v2 | 0.9700 | n/a | n/a | v1 (0.9100) | v2 | yes | <b>better</b> |",
    ]
    assert "**Champion changed:** dnn." in text
    assert (
        "Performance regression caught: svm v4 (test accuracy 0.9530) did not beat champion v3 (0.9600)"
        in text
    )
    commands = result.stdout.splitlines()
    assert commands[0].startswith(
        "::warning title=Performance regression::Performance regression caught: svm v4"
    )
    assert commands[1].startswith("::notice title=Champion changed::Champion changed: dnn v1 -> v2")


def test_families_may_be_a_mapping_and_first_models_have_no_champion(tmp_path: Path) -> None:
    promotion = write(
        tmp_path / "promotion.json",
        {
            "families": {
                "svm": {
                    "new_version": "1",
                    "test_accuracy": 0.9,
                    "champion_before": None,
                    "champion_after": "1",
                    "promoted": True,
                    "reason": "first model",
                }
            }
        },
    )
    results = summary.load_promotion(promotion)
    assert [(r.family, r.promoted, r.regressed, r.champion_before) for r in results] == [
        ("svm", True, False, "")
    ]
    text = summary.render_markdown(results, promotion)
    assert "| svm |  | v1 | 0.9000 | n/a | n/a | none | v1 | yes | first model |" in text
    assert "Champion changed: svm none -> v1" in text


def test_a_first_version_below_the_gate_is_not_called_a_regression(tmp_path: Path) -> None:
    promotion = write(
        tmp_path / "promotion.json",
        {
            "families": [
                {
                    "family": "svm",
                    "new_version": "1",
                    "test_accuracy": 0.5,
                    "champion_before": None,
                    "champion_after": None,
                    "promoted": False,
                    "reason": "not promoted: below baseline",
                    "baseline": {"accuracy": 0.34},
                    "interval": {"low": 0.41, "high": 0.58},
                }
            ]
        },
    )
    results = summary.load_promotion(promotion)
    assert summary.annotations(results) == [
        "::warning title=Not promoted::Not promoted: svm v1 stays challenger, no champion was set. "
        "not promoted: below baseline"
    ]
    text = summary.render_markdown(results, promotion)
    assert "**Champion changed:** no." in text
    assert "| svm |  | v1 | 0.5000 | 0.410-0.580 | 0.3400 | none | none | **not promoted** |" in text


def test_missing_promotion_file_is_reported_without_failing(tmp_path: Path) -> None:
    out = tmp_path / "summary.md"
    result = run_script("--promotion", str(tmp_path / "absent.json"), "--summary", str(out))
    assert result.returncode == 0, result.stderr
    assert "No promotion summary" in out.read_text(encoding="utf-8")
    assert result.stdout.startswith("::warning title=No promotion summary::")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not readable JSON"),
        (json.dumps({"models": []}), 'expected a "families" list or object'),
        (
            json.dumps({"families": [{"family": "svm", "promoted": "yes"}]}),
            "promoted='yes' must be true or false",
        ),
        (
            json.dumps({"families": [{"family": "svm", "promoted": True, "test_accuracy": "high"}]}),
            "test_accuracy='high' is not a number",
        ),
    ],
)
def test_malformed_promotion_file_is_one_line_error(tmp_path: Path, content: str, message: str) -> None:
    promotion = tmp_path / "promotion.json"
    promotion.write_text(content, encoding="utf-8")
    result = run_script("--promotion", str(promotion), "--summary", str(tmp_path / "s.md"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {promotion}")
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_site_copies_reports_and_links_them_from_an_escaped_index(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    (reports / "eda").mkdir(parents=True)
    (reports / "eda" / "report.html").write_text("<html>eda</html>", encoding="utf-8")
    promotion = write(reports / "promotion.json", ONE_PROMOTED_ONE_REGRESSED)
    site = tmp_path / "site"
    result = run_script(
        "--promotion",
        str(promotion),
        "--summary",
        str(tmp_path / "s.md"),
        "--reports",
        str(reports),
        "--site",
        str(site),
    )
    assert result.returncode == 0, result.stderr
    assert (site / "eda" / "report.html").read_text(encoding="utf-8") == "<html>eda</html>"
    index = (site / "index.html").read_text(encoding="utf-8")
    assert '<a href="eda/report.html">eda/report.html</a>' in index
    assert '<a href="promotion.json">' in index
    assert "&lt;b&gt;better&lt;/b&gt;" in index and "<b>better</b>" not in index


def test_workflow_command_messages_are_escaped() -> None:
    assert summary._escape_command("50%\nnext") == "50%25%0Anext"
