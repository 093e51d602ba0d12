"""The device-profile catalog as the collector sees it: families, points, units and alarm rules.

Profiles are owned by the gateway side (drivers/, config/profiles/*.yaml); the collector never
imports that code. It reads the same YAML files as data, and only the few fields it needs: which
family a profile belongs to, the names and units of its points, and the default alarm rules
(type and severity), so that a routing table can be checked against the points it will meet and
a case can show an alarm's value with its unit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

DEVICE_POINT = "_device"  # the point a gateway raises a device's comm-loss alarm on


class CatalogError(ValueError):
    """A profile file that cannot be read as a catalog entry; the message names the file."""


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """One default alarm rule of a point: its type (wire.AlarmType value), severity 1..4 and,
    for a threshold rule, its limit in the point's unit (None for state and comm rules)."""

    alarm_type: str
    severity: int
    message: str = ""
    limit: float | None = None


@dataclass(frozen=True, slots=True)
class PointInfo:
    """One point of a profile: its name, unit ('' if none) and default alarm rules."""

    name: str
    unit: str = ""
    rules: tuple[RuleInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class ProfileInfo:
    """One profile: its name, family and points."""

    name: str
    family: str
    points: tuple[PointInfo, ...]
    source: str = ""


@dataclass(frozen=True, slots=True)
class Catalog:
    """Every profile the collector knows, by name."""

    profiles: dict[str, ProfileInfo] = field(default_factory=dict)

    @property
    def families(self) -> set[str]:
        """Every device family of the catalog."""
        return {p.family for p in self.profiles.values()}

    def points(self, family: str | None = None) -> set[str]:
        """Point names of one family's profiles (every family's if `family` is None)."""
        return {
            pt.name
            for p in self.profiles.values()
            if family is None or p.family == family
            for pt in p.points
        }

    def unit(self, profile: str, point: str) -> str:
        """The unit of a profile's point ('' if unknown or unit-less)."""
        info = self.profiles.get(profile)
        if info is None:
            return ""
        return next((pt.unit for pt in info.points if pt.name == point), "")

    def rules(self) -> Iterator[tuple[ProfileInfo, PointInfo, RuleInfo]]:
        """Every default alarm rule of every profile, in file order."""
        for p in self.profiles.values():
            for pt in p.points:
                for rule in pt.rules:
                    yield p, pt, rule

    def merged(self, others: Iterable[ProfileInfo]) -> Catalog:
        """This catalog with `others` added (a same-named profile is replaced)."""
        profiles = dict(self.profiles)
        profiles.update({p.name: p for p in others})
        return Catalog(profiles)


def _text(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def parse_profile(doc: Any, source: str) -> ProfileInfo:
    """The catalog entry of one parsed profile YAML document; CatalogError if it is not one."""
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise CatalogError(f"{source}: not a device profile (no `name`)")
    family = doc.get("family")
    if not isinstance(family, str) or not family:
        raise CatalogError(f"{source}: profile {doc['name']!r} has no `family`")
    points = []
    for raw in doc.get("points") or []:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise CatalogError(f"{source}: a point without a `name`")
        rules = tuple(
            RuleInfo(
                str(r.get("type", "")),
                int(r.get("severity", 3)),
                _text(r.get("message")),
                _number(r.get("limit")),
            )
            for r in raw.get("alarms") or []
            if isinstance(r, dict)
        )
        points.append(PointInfo(raw["name"], _text(raw.get("unit")), rules))
    return ProfileInfo(doc["name"], family, tuple(points), source)


def load_profile(path: Path) -> ProfileInfo:
    """Read one profile file as a catalog entry; CatalogError with the file if it cannot."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CatalogError(f"{path}: cannot read a profile: {exc}") from None
    return parse_profile(doc, str(path))


def shipped_catalog() -> Catalog:
    """The profiles shipped in config/profiles (package data of `lifeline.config`)."""
    root = files("lifeline.config") / "profiles"
    profiles: dict[str, ProfileInfo] = {}
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith((".yaml", ".yml")):
            doc = yaml.safe_load(entry.read_text(encoding="utf-8"))
            info = parse_profile(doc, f"config/profiles/{entry.name}")
            profiles[info.name] = info
    return Catalog(profiles)
