"""The device online rate on plain values: the share online now, and online time over a window."""

import pytest

from lifeline.collector.models import DeviceState, Status, StatusChange
from lifeline.collector.online import online_rate

pytestmark = pytest.mark.unit

S, U = 1_000_000, 2_000_000  # the window [S, U): 1 000 000 ms


def dev(name: str, status: Status) -> DeviceState:
    return DeviceState(name, "gw", "gas_detector", "gas", None, status, 0, "")


def ch(name: str, status: str, ts: int, gateway: str = "gw") -> StatusChange:
    return StatusChange(gateway, name, status, ts)


@pytest.mark.parametrize(
    ("history", "online_ms", "observed_ms"),
    [
        # online since before the window: the whole window online
        ([ch("a", "online", 0)], 1_000_000, 1_000_000),
        # offline for the second half
        ([ch("a", "online", 0), ch("a", "offline", 1_500_000)], 500_000, 1_000_000),
        # first seen inside the window: observed from then on
        ([ch("a", "online", 1_750_000)], 250_000, 250_000),
        # unknown (its gateway died) is observed and not online
        ([ch("a", "online", 0), ch("a", "unknown", 1_200_000)], 200_000, 1_000_000),
        # changes after the window do not count
        ([ch("a", "offline", 0), ch("a", "online", 2_500_000)], 0, 1_000_000),
        # a device the collector no longer knows is left out
        ([ch("a", "online", 0), ch("gone", "offline", 0)], 1_000_000, 1_000_000),
        # the same device id on another gateway is another device
        ([ch("a", "online", 0), ch("a", "offline", 0, gateway="gw-2")], 1_000_000, 1_000_000),
        # never logged: nothing observed
        ([], 0, 0),
    ],
)
def test_online_time_over_the_window(
    history: list[StatusChange], online_ms: int, observed_ms: int
) -> None:
    rate = online_rate([dev("a", Status.ONLINE)], history, S, U)
    assert (rate.online_ms, rate.observed_ms) == (online_ms, observed_ms)
    expected = online_ms / observed_ms if observed_ms else None
    assert rate.online_time_rate == expected


def test_online_now_counts_unknown_as_not_online() -> None:
    devices = [dev("a", Status.ONLINE), dev("b", Status.OFFLINE), dev("c", Status.UNKNOWN)]
    rate = online_rate(devices, [], S, U)
    assert (rate.devices, rate.online, rate.offline, rate.unknown) == (3, 1, 1, 1)
    assert rate.online_now_rate == pytest.approx(1 / 3)
    assert online_rate([], [], S, U).online_now_rate is None


def test_two_devices_add_up() -> None:
    devices = [dev("a", Status.ONLINE), dev("b", Status.OFFLINE)]
    history = [ch("a", "online", 0), ch("b", "online", 0), ch("b", "offline", 1_250_000)]
    rate = online_rate(devices, history, S, U)
    assert (rate.online_ms, rate.observed_ms) == (1_250_000, 2_000_000)
    assert rate.online_time_rate == pytest.approx(0.625)
