"""How a person names a device on the command line or in a file: one rule for every edge command.

Device ids follow the scheme `GATEWAY.bBUS-FAMILY-UNIT` (e.g. `gw-xh-0412.b1-mh-001`, see
docs/installer.md). Where an id is asked, the full id, its part after `GATEWAY.` (`b1-mh-001`)
or a unit id that only one device has (`1`) will do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["KnownDevice", "UnknownDevice", "resolve_device"]


@dataclass(frozen=True, slots=True)
class KnownDevice:
    """A device a name may point at: its full id, and its Modbus unit id when known."""

    id: str
    unit: int | None = None


class UnknownDevice(ValueError):
    """A name that points at no device, or at several; the message names the known devices."""


def resolve_device(name: str, devices: Iterable[KnownDevice], where: str = "") -> str:
    """The full id of the one device in `devices` that `name` names.

    `name` is a full id, or the part after `GATEWAY.` of one (any dot-separated tail of the id,
    so it needs no gateway id: a buffer read without its config has none), or a unit id that
    only one device has. A full id always wins: a device may be called `4` outright.
    `where` (e.g. "on gateway gw-01") goes into the message.

    Raises UnknownDevice when `name` names no device, or several (listing them, and all the
    devices known, so the person can pick one).
    """
    known = list(dict.fromkeys(devices))
    ids = list(dict.fromkeys(d.id for d in known))
    key = name.strip()
    if key in ids:
        return key
    tails = {d.id for d in known if key and d.id.endswith("." + key)}
    units = {d.id for d in known if d.unit is not None and key == str(d.unit)}
    matches = sorted(tails | units)
    if len(matches) == 1:
        return matches[0]
    on = f" {where}" if where else ""
    listing = ", ".join(ids) if ids else "none known"
    if matches:
        raise UnknownDevice(
            f"{name!r} names {len(matches)} devices{on} ({', '.join(matches)}): "
            "give the full device id"
        )
    raise UnknownDevice(f"no device {name!r}{on}; its devices: {listing}")
