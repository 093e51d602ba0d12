"""`python -m lifeline.collector ...` runs the collector CLI."""

from lifeline.collector.cli import app

app(prog_name="collector")
