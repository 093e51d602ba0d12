"""Soak: a simulated district under a seeded fault injector; the books must balance exactly.

Four gateways poll 200 simulated devices of all four families (the last gateway through an
RS-485 bus behind a DTU, RTU over TCP) while firmware-sim plays leaks, open covers, lamp
failures and tilt steps. At random seeded moments the injector SIGKILLs and restarts gateways
and the collector, stops and starts the broker, restarts PostgreSQL, drops the serial bus, and
lets gw-1 (a buffer of a few hundred kB) fill to its bound while the broker is down. Then every
buffer drains and the accounting compares, per gateway, the readings committed at the edge, the
ones evicted (counted), and the rows in PostgreSQL.

LIFELINE_SOAK_SECONDS (default 60) sets the length, LIFELINE_SOAK_SEED the seed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.test_proof_district import (
    District,
    Proc,
    collector_open_alarms,
    district,
    finish_and_account,
    open_alarms,
    report,
    wait_for,
)
from tests.services import faketime_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.proof]

GATEWAYS = 4
DEVICES = 200
SMALL_BUFFER_MB = 0.1  # gw-1: fills to its bound within seconds of the broker going down
# The broker takes packets of at most 48 KiB, below the gateways' 128 KiB batches: they must
# learn it (MQTT 5 CONNACK) and cut their batches to fit.
PACKET_LIMIT = 48 * 1024
CLOCK_STEP_GATEWAY = "gw-2"  # its wall clock is stepped by libfaketime, as NTP would


@dataclass(frozen=True)
class Step:
    """One thing the injector does at `at` seconds after the start."""

    at: float
    label: str
    action: Callable[[], None]


class Injector:
    """Seeded fault plan over a running district; every action is idempotent and logged."""

    def __init__(
        self, d: District, rng: random.Random, duration_s: float, clock_file: Path
    ) -> None:
        self.d = d
        self.clock_file = clock_file
        self.late_db = ""
        self.rng = rng
        self.duration_s = duration_s
        self.pg_up = True
        self.log: list[str] = []
        self.collector_id = ""

    def _when(self) -> float:
        return self.rng.uniform(5.0, self.duration_s * 0.85)

    def plan(self) -> list[Step]:
        """The whole schedule, drawn from the seed before anything runs."""
        d, rng = self.d, self.rng
        scale = max(1.0, self.duration_s / 60)
        steps: list[Step] = []

        def outage(label: str, down: Callable[[], None], up: Callable[[], None], s: float) -> None:
            at = self._when()
            steps.append(Step(at, f"{label}: down for {s:.1f} s", down))
            steps.append(Step(at + s, f"{label}: back", up))

        for _ in range(round(3 * scale)):
            gw = rng.choice(sorted(d.gateways))
            proc = d.gateways[gw]
            outage(f"SIGKILL gateway {gw}", proc.kill, self._starter(proc), rng.uniform(0.5, 3))
        for _ in range(round(2 * scale)):
            proc = d.collectors[0]
            outage("SIGKILL collector", proc.kill, self._starter(proc), rng.uniform(0.5, 3))
        for _ in range(round(1 * scale)):
            outage(
                "broker stopped (gw-1 buffer fills to its bound)",
                self._broker_down,
                self._broker_up,
                rng.uniform(8, 12),
            )
        for _ in range(round(1 * scale)):
            outage("PostgreSQL restart", self._pg_down, self._pg_up, rng.uniform(1, 3))
        for _ in range(round(1 * scale)):
            gw = rng.choice(sorted(set(d.gateways) - {"gw-1"}))  # gw-1 has its own books trick
            steps.append(
                Step(
                    self._when(),
                    f"gateway {gw} loses its buffer (new SD card): SIGKILL, file gone, restart",
                    functools.partial(d.lose_buffer, gw),
                )
            )
        outage(
            f"{CLOCK_STEP_GATEWAY}'s wall clock steps back an hour (NTP), then forward again",
            functools.partial(self._set_clock, "-1h"),
            functools.partial(self._set_clock, "+0"),
            rng.uniform(8, 15),
        )
        steps.append(
            Step(
                self.duration_s * 0.4,
                "a second collector starts late, on a database of its own",
                self._late_collector,
            )
        )
        serial = [x["id"] for x in d.scenario["servers"][-1]["devices"]]
        for _ in range(round(2 * scale)):
            dev = rng.choice(serial)
            outage(
                f"serial bus drops the link on each request to {dev}",
                functools.partial(d.sim_call, "fault", device=dev, kind="link_drop", args={}),
                functools.partial(d.sim_call, "fault", device=dev, kind="none", args={}),
                rng.uniform(3, 6),
            )
        return sorted(steps, key=lambda s: s.at)

    @staticmethod
    def _starter(proc: Proc) -> Callable[[], None]:
        def start() -> None:
            if not proc.alive():
                proc.start()

        return start

    def _set_clock(self, offset: str) -> None:
        self.clock_file.write_text(offset + "\n")

    def _late_collector(self) -> None:
        self.late_db = self.d.new_database()
        self.d.add_collector(f"late-{uuid.uuid4().hex[:6]}", db_url=self.late_db)

    def _broker_down(self) -> None:
        self.d.broker.stop()

    def _broker_up(self) -> None:
        if self.d.broker.proc is None:
            self.d.broker.start()

    def _pg_down(self) -> None:
        if self.pg_up:
            self.d.pg.stop("immediate")
            self.pg_up = False

    def _pg_up(self) -> None:
        if not self.pg_up:
            self.d.pg.start()
            self.pg_up = True

    def run(self, steps: list[Step]) -> None:
        """Play the plan in real time, then make sure everything is up again."""
        t0 = time.monotonic()
        for step in steps:
            time.sleep(max(0.0, t0 + step.at - time.monotonic()))
            step.action()
            self.log.append(f"{time.monotonic() - t0:6.1f} s  {step.label}")
        time.sleep(max(0.0, t0 + self.duration_s - time.monotonic()))
        self._broker_up()
        self._pg_up()
        for proc in [*self.d.gateways.values(), *self.d.collectors]:
            self._starter(proc)()


def test_soak_district_under_faults_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("LIFELINE_SOAK_SEED", "20261108"))
    duration = float(os.environ.get("LIFELINE_SOAK_SECONDS", "60"))
    rng = random.Random(seed)
    print(f"soak seed {seed}, {duration:.0f} s")
    clock_file = tmp_path / f"{CLOCK_STEP_GATEWAY}.faketime"
    clock_file.write_text("+0\n")
    limit = f"max_packet_size {PACKET_LIMIT}"
    with district(tmp_path, GATEWAYS, DEVICES, seed, duration, broker_conf=limit) as d:
        d.add_collector(f"collector-{uuid.uuid4().hex[:6]}")
        for g, server in enumerate(d.scenario["servers"], start=1):
            extra = {"buffer": {"max_mb": SMALL_BUFFER_MB}} if g == 1 else {}
            env = faketime_env(clock_file) if f"gw-{g}" == CLOCK_STEP_GATEWAY else None
            d.add_gateway(f"gw-{g}", server, env=env, **extra)
        wait_for("every gateway online", lambda: all(p.exists() for p in d.buffers.values()), 30)
        # A detector whose string register holds an embedded NUL (C\0H4): the gateway must not
        # send it on, or PostgreSQL refuses the batch and ingest stalls behind it.
        devices = d.scenario["servers"][1]["devices"]
        gas = next(x["id"] for x in devices if x["profile"] == "gas_detector")
        d.sim_call("set", device=gas, point="gas_name", value="C\x00H4")
        injector = Injector(d, rng, duration, clock_file)
        steps = injector.plan()
        injector.run(steps)
        answered = sum(
            d.sim_call("stats", device=dev["id"])["answered"]
            for server in d.scenario["servers"]
            for dev in server["devices"]
        )
        books = finish_and_account(d, timeout=120)
        pictures = {gw: open_alarms(path) for gw, path in d.buffers.items()}
        differences: list[str] = []
        for name, db in (("collector", d.db_url), ("late collector", injector.late_db)):
            with contextlib.suppress(AssertionError):  # if they never agree, say where
                agreed = functools.partial(_agrees, db, pictures)
                wait_for(f"the {name} to hold each gateway's open alarms", agreed, 60)
            differences += [f"{name}: {x}" for x in _picture_differences(db, pictures)]
        clock_step = _scalar(
            d, "SELECT clock_step_ms FROM gateways WHERE gateway_id = %s", CLOCK_STEP_GATEWAY
        )
        biggest = _scalar(d, "SELECT max(length(payload)) FROM dead_letters")
        dead_letters = _scalar(d, "SELECT count(*) FROM dead_letters")
        gas_names = _scalar(
            d,
            "SELECT string_agg(DISTINCT value_text, ',') FROM readings"
            " WHERE device = %s AND point = 'gas_name'",
            gas,
        )
    print("\n".join(injector.log))
    problems = [p for b in books for p in b.problems()]
    report(
        "soak",
        {
            "seed": seed,
            "seconds": duration,
            "gateways": GATEWAYS,
            "devices": DEVICES,
            "injected": injector.log,
            "sim_answered_requests": answered,
            "books": [vars(b) for b in books],
            "dead_letters": dead_letters,
            "open_alarms_at_end": {gw: len(a) for gw, a in pictures.items()},
            "clock_step_ms": clock_step,
        },
    )
    assert not problems, problems
    assert not differences, differences
    assert dead_letters == 0, f"an honest gateway's batch was refused (largest {biggest} bytes)"
    assert clock_step is not None, f"{CLOCK_STEP_GATEWAY} announced no clock step"
    assert abs(abs(clock_step) - 3_600_000) < 10_000, clock_step
    assert sum(len(a) for a in pictures.values()) > 0, "no alarm was open at the end"
    assert gas_names == "CH4"
    by_gw = {b.gateway: b for b in books}
    assert sum(b.epochs for b in books) > GATEWAYS, "no gateway lost its buffer"
    assert by_gw["gw-1"].evicted > 0, "gw-1's buffer never reached its bound"
    # Every gateway raised alarms, gw-1 among them while its buffer evicted telemetry: the
    # equal alarm counts above show none was evicted.
    assert all(b.edge_alarms > 0 for b in books), "a gateway raised no alarms"
    assert all(b.committed > 0 for b in books)


def _picture_differences(db_url: str, pictures: dict[str, set[str]]) -> list[str]:
    """Where the collector on `db_url` disagrees with each gateway's open alarms, in words."""
    out = []
    for gw, ids in sorted(pictures.items()):
        held = collector_open_alarms(db_url, gw)
        if held != ids:
            out.append(f"{gw}: missing {sorted(ids - held)}, extra {sorted(held - ids)}")
    return out


def _agrees(db_url: str, pictures: dict[str, set[str]]) -> bool:
    return not _picture_differences(db_url, pictures)


def _scalar(d: District, sql: str, *args: object) -> Any:
    with psycopg.connect(d.db_url) as conn:
        row = conn.execute(sql, args).fetchone()
    return None if row is None else row[0]
