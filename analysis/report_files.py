"""Write the files of an analysis report: JSON data, PNG figures and one self-contained HTML page.

Figures are drawn on `matplotlib.figure.Figure` objects, never through pyplot, so nothing
depends on a display or on pyplot's global state (headless machines, CI, Metaflow steps).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "CLASS_COLOURS",
    "ReportPage",
    "class_colour",
    "html_table",
    "new_figure",
    "report_parser",
    "save_figure",
    "to_jsonable",
    "write_json",
]


# One colour per class, the same in every figure (colour-blind friendly, distinct in grey).
CLASS_COLOURS = ("#3b6ea5", "#e08a2c", "#4f9a55", "#b5485b", "#7d64a8", "#8c6d4f", "#5fa2a8", "#c4a13b")


_NUMBER_TEXT = re.compile(r"^[+-]?[\d,]*\.?\d+(e[+-]?\d+)?%?$")


def class_colour(position: int) -> str:
    """The colour of the class at `position` in the sorted class list."""
    return CLASS_COLOURS[position % len(CLASS_COLOURS)]


def to_jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays and paths to JSON types; NaN and infinities become None."""
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return [to_jsonable(item) for item in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        # JSON has no NaN; null is what other tools (jq, JavaScript, jsonschema) can read.
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write `data` as indented, strictly valid JSON (no NaN) and return the path."""
    path.write_text(json.dumps(to_jsonable(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def finish_report(
    summary: dict[str, Any],
    out_dir: Path,
    figures: dict[str, Path],
    *,
    json_name: str,
    html_name: str,
    write_html: Callable[[dict[str, Any], Path, dict[str, Path]], Path],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Record the report's files in its summary, write the JSON and the HTML, list every path."""
    summary["files"] = {
        "json": json_name,
        "html": html_name,
        "figures": {key: path.name for key, path in figures.items()},
    }
    summary = to_jsonable(summary)  # callers get exactly what the JSON holds (NaN as None)
    written = [write_json(out_dir / json_name, summary), write_html(summary, out_dir, figures)]
    for path in [*written, *figures.values()]:
        log(f"Wrote {path}")
    return summary


def new_figure(width: float, height: float) -> Figure:
    """A figure with a white background and constrained layout, detached from pyplot."""
    return Figure(figsize=(width, height), dpi=110, layout="constrained", facecolor="white")


def save_figure(fig: Figure, path: Path) -> Path:
    """Save `fig` as PNG at `path` and return the path."""
    fig.savefig(path, format="png", facecolor="white")
    return path


def html_table(
    rows: Iterable[Sequence[Any]],
    columns: Sequence[str] | None,
    *,
    numeric_format: str = "{:.4g}",
    caption: str | None = None,
) -> str:
    """An HTML table (no header row when `columns` is None); floats use `numeric_format`, None
    shows as an em dash, text is escaped."""

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return '<td class="na">—</td>'
        if isinstance(value, bool | np.bool_):
            return f"<td>{'yes' if value else 'no'}</td>"
        if isinstance(value, int | np.integer):
            return f'<td class="num">{int(value):,}</td>'
        if isinstance(value, float | np.floating):
            return f'<td class="num">{numeric_format.format(float(value))}</td>'
        if isinstance(value, str) and _NUMBER_TEXT.match(value):
            return f'<td class="num">{html.escape(value)}</td>'  # pre-formatted numbers align right too
        return f"<td>{html.escape(str(value))}</td>"

    head = (
        "<thead><tr>" + "".join(f"<th>{html.escape(name)}</th>" for name in columns) + "</tr></thead>"
        if columns is not None
        else ""
    )
    body = "\n".join("<tr>" + "".join(cell(value) for value in row) + "</tr>" for row in rows)
    caption_html = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{caption_html}{head}<tbody>\n{body}\n</tbody></table>"


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #3b6ea5; padding-bottom: .3rem; }
h2 { margin-top: 2.2rem; color: #1f4e79; }
p.note { color: #555; font-size: .92rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .88rem; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: .3rem; }
th, td { border: 1px solid #ccd; padding: .25rem .55rem; text-align: left; }
th { background: #eef2f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.na { color: #999; text-align: center; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; border: 1px solid #dde; }
figcaption { color: #555; font-size: .9rem; }
code { background: #f3f3f6; padding: 0 .2rem; border-radius: 3px; }
.facts td:first-child { font-weight: 600; }
"""


@dataclass
class ReportPage:
    """An HTML report built section by section, written as one self-contained file."""

    title: str
    intro: str = ""
    parts: list[str] = field(default_factory=list)

    def heading(self, text: str) -> None:
        """Start a new section."""
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str, *, note: bool = False, raw: bool = False) -> None:
        """A paragraph; `raw=True` keeps inline HTML such as <code> written by this package."""
        body = text if raw else html.escape(text)
        self.parts.append(f'<p class="note">{body}</p>' if note else f"<p>{body}</p>")

    def raw_html(self, fragment: str) -> None:
        """Insert HTML produced by `html_table` or similar."""
        self.parts.append(fragment)

    def facts(self, items: Sequence[tuple[str, Any]]) -> None:
        """A two-column table of key facts."""
        self.parts.append(html_table(items, None).replace("<table>", '<table class="facts">', 1))

    def figure(self, png_path: Path, caption: str) -> None:
        """Embed a PNG as base64 so the page works when copied alone (e.g. as an MLflow artifact)."""
        encoded = base64.b64encode(png_path.read_bytes()).decode("ascii")
        self.parts.append(
            f'<figure><img alt="{html.escape(caption)}" title="{html.escape(png_path.name)}" '
            f'src="data:image/png;base64,{encoded}">'
            f"<figcaption>{html.escape(caption)} (file: <code>{html.escape(png_path.name)}</code>)"
            "</figcaption></figure>"
        )

    def write(self, path: Path) -> Path:
        """Write the page as UTF-8 HTML and return the path."""
        intro = f"<p>{html.escape(self.intro)}</p>" if self.intro else ""
        document = (
            "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
            f"<title>{html.escape(self.title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(self.title)}</h1>\n{intro}\n" + "\n".join(self.parts) + "\n</body>\n</html>\n"
        )
        path.write_text(document, encoding="utf-8")
        return path


def report_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The command line every report shares: DATA, OUTDIR and --label-column.

    Omitted, each comes from the settings (environment, then `.env`, then defaults), so a
    value in `.env` is used unless the command line overrides it.
    """
    from modules.settings import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "data",
        type=Path,
        nargs="?",
        default=settings.data_path,
        help="CSV file with numeric feature columns and a label column (default: DATA_PATH, %(default)s)",
    )
    parser.add_argument(
        "out_dir",
        type=Path,
        nargs="?",
        default=settings.reports_dir,
        metavar="OUTDIR",
        help="folder for the report, created if missing (default: REPORTS_DIR, %(default)s)",
    )
    parser.add_argument(
        "--label-column",
        default=settings.label_column,
        help="name of the label column (default: LABEL_COLUMN, %(default)s)",
    )
    return parser
