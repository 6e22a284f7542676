"""Exploratory data analysis of a classification CSV: JSON summary, PNG figures, HTML report.

Run alone:  python -m analysis.eda DATA OUTDIR [--label-column label]

Written to OUTDIR: eda.json (everything, including per-feature statistics of every column),
eda.html (a readable subset with explanations, figures embedded) and the figures
eda_label_distribution.png, eda_feature_scales.png, eda_recordings.png (when recordings exist)
and eda_missing_values.png (when values are missing).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from analysis.report_files import (
    ReportPage,
    class_colour,
    finish_report,
    html_table,
    new_figure,
    report_parser,
    save_figure,
)
from modules.data.loading import Dataset, load_dataset, normalise_column_name, read_raw_csv
from modules.data.splitting import detect_recordings
from modules.errors import run_cli

__all__ = [
    "count_missing_values",
    "describe_features",
    "feature_stem",
    "find_constant_columns",
    "find_duplicate_columns",
    "load_for_report",
    "main",
    "run_eda",
]

JSON_NAME = "eda.json"
HTML_NAME = "eda.html"
LABEL_PNG = "eda_label_distribution.png"
SCALES_PNG = "eda_feature_scales.png"
RECORDINGS_PNG = "eda_recordings.png"
MISSING_PNG = "eda_missing_values.png"

# How much of the 2548 columns the HTML shows; the JSON always has every column.
HTML_LARGEST_SCALE = 15
HTML_MAX_GROUPS = 40
HTML_MAX_LISTED = 30
HTML_EXAMPLES_PER_STEM = 4
PLOT_MAX_GROUPS = 30

# `mean_d_0_a2`, `entropy3_b`, `fft_749_a`: stem, index, half (a/b), optional "2".
_EEG_NAME = re.compile(r"^(?P<stem>.*?)(?P<index>\d+)_(?P<half>[ab])2?$")
# Generic numbered names: `x12`, `feature_3`.
_NUMBERED_NAME = re.compile(r"^(?P<stem>.*?\D)\d+$")


def log(message: str) -> None:
    """One progress line on stdout, flushed so `make` shows it as it happens."""
    print(message, flush=True)


def load_for_report(data_path: Path | str, label_column: str) -> Dataset:
    """Load and validate the CSV with the project's loader; bad files raise DataValidationError."""
    log(f"Loading {data_path} (label column {label_column!r})...")
    started = time.perf_counter()
    dataset = load_dataset(data_path, label_column)
    log(
        f"Loaded {len(dataset.features):,} rows x {dataset.features.shape[1]:,} features, "
        f"{len(dataset.classes)} classes, source {dataset.source} ({time.perf_counter() - started:.1f} s)"
    )
    return dataset


def count_missing_values(dataset: Dataset, label_column: str) -> dict[str, int]:
    """Missing values per column of the file (label included), before the loader dropped rows.

    The loader drops rows with a missing value, so the counts come from the raw file; it is read
    a second time only when rows were dropped.
    """
    if dataset.dropped_rows == 0:
        return {}
    raw = read_raw_csv(dataset.path, index_col=False)
    raw.columns = [normalise_column_name(str(name)) for name in raw.columns]
    counts = raw.isna().sum()
    return {str(name): int(count) for name, count in counts.items() if count}


def feature_stem(name: str) -> str:
    """The group a column belongs to by name: `fft_12_a` -> `fft_`, `entropy3_b` -> `entropy`.

    EEG names are `{stem}{k}_{a|b}` (quarter means add a `2`); other numbered names lose their
    trailing number; any other name is its own group.
    """
    match = _EEG_NAME.match(name) or _NUMBERED_NAME.match(name)
    return match.group("stem") if match else name


def find_constant_columns(features: pd.DataFrame) -> list[str]:
    """Columns whose non-missing values are all equal (or that have no values at all)."""
    values = features.to_numpy(dtype=np.float64)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        low = np.nanmin(values, axis=0) if len(values) else np.full(values.shape[1], np.nan)
        high = np.nanmax(values, axis=0) if len(values) else np.full(values.shape[1], np.nan)
    constant = (low == high) | np.isnan(low)
    return [str(name) for name in features.columns[constant]]


def find_duplicate_columns(features: pd.DataFrame) -> list[list[str]]:
    """Groups of columns with exactly equal values (NaN equal to NaN), each in file order.

    Each column is hashed once (blake2b of its bytes), so this is linear in the data size;
    columns that share a hash are compared exactly to rule out collisions.
    """
    # Column-major copy: each column's bytes are contiguous. `+ 0.0` turns -0.0 into 0.0 so
    # values that compare equal also hash equal.
    values = np.asfortranarray(features.to_numpy(dtype=np.float64) + 0.0)
    by_hash: dict[bytes, list[int]] = defaultdict(list)
    for position in range(values.shape[1]):
        column = values[:, position]
        if np.isnan(column).any():
            column = np.where(np.isnan(column), np.nan, column)  # one NaN bit pattern
        by_hash[hashlib.blake2b(column.tobytes(), digest_size=16).digest()].append(position)

    names = [str(name) for name in features.columns]
    groups: list[list[str]] = []
    for positions in by_hash.values():
        remaining = list(positions)
        while len(remaining) > 1:
            first, *others = remaining
            same = [p for p in others if np.array_equal(values[:, first], values[:, p], equal_nan=True)]
            if same:
                groups.append([names[first]] + [names[p] for p in same])
            remaining = [p for p in others if p not in same]
    groups.sort(key=lambda group: features.columns.get_loc(group[0]))
    return groups


def describe_features(features: pd.DataFrame) -> dict[str, dict[str, float | int | None]]:
    """Per-column count, missing, mean, std (ddof=1 like pandas), min, quartiles and max."""
    values = features.to_numpy(dtype=np.float64)
    n_rows = values.shape[0]
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns, single rows
        missing = np.isnan(values).sum(axis=0)
        if n_rows == 0:
            stats = np.full((7, values.shape[1]), np.nan)
        else:
            # np.percentile is much faster than np.nanpercentile; use it when nothing is missing.
            percentile = np.nanpercentile if missing.any() else np.percentile
            quartiles = percentile(values, [0, 25, 50, 75, 100], axis=0)
            mean = np.nanmean(values, axis=0)
            std = np.nanstd(values, axis=0, ddof=1) if n_rows > 1 else np.full(values.shape[1], np.nan)
            stats = np.vstack([mean, std, quartiles])
    count = n_rows - missing
    described: dict[str, dict[str, float | int | None]] = {}
    for position, name in enumerate(features.columns):
        mean, std, low, q1, median, q3, high = (float(v) for v in stats[:, position])
        described[str(name)] = {
            "count": int(count[position]),
            "missing": int(missing[position]),
            "mean": mean,
            "std": std,
            "min": low,
            "25%": q1,
            "50%": median,
            "75%": q3,
            "max": high,
        }
    return described


def _summarise_groups(
    stats: dict[str, dict[str, Any]], constant: set[str], redundant: set[str], missing: dict[str, int]
) -> list[dict[str, Any]]:
    """One row per name stem, in order of first appearance."""
    members: dict[str, list[str]] = {}
    for name in stats:
        members.setdefault(feature_stem(name), []).append(name)
    groups = []
    for stem, names in members.items():
        stds = np.array([stats[n]["std"] for n in names], dtype=float)
        lows = np.array([stats[n]["min"] for n in names], dtype=float)
        highs = np.array([stats[n]["max"] for n in names], dtype=float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            groups.append(
                {
                    "stem": stem,
                    "columns": len(names),
                    "first": names[0],
                    "last": names[-1],
                    "constant": sum(n in constant for n in names),
                    "duplicates": sum(n in redundant for n in names),
                    "missing": sum(missing.get(n, 0) for n in names),
                    "median_std": float(np.nanmedian(stds)) if np.isfinite(stds).any() else None,
                    "min": float(np.nanmin(lows)) if np.isfinite(lows).any() else None,
                    "max": float(np.nanmax(highs)) if np.isfinite(highs).any() else None,
                }
            )
    return groups


def _largest_scale(stats: dict[str, dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The `count` columns with the largest magnitude (max of |min|, |max|)."""

    def magnitude(item: tuple[str, dict[str, Any]]) -> float:
        low, high = item[1]["min"], item[1]["max"]
        if low is None or high is None or np.isnan(low) or np.isnan(high):
            return -1.0
        return max(abs(low), abs(high))

    ranked = sorted(stats.items(), key=magnitude, reverse=True)[:count]
    return [{"feature": name, "stem": feature_stem(name), **values} for name, values in ranked]


def _summarise_recordings(features: pd.DataFrame, labels: pd.Series) -> dict[str, Any]:
    """Chains of overlapping windows (see modules.data.splitting): how many, how big, one label each?"""
    recordings = detect_recordings(features)
    group_ids = np.asarray(recordings.group_ids)
    sizes = np.asarray(recordings.sizes, dtype=int)
    label_values = labels.to_numpy()
    chains = []
    mixed = 0
    for group in np.unique(group_ids):
        chain_labels = Counter(label_values[group_ids == group].tolist())
        if len(chain_labels) > 1:
            mixed += 1
        chains.append(
            {"id": int(group), "rows": int(sum(chain_labels.values())), "labels": dict(chain_labels)}
        )
    summary: dict[str, Any] = {
        "description": recordings.summary(),
        "found": bool(recordings.found),
        "n_chains": int(recordings.n_chains),
        "single_row_chains": int((sizes == 1).sum()),
        "chains_with_mixed_labels": mixed,
        "size_min": int(sizes.min()) if len(sizes) else 0,
        "size_median": float(np.median(sizes)) if len(sizes) else 0.0,
        "size_mean": float(sizes.mean()) if len(sizes) else 0.0,
        "size_max": int(sizes.max()) if len(sizes) else 0,
        "sizes": sorted(sizes.tolist(), reverse=True),
    }
    # Listing every chain is useful for tens of recordings, noise for thousands of single rows.
    if recordings.found and len(chains) <= 500:
        summary["chains"] = sorted(chains, key=lambda chain: -chain["rows"])
    return summary


def _plot_labels(counts: dict[str, int], label_column: str, path: Path) -> Path:
    fig = new_figure(max(5.0, 1.1 * len(counts) + 2.5), 4.2)
    ax = fig.add_subplot()
    names = list(counts)
    heights = [counts[name] for name in names]
    total = sum(heights) or 1
    bars = ax.bar(names, heights, color=[class_colour(i) for i in range(len(names))])
    ax.bar_label(bars, labels=[f"{h:,}\n({h / total:.1%})" for h in heights], padding=2, fontsize=9)
    ax.set_title(f"Label distribution ({total:,} rows, column '{label_column}')")
    ax.set_xlabel("Class")
    ax.set_ylabel("Rows")
    ax.set_ylim(0, max(heights, default=1) * 1.22)
    if len(names) > 6:
        ax.tick_params(axis="x", labelrotation=45)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def _plot_scales(stats: dict[str, dict[str, Any]], groups: list[dict[str, Any]], path: Path) -> Path | None:
    """Box plot of log-scale standard deviations per name stem: shows which groups need scaling."""
    stems = [g["stem"] for g in groups]
    if len(stems) > PLOT_MAX_GROUPS:  # keep the plot readable: the largest groups
        stems = [g["stem"] for g in sorted(groups, key=lambda g: -g["columns"])[:PLOT_MAX_GROUPS]]
        stems.sort(key=[g["stem"] for g in groups].index)
    data, labels = [], []
    for stem in stems:
        stds = np.array([v["std"] for n, v in stats.items() if feature_stem(n) == stem], dtype=float)
        stds = stds[np.isfinite(stds) & (stds > 0)]  # constant columns have no place on a log axis
        if len(stds):
            data.append(stds)
            labels.append(f"{stem} ({len(stds)})")
    if not data:
        return None
    fig = new_figure(9.0, max(3.0, 0.32 * len(data) + 1.6))
    ax = fig.add_subplot()
    ax.boxplot(
        data,
        orientation="horizontal",
        tick_labels=labels,
        flierprops={"markersize": 2},
        medianprops={"color": "black"},
    )
    for position, stds in enumerate(data, start=1):
        if len(stds) <= 5:  # a box says little about a handful of columns: show each one
            ax.scatter(stds, np.full(len(stds), position), s=14, color="#3b6ea5", zorder=3)
    ax.set_xscale("log")
    ax.invert_yaxis()  # first group at the top, as in the file
    ax.set_title("Spread of each feature, grouped by name stem")
    ax.set_xlabel("Standard deviation of one column (log scale)")
    ax.set_ylabel("Name stem (columns)")
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)


def _plot_recordings(recordings: dict[str, Any], classes: list[str], path: Path) -> Path | None:
    """One bar per recording (chain), coloured by its majority label."""
    chains = recordings.get("chains")
    if not recordings["found"] or not chains:
        return None
    colours = {name: class_colour(position) for position, name in enumerate(classes)}
    ordered = sorted(chains, key=lambda c: (max(c["labels"], key=c["labels"].get), -c["rows"]))
    width = min(14.0, max(6.0, 0.32 * len(ordered) + 2.5))
    fig = new_figure(width, 4.4)
    ax = fig.add_subplot()
    majority = [max(c["labels"], key=c["labels"].get) for c in ordered]
    ax.bar(
        range(len(ordered)),
        [c["rows"] for c in ordered],
        color=[colours.get(m, "#888888") for m in majority],
    )
    handles = [Patch(color=colours[name], label=name) for name in classes if name in majority]
    ax.legend(handles=handles, title="Label", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"Recordings rebuilt from overlapping windows: {recordings['n_chains']} chains")
    ax.set_xlabel("Recording (chain), grouped by label")
    ax.set_ylabel("Rows in the chain")
    if len(ordered) <= 40:
        ax.set_xticks(range(len(ordered)), [str(i + 1) for i in range(len(ordered))], fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def _plot_missing(missing_by_column: dict[str, int], n_rows: int, path: Path) -> Path:
    top = sorted(missing_by_column.items(), key=lambda item: -item[1])[:HTML_MAX_LISTED]
    fig = new_figure(8.0, max(2.6, 0.28 * len(top) + 1.4))
    ax = fig.add_subplot()
    ax.barh([name for name, _ in top], [count for _, count in top], color="#b5485b")
    ax.invert_yaxis()
    shown = f"the {len(top)} columns with most" if len(missing_by_column) > len(top) else "columns with"
    ax.set_title(f"Missing values: {shown} missing values ({n_rows:,} rows in the file)")
    ax.set_xlabel("Missing values")
    ax.set_ylabel("Column")
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)


def _write_html(summary: dict[str, Any], out_dir: Path, figures: dict[str, Path]) -> Path:
    dataset = summary["dataset"]
    labels = summary["labels"]
    page = ReportPage(
        "Exploratory data analysis",
        f"Dataset {dataset['path']} ({dataset['source']}): {dataset['rows']:,} rows, "
        f"{dataset['features']:,} numeric features, label column '{dataset['label_column']}'. "
        f"The complete statistics of every column are in {JSON_NAME}; this page shows a readable subset.",
    )
    page.facts(
        [
            ("File", dataset["path"]),
            ("SHA-256", dataset["sha256"]),
            ("Source", dataset["source"]),
            ("Rows used", dataset["rows"]),
            ("Rows dropped while loading", dataset["dropped_rows"]),
            ("Feature columns", dataset["features"]),
            ("Classes", ", ".join(labels["classes"])),
            ("Constant columns", len(summary["constant_columns"])),
            ("Columns duplicating another", summary["duplicate_columns"]["n_redundant_columns"]),
            ("Recordings found", summary["recordings"]["n_chains"] if summary["recordings"]["found"] else 0),
        ]
    )

    page.heading("Label distribution")
    page.paragraph(
        "Rows per class. A strong imbalance would call for stratified splits and class-aware metrics; "
        f"here the largest class has {labels['imbalance_ratio']:.2f} times the rows of the smallest."
    )
    page.raw_html(
        html_table(
            [(c, labels["counts"][c], f"{labels['fractions'][c]:.1%}") for c in labels["classes"]],
            ["Class", "Rows", "Share"],
        )
    )
    page.figure(figures["labels"], "Rows per class")

    missing = summary["missing_values"]
    page.heading("Missing values")
    if missing["total"] == 0:
        page.paragraph("No value is missing: every row of the file is used.")
    else:
        page.paragraph(
            f"{missing['total']:,} missing values in {len(missing['by_column']):,} columns; "
            f"{missing['rows_with_missing']:,} of the {missing['rows_in_file']:,} rows in the file have at "
            "least one, and the loader drops those rows (as the pipeline does). The other sections "
            "describe the rows that remain."
        )
        page.raw_html(
            html_table(
                sorted(missing["by_column"].items(), key=lambda item: -item[1])[:HTML_MAX_LISTED],
                ["Column", "Missing values"],
            )
        )
        if "missing" in figures:
            page.figure(figures["missing"], "Columns with missing values")

    page.heading("Feature groups by name stem")
    groups = summary["feature_groups"]
    page.paragraph(
        "Columns grouped by their name without the index and window suffix (for the EEG data, "
        "fft_12_a belongs to fft_). In the EEG file the ten quarter-mean blocks re-use the names "
        "mean_d_*, so mean_d_ holds 55 columns per half-window. 'Duplicates' counts columns equal to "
        "an earlier column."
    )
    shown = groups[:HTML_MAX_GROUPS]
    page.raw_html(
        html_table(
            [
                (
                    g["stem"],
                    g["columns"],
                    g["first"],
                    g["last"],
                    g["constant"],
                    g["duplicates"],
                    g["missing"],
                    g["median_std"],
                    g["min"],
                    g["max"],
                )
                for g in shown
            ],
            [
                "Stem",
                "Columns",
                "First",
                "Last",
                "Constant",
                "Duplicates",
                "Missing",
                "Median std",
                "Min",
                "Max",
            ],
            caption=None if len(groups) <= len(shown) else f"First {len(shown)} of {len(groups)} groups",
        )
    )
    if "scales" in figures:
        page.figure(figures["scales"], "Standard deviation of each column, per group (log scale)")
        page.paragraph(
            "Scales differ by many orders of magnitude between groups: scale the features before "
            "distance-based models (SVM, neural networks), inside the training pipeline.",
            note=True,
        )

    page.heading(f"The {len(summary['largest_scale_features'][:HTML_LARGEST_SCALE])} largest-scale features")
    page.paragraph("The columns with the largest absolute values (largest of |min| and |max|).")
    page.raw_html(
        html_table(
            [
                (f["feature"], f["stem"], f["mean"], f["std"], f["min"], f["50%"], f["max"])
                for f in summary["largest_scale_features"][:HTML_LARGEST_SCALE]
            ],
            ["Feature", "Stem", "Mean", "Std", "Min", "Median", "Max"],
        )
    )

    page.heading("Constant and duplicate columns")
    constant = summary["constant_columns"]
    duplicates = summary["duplicate_columns"]
    page.paragraph(
        f"{len(constant):,} constant columns carry no information"
        + (
            f": {', '.join(constant[:HTML_MAX_LISTED])}{' ...' if len(constant) > HTML_MAX_LISTED else ''}."
            if constant
            else "."
        )
    )
    page.paragraph(
        f"{duplicates['n_redundant_columns']:,} columns repeat another column exactly "
        f"({duplicates['n_groups']:,} groups of equal columns). Dropping all but the first of each group "
        "loses nothing and saves work; the full list of groups is in the JSON."
    )
    if duplicates["by_stem"]:
        page.raw_html(
            html_table(
                list(duplicates["by_stem"].items()),
                ["Stem", "Columns duplicating another"],
                caption="Duplicates by group",
            )
        )
        # A few examples from every stem, not just the first stem's groups.
        examples: dict[str, list[str]] = {}
        for group in duplicates["groups"]:
            listed = examples.setdefault(feature_stem(group[1]), [])
            if len(listed) < HTML_EXAMPLES_PER_STEM:
                listed.append(" = ".join(group))
        page.raw_html(
            html_table(
                [(stem, "; ".join(listed)) for stem, listed in examples.items()],
                ["Stem", "Examples of equal columns"],
                caption=f"Up to {HTML_EXAMPLES_PER_STEM} groups per stem, of {duplicates['n_groups']:,} groups",
            )
        )

    recordings = summary["recordings"]
    page.heading("Recordings")
    if recordings["found"]:
        page.paragraph(
            f"Rows chain together where one row's second window (_b columns) equals another row's first "
            f"window (_a columns): {recordings['n_chains']} chains, from {recordings['size_min']} to "
            f"{recordings['size_max']} rows (median {recordings['size_median']:g}); "
            f"{recordings['chains_with_mixed_labels']} chains mix labels. Each chain is one recording: "
            "neighbouring rows share most of their signal, so a random train/test split leaks; split by "
            "recording instead (the pipeline's 'grouped' protocol)."
        )
        if "recordings" in figures:
            page.figure(figures["recordings"], "Rows per recording, coloured by label")
    else:
        page.paragraph(
            f"{recordings['description'][:1].upper()}{recordings['description'][1:]}. Rows are treated as independent and the pipeline "
            "splits at random."
        )
    return page.write(out_dir / HTML_NAME)


def run_eda(data_path: Path | str, out_dir: Path | str, label_column: str = "label") -> dict[str, Any]:
    """Write eda.json, eda.html and the PNG figures into `out_dir`; return what went into the JSON.

    Raises DataValidationError (before creating `out_dir`) when the file is not a usable table.
    """
    dataset = load_for_report(data_path, label_column)
    features, labels = dataset.features, dataset.labels
    out_dir = Path(out_dir)

    log("Computing per-feature statistics...")
    stats = describe_features(features)
    log("Looking for constant and duplicate columns...")
    constant = find_constant_columns(features)
    duplicate_groups = find_duplicate_columns(features)
    redundant = {name for group in duplicate_groups for name in group[1:]}
    log("Rebuilding recordings from overlapping windows...")
    recordings = _summarise_recordings(features, labels)

    classes = list(dataset.classes)
    counts = {c: int((labels == c).sum()) for c in classes}
    n_rows = len(labels)
    missing_by_column = count_missing_values(dataset, label_column)
    groups = _summarise_groups(stats, set(constant), redundant, missing_by_column)
    summary: dict[str, Any] = {
        "report": "eda",
        "dataset": {
            "path": str(dataset.path),
            "sha256": dataset.digest,
            "source": dataset.source,
            "label_column": label_column,
            "rows": n_rows,
            "features": features.shape[1],
            "dropped_rows": int(dataset.dropped_rows),
        },
        "labels": {
            "classes": classes,
            "counts": counts,
            "fractions": {c: counts[c] / n_rows if n_rows else 0.0 for c in classes},
            "imbalance_ratio": max(counts.values()) / max(1, min(counts.values())) if counts else 0.0,
        },
        "missing_values": {
            "total": sum(missing_by_column.values()),
            "rows_in_file": n_rows + int(dataset.dropped_rows),
            "rows_with_missing": int(dataset.dropped_rows),
            "by_column": missing_by_column,
        },
        "constant_columns": constant,
        "duplicate_columns": {
            "n_groups": len(duplicate_groups),
            "n_redundant_columns": len(redundant),
            "by_stem": dict(Counter(feature_stem(n) for g in duplicate_groups for n in g[1:])),
            "groups": duplicate_groups,
        },
        "recordings": recordings,
        "feature_groups": groups,
        "largest_scale_features": _largest_scale(stats, HTML_LARGEST_SCALE),
        "feature_stats": stats,
    }

    # Only now that the data loaded and was analysed does anything touch the output folder.
    out_dir.mkdir(parents=True, exist_ok=True)
    log("Drawing figures...")
    figures: dict[str, Path] = {"labels": _plot_labels(counts, label_column, out_dir / LABEL_PNG)}
    if (path := _plot_scales(stats, groups, out_dir / SCALES_PNG)) is not None:
        figures["scales"] = path
    if (path := _plot_recordings(recordings, classes, out_dir / RECORDINGS_PNG)) is not None:
        figures["recordings"] = path
    if missing_by_column:
        figures["missing"] = _plot_missing(
            missing_by_column, summary["missing_values"]["rows_in_file"], out_dir / MISSING_PNG
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
        "python -m analysis.eda",
        "Exploratory data analysis of a classification CSV: label distribution, missing values, "
        "per-feature statistics, constant and duplicate columns, recordings. Writes eda.json, "
        "eda.html and PNG figures into OUTDIR.",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = _parse_args(argv)
    started = time.perf_counter()
    run_eda(args.data, args.out_dir, label_column=args.label_column)
    log(f"EDA report finished in {time.perf_counter() - started:.1f} s: {args.out_dir / HTML_NAME}")
    return 0


if __name__ == "__main__":
    run_cli(main)
