"""A running simulation: devices, their servers, the physics clock, the timeline and control.

    async with Simulation(load_scenario("demo")) as sim:
        sim.endpoints            # where every server listens (JSON-able)
        sim.trigger("gas-01", "leak", {"peak": 60})

The control interface is JSON lines over TCP on loopback: one request object per line
(`{"cmd": "trigger", "device": "mh-1", "event": "open"}`), one answer per line
(`{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

from lifeline.drivers.profile import Profile, builtin_profiles
from lifeline.drivers.values import Value
from lifeline.firmware_sim.device import SimDevice
from lifeline.firmware_sim.physics import SimEventError
from lifeline.firmware_sim.scenario import Scenario
from lifeline.firmware_sim.servers import PtyBus, TcpServer, close_connections

__all__ = ["Simulation"]


class Simulation:
    """All servers and devices of one scenario; an async context manager."""

    def __init__(
        self,
        scenario: Scenario,
        control_host: str = "127.0.0.1",
        control_port: int | None = 0,
        profiles: dict[str, Profile] | None = None,
    ) -> None:
        self.scenario = scenario
        self._control_host = control_host
        self._control_port = control_port
        profiles = profiles or builtin_profiles()
        self.devices: dict[str, SimDevice] = {}
        self._servers: list[tuple[Any, TcpServer | PtyBus]] = []
        for server in scenario.servers:
            units: dict[int, SimDevice] = {}
            for cfg in server.devices:
                device = SimDevice(
                    device_id=cfg.id,
                    unit=cfg.unit,
                    profile=profiles[cfg.profile],
                    rng=random.Random(f"{scenario.seed}:{cfg.id}"),
                    start=scenario.start,
                    firmware_version=cfg.firmware_version,
                    transport=server.kind,
                    unmapped=cfg.unmapped or scenario.unmapped,
                )
                for fault in [*cfg.quirks, *([cfg.fault] if cfg.fault else [])]:
                    device.set_fault(fault.kind, fault.args())
                for point, value in cfg.set.items():
                    device.set_value(point, value)
                units[cfg.unit] = device
                self.devices[cfg.id] = device
            impl: TcpServer | PtyBus
            if server.kind == "serial":
                impl = PtyBus(units, server.baudrate or 9600, server.parity, server.stopbits)
            else:
                impl = TcpServer(
                    units,
                    server.host,
                    server.port,
                    rtu=server.kind == "rtu_tcp",
                    baudrate=server.baudrate,
                    parity=server.parity,
                    stopbits=server.stopbits,
                )
            self._servers.append((server, impl))
        self._tasks: list[asyncio.Task[None]] = []
        self._control: asyncio.Server | None = None
        self._control_conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._t0 = 0.0
        self._sim_elapsed = 0.0

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start every server, the physics clock, the timeline and the control port."""
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        for _, impl in self._servers:
            await impl.start()
        if self._control_port is not None:
            self._control = await asyncio.start_server(
                self._serve_control, self._control_host, self._control_port
            )
        self._tasks = [
            asyncio.create_task(self._tick(), name="sim-physics"),
            asyncio.create_task(self._run_timeline(), name="sim-timeline"),
        ]

    async def stop(self) -> None:
        """Stop everything started by `start`."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._control is not None:
            self._control.close()
            await close_connections(self._control_conns)
            await self._control.wait_closed()
            self._control = None
        for _, impl in self._servers:
            await impl.stop()

    # -- what is served -------------------------------------------------------------------
    @property
    def endpoints(self) -> dict[str, Any]:
        """Every server (kind, address or pty path, line settings, devices) and the control port."""
        servers = []
        for cfg, impl in self._servers:
            entry: dict[str, Any] = {"name": cfg.name, "kind": cfg.kind}
            if isinstance(impl, PtyBus):
                entry.update(
                    path=impl.path, baudrate=impl.baudrate, parity=impl.parity,
                    stopbits=impl.stopbits,
                )  # fmt: skip
            else:
                entry.update(host=impl.host, port=impl.port)
                if cfg.kind == "rtu_tcp":
                    entry["baudrate"] = cfg.baudrate
            entry["devices"] = [
                {"id": d.device_id, "unit": d.unit, "profile": d.profile.name}
                for d in impl.devices.values()
            ]
            servers.append(entry)
        control = None
        if self._control is not None:
            host, port = self._control.sockets[0].getsockname()[:2]
            control = {"host": host, "port": port}
        return {"control": control, "servers": servers}

    def now(self) -> datetime:
        """The simulated wall clock."""
        return self.scenario.start + timedelta(seconds=self._sim_elapsed)

    # -- control -------------------------------------------------------------------------------
    def device(self, device_id: str) -> SimDevice:
        """The device called `device_id`."""
        try:
            return self.devices[device_id]
        except KeyError:
            raise SimEventError(f"no device {device_id!r}") from None

    def trigger(self, device_id: str, event: str, args: dict[str, Any] | None = None) -> None:
        """Apply an event to a device now (physics event, or set / release / fault)."""
        self.device(device_id).trigger(event, args or {})

    def set_value(self, device_id: str, point: str, value: Value) -> None:
        """Pin a point of a device to a value."""
        self.device(device_id).set_value(point, value)

    def set_fault(self, device_id: str, kind: str, **args: Any) -> None:
        """Inject a fault or quirk into a device (`kind="none"` clears them all)."""
        self.device(device_id).set_fault(kind, args)

    def _handle(self, request: dict[str, Any]) -> Any:
        cmd = request.get("cmd")
        if cmd == "endpoints":
            return self.endpoints
        if cmd == "time":
            return self.now().isoformat()
        device_id = str(request.get("device", ""))
        if cmd == "trigger":
            self.trigger(device_id, str(request.get("event")), dict(request.get("args") or {}))
        elif cmd == "set":
            self.device(device_id).set_value(str(request.get("point")), request.get("value"))
        elif cmd == "release":
            self.device(device_id).release(request.get("point"))
        elif cmd == "fault":
            self.set_fault(device_id, str(request.get("kind")), **dict(request.get("args") or {}))
        elif cmd == "values":
            return self.device(device_id).values()
        elif cmd == "stats":
            return vars(self.device(device_id).stats)
        else:
            raise SimEventError(
                f"unknown cmd {cmd!r}; known: endpoints, time, trigger, set, release, "
                "fault, values, stats"
            )
        return None

    async def _serve_control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._control_conns[task] = writer
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise SimEventError("a request is a JSON object")
                    reply = {"ok": True, "result": self._handle(request)}
                except (SimEventError, ValueError, TypeError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._control_conns.pop(task, None)
            writer.transport.abort()

    # -- time ----------------------------------------------------------------------------------
    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.scenario.tick_s)
            now = loop.time()
            dt = (now - last) * self.scenario.time_scale
            last = now
            self._sim_elapsed += dt
            sim_now = self.now()
            for device in self.devices.values():
                device.step(sim_now, dt)

    async def _run_timeline(self) -> None:
        loop = asyncio.get_running_loop()
        for entry in sorted(self.scenario.timeline, key=lambda e: e.at):
            wait = self._t0 + entry.at / self.scenario.time_scale - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                self.trigger(entry.device, entry.event, entry.args)
            except SimEventError as exc:
                print(f"firmware-sim: timeline at {entry.at}: {exc}", file=sys.stderr)
