"""`python -m modules`: one click group whose stage commands are imported only when they run."""

from __future__ import annotations

import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from modules.__main__ import COMMANDS, cli
from modules.settings import PROJECT_ROOT


def _modules(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modules", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_lists_every_stage_without_importing_any() -> None:
    probe = (
        "import sys\n"
        "from modules.__main__ import cli\n"
        "try:\n"
        "    cli.main(['--help'], prog_name='python -m modules')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('mlflow', 'sklearn', 'tensorflow', 'metaflow') if m in sys.modules]\n"
        "stages = [m for m in sys.modules if m.startswith(('modules.data', 'modules.models', 'modules.serving'))]\n"
        "print('IMPORTED', heavy, stages)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    for name in COMMANDS:
        assert f"  {name} " in done.stdout, name
    assert "IMPORTED [] []" in done.stdout


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_stage_is_a_click_command_with_help(name: str) -> None:
    command = cli.get_command(click.Context(cli), name)
    assert isinstance(command, click.Command) and command.name == name
    result = CliRunner().invoke(cli, [name, "--help"], prog_name="python -m modules")
    assert result.exit_code == 0, result.output
    assert f"Usage: python -m modules {name}" in result.output


def test_an_unknown_command_is_a_usage_error() -> None:
    done = _modules("nope")
    assert done.returncode == 2
    assert "No such command 'nope'" in done.stderr


def test_a_project_error_is_one_line_and_its_exit_code(tmp_path) -> None:
    done = _modules("data", "validate", str(tmp_path / "missing.csv"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: dataset not found: {tmp_path / 'missing.csv'} (run `make data` to download or build it)"
    ]


@pytest.mark.parametrize("command", ["predict", "serve"])
def test_an_unknown_model_family_is_one_line_naming_the_known_ones(command: str, tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "modules", command, "--family", "nope"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: unknown model family 'nope'; known: svm, dnn, logistic"
    ]
