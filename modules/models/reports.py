"""Figures and HTML for the tuning and training results (Metaflow cards, MLflow artifacts)."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: cards and reports are written, never shown
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()))


def candidate_rows(search: dict[str, Any]) -> list[list[str]]:
    """One row per candidate of a halving search at the last iteration it reached, best first."""
    last: dict[str, dict[str, Any]] = {}
    for candidate in search["candidates"]:
        key = _params_text(candidate["params"])
        if key not in last or candidate["iteration"] > last[key]["iteration"]:
            last[key] = candidate
    # Equal scores keep the search's own ranking, so the top row is the candidate it chose.
    ordered = sorted(last.values(), key=lambda c: (-c["iteration"], -c["mean_score"], c["rank"]))
    return [
        [
            _params_text(c["params"]),
            f"{c['mean_score']:.3f} ± {c['std_score']:.3f}",
            str(c["iteration"]),
            str(c["n_resources"]),
            f"{c['fit_time']:.2f}",
        ]
        for c in ordered
    ]


CANDIDATE_TABLE_HEADERS = ["candidate", "CV accuracy", "last iteration", "rows used", "fit time (s)"]


def _best_first(score: float | None) -> tuple[bool, float]:
    """Sort key: scored trials by descending score, then the unscored (failed) ones."""
    return (score is None, -(score or 0.0))


def dnn_trial_rows(dnn_result: dict[str, Any]) -> list[list[str]]:
    """One row per DNN trial, best first (a failed trial has no score and goes last)."""
    trials = sorted(dnn_result["trials"], key=lambda t: _best_first(t["best_val_accuracy"]))
    return [
        [
            str(t["trial_id"]),
            _params_text(t["hyperparameters"]),
            _fmt(t["best_val_accuracy"]),
            str(t["epochs_run"]),
        ]
        for t in trials
    ]


DNN_TABLE_HEADERS = ["trial", "hyperparameters", "best validation accuracy", "epochs"]


def plot_candidate_scores(ax: Axes, search: dict[str, Any], title: str) -> None:
    """A halving search's CV accuracy per candidate and iteration, one marker per kernel/solver."""
    groups = sorted({str(c["params"].get("kernel", title)) for c in search["candidates"]})
    for group, marker in zip(groups, "os^D", strict=False):
        points = [c for c in search["candidates"] if str(c["params"].get("kernel", title)) == group]
        ax.scatter(
            [c["iteration"] for c in points],
            [c["mean_score"] for c in points],
            label=group,
            marker=marker,
            alpha=0.7,
        )
    ax.set_title(f"{title} successive halving: CV accuracy per candidate")
    ax.set_xlabel("halving iteration (more rows each time)")
    ax.set_ylabel("mean CV accuracy")
    ax.set_xticks(sorted({c["iteration"] for c in search["candidates"]}))
    if any("kernel" in c["params"] for c in search["candidates"]):
        ax.legend(title="kernel")
    ax.grid(alpha=0.3)


def plot_trial_scores(ax: Axes, dnn_result: dict[str, Any]) -> None:
    """The DNN's best validation accuracy per trial (0 for a failed trial)."""
    trials = dnn_result["trials"]
    ax.bar(
        [str(t["trial_id"]) for t in trials],
        [t["best_val_accuracy"] or 0.0 for t in trials],
        color="tab:purple",
    )
    ax.set_title("DNN trials: best validation accuracy")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0, 1)
    ax.tick_params(axis="x", rotation=45)
    ax.grid(axis="y", alpha=0.3)


def figure_png(fig: Figure) -> bytes:
    """PNG bytes of a figure (and close it)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


FIGURE_HEADERS = [
    "model",
    "held-out accuracy",
    "95% interval",
    "majority baseline",
    "margin",
    "CV mean ± sd (tuning)",
    "leak gap (random - grouped)",
    "macro F1",
    "ROC AUC",
]


def figure_rows(families: dict[str, dict[str, Any]]) -> list[list[str]]:
    """One row per model family: the held-out accuracy beside its interval, baseline, CV and leak gap."""
    rows = []
    for family, info in families.items():
        report = info["report"]
        evaluation, interval, cv, gap = (
            report["evaluation"],
            report["interval"],
            report.get("cross_validation"),
            report.get("leak_gap"),
        )
        rows.append(
            [
                f"{family} ({info['model_name']} v{info.get('version')})",
                _fmt(evaluation["accuracy"]),
                f"{_fmt(interval['low'])}-{_fmt(interval['high'])} ({interval['n_units']} {interval['unit']})",
                f"{_fmt(report['baseline']['accuracy'])} (always {report['baseline']['predicted_label']})",
                f"{report['margin_over_baseline']:+.3f}",
                "n/a"
                if cv is None
                else f"{cv['mean']:.3f} ± {cv['std']:.3f} ({cv['folds']} {cv['protocol']} folds)",
                "n/a"
                if gap is None
                else f"{gap['gap']:+.3f} ({gap['random_accuracy']:.3f} random vs {gap['grouped_accuracy']:.3f} grouped)",
                _fmt(evaluation["macro_f1"]),
                _fmt(evaluation.get("roc_auc_ovr")),
            ]
        )
    return rows


PROMOTION_HEADERS = [
    "registered model",
    "new version",
    "decision",
    "champion before",
    "champion after",
    "why",
]


def promotion_rows(promotions: list[dict[str, Any]]) -> list[list[str]]:
    """One row per family: promoted or, said plainly, not promoted, and why."""
    return [
        [
            p["model_name"],
            f"v{p['new_version']}",
            "promoted to champion" if p["promoted"] else "not promoted (stays challenger)",
            "none" if p["champion_before"] is None else f"v{p['champion_before']}",
            "none" if p["champion_after"] is None else f"v{p['champion_after']}",
            p["reason"],
        ]
        for p in promotions
    ]


GATE_HEADERS = ["registered model", "check", "result", "figures"]


def gate_rows(promotions: list[dict[str, Any]]) -> list[list[str]]:
    """Every check of the promotion gate with its figures."""
    states = {True: "passed", False: "failed", None: "not checked"}
    return [
        [p["model_name"], check["name"], states[check["passed"]], check["detail"]]
        for p in promotions
        for check in p.get("checks", [])
    ]


RECORDING_HEADERS = ["model", "held-out recording", "true label", "rows", "accuracy", "most predicted"]


def recording_rows(families: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Per held-out recording accuracy of every family (empty when recordings are unknown)."""
    return [
        [family, r["recording"], r["label"], str(r["rows"]), _fmt(r["accuracy"]), r["predicted_majority"]]
        for family, info in families.items()
        for r in info["report"].get("per_recording", [])
    ]


def training_report_html(
    title: str,
    data_summary: dict[str, Any],
    families: dict[str, dict[str, Any]],
    promotions: list[dict[str, Any]],
    images: dict[str, bytes],
) -> str:
    """A self-contained HTML report of one training run: data, figures, promotion, confusion matrices."""
    data_rows = [[k, str(v)] for k, v in data_summary.items()]
    pictures = "".join(
        f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
        for name, png in images.items()
    )
    reports = "".join(
        f"<h3>{html.escape(family)}</h3><pre>{html.escape(info.get('classification_report', ''))}</pre>"
        for family, info in families.items()
    )
    recordings = recording_rows(families)
    recording_section = (
        f"<h2>Per held-out recording</h2>{_table(RECORDING_HEADERS, recordings)}" if recordings else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; max-width: 80rem; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; }}
th {{ background: #f0f0f0; }}
figure {{ display: inline-block; margin: 0.5rem; }}
img {{ max-width: 32rem; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<h2>Held-out figures</h2>
<p>Accuracy on rows no tuning or training step saw, with a bootstrap interval over held-out
recordings (rows when recordings are unknown), the majority-class baseline on the same rows,
the cross-validated accuracy from tuning, and the leak gap: how much a random-row split
flatters the same model.</p>
{_table(FIGURE_HEADERS, figure_rows(families))}
<h2>Promotion</h2>
<p><code>champion</code> moves only when the new version beats the majority-class baseline by the
required margin, was trained on verified data, has the champion's schema, and beats the champion
on the same held-out rows.</p>
{_table(PROMOTION_HEADERS, promotion_rows(promotions))}
{_table(GATE_HEADERS, gate_rows(promotions))}
{recording_section}
<h2>Confusion matrices</h2>
{pictures}
<h2>Classification reports</h2>
{reports}
<h2>Data</h2>
{_table(["item", "value"], data_rows)}
</body></html>
"""
