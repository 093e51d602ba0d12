"""The gateway's composition root and its runtime.

`build` is the root: from a validated config it opens the real adapters (the SQLite `Outbox`,
the paho `Uplink`, a `BusPoller` per bus) and hands them to a `Gateway`. `Gateway` takes its
adapters through the ports of edge/ports.py (unit tests pass in-memory fakes), wires the data
path (edge/pipeline.py) and the command handlers (edge/commands.py), runs the long-running
tasks under one TaskGroup and tells what it is: birth, health snapshot, status counters.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import sqlite3
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from lifeline.drivers.link import Link
from lifeline.drivers.profile import Profile
from lifeline.edge.buffer import DeviceHealth, GatewayHealth, Outbox
from lifeline.edge.clock import ClockChange, ClockWatch, mono_ms, wall_ms
from lifeline.edge.commands import Commands
from lifeline.edge.config import GatewayConfig, LocationConfig, load_config, resolve_profiles
from lifeline.edge.pipeline import Pipeline
from lifeline.edge.ports import Buffer, CommandHandler, Poller, PollerFactory, TransportFactory
from lifeline.edge.rules import AlarmEngine
from lifeline.edge.scheduler import BusPoller, Device, Health
from lifeline.edge.uplink import Uplink, first_set
from lifeline.wire import Birth, DeviceInfo, Location

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


class Gateway:
    """One running gateway over the adapters it is given; a context manager that closes the buffer.

    `cfg` and `profiles` are validated (edge.config), `path` is the config file (a reload
    without a path reads it again). `session` names this process's MQTT session; `buffer` is
    the opened store-and-forward buffer, `uplink` builds the transport from the gateway's birth
    source and command handler, `poller` the poll loop of one bus; `wall` (UTC ms) stamps data,
    `mono` (ms) times everything else. Raises ValueError when a rule or read plan of the config
    cannot be built, BufferFull when the buffer cannot take an alarm number.
    """

    def __init__(
        self,
        cfg: GatewayConfig,
        profiles: dict[str, Profile],
        path: Path,
        *,
        session: str,
        buffer: Buffer,
        uplink: TransportFactory,
        poller: PollerFactory = BusPoller,
        wall: Callable[[], int] = wall_ms,
        mono: Callable[[], int] = mono_ms,
    ) -> None:
        self.cfg = cfg
        self.path = path
        self.session = session
        self._wall, self._mono = wall, mono
        self.clock = ClockWatch()
        self.started_mono_ms = mono()
        self.started_ms = wall()
        self.buffer = buffer
        self.engine = AlarmEngine(f"{cfg.gateway}:{buffer.epoch}", buffer.next_alarm_number)
        trusted = cfg.mqtt.authenticated or cfg.mqtt.allow_anonymous_commands
        self.commands = Commands(cfg.gateway, session, self, wall, trusted)
        self.uplink = uplink(self.birth, self.commands.handle)
        self.pipeline = Pipeline(buffer, self.engine, self.uplink, wall, mono, self.fail)
        self._make_poller = poller
        self.pollers: list[Poller] = []
        self._poller_tasks: list[asyncio.Task[None]] = []
        self._tg: asyncio.TaskGroup | None = None
        self._failure: GatewayFailed | None = None
        self._failed = asyncio.Event()
        self._load(cfg, profiles)
        self.engine.restore(buffer.open_alarms(), mono())
        buffer.health_source = self.health
        buffer.on_disk_full = self._disk_full_changed
        self.watch_clock()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.close()
        except sqlite3.Error as error:  # the failure that stopped us matters more
            log.error("closing the buffer failed: %s", error)

    @property
    def devices(self) -> dict[str, Device]:
        """The configured devices by id."""
        return self.pipeline.devices

    def _load(self, cfg: GatewayConfig, profiles: dict[str, Profile]) -> None:
        self.pollers = [
            self._make_poller(bus, devs, self.pipeline)
            for bus, devs in self.pipeline.load(cfg, profiles)
        ]

    # --- what the gateway tells: birth, health, counters ------------------------------------

    def birth(self) -> Birth:
        """The birth certificate of this session, with the current alarm picture."""
        places = self.cfg.locations()
        return Birth(
            self.cfg.gateway,
            self.session,
            0,
            self._wall(),
            epoch=self.buffer.epoch,
            high_water=self.buffer.next_seq - 1,
            alarms=tuple(self.buffer.open_alarms()),
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
        """The health snapshot `lifeline edge status` reads (the buffer persists it)."""
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
            disk_full_since_ms=self.buffer.disk_full_since_ms,
            disk_dropped=self.buffer.disk_dropped,
            buffer_cap_bytes=self.buffer.cap_bytes,
        )

    def counters(self) -> dict[str, int | float]:
        """Figures for the periodic status message."""
        box = self.buffer
        devices = self.devices.values()
        c: dict[str, int | float] = {
            "uptime_s": round((self._mono() - self.started_mono_ms) / 1000, 1),
            "polls": sum(d.polls for d in devices),
            "poll_errors": sum(d.errors for d in devices),
            "devices_offline": sum(d.health.state is Health.OFFLINE for d in devices),
            "devices_degraded": sum(d.health.state is Health.DEGRADED for d in devices),
            "timeouts_retried": sum(d.health.timeouts for d in devices),
            "busy_answers": sum(d.busy for d in devices),
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
        for d in list(devices)[:200]:
            c[f"errors.{d.id}"] = d.errors
        return c

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
        self.buffer.health_changed()
        self.uplink.publish_birth()

    def _disk_full_changed(self, full: bool) -> None:
        """A full disk began or ended: the collector hears it now, not at the next status."""
        self.uplink.publish_status(self.counters())

    # --- what the commands ask (commands.Controls) -------------------------------------------

    def rebirth(self) -> None:
        """Publish the birth again (the `rebirth` command)."""
        self.uplink.publish_birth()

    def acknowledge(self, alarm_id: str, who: str, note: str) -> str:
        """Acknowledge an alarm (collector or crew CLI); return its new state.

        Raises ValueError when no such alarm waits for an acknowledgement.
        """
        return self.pipeline.acknowledge(alarm_id, who, note)

    async def reload(self, name: str | None) -> tuple[str, int]:
        """Load the config file `name` in place (None: the file running); (config hash, devices).

        Raises ValueError when `name` is not a .yaml file in the config directory, ConfigError
        for a bad config, ValueError when it changes what needs a restart (gateway, site, mqtt,
        buffer); the running config is then kept.
        """
        path = self._reload_path(name)
        cfg = load_config(path)
        profiles = resolve_profiles(cfg, path.parent, str(path))
        fixed = ("gateway", "site", "mqtt", "buffer")
        changed = [k for k in fixed if getattr(cfg, k) != getattr(self.cfg, k)]
        if changed:
            raise ValueError(f"{', '.join(changed)} changed: that needs a restart, not a reload")
        await self._stop_pollers()
        self.cfg, self.path = cfg, path
        self._load(cfg, profiles)  # unchanged rules keep their alarm state
        self._start_pollers()
        self.uplink.publish_birth()
        return cfg.hash(), len(self.devices)

    def _reload_path(self, name: str | None) -> Path:
        """The file a `reload` may read: a .yaml file in this gateway's config directory (a
        relative name is taken from there), after resolving symlinks; ValueError otherwise."""
        home = self.path.resolve().parent
        if name is None:
            return self.path
        path = (home / name).resolve()
        if not path.is_relative_to(home) or path.suffix not in (".yaml", ".yml"):
            raise ValueError(f"reload reads only .yaml files in the config directory {home}")
        return path

    def device(self, dev_id: str) -> tuple[Device, Link | None] | None:
        """The device `dev_id` and the link of its bus (None while not running); None if unknown."""
        dev = self.devices.get(dev_id)
        if dev is None:
            return None
        return dev, next(p.link for p in self.pollers if dev in p.devices)

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

    async def _housekeeping(self) -> None:
        status_ms, prune_ms = self.cfg.status_interval_s * 1000, _PRUNE_EVERY_S * 1000
        next_status: float = self._mono() + status_ms
        next_prune: float = self._mono()
        while True:
            await asyncio.sleep(_HOUSEKEEPING_S)
            self.buffer.commit_acks()
            self.buffer.check_disk()
            self.watch_clock()
            self.buffer.save_health()  # the heartbeat, unless a flush wrote it already
            self.pipeline.tick()  # stale timers; delays too, should a timer have been missed
            for alarm_id, who, note in self.buffer.take_ack_requests():
                try:
                    self.acknowledge(alarm_id, who, note)
                except ValueError as exc:
                    log.warning("local acknowledgement ignored: %s", exc)
            now = self._mono()
            if now >= next_status:
                next_status = now + status_ms
                self.uplink.publish_status(self.counters())
            if now >= next_prune:
                next_prune = now + prune_ms
                self.buffer.prune_alarm_log(self.cfg.buffer.alarm_retention_days)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then flush, drain briefly, publish death and disconnect.

        The long-running tasks (uplink, flusher, housekeeping, one poller per bus) run in one
        TaskGroup, each named: when any of them, or a callback, fails, the others are stopped
        and GatewayFailed is raised (the caller exits non-zero). The buffer stays open until
        the gateway is closed (`with gateway:` or `close`).
        """
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                services = [
                    tg.create_task(self._guard(name, work), name=name)
                    for name, work in (
                        ("uplink", self.uplink.run()),
                        ("flusher", self.pipeline.flusher(self.cfg.buffer.flush_s)),
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
                self.pipeline.flush()
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
        """Close the buffer (what is held in memory is committed if the disk lets it).

        Raises sqlite3.Error when the disk refuses the last commit.
        """
        self.buffer.close()


def build(
    cfg: GatewayConfig,
    profiles: dict[str, Profile],
    path: Path,
    wall: Callable[[], int] = wall_ms,
    mono: Callable[[], int] = mono_ms,
) -> Gateway:
    """The composition root: a gateway over the real buffer, uplink and bus pollers.

    Opens (or creates) the buffer file of `cfg.buffer`; `cfg`, `profiles` and `path` as for
    `Gateway`. Raises sqlite3.Error or BufferFull when the buffer cannot be opened, ValueError
    when a rule or read plan cannot be built (the buffer is closed again then).
    """
    session = secrets.token_hex(6)
    buf = cfg.buffer
    outbox = Outbox(buf.path, cfg.gateway, session, buf.max_mb, buf.batch_records, buf.batch_bytes)

    def uplink(birth: Callable[[], Birth], on_command: CommandHandler) -> Uplink:
        return Uplink(cfg.mqtt, cfg.site, cfg.gateway, session, outbox, birth, on_command)

    try:
        return Gateway(
            cfg, profiles, path, session=session, buffer=outbox, uplink=uplink, wall=wall, mono=mono
        )
    except Exception:
        outbox.close()
        raise


class GatewayFailed(Exception):
    """A task or callback of the gateway died; the process exits non-zero."""


def _wire_location(loc: LocationConfig | None) -> Location | None:
    return None if loc is None else loc.to_wire()


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


async def serve(path: Path, stop_asked: Callable[[], bool] = lambda: False) -> None:
    """Load the config, run the gateway until SIGTERM/SIGINT, shut down cleanly.

    `stop_asked` says whether a stop signal came before serve() installed its own handlers
    (the caller caught it while starting): the gateway then starts and stops at once, cleanly.
    Raises ConfigError (bad config), BufferFull or sqlite3.Error (the buffer cannot be opened)
    and GatewayFailed (a part of the running gateway died).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if stop_asked():  # asked before the handlers above replaced the caller's
        stop.set()
    cfg = load_config(path)
    profiles = resolve_profiles(cfg, path.parent, str(path))
    with build(cfg, profiles, path) as gateway:
        await gateway.run(stop)
    log.info("gateway %s stopped cleanly", cfg.gateway)
