"""`lifeline`: one command line for gateways, the collector, the simulator and the demo district."""

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from lifeline.collector.cli import app as collector_app
from lifeline.edge.cli import app as edge_app
from lifeline.firmware_sim.cli import app as sim_app

app = typer.Typer(
    name="lifeline",
    help=(
        "Lifeline watches manhole covers, streetlights, gas and tilt sensors and turns their "
        "alarms into city cases. Start with `lifeline demo` to see a simulated district running."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(
    edge_app,
    name="edge",
    help="The gateway in a street cabinet: run it, check it, read and acknowledge its alarms.",
)
app.add_typer(
    collector_app,
    name="collector",
    help="The collector: ingest gateway data from MQTT, store it, raise city cases, serve the API.",
)
app.add_typer(
    sim_app,
    name="sim",
    help="firmware-sim: simulated Modbus sensors for tests, demos and benchmarks.",
)


@app.command()
def demo(
    duration: Annotated[
        float | None,
        typer.Option(help="Stop by itself after this many seconds (default: run until Ctrl-C)."),
    ] = None,
    http_port: Annotated[
        int, typer.Option(help="Port of the collector's HTTP API on 127.0.0.1 (0 = any free port).")
    ] = 8080,
    state_dir: Annotated[
        Path, typer.Option(help="Where the demo keeps its broker, buffer and database files.")
    ] = Path(".lifeline/demo"),
) -> None:
    """Run a demo district: simulated sensors -> gateway -> broker -> collector -> HTTP API."""
    from lifeline.demo import run_demo

    raise typer.Exit(run_demo(state_dir=state_dir, http_port=http_port, duration=duration))


def describe_error(exc: BaseException) -> str:
    """One line for an error no command turned into its own message: what failed, and on what.

    An OSError names its file (strerror: path), any other error its type and its message's
    first line; the traceback is for a debugger, not for an installer at a street cabinet.
    """
    if isinstance(exc, OSError) and exc.strerror:
        names = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
        return f"{exc.strerror}" + (f": {' -> '.join(names)}" if names else "")
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def undecodable(args: Sequence[str]) -> str | None:
    """A one-line reason if an argument holds bytes that are not text in the locale's encoding
    (Python keeps them as lone surrogates, PEP 383, which no file, database or terminal takes),
    else None."""
    for i, arg in enumerate(args, 1):
        bad = next((c for c in arg if 0xDC80 <= ord(c) <= 0xDCFF), None)
        if bad is not None:
            return (
                f"argument {i} ({arg.encode('utf-8', 'backslashreplace').decode()}) holds the"
                f" byte 0x{ord(bad) - 0xDC00:02X}, which is not UTF-8 text: set the terminal"
                " (or script) to UTF-8, e.g. LANG=zh_CN.UTF-8"
            )
    return None


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `lifeline` console script; `argv` defaults to the command line.

    The one place where every command's unexpected OS or library error (a missing folder, an
    unwritable file, a port in use, a database refusing) becomes `error: ...` on one line of
    stderr and exit status 1, never a traceback; so does an argument that is not text. Usage
    errors stay click's (exit 2).
    """
    args = list(argv) if argv is not None else sys.argv[1:]
    reason = undecodable(args)
    if reason is not None:
        typer.echo(f"error: {reason}", err=True)
        sys.exit(1)
    try:
        app(args=args, prog_name="lifeline")
    except Exception as exc:  # the last line of defence, whatever the library
        typer.echo(f"error: {describe_error(exc)}", err=True)
        sys.exit(1)
