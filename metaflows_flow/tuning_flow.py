"""TuningFlow: tune an SVM and a DNN on one leakage-aware split, every trial tracked in MLflow.

    python metaflows_flow/tuning_flow.py run --data-path data/emotions.csv
    python metaflows_flow/tuning_flow.py run --help      # every parameter

The split made in `start` is stored as an artifact and reused by MLPipelineFlow.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Steps run as `python metaflows_flow/tuning_flow.py`: make the project importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from metaflow import FlowSpec, Parameter, card, current, exit_hook, retry, step

from metaflows_flow.flow_helpers import SplitDataSteps, run_flow, tracked
from modules.settings import SPLIT_PROTOCOLS, get_settings

# Every step is a new process: each imports only what it uses (MLflow, scikit-learn and
# TensorFlow cost seconds each), so the light steps start fast.

SETTINGS = get_settings()


# Every step is @tracked: bounded tracking calls, one line on failure, the parent run's state kept
# true (FAILED on failure, re-opened by `resume`, FINISHED by `end`). The exit hook closes the runs
# of a failed flow. Only the idempotent closing steps are retried after an outage.
# Named by module path: Metaflow runs the hook in a new process, from the directory the flow was
# started in (the project root is on PYTHONPATH, as `make` sets it).
@exit_hook(on_error=["metaflows_flow.flow_helpers.close_failed_flow"])
class TuningFlow(FlowSpec, SplitDataSteps):
    """Tune the SVM and the DNN in parallel on the training part of one split."""

    data_path = Parameter(
        "data-path", default=str(SETTINGS.data_path), help="CSV with features and a label column"
    )
    label_column = Parameter("label-column", default=SETTINGS.label_column, help="name of the label column")
    split_protocol = Parameter(
        "split-protocol",
        default=SETTINGS.split_protocol,
        help=f"one of {', '.join(SPLIT_PROTOCOLS)}: grouped by recording, random, or grouped when recordings exist",
    )
    svm_max_candidates = Parameter(
        "svm-max-candidates", default=SETTINGS.svm_max_candidates, type=int, help="SVM candidates to search"
    )
    dnn_max_trials = Parameter("dnn-max-trials", default=SETTINGS.dnn_max_trials, type=int, help="DNN trials")
    dnn_max_epochs = Parameter(
        "dnn-max-epochs", default=SETTINGS.dnn_max_epochs, type=int, help="most epochs per DNN trial"
    )
    seed = Parameter("seed", default=SETTINGS.seed, type=int, help="seed of the split, folds and searches")

    @tracked
    @step
    def start(self):
        """Check the tracking server, load, validate and hash the data once, vouch for it, split it once."""
        from modules.data.provenance import verify_for_environment
        from modules.models.training import prepare_data
        from modules.tracking import client as tracking

        settings = self._settings()
        self.tracking_uri = tracking.connect(settings)
        print(f"MLflow tracking: {self.tracking_uri}")
        data = prepare_data(
            self.data_path,
            self.label_column,
            protocol=self.split_protocol,
            test_size=settings.test_size,
            cv_folds_count=settings.cv_folds,
            seed=self.seed,
            missing=settings.missing_values,
        )
        # Before anything is tracked: production refuses data it cannot vouch for.
        self.data_check = verify_for_environment(
            settings, data_path=self.data_path, digest=data.dataset.digest, source=data.dataset.source
        )
        print(f"Data check: {self.data_check}")
        self.dataset = data.dataset
        self.data_summary = data.summary()
        self.split = data.split.to_dict()
        # The settings this run tuned with: MLPipelineFlow trains with these, not today's `.env`.
        self.pinned_settings = {
            "pca_variance": settings.pca_variance,
            "cv_folds": settings.cv_folds,
            "test_size": settings.test_size,
            "pipeline_env": settings.pipeline_env,
            "experiment_name": settings.experiment_name,
            "model_name_prefix": settings.model_name_prefix,
        }
        print(f"Data: {self.data_summary}")
        self.run_tags = tracking.run_tags(
            f"{current.flow_name}/{current.run_id}",
            dataset_digest=data.dataset.digest,
            dataset_source=data.dataset.source,
            split_protocol=data.split.protocol,
        )
        self.mlflow_run_id = self._start_parent_run(settings)
        with tracking.reopen_run(self.mlflow_run_id):
            tracking.log_params(
                {
                    "data_path": self.data_path,
                    "label_column": self.label_column,
                    "split_protocol": data.split.protocol,
                    "seed": self.seed,
                    "svm_max_candidates": self.svm_max_candidates,
                    "dnn_max_trials": self.dnn_max_trials,
                    "dnn_max_epochs": self.dnn_max_epochs,
                    "data_check": self.data_check,
                    **self.pinned_settings,
                }
            )
            tracking.log_dataset(
                data.dataset.features,
                data.dataset.labels,
                path=data.dataset.path,
                digest=data.dataset.digest,
                context="tuning",
            )
            tracking.log_dict(self.split, "split.json")
        self.next(self.tune_svm, self.tune_dnn)

    @tracked
    @step
    def tune_svm(self):
        """Search the SVM (C, gamma, kernel) by successive halving on the split's CV folds."""
        from modules.models.training import run_svm_tuning
        from modules.tracking import client as tracking

        settings = self._settings()
        with tracking.step_run(self.mlflow_run_id, "tune_svm", self._step_tags()):
            result = run_svm_tuning(
                self._data(),
                cv_folds_count=self.pinned_settings["cv_folds"],
                max_candidates=self.svm_max_candidates,
                n_jobs=settings.svm_n_jobs,
                pca_variance=self.pinned_settings["pca_variance"],
                seed=self.seed,
            )
            tracking.log_params(result.best_params, prefix="best.")
            tracking.log_metrics(
                {
                    "cv_accuracy_mean": result.cv_mean,
                    "cv_accuracy_std": result.cv_std,
                    "search_seconds": result.elapsed_s,
                }
            )
            tracking.log_dict(result.to_dict(), "svm_search.json")
        self.svm_result = result.to_dict()
        self.next(self.join)

    @tracked
    @step
    def tune_dnn(self):
        """Search the DNN architecture with keras-tuner (each trial a nested MLflow run), then cross-validate the best."""
        from modules.models.training import run_dnn_tuning
        from modules.tracking import client as tracking

        with tracking.step_run(self.mlflow_run_id, "tune_dnn", self._step_tags()):
            result = run_dnn_tuning(
                self._data(),
                cv_folds_count=self.pinned_settings["cv_folds"],
                max_trials=self.dnn_max_trials,
                max_epochs=self.dnn_max_epochs,
                pca_variance=self.pinned_settings["pca_variance"],
                seed=self.seed,
                on_trial_end=self._log_trial,
            )
            tracking.log_params(result.best_hyperparameters, prefix="best.")
            tracking.log_metrics(
                {
                    "best_val_accuracy": result.best_val_accuracy,
                    "cv_accuracy_mean": result.cv_mean,
                    "cv_accuracy_std": result.cv_std,
                    "search_seconds": result.elapsed_s,
                }
            )
            tracking.log_dict(result.to_dict(), "dnn_search.json")
        self.dnn_result = result.to_dict()
        self.next(self.join)

    @card(type="blank", id="tuning")
    @retry(times=1, minutes_between_retries=1)
    @tracked
    @step
    def join(self, inputs):
        """Keep the best settings of each family and show every candidate in a card."""
        from metaflow.cards import Image, Markdown, Table

        from modules.models.dnn import DnnTuningResult, best_epoch
        from modules.models.reports import (
            DNN_TABLE_HEADERS,
            SVM_TABLE_HEADERS,
            dnn_trial_rows,
            figure_png,
            plot_search_scores,
            svm_candidate_rows,
        )
        from modules.tracking import client as tracking

        self.merge_artifacts(inputs)
        folds = self.pinned_settings["cv_folds"]
        self.best = {
            "svm": {
                "params": self.svm_result["best_params"],
                "cv_accuracy": self.svm_result["cv_mean"],
                "cv_std": self.svm_result["cv_std"],
                "cv_folds": folds,
            },
            "dnn": {
                "params": self.dnn_result["best_hyperparameters"],
                "val_accuracy": self.dnn_result["best_val_accuracy"],
                "cv_accuracy": self.dnn_result["cv_mean"],
                "cv_std": self.dnn_result["cv_std"],
                "cv_folds": folds,
                "epochs": best_epoch(DnnTuningResult.from_dict(self.dnn_result)),
            },
        }
        with tracking.reopen_run(self.mlflow_run_id):
            tracking.log_metrics(
                {
                    "svm_cv_accuracy": self.best["svm"]["cv_accuracy"],
                    "dnn_val_accuracy": self.best["dnn"]["val_accuracy"],
                    "dnn_cv_accuracy": self.best["dnn"]["cv_accuracy"],
                }
            )
            tracking.log_dict(self.best, "best_params.json")
        current.card.append(
            Markdown(
                f"# Tuning results\n\nData: `{self.data_summary['data_path']}`, "
                f"split protocol **{self.data_summary['split_protocol']}**, "
                f"{self.data_summary['train_rows']} training rows."
            )
        )
        current.card.append(Image(figure_png(plot_search_scores(self.svm_result, self.dnn_result))))
        current.card.append(Markdown("## SVM candidates"))
        current.card.append(Table(svm_candidate_rows(self.svm_result), headers=SVM_TABLE_HEADERS))
        current.card.append(Markdown("## DNN trials"))
        current.card.append(Table(dnn_trial_rows(self.dnn_result), headers=DNN_TABLE_HEADERS))
        self.next(self.end)

    @retry(times=1, minutes_between_retries=1)
    @tracked
    @step
    def end(self):
        """Close the parent run FINISHED and print the best settings; MLPipelineFlow picks them up from this run."""
        self._finish_parent_run()
        print(f"Best SVM: {self.best['svm']}")
        print(f"Best DNN: {self.best['dnn']}")
        print(f"Next: make train (uses TuningFlow/{current.run_id}, the latest successful run)")

    # -- helpers of this flow's steps (kept tiny; logic lives in modules/) --
    def _log_trial(self, trial) -> None:
        from modules.tracking import client as tracking

        with tracking.child_run(f"trial-{trial.trial_id}", self._step_tags()):
            tracking.log_params(trial.hyperparameters)
            tracking.log_history(trial.history)
            tracking.log_metrics(
                {"best_val_accuracy": trial.best_val_accuracy, "epochs_run": trial.epochs_run}
            )


if __name__ == "__main__":
    run_flow(TuningFlow)
