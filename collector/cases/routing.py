"""The routing table: which alarms become which cases, for which department, with what deadline."""

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class RoutingError(ValueError):
    """A routing file that cannot be used; the message names the field."""


class Deadline(BaseModel):
    """Allowed hours per urgency."""

    model_config = ConfigDict(extra="forbid")

    urgent: float = Field(gt=0)
    normal: float = Field(gt=0)


class Route(BaseModel):
    """Maps (device family, alarm types) to a problem and its case."""

    model_config = ConfigDict(extra="forbid")

    family: str
    alarm_types: list[str] = Field(min_length=1)
    points: list[str] | None = Field(default=None, description="only these points (default: any)")
    problem: str = Field(description="problem type: one open case per (asset, problem)")
    title: str = ""
    event_subcategory: str | None = Field(
        default=None,
        description="事件 小类 for devices without an asset; without it they get no case",
    )
    auto_register: bool = Field(
        default=True, description="立案 at once, or wait in 受理 for an operator"
    )
    auto_dispatch: bool = Field(
        default=False, description="派遣 to the department right after 立案"
    )
    department: str = Field(default="owner", pattern="^(owner|maintainer)$")
    urgent_severity: int = Field(
        default=2, ge=1, le=4, description="severity at or above this is urgent"
    )

    @field_validator("event_subcategory")
    @classmethod
    def _code(cls, v: str | None) -> str | None:
        if v is not None and not (len(v) == 4 and v.isdigit()):
            raise ValueError(f"小类 {v!r} must be 4 digits (大类 + 小类)")
        return v


class Routing(BaseModel):
    """The whole routing table (config/routing/default.yaml)."""

    model_config = ConfigDict(extra="forbid")

    area_code: str = Field(pattern=r"^\d{6}$", description="area for 事件 cases without an asset")
    utc_offset_hours: int = Field(
        default=8, ge=-12, le=14, description="local time for case-number dates"
    )
    auto_close: bool = Field(default=False, description="结案 automatically when the alarm clears")
    default_department: str
    grid_departments: dict[str, str] = Field(default_factory=dict)
    deadlines: dict[str, Deadline]
    routes: list[Route]

    @field_validator("deadlines")
    @classmethod
    def _default(cls, v: dict[str, Deadline]) -> dict[str, Deadline]:
        if "default" not in v:
            raise ValueError("deadlines needs a 'default' entry")
        return v

    def match(self, family: str, alarm_type: str, point: str) -> Route | None:
        """The first route for this device family, alarm type and point."""
        for r in self.routes:
            if (
                r.family == family
                and alarm_type in r.alarm_types
                and (r.points is None or point in r.points)
            ):
                return r
        return None

    def allowed_hours(self, subcategory: str, urgent: bool) -> float:
        """Hours allowed for a case of this 小类 and urgency."""
        d = self.deadlines.get(subcategory, self.deadlines["default"])
        return d.urgent if urgent else d.normal


def load_routing(path: Path) -> Routing:
    """Load and validate a routing YAML file."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Routing.model_validate(doc)
    except (OSError, yaml.YAMLError) as exc:
        raise RoutingError(f"{path}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise RoutingError(f"{path}: {problems}") from None


def default_routing_path() -> Path:
    """The routing table shipped in config/routing/default.yaml."""
    from importlib.resources import files

    return Path(str(files("lifeline.config") / "routing" / "default.yaml"))
