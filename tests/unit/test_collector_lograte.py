"""RepeatLimiter: a flood of one message becomes a few lines and a count (injected clock)."""

from __future__ import annotations

import logging

import pytest

from lifeline.collector.lograte import RepeatLimiter

pytestmark = pytest.mark.unit


def record(msg: str, *args: object, name: str = "uvicorn.error") -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)


def test_a_flood_of_one_kind_is_cut_to_the_burst_and_counted() -> None:
    now = [0.0]
    limiter = RepeatLimiter(burst=3, window_s=60, clock=lambda: now[0])
    passed = [limiter.filter(record("accept failed: %s", i)) for i in range(1000)]
    assert passed == [True] * 3 + [False] * 997  # same template, other values: one kind
    assert limiter.filter(record("another message"))  # another kind is not held back
    now[0] = 61.0
    late = record("accept failed: %s", "x")
    assert limiter.filter(late)
    assert late.getMessage() == "accept failed: x [997 more like this in 61 s not logged]"
    again = [limiter.filter(record("accept failed: %s", i)) for i in range(3)]
    assert again == [True, True, False]  # a new window: the burst again
