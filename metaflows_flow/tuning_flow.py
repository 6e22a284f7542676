"""TuningFlow: tune every registered model family on one leakage-aware split, tracked in MLflow.

    python metaflows_flow/tuning_flow.py run --data-path data/emotions.csv
    python metaflows_flow/tuning_flow.py run --help      # every parameter

The split made in `start` is stored as an artifact and reused by MLPipelineFlow. The families
(`modules.models.families`; MODEL_FAMILIES picks some) are tuned in parallel by one `tune` step
per family, a Metaflow `foreach`; each family's MLflow step run is `tune_<family>`.

With `--search-chunks N` (SEARCH_CHUNKS; one pod per chunk on Kubernetes) each family's search is
split into up to N chunks, each its own `tune` branch (MLflow run `tune_<family>_<i>of<N>`), and
the join coordinates the last stage (`ModelFamily.merge_chunks`: the halving search's final round
on all rows, the best of the DNN's Bayesian sub-searches), logged as `tune_<family>`.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Steps run as `python metaflows_flow/tuning_flow.py`: make the project importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from metaflow import FlowSpec, Parameter, card, current, exit_hook, retry, step

from metaflows_flow.flow_helpers import SplitDataSteps, family_step, flow_settings, run_flow, tracked
from modules.kubernetes import kubernetes_step
from modules.settings import SPLIT_PROTOCOLS

# Every step is a new process: each imports only what it uses (MLflow, scikit-learn and
# TensorFlow cost seconds each), so the light steps start fast.

SETTINGS = flow_settings()


# Every step is @tracked: bounded tracking calls, one line on failure, the parent run's state kept
# true (FAILED on failure, re-opened by `resume`, FINISHED by `end`). The exit hook closes the runs
# of a failed flow. Only the idempotent closing steps are retried after an outage.
# Named by module path: Metaflow runs the hook in a new process, from the directory the flow was
# started in (the project root is on PYTHONPATH, as `make` sets it).
@exit_hook(on_error=["metaflows_flow.flow_helpers.close_failed_flow"])
class TuningFlow(FlowSpec, SplitDataSteps):
    """Tune every model family in parallel on the training part of one split."""

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
    search_chunks = Parameter(
        "search-chunks",
        default=SETTINGS.search_chunks,
        type=int,
        help="split each family's search into up to this many parallel chunks (pods on Kubernetes)",
    )

    @tracked
    @step
    def start(self):
        """Check the tracking server, load, validate and hash the data once, vouch for it, split it once."""
        from modules.data.provenance import verify_for_environment
        from modules.errors import ConfigurationError
        from modules.models.families import get_family, select_families
        from modules.models.training import prepare_data
        from modules.tracking import client as tracking

        settings = self._settings()
        # Unknown names fail here, in one line, before anything is loaded or tracked.
        self.families = select_families(settings.model_families)
        if self.search_chunks < 1:
            raise ConfigurationError(f"--search-chunks={self.search_chunks}: expected 1 or more")
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
            "model_families": ",".join(self.families),
        }
        # One `tune` branch per family and chunk; a family that does not split has one chunk.
        context = self._tuning_context()
        self.searches_to_run = [
            {"family": family, "chunk": chunk, "chunks": chunks}
            for family in self.families
            for chunks in [get_family(family).search_chunks(context, self.search_chunks)]
            for chunk in range(chunks)
        ]
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
                    "search_chunks": self.search_chunks,
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
        self.next(self.tune, foreach="searches_to_run")

    @family_step()
    @tracked
    @step
    def tune(self):
        """Search one family's settings (or one chunk of them) on the split's CV folds.

        The DNN's trials nest as MLflow runs under the step's run.
        """
        from modules.models.families import get_family

        self.family, self.chunk, self.chunks = (self.input[k] for k in ("family", "chunk", "chunks"))
        family = get_family(self.family)
        context = self._tuning_context(on_trial_end=self._log_trial)
        if self.chunks == 1:
            outcome = self._tracked_search(
                self.family, f"tune_{self.family}", lambda: family.tune(self._data(), context)
            )
        else:
            outcome = self._tracked_search(
                self.family,
                f"tune_{self.family}_{self.chunk + 1}of{self.chunks}",
                lambda: family.tune_chunk(self._data(), context, self.chunk, self.chunks),
            )
        self.search = outcome.search
        self.family_best = outcome.best
        self.next(self.join)

    @card(type="blank", id="tuning")
    # The final round of a search run in chunks happens here: a CPU pod's size on Kubernetes.
    @kubernetes_step("cpu")
    @retry(times=1, minutes_between_retries=1)
    @tracked
    @step
    def join(self, inputs):
        """Keep the best settings of each family (merging a family's chunks) and show every candidate in a card."""
        from functools import partial

        from metaflow.cards import Image, Markdown, Table

        from modules.models.families import get_family, plot_search_scores
        from modules.models.family import TuningOutcome
        from modules.models.reports import figure_png
        from modules.tracking import client as tracking

        self.merge_artifacts(inputs, exclude=["family", "family_best", "search", "chunk", "chunks"])
        # Keyed by family, in the order the families were listed (branches finish in any order).
        parts = {family: [] for family in self.families}
        for branch in sorted(inputs, key=lambda b: b.chunk):
            parts[branch.family].append(
                TuningOutcome(best=branch.family_best, metrics={}, search=branch.search)
            )
        self.best, self.searches = {}, {}
        # A family searched in chunks gets its last stage here, on the training rows of the split.
        data = self._data() if any(len(outcomes) > 1 for outcomes in parts.values()) else None
        context = self._tuning_context()
        for family, outcomes in parts.items():
            if len(outcomes) > 1:
                merge = partial(get_family(family).merge_chunks, data, context, outcomes)
                outcomes = [self._tracked_search(family, f"tune_{family}", merge)]
            self.best[family] = outcomes[0].best
            self.searches[family] = outcomes[0].search
        metrics = {}
        for family, best in self.best.items():
            metrics[f"{family}_cv_accuracy"] = best["cv_accuracy"]
            if best.get("val_accuracy") is not None:
                metrics[f"{family}_val_accuracy"] = best["val_accuracy"]
        with tracking.reopen_run(self.mlflow_run_id):
            tracking.log_metrics(metrics)
            tracking.log_dict(self.best, "best_params.json")
        current.card.append(
            Markdown(
                f"# Tuning results\n\nData: `{self.data_summary['data_path']}`, "
                f"split protocol **{self.data_summary['split_protocol']}**, "
                f"{self.data_summary['train_rows']} training rows."
            )
        )
        current.card.append(Image(figure_png(plot_search_scores(self.searches))))
        for family, search in self.searches.items():
            model_family = get_family(family)
            headers, rows = model_family.search_table(search)
            current.card.append(Markdown(f"## {model_family.search_title}"))
            current.card.append(Table(rows, headers=headers))
        self.next(self.end)

    @retry(times=1, minutes_between_retries=1)
    @tracked
    @step
    def end(self):
        """Close the parent run FINISHED and print the best settings; MLPipelineFlow picks them up from this run."""
        self._finish_parent_run()
        for family, best in self.best.items():
            print(f"Best {family}: {best}")
        print(f"Next: make train (uses TuningFlow/{current.run_id}, the latest successful run)")

    # -- helpers of this flow's steps (kept tiny; logic lives in modules/) --
    def _tracked_search(self, family, run_name, search):
        """Run `search()` (a TuningOutcome of `family`) in the MLflow step run `run_name`; log its outcome."""
        from modules.tracking import client as tracking

        with tracking.step_run(self.mlflow_run_id, run_name, self._step_tags()):
            outcome = search()
            tracking.log_params(outcome.best["params"], prefix="best.")
            tracking.log_metrics(outcome.metrics)
            tracking.log_dict(outcome.search, f"{family}_search.json")
        return outcome

    def _tuning_context(self, on_trial_end=None):
        """The pinned settings and this run's budgets, as every family's search reads them."""
        from modules.models.families import TuningContext

        return TuningContext(
            cv_folds=self.pinned_settings["cv_folds"],
            pca_variance=self.pinned_settings["pca_variance"],
            seed=self.seed,
            n_jobs=self._settings().svm_n_jobs,
            budgets={
                "svm_max_candidates": self.svm_max_candidates,
                "dnn_max_trials": self.dnn_max_trials,
                "dnn_max_epochs": self.dnn_max_epochs,
            },
            on_trial_end=on_trial_end,
        )

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
