"""The model-family interface and the registry: the one place that lists the families.

A family says how to tune itself on a split's training part, how to fit and evaluate its final
model, and how to package that model for MLflow. The flows iterate over `family_names()` (a
Metaflow `foreach`) and call only what `ModelFamily` declares, so adding a family is one new
file that subclasses it plus one `register(...)` line below.

    family = get_family("svm")
    tuned = family.tune(data, context)                 # best params and CV figures
    trained = family.train(data, tuned.best, context)  # fitted on train, held-out report
    uri = family.log_model(trained, data.X_test.head(5))
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modules.errors import ConfigurationError

if TYPE_CHECKING:  # the runtime imports stay light: the registry is read by every flow step
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


_REGISTRY: dict[str, ModelFamily] = {}
_BUILT_IN_LOADED = False


def register(family: ModelFamily) -> ModelFamily:
    """Add a family to the registry, after the built-in ones (the same name replaces a family)."""
    if not family.name.isidentifier():
        raise ConfigurationError(f"model family name {family.name!r} must be a Python identifier")
    _load_builtin()
    _REGISTRY[family.name] = family
    return family


def unregister(name: str) -> None:
    """Remove a family (tests register throwaway families and take them out again)."""
    _REGISTRY.pop(name, None)


def _load_builtin() -> None:
    """The built-in families, in the order the flows list them: one line per family.

    Imported on first use: the family modules import scikit-learn and this module's interface.
    """
    global _BUILT_IN_LOADED
    if _BUILT_IN_LOADED:
        return
    _BUILT_IN_LOADED = True
    from modules.models.dnn import DnnFamily
    from modules.models.logistic import LogisticFamily
    from modules.models.svm import SvmFamily

    for family in (SvmFamily(), DnnFamily(), LogisticFamily()):
        _REGISTRY.setdefault(family.name, family)


def family_names() -> list[str]:
    """Every registered family, in registration order."""
    _load_builtin()
    return list(_REGISTRY)


def get_family(name: str) -> ModelFamily:
    """The family of that name; one line naming the known ones otherwise."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigurationError(f"unknown model family {name!r}; known: {', '.join(_REGISTRY)}") from None


def select_families(names: Iterable[str] | str | None, what: str = "MODEL_FAMILIES") -> list[str]:
    """The registered families `names` chooses (all of them when empty), in registry order.

    `names` is a list or a comma-separated string; an unknown name is one line naming `what`.
    """
    known = family_names()
    if names is None:
        return known
    wanted = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    if not wanted:
        return known
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ConfigurationError(
            f"{what}: unknown model famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
            f"known: {', '.join(known)}"
        )
    return [n for n in known if n in wanted]
