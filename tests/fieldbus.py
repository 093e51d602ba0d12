"""Field-bus test rigs: a poll recorder, firmware-sim buses, and a modbus_tk slave behind a line.

The modbus_tk slave is not ours: its RTU server listens on a pty, its TCP server on a loopback
port. Between it and our master sits a `Line`, what a serial-to-Ethernet converter, a 4G DTU or
an RS-485 adapter is in the field: it carries the bytes and can add that hardware's quirks (an
echo of each request, noise bytes, dropping a request that comes too soon after the last reply,
a TCP connection that goes silent).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
import tty
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import serial
from modbus_tk import defines as tk
from modbus_tk import hooks, modbus_rtu, modbus_tcp
from pydantic import TypeAdapter

from lifeline.broker import free_port, wait_for_port
from lifeline.drivers.errors import DriverError
from lifeline.drivers.profile import Profile, builtin_profiles, parse_profile
from lifeline.drivers.values import Value
from lifeline.edge.config import Bus, HealthConfig
from lifeline.edge.scheduler import BusPoller, Device, Health, make_device
from lifeline.firmware_sim.scenario import Scenario
from lifeline.firmware_sim.servers import close_connections
from lifeline.firmware_sim.simulation import Simulation

Transport = Literal["tcp", "serial", "rtu_tcp"]
TRANSPORTS: tuple[Transport, ...] = ("tcp", "serial", "rtu_tcp")
BAUD = 38400
_BUS_TYPE = {"tcp": "tcp", "serial": "rtu", "rtu_tcp": "rtu_over_tcp"}


@dataclass
class Recorder:
    """A PollSink that keeps everything: values per device, failures, health transitions."""

    polls: dict[str, list[dict[str, Value]]] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)
    transitions: list[tuple[str, Health, str]] = field(default_factory=list)

    def values(self, device: Device, values: dict[str, Value], ts_ms: int) -> None:
        self.polls.setdefault(device.id, []).append(values)

    def failure(self, device: Device, error: DriverError, ts_ms: int) -> None:
        self.failures.append((device.id, str(error)))

    def transition(self, device: Device, state: Health, reason: str, ts_ms: int) -> None:
        self.transitions.append((device.id, state, reason))

    def states(self, device: str) -> list[Health]:
        return [s for d, s, _ in self.transitions if d == device]


def bus_config(
    transport: Transport, where: dict[str, Any], devices: list[dict[str, Any]], **settings: Any
) -> Bus:
    """A gateway bus config for `devices` at `where` (host/port, or path for a serial bus)."""
    bus: dict[str, Any] = {"type": _BUS_TYPE[transport], "devices": devices, **settings}
    if transport == "serial":
        bus.update(port=where["path"], baudrate=BAUD, parity="N")
    else:
        bus.update(host=where["host"], port=where["port"])
    return TypeAdapter(Bus).validate_python(bus)


async def run_poller(
    bus: Bus,
    seconds: float,
    profiles: dict[str, Profile] | None = None,
    health: HealthConfig | None = None,
    during: Callable[[BusPoller], Any] | None = None,
) -> tuple[BusPoller, Recorder]:
    """Poll `bus` with the gateway's scheduler for `seconds`; `during(poller)` runs halfway."""
    profiles = profiles or builtin_profiles()
    health = health or HealthConfig(reprobe_min_s=0.5, reprobe_max_s=1)
    devices = [make_device(d, profiles[d.profile], health) for d in bus.devices]
    sink = Recorder()
    poller = BusPoller(bus, devices, sink)
    task = asyncio.create_task(poller.run())
    try:
        if during is not None:
            await asyncio.sleep(seconds / 2)
            result = during(poller)
            if asyncio.iscoroutine(result):
                await result
            await asyncio.sleep(seconds / 2)
        else:
            await asyncio.sleep(seconds)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return poller, sink


def sim_scenario(transport: Transport, devices: list[dict[str, Any]]) -> Scenario:
    """One firmware-sim server of `transport` kind with `devices`."""
    kind = {"tcp": "tcp", "serial": "serial", "rtu_tcp": "rtu_tcp"}[transport]
    server: dict[str, Any] = {"name": "bus", "kind": kind, "devices": devices}
    if transport != "tcp":
        server.update(baudrate=BAUD, parity="N")
    return Scenario.model_validate({"seed": 16, "servers": [server]})


@asynccontextmanager
async def sim_endpoint(
    transport: Transport, devices: list[dict[str, Any]]
) -> AsyncIterator[tuple[Simulation, dict[str, Any]]]:
    """A running firmware-sim with one server; yields it and the server's endpoint."""
    async with Simulation(sim_scenario(transport, devices), control_port=None) as sim:
        yield sim, sim.endpoints["servers"][0]


# -- a slave that is not ours --------------------------------------------------------------

# The field's meter: registers 11174, 11176 and 11177, nothing at 11175.
METER = parse_profile(
    {
        "name": "gap_meter",
        "family": "gas",
        "identification": {
            "vendor": "Field",
            "model": "Meter",
            "vendor_id": {"address": 100, "expect": 1},
            "model_id": {"address": 101, "expect": 2},
            "firmware_version": {"address": 102},
        },
        "points": [
            {"name": "energy", "table": "holding", "address": 11174, "dtype": "uint16"},
            {"name": "power", "table": "holding", "address": 11176, "dtype": "uint16"},
            {"name": "status", "table": "holding", "address": 11177, "dtype": "uint16"},
        ],
    }
)
METER_VALUES = {"energy": 1174, "power": 1176, "status": 1177}


class TkSlave:
    """modbus_tk's server (TCP or RTU on a pty) with the field meter at unit 1.

    `busy` answers exception 06 to that share of requests (seeded); `limit` refuses reads of
    more registers with exception 03, as a device with a small receive buffer does; `late_s`
    delays every third answer by that much.
    """

    def __init__(self, rtu: bool, busy: float = 0.0, limit: int = 125, late_s: float = 0.0) -> None:
        self.rtu = rtu
        self.busy = busy
        self.limit = limit
        self.late_s = late_s  # every third answer comes this late
        self._rng = random.Random(16)
        self.busy_answers = 0
        self.requests = 0
        self.port = 0
        self.line_fd = -1  # RTU: the other end of the slave's pty, for a Line to drive
        if rtu:
            self.line_fd, slave_fd = os.openpty()
            tty.setraw(self.line_fd)
            tty.setraw(slave_fd)
            path = os.ttyname(slave_fd)
            self._slave_fd = slave_fd
            self.server: Any = modbus_rtu.RtuServer(serial.Serial(path, baudrate=BAUD))
        else:
            self.port = free_port()
            self.server = modbus_tcp.TcpServer(port=self.port, address="127.0.0.1")
        slave = self.server.add_slave(1)
        slave.add_block("energy", tk.HOLDING_REGISTERS, 11174, 1)
        slave.add_block("power", tk.HOLDING_REGISTERS, 11176, 2)
        slave.set_values("energy", 11174, [1174])
        slave.set_values("power", 11176, [1176, 1177])

    def _handle(self, args: tuple[Any, bytes]) -> bytes | None:
        _, pdu = args
        self.requests += 1
        if self.busy and self._rng.random() < self.busy:
            self.busy_answers += 1
            return bytes([pdu[0] | 0x80, 6])
        if pdu[0] in (3, 4) and int.from_bytes(pdu[3:5], "big") > self.limit:
            return bytes([pdu[0] | 0x80, 3])
        if self.late_s and self.requests % 3 == 0:
            time.sleep(self.late_s)  # in modbus_tk's server thread: the answer leaves late
        return None

    def __enter__(self) -> TkSlave:
        hooks.install_hook("modbus.Slave.handle_request", self._handle)
        self.server.start()  # in a thread of its own: listening a moment later
        if not self.rtu:
            wait_for_port("127.0.0.1", self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        hooks.uninstall_hook("modbus.Slave.handle_request", self._handle)
        if self.rtu:
            os.close(self.line_fd)
            os.close(self._slave_fd)


class Line:
    """The hardware between a master and a slave: an RS-485 adapter or a converter.

    Front: a pty (`path`, what an RS-485 adapter's tty is) or a TCP port (`port`, a converter
    or DTU). Back: the slave's serial line (a pty fd) or a Modbus TCP server. Quirks: `echo`
    sends each request back before the answer; `noise` random bytes precede each answer;
    `turnaround_s` drops a request that comes sooner than that after the last answer;
    `mute()` makes the open TCP connection silent for good (half-open), a new one is served.
    """

    def __init__(
        self,
        front: Literal["pty", "tcp"],
        back_fd: int = -1,
        back_port: int = 0,
        echo: bool = False,
        noise: int = 0,
        turnaround_s: float = 0.0,
    ) -> None:
        self.front = front
        self.back_fd = back_fd
        self.back_port = back_port
        self.echo = echo
        self.noise = noise
        self.turnaround_s = turnaround_s
        self.dropped = 0
        self.path = ""
        self.port = 0
        self._rng = random.Random(7)
        self._last_answer = -1e9
        self._to_master: Callable[[bytes], None] | None = None
        self._muted: set[object] = set()
        self._current: object = None
        self._front_fds: tuple[int, int] = (-1, -1)
        self._server: asyncio.Server | None = None
        self._back_writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def __aenter__(self) -> Line:
        loop = asyncio.get_running_loop()
        if self.back_fd >= 0:
            os.set_blocking(self.back_fd, False)
            loop.add_reader(self.back_fd, self._from_slave_fd)
        if self.front == "pty":
            master, slave = os.openpty()
            tty.setraw(master)
            tty.setraw(slave)
            os.set_blocking(master, False)
            self._front_fds = (master, slave)
            self.path = os.ttyname(slave)
            self._to_master = self._write_front
            loop.add_reader(master, self._from_pty_master)
        else:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        loop = asyncio.get_running_loop()
        if self.back_fd >= 0:
            loop.remove_reader(self.back_fd)
        if self._front_fds[0] >= 0:
            loop.remove_reader(self._front_fds[0])
            for fd in self._front_fds:
                os.close(fd)
        if self._server is not None:
            self._server.close()
            await close_connections(self._conns)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _write_front(self, data: bytes) -> None:
        os.write(self._front_fds[0], data)

    def mute(self) -> None:
        """The open connection goes silent and stays open (a half-open DTU link)."""
        self._muted.add(self._current)

    # -- master -> slave -----------------------------------------------------------------
    def _from_pty_master(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._request(os.read(self._front_fds[0], 4096))

    def _request(self, data: bytes) -> None:
        if time.monotonic() - self._last_answer < self.turnaround_s:
            self.dropped += 1  # the converter is not listening yet
            return
        if self.echo and self._to_master is not None:
            self._to_master(data)
        if self.back_fd >= 0:
            os.write(self.back_fd, data)
        elif self._back_writer is not None:
            self._back_writer.write(data)

    # -- slave -> master -----------------------------------------------------------------
    def _from_slave_fd(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._answer(os.read(self.back_fd, 4096))

    def _answer(self, data: bytes) -> None:
        if self._to_master is None:
            return
        if self.noise:
            data = bytes(self._rng.randrange(256) for _ in range(self.noise)) + data
        self._to_master(data)
        self._last_answer = time.monotonic()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = writer
        me = object()
        self._current = me
        self._to_master = writer.write
        if self.back_port:
            back_reader, self._back_writer = await asyncio.open_connection(
                "127.0.0.1", self.back_port
            )
            self._tasks.append(asyncio.create_task(self._pump_back(back_reader, me)))
        try:
            while data := await reader.read(4096):
                if me not in self._muted:
                    self._request(data)
        except ConnectionError:
            pass
        finally:
            self._conns.pop(task, None)
            writer.transport.abort()

    async def _pump_back(self, reader: asyncio.StreamReader, me: object) -> None:
        while data := await reader.read(4096):
            if me not in self._muted and self._current is me:
                self._answer(data)
