"""Topic scheme `<root>/v1/<site>/<gateway>/<kind>` and its parser."""

import re
from dataclasses import dataclass
from enum import StrEnum

from lifeline.wire.errors import WireError

WIRE_VERSION = 1
DEFAULT_ROOT = "lifeline"
_VERSION_LEVEL = f"v{WIRE_VERSION}"
# Site and gateway ids become topic levels and database keys: keep them boring.
IDENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


class Kind(StrEnum):
    """What a message on a topic is; also the last topic level."""

    DATA = "data"
    ALARM = "alarm"
    DEVICE = "device"
    BIRTH = "birth"
    DEATH = "death"
    STATUS = "status"
    CMD = "cmd"
    CMD_REPLY = "cmd-reply"


# Kinds that travel through the gateway's durable outbox and carry a per-gateway seq.
DURABLE_KINDS = frozenset({Kind.DATA, Kind.ALARM, Kind.DEVICE})


@dataclass(frozen=True, slots=True)
class TopicParts:
    """The levels of a Lifeline topic."""

    site: str
    gateway: str
    kind: Kind


def check_ident(value: str, what: str) -> str:
    """Return `value` if it is a valid site/gateway/device id, else raise WireError."""
    if not isinstance(value, str) or not IDENT_RE.fullmatch(value):
        raise WireError(
            f"{what} {value!r} is not a valid id (1-64 of A-Z a-z 0-9 _ . -, starting alphanumeric)"
        )
    return value


def _check_root(root: str) -> str:
    if not root or root.startswith("/") or root.endswith("/") or any(c in root for c in "+#\0"):
        raise WireError(f"topic root {root!r} must be non-empty, without wildcards or edge slashes")
    return root


def topic(site: str, gateway: str, kind: Kind, root: str = DEFAULT_ROOT) -> str:
    """Build the topic a gateway publishes `kind` messages on."""
    check_ident(site, "site")
    check_ident(gateway, "gateway")
    return f"{_check_root(root)}/{_VERSION_LEVEL}/{site}/{gateway}/{Kind(kind).value}"


def parse_topic(name: str, root: str = DEFAULT_ROOT) -> TopicParts:
    """Split a topic into site, gateway and kind, or raise WireError saying what is wrong."""
    prefix = _check_root(root) + "/"
    if not name.startswith(prefix):
        raise WireError(f"topic {name!r} is not under root {root!r}")
    levels = name[len(prefix) :].split("/")
    if len(levels) != 4:
        raise WireError(f"topic {name!r} must be {root}/v1/<site>/<gateway>/<kind>")
    version, site, gateway, kind = levels
    if version != _VERSION_LEVEL:
        raise WireError(f"topic {name!r} has unsupported version level {version!r}")
    try:
        parsed_kind = Kind(kind)
    except ValueError:
        raise WireError(f"topic {name!r} has unknown kind {kind!r}") from None
    return TopicParts(check_ident(site, "site"), check_ident(gateway, "gateway"), parsed_kind)


def subscription(
    kind: Kind | None = None,
    root: str = DEFAULT_ROOT,
    site: str = "+",
    gateway: str = "+",
    share_group: str | None = None,
) -> str:
    """Build a subscription filter, optionally as an MQTT v5 shared subscription."""
    kind_level = "+" if kind is None else Kind(kind).value
    flt = f"{_check_root(root)}/{_VERSION_LEVEL}/{site}/{gateway}/{kind_level}"
    if share_group is not None:
        check_ident(share_group, "share group")
        return f"$share/{share_group}/{flt}"
    return flt
