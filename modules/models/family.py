"""The model-family interface: what every family (svm.py, dnn.py, logistic.py, ...) implements.

A family says how to tune itself on a split's training part, how to fit and evaluate its final
model, and how to package that model for MLflow. The flows call only what `ModelFamily`
declares; the registry that lists the families is `modules.models.families`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the runtime imports stay light: the interface is read by every flow step
    from matplotlib.axes import Axes

    from modules.models.evaluation import CrossValidation
    from modules.models.training import PreparedData, TrainedModel


@dataclass(frozen=True)
class TuningContext:
    """What every family's search and final fit share: the split's settings and the budgets.

    `budgets` holds the per-family budgets by their settings' names (`svm_max_candidates`,
    `dnn_max_trials`, `dnn_max_epochs`, ...); a family reads its own and ignores the rest.
    `on_trial_end` receives each trial of a family that has trials (the DNN), for nested runs.
    """

    cv_folds: int
    pca_variance: float | None
    seed: int
    n_jobs: int = 2
    budgets: dict[str, int] = field(default_factory=dict)
    on_trial_end: Callable[[Any], None] | None = None


@dataclass
class TuningOutcome:
    """A family's search: the settings training uses, the figures logged, the full search record.

    `best` always has `params`, `cv_accuracy`, `cv_std` and `cv_folds` (more for some families,
    e.g. the DNN's `val_accuracy` and `epochs`); `metrics` go to the tuning step's MLflow run;
    `search` is JSON-safe (a Metaflow artifact, `<family>_search.json`, the card's table).
    """

    best: dict[str, Any]
    metrics: dict[str, float]
    search: dict[str, Any]


class ModelFamily(ABC):
    """One kind of model: its search, its final fit and evaluation, its MLflow packaging."""

    name: str  # registry key, MLflow step-run suffix and registered-name suffix (`<prefix>-<name>`)
    title: str  # for people: card sections and figure titles
    search_title: str = "search"  # heading of the card's table of this family's search
    # "gpu": on Kubernetes, the steps that tune and train this family ask for a GPU node.
    accelerator: str = "cpu"

    @abstractmethod
    def tune(self, data: PreparedData, context: TuningContext) -> TuningOutcome:
        """Search the family's space on the training part's CV folds (never the held-out rows)."""

    @abstractmethod
    def train(
        self,
        data: PreparedData,
        best: dict[str, Any],
        context: TuningContext,
        *,
        cv: CrossValidation | None = None,
    ) -> TrainedModel:
        """Fit the final model on the whole training part and evaluate it on the held-out rows."""

    @abstractmethod
    def log_model(self, trained: TrainedModel, input_example: Any) -> str:
        """Log the fitted model to the active MLflow run (signature, trusted types); its URI."""

    # -- a search split into parallel chunks (TuningFlow's SEARCH_CHUNKS; pods on Kubernetes) --
    def search_chunks(self, context: TuningContext, requested: int) -> int:
        """Into how many chunks this family's search splits when `requested` are asked for.

        1 (the default) means the search runs whole in one step (`tune`); a family that returns
        more implements `tune_chunk` and `merge_chunks`.
        """
        return 1

    def tune_chunk(
        self, data: PreparedData, context: TuningContext, chunk: int, chunks: int
    ) -> TuningOutcome:
        """Search chunk `chunk` (0-based) of `chunks`: its share of the space, on the same folds."""
        raise NotImplementedError(f"the {self.name} family's search does not split into chunks")

    def merge_chunks(
        self, data: PreparedData, context: TuningContext, parts: list[TuningOutcome]
    ) -> TuningOutcome:
        """The whole search from its chunks' outcomes (in chunk order): the join coordinates the
        last stage, so the best settings are chosen on the same rows and folds as one search would."""
        raise NotImplementedError(f"the {self.name} family's search does not split into chunks")

    def apply_override(self, best: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        """`best` with a person's `--params-override` values for this family merged into its params."""
        return {**best, "params": {**best["params"], **values}}

    def search_table(self, search: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
        """Headers and rows of the card's table of this search, best first."""
        from modules.models.reports import CANDIDATE_TABLE_HEADERS, candidate_rows

        return CANDIDATE_TABLE_HEADERS, candidate_rows(search)

    def plot_search(self, ax: Axes, search: dict[str, Any]) -> None:
        """Draw the search's scores on one subplot of the tuning card's figure."""
        from modules.models.reports import plot_candidate_scores

        plot_candidate_scores(ax, search, self.title)


class SklearnPipelineFamily(ModelFamily):
    """A family whose final model is one scikit-learn pipeline, logged as skops with the shared
    models-from-code file (`sklearn_model_code.py`) and checked against the trusted types."""

    def log_model(self, trained: TrainedModel, input_example: Any) -> str:
        from modules.tracking import client as tracking

        return tracking.log_sklearn_model(trained.model, input_example)
