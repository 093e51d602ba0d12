"""`lifeline sim`: run simulated sensors from a scenario, and poke a running simulation."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="firmware-sim: simulated manhole, streetlight, gas and tilt sensors speaking Modbus.",
    no_args_is_help=True,
)

ControlOpt = Annotated[
    str | None,
    typer.Option("--control", help="HOST:PORT of the control port printed by `run`."),
]
EndpointsOpt = Annotated[
    Path | None,
    typer.Option("--endpoints-file", help="JSON file written by `run --endpoints-file`."),
]
ArgOpt = Annotated[
    list[str] | None,
    typer.Option("--arg", "-a", help="Event/fault argument KEY=VALUE (value parsed as JSON)."),
]


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_args(items: list[str] | None) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--arg")
        args[key] = _parse_value(value)
    return args


def _control_address(control: str | None, endpoints_file: Path | None) -> tuple[str, int]:
    from lifeline.wire.codes import is_ascii_number

    if control:
        host, _, port = control.rpartition(":")
        if not host or not is_ascii_number(port):
            raise typer.BadParameter("expected HOST:PORT", param_hint="--control")
        return host, int(port)
    if endpoints_file:
        try:
            ctl = json.loads(endpoints_file.read_text())["control"]
            return str(ctl["host"]), int(ctl["port"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise typer.BadParameter(f"cannot read control port: {exc}") from None
    raise typer.BadParameter("give --control HOST:PORT or --endpoints-file PATH")


JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print what was done as one JSON object, for scripts.")
]


def _done(as_json: bool, text: str, cmd: str, **fields: Any) -> None:
    """Say what a control command did: one line for a person, or one JSON object."""
    if as_json:
        typer.echo(json.dumps({"ok": True, "cmd": cmd, **fields}, ensure_ascii=False))
    else:
        typer.echo(text)


def _args_text(args: dict[str, Any]) -> str:
    return f" ({', '.join(f'{k}={json.dumps(v)}' for k, v in args.items())})" if args else ""


def _send(address: tuple[str, int], cmd: str, **fields: Any) -> Any:
    from lifeline.firmware_sim.control import ControlError, SimControl

    async def go() -> Any:
        async with SimControl(*address) as ctl:
            return await ctl.call(cmd, **fields)

    try:
        return asyncio.run(go())
    except ControlError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def run(
    scenario: Annotated[
        str, typer.Option("--scenario", "-s", help="Scenario YAML file, or a shipped name (demo).")
    ],
    endpoints_file: Annotated[
        Path | None,
        typer.Option("--endpoints-file", help="Also write the endpoints as JSON to this file."),
    ] = None,
    control_port: Annotated[
        int, typer.Option(help="Control port on 127.0.0.1 (0 = pick a free one).")
    ] = 0,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: run until Ctrl-C).")
    ] = None,
) -> None:
    """Serve the scenario's simulated devices and print where they listen."""
    import signal

    from lifeline.firmware_sim.scenario import ScenarioError, load_scenario
    from lifeline.firmware_sim.simulation import Simulation

    try:
        sc = load_scenario(scenario)
    except ScenarioError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    async def serve() -> None:
        async with Simulation(sc, control_port=control_port) as sim:
            eps = sim.endpoints
            for server in eps["servers"]:
                where = server.get("path") or f"{server['host']}:{server['port']}"
                units = ", ".join(
                    f"{d['unit']}={d['id']}({d['profile']})" for d in server["devices"]
                )
                typer.echo(f"{server['kind']:8} {where:24} {units}")
            ctl = eps["control"]
            typer.echo(f"control  {ctl['host']}:{ctl['port']}")
            typer.echo(json.dumps(eps))
            if endpoints_file is not None:
                tmp = endpoints_file.with_suffix(endpoints_file.suffix + ".tmp")
                try:
                    tmp.write_text(json.dumps(eps, indent=2))
                    tmp.replace(endpoints_file)  # readers never see a half-written file
                except OSError as exc:
                    # Name the file the user gave, not the temporary one beside it.
                    typer.echo(
                        f"error: cannot write the endpoints file {endpoints_file}: "
                        f"{exc.strerror or exc}",
                        err=True,
                    )
                    raise typer.Exit(1) from None
            # SIGTERM (a service manager, a test harness) stops as cleanly as Ctrl-C: exit 0.
            stop = asyncio.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                asyncio.get_running_loop().add_signal_handler(sig, stop.set)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration)

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the normal way to stop
        asyncio.run(serve())


@app.command()
def trigger(
    device: Annotated[str, typer.Argument(help="Device id from the scenario.")],
    event: Annotated[str, typer.Argument(help="Event name, e.g. open, rain, leak, lamp_failure.")],
    arg: ArgOpt = None,
    control: ControlOpt = None,
    endpoints_file: EndpointsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Apply an event to a device of a running simulation, and say so."""
    address = _control_address(control, endpoints_file)
    args = _parse_args(arg)
    _send(address, "trigger", device=device, event=event, args=args)
    text = f"triggered {event} on {device}{_args_text(args)}"
    _done(as_json, text, "trigger", device=device, event=event, args=args)


@app.command("set")
def set_value(
    device: Annotated[str, typer.Argument(help="Device id from the scenario.")],
    point: Annotated[str, typer.Argument(help="Point name from the device's profile.")],
    value: Annotated[str, typer.Argument(help='Value (JSON: 12.5, true, "text").')],
    control: ControlOpt = None,
    endpoints_file: EndpointsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Pin a point of a device to a value (until released), and say so."""
    address = _control_address(control, endpoints_file)
    parsed = _parse_value(value)
    _send(address, "set", device=device, point=point, value=parsed)
    text = f"pinned {device}.{point} = {json.dumps(parsed, ensure_ascii=False)} until released"
    _done(as_json, text, "set", device=device, point=point, value=parsed)


@app.command()
def fault(
    device: Annotated[str, typer.Argument(help="Device id from the scenario.")],
    kind: Annotated[
        str,
        typer.Argument(
            help="An answer fault (no_answer, slow, exception, bad_crc, garbage, link_drop, "
            "half_open), a quirk (gap_exceptions, register_limit, busy, echo, noise, "
            "turnaround, late), or none to clear them all."
        ),
    ],
    arg: ArgOpt = None,
    control: ControlOpt = None,
    endpoints_file: EndpointsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Inject a fault or quirk into a device, and say so; `-a off=true` clears that one kind.

    An answer fault replaces the previous one; quirks add up. Arguments: delay_s (slow, late,
    turnaround), code (exception; busy: 6 or 5), probability, limit (register_limit), before
    and after (noise bytes).
    """
    address = _control_address(control, endpoints_file)
    args = _parse_args(arg)
    _send(address, "fault", device=device, kind=kind, args=args)
    if kind == "none":
        text = f"cleared every fault and quirk of {device}"
    elif bool(args.get("off", False)):
        text = f"cleared {kind} on {device}"
    else:
        text = f"injected {kind} into {device}{_args_text(args)}"
    _done(as_json, text, "fault", device=device, kind=kind, args=args)
