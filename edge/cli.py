"""`lifeline edge ...`: run the gateway daemon and check its configuration."""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lifeline.edge import crew, installer

if TYPE_CHECKING:  # the commands import what they need when they run: a quick CLI start
    from lifeline.drivers.profile import Profile
    from lifeline.edge.config import GatewayConfig

app = typer.Typer(
    help="The edge gateway: polls Modbus sensors, raises local alarms, buffers, forwards to MQTT.",
    no_args_is_help=True,
)
installer.register(app)
crew.register(app)

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config", "-c", help="Gateway config YAML (see config/examples/gateway-*.yaml)."
    ),
]


@app.command()
def run(
    config: ConfigOption,
    log_level: Annotated[
        str, typer.Option(help="Logging level: debug, info, warning or error.")
    ] = "info",
) -> None:
    """Run the gateway until SIGTERM or Ctrl-C (then it flushes, says goodbye and exits 0).

    Exits 2 on a bad config, 1 when the buffer cannot be opened or written (an alarm cannot
    be stored) or a part of the gateway died: systemd then restarts it.
    """
    stop_asked = _catch_stop_signals()  # before the slow imports and the config: see there
    import asyncio
    import sqlite3

    from lifeline.edge.buffer import BufferFull
    from lifeline.edge.config import ConfigError, config_warnings, load_config
    from lifeline.edge.daemon import GatewayFailed, serve

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with contextlib.suppress(ConfigError):  # serve() reports a bad config, with its exit status
        for field, reason in config_warnings(load_config(config)):
            logging.getLogger("lifeline.edge").warning("%s: %s: %s", config, field, reason)
    try:
        asyncio.run(serve(config, stop_asked.is_set))
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except GatewayFailed as exc:  # logged where it happened, with its traceback
        typer.echo(f"error: gateway stopped: {exc}", err=True)
        raise typer.Exit(1) from None
    except (BufferFull, sqlite3.Error) as exc:
        # sqlite3 names no file ("unable to open database file"): say which one it was.
        where = load_config(config).buffer.path
        typer.echo(f"error: gateway stopped: its buffer {where} cannot be used: {exc}", err=True)
        raise typer.Exit(1) from None


def _catch_stop_signals() -> threading.Event:
    """From now on SIGTERM and SIGINT set the returned event instead of killing the process.

    Called first thing by `run`: its imports and config take about a second, and systemd may
    stop the unit in that time; such a stop is then a clean one (serve() takes it over with
    the event loop's own handlers). Both signals are unblocked too, so one sent before, while
    a launcher held it blocked, is delivered now rather than never.
    """
    import signal

    asked = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: asked.set())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    return asked


@app.command()
def validate(
    config: ConfigOption,
    plan: Annotated[
        bool,
        typer.Option(
            "--plan", help="Also show each device's read plan (Modbus requests per poll)."
        ),
    ] = False,
) -> None:
    """Check a gateway config (schema, profiles, alarm overrides) without starting anything.

    Exits 1 (typer.Exit) with the file, field and reason when the config is not valid.
    """
    from lifeline.edge.config import ConfigError, config_warnings, load_config, resolve_profiles

    try:
        cfg = load_config(config)
        profiles = resolve_profiles(cfg, config.parent, str(config))
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for field, reason in config_warnings(cfg):
        typer.echo(f"warning: {config}: {field}: {reason}", err=True)
    typer.echo(
        f"{config}: ok - gateway {cfg.gateway} at site {cfg.site}, {len(cfg.buses)} bus(es), "
        f"{len(profiles)} device(s), config hash {cfg.hash()}"
    )
    if plan:
        _print_plan(cfg, profiles)


def _print_plan(cfg: GatewayConfig, profiles: dict[str, Profile]) -> None:
    """One row per Modbus read a poll makes: device, function, registers, the points in it."""
    from lifeline.edge.cli_output import print_table
    from lifeline.edge.scheduler import bus_name, make_reader

    rows = []
    for bus in cfg.buses:
        for dev in bus.devices:
            for r in make_reader(dev, profiles[dev.id]).planned:
                rows.append(
                    [
                        bus_name(bus),
                        dev.id,
                        str(dev.unit),
                        f"fc{r.function} {r.table}",
                        f"{r.address}+{r.count}",
                        ", ".join(p.name for p in r.points),
                    ]
                )
    print_table(["bus", "device", "unit", "read", "registers", "points"], rows)
