"""`python -m lifeline` is the `lifeline` command."""

from lifeline.cli import main

main()
