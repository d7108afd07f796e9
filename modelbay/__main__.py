"""`python -m modelbay` runs the command line."""

from modelbay.cli import app

app()
