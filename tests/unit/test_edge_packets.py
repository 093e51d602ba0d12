"""The batch budget from the broker's limits: announced, configured and learned from refusals."""

from __future__ import annotations

import pytest

from lifeline.edge.packets import FLOOR_BYTES, PacketLimit, publish_overhead

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


def test_two_drops_in_a_row_after_batches_larger_than_ever_taken_count_as_a_refusal() -> None:
    lim = limit()
    lim.accepted(2 * KIB)
    assert not lim.dropped(1 * KIB)  # it took larger before: the network, not the size
    assert not lim.dropped(128 * KIB)
    lim.accepted(1 * KIB)  # a small one through in between: no news about the large size
    assert lim.dropped(100 * KIB)
    assert lim.budget() == 50 * KIB  # half the smallest batch that was in flight at a drop
    assert not lim.dropped(40 * KIB)
    lim.accepted(40 * KIB)  # it takes that size after all: those drops were something else
    assert not lim.dropped(45 * KIB)
