"""The drift report: `drift.json` (decision, reasons, figures) and one self-contained HTML page.

Drawn here rather than with a drift library: on 2548 columns Evidently's per-column tests take
minutes and write a 180 MB page; this page shows what a person acts on (the decision, the share
of drifted columns, the most drifted columns' distributions, the label mix) in a few hundred KB.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.report_files import (
    ReportPage,
    class_colour,
    finish_report,
    html_table,
    new_figure,
    save_figure,
)
from modules.monitoring.drift import DriftSummary
from modules.monitoring.reference import Reference

__all__ = ["HTML_NAME", "JSON_NAME", "write_drift_report"]

JSON_NAME = "drift.json"
HTML_NAME = "drift_report.html"
TOP_FIGURE_COLUMNS = 8
TOP_TABLE_COLUMNS = 20


def _psi_figure(summary: DriftSummary, path: Path) -> Path:
    """Histogram of PSI over all columns, with the floor marked."""
    fig = new_figure(7.0, 3.0)
    ax = fig.add_subplot()
    psi = np.clip(summary.columns["psi"].to_numpy(), 1e-4, None)
    bins = np.logspace(-4, max(1.0, np.log10(psi.max()) + 0.1), 50)
    drifted = summary.columns["drifted"].to_numpy()
    ax.hist(
        [psi[~drifted], psi[drifted]],
        bins=bins,
        stacked=True,
        color=["#9aa7b8", "#b5485b"],
        label=["not drifted", "drifted"],
    )
    ax.axvline(summary.thresholds.psi_floor, color="black", linestyle="--", linewidth=1, label="PSI floor")
    ax.set_xscale("log")
    ax.set_xlabel("population stability index (log scale)")
    ax.set_ylabel("feature columns")
    ax.legend(frameon=False, fontsize=8)
    return save_figure(fig, path)


def _columns_figure(reference: Reference, current: np.ndarray, top: pd.DataFrame, path: Path) -> Path:
    """Reference vs current distributions of the most drifted columns (shared bins per column)."""
    count = len(top)
    cols = 4
    rows = max(1, -(-count // cols))
    fig = new_figure(10.0, 2.2 * rows)
    index = {name: i for i, name in enumerate(reference.columns)}
    for k, name in enumerate(top["column"]):
        ax = fig.add_subplot(rows, cols, k + 1)
        j = index[name]
        ref, cur = reference.sample[:, j], current[:, j]
        low, high = np.percentile(np.concatenate([ref, cur]), [0.5, 99.5])
        if not high > low:
            low, high = low - 0.5, high + 0.5
        bins = np.linspace(low, high, 30)
        ax.hist(
            np.clip(ref, low, high),
            bins=bins,
            density=True,
            alpha=0.55,
            color=class_colour(0),
            label="reference",
        )
        ax.hist(
            np.clip(cur, low, high),
            bins=bins,
            density=True,
            alpha=0.55,
            color=class_colour(1),
            label="current",
        )
        row = top.iloc[k]
        ax.set_title(f"{name}\nPSI {row['psi']:.2f}, KS {row['ks_statistic']:.2f}", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
        if k == 0:
            ax.legend(frameon=False, fontsize=6)
    return save_figure(fig, path)


def _label_figure(label_drift: dict[str, Any], path: Path) -> Path:
    """Reference vs current share of each predicted label."""
    fig = new_figure(5.0, 2.6)
    ax = fig.add_subplot()
    labels = label_drift["labels"]
    x = np.arange(len(labels))
    ax.bar(x - 0.2, label_drift["reference_share"], 0.4, color=class_colour(0), label="reference")
    ax.bar(x + 0.2, label_drift["current_share"], 0.4, color=class_colour(1), label="current")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("share of rows")
    ax.legend(frameon=False, fontsize=8)
    return save_figure(fig, path)


def _share_figure(history: Sequence[tuple[str, float]], threshold: float, path: Path) -> Path:
    """Share of drifted columns of past windows and this one, against the threshold."""
    fig = new_figure(7.0, 2.6)
    ax = fig.add_subplot()
    names = [name for name, _ in history]
    ax.plot(range(len(history)), [share for _, share in history], marker="o", color=class_colour(0))
    ax.axhline(threshold, color="#b5485b", linestyle="--", linewidth=1, label="retrain threshold")
    ax.set_xticks(range(len(history)), names, rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("drifted columns")
    ax.legend(frameon=False, fontsize=8)
    return save_figure(fig, path)


def write_drift_report(
    summary: DriftSummary,
    reference: Reference,
    current: pd.DataFrame,
    out_dir: Path,
    *,
    history: Sequence[tuple[str, float]] = (),
    title: str = "Drift report",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write `drift.json`, PNG figures and `drift_report.html` into `out_dir`; return the JSON data.

    `history` is (window name, drifted share) of earlier windows, oldest first, for the
    share-over-time figure (this window is appended).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    values = current[reference.columns].to_numpy(dtype=np.float64)
    top = summary.top_columns(TOP_FIGURE_COLUMNS)
    figures = {
        "psi": _psi_figure(summary, out_dir / "drift_psi.png"),
        "columns": _columns_figure(reference, values, top, out_dir / "drift_top_columns.png"),
    }
    if summary.label_drift is not None:
        figures["labels"] = _label_figure(summary.label_drift, out_dir / "drift_labels.png")
    shares = [*history, ("this window", summary.drifted_share)]
    if len(shares) > 1:
        figures["share"] = _share_figure(
            shares, summary.thresholds.share_threshold, out_dir / "drift_share.png"
        )

    data = summary.to_dict(top=TOP_TABLE_COLUMNS)
    data["share_history"] = [{"window": name, "drifted_share": share} for name, share in shares]

    def write_html(data: dict[str, Any], folder: Path, figs: dict[str, Path]) -> Path:
        page = ReportPage(title, "A window of served rows against the champion's training reference.")
        page.heading(f"retrain: {'yes' if data['retrain'] else 'no'}")
        for reason in data["reasons"] or ["no threshold was crossed"]:
            page.paragraph(reason)
        for note in data["notes"]:
            page.paragraph(note, note=True)
        th = data["thresholds"]
        facts = [
            ("rows in the window", data["rows"]),
            ("reference sample rows", data["reference_rows"]),
            ("feature columns", data["columns"]),
            ("drifted columns", f"{data['drifted_columns']} ({data['drifted_share']:.1%})"),
            ("a column drifts when", f"BH-corrected KS p < {th['alpha']:g} and PSI >= {th['psi_floor']:g}"),
            ("retrain when drifted share >=", f"{th['share_threshold']:.0%}"),
        ]
        live = data["live_accuracy"]
        if live is not None:
            facts.append(("labelled rows matched", live["rows"]))
            facts.append(("live accuracy", live["accuracy"]))
            facts.append(("champion test accuracy", live["champion_test_accuracy"]))
        page.facts(facts)
        page.heading("Feature drift")
        page.figure(figs["psi"], "PSI of every feature column")
        page.figure(figs["columns"], f"The {len(top)} most drifted columns, reference sample vs window")
        page.raw_html(
            html_table(
                [
                    (
                        r["column"],
                        r["psi"],
                        r["ks_statistic"],
                        r["p_adjusted"],
                        r["drifted"],
                        r["reference_mean"],
                        r["current_mean"],
                    )
                    for r in data["top_columns"]
                ],
                ["column", "PSI", "KS statistic", "corrected p", "drifted", "reference mean", "window mean"],
                caption=f"The {len(data['top_columns'])} most drifted columns",
            )
        )
        if "share" in figs:
            page.figure(figs["share"], "Share of drifted columns over time")
        if "labels" in figs:
            ld = data["label_drift"]
            page.heading("Predicted-label mix")
            page.paragraph(
                f"chi-square p = {ld['p_value']:.3g}, PSI = {ld['psi']:.3f}, compared with the "
                f"{ld['compared_with']}: {'drifted' if ld['drifted'] else 'no drift'}."
            )
            page.figure(figs["labels"], "Share of each predicted label")
        return page.write(folder / HTML_NAME)

    return finish_report(
        data, out_dir, figures, json_name=JSON_NAME, html_name=HTML_NAME, write_html=write_html, log=log
    )
