"""Output for the installer and crew commands: rich tables on a terminal, plain text when piped.

Colours only on a terminal (rich also honours NO_COLOR); JSON for scripts; errors on stderr
with the exit codes of the CLI convention (1 = failure found, 2 = usage error).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

import typer

__all__ = [
    "SEVERITY_NAMES",
    "fail",
    "local_time",
    "print_json",
    "print_table",
    "severity_style",
    "stdout_is_tty",
    "usage_error",
    "utc_iso",
]

SEVERITY_NAMES = {1: "一级 critical", 2: "二级 high", 3: "三级 medium", 4: "四级 low"}
_SEVERITY_STYLE = {1: "bold red", 2: "dark_orange", 3: "yellow", 4: "blue"}


def stdout_is_tty() -> bool:
    """True when a person is reading stdout in a terminal."""
    return sys.stdout.isatty()


def print_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    title: str = "",
    styles: Sequence[str] | None = None,
    header: bool = True,
) -> None:
    """A rich table on a terminal; aligned plain columns (header first, no title) when piped.

    `styles` gives one rich style per row (e.g. red for a failed check), terminal only.
    """
    if stdout_is_tty():
        from rich.console import Console
        from rich.table import Table

        table = Table(*columns, title=title or None, title_justify="left", show_header=header)
        for i, row in enumerate(rows):
            table.add_row(*row, style=styles[i] if styles else None)
        Console().print(table)
        return
    from rich.cells import cell_len  # CJK characters are two columns wide

    widths = [cell_len(c) for c in columns]
    for row in rows:
        widths = [max(w, cell_len(v)) for w, v in zip(widths, row, strict=True)]

    def line(values: Sequence[str]) -> str:
        cells = [v + " " * (w - cell_len(v)) for v, w in zip(values, widths, strict=True)]
        return "  ".join(cells).rstrip()

    out = ([line(columns)] if header else []) + [line(r) for r in rows]
    sys.stdout.write("\n".join(out) + "\n")


def severity_style(severity: int) -> str:
    """The rich style of an alarm severity (national colours: red, orange, yellow, blue)."""
    return _SEVERITY_STYLE.get(severity, "")


def print_json(obj: Any) -> None:
    """One JSON document on stdout (UTF-8, Chinese left readable)."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: message` on stderr and exit with `code` (1: a failure was found).

    Always raises typer.Exit(code).
    """
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def usage_error(message: str, param: str | None = None) -> NoReturn:
    """Reject the command line (exit 2) with what was wrong and what to do.

    Always raises typer.BadParameter naming `param`.
    """
    raise typer.BadParameter(message, param_hint=param)


def local_time(ts_ms: int) -> str:
    """Milliseconds since the epoch as local time, to the second (what a crew's watch shows)."""
    return datetime.fromtimestamp(ts_ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def utc_iso(ts_ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC with milliseconds."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds")
