"""Drift of a window of live rows against the champion's training reference, and the retrain decision.

Per feature column, all columns at once:
* the two-sample Kolmogorov-Smirnov test against the reference sample
  (`scipy.stats.ks_2samp(..., axis=0)`; seconds for 2548 columns where a per-column tool takes
  minutes), its p-values corrected for testing thousands of columns with Benjamini-Hochberg
  (false discovery rate: among the columns called drifted, at most `alpha` are expected to be
  false alarms);
* the population stability index (PSI) over the reference's equal-mass quantile bins.

A column drifts when its corrected p-value is below `alpha` AND its PSI is at least
`psi_floor`. Both, because each alone misleads: with thousands of rows KS finds shifts too small
to matter, and PSI on a small window is noisy (about (bins-1) x (1/n + 1/m) with no shift at
all). Live rows are also not independent draws (neighbouring rows of one recording share half
their signal, and each recording has its own gains and artefact rates), so p-values alone are
too small; the PSI floor absorbs that recording-to-recording variation.

The decision `retrain` is yes when any of these holds (each gives a reason):
* the share of drifted feature columns is at least `share_threshold`;
* the predicted-label mix drifted (chi-square test against the reference mix, p < alpha, and
  PSI of the mix at least `psi_floor`);
* labelled feedback (at least `min_feedback_rows` rows joined on request id) gives a live
  accuracy below the champion's test accuracy minus `accuracy_tolerance`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from modules.errors import DataValidationError
from modules.monitoring.reference import Reference, _numeric_values, bin_counts

__all__ = [
    "FEEDBACK_ID_COLUMN",
    "FEEDBACK_LABEL_COLUMN",
    "DriftSummary",
    "DriftThresholds",
    "benjamini_hochberg",
    "detect_drift",
    "drift_share_over_time",
    "population_stability_index",
]

FEEDBACK_ID_COLUMN = "request_id"
FEEDBACK_LABEL_COLUMN = "label"
# Shares are floored before the logarithm so an empty bin on one side gives a large but finite PSI.
PSI_EPSILON = 1e-4


@dataclass(frozen=True)
class DriftThresholds:
    """When a column drifts and when to retrain (settings DRIFT_*; see `from_settings`)."""

    alpha: float = 0.01
    psi_floor: float = 0.1
    share_threshold: float = 0.2
    accuracy_tolerance: float = 0.05
    min_feedback_rows: int = 30

    @classmethod
    def from_settings(cls, settings: Any) -> DriftThresholds:
        """The thresholds of a `modules.settings.Settings`."""
        return cls(
            alpha=settings.drift_alpha,
            psi_floor=settings.drift_psi_floor,
            share_threshold=settings.drift_share_threshold,
            accuracy_tolerance=settings.drift_accuracy_tolerance,
            min_feedback_rows=settings.drift_min_feedback_rows,
        )


@dataclass
class DriftSummary:
    """What `detect_drift` found. `columns` has one row per feature column (sorted as given)."""

    retrain: bool
    reasons: list[str]
    rows: int
    reference_rows: int
    drifted_share: float
    drifted_columns: list[str]
    columns: pd.DataFrame  # column, ks_statistic, p_value, p_adjusted, psi, drifted, means
    thresholds: DriftThresholds
    label_drift: dict[str, Any] | None = None
    live_accuracy: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def top_columns(self, count: int = 10) -> pd.DataFrame:
        """The `count` most drifted columns: drifted first, then by PSI."""
        order = self.columns.sort_values(["drifted", "psi", "ks_statistic"], ascending=False)
        return order.head(count).reset_index(drop=True)

    def metrics(self) -> dict[str, float]:
        """Figures to log as run metrics (MLflow): only those that were measured."""
        out = {
            "drift_retrain": float(self.retrain),
            "drift_rows": float(self.rows),
            "drift_drifted_share": self.drifted_share,
            "drift_drifted_columns": float(len(self.drifted_columns)),
        }
        if self.label_drift is not None:
            out["drift_label_psi"] = self.label_drift["psi"]
            out["drift_label_p_value"] = self.label_drift["p_value"]
        if self.live_accuracy is not None and self.live_accuracy["rows"]:
            out["drift_live_accuracy"] = self.live_accuracy["accuracy"]
            out["drift_feedback_rows"] = float(self.live_accuracy["rows"])
        return out

    def to_dict(self, top: int = 20) -> dict[str, Any]:
        """A JSON-ready summary (the report's `drift.json`): decision, reasons, figures, top columns.

        Plain Python types only (NaN becomes None), so `json.dumps` takes it as it is.
        """
        live = self.live_accuracy
        if live is not None and not math.isfinite(live["accuracy"]):
            live = {**live, "accuracy": None}
        return {
            "retrain": self.retrain,
            "reasons": list(self.reasons),
            "rows": self.rows,
            "reference_rows": self.reference_rows,
            "columns": len(self.columns),
            "drifted_columns": len(self.drifted_columns),
            "drifted_share": self.drifted_share,
            "thresholds": asdict(self.thresholds),
            "label_drift": self.label_drift,
            "live_accuracy": live,
            "top_columns": json.loads(self.top_columns(top).to_json(orient="records")),
            "notes": list(self.notes),
        }


def population_stability_index(reference_shares: np.ndarray, current_shares: np.ndarray) -> np.ndarray:
    """PSI = sum over bins of (cur - ref) x ln(cur / ref), per column (axis 0 = bins).

    Shares are floored at PSI_EPSILON. Rules of thumb: below 0.1 stable, 0.1-0.25 moderate,
    above 0.25 a real shift.
    """
    ref = np.maximum(np.asarray(reference_shares, dtype=np.float64), PSI_EPSILON)
    cur = np.maximum(np.asarray(current_shares, dtype=np.float64), PSI_EPSILON)
    return np.sum((cur - ref) * np.log(cur / ref), axis=0)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), same order as given."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    # Step-up: each adjusted value is the smallest ranked value at or above its rank.
    adjusted = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    out = np.empty(m)
    out[order] = adjusted
    return out


def _label_drift(reference: Reference, predicted: Sequence, thresholds: DriftThresholds) -> dict[str, Any]:
    """Chi-square goodness of fit and PSI of the predicted-label mix against the reference mix."""
    expected_counts = reference.prediction_counts or reference.label_counts
    basis = "reference predictions" if reference.prediction_counts else "reference labels"
    current = pd.Series(np.asarray(predicted, dtype=object)).astype(str).value_counts()
    labels = sorted(set(expected_counts) | set(current.index))
    ref = np.array([expected_counts.get(label, 0) for label in labels], dtype=np.float64)
    cur = np.array([current.get(label, 0) for label in labels], dtype=np.float64)
    ref_share, cur_share = ref / ref.sum(), cur / cur.sum()
    psi = float(population_stability_index(ref_share, cur_share))
    # Labels the reference never saw get a tiny expected share so the test stays defined.
    expected = np.maximum(ref_share, PSI_EPSILON)
    expected = expected / expected.sum() * cur.sum()
    chi2, p_value = stats.chisquare(cur, expected)
    drifted = bool(p_value < thresholds.alpha and psi >= thresholds.psi_floor)
    return {
        "compared_with": basis,
        "labels": labels,
        "reference_share": ref_share.tolist(),
        "current_share": cur_share.tolist(),
        "chi2": float(chi2),
        "p_value": float(p_value),
        "psi": psi,
        "drifted": drifted,
    }


def _live_accuracy(
    reference: Reference,
    predicted: Sequence,
    request_ids: Sequence,
    feedback: pd.DataFrame,
    thresholds: DriftThresholds,
) -> dict[str, Any]:
    """Accuracy of the predictions that have labelled feedback (joined on request id)."""
    missing = [c for c in (FEEDBACK_ID_COLUMN, FEEDBACK_LABEL_COLUMN) if c not in feedback.columns]
    if missing:
        raise DataValidationError(
            f"feedback lacks column(s) {', '.join(missing)}; expected {FEEDBACK_ID_COLUMN} and "
            f"{FEEDBACK_LABEL_COLUMN}"
        )
    served = pd.DataFrame(
        {
            FEEDBACK_ID_COLUMN: np.asarray(request_ids).astype(str),
            "predicted": np.asarray(predicted, dtype=object).astype(str),
        }
    ).drop_duplicates(FEEDBACK_ID_COLUMN, keep="last")
    truth = feedback[[FEEDBACK_ID_COLUMN, FEEDBACK_LABEL_COLUMN]].astype(str)
    truth = truth.drop_duplicates(FEEDBACK_ID_COLUMN, keep="last")
    joined = served.merge(truth, on=FEEDBACK_ID_COLUMN, how="inner")
    rows = len(joined)
    accuracy = float((joined["predicted"] == joined[FEEDBACK_LABEL_COLUMN]).mean()) if rows else math.nan
    champion = reference.test_accuracy
    bar = None if champion is None else champion - thresholds.accuracy_tolerance
    enough = rows >= thresholds.min_feedback_rows
    below = bool(enough and bar is not None and accuracy < bar)
    return {
        "rows": rows,
        "accuracy": accuracy,
        "champion_test_accuracy": champion,
        "minimum": bar,
        "enough_feedback": enough,
        "below_minimum": below,
    }


def detect_drift(
    reference: Reference,
    current: pd.DataFrame,
    *,
    predicted_labels: Sequence | None = None,
    request_ids: Sequence | None = None,
    feedback: pd.DataFrame | None = None,
    thresholds: DriftThresholds | None = None,
) -> DriftSummary:
    """Compare a window of live rows with the reference and decide whether to retrain.

    `current` must hold every reference column (other columns, such as a label or request id,
    are ignored). `predicted_labels` (one per row) enable the label-mix check; with `feedback`
    (columns `request_id`, `label`) and `request_ids` (one per row; default: the `request_id`
    column of `current`) the live accuracy is checked against the champion's test accuracy.
    """
    thresholds = thresholds or DriftThresholds()
    missing = [c for c in reference.columns if c not in current.columns]
    if missing:
        raise DataValidationError(
            f"the window lacks {len(missing)} reference column(s), first {missing[0]!r}; "
            "expected the columns the champion was trained on"
        )
    if len(current) < 2:
        raise DataValidationError(f"the window has {len(current)} row(s); drift needs at least 2")
    values = _numeric_values(current[reference.columns], "window")
    notes: list[str] = []

    ks = stats.ks_2samp(reference.sample, values, axis=0, method="asymp")
    ks_stat = np.nan_to_num(np.asarray(ks.statistic, dtype=np.float64), nan=0.0)
    p_values = np.nan_to_num(np.asarray(ks.pvalue, dtype=np.float64), nan=1.0)
    p_adjusted = benjamini_hochberg(p_values)
    current_shares = bin_counts(values, reference.edges) / len(values)
    psi = population_stability_index(reference.shares, current_shares)
    drifted = (p_adjusted < thresholds.alpha) & (psi >= thresholds.psi_floor)
    columns = pd.DataFrame(
        {
            "column": reference.columns,
            "ks_statistic": ks_stat,
            "p_value": p_values,
            "p_adjusted": p_adjusted,
            "psi": psi,
            "drifted": drifted,
            "reference_mean": reference.mean,
            "current_mean": values.mean(axis=0),
        }
    )
    share = float(drifted.mean())
    reasons = []
    if share >= thresholds.share_threshold:
        reasons.append(
            f"{int(drifted.sum())} of {drifted.size} feature columns drifted ({share:.1%}, threshold "
            f"{thresholds.share_threshold:.0%})"
        )

    label_drift = None
    if predicted_labels is not None:
        if len(predicted_labels) != len(current):
            raise DataValidationError(
                f"{len(predicted_labels)} predicted labels for a window of {len(current)} rows"
            )
        label_drift = _label_drift(reference, predicted_labels, thresholds)
        if label_drift["drifted"]:
            reasons.append(
                f"the predicted-label mix drifted (chi-square p={label_drift['p_value']:.2g}, "
                f"PSI {label_drift['psi']:.2f})"
            )
    else:
        notes.append("no predicted labels: the label mix was not checked")

    live = None
    if feedback is not None:
        if predicted_labels is None:
            raise DataValidationError("feedback was given without the predicted labels it grades")
        if request_ids is None:
            if FEEDBACK_ID_COLUMN not in current.columns:
                raise DataValidationError(
                    f"feedback was given but the window has no {FEEDBACK_ID_COLUMN} column to join it on"
                )
            request_ids = current[FEEDBACK_ID_COLUMN].to_numpy()
        live = _live_accuracy(reference, predicted_labels, request_ids, feedback, thresholds)
        if live["below_minimum"]:
            reasons.append(
                f"live accuracy {live['accuracy']:.3f} on {live['rows']} labelled rows is below the "
                f"champion's test accuracy {live['champion_test_accuracy']:.3f} minus "
                f"{thresholds.accuracy_tolerance:g}"
            )
        elif not live["enough_feedback"]:
            notes.append(
                f"only {live['rows']} labelled row(s) matched (at least {thresholds.min_feedback_rows} "
                "needed): live accuracy not judged"
            )
        elif live["champion_test_accuracy"] is None:
            notes.append("the reference has no champion test accuracy: live accuracy not judged")

    return DriftSummary(
        retrain=bool(reasons),
        reasons=reasons,
        rows=len(values),
        reference_rows=int(reference.sample.shape[0]),
        drifted_share=share,
        drifted_columns=[c for c, d in zip(reference.columns, drifted, strict=True) if d],
        columns=columns,
        thresholds=thresholds,
        label_drift=label_drift,
        live_accuracy=live,
        notes=notes,
    )


def drift_share_over_time(
    reference: Reference,
    current: pd.DataFrame,
    periods: Sequence,
    *,
    thresholds: DriftThresholds | None = None,
    min_rows: int = 30,
) -> list[tuple[str, float]]:
    """Share of drifted feature columns in each period of a window, oldest first.

    `periods` names each row's period (e.g. the day of its request); periods with fewer than
    `min_rows` rows are left out (too few rows to test). The result feeds the report's
    share-over-time figure (`write_drift_report(..., history=...)`).
    """
    if len(periods) != len(current):
        raise DataValidationError(f"{len(periods)} period names for a window of {len(current)} rows")
    keys = pd.Series(np.asarray(periods), index=current.index)
    shares = []
    for name, rows in current.groupby(keys, sort=True):
        if len(rows) >= min_rows:
            shares.append((str(name), detect_drift(reference, rows, thresholds=thresholds).drifted_share))
    return shares
