"""The drift report: JSON that states the decision, a small self-contained HTML page, the figures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from modules.monitoring import build_reference, detect_drift, write_drift_report


@pytest.fixture(scope="module")
def case() -> tuple:
    rng = np.random.default_rng(0)
    columns = [f"f{k}" for k in range(40)]
    train = pd.DataFrame(rng.standard_normal((1500, 40)), columns=columns)
    labels = np.array(["A", "B", "C"] * 500, dtype=object)
    reference = build_reference(train, labels, labels, test_accuracy=0.9)
    shift = np.where(np.arange(40) < 15, 1.5, 0.0)
    window = pd.DataFrame(rng.standard_normal((400, 40)) + shift, columns=columns)
    predicted = np.array(["A"] * 300 + ["B"] * 100, dtype=object)
    summary = detect_drift(reference, window, predicted_labels=predicted)
    return reference, window, summary


def test_report_writes_the_decision_as_json_and_a_small_html_page(case, tmp_path) -> None:
    reference, window, summary = case
    logged: list[str] = []
    data = write_drift_report(
        summary, reference, window, tmp_path, history=[("2026-11-30", 0.0)], log=logged.append
    )
    on_disk = json.loads((tmp_path / "drift.json").read_text())
    assert on_disk == data
    assert on_disk["retrain"] is True
    assert on_disk["drifted_columns"] == 15
    assert len(on_disk["reasons"]) == 2  # feature share and label mix
    assert on_disk["top_columns"][0]["drifted"] is True
    assert [h["window"] for h in on_disk["share_history"]] == ["2026-11-30", "this window"]
    html = (tmp_path / "drift_report.html").read_text()
    assert "retrain: yes" in html
    assert html.count("data:image/png;base64,") == 4  # PSI, top columns, share over time, labels
    assert (tmp_path / "drift_report.html").stat().st_size < 500_000
    assert len(logged) == 6


def test_report_without_predictions_or_history_leaves_their_figures_out(case, tmp_path) -> None:
    reference, window, _ = case
    summary = detect_drift(reference, window.iloc[:, :40])
    data = write_drift_report(summary, reference, window, tmp_path, log=lambda _: None)
    assert set(data["files"]["figures"]) == {"psi", "columns"}
    assert data["label_drift"] is None
    assert "no predicted labels" in data["notes"][0]
