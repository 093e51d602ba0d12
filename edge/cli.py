"""`lifeline edge ...`: run the gateway daemon and check its configuration."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from edge import crew, installer

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
    import asyncio
    import sqlite3

    from edge.config import ConfigError
    from edge.daemon import GatewayFailed, serve
    from edge.outbox import BufferFull

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(serve(config))
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    except GatewayFailed as exc:  # logged where it happened, with its traceback
        typer.echo(f"gateway stopped: {exc}", err=True)
        raise typer.Exit(1) from None
    except (BufferFull, sqlite3.Error) as exc:
        typer.echo(f"gateway stopped: its buffer cannot be used: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def validate(config: ConfigOption) -> None:
    """Check a gateway config (schema, profiles, alarm overrides) without starting anything."""
    from edge.config import ConfigError, load_config, resolve_profiles

    try:
        cfg = load_config(config)
        profiles = resolve_profiles(cfg, config.parent, str(config))
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"{config}: ok - gateway {cfg.gateway} at site {cfg.site}, {len(cfg.buses)} bus(es), "
        f"{len(profiles)} device(s), config hash {cfg.hash()}"
    )
