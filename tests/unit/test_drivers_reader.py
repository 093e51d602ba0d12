"""DeviceReader: split refused merged reads and remember the plan; retries and busy backoff.

The device is a hand-written in-memory meter (the `ReadLink` port), table-driven: which
registers it has, how many it serves per read, and a script of answers to come.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from lifeline.drivers.errors import BadFrame, DeviceException, DeviceTimeout
from lifeline.drivers.planner import ReadRequest
from lifeline.drivers.profile import PointSpec
from lifeline.drivers.reader import DeviceReader, describe_plan
from lifeline.drivers.values import decode_point

pytestmark = pytest.mark.unit


class Meter:
    """Registers hold their own address; refuses reads as a strict field device does."""

    def __init__(self, mapped: set[int], limit: int = 125, script: list[str] | None = None):
        self.mapped = mapped
        self.limit = limit
        self.script = list(script or [])  # per read: "busy", "ack", "timeout", "garbage", "11"
        self.reads: list[tuple[int, int]] = []

    async def read(
        self,
        unit: int,
        request: ReadRequest,
        timeout: float,  # noqa: ASYNC109 - the ReadLink signature
    ) -> list[int]:
        self.reads.append((request.address, request.count))
        a, n, fc = request.address, request.count, request.function
        step = self.script.pop(0) if self.script else "ok"
        if step in ("busy", "ack"):
            raise DeviceException(unit, a, fc, 6 if step == "busy" else 5)
        if step == "timeout":
            raise DeviceTimeout(unit, a, fc, "no answer")
        if step == "garbage":
            raise BadFrame(unit, a, fc, "CRC check failed")
        if step.isdigit():
            raise DeviceException(unit, a, fc, int(step))
        if n > self.limit:
            raise DeviceException(unit, a, fc, 3)
        if any(r not in self.mapped for r in range(a, a + n)):
            raise DeviceException(unit, a, fc, 2)
        return list(range(a, a + n))


def points(*defs: tuple[int, str]) -> list[PointSpec]:
    return [
        PointSpec(name=f"r{a}", table="holding", address=a, dtype=d)  # type: ignore[arg-type]
        for a, d in defs
    ]


def u16(*addresses: int) -> list[PointSpec]:
    return points(*[(a, "uint16") for a in addresses])


def run_polls(reader: DeviceReader, meter: Meter, n: int) -> list[dict[str, object]]:
    async def go() -> list[dict[str, object]]:
        return [dict(await reader.poll(meter)) for _ in range(n)]

    return asyncio.run(go())


PLAN_CASES = [
    # (id, points, registers the device has, its per-read limit, plan learnt, unreadable)
    (
        "the field's meter: nothing at 11175",
        u16(11174, 11176, 11177),
        {11174, 11176, 11177},
        125,
        "fc3 11174+1, fc3 11176+2",
        [],
    ),
    (
        "at most 16 registers a read",
        u16(*range(40)),
        set(range(40)),
        16,
        "fc3 0+10, fc3 10+10, fc3 20+10, fc3 30+10",
        [],
    ),
    (
        "a profile point the firmware lacks",
        u16(4, 5, 6),
        {4, 6},
        125,
        "fc3 4+1, fc3 6+1",
        ["r5"],
    ),
    (
        "a gap and a limit",
        points((0, "float32"), (2, "uint16"), (10, "float32"), (12, "float32")),
        {0, 1, 2, 10, 11, 12, 13},
        2,
        "fc3 0+2, fc3 2+1, fc3 10+2, fc3 12+2",
        [],
    ),
    ("a polite device", u16(0, 1, 5), {0, 1, 2, 3, 4, 5}, 125, "fc3 0+6", []),
]


@pytest.mark.parametrize(
    ("pts", "mapped", "limit", "learnt", "unreadable"),
    [case[1:] for case in PLAN_CASES],
    ids=[case[0] for case in PLAN_CASES],
)
def test_refused_merged_reads_are_split_and_the_plan_that_works_is_kept(
    pts: list[PointSpec],
    mapped: set[int],
    limit: int,
    learnt: str,
    unreadable: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    meter = Meter(mapped, limit)
    reader = DeviceReader(1, pts, timeout=0.1)
    with caplog.at_level(logging.WARNING, logger="lifeline.drivers"):
        first, second, third = run_polls(reader, meter, 3)
    expected = {
        p.name: decode_point(p, list(range(p.address, p.end)))
        for p in pts
        if p.name not in unreadable
    }
    assert first == second == third == expected
    assert describe_plan(reader.plan) == learnt
    assert sorted(reader.unreadable) == unreadable
    # From the second poll on, exactly the learnt plan is read: no refused request any more.
    per_poll = len(reader.plan)
    assert meter.reads[-2 * per_poll :] == [(r.address, r.count) for r in reader.plan] * 2
    assert reader.last.clean
    changed = learnt != describe_plan(reader.planned)
    assert len(caplog.records) == (1 if changed else 0), "the new plan is logged once"


def test_a_device_that_refuses_every_point_is_alive_and_is_asked_afresh() -> None:
    meter = Meter(set())
    reader = DeviceReader(1, u16(1, 2), timeout=0.1)

    async def go() -> None:
        for _ in range(2):
            with pytest.raises(DeviceException) as exc:
                await reader.poll(meter)
            assert exc.value.code == 2
            assert reader.plan == reader.planned  # nothing learnt that could be used

    asyncio.run(go())
    assert meter.reads == [(1, 2), (1, 1), (2, 1)] * 2


RETRY_CASES = [
    # (id, script, retries, busy_retries, outcome, (timeouts, retried, busy), sleeps)
    ("clean", [], 1, 3, "ok", (0, 0, 0), []),
    ("a timeout covered", ["timeout"], 1, 3, "ok", (1, 1, 0), []),
    ("garbage covered", ["garbage"], 1, 3, "ok", (0, 1, 0), []),
    ("two timeouts, one retry", ["timeout", "timeout"], 1, 3, DeviceTimeout, (2, 1, 0), []),
    ("no retry", ["timeout"], 0, 3, DeviceTimeout, (1, 0, 0), []),
    ("busy twice", ["busy", "ack"], 1, 3, "ok", (0, 0, 2), [0.05, 0.1]),
    ("busy for ever", ["busy"] * 4, 1, 3, DeviceException, (0, 0, 4), [0.05, 0.1, 0.2]),
    ("gateway: target failed", ["11"], 1, 3, "ok", (1, 1, 0), []),
    ("device failure", ["4"], 1, 3, DeviceException, (0, 0, 0), []),
]


@pytest.mark.parametrize(
    ("script", "retries", "busy_retries", "outcome", "counts", "sleeps"),
    [case[1:] for case in RETRY_CASES],
    ids=[case[0] for case in RETRY_CASES],
)
def test_retries_and_busy_backoff_are_bounded_and_counted(
    script: list[str],
    retries: int,
    busy_retries: int,
    outcome: object,
    counts: tuple[int, int, int],
    sleeps: list[float],
) -> None:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    meter = Meter({7}, script=script)
    reader = DeviceReader(1, u16(7), 0.1, retries, busy_retries, 0.05, sleep=sleep)
    if outcome == "ok":
        assert run_polls(reader, meter, 1) == [{"r7": 7}]
    else:
        with pytest.raises(outcome) as exc:  # type: ignore[call-overload]
            run_polls(reader, meter, 1)
        assert not isinstance(exc.value, DeviceException) or exc.value.code in (4, 6)
    last = reader.last
    assert (last.timeouts, last.retried, last.busy) == counts
    assert slept == sleeps


def test_one_read_still_busy_gives_the_others_values_and_says_so() -> None:
    # Two reads (gap 10 > max_gap 4); the first stays busy past its retries.
    reader = DeviceReader(
        1, u16(0, 10), 0.1, busy_retries=2, max_gap=4, sleep=lambda s: asyncio.sleep(0)
    )
    assert run_polls(reader, Meter({0, 10}, script=["busy"] * 3), 1) == [{"r10": 10}]
    assert reader.last.busy == 3
    assert len(reader.last.failed) == 1
    assert "device busy" in reader.last.failed[0]
    assert "covered by retries" in reader.last.summary()
