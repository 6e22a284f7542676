"""One command line for every stage: `python -m modules COMMAND [ARGS]`; `COMMAND --help` for each.

The group is built with click; each command hands its arguments to the `main(argv)` of the
module that owns the stage, imported only when that command runs (so `--help` and the light
commands start in a fraction of a second, without MLflow, scikit-learn or TensorFlow).
"""

from __future__ import annotations

import importlib

import click

from modules.errors import run_cli

# name: (module whose main(argv) runs it, one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": (
        "modules.data.fetch",
        "Fetch the EEG dataset (Kaggle or the offline sample), or validate a CSV.",
    ),
    "sample": ("modules.data.sample", "Build the simulated-EEG sample dataset offline."),
    "features": ("modules.data.recordings", "Turn a folder of Muse recordings into one dataset CSV."),
    "extract": ("modules.data.eeg_features", "Turn one Muse recording into feature rows."),
    "split": (
        "modules.data.splitting",
        "Show the recordings found and the held-out split the pipeline would make.",
    ),
    "predict": ("modules.serving.batch", "Score a CSV with a registered model (the champion by default)."),
    "serve": ("modules.serving.app", "Serve the champion over HTTP with MLflow's scoring contract."),
    "server": (
        "modules.tracking.server",
        "The MLflow tracking server: start, stop, status, ui, db-init, db-upgrade.",
    ),
    "drift": ("modules.monitoring.check", "Print the last drift check's decision (--fail-on-drift exits 3)."),
    "integrity": (
        "modules.models.integrity",
        "Verify a registered model's files against its digest, or stamp one.",
    ),
    "provenance": (
        "modules.data.provenance",
        "Pin or verify the digest of the dataset production trains on.",
    ),
    "settings": ("modules.settings", "Print a setting as resolved from the environment, .env and defaults."),
}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Operational ML: every stage of the pipeline from one command line."""


def _command(name: str, module: str, summary: str) -> click.Command:
    @cli.command(
        name,
        help=f"{summary} (`python -m modules {name} --help` for its options)",
        short_help=summary,
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        main = importlib.import_module(module).main
        run_cli(lambda: main(list(args)))

    return command


for _name, (_module, _summary) in COMMANDS.items():
    _command(_name, _module, _summary)


if __name__ == "__main__":
    cli(prog_name="python -m modules")
