"""Drift monitoring: the champion's training reference, drift statistics, the retrain decision, reports.

    reference = build_reference(train_features, train_labels, train_predictions, test_accuracy=0.93)
    reference.save(folder)                       # logged with the training run
    summary = detect_drift(Reference.load(folder), window, predicted_labels=..., feedback=...,
                           thresholds=DriftThresholds.from_settings(get_settings()))
    write_drift_report(summary, reference, window, out_dir)   # drift.json + drift_report.html

`scenarios` draws unchanged and shifted batches from the sample generator for tests and demos.
"""

from modules.monitoring.drift import (
    FEEDBACK_ID_COLUMN,
    FEEDBACK_LABEL_COLUMN,
    DriftSummary,
    DriftThresholds,
    benjamini_hochberg,
    detect_drift,
    drift_share_over_time,
    population_stability_index,
)
from modules.monitoring.reference import Reference, build_reference
from modules.monitoring.report import write_drift_report

__all__ = [
    "FEEDBACK_ID_COLUMN",
    "FEEDBACK_LABEL_COLUMN",
    "DriftSummary",
    "DriftThresholds",
    "Reference",
    "benjamini_hochberg",
    "build_reference",
    "detect_drift",
    "drift_share_over_time",
    "population_stability_index",
    "write_drift_report",
]
