"""The registry of model families: the one place that lists them.

The flows iterate over `family_names()` (a Metaflow `foreach`) and call only what the interface
(`modules.models.family.ModelFamily`) declares, so adding a family is one new file that
subclasses it plus one line in `_load_builtin` below (or a `register(...)` call).

    family = get_family("svm")
    tuned = family.tune(data, context)                 # best params and CV figures
    trained = family.train(data, tuned.best, context)  # fitted on train, held-out report
    uri = family.log_model(trained, data.X_test.head(5))
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from modules.errors import ConfigurationError
from modules.models.family import ModelFamily, TuningContext, TuningOutcome

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "ModelFamily",
    "TuningContext",
    "TuningOutcome",
    "family_names",
    "get_family",
    "plot_search_scores",
    "register",
    "select_families",
    "unregister",
]


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


def plot_search_scores(searches: dict[str, dict[str, Any]]) -> Figure:
    """One subplot per model family, each drawn by its family (`ModelFamily.plot_search`)."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(searches), figsize=(6 * len(searches), 4.5), constrained_layout=True)
    for ax, (family, search) in zip(np.atleast_1d(axes), searches.items(), strict=True):
        get_family(family).plot_search(ax, search)
    return fig
