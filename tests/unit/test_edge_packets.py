"""The batch budget from the broker's limits: announced, configured and learned from refusals."""

from __future__ import annotations

import pytest

from edge.packets import FLOOR_BYTES, PacketLimit, publish_overhead

pytestmark = pytest.mark.unit

KIB = 1024


def limit(configured: int | None = None) -> PacketLimit:
    return PacketLimit(128 * KIB, configured, publish_overhead(40))


def test_the_smallest_of_config_announcement_and_batch_bytes_wins() -> None:
    lim = limit()
    assert lim.budget() == 128 * KIB
    lim.announced = 16 * KIB
    assert lim.budget() == 16 * KIB - publish_overhead(40)
    lim.configured = 8 * KIB
    assert lim.budget() == 8 * KIB - publish_overhead(40)
    assert lim.fits(8 * KIB - publish_overhead(40), 40)
    assert not lim.fits(8 * KIB, 40)


def test_refusals_halve_towards_the_largest_accepted() -> None:
    lim = limit()
    lim.accepted(300)
    assert lim.refused(128 * KIB)
    assert lim.budget() == 64 * KIB
    assert lim.refused(64 * KIB)
    assert lim.budget() == 32 * KIB
    lim.accepted(20 * KIB)
    assert lim.refused(32 * KIB)
    assert lim.budget() == 20 * KIB  # known good beats halving


def test_a_refusal_that_cannot_be_the_size_changes_nothing() -> None:
    lim = limit()
    lim.accepted(100 * KIB)
    assert not lim.refused(50 * KIB)  # a larger one went through: another reason
    assert not lim.refused(FLOOR_BYTES)
    assert lim.budget() == 128 * KIB


def test_drops_count_only_when_the_same_batch_is_in_flight_twice() -> None:
    lim = limit()
    assert not lim.dropped(7, 128 * KIB)
    assert not lim.dropped(8, 128 * KIB)  # another batch: a flaky link, not a size
    assert lim.dropped(8, 128 * KIB)
    assert lim.budget() == 64 * KIB
    lim.accepted(1000)
    assert not lim.dropped(9, 64 * KIB)  # an acknowledgement in between starts over
