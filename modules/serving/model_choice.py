"""Which registered model a scoring command uses: `--family` (its champion), `--model URI`, `--data-path`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def model_choice(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that choose the model, shared by `predict` and `predict-recording`."""
    command = click.option(
        "--data-path",
        type=click.Path(path_type=Path),
        default=None,
        help="the dataset the model was trained on; names the registered model like the flows do (default: "
        "DATA_PATH; emotions.csv -> eeg-emotion-FAMILY, data/mine.csv -> mine-FAMILY)",
    )(command)
    command = click.option(
        "--model",
        default=None,
        help="an explicit model URI instead of --family, e.g. models:/eeg-emotion-dnn@champion or models:/NAME/3",
    )(command)
    return click.option(
        "--family",
        default=None,
        help="model family whose champion is used, e.g. svm, dnn, logistic (default: svm)",
    )(command)


def chosen_model(
    settings: Any, family: str | None, model: str | None, data_path: Path | None
) -> tuple[Any, str]:
    """The settings of the dataset the model was trained on, and the URI `model_choice`'s options name."""
    from modules.models.families import get_family

    if family is not None and model is not None:
        raise click.UsageError("give --family or --model, not both")
    if data_path is not None:
        settings = settings.for_data(data_path)
    return settings, model or f"models:/{settings.model_name(get_family(family or 'svm').name)}@champion"
