"""`python -m collector ...` runs the collector CLI."""

from collector.cli import app

app(prog_name="collector")
