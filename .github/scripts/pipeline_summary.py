"""Write the pipeline's job summary and a small reports site from reports/promotion.json.

The training step writes one record per model family to reports/promotion.json:

    {"families": [{"family": "svm", "model_name": "eeg-emotion-svm", "new_version": "4",
                   "test_accuracy": 0.953, "champion_before": "3",
                   "champion_before_test_accuracy": 0.960, "champion_after": "3",
                   "promoted": false, "reason": "test accuracy 0.9530 < champion 0.9600"}]}

`families` may also be a mapping from family name to record, and `champion_before` /
`champion_after` may be {"version": ..., "test_accuracy": ...} objects.

This script uses the standard library only and does not import the project, so the
summary is still written when installing the project's requirements failed.
"""

from __future__ import annotations

import argparse
import html
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote


class SummaryError(Exception):
    """promotion.json exists but cannot be read as the documented structure."""


@dataclass(frozen=True)
class FamilyResult:
    """What happened to one model family's registered model in this run."""

    family: str
    model_name: str
    new_version: str
    test_accuracy: float | None
    champion_before: str
    champion_before_accuracy: float | None
    champion_after: str
    promoted: bool
    reason: str
    baseline_accuracy: float | None = None
    interval: tuple[float, float] | None = None

    @property
    def regressed(self) -> bool:
        """A champion existed and the new model did not replace it."""
        return not self.promoted and self.champion_before != ""


def _version(value: object) -> tuple[str, float | None]:
    """A champion field as (version, accuracy); accepts a scalar or an object."""
    if isinstance(value, dict):
        accuracy = value.get("test_accuracy")
        return _text(value.get("version")), float(accuracy) if accuracy is not None else None
    return _text(value), None


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _family(name: str, record: object, source: Path) -> FamilyResult:
    if not isinstance(record, dict):
        raise SummaryError(f"{source}: family {name!r} must be an object, got {type(record).__name__}")
    before, before_accuracy = _version(record.get("champion_before"))
    after, _ = _version(record.get("champion_after"))
    if record.get("champion_before_test_accuracy") is not None:
        before_accuracy = float(record["champion_before_test_accuracy"])
    accuracy = record.get("test_accuracy")
    try:
        test_accuracy = float(accuracy) if accuracy is not None else None
    except (TypeError, ValueError):
        raise SummaryError(f"{source}: family {name!r} test_accuracy={accuracy!r} is not a number") from None
    baseline = record.get("baseline")
    baseline_accuracy = baseline.get("accuracy") if isinstance(baseline, dict) else None
    interval = record.get("interval")
    bounds = (
        (float(interval["low"]), float(interval["high"]))
        if isinstance(interval, dict) and {"low", "high"} <= set(interval)
        else None
    )
    promoted = record.get("promoted")
    if not isinstance(promoted, bool):
        raise SummaryError(f"{source}: family {name!r} promoted={promoted!r} must be true or false")
    return FamilyResult(
        family=name,
        model_name=_text(record.get("model_name")),
        new_version=_text(record.get("new_version")),
        test_accuracy=test_accuracy,
        champion_before=before,
        champion_before_accuracy=before_accuracy,
        champion_after=after,
        promoted=promoted,
        reason=_text(record.get("reason")),
        baseline_accuracy=float(baseline_accuracy) if isinstance(baseline_accuracy, int | float) else None,
        interval=bounds,
    )


def load_promotion(path: Path) -> list[FamilyResult] | None:
    """The families in promotion.json, or None when the file does not exist."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SummaryError(f"{path} is not readable JSON: {exc}") from None
    families = data.get("families") if isinstance(data, dict) else None
    if isinstance(families, dict):
        return [_family(str(name), record, path) for name, record in families.items()]
    if isinstance(families, list):
        return [
            _family(_text(record.get("family")) if isinstance(record, dict) else "?", record, path)
            for record in families
        ]
    raise SummaryError(f'{path}: expected a "families" list or object at the top level')


def _accuracy(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _champion(version: str, accuracy: float | None = None) -> str:
    if not version:
        return "none"
    return f"v{version}" if accuracy is None else f"v{version} ({accuracy:.4f})"


def _cell(text: str) -> str:
    """Keep a value inside one Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _outcome_lines(results: list[FamilyResult]) -> list[str]:
    lines = []
    for r in results:
        if r.promoted:
            lines.append(
                f"Champion changed: {r.family} {_champion(r.champion_before)} -> v{r.new_version} "
                f"(test accuracy {_accuracy(r.test_accuracy)})."
            )
        elif r.regressed:
            lines.append(
                f"Performance regression caught: {r.family} v{r.new_version} "
                f"(test accuracy {_accuracy(r.test_accuracy)}) did not beat champion "
                f"{_champion(r.champion_before, r.champion_before_accuracy)}; the champion stays. {r.reason}".rstrip()
            )
        else:
            lines.append(
                f"Not promoted: {r.family} v{r.new_version} stays challenger, no champion was set. {r.reason}".rstrip()
            )
    return lines


def render_markdown(results: list[FamilyResult] | None, promotion_path: Path) -> str:
    """The job summary: a metrics table and whether each champion changed."""
    out = ["## Pipeline result", ""]
    if results is None:
        out.append(
            f"No promotion summary at `{promotion_path}`: training did not finish, so no "
            "champion moved. See the failed step's log."
        )
        return "\n".join(out) + "\n"
    if not results:
        out.append(f"`{promotion_path}` lists no model family.")
        return "\n".join(out) + "\n"
    out += [
        "| Family | Registered model | New version | Test accuracy | 95% interval | Baseline | Champion before "
        "| Champion after | Promoted | Reason |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        row = [
            r.family,
            f"`{r.model_name}`" if r.model_name else "",
            f"v{r.new_version}" if r.new_version else "",
            _accuracy(r.test_accuracy),
            "n/a" if r.interval is None else f"{r.interval[0]:.3f}-{r.interval[1]:.3f}",
            _accuracy(r.baseline_accuracy),
            _champion(r.champion_before, r.champion_before_accuracy),
            _champion(r.champion_after),
            "yes" if r.promoted else "**not promoted**",
            r.reason,
        ]
        out.append("| " + " | ".join(_cell(c) for c in row) + " |")
    out.append("")
    changed = [r.family for r in results if r.promoted]
    out.append(f"**Champion changed:** {', '.join(changed)}." if changed else "**Champion changed:** no.")
    out.append("")
    out += [f"- {line}" for line in _outcome_lines(results)]
    return "\n".join(out) + "\n"


def _escape_command(text: str) -> str:
    """Escape a workflow-command message (GitHub's rules for %, CR and LF)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def annotations(results: list[FamilyResult] | None) -> list[str]:
    """Workflow commands that surface the outcome on the run's page."""
    if results is None:
        return ["::warning title=No promotion summary::Training did not write reports/promotion.json."]
    commands = []
    for r, line in zip(results, _outcome_lines(results), strict=True):
        if r.promoted:
            commands.append(f"::notice title=Champion changed::{_escape_command(line)}")
        elif r.regressed:
            commands.append(f"::warning title=Performance regression::{_escape_command(line)}")
        else:
            commands.append(f"::warning title=Not promoted::{_escape_command(line)}")
    return commands


def write_site(results: list[FamilyResult] | None, reports: Path, site: Path, markdown: str) -> None:
    """Copy the reports into `site` and add an index.html that links to them."""
    site.mkdir(parents=True, exist_ok=True)
    if reports.is_dir():
        shutil.copytree(reports, site, dirs_exist_ok=True)
    files = sorted(p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file())
    files = [f for f in files if f != "index.html"]
    rows = ""
    for r in results or []:
        cells = [
            r.family,
            r.model_name,
            f"v{r.new_version}" if r.new_version else "",
            _accuracy(r.test_accuracy),
            "n/a" if r.interval is None else f"{r.interval[0]:.3f}-{r.interval[1]:.3f}",
            _accuracy(r.baseline_accuracy),
            _champion(r.champion_before, r.champion_before_accuracy),
            _champion(r.champion_after),
            "yes" if r.promoted else "**not promoted**",
            r.reason,
        ]
        rows += "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>\n"
    outcome = "".join(f"<li>{html.escape(line)}</li>\n" for line in _outcome_lines(results or []))
    if results is None:
        outcome = "<li>Training did not finish: no promotion summary.</li>\n"
    links = "".join(f'<li><a href="{html.escape(quote(f))}">{html.escape(f)}</a></li>\n' for f in files)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Operational ML: pipeline reports</title>
<style>body{{font-family:sans-serif;margin:2rem;max-width:70rem}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}</style></head>
<body><h1>Operational ML: latest pipeline run</h1>
<table><tr><th>Family</th><th>Registered model</th><th>New version</th><th>Test accuracy</th>
<th>Champion before</th><th>Champion after</th><th>Promoted</th><th>Reason</th></tr>
{rows}</table>
<ul>
{outcome}</ul>
<h2>Reports</h2>
<ul>
{links or "<li>No report files.</li>"}
</ul>
<details><summary>Job summary (Markdown)</summary><pre>{html.escape(markdown)}</pre></details>
</body></html>
"""
    (site / "index.html").write_text(page, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, write the summary (and site), print annotations."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--promotion",
        type=Path,
        default=Path("reports/promotion.json"),
        help="promotion summary written by `make train` (default: %(default)s)",
    )
    parser.add_argument(
        "--summary",
        type=Path,
        default=None,
        help="file to append the Markdown to, e.g. $GITHUB_STEP_SUMMARY (default: stdout)",
    )
    parser.add_argument(
        "--reports",
        type=Path,
        default=Path("reports"),
        help="reports folder copied into the site (default: %(default)s)",
    )
    parser.add_argument(
        "--site",
        type=Path,
        default=None,
        help="folder to write a static site into for GitHub Pages (optional)",
    )
    args = parser.parse_args(argv)

    try:
        results = load_promotion(args.promotion)
    except SummaryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    markdown = render_markdown(results, args.promotion)
    if args.summary is None:
        sys.stdout.write(markdown)
    else:
        with args.summary.open("a", encoding="utf-8") as handle:
            handle.write(markdown)
    for command in annotations(results):
        print(command)
    if args.site is not None:
        write_site(results, args.reports, args.site, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
