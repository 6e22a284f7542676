"""One command line for every stage: `python -m modules COMMAND [ARGS]`; `COMMAND --help` for each.

Built with click. Each stage's command (`cli`, a click command or group) lives in the module that
owns the stage and is imported only when that command runs, so `--help` and the light commands
start in a fraction of a second, without MLflow, scikit-learn or TensorFlow. A project error
(bad input, an unreachable server) ends the command with one line on stderr and its exit code.
"""

from __future__ import annotations

import importlib

import click

from modules.errors import run_cli

# name: (module whose `cli` runs it, one line of help)
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
    "predict-recording": (
        "modules.serving.recording",
        "Label a Muse recording window by window with the champion; print its overall label.",
    ),
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
    "deploy-argo": (
        "modules.deploy.argo",
        "Compile the flows into Argo Workflows templates (--dry-run: offline, into build/argo).",
    ),
}


class StageGroup(click.Group):
    """The group of stage commands, each imported from its module when it is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, summary = COMMANDS[name]
        module = importlib.import_module(module_name)
        command = module.cli
        command.name = name
        command.short_help = summary
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # From the table, so that `--help` imports none of the stages.
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, (_, summary) in COMMANDS.items()])


@click.group(
    cls=StageGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
def cli() -> None:
    """Operational ML: every stage of the pipeline from one command line."""


if __name__ == "__main__":
    run_cli(lambda: cli.main(prog_name="python -m modules"))
