"""A simulated district as separate processes, its accounting, and clean shutdown under load.

The helpers here (District, account) are shared by the other proof suites (soak, failover):
firmware-sim, N gateways, one or more collectors, a private Mosquitto and a private
PostgreSQL, all restartable, and an accounting step that compares, per gateway, what the edge
buffer committed and evicted (persisted counters) with what the database holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from lifeline.broker import PrivateBroker
from lifeline.edge.buffer import LANE_ALARM, LANE_DATA, views
from tests.services import Postgres, free_port, fresh_database, start_mosquitto

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.proof]

FAMILIES = ("manhole_cover", "streetlight", "gas_detector", "tilt_sensor")
SHORT = {"manhole_cover": "mh", "streetlight": "sl", "gas_detector": "gas", "tilt_sensor": "tilt"}
ROOT = "lifeline"
SITE = "district"
# Frozen batches of a gateway that keeps up: the in-flight window plus deletes pending.
LIVE_FROZEN = 100


def wait_for(what: str, cond: Callable[[], Any], timeout: float, every: float = 0.2) -> Any:
    """Poll `cond` until truthy; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = cond()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@dataclass
class Proc:
    """One program of the district (`python -m lifeline ARGS`), restartable, log appended."""

    name: str
    args: list[str]
    log: Path
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        """Start (or restart) the program."""
        assert not self.alive(), f"{self.name} is already running"
        with open(self.log, "ab") as out:  # the child keeps its own descriptor
            out.write(f"--- start {self.starts + 1} ---\n".encode())
            out.flush()
            env = None if self.env is None else {**os.environ, **self.env}
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "lifeline", *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.starts += 1

    def alive(self) -> bool:
        """True while the process runs."""
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye."""
        if self.popen is not None and self.alive():
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def term(self, timeout: float = 30) -> int:
        """SIGTERM and wait; the exit code (a clean stop is 0)."""
        assert self.popen is not None
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"{self.name} ignored SIGTERM for {timeout} s") from None

    def text(self) -> str:
        """Everything the program printed so far (all starts)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def district_scenario(
    gateways: int, devices: int, seed: int, duration_s: float, rtu_last: bool = True
) -> dict[str, Any]:
    """firmware-sim scenario: one server per gateway, all four families, a seeded timeline.

    The last server is RTU over TCP (a serial RS-485 bus behind a DTU) when `rtu_last`.
    The timeline opens covers, starts gas leaks, fails lamps and steps tilt sensors.
    """
    rng = random.Random(seed)
    per = devices // gateways
    servers = []
    for g in range(1, gateways + 1):
        rtu = rtu_last and g == gateways
        devs = [
            {"id": f"{SHORT[f]}-{g}-{u:02d}", "unit": u, "profile": f}
            for u in range(1, per + 1)
            for f in [FAMILIES[(u - 1) % len(FAMILIES)]]
        ]
        server: dict[str, Any] = {
            "name": f"cab-{g}",
            "kind": "rtu_tcp" if rtu else "tcp",
            "port": free_port(),  # fixed, so a restarted simulator serves the same ports
            "devices": devs,
        }
        if rtu:
            server["baudrate"] = 115200
        servers.append(server)
    timeline: list[dict[str, Any]] = []
    span = max(10.0, duration_s * 0.8)

    def pick(family: str) -> list[str]:
        """One device of `family` on every server, so every gateway sees every kind of alarm."""
        return [
            rng.choice([d["id"] for d in server["devices"] if d["profile"] == family])
            for server in servers
        ]

    for dev in pick("gas_detector"):
        leak = {"peak": rng.uniform(30, 70), "ramp_s": 5, "hold_s": 10, "decay_s": 5}
        timeline.append({"at": rng.uniform(2, span), "device": dev, "event": "leak", "args": leak})
    for dev in pick("manhole_cover"):
        at = rng.uniform(2, span)
        timeline.append({"at": at, "device": dev, "event": "open"})
        timeline.append({"at": at + rng.uniform(3, 8), "device": dev, "event": "close"})
    for dev in pick("streetlight"):
        timeline.append({"at": rng.uniform(2, span), "device": dev, "event": "lamp_failure"})
    for dev in pick("tilt_sensor"):
        step = {"x": rng.uniform(5, 12)}
        timeline.append({"at": rng.uniform(2, span), "device": dev, "event": "jump", "args": step})
    timeline.sort(key=lambda e: e["at"])
    return {
        "seed": seed,
        "start": "2026-11-01T18:05:00+08:00",  # after dusk: the lamps are on and can fail
        "servers": servers,
        "timeline": timeline,
    }


def gateway_conf(
    gw: str, server: dict[str, Any], broker_url: str, buffer_path: Path, **over: Any
) -> dict[str, Any]:
    """A gateway polling one simulated cabinet every 2 s, publishing to `broker_url`."""
    bus_type = "rtu_over_tcp" if server["kind"] == "rtu_tcp" else "tcp"
    devices = [
        {"id": d["id"], "unit": d["unit"], "profile": d["profile"], "interval_s": 2.0}
        for d in server["devices"]
    ]
    conf: dict[str, Any] = {
        "gateway": gw,
        "site": SITE,
        "mqtt": {"url": broker_url, "root": ROOT, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
        "buffer": {"path": str(buffer_path), "flush_s": 0.1, "batch_records": 500},
        "health": {"offline_after": 3, "reprobe_min_s": 1, "reprobe_max_s": 3},
        "status_interval_s": 5,
        "buses": [
            {"type": bus_type, "name": server["name"], "host": "127.0.0.1",
             "port": server["port"], "devices": devices}
        ],
    }  # fmt: skip
    for key, value in over.items():
        conf[key] = {**conf[key], **value} if isinstance(value, dict) else value
    return conf


@dataclass
class District:
    """firmware-sim + gateways + collectors + broker + PostgreSQL, each restartable."""

    tmp: Path
    broker: PrivateBroker
    pg: Postgres
    db_url: str
    scenario: dict[str, Any]
    sim: Proc
    gateways: dict[str, Proc] = field(default_factory=dict)
    buffers: dict[str, Path] = field(default_factory=dict)
    retired: dict[str, list[Path]] = field(default_factory=dict)  # buffers a gateway lost
    collectors: list[Proc] = field(default_factory=list)
    http_ports: list[int] = field(default_factory=list)

    @property
    def control(self) -> tuple[str, int]:
        """firmware-sim's control address."""
        eps = json.loads((self.tmp / "endpoints.json").read_text())
        return eps["control"]["host"], eps["control"]["port"]

    def sim_call(self, cmd: str, **fields: Any) -> Any:
        """One request on firmware-sim's control port (JSON lines)."""
        import socket

        with socket.create_connection(self.control, timeout=5) as s:
            s.sendall(json.dumps({"cmd": cmd, **fields}).encode() + b"\n")
            reply = json.loads(s.makefile().readline())
        assert reply.get("ok"), reply
        return reply.get("result")

    def new_database(self) -> str:
        """Another empty database on the district's PostgreSQL (for a collector of its own)."""
        name = f"lifeline_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.pg.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"{self.pg.url.rsplit('/', 1)[0]}/{name}"

    def add_collector(
        self, client_id: str, share_group: str | None = None, db_url: str | None = None
    ) -> Proc:
        """Start a collector on the district's broker and database (or `db_url`)."""
        port = free_port()
        args = ["collector", "run", "--mqtt", self.broker.url, "--db", db_url or self.db_url]
        args += ["--root", ROOT, "--client-id", client_id, "--http", f"127.0.0.1:{port}"]
        if share_group:
            args += ["--share-group", share_group]
        n = len(self.collectors) + 1
        # /readyz's counters need a key; the bootstrap key exists once per database
        args += ["--bootstrap-key-file", str(self.tmp / f"collector-{n}.key")]
        proc = Proc(f"collector-{n}", args, self.tmp / f"collector-{n}.log")
        proc.start()
        self.collectors.append(proc)
        self.http_ports.append(port)
        self.wait_ready(n - 1)
        return proc

    def wait_ready(self, index: int, timeout: float = 60) -> None:
        """Wait until collector `index` answers /readyz (connected, subscribed, db open)."""
        port, proc = self.http_ports[index], self.collectors[index]

        def ready() -> bool:
            assert proc.alive(), f"{proc.name} exited: see {proc.log}"
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(f"{proc.name} ready", ready, timeout)

    def add_gateway(
        self, gw: str, server: dict[str, Any], env: dict[str, str] | None = None, **over: Any
    ) -> Proc:
        """Write a gateway config for `server` and start the gateway (with `env` added)."""
        buffer = self.tmp / f"{gw}.sqlite"
        conf = gateway_conf(gw, server, self.broker.url, buffer, **over)
        path = self.tmp / f"{gw}.yaml"
        path.write_text(yaml.safe_dump(conf, sort_keys=False))
        proc = Proc(gw, ["edge", "run", "--config", str(path)], self.tmp / f"{gw}.log", env)
        proc.start()
        self.gateways[gw] = proc
        self.buffers[gw] = buffer
        return proc

    def lose_buffer(self, gw: str) -> None:
        """SIGKILL a gateway and take its buffer away (kept aside for the books), as a new SD
        card or a corrupt file does; it starts again on an empty buffer, a new epoch."""
        proc, path = self.gateways[gw], self.buffers[gw]
        proc.kill()
        n = len(self.retired.setdefault(gw, [])) + 1
        kept = path.with_name(f"{path.stem}.lost-{n}{path.suffix}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{path}{suffix}")
            if src.exists():
                src.rename(f"{kept}{suffix}")
        self.retired[gw].append(kept)
        proc.start()

    def drained(self) -> bool:
        """Every gateway is live: no backlog, no pending events, only the last moments frozen."""
        for buffer in self.buffers.values():
            if not buffer.exists():
                return False
            s = views.buffer_stats(buffer)
            if s.backlog_readings or s.pending_events or s.frozen_batches > LIVE_FROZEN:
                return False
        return True

    def stop_gateways(self) -> dict[str, int]:
        """SIGTERM every gateway; their exit codes."""
        return {gw: proc.term() for gw, proc in self.gateways.items()}


@contextlib.contextmanager
def district(
    tmp: Path, gateways: int, devices: int, seed: int, duration_s: float, broker_conf: str = ""
) -> Iterator[District]:
    """Broker, PostgreSQL and firmware-sim up (no gateways or collectors yet); all torn down.

    `broker_conf` is added to the shipped Mosquitto configuration (later lines win).
    """
    pg = Postgres()
    pg.start()
    procs: list[Proc] = []
    try:
        with start_mosquitto(broker_conf) as broker, fresh_database(pg.url) as db_url:
            scenario = district_scenario(gateways, devices, seed, duration_s)
            (tmp / "scenario.yaml").write_text(yaml.safe_dump(scenario, sort_keys=False))
            args = ["sim", "run", "--scenario", str(tmp / "scenario.yaml")]
            args += ["--endpoints-file", str(tmp / "endpoints.json")]
            sim = Proc("firmware-sim", args, tmp / "firmware-sim.log")
            sim.start()
            procs.append(sim)
            wait_for("firmware-sim endpoints", (tmp / "endpoints.json").exists, 30)
            d = District(tmp, broker, pg, db_url, scenario, sim)
            try:
                yield d
            finally:
                for proc in [*d.gateways.values(), *d.collectors, sim]:
                    if proc.alive():
                        proc.kill()
    finally:
        if pg.workdir.exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                pg.stop("immediate")
            shutil.rmtree(pg.workdir, ignore_errors=True)


# --- accounting -------------------------------------------------------------------------------


@dataclass
class GatewayAccount:
    """One gateway's books: edge counters against database rows."""

    gateway: str
    committed: int  # readings ever committed to the edge buffer (persisted counter)
    evicted: int  # readings evicted from a full buffer (persisted counter)
    pending: int  # readings still in the buffer and not in the database
    last_seq: int  # highest seq the gateway assigned
    # seqs frozen in the buffer that the database does not hold, and seqs retired by a split
    # (a batch the broker refused as too large goes out again under new seqs: edge/buffer/outbox.py)
    unsent_seqs: int
    db_readings: int
    db_distinct: int  # distinct (device, point, ts)
    db_seqs: int  # distinct (gateway, seq) keys the database committed
    db_seq_max: int
    edge_alarms: int  # alarm events in the edge alarm log (that left the gateway)
    db_alarms: int  # alarm events the database holds
    db_alarms_distinct: int
    # Readings that never left a buffer the gateway lost (a deleted file, a new SD card): gone
    # with the card, on purpose, and counted apart from what the system lost.
    discarded: int = 0
    epochs: int = 1  # buffers the gateway has had

    @property
    def lost(self) -> int:
        """Committed, not evicted, not pending, not discarded, and not in the database."""
        return self.committed - self.evicted - self.pending - self.discarded - self.db_readings

    @property
    def duplicates(self) -> int:
        """Rows stored more than once (same device, point and sample time)."""
        return self.db_readings - self.db_distinct

    def problems(self) -> list[str]:
        """Every broken invariant, in words (empty when the books balance)."""
        out = []
        if self.lost:
            out.append(f"{self.gateway}: {self.lost} committed readings lost")
        if self.duplicates:
            out.append(f"{self.gateway}: {self.duplicates} readings stored twice")
        if self.db_seqs + self.unsent_seqs != self.last_seq or self.db_seq_max > self.last_seq:
            out.append(
                f"{self.gateway}: seqs 1..{self.last_seq} assigned, the database holds "
                f"{self.db_seqs} and {self.unsent_seqs} wait in the buffer (or were split)"
            )
        if self.db_alarms != self.edge_alarms or self.db_alarms_distinct != self.db_alarms:
            out.append(
                f"{self.gateway}: edge logged {self.edge_alarms} alarm events, db holds "
                f"{self.db_alarms} ({self.db_alarms_distinct} distinct)"
            )
        return out


def buffer_epoch(path: Path) -> str:
    """The epoch of a gateway buffer, as its batches carry it."""
    epoch = views.epoch(path)
    if epoch is None:  # a gateway that has created its buffer, not yet its epoch
        raise LookupError(f"{path} has no epoch yet")
    return epoch


@dataclass
class BufferBooks:
    """One buffer file's books against the database keys of its epoch."""

    meta: dict[str, int]
    pending: int  # readings not in the database (unfrozen, or in unsent data batches)
    unsent: int  # frozen seqs the database lacks
    alarms: int  # alarm log entries
    unsent_alarms: int  # alarm events never published (queued, or in unsent alarm batches)
    stored: set[int]


def _edge_books(path: Path, stored: set[int]) -> BufferBooks:
    """meta counters, readings not yet in the database, unsent seqs, alarm log size."""
    b = views.books(path)
    # Readings not frozen yet, plus those of frozen data batches the database lacks (a
    # batch the broker took but whose delete the gateway never committed is not pending).
    pending = b.backlog_readings
    unsent_alarms = b.queued_alarm_events
    unsent = 0
    for seq, lane, n in b.frozen:
        if seq not in stored:
            unsent += 1
            pending += n if lane == LANE_DATA else 0
            unsent_alarms += n if lane == LANE_ALARM else 0
    # A retired batch's records went out under new seqs: nothing pending.
    unsent += sum(seq not in stored for seq in b.retired)
    return BufferBooks(b.counters, pending, unsent, b.alarm_log_entries, unsent_alarms, stored)


def account(
    db_url: str, buffers: dict[str, Path], retired: dict[str, list[Path]] | None = None
) -> list[GatewayAccount]:
    """The books of every gateway (run after the gateways stopped and ingest caught up).

    `retired` lists, per gateway, buffer files it lost on the way (kept aside by the test):
    what never left them counts as discarded, not lost.
    """
    out = []
    with psycopg.connect(db_url) as conn:
        for gw, path in sorted(buffers.items()):
            old = (retired or {}).get(gw, [])
            books = []
            for p in [*old, path]:
                stored = {
                    int(seq)
                    for (seq,) in conn.execute(
                        "SELECT seq FROM batch_keys WHERE gateway_id = %s AND epoch = %s",
                        (gw, buffer_epoch(p)),
                    )
                }
                books.append(_edge_books(p, stored))
            current = books[-1]
            row = conn.execute(
                "SELECT count(*), count(DISTINCT (device, point, ts)) FROM readings"
                " WHERE gateway_id = %s",
                (gw,),
            ).fetchone()
            alarms = conn.execute(
                "SELECT count(*), count(DISTINCT (alarm_id, state, ts_ms, coalesce(ack_by, '')))"
                " FROM alarm_events WHERE gateway_id = %s AND origin = 'gateway'",
                (gw,),
            ).fetchone()
            assert row is not None
            assert alarms is not None
            out.append(
                GatewayAccount(
                    gateway=gw,
                    committed=sum(b.meta.get("committed", 0) for b in books),
                    evicted=sum(b.meta.get("evicted", 0) for b in books),
                    pending=current.pending,
                    last_seq=sum(b.meta.get("next_seq", 1) - 1 for b in books),
                    unsent_seqs=sum(b.unsent for b in books),
                    db_readings=int(row[0]),
                    db_distinct=int(row[1]),
                    db_seqs=sum(len(b.stored) for b in books),
                    db_seq_max=max((max(b.stored, default=0) for b in books), default=0),
                    edge_alarms=sum(b.alarms - b.unsent_alarms for b in books[:-1])
                    + current.alarms,
                    db_alarms=int(alarms[0]),
                    db_alarms_distinct=int(alarms[1]),
                    discarded=sum(b.pending for b in books[:-1]),
                    epochs=len(books),
                )
            )
    return out


def caught_up(
    db_url: str, buffers: dict[str, Path], retired: dict[str, list[Path]] | None = None
) -> bool:
    """The database holds every seq the gateways assigned and no longer hold."""
    if not all(p.exists() for p in buffers.values()):
        return False
    try:
        books = account(db_url, buffers, retired)
    except (sqlite3.OperationalError, LookupError):  # a buffer file without its tables or epoch
        return False
    return all(b.db_seqs + b.unsent_seqs == b.last_seq and not b.lost for b in books)


def open_alarms(buffer: Path) -> set[str]:
    """The alarm ids a gateway's alarm log holds not normal (its alarm picture)."""
    return {r.alarm_id for r in views.alarms(buffer, open_only=True, limit=-1)}


def collector_open_alarms(db_url: str, gateway: str) -> set[str]:
    """The alarm ids a collector's database holds not normal for `gateway`."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT alarm_id FROM alarm_index WHERE gateway_id = %s AND state <> 'normal'",
            (gateway,),
        ).fetchall()
    return {r[0] for r in rows}


def books_table(books: list[GatewayAccount]) -> str:
    """The accounting as a Markdown table (printed by the tests, pasted into RELIABILITY.md)."""
    lines = [
        "| gateway | buffers | committed | evicted | discarded with a lost buffer |"
        " left in buffer | in database | lost | duplicates | seqs (db/edge) |"
        " alarm events (db/edge) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in books:
        lines.append(
            f"| {b.gateway} | {b.epochs} | {b.committed} | {b.evicted} | {b.discarded} |"
            f" {b.pending} | {b.db_readings} | {b.lost} | {b.duplicates} |"
            f" {b.db_seqs}/{b.last_seq} | {b.db_alarms}/{b.edge_alarms} |"
        )
    return "\n".join(lines)


def finish_and_account(d: District, timeout: float = 90) -> list[GatewayAccount]:
    """Wait until every gateway is caught up with live data, stop them cleanly (they drain on
    SIGTERM), let ingest catch up, and return the books."""
    wait_for("every gateway to drain its backlog", d.drained, timeout, every=0.5)
    codes = d.stop_gateways()
    assert all(rc == 0 for rc in codes.values()), f"unclean gateway exits: {codes}"
    with contextlib.suppress(AssertionError):  # if it never catches up, the books say why
        wait_for(
            "ingest to catch up", lambda: caught_up(d.db_url, d.buffers, d.retired), timeout, 0.5
        )
    books = account(d.db_url, d.buffers, d.retired)
    print(books_table(books))
    return books


def report(name: str, data: dict[str, Any]) -> None:
    """Print one experiment's summary; also append it to $LIFELINE_PROOF_REPORT if set."""
    line = json.dumps({"experiment": name, **data}, sort_keys=True)
    print(line)
    target = os.environ.get("LIFELINE_PROOF_REPORT")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(line + "\n")


# --- clean shutdown and restart of every process under load ------------------------------------


def test_sigterm_and_restart_of_every_process_under_load_loses_nothing(tmp_path: Path) -> None:
    """SIGTERM + restart each program in turn while the district runs; the books balance."""
    seed = int(os.environ.get("LIFELINE_SHUTDOWN_SEED", "8101"))
    rng = random.Random(seed)
    with district(tmp_path, gateways=2, devices=40, seed=seed, duration_s=30) as d:
        d.add_collector(f"collector-{uuid.uuid4().hex[:6]}")
        for g, server in enumerate(d.scenario["servers"], start=1):
            d.add_gateway(f"gw-{g}", server)
        wait_for("first readings", lambda: caught_up(d.db_url, d.buffers) and _rows(d) > 0, 60)
        steps: list[str] = []
        order = ["gw-1", "collector", "firmware-sim", "gw-2", "collector"]
        for name in order:
            time.sleep(rng.uniform(1.5, 3.0))  # under load: polling and publishing
            proc = d.collectors[0] if name == "collector" else d.sim
            proc = d.gateways.get(name, proc)
            rc = proc.term()
            steps.append(f"SIGTERM {name} -> exit {rc}")
            assert rc == 0, f"{name} exited {rc} on SIGTERM: see {proc.log}"
            time.sleep(rng.uniform(0.5, 1.5))
            proc.start()
            if name == "collector":
                d.wait_ready(0)
        time.sleep(3)
        books = finish_and_account(d)
    problems = [p for b in books for p in b.problems()]
    report("shutdown", {"seed": seed, "steps": steps, "books": [vars(b) for b in books]})
    assert not problems, problems
    assert all(b.committed > 0 for b in books)


def _rows(d: District) -> int:
    with psycopg.connect(d.db_url) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    return int(row[0]) if row else 0
