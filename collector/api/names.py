"""Naming a device in the API: a device id is unique only within its gateway."""

from collections.abc import Sequence

from lifeline.collector.models import DeviceState
from lifeline.collector.store import Store


class AmbiguousDevice(Exception):
    """A device id that several gateways have, used without naming the gateway (409)."""

    def __init__(self, device: str, candidates: list[DeviceState]) -> None:
        gateways = ", ".join(d.gateway for d in candidates)
        super().__init__(
            f"device {device} is on gateways {gateways}: name the gateway"
            f" (/api/v1/gateways/GATEWAY/devices/{device}, or gateway=GATEWAY)"
        )
        self.candidates = [
            {
                "gateway": d.gateway,
                "device": d.device,
                "href": f"/api/v1/gateways/{d.gateway}/devices/{d.device}",
            }
            for d in candidates
        ]


def find_device(
    store: Store, device: str, gateway: str | None = None, scope: Sequence[str] | None = None
) -> DeviceState | None:
    """The device `device` (of `gateway`, if given), or None if no gateway announced it (or
    none in `scope`, a 专业部门 key's department values: store/scope_sql.py).

    Raises AmbiguousDevice if no gateway is given and several gateways have that id (in scope).
    """
    found = store.devices(gateway=gateway, device=device, scope=scope)
    if len(found) > 1:
        raise AmbiguousDevice(device, found)
    return found[0] if found else None


def gateway_of(store: Store, device: str, gateway: str | None) -> str | None:
    """The gateway to read `device`'s data from: the one given, else the only one that has it
    (None: no gateway announced it, so read whatever is stored under that id)."""
    if gateway is not None:
        return gateway
    found = find_device(store, device)
    return found.gateway if found else None
