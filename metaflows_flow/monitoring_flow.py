"""MonitoringFlow: is the champion still seeing what it was trained on? Drift report and a retrain decision.

    python metaflows_flow/monitoring_flow.py run                          # the prediction log's last rows
    python metaflows_flow/monitoring_flow.py run --data-path batch.csv    # or a CSV of feature rows
    python metaflows_flow/monitoring_flow.py run --feedback labels.csv    # request_id,label: live accuracy

It needs neither the training data nor the training flow: the reference was logged with the
champion's training run. The decision is printed, logged to MLflow and written to
reports/monitoring/drift.json; `make monitor FAIL_ON_DRIFT=1` turns `retrain: yes` into exit 3.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from metaflow import FlowSpec, Parameter, card, current, exit_hook, step

from metaflows_flow.flow_helpers import SplitDataSteps, flow_settings, run_flow, runtime_tags, tracked
from modules.settings import get_settings

SETTINGS = flow_settings()


@exit_hook(on_error=["metaflows_flow.flow_helpers.close_failed_flow"])
class MonitoringFlow(FlowSpec, SplitDataSteps):
    """Compare a window of the champion's inputs with its training reference and decide whether to retrain."""

    family = Parameter(
        "family",
        default="svm",
        help="model family whose champion is checked (svm, dnn, logistic, ...: the registry's)",
    )
    trained_on = Parameter(
        "trained-on",
        default=str(SETTINGS.data_path),
        help="dataset the champion was trained on: it names the registered model (default: DATA_PATH)",
    )
    data_path = Parameter(
        "data-path", default="", help="CSV of feature rows to check (default: the prediction log)"
    )
    feedback = Parameter(
        "feedback", default="", help="CSV of request_id,label: true labels of logged requests"
    )
    window_rows = Parameter("window-rows", default=2000, type=int, help="most recent logged rows to check")

    @card(type="blank", id="drift")
    @tracked
    @step
    def start(self):
        """Download the champion's reference, score the window with the champion, test every feature for drift."""
        from metaflow.cards import Image, Markdown, Table

        from modules.monitoring.check import check_champion
        from modules.tracking import client as tracking

        settings = self._settings()
        out_dir = settings.reports_dir / "monitoring"
        result = check_champion(
            settings,
            family=self.family,
            window_rows=self.window_rows,
            out_dir=out_dir,
            data_path=Path(self.data_path) if self.data_path else None,
            feedback_path=Path(self.feedback) if self.feedback else None,
        )
        self.decision = {"retrain": result.summary.retrain, "reasons": result.summary.reasons}
        self.model_name, self.model_version = result.model_name, result.version
        self.drift = result.summary.to_dict()
        pathspec = f"{current.flow_name}/{current.run_id}"
        tags = {
            "metaflow.pathspec": pathspec,
            "monitoring.model_name": result.model_name,
            "monitoring.model_version": result.version,
            "monitoring.retrain": str(result.summary.retrain).lower(),
            "git.commit": tracking.git_commit(),
            # Names the process running the flow, so the next run can close this one if it died.
            **runtime_tags(),
        }
        self.mlflow_run_id = tracking.start_parent_run(settings, pathspec, tags)
        with tracking.reopen_run(self.mlflow_run_id):
            tracking.log_params({"window": result.window_source, "family": self.family})
            tracking.log_metrics(result.summary.metrics())
            tracking.log_dict(self.drift, "drift.json")
            tracking.log_text((out_dir / "drift_report.html").read_text(), "drift_report.html")
        print(f"{result.model_name} v{result.version} on {result.window_source}: {result.decision_line()}")
        print(f"Drift report: {out_dir / 'drift_report.html'}")

        current.card.append(
            Markdown(f"# Drift of {result.model_name} v{result.version}\n\n{result.window_source}")
        )
        current.card.append(Markdown(f"**{result.decision_line()}**"))
        top = result.summary.top_columns(10)
        current.card.append(
            Table(
                [
                    [row.column, f"{row.psi:.3f}", f"{row.p_adjusted:.2g}", "yes" if row.drifted else "no"]
                    for row in top.itertuples()
                ],
                headers=["feature", "PSI", "corrected p", "drifted"],
            )
        )
        for png in sorted(out_dir.glob("*.png")):
            current.card.append(Image(png.read_bytes(), label=png.name))
        self.next(self.end)

    @tracked
    @step
    def end(self):
        """Close the monitoring run and print the decision."""
        self._finish_parent_run()
        verdict = "yes" if self.decision["retrain"] else "no"
        print(f"retrain: {verdict} ({'; '.join(self.decision['reasons']) or 'no threshold crossed'})")

    def _settings(self):
        return get_settings().for_data(self.trained_on)


if __name__ == "__main__":
    run_flow(MonitoringFlow)
