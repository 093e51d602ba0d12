"""Crew commands of `lifeline edge`: alarms, ack, status, tail and write, at the cabinet.

Commands and presentation only. Everything is read from the gateway's own SQLite buffer through
edge.buffer.views (read-only, WAL), so it works while the daemon runs and while the uplink is
down; an acknowledgement is queued in the buffer for the daemon to apply and send upstream.
`status` shows the health snapshot the daemon keeps there; `tail` follows the alarm log and the
readings waiting to be sent.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lifeline.edge.cli_output import (
    SEVERITY_NAMES,
    fail,
    local_time,
    print_json,
    print_table,
    severity_style,
    usage_error,
    utc_iso,
)

if TYPE_CHECKING:
    from lifeline.edge.buffer.views import AlarmRow
    from lifeline.edge.config import GatewayConfig
    from lifeline.wire import Record

__all__ = ["register"]

_OPEN_STATES = ("active_unacked", "active_acked", "cleared_unacked")
_UNACKED = ("active_unacked", "cleared_unacked")
_SEVERITY_WORDS = {"critical": 1, "high": 2, "medium": 3, "low": 4}

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Gateway config YAML (its buffer.path is read)."),
]
DbOpt = Annotated[
    Path | None,
    typer.Option("--db", help="The gateway's SQLite buffer, instead of --config."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]


def _load(config: Path) -> GatewayConfig:
    from lifeline.edge.config import ConfigError, load_config

    try:
        return load_config(config)
    except ConfigError as exc:
        fail(f"{exc}\nfix the config, or point at the buffer directly with --db PATH")


def _db(config: Path | None, db: Path | None) -> Path:
    """The buffer database to read; usage error unless exactly one of --config / --db."""
    if (config is None) == (db is None):
        usage_error("give --config FILE (the gateway's config) or --db PATH (its buffer)", "--db")
    path = db if db is not None else Path(_load(config).buffer.path)  # type: ignore[arg-type]
    if not path.is_file():
        fail(
            f"no gateway buffer at {path}: is the gateway installed and has it run once? "
            "(the path is buffer.path in the gateway config)"
        )
    return path


def _named_device(name: str, config: Path | None, path: Path) -> str:
    """The full id of the device `--device NAME` names (edge.device_names): among the config's
    devices, if given, and those the buffer at `path` knows. Exit 1 with one `error:` line
    naming the known devices when it names none, or several."""
    from lifeline.edge.buffer.views import devices
    from lifeline.edge.device_names import KnownDevice, UnknownDevice, resolve_device

    known: list[KnownDevice] = []
    where = f"in the buffer {path}"
    if config is not None:
        cfg = _load(config)
        known += [KnownDevice(d.id, d.unit) for d in cfg.devices()]
        where = f"on gateway {cfg.gateway}"
    try:
        known += [KnownDevice(d) for d in devices(path)]
    except sqlite3.Error as exc:
        fail(f"cannot read {path}: {exc}")
    try:
        return resolve_device(name, known, where)
    except UnknownDevice as exc:
        fail(str(exc))


def _parse_since(text: str) -> int:
    """'2h' -> milliseconds; units s, m, h, d."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd])\s*", text, flags=re.ASCII)
    if not m:
        usage_error(f"{text!r} is not a duration like 90s, 30m, 2h or 7d", "--since")
    factor = {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return int(float(m.group(1)) * factor * 1000)


def _parse_severity(text: str) -> int:
    word = text.strip().lower()
    level = _SEVERITY_WORDS.get(word) or (int(word) if word in ("1", "2", "3", "4") else None)
    if level is None:
        usage_error(f"{text!r} is not a severity: 1-4 or critical, high, medium, low", "--severity")
    return level


def _alarm_json(r: AlarmRow) -> dict[str, Any]:
    return {
        "alarm_id": r.alarm_id,
        "time": utc_iso(r.ts_ms),
        "ts_ms": r.ts_ms,
        "device": r.device,
        "point": r.point,
        "type": r.alarm_type,
        "severity": r.severity,
        "state": r.state,
        "value": r.value,
        "limit": r.limit,
        "message": r.message,
        "ack_by": r.ack_by,
        "ack_note": r.ack_note,
    }


def _text(v: object) -> str:
    if v is None:
        return ""
    return f"{v:g}" if isinstance(v, float) else str(v)


def alarms_command(
    config: ConfigOpt = None,
    db: DbOpt = None,
    active: Annotated[
        bool, typer.Option("--active", help="Only alarms not back to normal (latest state each).")
    ] = False,
    since: Annotated[
        str | None, typer.Option(help="Only events newer than this, e.g. 30m, 2h, 7d.")
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(help="Only this device: its id, the part after GATEWAY., or a unit id."),
    ] = None,
    severity: Annotated[
        str | None,
        typer.Option(help="This level or more severe: 1-4 or critical, high, medium, low."),
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows.", min=1)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """The gateway's local alarm log, newest first (works with the uplink down)."""
    from lifeline.edge.buffer.views import alarms

    since_ms = _parse_since(since) if since else None
    worst = _parse_severity(severity) if severity else None
    path = _db(config, db)
    device = _named_device(device, config, path) if device is not None else None
    try:
        rows = alarms(path, open_only=active, limit=1_000_000)
    except sqlite3.Error as exc:
        fail(f"cannot read the alarm log in {path}: {exc}")
    now = time.time_ns() // 1_000_000
    rows.sort(key=lambda r: r.ts_ms, reverse=True)  # newest sample time first; ties: log order
    picked = [
        r
        for r in rows
        if (since_ms is None or r.ts_ms >= now - since_ms)
        and (device is None or r.device == device)
        and (worst is None or r.severity <= worst)
    ][:limit]
    if as_json:
        print_json([_alarm_json(r) for r in picked])
        return
    table = [
        [
            local_time(r.ts_ms),
            r.alarm_id,
            r.device,
            r.point,
            r.alarm_type,
            SEVERITY_NAMES.get(r.severity, str(r.severity)),
            r.state,
            _text(r.value),
            _text(r.limit),
            r.message,
            f"{r.ack_by}" + (f": {r.ack_note}" if r.ack_note else "") if r.ack_by else "",
        ]
        for r in picked
    ]
    columns = ["time", "alarm", "device", "point", "type", "severity", "state", "value"]
    columns += ["limit", "message", "ack"]
    print_table(columns, table, styles=[severity_style(r.severity) for r in picked])
    if not picked:
        typer.echo("no alarms match", err=True)


def ack_command(
    alarm: Annotated[str, typer.Argument(help="Alarm id as `alarms` shows it, e.g. gw-01:17.")],
    by: Annotated[str, typer.Option("--by", help="Who acknowledges (name or staff number).")],
    note: Annotated[str, typer.Option(help="What was found or done.")] = "",
    config: ConfigOpt = None,
    db: DbOpt = None,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the running gateway to apply it.", min=0)
    ] = 5.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print what was done as one JSON object, for scripts.")
    ] = False,
) -> None:
    """Acknowledge an alarm locally; the gateway sends the acknowledgement upstream when it can.

    Says what was done in one line, or with --json one object: alarm_id, by, note, applied
    (the running daemon applied it within --wait) and state (the alarm's state then, None
    while only queued).
    """
    from lifeline.edge.buffer.views import alarms, request_ack

    path = _db(config, db)
    if not by.strip():
        usage_error("--by must name who acknowledges", "--by")
    latest = next((r for r in alarms(path, limit=1_000_000) if r.alarm_id == alarm), None)
    if latest is None:
        fail(f"no alarm {alarm!r} in {path}; list them with `lifeline edge alarms`")
    if latest.state not in _UNACKED:
        who = f" (by {latest.ack_by})" if latest.ack_by else ""
        fail(f"alarm {alarm} is {latest.state}{who}: there is nothing to acknowledge")
    try:
        request_ack(path, alarm, by.strip(), note)
    except sqlite3.Error as exc:
        fail(f"cannot queue the acknowledgement in {path}: {exc} (run as the gateway's user?)")
    deadline = time.monotonic() + wait
    while True:
        newest = next((r for r in alarms(path, limit=1_000_000) if r.alarm_id == alarm), None)
        if newest is not None and newest.ack_by == by.strip():
            break
        if time.monotonic() >= deadline:
            newest = None
            break
        time.sleep(0.2)
    if as_json:
        state = newest.state if newest is not None else None
        applied = state is not None
        print_json(
            {"alarm_id": alarm, "by": by.strip(), "note": note, "applied": applied, "state": state}
        )
    elif newest is not None:
        typer.echo(
            f"{alarm} acknowledged by {by.strip()}: now {newest.state}; "
            "the gateway sends it to the collector when the link is up"
        )
    else:
        typer.echo(
            f"{alarm}: acknowledgement queued; the gateway daemon applies it when it runs "
            "(it did not within the wait: is `lifeline edge run` running?)"
        )


# --- status ----------------------------------------------------------------------------------


def _iso(ts_ms: int | None) -> str | None:
    return utc_iso(ts_ms) if ts_ms is not None else None


def _age(iso: str | None, now: int) -> str:
    """A time from the JSON form as '2026-11-21 20:58:37 (12 s ago)' in local time, or '-'."""
    if iso is None:
        return "-"
    from datetime import datetime

    ts_ms = int(datetime.fromisoformat(iso).timestamp() * 1000)
    return f"{local_time(ts_ms)} ({max(0, now - ts_ms) // 1000} s ago)"


def _status(path: Path, device_ids: list[str]) -> dict[str, Any]:
    """Everything `status` shows, from the daemon's health snapshot and the buffer."""
    from lifeline.edge.buffer.health import daemon_running
    from lifeline.edge.buffer.views import buffer_stats, gateway_health, open_alarm_counts

    stats = buffer_stats(path)
    health = gateway_health(path)
    open_alarms = open_alarm_counts(path)
    now = time.time_ns() // 1_000_000
    running, why = daemon_running(health, now)
    known = {d.device: d for d in health.devices} if health is not None else {}
    devices = []
    for dev in device_ids or list(known):
        h = known.get(dev)
        devices.append(
            {
                "device": dev,
                "state": h.state if h is not None else "unknown",
                "since": _iso(h.since_ms) if h is not None else None,
                "last_good_poll": _iso(h.last_ok_ms) if h is not None else None,
                "last_error": (h.last_error or None) if h is not None else None,
                "last_error_time": _iso(h.last_error_ms) if h is not None else None,
                "timeouts_retried": h.timeouts if h is not None else 0,
                "detail": (h.detail or None) if h is not None else None,
                "open_alarms": open_alarms.get(dev, 0),
            }
        )
    errors = [(d.last_error_ms, d.device, d.last_error) for d in known.values() if d.last_error]
    if health is not None and health.uplink_error:
        errors.append((health.uplink_error_ms, "uplink", health.uplink_error))
    last = max(errors, key=lambda e: e[0] or 0, default=None)
    problems = [f"device {d['device']} is {d['state']}" for d in devices if d["state"] == "offline"]
    if health is None or not health.uplink_connected:
        problems.append("the uplink is down")
    if health is not None and health.disk_full_since_ms is not None:
        cap = (health.buffer_cap_bytes or 0) / 1e6
        problems.append(
            f"the disk under the buffer is full since {_iso(health.disk_full_since_ms)}: the buffer"
            f" is bounded at {cap:.1f} MB, the oldest telemetry is evicted (alarms are kept)"
        )
    if health is not None and not health.clock_plausible:
        problems.append(
            f"the wall clock is implausible (it read {_iso(health.heartbeat_ms)}): no RTC or NTP"
            " not synced; readings carry that time"
        )
    if not running:
        problems.append(f"the daemon is not running: {why}")
    return {
        "daemon": {
            "running": running,
            "detail": why,
            "pid": health.pid if health is not None else None,
            "started": _iso(health.started_ms) if health is not None else None,
            "heartbeat": _iso(health.heartbeat_ms) if health is not None else None,
            "stopped": _iso(health.stopped_ms) if health is not None else None,
        },
        "devices": devices,
        "uplink": {
            "connected": bool(health is not None and health.uplink_connected),
            "since": _iso(health.uplink_since_ms) if health is not None else None,
            "last_error": (health.uplink_error or None) if health is not None else None,
            "last_error_time": _iso(health.uplink_error_ms) if health is not None else None,
            "last_puback": _iso(health.last_puback_ms) if health is not None else None,
        },
        "clock": {
            "plausible": health.clock_plausible if health is not None else None,
            "steps": health.clock_steps if health is not None else 0,
            "last_step_ms": health.clock_step_ms if health is not None else 0,
            "last_step_at": _iso(health.clock_step_at_ms) if health is not None else None,
        },
        "buffer": {
            "readings_waiting": stats.backlog_readings + stats.frozen_readings,
            "events_waiting": stats.pending_events,
            "batches_awaiting_puback": stats.frozen_batches,
            "evicted_readings": stats.evicted,
            "oldest_unsent": _iso(stats.oldest_unsent_ms),
            "disk_full_since": _iso(health.disk_full_since_ms) if health is not None else None,
            "bound_bytes": health.buffer_cap_bytes if health is not None else None,
            "not_stored_readings": health.disk_dropped if health is not None else 0,
        },
        "last_error": (
            {"time": _iso(last[0]), "source": last[1], "message": last[2]} if last else None
        ),
        "problems": problems,
        "now_ms": now,
    }


def status_command(config: ConfigOpt = None, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Gateway health at a glance: daemon, devices, uplink, buffer, last error. Exit 1 if unwell.

    Unwell: a device offline, the uplink down, the daemon not running (no fresh heartbeat), the
    disk under the buffer full, or the wall clock implausible.
    Device states are what the daemon last saw; with the daemon stopped they are its last word.
    """
    path = _db(config, db)
    ids = [d.id for d in _load(config).devices()] if config is not None else []
    try:
        st = _status(path, ids)
    except sqlite3.Error as exc:
        fail(f"cannot read {path}: {exc}")
    now = st.pop("now_ms")
    if as_json:
        print_json(st)
    else:
        _print_status(st, now)
    if st["problems"]:
        raise typer.Exit(1)


def _print_status(st: dict[str, Any], now: int) -> None:
    """The status as two tables: devices, then daemon, uplink, buffer and last error."""
    rows = [
        [
            d["device"],
            d["state"]
            + (f" since {_age(d['since'], now)}" if d["state"] != "online" else "")
            + (f": {d['detail']}" if d["detail"] and d["state"] == "degraded" else "")
            + (f" ({d['timeouts_retried']} timeouts retried)" if d["timeouts_retried"] else ""),
            _age(d["last_good_poll"], now),
            d["last_error"] or "-",
            str(d["open_alarms"]),
        ]
        for d in st["devices"]
    ]
    styles = [
        {"offline": "bold red", "degraded": "yellow"}.get(d["state"], "") for d in st["devices"]
    ]
    print_table(
        ["device", "state", "last good poll", "last error", "open alarms"], rows, styles=styles
    )
    dmn, up, b, err = st["daemon"], st["uplink"], st["buffer"], st["last_error"]
    if dmn["running"]:
        daemon = f"running ({dmn['detail']})"
    else:
        daemon = f"NOT running: {dmn['detail']}"
        if dmn["stopped"]:
            daemon += f" {_age(dmn['stopped'], now)}"
        elif dmn["heartbeat"]:
            daemon += f"; last heartbeat {_age(dmn['heartbeat'], now)}"
    uplink = ("connected" if up["connected"] else "DOWN") + f" since {_age(up['since'], now)}"
    if up["last_puback"]:
        uplink += f", last PUBACK {_age(up['last_puback'], now)}"
    if not up["connected"] and up["last_error"]:
        uplink += f": {up['last_error']}"
    summary = [
        ["daemon", daemon],
        ["uplink", uplink],
        ["clock", _clock_line(st["clock"], now)],
        ["buffer", f"{b['readings_waiting']} readings, {b['events_waiting']} events, "
         f"{b['batches_awaiting_puback']} batches awaiting PUBACK, "
         f"{b['evicted_readings']} readings evicted" + _disk_note(b, now)],
        ["oldest unsent", _age(b["oldest_unsent"], now)],
        ["last error", f"{_age(err['time'], now)} {err['source']}: {err['message']}"
         if err else "-"],
    ]  # fmt: skip
    print_table(["", ""], summary, header=False)


def _disk_note(b: dict[str, Any], now: int) -> str:
    """What a full disk does to the buffer, or nothing while it has room."""
    note = ""
    if b["disk_full_since"] is not None:
        note = (
            f"; DISK FULL since {_age(b['disk_full_since'], now)}:"
            f" bounded at {(b['bound_bytes'] or 0) / 1e6:.1f} MB"
        )
    if b["not_stored_readings"]:
        note += f"; {b['not_stored_readings']} readings could not be stored at all"
    return note


def _clock_line(clock: dict[str, Any], now: int) -> str:
    """'ok', or what is wrong with the wall clock and the last step the daemon saw."""
    if clock["plausible"] is None:
        return "-"
    text = "ok" if clock["plausible"] else "IMPLAUSIBLE (no RTC, NTP not synced?)"
    if clock["steps"]:
        text += (
            f"; stepped {clock['last_step_ms'] / 1000:+.1f} s at {_age(clock['last_step_at'], now)}"
            f" ({clock['steps']} step(s) since the daemon started)"
        )
    return text


# --- tail ------------------------------------------------------------------------------------


def _entry(e: AlarmRow | Record) -> dict[str, Any]:
    """A tail line's JSON form: an alarm log entry or a reading."""
    from lifeline.edge.buffer.views import AlarmRow

    if isinstance(e, AlarmRow):
        return {"kind": "alarm", **_alarm_json(e)}
    return _reading(e.device, e.point, e.ts_ms, e.value, e.quality.value)


def _reading(device: str, point: str, ts: int, value: Any, quality: str) -> dict[str, Any]:
    return {
        "kind": "reading",
        "time": utc_iso(ts),
        "ts_ms": ts,
        "device": device,
        "point": point,
        "value": value,
        "quality": quality,
    }


def _tail_line(e: dict[str, Any]) -> str:
    when = local_time(e["ts_ms"])
    if e["kind"] == "alarm":
        sev = SEVERITY_NAMES.get(e["severity"], str(e["severity"]))
        ack = f" ack {e['ack_by']}" if e["ack_by"] else ""
        return (
            f"{when}  ALARM {e['alarm_id']} {e['device']}/{e['point']} {e['type']} {sev} "
            f"{e['state']} value={_text(e['value'])}{ack}  {e['message']}"
        )
    q = "" if e["quality"] == "good" else f" ({e['quality']})"
    return f"{when}  {e['device']} {e['point']}={_text(e['value'])}{q}"


def tail_command(
    config: ConfigOpt = None,
    db: DbOpt = None,
    alarms_only: Annotated[bool, typer.Option("--alarms-only", help="Only alarm events.")] = False,
    device: Annotated[
        str | None,
        typer.Option(help="Only this device: its id, the part after GATEWAY., or a unit id."),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="First show alarm events of the last 30m, 2h, ...")
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between looks.", min=0.05)] = 0.5,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: Ctrl-C).")
    ] = None,
    count: Annotated[int | None, typer.Option(help="Stop after this many lines.", min=1)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Follow new alarms and readings as the gateway stores them.

    Alarms are never missed. Readings are shown from the buffer: with the uplink down all of
    them; with it up, those that are still waiting when we look (most, not all).
    """
    from lifeline.edge.buffer.views import Follower

    since_ms = _parse_since(since) if since else None
    path = _db(config, db)
    device = _named_device(device, config, path) if device is not None else None
    try:
        follower = Follower(path)
    except sqlite3.Error as exc:
        fail(f"cannot open {path} read-only: {exc}")
    shown = 0
    stop = time.monotonic() + duration if duration is not None else None
    try:
        start = time.time_ns() // 1_000_000 - since_ms if since_ms is not None else None
        follower.start(start)
        while stop is None or time.monotonic() < stop:
            for e in map(_entry, follower.poll()):
                if (alarms_only and e["kind"] != "alarm") or (device and e["device"] != device):
                    continue
                if as_json:
                    print_json(e)
                else:
                    sys.stdout.write(_tail_line(e) + "\n")
                    sys.stdout.flush()
                shown += 1
                if count is not None and shown >= count:
                    return
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    except sqlite3.Error as exc:
        fail(f"cannot read {path}: {exc}")
    finally:
        follower.close()


# --- write -----------------------------------------------------------------------------------


def _parse_value(text: str, dtype: str) -> bool | int | float | str:
    if dtype == "bool":
        word = text.strip().lower()
        if word in ("1", "on", "true", "yes"):
            return True
        if word in ("0", "off", "false", "no"):
            return False
        usage_error(f"{text!r} is not on/off (or 1/0, true/false)", "VALUE")
    if dtype == "string":
        return text
    try:
        number = float(text)
    except ValueError:
        usage_error(f"{text!r} is not a number", "VALUE")
    return int(number) if number.is_integer() and dtype != "float32" else number


def write_command(
    device: Annotated[
        str, typer.Argument(help="The device: its id, the part after GATEWAY., or a unit id.")
    ],
    point: Annotated[str, typer.Argument(help="Writable point, e.g. lamp_switch or dimming.")],
    value: Annotated[str, typer.Argument(help="New value: on/off for switches, a number else.")],
    config: Annotated[Path, typer.Option("--config", "-c", help="Gateway config YAML.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write one point of a device (switch a lamp, set dimming), then read it back.

    On an RS-485 bus the gateway daemon holds the port: stop it first (systemctl stop
    lifeline-edge) or send the write through the collector's command instead.
    """
    from lifeline.drivers.errors import DriverError
    from lifeline.drivers.link import poll_device
    from lifeline.drivers.planner import plan_reads
    from lifeline.drivers.values import encode_value
    from lifeline.edge.config import ConfigError, resolve_profiles
    from lifeline.edge.device_names import KnownDevice, UnknownDevice, resolve_device
    from lifeline.edge.scheduler import make_link

    cfg = _load(config)
    try:
        profiles = resolve_profiles(cfg, config.parent, str(config))
    except ConfigError as exc:
        fail(str(exc))
    known = [KnownDevice(d.id, d.unit) for d in cfg.devices()]
    try:
        device = resolve_device(device, known, f"on gateway {cfg.gateway}")
    except UnknownDevice as exc:
        fail(str(exc))
    bus, dev = next((bus, d) for bus in cfg.buses for d in bus.devices if d.id == device)
    profile = profiles[dev.id]
    try:
        spec = profile.point(point)
    except KeyError as exc:
        usage_error(str(exc.args[0]), "POINT")
    if not spec.writable:
        writable = [p.name for p in profile.points if p.writable] or ["none"]
        usage_error(f"{point} of {device} is read-only; writable: {', '.join(writable)}", "POINT")
    parsed = _parse_value(value, spec.dtype.value)
    try:  # before asking or connecting: a value the point cannot hold is not written at all
        encode_value(spec, parsed, exact=True)
    except ValueError as exc:
        usage_error(str(exc), "VALUE")
    if not yes:
        if not sys.stdin.isatty():
            usage_error("refusing to write without confirmation: pass --yes", "--yes")
        typer.confirm(f"Write {point} = {_text(parsed)} to {device} (unit {dev.unit})?", abort=True)

    async def go() -> Any:
        link = make_link(bus)
        try:
            await link.write(dev.unit, spec, parsed, dev.timeout_s)
            values = await poll_device(link, dev.unit, plan_reads([spec]), dev.timeout_s, 1)
            return values[spec.name]
        finally:
            await link.aclose()

    try:
        back = asyncio.run(go())
    except (DriverError, ValueError) as exc:
        fail(f"write to {device} failed: {exc}")
    if as_json:
        print_json(
            {
                "device": device,
                "unit": dev.unit,
                "point": point,
                "written": parsed,
                "read_back": back,
                "point_unit": spec.unit or None,
                "ok": back == parsed,
            }
        )
    else:
        typer.echo(f"{device} {point} = {_text(back)} {spec.unit}".rstrip() + " (read back)")
    if back != parsed:
        fail(f"{device} accepted the write but reads back {back!r}, not {parsed!r}")


def register(app: typer.Typer) -> None:
    """Add the crew commands (alarms, ack, status, tail, write) to `lifeline edge`."""
    app.command("alarms")(alarms_command)
    app.command("ack")(ack_command)
    app.command("status")(status_command)
    app.command("tail")(tail_command)
    app.command("write")(write_command)
