"""Installer commands of `lifeline edge`: scan a bus, commission, flash a card, check a site."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from lifeline.edge.cli_output import fail, print_json, print_table, usage_error
from lifeline.edge.device_names import KnownDevice, UnknownDevice, resolve_device

if TYPE_CHECKING:
    from lifeline.drivers.profile import Profile
    from lifeline.drivers.scan import LineSettings, ScanResult, Target
    from lifeline.drivers.values import Value
    from lifeline.edge.config import Bus, DeviceConfig, GatewayConfig

__all__ = ["register"]

_FAMILY_SHORT = {"manhole": "mh", "streetlight": "sl", "gas": "gas", "tilt": "tilt"}
_DEVICE_CONFIG = "etc/lifeline/gateway.yaml"
_TLS_DIR = "etc/lifeline/tls"
_UNIT_NAME = "lifeline-edge.service"
_UNIT_PATH = f"etc/systemd/system/{_UNIT_NAME}"
_WANTS_LINK = f"etc/systemd/system/multi-user.target.wants/{_UNIT_NAME}"

# --- shared options --------------------------------------------------------------------------

PortOpt = Annotated[
    str | None,
    typer.Option("--port", help="Serial port of the RS-485 adapter, e.g. /dev/ttyUSB0."),
]
BaudOpt = Annotated[
    str, typer.Option("--baud", help="Baud rates to try, comma separated, e.g. 9600,19200.")
]
ParityOpt = Annotated[
    str, typer.Option("--parity", help="Parities to try, comma separated: N (none), E, O.")
]
UnitsOpt = Annotated[
    str, typer.Option("--units", help="Unit ids (Modbus addresses) to probe, e.g. 1-32 or 1,5,9.")
]
HostOpt = Annotated[
    str | None,
    typer.Option("--host", help="Modbus TCP device or gateway (or a DTU with --rtu-over-tcp)."),
]
TcpPortOpt = Annotated[int, typer.Option("--tcp-port", help="TCP port with --host.")]
RtuTcpOpt = Annotated[
    bool,
    typer.Option("--rtu-over-tcp", help="--host is a transparent serial tunnel (4G DTU)."),
]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait for each probe's answer.", min=0.01)
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]


# --- scan ------------------------------------------------------------------------------------


def _split(text: str, what: str, param: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        usage_error(f"give at least one {what}", param)
    return items


def _scan_target(port: str | None, host: str | None, tcp_port: int, rtu_over_tcp: bool) -> Target:
    from lifeline.drivers.scan import Target

    if (port is None) == (host is None):
        usage_error("give either --port /dev/ttyX (RS-485) or --host HOST (Modbus TCP)", "--port")
    if port is not None:
        return Target("rtu", port=port)
    assert host is not None
    if not 1 <= tcp_port <= 65535:
        usage_error(f"{tcp_port} is not a TCP port (1-65535)", "--tcp-port")
    return Target("rtu_over_tcp" if rtu_over_tcp else "tcp", host=host, tcp_port=tcp_port)


def _line_settings(baud: str, parity: str) -> list[LineSettings]:
    from lifeline.drivers.baudrates import (
        MAX_BAUDRATE,
        MIN_BAUDRATE,
        STANDARD_BAUDRATES,
        baudrate_problem,
    )
    from lifeline.drivers.scan import LineSettings
    from lifeline.wire.codes import is_ascii_number

    lines = []
    for b in _split(baud, "baud rate", "--baud"):
        if not is_ascii_number(b) or not MIN_BAUDRATE <= int(b) <= MAX_BAUDRATE:
            usage_error(
                f"{b!r} is not a baud rate ({MIN_BAUDRATE}-{MAX_BAUDRATE}); standard: "
                + ", ".join(map(str, STANDARD_BAUDRATES)),
                "--baud",
            )
        if problem := baudrate_problem(int(b)):
            typer.echo(f"warning: --baud {problem}", err=True)
        for p in _split(parity.upper(), "parity", "--parity"):
            if p not in ("N", "E", "O"):
                usage_error(f"{p!r} is not a parity: use N, E or O", "--parity")
            lines.append(LineSettings(int(b), p))  # type: ignore[arg-type]
    return lines


def _run_scan(
    target: Target, units_text: str, lines: list[LineSettings], timeout: float, quiet: bool
) -> ScanResult:
    from lifeline.drivers.errors import LinkDown
    from lifeline.drivers.profile import builtin_profiles
    from lifeline.drivers.scan import parse_units, scan

    try:
        units = parse_units(units_text)
    except ValueError as exc:
        usage_error(str(exc), "--units")
    total = len(units) * (len(lines) if target.kind == "rtu" else 1)
    profiles = builtin_profiles().values()
    try:
        if quiet or not sys.stderr.isatty():
            result = asyncio.run(scan(target, profiles, units, lines, timeout))
        else:
            from rich.progress import Progress

            with Progress(transient=True) as bar:
                task = bar.add_task(f"scanning {target.describe()}", total=total)

                def step(what: str) -> None:
                    bar.update(task, advance=1, description=f"scanning {what}")

                result = asyncio.run(scan(target, profiles, units, lines, timeout, step))
    except LinkDown as exc:
        hint = (
            "check the port name (ls /dev/ttyUSB* /dev/ttyAMA*) and that nothing else, such as "
            "the gateway daemon, has it open"
            if target.kind == "rtu"
            else "check the address, the port and that the device is powered and on this network"
        )
        fail(f"cannot reach {target.describe()}: {exc.detail}; {hint}")
    for line, why in result.skipped:
        typer.echo(f"warning: skipped {line} on {target.describe()}: {why}", err=True)
    return result


def _sample_text(values: dict[str, Any], profile: Profile | None, limit: int = 4) -> str:
    if profile is None:
        return ""
    parts = []
    for p in profile.points[:limit]:
        if p.name in values:
            v = values[p.name]
            text = f"{v:g}" if isinstance(v, float) else str(v)
            parts.append(f"{p.name}={text}{(' ' + p.unit) if p.unit else ''}")
    return ", ".join(parts)


def scan_command(
    port: PortOpt = None,
    baud: BaudOpt = "9600",
    parity: ParityOpt = "N,E",
    units: UnitsOpt = "1-32",
    host: HostOpt = None,
    tcp_port: TcpPortOpt = 502,
    rtu_over_tcp: RtuTcpOpt = False,
    timeout: TimeoutOpt = 0.2,
    as_json: JsonOpt = False,
) -> None:
    """Find the sensors on a bus and recognise them (family, model, firmware, sample values).

    Serial: every unit id is tried at every baud rate and parity you list; an empty address
    costs one --timeout. Save `--json` output for `lifeline edge commission --scan-json`.
    Exit 1 if nothing answered.
    """
    target = _scan_target(port, host, tcp_port, rtu_over_tcp)
    lines = _line_settings(baud, parity)
    result = _run_scan(target, units, lines, timeout, quiet=as_json)
    if as_json:
        print_json(result.as_json())
    else:
        rows = []
        for f in result.found:
            p = f.profile
            rows.append(
                [
                    str(f.unit),
                    str(f.line) if f.line else "tcp",
                    p.family if p else "?",
                    p.name if p else "(unknown)",
                    p.vendor if p else "",
                    p.model if p else "",
                    f"{f.firmware >> 8}.{f.firmware & 0xFF}" if f.firmware is not None else "",
                    f.error or _sample_text(f.values, p),
                ]
            )
        columns = ["unit", "line", "family", "profile", "vendor", "model", "firmware", "sample"]
        print_table(columns, rows, title=f"{target.describe()}: {len(rows)} device(s)")
    if not result.found:
        tried = [x for x in lines if x not in {line for line, _ in result.skipped}]
        settings = ", ".join(str(x) for x in tried) if target.kind == "rtu" else "Modbus TCP"
        fail(
            f"no device answered on {target.describe()} ({settings}, units {units}); check "
            "wiring (A/B swapped?), power, termination, the unit-id range and the line settings"
        )


# --- commission ------------------------------------------------------------------------------


def _load_scan(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    except json.JSONDecodeError as exc:
        fail(f"{path} is not scan JSON ({exc}); make it with `lifeline edge scan ... --json`")
    except RecursionError:  # Python's JSON parser recurses once per level of nesting
        fail(
            f"{path} nests arrays or objects thousands deep: not scan JSON; make it with "
            "`lifeline edge scan ... --json`"
        )
    if not isinstance(data, dict) or "target" not in data or "devices" not in data:
        fail(f"{path} is not scan JSON; make it with `lifeline edge scan ... --json`")
    return data


def _bus_from_scan(scan: dict[str, Any], index: int) -> list[dict[str, Any]]:
    """The bus dicts for one scan (one bus; a serial port at mixed line settings is refused)."""
    target = scan["target"]
    devices = [d for d in scan["devices"] if d.get("profile")]
    for d in scan["devices"]:
        if not d.get("profile"):
            typer.echo(
                f"warning: unit {d['unit']} answers but matches no profile: left out", err=True
            )
    if not devices:
        return []
    kind = target["type"]
    if kind == "rtu":
        settings = sorted({(d["baudrate"], d["parity"]) for d in devices})
        if len(settings) > 1:
            where = "; ".join(
                f"{b} 8{p}1: units "
                + ",".join(
                    str(d["unit"]) for d in devices if (d["baudrate"], d["parity"]) == (b, p)
                )
                for b, p in settings
            )
            fail(
                f"devices on {target['port']} answer at different line settings ({where}); one "
                "bus runs at one setting: set the odd ones to the same rate and parity, or wire "
                "them to another port, then scan again"
            )
        baudrate, parity = settings[0]
        bus: dict[str, Any] = {
            "type": "rtu",
            "name": f"rs485-{index + 1}",
            "port": target["port"],
            "baudrate": baudrate,
            "parity": parity,
        }
    else:
        bus = {
            "type": kind,
            "name": f"{kind.replace('_', '-')}-{index + 1}",
            "host": target["host"],
            "port": target["port"],
        }
    bus["devices"] = [
        {"unit": d["unit"], "profile": d["profile"], "family": d["family"], "scan": d}
        for d in devices
    ]
    return [bus]


def _name_devices(gateway: str, buses: list[dict[str, Any]]) -> None:
    """Give every device its id: GATEWAY.bBUS-FAMILY-UNIT, e.g. gw-xh-0412.b1-mh-001.

    The same scan (the same --scan-json files in the same order) gives the same ids; the
    gateway prefix keeps them unique across cabinets, so no gateway can claim another's
    device by name. Its part after the prefix is accepted wherever an id is asked
    (edge.device_names).
    """
    for b, bus in enumerate(buses):
        for dev in bus["devices"]:
            short = _FAMILY_SHORT.get(dev["family"], dev["family"])
            dev["id"] = f"{gateway}.b{b + 1}-{short}-{dev['unit']:03d}"


def _parse_asset(item: str, buses: list[dict[str, Any]]) -> tuple[str, str]:
    """One KEY=CODE: (device id, 16-digit 部件标识码); BadParameter says what is wrong."""
    from lifeline.wire.codes import is_asset_code

    devices = [d for bus in buses for d in bus["devices"]]
    key, sep, code = item.partition("=")
    if not sep or not is_asset_code(code.strip()):
        usage_error(
            f"{item!r}: expected DEVICE=CODE with a 16-digit 部件标识码, "
            "e.g. b1-mh-001=3301060111000001",
            "--asset",
        )
    try:
        dev_id = resolve_device(key, [KnownDevice(d["id"], d["unit"]) for d in devices])
    except UnknownDevice as exc:
        usage_error(f"{item!r}: {exc}", "--asset")
    return dev_id, code.strip()


def _parse_assets(items: list[str], buses: list[dict[str, Any]]) -> dict[str, str]:
    """--asset KEY=CODE: KEY is a device id (or its part after GATEWAY.), or a unit id when
    that unit is unique."""
    return dict(_parse_asset(item, buses) for item in items)


def _overrides_by_id(overrides: dict[str, Any], buses: list[dict[str, Any]]) -> dict[str, Any]:
    """Alarm overrides keyed by device id; a key may also be an id's part after GATEWAY.
    (what the file can name before the gateway id is known). Unknown keys are refused."""
    devices = [KnownDevice(d["id"]) for bus in buses for d in bus["devices"]]
    out: dict[str, Any] = {}
    for key, rules in overrides.items():
        try:
            out[resolve_device(str(key), devices)] = rules
        except UnknownDevice as exc:
            fail(f"alarm overrides: {exc}")
    return out


def _load_overrides(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        fail(f"cannot read alarm overrides {path}: {exc}")
    if not isinstance(data, dict):
        fail(f"{path}: alarm overrides are a mapping DEVICE: {{POINT: [rules]}}")
    return data


def _ask(
    value: str | None,
    prompt: str,
    param: str,
    check: Callable[[str], str],
    required: bool = True,
) -> str:
    """An option's value, or the answer to `prompt` in a terminal, passed through `check`.

    `check` returns the value or raises typer.BadParameter. A bad option value is a usage
    error; a bad answer is said on one line and the question asked again, so one typo loses
    none of the answers before it. An optional question takes an empty answer as none.
    """
    if value is not None:
        return check(value) if value or required else ""
    if not sys.stdin.isatty():
        if required:
            usage_error(f"missing {param} (no terminal to ask on)", param)
        return ""
    while True:
        answer = str(typer.prompt(prompt, default=None if required else "")).strip()
        if not answer and not required:
            return ""
        try:
            return check(answer)
        except typer.BadParameter as exc:
            typer.echo(f"error: {exc.message}; try again", err=True)


def _check_ident(param: str, what: str, longest_suffix: int = 0) -> Callable[[str], str]:
    from lifeline.wire.topics import IDENT_RE

    def check(text: str) -> str:
        if not IDENT_RE.fullmatch(text) or len(text) + longest_suffix > 64:
            usage_error(
                f"{text!r}: a {what} is letters, digits and - _ . (starting with a letter or "
                f"digit), at most {64 - longest_suffix} characters",
                param,
            )
        return text

    return check


def _check_broker_url(text: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(text)
    if parts.username is not None or parts.password is not None:
        usage_error(
            "a broker URL carries no credentials: give them to `edge flash --username "
            "--password-file`, which writes them to the card (mode 0600)",
            "--broker",
        )
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        usage_error(f"{text!r} must look like mqtt://host:1883 or mqtts://host:8883", "--broker")
    return text


def _check_location(text: str) -> str:
    _parse_location(text)
    return text


def _check_asset_code(code: str) -> str:
    # The collector's rule (wire.codes), as for --grid.
    from lifeline.wire.codes import is_asset_code

    if not is_asset_code(code):
        usage_error(f"{code!r} is not a 16-digit 部件标识码 (e.g. 3301060111000001)", "--asset")
    return code


def _check_grid(text: str) -> str:
    # The collector's rule (wire.codes): a code it would refuse must not reach the cabinet.
    from lifeline.wire.codes import GRID_CODE_RULE, is_grid_code

    if not is_grid_code(text):
        usage_error(f"{text!r}: a 单元网格 code is {GRID_CODE_RULE}", "--grid")
    return text


def _parse_location(text: str) -> dict[str, Any]:
    """--location LON,LAT[,DATUM]: degrees, longitude first; the datum CGCS2000 unless given."""
    from lifeline.wire.messages import DATUMS

    example = "e.g. 120.1302,30.2745 or 120.1302,30.2745,WGS84"
    parts = [x.strip() for x in text.split(",")]
    if len(parts) not in (2, 3):
        usage_error(
            f"{text!r}: expected LON,LAT[,DATUM] in degrees ({example}); the address goes in "
            "--address",
            "--location",
        )
    try:
        lon, lat = float(parts[0]), float(parts[1])
    except ValueError:
        usage_error(
            f"{text!r}: longitude and latitude are numbers of degrees ({example})", "--location"
        )
    if not (math.isfinite(lon) and math.isfinite(lat)):
        usage_error(f"{text!r}: longitude and latitude are finite numbers", "--location")
    if not -90 <= lat <= 90:
        usage_error(
            f"{text!r}: latitude {parts[1]} is beyond ±90 (longitude comes first: LON,LAT)",
            "--location",
        )
    if not -180 <= lon <= 180:
        usage_error(f"{text!r}: longitude {parts[0]} is beyond ±180", "--location")
    given = parts[2] if len(parts) == 3 else "CGCS2000"
    by_key = {d.replace("-", "").upper(): d for d in DATUMS}
    datum = by_key.get(given.replace("-", "").upper())
    if datum is None:
        usage_error(f"{given!r} is not a datum: use one of {', '.join(DATUMS)}", "--location")
    return {"lon": lon, "lat": lat, "datum": datum}


def _comment(text: str) -> str:
    """One comment line: text from a scan file or an option never starts a YAML line."""
    return " ".join(text.splitlines())


def _render_config(data: dict[str, Any], grid: str, buses: list[dict[str, Any]]) -> str:
    import yaml

    stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
    head = [
        f"Gateway {data['gateway']} at site {data['site']}, made by `lifeline edge commission`"
        f" on {stamp}.",
        f"单元网格 (grid cell): {grid or '(not given)'}",
        "Register the assets below with the collector (asset registry) so alarms become cases.",
        "Devices found by the scan:",
    ]
    for bus in buses:
        for dev in bus["devices"]:
            s = dev["scan"]
            head.append(
                f"  {dev['id']}: unit {s['unit']}, {s['vendor']} {s['model']} firmware "
                f"{s['firmware']}, asset {dev.get('asset') or '(none)'}"
            )
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return "".join(f"# {_comment(line)}\n" for line in head) + body


def _write_checked(text: str, dest: Path, cfg: GatewayConfig) -> None:
    """Write a config file and read it back; fail unless it is exactly the config meant.

    The text is checked before it is written (stdout included), the file again after: what the
    gateway will load is what was validated, whatever an address or a scan file held.
    """
    import yaml

    from lifeline.edge.config import ConfigError, load_config, parse_config

    try:
        meant = parse_config(yaml.safe_load(text), str(dest)) == cfg
    except (ConfigError, yaml.YAMLError) as exc:
        fail(f"the config written for {dest} does not read back: {exc}; nothing written")
    if not meant:
        fail(f"the config written for {dest} reads back differently; nothing written")
    if str(dest) == "-":
        sys.stdout.write(text)
        return
    tmp = dest.with_name(f".{dest.name}.lifeline-tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        fail(f"cannot write {dest}: {exc.strerror}")
    try:
        written = load_config(dest)
    except ConfigError as exc:
        fail(f"{dest} was written but does not load: {exc}")
    if written != cfg:
        fail(f"{dest} was written but reads back differently: check the disk, then run again")


def commission_command(
    scan_json: Annotated[
        list[Path] | None,
        typer.Option(
            "--scan-json", help="Output of `scan --json` (repeat for several buses).", exists=False
        ),
    ] = None,
    port: PortOpt = None,
    baud: BaudOpt = "9600",
    parity: ParityOpt = "N,E",
    units: UnitsOpt = "1-32",
    host: HostOpt = None,
    tcp_port: TcpPortOpt = 502,
    rtu_over_tcp: RtuTcpOpt = False,
    timeout: TimeoutOpt = 0.2,
    gateway: Annotated[
        str | None, typer.Option(help="Gateway id, e.g. gw-xh-0412 (letters, digits, - _ .).")
    ] = None,
    site: Annotated[str | None, typer.Option(help="Site (district) id, e.g. xihu.")] = None,
    location: Annotated[
        str | None,
        typer.Option(
            help="Where the cabinet stands: LON,LAT[,DATUM] in degrees, longitude first; DATUM "
            "is CGCS2000 (the default), WGS84 (raw GPS), GCJ-02 or BD-09 (Chinese web maps)."
        ),
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="The cabinet's address, kept with --location.")
    ] = None,
    grid: Annotated[
        str | None, typer.Option(help="单元网格 (grid cell) code of the cabinet.")
    ] = None,
    asset: Annotated[
        list[str] | None,
        typer.Option(help="DEVICE=部件标识码 (16 digits) of the asset a device watches; repeat."),
    ] = None,
    alarms_file: Annotated[
        Path | None,
        typer.Option(help="YAML {device: {point: [alarm rules]}} replacing profile defaults."),
    ] = None,
    broker: Annotated[
        str | None, typer.Option(help="MQTT broker URL, mqtt://host:1883 or mqtts://host:8883.")
    ] = None,
    mqtt_root: Annotated[str, typer.Option(help="MQTT topic root.")] = "lifeline",
    interval: Annotated[
        float, typer.Option(help="Poll interval per device, seconds.", min=0.05)
    ] = 1.0,
    buffer_path: Annotated[
        str, typer.Option(help="Where the gateway keeps its SQLite buffer on the device.")
    ] = "/var/lib/lifeline/edge.sqlite",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Config file to write (default GATEWAY.yaml; - = stdout)."
        ),
    ] = None,
) -> None:
    """Turn a scan plus site facts into a validated gateway config YAML.

    Asks for missing facts when run in a terminal; scripts pass them all as options.
    """
    from lifeline.edge.config import ConfigError, parse_config, resolve_profiles

    scans = [_load_scan(p) for p in scan_json or []]
    if not scans:
        if port is None and host is None:
            usage_error("give --scan-json FILE, or --port/--host to scan now", "--scan-json")
        target = _scan_target(port, host, tcp_port, rtu_over_tcp)
        scans = [_run_scan(target, units, _line_settings(baud, parity), timeout, False).as_json()]
    buses = [bus for i, s in enumerate(scans) for bus in _bus_from_scan(s, i)]
    if not buses:
        fail("the scan found no recognised device: nothing to commission")
    # The longest device id suffix (".b1-tilt-001") bounds the gateway id: ids are <= 64.
    _name_devices("", buses)
    suffix = max(len(d["id"]) for bus in buses for d in bus["devices"])
    gw = _ask(gateway, "Gateway id", "--gateway", _check_ident("--gateway", "gateway id", suffix))
    _name_devices(gw, buses)
    st = _ask(site, "Site id", "--site", _check_ident("--site", "site id"))
    url = _ask(broker, "MQTT broker URL", "--broker", _check_broker_url)
    loc = _ask(
        location,
        "Cabinet location LON,LAT[,DATUM] (empty: none)",
        "--location",
        _check_location,
        required=False,
    )
    place = _parse_location(loc) if loc else None
    if place is not None:
        place["address"] = _ask(
            address, "Cabinet address", "--address", lambda text: text, required=False
        )
    elif address:
        usage_error("--address is kept with a --location LON,LAT: give both", "--address")
    cell = _ask(grid, "单元网格 (grid cell) code", "--grid", _check_grid, required=False)
    assets = _parse_assets(asset or [], buses)
    if not asset and sys.stdin.isatty():
        for bus in buses:
            for dev in bus["devices"]:
                prompt = f"部件标识码 of the asset {dev['id']} watches (empty: none)"
                if code := _ask(None, prompt, "--asset", _check_asset_code, required=False):
                    assets[dev["id"]] = code
    overrides = _overrides_by_id(_load_overrides(alarms_file), buses)
    for bus in buses:
        for dev in bus["devices"]:
            if dev["id"] in assets:
                dev["asset"] = assets[dev["id"]]
    data: dict[str, Any] = {
        "gateway": gw,
        "site": st,
        **({"location": place} if place is not None else {}),
        "mqtt": {"url": url, "root": mqtt_root},
        "buffer": {"path": buffer_path},
        "buses": [],
    }
    for bus in buses:
        entry = {k: v for k, v in bus.items() if k != "devices"}
        entry["devices"] = []
        for dev in bus["devices"]:
            d: dict[str, Any] = {"id": dev["id"], "unit": dev["unit"], "profile": dev["profile"]}
            d["interval_s"] = interval
            if "asset" in dev:
                d["asset"] = dev["asset"]
            if dev["id"] in overrides:
                d["alarms"] = overrides[dev["id"]]
            entry["devices"].append(d)
        data["buses"].append(entry)
    dest = out or Path(f"{gw}.yaml")
    try:
        cfg = parse_config(data, str(dest))
        resolve_profiles(cfg, Path.cwd(), str(dest))
    except ConfigError as exc:
        fail(f"{exc}\nfix the option named above and run commission again")
    _write_checked(_render_config(data, cell, buses), dest, cfg)
    if str(dest) == "-":
        return
    n = len(cfg.devices())
    missing = [d.id for d in cfg.devices() if d.asset is None]
    typer.echo(f"wrote {dest}: gateway {gw} at site {st}, {len(cfg.buses)} bus(es), {n} device(s)")
    if missing:
        typer.echo(
            f"note: no 部件标识码 for {', '.join(missing)}: their alarms become 事件 cases",
            err=True,
        )


# --- flash -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Planned:
    path: str  # relative to the target root
    data: bytes  # file content, or the link target for a symlink
    mode: int
    secret: bool = False
    symlink: bool = False


def _read_secret_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"cannot read the {what} {path}: {exc.strerror}")


def _unit_text(unit_file: Path | None) -> bytes:
    if unit_file is not None:
        return _read_secret_file(unit_file, "systemd unit file")
    import importlib.resources

    shipped = importlib.resources.files("lifeline.config") / "systemd" / _UNIT_NAME
    if not shipped.is_file():
        fail(
            f"this installation ships no config/systemd/{_UNIT_NAME}; pass --unit-file PATH "
            "with the unit that starts `lifeline edge run --config /etc/lifeline/gateway.yaml`"
        )
    return shipped.read_bytes()


def _unit_settings(unit: bytes) -> dict[str, list[str]]:
    """The [Service] settings of a systemd unit, each key with all its values in order."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in unit.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).extend(value.split())
    return out


def _buffer_problem(buffer: str, unit: bytes) -> str:
    """'' if the service the unit starts can keep its buffer at `buffer`, else why not.

    Follows systemd.exec(5): PrivateTmp gives the service its own /tmp and /var/tmp, emptied
    when it stops; ProtectHome hides /home, /root and /run/user (or makes them read-only);
    ProtectSystem=strict leaves only ReadWritePaths and the State/Cache/Logs directories
    writable, =full (or yes) makes /usr, /boot (and with full /etc) read-only. A relative path
    is taken from WorkingDirectory. The buffer is a file: a path ending in `/`, or naming a
    folder the unit names (WorkingDirectory, a writable one) or `/`, is refused.
    """
    import posixpath

    cfg = _unit_settings(unit)

    def last(key: str) -> str:
        return (cfg.get(key) or [""])[-1].lower()

    base = (cfg.get("WorkingDirectory") or ["/"])[-1].lstrip("-")
    path = posixpath.normpath(posixpath.join(base if base.startswith("/") else "/", buffer))

    def under(*roots: str) -> bool:
        return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)

    writable = [p.lstrip("-+") for p in cfg.get("ReadWritePaths", [])]
    for key, root in (("StateDirectory", "/var/lib"), ("CacheDirectory", "/var/cache"),
                      ("LogsDirectory", "/var/log")):  # fmt: skip
        writable += [f"{root}/{d}" for d in cfg.get(key, [])]
    writable = list(dict.fromkeys(writable))
    where = f"; it can write only under {', '.join(writable)}" if writable else ""
    # The buffer is a file (SQLite puts its -wal and -shm beside it): a folder the unit names,
    # or a path written as a folder, would be taken for the database and never opened.
    folders = {"/", posixpath.normpath(base if base.startswith("/") else "/"), *writable}
    if buffer.endswith("/") or path in {posixpath.normpath(f) for f in folders}:
        return f"{path} is a folder, and the buffer is a file in one{where}"
    yes = ("yes", "true", "on", "1")
    private_tmp = ("/tmp", "/var/tmp")  # noqa: S108 - the folders PrivateTmp replaces
    if last("PrivateTmp") in yes and under(*private_tmp):
        return (
            f"PrivateTmp={last('PrivateTmp')} gives it its own /tmp and /var/tmp, emptied when"
            f" it stops{where}"
        )
    if last("ProtectHome") in (*yes, "read-only", "tmpfs") and under("/home", "/root", "/run/user"):
        how = "read-only" if last("ProtectHome") == "read-only" else "hidden"
        return f"ProtectHome={last('ProtectHome')} makes the home folders {how} to it{where}"
    protect = last("ProtectSystem")
    if protect == "strict" and not under(*writable):
        return f"ProtectSystem=strict makes everything else read-only{where}"
    read_only = ["/usr", "/boot", "/efi"] + (["/etc"] if protect == "full" else [])
    if protect in (*yes, "full") and under(*read_only):
        return f"ProtectSystem={protect} makes {', '.join(read_only)} read-only{where}"
    return ""


def _check_buffer_path(plan: Sequence[_Planned], buffer: str) -> None:
    unit = next(item.data for item in plan if item.path == _UNIT_PATH)
    problem = _buffer_problem(buffer, unit)
    if problem:
        fail(
            f"the installed {_UNIT_NAME} cannot keep its buffer at {buffer}: {problem}. "
            "Commission again with --buffer-path under a writable folder (the default is "
            "/var/lib/lifeline/edge.sqlite), or pass --unit-file with a unit that allows it"
        )


def _hostname(name: str) -> str:
    host = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63]
    if not host:
        usage_error(f"{name!r} makes no valid hostname", "--hostname")
    return host


def _flash_plan(
    cfg_data: dict[str, Any],
    username: str | None,
    password: str | None,
    ca: Path | None,
    client_cert: Path | None,
    client_key: Path | None,
    hostname: str,
    unit: bytes,
) -> list[_Planned]:
    import yaml

    plan: list[_Planned] = []
    mqtt = dict(cfg_data.get("mqtt") or {})
    if username is not None:
        mqtt["username"] = username
        mqtt["password"] = password
    tls: dict[str, str] = {}
    if ca is not None:
        plan.append(_Planned(f"{_TLS_DIR}/ca.crt", _read_secret_file(ca, "CA certificate"), 0o644))
        tls["ca"] = f"/{_TLS_DIR}/ca.crt"
    if client_cert is not None and client_key is not None:
        cert = _read_secret_file(client_cert, "client certificate")
        key = _read_secret_file(client_key, "client key")
        plan.append(_Planned(f"{_TLS_DIR}/client.crt", cert, 0o644))
        plan.append(_Planned(f"{_TLS_DIR}/client.key", key, 0o600, secret=True))
        tls.update(cert=f"/{_TLS_DIR}/client.crt", key=f"/{_TLS_DIR}/client.key")
    if tls:
        mqtt["tls"] = tls
    data = dict(cfg_data, mqtt=mqtt)
    text = "# Written by `lifeline edge flash`: holds the MQTT credentials, keep it mode 0600.\n"
    text += yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
    plan.insert(0, _Planned(_DEVICE_CONFIG, text.encode(), 0o600, secret=password is not None))
    plan.append(_Planned(_UNIT_PATH, unit, 0o644))
    plan.append(_Planned(_WANTS_LINK, f"/{_UNIT_PATH}".encode(), 0o777, symlink=True))
    plan.append(_Planned("etc/hostname", f"{hostname}\n".encode(), 0o644))
    return plan


def _redirected(root: Path, item: _Planned) -> str:
    """'' if every component of the item's path on the card is a real directory or file (the
    link we install excepted), else which one is a symlink and where it points: a tampered
    card must not make the installer's machine write its own files."""
    here = root
    parts = Path(item.path).parts
    for i, part in enumerate(parts):
        here = here / part
        if here.is_symlink() and not (item.symlink and i == len(parts) - 1):
            return f"{here} is a symlink (to {os.readlink(here)})"
    return ""


def _open_dir(root: Path, rel: str, create: bool) -> int:
    """A descriptor of the directory holding `rel` under `root`, walked one component at a
    time without following symlinks (O_NOFOLLOW; OSError ELOOP if one appeared since the
    check), creating missing ones when `create`."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in Path(rel).parent.parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _state(root: Path, item: _Planned) -> Literal["new", "changed", "unchanged"]:
    path = root / item.path
    if item.symlink:
        if not path.is_symlink():
            return "changed" if path.exists() else "new"
        return "unchanged" if os.readlink(path) == item.data.decode() else "changed"
    if not path.exists() and not path.is_symlink():
        return "new"
    if path.is_symlink() or not path.is_file():
        return "changed"
    same = path.read_bytes() == item.data and (path.stat().st_mode & 0o777) == item.mode
    return "unchanged" if same else "changed"


def _write(root: Path, item: _Planned) -> None:
    name = Path(item.path).name
    tmp = f".{name}.lifeline-tmp"
    at = _open_dir(root, item.path, create=True)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=at)
        if item.symlink:
            os.symlink(item.data.decode(), tmp, dir_fd=at)
        else:
            # Create with the final mode so a secret is never readable by others, even briefly.
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            fd = os.open(tmp, flags, item.mode, dir_fd=at)
            with os.fdopen(fd, "wb") as f:
                f.write(item.data)
                f.flush()
                os.fsync(f.fileno())
                os.fchmod(f.fileno(), item.mode)
        os.replace(tmp, name, src_dir_fd=at, dst_dir_fd=at)  # replaces a link, never follows it
    finally:
        os.close(at)


def _verify(root: Path, item: _Planned) -> str:
    """'' if the file on the target is what we meant to write, else what is wrong; read back
    through the same no-follow walk as the write."""
    name = Path(item.path).name
    try:
        at = _open_dir(root, item.path, create=False)
    except OSError as exc:
        return f"cannot open its directory: {exc.strerror}"
    try:
        if item.symlink:
            try:
                return "" if os.readlink(name, dir_fd=at) == item.data.decode() else "link"
            except OSError:
                return "link"
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=at)
        except OSError as exc:
            return f"cannot read it back: {exc.strerror}"
        with os.fdopen(fd, "rb") as f:
            data, mode = f.read(), os.fstat(f.fileno()).st_mode & 0o777
    finally:
        os.close(at)
    if hashlib.sha256(data).digest() != hashlib.sha256(item.data).digest():
        return "checksum mismatch"
    if mode != item.mode:
        return f"mode {oct(mode)}"
    return ""


def _existing_identity(root: Path) -> str | None:
    """The gateway id of a config already on the target ('?' if unreadable), or None."""
    path = root / _DEVICE_CONFIG
    if not path.exists():
        return None
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return str(data["gateway"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return "?"


def _load_config_data(config: Path) -> tuple[dict[str, Any], GatewayConfig]:
    import yaml

    from lifeline.edge.config import ConfigError, load_config

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        fail(f"{exc}\nfix the config (or commission it again) before going on")
    return yaml.safe_load(config.read_text(encoding="utf-8")), cfg


def flash_command(
    target: Annotated[
        Path,
        typer.Argument(help="Mounted root filesystem of the gateway's SD card (or image dir)."),
    ],
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Commissioned gateway config YAML.")
    ],
    username: Annotated[str | None, typer.Option(help="MQTT user name.")] = None,
    password_file: Annotated[
        Path | None,
        typer.Option(
            help="File holding the MQTT password (asked for if --username and a terminal)."
        ),
    ] = None,
    ca: Annotated[Path | None, typer.Option(help="CA certificate of the broker (PEM).")] = None,
    client_cert: Annotated[
        Path | None, typer.Option(help="Client certificate (PEM) for mutual TLS.")
    ] = None,
    client_key: Annotated[
        Path | None, typer.Option(help="Client private key (PEM), written mode 0600.")
    ] = None,
    hostname: Annotated[
        str | None, typer.Option(help="Hostname of the gateway (default: lifeline-GATEWAY).")
    ] = None,
    unit_file: Annotated[
        Path | None,
        typer.Option(help=f"systemd unit to install (default: the shipped {_UNIT_NAME})."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite a card that holds another gateway.")
    ] = False,
    anonymous: Annotated[
        bool,
        typer.Option(
            "--anonymous",
            help="Flash a gateway without MQTT credentials (only for a closed test broker).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a gateway's config, credentials, CA, systemd unit and hostname onto its card.

    Verifies every file by reading it back; a second run changes nothing. Refuses to
    overwrite a card that belongs to another gateway unless --force.
    """
    if not target.is_dir():
        fail(f"{target} is not a directory: mount the card's root filesystem and pass its path")
    if (client_cert is None) != (client_key is None):
        usage_error(
            "a client certificate needs both --client-cert and --client-key", "--client-cert"
        )
    password: str | None = None
    if username is not None:
        if password_file is not None:
            password = _read_secret_file(password_file, "password file").decode().strip()
        elif sys.stdin.isatty():
            password = str(typer.prompt("MQTT password", hide_input=True))
        else:
            usage_error("--username needs --password-file (no terminal to ask on)", "--username")
    data, cfg = _load_config_data(config)
    credentials = username is not None or client_cert is not None or cfg.mqtt.authenticated
    if not (credentials or anonymous):
        # Without them the broker cannot tell the collector's commands from anybody's.
        usage_error(
            "a flashed gateway proves who it is to its broker: pass --username with "
            "--password-file, or --client-cert and --client-key (--anonymous only for a "
            "closed test broker)",
            "--username",
        )
    if (ca or client_cert) and not cfg.mqtt.url.startswith("mqtts:"):
        usage_error(
            f"TLS files given but the config's broker URL {cfg.mqtt.url} is not mqtts://: "
            "commission with --broker mqtts://HOST:8883, or leave out --ca/--client-cert",
            "--ca",
        )
    plan = _flash_plan(
        data,
        username,
        password,
        ca,
        client_cert,
        client_key,
        _hostname(hostname or f"lifeline-{cfg.gateway}"),
        _unit_text(unit_file),
    )
    _check_flashed_config(plan[0])
    _check_buffer_path(plan, cfg.buffer.path)
    redirected = [why for item in plan if (why := _redirected(target, item))]
    if redirected:
        fail(
            f"refusing to flash {target}: {redirected[0]}; a gateway's card holds no symlinks "
            "on these paths (a tampered card would make this machine overwrite its own files)"
        )
    existing = _existing_identity(target)
    if existing is not None and existing != cfg.gateway and not force:
        fail(
            f"{target} already holds gateway {existing!r} ({_DEVICE_CONFIG}); flashing "
            f"{cfg.gateway!r} over it would take that cabinet's identity away. Use a fresh card, "
            "or pass --force if this card really is being re-provisioned"
        )
    states = [_state(target, item) for item in plan]
    results: list[str] = []
    if dry_run:
        results = [
            f"would {'create' if s == 'new' else 'change'}" if s != "unchanged" else s
            for s in states
        ]
    else:
        for item, s in zip(plan, states, strict=True):
            if s != "unchanged":
                try:
                    _write(target, item)
                except OSError as exc:  # ELOOP: a symlink appeared since the check
                    fail(f"cannot write {target / item.path}: {exc.strerror}; nothing after it")
        for item, s in zip(plan, states, strict=True):
            problem = _verify(target, item)
            results.append(f"FAILED: {problem}" if problem else s)
    _report_flash(target, plan, results, as_json)
    if any(r.startswith("FAILED") for r in results):
        fail("read-back verification failed: the card may be worn out or full; use another card")


def _check_flashed_config(item: _Planned) -> None:
    import yaml

    from lifeline.edge.config import ConfigError, parse_config

    try:
        parse_config(yaml.safe_load(item.data), item.path)
    except ConfigError as exc:
        fail(str(exc))


def _report_flash(root: Path, plan: Sequence[_Planned], results: list[str], as_json: bool) -> None:
    rows = []
    for item, result in zip(plan, results, strict=True):
        if item.symlink:
            check = "-> " + item.data.decode()
        elif item.secret:
            check = "(secret: not shown)"
        else:
            check = "sha256 " + hashlib.sha256(item.data).hexdigest()[:16]
        rows.append([item.path, result, "link" if item.symlink else oct(item.mode)[2:], check])
    if as_json:
        print_json(
            {
                "target": str(root),
                "files": [
                    {"path": r[0], "result": r[1], "mode": r[2], "check": r[3]} for r in rows
                ],
            }
        )
    else:
        print_table(["path", "result", "mode", "check"], rows, title=f"flash {root}")


# --- check -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _DeviceCheck:
    ok: bool
    detail: str
    baselines: dict[str, float]  # captured installed zeros, point -> value (its unit)


async def _check_device(
    bus: Bus, dev: DeviceConfig, profile: Profile, capture: int
) -> _DeviceCheck:
    """Identify a device and read it in full; with `capture` > 0, read it that many times, one
    poll interval apart, and keep the median of each point judged on its deviation as the
    point's baseline."""
    from lifeline.drivers.errors import DriverError
    from lifeline.drivers.link import poll_device
    from lifeline.drivers.planner import plan_reads
    from lifeline.drivers.reader import describe_plan
    from lifeline.drivers.scan import firmware_text
    from lifeline.edge.scheduler import make_link, make_reader

    link = make_link(bus)
    reader = make_reader(dev, profile)
    try:
        ident = await poll_device(
            link, dev.unit, plan_reads(profile.identification.as_points()), dev.timeout_s, 1
        )
        if not profile.identification.matches(ident):
            return _DeviceCheck(
                False,
                f"unit {dev.unit} is not a {profile.model}: it reports vendor id "
                f"{ident.get('vendor_id')}, model id {ident.get('model_id')}; check the unit id "
                "or the profile (scan the bus to see what is there)",
                {},
            )
        values = await reader.poll(link)
        reads = [values] if capture else []
        while len(reads) < capture:  # one poll interval apart: fresh samples, not one repeated
            await asyncio.sleep(dev.interval_s)
            reads.append(await reader.poll(link))
    except DriverError as exc:
        return _DeviceCheck(False, f"{exc}; check wiring, power, unit id and line settings", {})
    finally:
        await link.aclose()
    fw = ident.get("firmware_version")
    version = firmware_text(fw if isinstance(fw, int) else None)
    detail = f"{profile.vendor} {profile.model} firmware {version}, {len(values)} values read"
    # What the device or its line needed beyond the standard: the installer's hints.
    notes = [reader.last.summary()] if not reader.last.clean else []
    if reader.plan != reader.planned:
        notes.append(f"read as {describe_plan(reader.plan)} (set max_gap / max_registers)")
    if reader.last.timeouts:
        notes.append("timeouts: raise timeout_s, or set the bus's request_delay_s")
    stats = link.stats
    if stats.echoes and not link.settings.echo:
        notes.append("the line echoes requests (set echo: true on the bus)")
    if stats.noise_bytes:
        notes.append(f"{stats.noise_bytes} noise bytes skipped (check termination, shielding)")
    if stats.stale_answers:
        notes.append("late answers skipped (raise timeout_s)")
    detail += "".join(f"; {n}" for n in notes)
    if not reads:
        return _DeviceCheck(True, detail, {})
    baselines, problem = _baselines(dev, profile, reads)
    if problem:
        return _DeviceCheck(False, f"{detail}; no baseline captured: {problem}", {})
    shown = ", ".join(f"{k}={v:g}" for k, v in baselines.items())
    return _DeviceCheck(True, f"{detail}; baseline {shown}" if shown else detail, baselines)


def _baselines(
    dev: DeviceConfig, profile: Profile, reads: list[dict[str, Value]]
) -> tuple[dict[str, float], str]:
    """The median of `reads` for each point judged on its deviation, or why there is none.

    A reading as far from 0 as its smallest alarm limit is refused: the device is not mounted
    as installed (a cover off its frame, a pole already leaning), and such a zero would hide it.
    """
    import statistics

    from lifeline.edge.config import deviation_points, point_rules

    out: dict[str, float] = {}
    for point in deviation_points(dev, profile):
        got = [r.get(point.name) for r in reads]
        numbers = [float(v) for v in got if isinstance(v, int | float) and math.isfinite(v)]
        if len(numbers) != len(reads):
            return (
                {},
                f"{point.name} gave no number in {len(reads) - len(numbers)} of {len(reads)} reads",
            )
        zero = round(statistics.median(numbers), 4)
        limit = min(r.limit or 0.0 for r in point_rules(dev, point) if r.deviation)
        if abs(zero) >= limit:
            unit = f" {point.unit}" if point.unit else ""
            return {}, (
                f"{point.name} reads {zero:g}{unit}, {limit:g} or more from 0, as far as its "
                "alarm limit: mount the device as installed (or set `baselines` by hand)"
            )
        out[point.name] = zero
    return out, ""


def _write_baselines(path: Path, found: dict[str, dict[str, float]]) -> tuple[bool, str]:
    """Merge captured baselines into the config file at `path`: (done, what happened).

    The file is rewritten through the YAML library (its leading comment block kept, its mode
    kept: a flashed card's config holds a password), checked to be the old config plus exactly
    these baselines before it replaces the old file, and loaded again after. When anything of
    that goes wrong the old file stays as it was, and the reason is returned.
    """
    import yaml

    from lifeline.edge.config import ConfigError, GatewayConfig, load_config, parse_config

    try:
        text = path.read_text(encoding="utf-8")
        before = load_config(path).model_dump()
    except (OSError, ConfigError) as exc:
        return False, f"cannot read {path} again: {exc}"
    for bus in before["buses"]:
        for dev in bus["devices"]:
            dev["baselines"] = {**dev["baselines"], **found.get(dev["id"], {})}
    expected = GatewayConfig.model_validate(before)
    lines = text.splitlines(keepends=True)
    n_head = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    data = yaml.safe_load(text)
    for bus in data["buses"]:
        for dev in bus["devices"]:
            if dev["id"] in found:
                dev["baselines"] = {**(dev.get("baselines") or {}), **found[dev["id"]]}
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
    new_text = "".join(lines[:n_head]) + body
    try:
        if parse_config(yaml.safe_load(new_text), str(path)) != expected:
            return False, "the rewritten config would change more than its baselines: not written"
    except ConfigError as exc:
        return False, f"the config with these baselines does not validate ({exc}): not written"
    try:
        _write(path.parent, _Planned(path.name, new_text.encode(), path.stat().st_mode & 0o777))
        if load_config(path) != expected:
            return False, f"{path} was written but reads back differently: check the disk"
    except (OSError, ConfigError) as exc:
        return False, f"writing {path} failed: {exc}"
    points = sum(len(v) for v in found.values())
    lost = "#" in "".join(lines[n_head:])  # perhaps only a '#' inside a value: say it anyway
    kept = " (comments below its header are not kept)" if lost else ""
    return True, f"wrote {points} point(s) of {len(found)} device(s) into {path}{kept}"


def _check_broker(cfg: GatewayConfig, timeout: float) -> tuple[bool, str]:
    """Connect as the gateway would and publish one QoS 1 status message; wait for PUBACK."""
    import secrets

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from lifeline.wire import Kind, Status, encode, topic

    m = cfg.mqtt
    session = f"check-{secrets.token_hex(4)}"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"lifeline-check-{cfg.gateway}-{session[-8:]}"
    )
    if m.username is not None:
        client.username_pw_set(m.username, m.password)
    try:
        if m.tls is not None or m.url.startswith("mqtts:"):
            client.tls_set(
                ca_certs=m.tls.ca if m.tls else None,
                certfile=m.tls.cert if m.tls else None,
                keyfile=m.tls.key if m.tls else None,
            )
        connected: dict[str, Any] = {}
        client.on_connect = lambda c, u, f, rc, p: connected.update(rc=rc)
        client.connect(m.host, m.port, keepalive=30)
    except (OSError, ValueError) as exc:
        return False, f"cannot connect to {m.url}: {exc}; check the URL, network and firewall"
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout
        while "rc" not in connected and time.monotonic() < deadline:
            time.sleep(0.02)
        rc = connected.get("rc")
        if rc is None:
            return False, f"no CONNACK from {m.url} within {timeout:g} s"
        if rc.is_failure:
            return False, f"{m.url} refused the connection: {rc}; check user name and password"
        name = topic(cfg.site, cfg.gateway, Kind.STATUS, root=m.root)
        msg = Status(cfg.gateway, session, 0, time.time_ns() // 1_000_000, counters={"check": 1})
        info = client.publish(name, encode(msg), qos=1)
        info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        if not info.is_published():
            return False, f"no PUBACK from {m.url} within {timeout:g} s for {name}"
        return True, f"published a test status to {name}, PUBACK received"
    except (RuntimeError, ValueError) as exc:
        return False, f"publish to {m.url} failed: {exc}"
    finally:
        client.disconnect()
        client.loop_stop()


def check_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="Gateway config YAML to check.")],
    broker_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the broker's CONNACK and PUBACK.", min=0.1)
    ] = 5.0,
    capture_baselines: Annotated[
        bool,
        typer.Option(
            "--capture-baselines",
            help="Record each device's installed zero: the median of --reads reads of every "
            "point judged on its deviation (tilt), written into the config as `baselines`.",
        ),
    ] = False,
    capture_reads: Annotated[
        int, typer.Option("--reads", help="Reads per device for --capture-baselines.", min=1)
    ] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Check a site: the config, every configured device, and the broker. Exit 1 on any failure.

    Each device must answer its identification block as its profile expects and give one full
    read; the broker must accept a QoS 1 test status message on the gateway's own status topic.
    With --capture-baselines, once the sensors are mounted, the angle each tilt point reads now
    becomes its installed zero in the config (a reading as far from 0 as its alarm limit is
    refused). Run it with the gateway daemon stopped: a serial port carries one master at a time.
    """
    from lifeline.edge.config import ConfigError, config_warnings, load_config, resolve_profiles

    # What the drivers would log about a device's quirks is in each device's row already.
    logging.getLogger("lifeline.drivers").setLevel(logging.ERROR)
    checks: list[tuple[str, bool, str]] = []
    try:
        cfg = load_config(config)
        profiles = resolve_profiles(cfg, config.parent, str(config))
    except ConfigError as exc:
        reason = "; ".join(f"{f}: {r}" for f, r in exc.problems)
        checks.append(("config", False, reason))
        _report_checks(checks, as_json)
        fail(f"{config} is not a valid gateway config; fix it and check again")
    checks.append(("config", True, f"gateway {cfg.gateway} at site {cfg.site}, hash {cfg.hash()}"))
    for field, reason in config_warnings(cfg):
        typer.echo(f"warning: {config}: {field}: {reason}", err=True)
    found: dict[str, dict[str, float]] = {}

    async def probe_all() -> list[tuple[str, bool, str]]:
        out = []
        for bus in cfg.buses:
            for dev in bus.devices:
                got = await _check_device(bus, dev, profiles[dev.id], capture)
                out.append((f"device {dev.id} (unit {dev.unit})", got.ok, got.detail))
                if got.baselines:
                    found[dev.id] = got.baselines
        return out

    capture = capture_reads if capture_baselines else 0
    checks.extend(asyncio.run(probe_all()))
    ok, why = _check_broker(cfg, broker_timeout)
    checks.append((f"broker {cfg.mqtt.url}", ok, why))
    if capture_baselines:
        if found:
            checks.append(("baselines", *_write_baselines(config, found)))
        else:
            why = "nothing captured: no device that answered has a point judged on its deviation"
            checks.append(("baselines", True, why))
    _report_checks(checks, as_json)
    failed = [name for name, ok, _ in checks if not ok]
    if failed:
        fail(f"{len(failed)} check(s) failed: {', '.join(failed)}")


def _report_checks(checks: list[tuple[str, bool, str]], as_json: bool) -> None:
    if as_json:
        print_json([{"check": n, "ok": ok, "detail": why} for n, ok, why in checks])
        return
    rows = [[n, "pass" if ok else "FAIL", why] for n, ok, why in checks]
    styles = ["green" if ok else "bold red" for _, ok, _ in checks]
    print_table(["check", "result", "detail"], rows, styles=styles)


def register(app: typer.Typer) -> None:
    """Add the installer commands (scan, commission, flash, check) to `lifeline edge`."""
    app.command("scan")(scan_command)
    app.command("commission")(commission_command)
    app.command("flash")(flash_command)
    app.command("check")(check_command)
