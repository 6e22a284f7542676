"""The benchmark scripts run by hand, not in the suite: each must still import what it uses."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "bench").glob("*.py"))


def test_there_are_benchmarks() -> None:
    assert len(SCRIPTS) >= 5


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_a_benchmark_script_imports_cleanly(script: Path) -> None:
    # Runs the script's top level (its imports and definitions), not its `__main__` block.
    namespace = runpy.run_path(str(script), run_name="bench_import_check")
    assert callable(namespace.get("main")), f"{script.name} has no main()"
