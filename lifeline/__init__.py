"""Lifeline: the command-line entry point that ties the programs together."""
