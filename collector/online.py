"""The device online rate (设备在线率), from the devices' current status and their status log.

Two figures, over the devices the collector knows:
- online now: the share of devices whose status is `online` at this moment (a device whose
  gateway is offline is `unknown`, and not online);
- online time over a window [since, until): the time devices spent online divided by the time
  they were observed in it. A device is observed from its first logged status (or from `since`
  if it had one before); `offline` and `unknown` time counts as observed and not online.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from lifeline.collector.models import DeviceState, Status, StatusChange


@dataclass(frozen=True, slots=True)
class OnlineRate:
    """Device online figures; a rate is None when there is nothing to divide by."""

    devices: int
    online: int
    offline: int
    unknown: int
    online_now_rate: float | None
    since_ms: int
    until_ms: int
    observed_ms: int  # device-milliseconds observed in the window
    online_ms: int  # device-milliseconds online in the window
    online_time_rate: float | None


def online_rate(
    devices: Sequence[DeviceState],
    history: Sequence[StatusChange],
    since_ms: int,
    until_ms: int,
) -> OnlineRate:
    """The online figures of `devices` now, and over [since_ms, until_ms) from `history` (each
    device's changes oldest first, its last change before `since_ms` included)."""
    by_status = {s: sum(1 for d in devices if d.status is s) for s in Status}
    observed = online = 0
    wanted = {(d.gateway, d.device) for d in devices}
    current: dict[tuple[str, str], tuple[str, int]] = {}
    for change in history:
        key = (change.gateway, change.device)
        if key not in wanted:
            continue
        at = min(max(change.ts_ms, since_ms), until_ms)
        if key in current:
            status, start = current[key]
            observed += at - start
            online += at - start if status == Status.ONLINE.value else 0
        current[key] = (change.status, at)
    for status, start in current.values():
        observed += until_ms - start
        online += until_ms - start if status == Status.ONLINE.value else 0
    n = len(devices)
    return OnlineRate(
        devices=n,
        online=by_status[Status.ONLINE],
        offline=by_status[Status.OFFLINE],
        unknown=by_status[Status.UNKNOWN],
        online_now_rate=by_status[Status.ONLINE] / n if n else None,
        since_ms=since_ms,
        until_ms=until_ms,
        observed_ms=observed,
        online_ms=online,
        online_time_rate=online / observed if observed else None,
    )
