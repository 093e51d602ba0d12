"""The gateway's composition root: builds outbox, rules, pollers and uplink from a config."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import signal
import sqlite3
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from drivers.errors import DriverError
from drivers.planner import Value
from drivers.profile import AlarmRuleSpec, Profile
from edge.buffer import DeviceHealth, GatewayHealth, Outbox, Sample
from edge.clock import ClockChange, ClockWatch, mono_ms, wall_ms
from edge.config import (
    ConfigError,
    GatewayConfig,
    LocationConfig,
    load_config,
    point_rules,
    resolve_profiles,
)
from edge.rules import AlarmEngine, ExceptionFilter, Rule, UnknownAlarm
from edge.scheduler import BusPoller, Device, Health, make_device
from edge.uplink import Uplink, first_set
from wire import (
    AlarmEvent,
    Birth,
    Command,
    CommandReply,
    DeviceEvent,
    DeviceInfo,
    Location,
    Quality,
    Severity,
)

log = logging.getLogger("lifeline.edge")

_HOUSEKEEPING_S = 1.0
_PRUNE_EVERY_S = 3600.0
_DRAIN_ON_EXIT_S = 3.0


def software_version() -> str:
    """The installed Lifeline version."""
    try:
        return version("lifeline")
    except PackageNotFoundError:
        return "0+unknown"


def to_rule(spec: AlarmRuleSpec, baseline: float = 0.0) -> Rule:
    """Translate a profile/config alarm rule into the rules engine's form.

    `baseline` is the point's installed zero (its unit); only a deviation rule uses it.
    """
    return Rule(
        type=spec.type,
        limit=spec.limit if spec.limit is not None else 0.0,
        severity=Severity(spec.severity),
        deadband=spec.deadband,
        on_delay_s=spec.on_delay_s,
        off_delay_s=spec.off_delay_s,
        when=spec.when if spec.when is not None else True,
        message=spec.message,
        baseline=baseline if spec.deviation else None,
    )


class Gateway:
    """One running gateway: poll -> rules -> outbox -> uplink, plus commands and status."""

    def __init__(
        self,
        cfg: GatewayConfig,
        profiles: dict[str, Profile],
        path: Path,
        wall: Callable[[], int] = wall_ms,
        mono: Callable[[], int] = mono_ms,
    ) -> None:
        self.cfg = cfg
        self.path = path
        self.session = secrets.token_hex(6)
        # Wall clock (UTC ms) stamps data; the monotonic one (ms) times everything.
        self._wall, self._mono = wall, mono
        self.clock = ClockWatch()
        self.started = time.monotonic()
        self.started_ms = wall()
        buf = cfg.buffer
        self.outbox = Outbox(
            buf.path, cfg.gateway, self.session, buf.max_mb, buf.batch_records, buf.batch_bytes
        )
        self.engine = AlarmEngine(
            f"{cfg.gateway}:{self.outbox.epoch}", self.outbox.next_alarm_number
        )
        self.uplink = Uplink(
            cfg.mqtt, cfg.site, cfg.gateway, self.session, self.outbox, self.birth, self.command
        )
        self.pollers: list[BusPoller] = []
        self.devices: dict[str, Device] = {}
        self._filters: dict[str, dict[str, ExceptionFilter]] = {}
        self._has_data = asyncio.Event()
        self._poller_tasks: list[asyncio.Task[None]] = []
        self._tg: asyncio.TaskGroup | None = None
        self._failure: GatewayFailed | None = None
        self._failed = asyncio.Event()
        self._delay_timer: asyncio.TimerHandle | None = None
        self._delay_due_ms: int | None = None
        self._build(cfg, profiles)
        self.engine.restore(self.outbox.open_alarms(), mono())
        self.outbox.health_source = self.health
        self.outbox.on_disk_full = self._disk_full_changed
        self.watch_clock()

    # --- building -------------------------------------------------------------------------------

    def _build(self, cfg: GatewayConfig, profiles: dict[str, Profile]) -> None:
        before = self.devices
        self.pollers, self.devices, self._filters = [], {}, {}
        for bus in cfg.buses:
            devs = []
            for dc in bus.devices:
                profile = profiles[dc.id]
                dev = make_device(dc, profile, cfg.health)
                prev = before.get(dc.id)
                if prev is not None:  # a reload keeps what `status` shows about the device
                    dev.last_ok_ms, dev.last_error = prev.last_ok_ms, prev.last_error
                    dev.last_error_ms = prev.last_error_ms
                devs.append(dev)
                self.devices[dc.id] = dev
                for p in profile.points:
                    baseline = dc.baselines.get(p.name, 0.0)
                    rules = [to_rule(s, baseline) for s in point_rules(dc, p)]
                    if dc.stale_after_s is not None:
                        severity = Severity(dc.stale_severity)
                        rules.append(Rule("stale", dc.stale_after_s, severity))
                    self.engine.set_rules(dc.id, p.name, rules)
                if dc.report.deadband is not None:
                    self._filters[dc.id] = {
                        name: ExceptionFilter(dc.report.deadband, dc.report.heartbeat_s)
                        for name in dev.point_names
                    }
            self.pollers.append(BusPoller(bus, devs, self))

    def birth(self) -> Birth:
        """The birth certificate of this session, with the current alarm picture."""
        places = self.cfg.locations()
        return Birth(
            self.cfg.gateway,
            self.session,
            0,
            self._wall(),
            epoch=self.outbox.epoch,
            high_water=self.outbox.next_seq - 1,
            alarms=tuple(self.outbox.open_alarms()),
            clock=self.clock.info(),
            software=software_version(),
            config_hash=self.cfg.hash(),
            devices=tuple(
                DeviceInfo(
                    d.id,
                    d.profile.name,
                    d.profile.family,
                    d.health.state is not Health.OFFLINE,
                    d.cfg.asset,
                    _wire_location(places[d.id]),
                )
                for d in self.devices.values()
            ),
        )

    def health(self) -> GatewayHealth:
        """The health snapshot `lifeline edge status` reads (the outbox persists it)."""
        up = self.uplink
        return GatewayHealth(
            pid=os.getpid(),
            started_ms=self.started_ms,
            heartbeat_ms=self._wall(),
            stopped_ms=None,
            uplink_connected=up.connected,
            uplink_since_ms=up.state_since_ms,
            uplink_error=up.last_error,
            uplink_error_ms=up.last_error_ms,
            last_puback_ms=up.last_puback_ms,
            devices=tuple(
                DeviceHealth(
                    d.id,
                    d.health.state.value,
                    d.state_since_ms,
                    d.last_ok_ms,
                    d.last_error,
                    d.last_error_ms,
                    d.health.timeouts,
                    d.health.detail,
                )
                for d in self.devices.values()
            ),
            clock_plausible=self.clock.plausible,
            clock_step_ms=self.clock.step_ms,
            clock_step_at_ms=self.clock.step_at_ms or None,
            clock_steps=self.clock.steps,
            disk_full_since_ms=self.outbox.disk_full_since_ms,
            disk_dropped=self.outbox.disk_dropped,
            buffer_cap_bytes=self.outbox.cap_bytes,
        )

    def watch_clock(self) -> None:
        """Look at the wall clock against the monotonic one; log and announce what changed.

        A step or a change of plausibility is logged once, shown by `edge status`, and
        announced in a new birth so the collector can judge the stamps of this session.
        """
        changes = self.clock.look(self._wall(), self._mono())
        if not changes:
            return
        for change in changes:
            if change is ClockChange.STEPPED:
                log.warning(
                    "wall clock stepped by %+.3f s (now %s): samples keep the clock's time;"
                    " delays and timers run on the monotonic clock; announcing a new birth",
                    self.clock.step_ms / 1000,
                    _iso(self.clock.step_at_ms),
                )
                self.uplink.clock_stepped(self.clock.step_ms)
            elif change is ClockChange.IMPLAUSIBLE:
                log.warning(
                    "wall clock implausible: it reads %s, before this software was built"
                    " (no RTC, NTP not synced?); samples carry that time, alarms are raised",
                    _iso(self._wall()),
                )
            else:
                log.warning("wall clock plausible again: it reads %s", _iso(self._wall()))
        self.outbox.health_changed()
        self.uplink.publish_birth()

    # --- poll sink (hot path) -------------------------------------------------------------------

    def values(self, device: Device, values: dict[str, Value], ts_ms: int) -> None:
        """A device answered: evaluate rules, filter by exception, queue for the outbox."""
        mono = self._mono()  # times delays and heartbeats; ts_ms (wall) stamps the data
        dev_id = device.id
        engine = self.engine
        filters = self._filters.get(dev_id)
        good = Quality.GOOD
        out: list[Sample] = []
        events: list[AlarmEvent] = []
        for name, raw in values.items():
            value: Value | None = raw
            quality = good
            if raw.__class__ is float and not math.isfinite(raw):
                value, quality = None, Quality.BAD  # the wire carries no NaN
            elif engine.has_rules(dev_id, name):
                events.extend(engine.evaluate(dev_id, name, value, ts_ms, mono))
            if filters is None or filters[name].admit(value, quality, mono):
                out.append((dev_id, name, ts_ms, value, quality))
        self.outbox.add(out)
        self._has_data.set()
        if events:
            self._alarm_events(events)
        if engine.next_due_ms is not None:
            self._arm_delay_timer()
        if device.last_ok_ms is None:  # its first answer: `status` should show it soon
            self.outbox.health_changed()

    def failure(self, device: Device, error: DriverError, ts_ms: int) -> None:
        """A poll failed: counted on the device; health decides what else happens."""

    def transition(self, device: Device, state: Health, reason: str, ts_ms: int) -> None:
        """Log once, emit device events and comm-loss alarms, mark points stale when offline."""
        log.warning("device %s is now %s: %s", device.id, state.value, reason)
        self.outbox.health_changed()
        severity = Severity(self.cfg.health.comm_loss_severity)
        if state is Health.OFFLINE:
            self.outbox.add_device_events([DeviceEvent(device.id, False, ts_ms, reason)])
            self._alarm_events(
                self.engine.comm_loss(device.id, True, ts_ms, self._mono(), severity)
            )
            self.outbox.add(
                (device.id, name, ts_ms, None, Quality.STALE) for name in device.point_names
            )
            self._has_data.set()
        else:  # online or degraded: it answers, so comm loss (if any) is over
            events = self.engine.comm_loss(device.id, False, ts_ms, self._mono(), severity)
            if events:  # it had been offline
                self.outbox.add_device_events([DeviceEvent(device.id, True, ts_ms, reason)])
                self._alarm_events(events)
        self.uplink.kick()

    def _arm_delay_timer(self) -> None:
        """Wake up when the earliest running on/off delay expires (unless already set for it)."""
        due = self.engine.next_due_ms
        if due is None or (self._delay_due_ms is not None and self._delay_due_ms <= due):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not serving (values fed by hand): the housekeeping tick will not run either
        if self._delay_timer is not None:
            self._delay_timer.cancel()
        self._delay_due_ms = due
        wait_s = max(0, due - self._mono()) / 1000 + 0.001
        self._delay_timer = loop.call_later(wait_s, self._delays_due)

    def _delays_due(self) -> None:
        self._delay_timer = self._delay_due_ms = None
        try:
            self._tick()
        except Exception as exc:  # a loop callback: it would die in silence otherwise
            self.fail("alarm delay timer", exc)

    def _tick(self) -> None:
        events = self.engine.tick(self._wall(), self._mono())
        if events:
            self._alarm_events(events)
        if self.engine.next_due_ms is not None:
            self._arm_delay_timer()

    def _alarm_events(self, events: list[AlarmEvent]) -> None:
        for e in events:
            log.warning("alarm %s %s %s/%s: %s", e.alarm_id, e.state, e.device, e.point, e.message)
        self.outbox.add_alarm_events(events)
        self.uplink.kick()

    # --- commands -------------------------------------------------------------------------------

    async def command(self, cmd: Command) -> CommandReply:
        """Execute one command from the collector and say how it went."""
        handlers = {
            "rebirth": self._cmd_rebirth,
            "ack": self._cmd_ack,
            "reload": self._cmd_reload,
            "write": self._cmd_write,
        }
        handler = handlers.get(cmd.name)
        if handler is None:
            return self._reply(cmd, error=f"unknown command {cmd.name!r}; know {sorted(handlers)}")
        mqtt = self.cfg.mqtt
        if cmd.name != "rebirth" and not (mqtt.authenticated or mqtt.allow_anonymous_commands):
            # Over an anonymous connection the command may come from anybody on the broker.
            log.warning(
                "refused command %s %s: anonymous MQTT connection", cmd.name, cmd.command_id
            )
            return self._reply(
                cmd,
                error=f"refused {cmd.name!r}: this gateway's MQTT connection is anonymous, so "
                "the command cannot be told from anybody's; give it mqtt.username (broker "
                "passwords and ACL) or set mqtt.allow_anonymous_commands on a closed broker",
            )
        try:
            result = await handler(cmd.args)
        except (ValueError, KeyError, DriverError, ConfigError) as exc:
            return self._reply(cmd, error=str(exc))
        return self._reply(cmd, ok=True, result=result)

    def _reply(
        self,
        cmd: Command,
        ok: bool = False,
        result: dict[str, Value | None] | None = None,
        error: str = "",
    ) -> CommandReply:
        return CommandReply(
            self.cfg.gateway,
            self.session,
            0,
            self._wall(),
            command_id=cmd.command_id,
            ok=ok,
            result=dict(result or {}),
            error=error,
        )

    async def _cmd_rebirth(self, args: dict[str, Value | None]) -> dict[str, Value | None]:
        self.uplink.publish_birth()
        return {}

    async def _cmd_ack(self, args: dict[str, Value | None]) -> dict[str, Value | None]:
        alarm_id = _str_arg(args, "alarm_id")
        who = str(args.get("who") or "collector")
        note = str(args.get("note") or "")
        state = self.acknowledge(alarm_id, who, note)
        return {"alarm_id": alarm_id, "state": state}

    def acknowledge(self, alarm_id: str, who: str, note: str) -> str:
        """Acknowledge an alarm (collector or crew CLI); return its new state."""
        try:
            event = self.engine.acknowledge(alarm_id, who, note, self._wall())
        except UnknownAlarm:
            raise ValueError(f"no unacknowledged alarm {alarm_id!r} on this gateway") from None
        self._alarm_events([event])
        return event.state.value

    async def _cmd_reload(self, args: dict[str, Value | None]) -> dict[str, Value | None]:
        path = self._reload_path(args.get("path"))
        cfg = load_config(path)  # ConfigError: the reply carries the reason, we keep running
        profiles = resolve_profiles(cfg, path.parent, str(path))
        fixed = ("gateway", "site", "mqtt", "buffer")
        changed = [k for k in fixed if getattr(cfg, k) != getattr(self.cfg, k)]
        if changed:
            raise ValueError(f"{', '.join(changed)} changed: that needs a restart, not a reload")
        await self._stop_pollers()
        self.cfg, self.path = cfg, path
        before = {(d.id, name) for d in self.devices.values() for name in d.point_names}
        self._build(cfg, profiles)  # unchanged rules keep their alarm state
        after = {(d.id, name) for d in self.devices.values() for name in d.point_names}
        for dev_id, name in before - after:
            self.engine.set_rules(dev_id, name, [])
        self._start_pollers()
        self.uplink.publish_birth()
        return {"config_hash": cfg.hash(), "devices": len(self.devices)}

    def _reload_path(self, arg: Value | None) -> Path:
        """The file a `reload` may read: a .yaml file in this gateway's config directory (a
        relative name is taken from there), after resolving symlinks; ValueError otherwise."""
        home = self.path.resolve().parent
        if arg is None or arg == "":
            return self.path
        path = (home / str(arg)).resolve()
        if not path.is_relative_to(home) or path.suffix not in (".yaml", ".yml"):
            raise ValueError(f"reload reads only .yaml files in the config directory {home}")
        return path

    async def _cmd_write(self, args: dict[str, Value | None]) -> dict[str, Value | None]:
        dev_id = _str_arg(args, "device")
        point_name = _str_arg(args, "point")
        value = args.get("value")
        if value is None:
            raise ValueError("missing argument 'value'")
        dev = self.devices.get(dev_id)
        if dev is None:
            raise ValueError(f"no device {dev_id!r} on this gateway")
        point = dev.profile.point(point_name)
        if not point.writable:
            raise ValueError(f"point {point_name!r} of {dev_id} is not writable")
        poller = next(p for p in self.pollers if dev in p.devices)
        if poller.link is None:
            raise ValueError(f"the bus of {dev_id} is not running")
        await poller.link.write(dev.cfg.unit, point, value, dev.cfg.timeout_s)
        return {"device": dev_id, "point": point_name, "value": value, "modbus": "ok"}

    # --- running --------------------------------------------------------------------------------

    def fail(self, where: str, exc: BaseException) -> None:
        """Something of the gateway died: log it once and stop the gateway (exit non-zero).

        Every task and callback ends up here rather than dying alone: a gateway that polls
        without an uplink, or keeps a socket without a flusher, is a zombie nobody notices.
        """
        if self._failure is not None:
            return
        log.error(
            "%s failed: %s: %s; stopping the gateway (exit 1, for systemd to restart it)",
            where,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        self._failure = GatewayFailed(f"{where} failed: {type(exc).__name__}: {exc}")
        self._failed.set()

    async def _guard(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        """Run one long-running task; its failure stops the whole gateway."""
        try:
            await work
        except Exception as exc:  # any failure, not only the ones we thought of
            self.fail(name, exc)

    def _start_pollers(self) -> None:
        assert self._tg is not None, "pollers run inside Gateway.run"
        self._poller_tasks = [
            self._tg.create_task(self._guard(f"bus {p.name}", p.run()), name=f"bus {p.name}")
            for p in self.pollers
        ]

    async def _stop_pollers(self) -> None:
        tasks, self._poller_tasks = self._poller_tasks, []
        # Python 3.11's asyncio.wait_for can swallow a cancellation that races with a
        # completing wait (fixed in 3.12); cancel until it sticks rather than trust every
        # await below a poller to avoid it.
        while pending := [t for t in tasks if not t.done()]:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=0.2)

    async def _flusher(self) -> None:
        flush_s = self.cfg.buffer.flush_s
        while True:
            await self._has_data.wait()
            await asyncio.sleep(flush_s)  # gather a batch: one transaction, not one per reading
            self._has_data.clear()
            self._flush()

    def _flush(self) -> None:
        frozen = self.outbox.flush(self.uplink.live_since_ms, self.uplink.room)
        if frozen or self.outbox.backlog:
            self.uplink.kick()

    async def _housekeeping(self) -> None:
        next_status = time.monotonic() + self.cfg.status_interval_s
        next_prune = time.monotonic()
        while True:
            await asyncio.sleep(_HOUSEKEEPING_S)
            self.outbox.commit_acks()
            self.outbox.check_disk()
            self.watch_clock()
            self.outbox.save_health()  # the heartbeat, unless a flush wrote it already
            self._tick()  # stale timers; delays too, should a timer have been missed
            for alarm_id, who, note in self.outbox.take_ack_requests():
                try:
                    self.acknowledge(alarm_id, who, note)
                except ValueError as exc:
                    log.warning("local acknowledgement ignored: %s", exc)
            now = time.monotonic()
            if now >= next_status:
                next_status = now + self.cfg.status_interval_s
                self.uplink.publish_status(self.counters())
            if now >= next_prune:
                next_prune = now + _PRUNE_EVERY_S
                self.outbox.prune_alarm_log(self.cfg.buffer.alarm_retention_days)

    def _disk_full_changed(self, full: bool) -> None:
        """A full disk began or ended: the collector hears it now, not at the next status."""
        self.uplink.publish_status(self.counters())

    def counters(self) -> dict[str, int | float]:
        """Figures for the periodic status message."""
        box = self.outbox
        c: dict[str, int | float] = {
            "uptime_s": round(time.monotonic() - self.started, 1),
            "polls": sum(d.polls for d in self.devices.values()),
            "poll_errors": sum(d.errors for d in self.devices.values()),
            "devices_offline": sum(d.health.state is Health.OFFLINE for d in self.devices.values()),
            "devices_degraded": sum(
                d.health.state is Health.DEGRADED for d in self.devices.values()
            ),
            "timeouts_retried": sum(d.health.timeouts for d in self.devices.values()),
            "busy_answers": sum(d.busy for d in self.devices.values()),
            "link_reconnects": sum(p.link_stats.reconnects for p in self.pollers),
            "link_noise_bytes": sum(p.link_stats.noise_bytes for p in self.pollers),
            "link_echoes": sum(p.link_stats.echoes for p in self.pollers),
            "link_stale_answers": sum(p.link_stats.stale_answers for p in self.pollers),
            "buffer_rows": box.backlog,
            "buffer_batches": box.frozen_count(),
            "buffer_bytes": box.used_bytes(),
            "buffer_cap_bytes": box.cap_bytes,
            "evicted": box.evicted,
            "disk_full": int(box.disk_full_since_ms is not None),
            "disk_dropped": box.disk_dropped,
            "seq": box.next_seq - 1,
            "clock_plausible": int(self.clock.plausible),
            "clock_steps": self.clock.steps,
            "clock_step_ms": self.clock.step_ms,
        }
        c.update(self.uplink.counters())
        for d in list(self.devices.values())[:200]:
            c[f"errors.{d.id}"] = d.errors
        return c

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then flush, drain briefly, publish death and disconnect.

        The long-running tasks (uplink, flusher, housekeeping, one poller per bus) run in one
        TaskGroup: when any of them, or a callback, fails, the others are stopped and
        GatewayFailed is raised (the caller exits non-zero). The outbox stays open: `close`.
        """
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                services = [
                    tg.create_task(self._guard(name, work), name=name)
                    for name, work in (
                        ("uplink", self.uplink.run()),
                        ("flusher", self._flusher()),
                        ("housekeeping", self._housekeeping()),
                    )
                ]
                self._start_pollers()
                log.info(
                    "gateway %s polling %d devices on %d buses (config %s)",
                    self.cfg.gateway,
                    len(self.devices),
                    len(self.pollers),
                    self.cfg.hash(),
                )
                await first_set(stop, self._failed)
                if self._failure is not None:
                    raise self._failure
                await self._stop_pollers()
                self._flush()
                if self.uplink.connected:
                    await self.uplink.drain(_DRAIN_ON_EXIT_S)
                await self.uplink.close("shutdown")  # death, then DISCONNECT: the uplink ends
                for task in services:
                    task.cancel()  # the flusher and housekeeping wait idle; their work is done
        except BaseExceptionGroup:
            if self._failure is None:
                raise
            raise self._failure from None
        finally:
            await self._stop_pollers()
            self._tg = None

    def close(self) -> None:
        """Close the buffer (what is held in memory is committed if the disk lets it)."""
        self.outbox.close()


class GatewayFailed(Exception):
    """A task or callback of the gateway died; the process exits non-zero."""


def _wire_location(loc: LocationConfig | None) -> Location | None:
    return None if loc is None else loc.to_wire()


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _str_arg(args: dict[str, Value | None], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"argument {name!r} must be a non-empty string")
    return value


async def serve(path: Path) -> None:
    """Load the config, run the gateway until SIGTERM/SIGINT, shut down cleanly.

    Raises ConfigError (bad config), BufferFull or sqlite3.Error (the buffer cannot be opened)
    and GatewayFailed (a part of the running gateway died).
    """
    cfg = load_config(path)
    profiles = resolve_profiles(cfg, path.parent, str(path))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gateway = Gateway(cfg, profiles, path)
    try:
        await gateway.run(stop)
    finally:
        try:
            gateway.close()
        except sqlite3.Error as exc:  # the failure that stopped us matters more
            log.error("closing the buffer failed: %s", exc)
    log.info("gateway %s stopped cleanly", cfg.gateway)
