"""MLPipelineFlow: train every tuned model family, evaluate, register, and promote by alias.

    python metaflows_flow/ml_pipeline_flow.py run                              # latest TuningFlow run
    python metaflows_flow/ml_pipeline_flow.py run --tuning-flow-run-id 1234    # a given one

It reuses the tuning run's dataset (checked by digest), split and best settings, so the
held-out rows were never seen by tuning or training. It trains the families that tuning run
tuned, one `train` step per family (a Metaflow `foreach`; MLflow step runs `train_<family>`).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from metaflow import FlowSpec, Parameter, card, current, exit_hook, retry, step, trigger_on_finish

from metaflows_flow.flow_helpers import SplitDataSteps, family_step, run_flow, tracked
from modules.errors import ConfigurationError

# Every step is a new process: each imports only what it uses (MLflow, scikit-learn and
# TensorFlow cost seconds each), so the light steps start fast.


def parse_overrides(text: str, families: list[str] | None = None) -> dict[str, dict]:
    """`{"svm": {...}, "dnn": {...}}` from the --params-override parameter (empty: none).

    Every key must be one of `families` (default: every registered family), each value an object.
    """
    from modules.models.families import family_names

    if not text:
        return {}
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"--params-override is not valid JSON ({exc.msg})") from None
    known = family_names() if families is None else families
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
        raise ConfigurationError('--params-override must look like {"svm": {"C": 1.0}, "dnn": {"epochs": 5}}')
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ConfigurationError(
            f"--params-override names {', '.join(unknown)}, not a family of this run ({', '.join(known)})"
        )
    return overrides


# Every step is @tracked: bounded tracking calls, one line on failure, the parent run's state kept
# true (FAILED on failure, re-opened by `resume`, FINISHED by `end`). The exit hook closes the runs
# of a failed flow. Only the idempotent steps after training are retried after an outage.
# Named by module path: Metaflow runs the hook in a new process, from the directory the flow was
# started in (the project root is on PYTHONPATH, as `make` sets it).
# Deployed on Argo Workflows (`make deploy-argo`), a finished TuningFlow starts this flow on its
# own run; run locally, the decorator does nothing and `--tuning-flow-run-id` decides.
@trigger_on_finish(flow="TuningFlow")
@exit_hook(on_error=["metaflows_flow.flow_helpers.close_failed_flow"])
class MLPipelineFlow(FlowSpec, SplitDataSteps):
    """Refit the best models on the training part, evaluate on held-out rows, register, promote."""

    tuning_flow_run_id = Parameter(
        "tuning-flow-run-id",
        default="latest",
        help="TuningFlow run id to train from; `latest` = latest successful",
    )
    params_override = Parameter(
        "params-override",
        default="",
        help='JSON that replaces tuned settings per family, e.g. {"svm": {"C": 0.5}, "dnn": {"epochs": 3}}',
    )

    @tracked
    @step
    def start(self):
        """Check the tracking server, find the tuning run, reuse its dataset, split and best settings."""
        from metaflows_flow.tuning_runs import find_tuning_run
        from modules.data.provenance import verify_for_environment
        from modules.models.families import get_family, select_families
        from modules.tracking import client as tracking

        parse_overrides(self.params_override)  # bad JSON fails before the tuning run is looked up
        # Triggered by a finished TuningFlow on Argo: train from that very run.
        trigger = current.get("trigger")  # absent when not triggered
        tuning = find_tuning_run(trigger.run.id if trigger else self.tuning_flow_run_id)
        self.tuning_pathspec = tuning.pathspec
        artifacts = tuning.data
        if "dataset" not in artifacts:
            raise ConfigurationError(
                f"{tuning.pathspec} was made by an older version of TuningFlow (no dataset artifact); "
                "run `make tune` again"
            )
        self.data_path = artifacts.data_path
        self.label_column = artifacts.label_column
        settings = self._settings()
        self.tracking_uri = tracking.connect(settings)
        self.seed = artifacts.seed
        self.split = artifacts.split
        self.data_summary = artifacts.data_summary
        self.pinned_settings = artifacts.pinned_settings
        self.dataset = artifacts.dataset
        # The data was hashed when TuningFlow loaded it; production checks that digest again here.
        self.data_check = verify_for_environment(
            settings, data_path=self.data_path, digest=self.dataset.digest, source=self.dataset.source
        )
        # The families the tuning run tuned (each still registered), in the registry's order.
        self.families = select_families(list(artifacts.best), what=self.tuning_pathspec)
        self.best = {family: dict(artifacts.best[family]) for family in self.families}
        for family, values in parse_overrides(self.params_override, self.families).items():
            self.best[family] = get_family(family).apply_override(self.best[family], values)
        self._say_if_settings_changed(settings)
        print(f"Training from {self.tuning_pathspec}: {self.best}")
        print(f"Data check: {self.data_check}")
        pathspec = f"{current.flow_name}/{current.run_id}"
        self.run_tags = tracking.run_tags(
            pathspec,
            dataset_digest=self.data_summary["digest"],
            dataset_source=self.data_summary["source"],
            split_protocol=self.data_summary["split_protocol"],
        )
        self.run_tags["tuning.pathspec"] = self.tuning_pathspec
        self.mlflow_run_id = self._start_parent_run(settings)
        with tracking.reopen_run(self.mlflow_run_id):
            tracking.log_params(
                {
                    "tuning_run": self.tuning_pathspec,
                    "params_override": self.params_override or "none",
                    "data_check": self.data_check,
                    "promotion_min_margin": settings.promotion_min_margin,
                    "allow_schema_change": settings.allow_schema_change,
                    **self.pinned_settings,
                }
            )
            tracking.log_dict(self.best, "best_params.json")
        self.next(self.train, foreach="families")

    @family_step()
    @tracked
    @step
    def train(self):
        """Refit one family's best settings on the whole training part, evaluate on held-out rows, log the model (not registered yet)."""
        from modules.models.families import get_family
        from modules.tracking import client as tracking

        self.family = self.input
        family = get_family(self.family)
        data = self._data()
        # Inside the runs, so a failed fit marks them FAILED instead of leaving them open.
        with tracking.step_run(self.mlflow_run_id, f"train_{self.family}", self._step_tags()) as run:
            trained = family.train(data, self.best[self.family], self._training_context(), cv=self._cv(data))
            if trained.history:
                tracking.log_history(trained.history)
            model_uri = family.log_model(trained, data.X_test.head(5))
            self.trained = self._record(trained, data, run.info.run_id, model_uri)
        self.next(self.join)

    @retry(times=1, minutes_between_retries=1)
    @tracked
    @step
    def join(self, inputs):
        """Every branch succeeded: register each model, then let the gate decide who is `champion`."""
        from modules.models.promotion import Candidate, Schema
        from modules.tracking import client as tracking

        # Keyed by family, in the order the families were listed (branches finish in any order).
        by_family = {branch.family: branch.trained for branch in inputs}
        self.models = {family: by_family[family] for family in inputs[0].families}
        self.merge_artifacts(inputs, exclude=["family", "trained"])
        settings = self._settings()
        data = self._data()
        schema = Schema.of(list(data.dataset.features.columns), data.classes)
        self.promotions = []
        for family, result in self.models.items():
            # Keyed by the run that logged and evaluated the model: a re-run join reuses the
            # version, a re-trained model (resume from its step) gets its own.
            version = tracking.register_model(
                result["model_uri"],
                result["model_name"],
                idempotency_key=f"{family}/{result['run_id']}",
                tags={**self._flow_tags(), **schema.to_tags()},
            )
            self.models[family] = {**result, "version": version}
            candidate = Candidate(
                version=version,
                accuracy=result["report"]["evaluation"]["accuracy"],
                baseline_accuracy=result["report"]["baseline"]["accuracy"],
                schema=schema,
                # The digest was computed once, when TuningFlow loaded these very rows.
                data_verified=True,
                data_check=f"sha256 {data.dataset.digest[:12]}... recorded at load; {self.data_check}",
            )
            promotion = tracking.promote_through_gate(
                family,
                result["model_name"],
                candidate,
                score_model=lambda uri: tracking.accuracy_of(uri, data.X_test, data.y_test),
                min_margin=settings.promotion_min_margin,
                allow_schema_change=settings.allow_schema_change,
                owner=current.pathspec,
                lease_ttl_s=settings.promotion_lease_ttl_s,
                lease_wait_s=settings.promotion_lease_wait_s,
            )
            state = "champion" if promotion.promoted else "stays challenger"
            print(f"{family}: {result['model_name']} v{version} {state}: {promotion.reason}")
            self.promotions.append(promotion.to_dict())
        self.next(self.report)

    @card(type="blank", id="report")
    @retry(times=1, minutes_between_retries=1)
    @tracked
    @step
    def report(self):
        """Write the card, an HTML report logged to MLflow, and reports/promotion.json."""
        from metaflow.cards import Image, Markdown, Table

        from modules.files import write_json_atomically
        from modules.models.families import get_family
        from modules.models.reports import (
            FIGURE_HEADERS,
            GATE_HEADERS,
            PROMOTION_HEADERS,
            RECORDING_HEADERS,
            figure_rows,
            gate_rows,
            promotion_rows,
            recording_rows,
            training_report_html,
        )
        from modules.models.scoring import Evaluation, plot_confusion_matrix
        from modules.tracking import client as tracking

        families = self.models
        images = {}
        with tempfile.TemporaryDirectory() as tmp:
            for family, info in families.items():
                path = Path(tmp) / f"confusion_matrix_{family}.png"
                plot_confusion_matrix(
                    Evaluation.model_validate(info["report"]["evaluation"]),
                    path,
                    title=f"{get_family(family).title} on held-out rows ({info['model_name']} v{info['version']})",
                )
                images[path.name] = path.read_bytes()
        title = f"{current.flow_name}/{current.run_id} (from {self.tuning_pathspec})"
        report = training_report_html(title, self.data_summary, families, self.promotions, images)
        self.promotion_summary = summary = self._promotion_summary(families)
        with tracking.reopen_run(self.mlflow_run_id):
            tracking.log_text(report, "training_report.html")
            for name, png in images.items():
                tracking.log_image_bytes(png, name)
            tracking.log_dict(summary, "promotion.json")
            tracking.log_metrics(
                {
                    f"{f}_{key}": value
                    for f in families
                    for key, value in families[f]["metrics"].items()
                    if key in ("test_accuracy", "baseline_accuracy", "margin_over_baseline", "leak_gap")
                }
                | {f"{p['family']}_promoted": float(p["promoted"]) for p in self.promotions}
            )
        self.promotion_file = str(
            write_json_atomically(self._settings().reports_dir / "promotion.json", summary)
        )

        current.card.append(Markdown(f"# Training report\n\n{title}\n\nData check: {self.data_check}"))
        current.card.append(Markdown("## Held-out figures, with their uncertainty and a baseline"))
        current.card.append(Table(figure_rows(families), headers=FIGURE_HEADERS))
        current.card.append(Markdown("## Promotion"))
        current.card.append(Table(promotion_rows(self.promotions), headers=PROMOTION_HEADERS))
        current.card.append(Table(gate_rows(self.promotions), headers=GATE_HEADERS))
        recordings = recording_rows(families)
        if recordings:
            current.card.append(Markdown("## Per held-out recording"))
            current.card.append(Table(recordings, headers=RECORDING_HEADERS))
        for name, png in images.items():
            current.card.append(Image(png, label=name))
        for family, info in families.items():
            current.card.append(
                Markdown(f"## {get_family(family).title}\n```\n{info['classification_report']}\n```")
            )
        self.next(self.end)

    @retry(times=1, minutes_between_retries=1)
    @tracked
    @step
    def end(self):
        """Close the parent run FINISHED and say where the models and reports are."""
        self._finish_parent_run()
        for promotion in self.promotions:
            state = "is now champion" if promotion["promoted"] else "NOT PROMOTED, stays challenger"
            print(f"{promotion['model_name']} v{promotion['new_version']} {state}: {promotion['reason']}")
        print(f"Promotion summary: {self.promotion_file}")

    # -- helpers of this flow's steps (kept tiny; logic lives in modules/) --
    def _cv(self, data):
        from modules.models.training import cross_validation_of

        best = self.best[self.family]
        return cross_validation_of(data, best.get("cv_accuracy"), best.get("cv_std"), best.get("cv_folds", 0))

    def _training_context(self):
        """The tuning run's pinned settings (and today's epoch budget, for a DNN tuned without one)."""
        from modules.models.families import TuningContext

        settings = self._settings()
        return TuningContext(
            cv_folds=self.pinned_settings["cv_folds"],
            pca_variance=self.pinned_settings["pca_variance"],
            seed=self.seed,
            n_jobs=settings.svm_n_jobs,
            budgets={"dnn_max_epochs": settings.dnn_max_epochs},
        )

    def _say_if_settings_changed(self, settings) -> None:
        """The run trains with the tuning run's settings; say so when today's environment differs."""
        from modules.models.families import select_families

        now = {
            "pca_variance": settings.pca_variance,
            "cv_folds": settings.cv_folds,
            "test_size": settings.test_size,
            "model_families": ",".join(select_families(settings.model_families)),
        }
        # A tuning run older than MODEL_FAMILIES pinned no family list: nothing to compare.
        changed = {k: v for k, v in now.items() if self.pinned_settings.get(k, v) != v}
        for key, value in changed.items():
            print(
                f"note: {key} is {value!r} in today's settings but {self.pinned_settings.get(key)!r} in "
                f"{self.tuning_pathspec}; training uses the tuning run's value"
            )

    def _record(self, trained, data, child_run_id, model_uri) -> dict:
        """Log the held-out figures and the drift reference to the step's run; return what later steps need."""
        from modules.models.scoring import classification_report_text
        from modules.monitoring.check import log_training_reference
        from modules.tracking import client as tracking

        # MonitoringFlow compares what the model sees with these training rows, without the data.
        log_training_reference(
            data.X_train, data.y_train, test_accuracy=trained.evaluation.accuracy, seed=self.seed
        )

        family = trained.family
        tracking.log_params({**self.best[family]["params"], **trained.preprocessing}, prefix=f"{family}.")
        metrics = trained.report.metrics()
        tracking.log_metrics(metrics)
        tracking.log_dict(trained.report.model_dump(), "held_out_report.json")
        report = classification_report_text(trained.evaluation)
        tracking.log_text(report, "classification_report.txt")
        print(f"{family}: {trained.report.summary_line()}")
        return {
            "family": family,
            "model_name": self._settings().model_name(family),
            "version": None,
            "model_uri": model_uri,
            "run_id": child_run_id,
            "report": trained.report.model_dump(),
            "metrics": metrics,
            "classification_report": report,
        }

    def _promotion_summary(self, families) -> dict:
        """What reports/promotion.json holds: per family the figures, the gate's checks and its decision."""
        rows = []
        for p in self.promotions:
            report = families[p["family"]]["report"]
            rows.append(
                {
                    **p,
                    "test_accuracy": p["new_score"],
                    "champion_before_test_accuracy": p["champion_before_score"],
                    "macro_f1": report["evaluation"]["macro_f1"],
                    "roc_auc_ovr": report["evaluation"]["roc_auc_ovr"],
                    "baseline": report["baseline"],
                    "margin_over_baseline": report["margin_over_baseline"],
                    "interval": report["interval"],
                    "cross_validation": report["cross_validation"],
                    "leak_gap": report["leak_gap"],
                    "per_recording": report["per_recording"],
                    "per_class": report["evaluation"]["per_class"],
                }
            )
        return {
            "pathspec": f"{current.flow_name}/{current.run_id}",
            "tuning_run": self.tuning_pathspec,
            "data_check": self.data_check,
            "split_protocol": self.data_summary["split_protocol"],
            "families": rows,
        }


if __name__ == "__main__":
    run_flow(MLPipelineFlow)
