"""`python -m modules serve`: see `modules.serving.app.main`."""

from modules.errors import run_cli
from modules.serving.app import main

run_cli(main)
