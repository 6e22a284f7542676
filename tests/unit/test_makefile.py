"""The Makefile follows the documented precedence: command line or environment, then `.env`, then defaults."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project's Makefile and code, with a `.env` that names its own dataset."""
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in ("modules", "analysis"):
        shutil.copytree(PROJECT_ROOT / folder, tmp_path / folder, ignore=ignore)
    shutil.copy(PROJECT_ROOT / "Makefile", tmp_path / "Makefile")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(30, 4)), columns=["f1", "f2", "f3", "f4"])
    frame["target"] = np.repeat(["a", "b", "c"], 10)
    frame.to_csv(tmp_path / "mine.csv", index=False)
    (tmp_path / ".env").write_text("DATA_PATH=mine.csv\nLABEL_COLUMN=target\nREPORTS_DIR=from-dotenv\n")
    return tmp_path


def make(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`make -o install ...` in the copy, with this test's venv; settings variables only from `env`."""
    clean = {k: v for k, v in os.environ.items() if k not in ("DATA_PATH", "LABEL_COLUMN", "REPORTS_DIR")}
    clean.pop("PYTHONPATH", None)
    venv = Path(sys.executable).parent.parent
    command = ["make", "--no-print-directory", "-o", "install", f"VENV={venv}", *args]
    return subprocess.run(
        command, cwd=project, env={**clean, **env}, capture_output=True, text=True, check=False
    )


def test_dotenv_values_are_used_when_nothing_overrides_them(project: Path):
    result = make(project, "eda")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((project / "from-dotenv" / "eda.json").read_text())
    assert json.dumps(report).count('"target"') >= 1
    assert not (project / "reports").exists()


def test_the_environment_overrides_dotenv(project: Path):
    result = make(project, "eda", LABEL_COLUMN="label")
    assert result.returncode == 2
    assert "no label column 'label'" in result.stderr, result.stderr


def test_the_command_line_overrides_dotenv(project: Path):
    result = make(project, "eda", "REPORTS=from-command-line")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (project / "from-command-line" / "eda.json").is_file()
    assert not (project / "from-dotenv").exists()
    refused = make(project, "eda", "LABEL_COLUMN=label")
    assert refused.returncode == 2
