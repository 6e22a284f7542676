"""`python -m modules.serving` = `python -m modules serve` (see `modules.serving.app.cli`)."""

from modules.errors import run_cli
from modules.serving.app import cli

run_cli(lambda: cli.main(prog_name="python -m modules serve"))
