"""Correlation of every feature with the encoded label: JSON, PNG figures, HTML report.

Run alone:  python -m analysis.correlation_analysis DATA OUTDIR [--label-column label] [--top-n 30]

The label is encoded in LabelEncoder order (sorted class names: NEGATIVE=0, NEUTRAL=1,
POSITIVE=2 for the EEG data) and the mapping is written to the JSON. Pearson's r is computed
for every column at once with numpy; the figures show only the top-N columns by |r| (one
column per group of exactly equal columns), never a matrix of all 2548 columns.

Written to OUTDIR: correlation.json, correlation.html, correlation_top_features.png,
correlation_heatmap.png and correlation_top_by_class.png.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.eda import (
    HTML_MAX_GROUPS,
    feature_stem,
    find_constant_columns,
    find_duplicate_columns,
    load_for_report,
    log,
)
from analysis.report_files import (
    ReportPage,
    class_colour,
    finish_report,
    html_table,
    new_figure,
    report_parser,
    save_figure,
)
from modules.data.loading import encode_labels as encode_classes
from modules.errors import ConfigurationError, run_cli

__all__ = [
    "correlation_ratios",
    "correlations_with_label",
    "encode_labels",
    "main",
    "run_correlation_analysis",
]

JSON_NAME = "correlation.json"
HTML_NAME = "correlation.html"
BAR_PNG = "correlation_top_features.png"
HEATMAP_PNG = "correlation_heatmap.png"
BY_CLASS_PNG = "correlation_top_by_class.png"
LABEL_NAME = "label (encoded)"
BY_CLASS_PANELS = 6


def encode_labels(labels: pd.Series) -> tuple[np.ndarray, dict[str, int]]:
    """Integer codes in scikit-learn LabelEncoder order (sorted class names) and the mapping.

    Same result as `LabelEncoder().fit_transform(labels)`, without importing scikit-learn.
    """
    codes, classes = encode_classes(labels)
    return codes.astype(np.float64), {name: index for index, name in enumerate(classes)}


def correlations_with_label(values: np.ndarray, encoded: np.ndarray) -> np.ndarray:
    """Pearson r of every column of `values` (rows x columns) with `encoded`; NaN where undefined."""
    centred = values - values.mean(axis=0)
    target = encoded - encoded.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (centred.T @ target) / (np.sqrt((centred**2).sum(axis=0)) * np.sqrt((target**2).sum()))
    return np.clip(r, -1.0, 1.0)  # rounding can push |r| of a perfect relation just above 1


def correlation_ratios(values: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    """Correlation ratio eta of every column with the class (order-free, 0..1); NaN where undefined.

    eta^2 is the share of a column's variance explained by the class means; unlike r it does
    not depend on the arbitrary order of the class codes.
    """
    centred = values - values.mean(axis=0)
    one_hot = np.zeros((len(codes), n_classes))
    one_hot[np.arange(len(codes)), codes.astype(int)] = 1.0
    class_sums = one_hot.T @ centred  # classes x columns
    class_sizes = one_hot.sum(axis=0)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        between = (class_sums**2 / np.where(class_sizes > 0, class_sizes, np.nan)).sum(axis=0)
        eta = np.sqrt(between / (centred**2).sum(axis=0))
    return np.clip(eta, 0.0, 1.0)


def _rank_top(names: list[str], r: np.ndarray, skip: set[str], top_n: int) -> list[int]:
    """Positions of the top-n columns by |r|, one per duplicate group, ties in file order."""
    candidates = [i for i, name in enumerate(names) if name not in skip and np.isfinite(r[i])]
    candidates.sort(key=lambda i: -abs(r[i]))  # stable: equal |r| keep file order
    return candidates[:top_n]


def _summarise_stems(names: list[str], r: np.ndarray) -> list[dict[str, Any]]:
    """Per name stem: the column with the largest |r|, the median |r|, how many reach |r| >= 0.3."""
    members: dict[str, list[int]] = {}
    for position, name in enumerate(names):
        members.setdefault(feature_stem(name), []).append(position)
    rows = []
    for stem, positions in members.items():
        values = r[positions]
        defined = np.isfinite(values)
        best = positions[int(np.nanargmax(np.abs(values)))] if defined.any() else None
        rows.append(
            {
                "stem": stem,
                "columns": len(positions),
                "best_feature": names[best] if best is not None else None,
                "best_r": float(r[best]) if best is not None else None,
                "median_abs_r": float(np.median(np.abs(values[defined]))) if defined.any() else None,
                "abs_r_at_least_0_3": int((np.abs(values[defined]) >= 0.3).sum()),
            }
        )
    rows.sort(key=lambda row: -abs(row["best_r"]) if row["best_r"] is not None else 1.0)
    return rows


def _plot_bars(top: list[dict[str, Any]], mapping_text: str, path: Path) -> Path:
    fig = new_figure(9.0, max(3.0, 0.27 * len(top) + 1.8))
    ax = fig.add_subplot()
    values = [item["r"] for item in top]
    ax.barh(
        [item["feature"] for item in top],
        values,
        color=["#b5485b" if v > 0 else "#3b6ea5" for v in values],
    )
    ax.invert_yaxis()  # rank 1 at the top
    ax.axvline(0, color="#333", linewidth=0.8)
    for position, value in enumerate(values):
        ax.annotate(
            f"{value:+.2f}",
            (value, position),
            xytext=(3 if value >= 0 else -3, 0),
            textcoords="offset points",
            ha="left" if value >= 0 else "right",
            va="center",
            fontsize=7,
        )
    # Room for the value labels; no empty half when every r has the same sign.
    low, high = min([*values, 0.0]), max([*values, 0.0])
    span = max(high - low, 0.1)
    ax.set_xlim(
        low - 0.15 * span if low < 0 else -0.02 * span, high + 0.15 * span if high > 0 else 0.02 * span
    )
    ax.set_title(f"Top {len(top)} features by |Pearson r| with the encoded label")
    ax.set_xlabel(f"Pearson r with the label ({mapping_text}); red positive, blue negative")
    ax.set_ylabel("Feature")
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)


def _plot_heatmap(labels: list[str], matrix: np.ndarray, path: Path) -> Path:
    size = len(labels)
    side = min(16.0, max(5.0, 0.3 * size + 3.0))
    fig = new_figure(side + 1.2, side)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    ticks = range(size)
    fontsize = 8 if size <= 40 else 6
    ax.set_xticks(ticks, labels, rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, labels, fontsize=fontsize)
    # Separate the label's row/column from the features' block.
    ax.axhline(size - 1.5, color="black", linewidth=1.2)
    ax.axvline(size - 1.5, color="black", linewidth=1.2)
    if size <= 16:  # numbers stay legible only on small matrices
        for i in range(size):
            for j in range(size):
                ax.text(
                    j,
                    i,
                    f"{matrix[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if abs(matrix[i, j]) > 0.6 else "black",
                )
    ax.set_title(f"Pearson correlation among the top {size - 1} features and the encoded label")
    fig.colorbar(image, ax=ax, shrink=0.8, label="Pearson r")
    return save_figure(fig, path)


def _plot_by_class(
    values: np.ndarray, codes: np.ndarray, classes: list[str], top: list[dict[str, Any]], path: Path
) -> Path:
    """Box plots of the strongest features per class: what a correlation of r looks like."""
    shown = top[:BY_CLASS_PANELS]
    columns = 3 if len(shown) > 2 else len(shown)
    rows = int(np.ceil(len(shown) / columns))
    fig = new_figure(max(6.0, 3.6 * columns + 0.5), 3.2 * rows + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax, item, column in zip(axes, shown, values.T, strict=False):
        groups = [column[codes == k] for k in range(len(classes))]
        boxes = ax.boxplot(
            groups,
            tick_labels=classes,
            patch_artist=True,
            flierprops={"markersize": 2},
            medianprops={"color": "black"},
        )
        for position, patch in enumerate(boxes["boxes"]):
            patch.set_facecolor(class_colour(position))
            patch.set_alpha(0.55)
        ax.set_title(f"#{item['rank']} {item['feature']} (r = {item['r']:+.2f})", fontsize=9)
        ax.set_xlabel("Class")
        ax.set_ylabel("Value")
        ax.tick_params(axis="x", labelsize=8, labelrotation=30 if len(classes) > 3 else 0)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    what = "The feature" if len(shown) == 1 else f"The {len(shown)} features"
    fig.suptitle(f"{what} most correlated with the label, by class")
    return save_figure(fig, path)


def _write_html(summary: dict[str, Any], out_dir: Path, figures: dict[str, Path]) -> Path:
    dataset = summary["dataset"]
    mapping_text = ", ".join(f"{name}={code}" for name, code in summary["label_encoding"].items())
    page = ReportPage(
        "Correlation with the label",
        f"Dataset {dataset['path']} ({dataset['source']}): {dataset['rows']:,} rows, "
        f"{dataset['features']:,} features. Pearson's r of every feature with the label encoded as "
        f"{mapping_text} (LabelEncoder order). All values are in {JSON_NAME}; this page shows the top "
        f"{summary['top_n']} features by |r|.",
    )
    stats = summary["summary"]
    excluded = summary["excluded"]
    page.facts(
        [
            ("Label encoding", mapping_text),
            ("Features with a defined r", stats["features_with_r"]),
            ("Largest |r|", stats["max_abs_r"]),
            ("Median |r|", stats["median_abs_r"]),
            ("Features with |r| ≥ 0.5", stats["abs_r_at_least_0_5"]),
            ("Features with |r| ≥ 0.3", stats["abs_r_at_least_0_3"]),
            ("Constant columns (r undefined)", len(excluded["constant_columns"])),
            ("Columns duplicating another (ranked once)", excluded["duplicate_columns"]),
        ]
    )
    page.heading("How to read this")
    page.paragraph(
        "r measures a straight-line relation between a feature and the class code. The codes follow the "
        "sorted class names, so the sign of r depends on that order and a feature that separates only "
        "the middle class can have r near 0. The correlation ratio eta (0 to 1, shown in the table) does "
        "not depend on the order: it is the share of the feature's spread explained by the class means. "
        "Columns that repeat another exactly are ranked once, under the first of their group. These "
        "figures describe the whole file; select features for a model inside cross-validation, on "
        "training data only."
    )

    page.heading(f"Top {len(summary['top_features'])} features")
    page.figure(figures["bars"], "Signed Pearson r of the top features, rank 1 at the top")
    page.raw_html(
        html_table(
            [
                (
                    t["rank"],
                    t["feature"],
                    f"{t['r']:+.3f}",
                    f"{t['eta']:.3f}",
                    ", ".join(t["duplicates"]) or None,
                )
                for t in summary["top_features"]
            ],
            ["Rank", "Feature", "Pearson r", "Correlation ratio eta", "Equal columns (same r)"],
        )
    )
    page.heading("Strongest feature of each group")
    page.paragraph(
        "Features grouped by name stem (as in the EDA report): how strongly the best column of each "
        "group relates to the label, and how many columns of the group reach |r| ≥ 0.3."
    )
    page.raw_html(
        html_table(
            [
                (
                    g["stem"],
                    g["columns"],
                    g["best_feature"],
                    None if g["best_r"] is None else f"{g['best_r']:+.3f}",
                    None if g["median_abs_r"] is None else f"{g['median_abs_r']:.3f}",
                    g["abs_r_at_least_0_3"],
                )
                for g in summary["by_stem"][:HTML_MAX_GROUPS]
            ],
            ["Stem", "Columns", "Best feature", "Its r", "Median |r|", "Columns with |r| ≥ 0.3"],
            caption=None
            if len(summary["by_stem"]) <= HTML_MAX_GROUPS
            else f"The {HTML_MAX_GROUPS} groups with the largest |r| of {len(summary['by_stem'])}",
        )
    )
    if "by_class" in figures:
        page.heading("The strongest features, by class")
        page.figure(figures["by_class"], "Distribution of each top feature within each class")
    if "heatmap" in figures:
        page.heading("Correlation among the top features")
        page.paragraph(
            "Correlation between the top features themselves, with the encoded label as the last "
            "row and column. Large blocks of strong correlation mean the top features largely carry "
            "the same information."
        )
        page.figure(figures["heatmap"], "Pearson r among the top features and the encoded label")
    if excluded["constant_columns"]:
        page.heading("Constant columns")
        listed = excluded["constant_columns"][:30]
        page.paragraph(
            f"{len(excluded['constant_columns'])} columns have one value only, so r is undefined (null in "
            f"the JSON): {', '.join(listed)}{' ...' if len(excluded['constant_columns']) > 30 else ''}."
        )
    return page.write(out_dir / HTML_NAME)


def run_correlation_analysis(
    data_path: Path | str, out_dir: Path | str, label_column: str = "label", top_n: int = 30
) -> dict[str, Any]:
    """Write correlation.json, correlation.html and PNG figures into `out_dir`; return the JSON data.

    Raises ConfigurationError for top_n < 1 and DataValidationError for a bad file, in both
    cases before creating `out_dir`.
    """
    if top_n < 1:
        raise ConfigurationError(f"--top-n must be at least 1, got {top_n}")
    dataset = load_for_report(data_path, label_column)
    features, labels = dataset.features, dataset.labels
    out_dir = Path(out_dir)
    names = [str(name) for name in features.columns]

    log(f"Correlating {len(names):,} features with the encoded label...")
    values = features.to_numpy(dtype=np.float64)
    encoded, mapping = encode_labels(labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = correlations_with_label(values, encoded)
        eta = correlation_ratios(values, encoded, len(mapping))
    constant = find_constant_columns(features)
    groups = find_duplicate_columns(features)
    duplicates_of = {group[0]: group[1:] for group in groups}
    redundant = {name for group in groups for name in group[1:]}
    top_positions = _rank_top(names, r, redundant | set(constant), top_n)

    top = [
        {
            "rank": rank,
            "feature": names[i],
            "r": float(r[i]),
            "abs_r": float(abs(r[i])),
            "eta": float(eta[i]),
            "duplicates": duplicates_of.get(names[i], []),
        }
        for rank, i in enumerate(top_positions, start=1)
    ]
    block = np.column_stack([values[:, top_positions], encoded])
    with np.errstate(invalid="ignore", divide="ignore"):
        inter = np.corrcoef(block, rowvar=False) if len(block) > 1 else np.full((1, 1), np.nan)
    inter = np.atleast_2d(inter)
    matrix_labels = [names[i] for i in top_positions] + [LABEL_NAME]

    defined = np.abs(r[np.isfinite(r)])
    summary: dict[str, Any] = {
        "report": "correlation",
        "dataset": {
            "path": str(dataset.path),
            "sha256": dataset.digest,
            "source": dataset.source,
            "label_column": label_column,
            "rows": len(labels),
            "features": len(names),
            "dropped_rows": int(dataset.dropped_rows),
        },
        "method": "pearson",
        "label_encoding": mapping,
        "top_n": top_n,
        "summary": {
            "features_with_r": len(defined),
            "max_abs_r": float(defined.max()) if len(defined) else None,
            "median_abs_r": float(np.median(defined)) if len(defined) else None,
            "abs_r_at_least_0_5": int((defined >= 0.5).sum()),
            "abs_r_at_least_0_3": int((defined >= 0.3).sum()),
        },
        "excluded": {"constant_columns": constant, "duplicate_columns": len(redundant)},
        "top_features": top,
        "by_stem": _summarise_stems(names, r),
        "top_intercorrelation": {"features": matrix_labels, "matrix": inter},
        "correlations": dict(zip(names, r.tolist(), strict=True)),
        "correlation_ratios": dict(zip(names, eta.tolist(), strict=True)),
    }

    out_dir.mkdir(parents=True, exist_ok=True)  # only after the data loaded
    log("Drawing figures...")
    mapping_text = ", ".join(f"{name}={code}" for name, code in mapping.items())
    figures: dict[str, Path] = {}
    if top:
        figures["bars"] = _plot_bars(top, mapping_text, out_dir / BAR_PNG)
        figures["heatmap"] = _plot_heatmap(matrix_labels, inter, out_dir / HEATMAP_PNG)
        figures["by_class"] = _plot_by_class(
            values[:, top_positions], encoded, list(mapping), top, out_dir / BY_CLASS_PNG
        )
    return finish_report(
        summary,
        out_dir,
        figures,
        json_name=JSON_NAME,
        html_name=HTML_NAME,
        write_html=_write_html,
        log=log,
    )


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = report_parser(
        "python -m analysis.correlation_analysis",
        "Correlate every feature with the label (encoded in LabelEncoder order) and report the "
        "top-N features by |r|: correlation.json, correlation.html and PNG figures in OUTDIR.",
    )
    parser.add_argument(
        "--top-n", type=int, default=30, help="how many features to plot and tabulate, by |r| (default: 30)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = _parse_args(argv)
    started = time.perf_counter()
    run_correlation_analysis(args.data, args.out_dir, label_column=args.label_column, top_n=args.top_n)
    log(f"Correlation report finished in {time.perf_counter() - started:.1f} s: {args.out_dir / HTML_NAME}")
    return 0


if __name__ == "__main__":
    run_cli(main)
