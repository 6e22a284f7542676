"""Figures and HTML for the tuning and training results (Metaflow cards, MLflow artifacts)."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: cards and reports are written, never shown
import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()))


def svm_candidate_rows(svm_result: dict[str, Any]) -> list[list[str]]:
    """One row per SVM candidate at the last halving iteration it reached, best first."""
    last: dict[str, dict[str, Any]] = {}
    for candidate in svm_result["candidates"]:
        key = _params_text(candidate["params"])
        if key not in last or candidate["iteration"] > last[key]["iteration"]:
            last[key] = candidate
    ordered = sorted(last.values(), key=lambda c: (-c["iteration"], -c["mean_score"]))
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


SVM_TABLE_HEADERS = ["candidate", "CV accuracy", "last iteration", "rows used", "fit time (s)"]


def dnn_trial_rows(dnn_result: dict[str, Any]) -> list[list[str]]:
    """One row per DNN trial, best first."""
    trials = sorted(dnn_result["trials"], key=lambda t: -t["best_val_accuracy"])
    return [
        [
            str(t["trial_id"]),
            _params_text(t["hyperparameters"]),
            f"{t['best_val_accuracy']:.3f}",
            str(t["epochs_run"]),
        ]
        for t in trials
    ]


DNN_TABLE_HEADERS = ["trial", "hyperparameters", "best validation accuracy", "epochs"]


def plot_search_scores(svm_result: dict[str, Any], dnn_result: dict[str, Any]) -> Figure:
    """Score per candidate: SVM halving iterations (left) and DNN trials (right)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    kernels = sorted({c["params"].get("kernel", "?") for c in svm_result["candidates"]})
    for kernel, marker in zip(kernels, "os^D", strict=False):
        points = [c for c in svm_result["candidates"] if c["params"].get("kernel") == kernel]
        left.scatter(
            [c["iteration"] for c in points],
            [c["mean_score"] for c in points],
            label=kernel,
            marker=marker,
            alpha=0.7,
        )
    left.set_title("SVM successive halving: CV accuracy per candidate")
    left.set_xlabel("halving iteration (more rows each time)")
    left.set_ylabel("mean CV accuracy")
    left.set_xticks(sorted({c["iteration"] for c in svm_result["candidates"]}))
    left.legend(title="kernel")
    left.grid(alpha=0.3)

    trials = dnn_result["trials"]
    right.bar(
        [str(t["trial_id"]) for t in trials], [t["best_val_accuracy"] for t in trials], color="tab:purple"
    )
    right.set_title("DNN trials: best validation accuracy")
    right.set_xlabel("trial")
    right.set_ylabel("validation accuracy")
    right.set_ylim(0, 1)
    right.tick_params(axis="x", rotation=45)
    right.grid(axis="y", alpha=0.3)
    return fig


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


def training_report_html(
    title: str,
    data_summary: dict[str, Any],
    families: dict[str, dict[str, Any]],
    promotions: list[dict[str, Any]],
    images: dict[str, bytes],
) -> str:
    """A self-contained HTML report of one training run: data, metrics, promotion, confusion matrices."""
    data_rows = [[k, str(v)] for k, v in data_summary.items()]
    metric_rows = [
        [
            family,
            f"{info['evaluation']['accuracy']:.4f}",
            f"{info['evaluation']['macro_f1']:.4f}",
            "n/a"
            if info["evaluation"].get("roc_auc_ovr") is None
            else f"{info['evaluation']['roc_auc_ovr']:.4f}",
            str(info.get("version", "")),
        ]
        for family, info in families.items()
    ]
    promotion_rows = [
        [p["family"], p["model_name"], f"v{p['new_version']}", "yes" if p["promoted"] else "no", p["reason"]]
        for p in promotions
    ]
    pictures = "".join(
        f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
        for name, png in images.items()
    )
    reports = "".join(
        f"<h3>{html.escape(family)}</h3><pre>{html.escape(info.get('classification_report', ''))}</pre>"
        for family, info in families.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; max-width: 70rem; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; }}
th {{ background: #f0f0f0; }}
figure {{ display: inline-block; margin: 0.5rem; }}
img {{ max-width: 32rem; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<h2>Held-out test metrics</h2>
{_table(["model", "accuracy", "macro F1", "ROC AUC (one-vs-rest)", "registered version"], metric_rows)}
<h2>Promotion</h2>
<p><code>champion</code> moves only when the new version beats it on the same held-out rows.</p>
{_table(["family", "registered model", "new version", "became champion", "why"], promotion_rows)}
<h2>Confusion matrices</h2>
{pictures}
<h2>Classification reports</h2>
{reports}
<h2>Data</h2>
{_table(["item", "value"], data_rows)}
</body></html>
"""
