"""MLPipelineFlow: train the tuned SVM and DNN, evaluate, register, and promote by alias.

    python metaflows_flow/ml_pipeline_flow.py run                              # latest TuningFlow run
    python metaflows_flow/ml_pipeline_flow.py run --tuning-flow-run-id 1234    # a given one

It reuses the tuning run's dataset (checked by digest), split and best settings, so the
held-out rows were never seen by tuning or training.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from metaflow import FlowSpec, Parameter, card, current, step

from metaflows_flow.flow_helpers import SplitDataSteps
from modules.errors import ConfigurationError, fail_cleanly
from modules.settings import get_settings

# Every step is a new process: each imports only what it uses (MLflow, scikit-learn and
# TensorFlow cost seconds each), so the light steps start fast.

SETTINGS = get_settings()
FAMILIES = ("svm", "dnn")


def parse_overrides(text: str) -> dict[str, dict]:
    """`{"svm": {...}, "dnn": {...}}` from the --params-override parameter (empty: none)."""
    if not text:
        return {}
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"--params-override is not valid JSON ({exc.msg})") from None
    if not isinstance(overrides, dict) or set(overrides) - set(FAMILIES):
        raise ConfigurationError('--params-override must look like {"svm": {"C": 1.0}, "dnn": {"epochs": 5}}')
    return overrides


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
        help='JSON that replaces tuned settings, e.g. {"svm": {"C": 0.5}, "dnn": {"epochs": 3}}',
    )

    @step
    def start(self):
        """Check the tracking server, find the tuning run, reuse its data, split and best settings."""
        from metaflows_flow.tuning_runs import find_tuning_run
        from modules import tracking
        from modules.pipeline import check_unchanged

        with fail_cleanly():
            self.tracking_uri = tracking.connect(SETTINGS)
            overrides = parse_overrides(self.params_override)
            tuning = find_tuning_run(self.tuning_flow_run_id)
            self.tuning_pathspec = tuning.pathspec
            artifacts = tuning.data
            self.data_path = artifacts.data_path
            self.label_column = artifacts.label_column
            self.seed = artifacts.seed
            self.split = artifacts.split
            self.data_summary = artifacts.data_summary
            self.best = {family: dict(artifacts.best[family]) for family in FAMILIES}
            for family, values in overrides.items():
                if family == "dnn" and "epochs" in values:
                    self.best["dnn"]["epochs"] = values["epochs"]
                extra = {k: v for k, v in values.items() if not (family == "dnn" and k == "epochs")}
                self.best[family]["params"] = {**self.best[family]["params"], **extra}
            check_unchanged(self.data_path, self.data_summary["digest"])
        print(f"Training from {self.tuning_pathspec}: {self.best}")
        pathspec = f"{current.flow_name}/{current.run_id}"
        self.run_tags = tracking.run_tags(
            pathspec,
            dataset_digest=self.data_summary["digest"],
            dataset_source=self.data_summary["source"],
            split_protocol=self.data_summary["split_protocol"],
        )
        self.run_tags["tuning.pathspec"] = self.tuning_pathspec
        self.mlflow_run_id = tracking.start_parent_run(SETTINGS, pathspec, self.run_tags)
        with tracking.reopen_run(self.mlflow_run_id):
            tracking.log_params(
                {"tuning_run": self.tuning_pathspec, "params_override": self.params_override or "none"}
            )
            tracking.log_dict(self.best, "best_params.json")
        self.next(self.train_svm, self.train_dnn)

    @step
    def train_svm(self):
        """Refit the best SVM on the whole training part, evaluate on held-out rows, register it."""
        from modules import tracking
        from modules.pipeline import train_svm

        tracking.connect(SETTINGS)
        data = self._reload()
        # Inside the runs, so a failed fit marks them FAILED instead of leaving them open.
        with tracking.step_run(self.mlflow_run_id, "train_svm", self._step_tags()) as run:
            trained = train_svm(
                data, self.best["svm"]["params"], pca_variance=SETTINGS.pca_variance, seed=self.seed
            )
            model_uri = tracking.log_sklearn_model(trained.model, data.X_test.head(5))
            self.svm = self._record(
                "svm", run.info.run_id, model_uri, trained.evaluation, trained.preprocessing
            )
        self.next(self.join)

    @step
    def train_dnn(self):
        """Refit the best DNN on the whole training part, evaluate on held-out rows, register it."""
        from modules import tracking
        from modules.pipeline import train_dnn

        tracking.connect(SETTINGS)
        data = self._reload()
        with tracking.step_run(self.mlflow_run_id, "train_dnn", self._step_tags()) as run:
            trained = train_dnn(
                data,
                self.best["dnn"]["params"],
                epochs=int(self.best["dnn"].get("epochs") or SETTINGS.dnn_max_epochs),
                pca_variance=SETTINGS.pca_variance,
                seed=self.seed,
            )
            tracking.log_history(trained.history)
            model_uri = tracking.log_dnn_model(
                trained.preprocessor, trained.model, data.classes, data.X_test.head(5)
            )
            self.dnn = self._record(
                "dnn", run.info.run_id, model_uri, trained.evaluation, trained.preprocessing
            )
        self.next(self.join)

    @step
    def join(self, inputs):
        """Promote each new version to `champion` only if it beats the champion on the same held-out rows."""
        from modules import tracking

        self.merge_artifacts(inputs)
        tracking.connect(SETTINGS)
        data = self._reload()
        self.promotions = []
        for family in FAMILIES:
            result = getattr(self, family)
            promotion = tracking.promote_if_better(
                family,
                result["model_name"],
                result["version"],
                result["evaluation"]["accuracy"],
                score_model=lambda uri: tracking.accuracy_of(uri, data.X_test, data.y_test),
            )
            print(f"{family}: {promotion.reason}")
            self.promotions.append(promotion.to_dict())
        self.next(self.report)

    @card(type="blank", id="report")
    @step
    def report(self):
        """Write the card, an HTML report logged to MLflow, and reports/promotion.json."""
        from metaflow.cards import Image, Markdown, Table

        from modules import tracking
        from modules.prediction import Evaluation, plot_confusion_matrix
        from modules.reports import training_report_html

        families = {family: getattr(self, family) for family in FAMILIES}
        images = {}
        with tempfile.TemporaryDirectory() as tmp:
            for family, info in families.items():
                path = Path(tmp) / f"confusion_matrix_{family}.png"
                plot_confusion_matrix(
                    Evaluation.model_validate(info["evaluation"]),
                    path,
                    title=f"{family.upper()} on held-out rows ({info['model_name']} v{info['version']})",
                )
                images[path.name] = path.read_bytes()
        title = f"{current.flow_name}/{current.run_id} (from {self.tuning_pathspec})"
        report = training_report_html(title, self.data_summary, families, self.promotions, images)
        tracking.connect(SETTINGS)
        with tracking.reopen_run(self.mlflow_run_id):
            tracking.log_text(report, "training_report.html")
            for name, png in images.items():
                tracking.log_image_bytes(png, name)
            tracking.log_dict({"promotions": self.promotions}, "promotion.json")
            tracking.log_metrics(
                {f"{f}_test_accuracy": families[f]["evaluation"]["accuracy"] for f in FAMILIES}
            )
        self.promotion_file = self._write_promotion_file(families)

        current.card.append(Markdown(f"# Training report\n\n{title}"))
        rows = [
            [
                f,
                f"{families[f]['evaluation']['accuracy']:.4f}",
                f"{families[f]['evaluation']['macro_f1']:.4f}",
                f"v{p['new_version']}",
                "yes" if p["promoted"] else "no",
                p["reason"],
            ]
            for f, p in zip(FAMILIES, self.promotions, strict=True)
        ]
        headers = ["model", "test accuracy", "macro F1", "version", "champion", "why"]
        current.card.append(Table(rows, headers=headers))
        for name, png in images.items():
            current.card.append(Image(png, label=name))
        for family, info in families.items():
            current.card.append(Markdown(f"## {family.upper()}\n```\n{info['classification_report']}\n```"))
        self.next(self.end)

    @step
    def end(self):
        """Say where the models and reports are."""
        for promotion in self.promotions:
            state = "is now champion" if promotion["promoted"] else "stays challenger"
            print(f"{promotion['model_name']} v{promotion['new_version']} {state}: {promotion['reason']}")
        print(f"Promotion summary: {self.promotion_file}")

    # -- helpers of this flow's steps (kept tiny; logic lives in modules/) --
    def _record(self, family, child_run_id, model_uri, evaluation, preprocessing) -> dict:
        """Log the evaluation, register the model once per flow run, return what later steps need."""
        from modules import tracking
        from modules.prediction import classification_report_text

        name = SETTINGS.model_name(family)
        tracking.log_params({**self.best[family]["params"], **preprocessing}, prefix=f"{family}.")
        tracking.log_metrics(
            {
                "test_accuracy": evaluation.accuracy,
                "test_macro_f1": evaluation.macro_f1,
                "test_roc_auc": evaluation.roc_auc_ovr,
            }
        )
        tracking.log_dict(evaluation.model_dump(), "evaluation.json")
        report = classification_report_text(evaluation)
        tracking.log_text(report, "classification_report.txt")
        version = tracking.register_model(
            model_uri,
            name,
            # A resumed run keeps its origin's key: re-running a step never registers twice.
            idempotency_key=f"{current.flow_name}/{current.origin_run_id or current.run_id}/{family}",
            tags={**self.run_tags, "test_accuracy": f"{evaluation.accuracy:.6f}"},
        )
        print(f"{family}: held-out accuracy {evaluation.accuracy:.4f}, registered {name} v{version}")
        return {
            "model_name": name,
            "version": version,
            "model_uri": model_uri,
            "run_id": child_run_id,
            "evaluation": evaluation.model_dump(),
            "classification_report": report,
        }

    def _write_promotion_file(self, families) -> str:
        path = SETTINGS.reports_dir / "promotion.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [
            {
                **p,
                "test_accuracy": p["new_score"],
                "champion_before_test_accuracy": p["champion_before_score"],
                "macro_f1": families[p["family"]]["evaluation"]["macro_f1"],
                "roc_auc_ovr": families[p["family"]]["evaluation"]["roc_auc_ovr"],
            }
            for p in self.promotions
        ]
        payload = {
            "pathspec": f"{current.flow_name}/{current.run_id}",
            "tuning_run": self.tuning_pathspec,
            "families": rows,
        }
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.replace(path)
        return str(path)


if __name__ == "__main__":
    MLPipelineFlow()
