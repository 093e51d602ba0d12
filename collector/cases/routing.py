"""The routing table: where every alarm ends (a 部件 or 事件 case, a device work order, or an
explicit ignore), for which department, with what deadline.

The table is checked when it is loaded, against wire.AlarmType and the device profiles it will
meet (the shipped ones and any the table lists): a misspelt family, point or alarm type is an
error with "did you mean", never a route that silently matches nothing.
"""

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from lifeline.collector.assets import Asset
from lifeline.collector.cases.calendar import (
    DEFAULT_CALENDAR,
    CalendarError,
    Unit,
    WorkCalendar,
    load_calendar,
)
from lifeline.collector.cases.codes import EVENT_NAMES
from lifeline.collector.cases.phases import Limit, Stage
from lifeline.collector.cases.workflow import COMPONENT, EVENT, UNCLASSIFIED
from lifeline.collector.departments import Directory, check_code, check_name
from lifeline.collector.grids import Grid, GridError, GridMap, load_grids
from lifeline.collector.profiles import (
    DEVICE_POINT,
    Catalog,
    CatalogError,
    load_profile,
    shipped_catalog,
)
from lifeline.wire import AlarmType
from lifeline.wire.codes import (
    AREA_CODE_PATTERN,
    GRID_CODE_RULE,
    SUBCATEGORY_RULE,
    is_area_code,
    is_grid_code,
    is_subcategory,
)

ANY = "*"  # a route's family that matches every family
UNKNOWN_AREA = "000000"  # the area code of a case whose place gives none and no district is set
HOUR_MS = 3_600_000


class RoutingError(ValueError):
    """A routing file that cannot be used; the message names the file, the field and the reason."""


class RouteKind(StrEnum):
    """What a route makes of an alarm."""

    COMPONENT = "component"  # 部件: a defect of the facility itself, a case on its asset
    EVENT = "event"  # 事件: a hazard observed at a place, a case located there
    WORK_ORDER = "work_order"  # 设备运维工单: the monitoring device itself needs its maintainer


class DepartmentRule(StrEnum):
    """Who a route's case goes to: 部件先属主后属地, 事件先属地后属主."""

    OWNER = "owner"  # the asset's 权属单位, else the grid's department, else the default
    MAINTAINER = "maintainer"  # the asset's 养护单位, else its owner, else the grid's, else default
    GRID = "grid"  # the 小类's 主管部门 if named, else the grid's, else the asset's owner


class Outcome(StrEnum):
    """Where one alarm occurrence ended; shown on the alarm as `outcome`."""

    CASE = "case"
    WORK_ORDER = "work_order"
    IGNORED = "ignored"  # an explicit routing rule says why not
    RECORDED = "recorded"  # severity 3-4 and no route: kept as an alarm only


def _code(v: str, what: str) -> str:
    if not is_subcategory(v):
        raise ValueError(f"{what} {v!r} must be {SUBCATEGORY_RULE}")
    return v


class Deadline(BaseModel):
    """The time allowed per urgency, each in its unit (工作时, 工作日 or 自然时; natural hours by
    default, so an urgent hazard runs day and night)."""

    model_config = ConfigDict(extra="forbid")

    urgent: float = Field(gt=0)
    normal: float = Field(gt=0)
    unit: Unit = Field(default=Unit.NATURAL_HOURS, description="unit of `normal`")
    urgent_unit: Unit = Field(default=Unit.NATURAL_HOURS, description="unit of `urgent`")

    def hours(self, urgent: bool) -> float:
        """The allowed amount for this urgency (in its unit)."""
        return self.urgent if urgent else self.normal

    def limit(self, urgent: bool) -> Limit:
        """The limit for this urgency."""
        return Limit(self.hours(urgent), self.urgent_unit if urgent else self.unit)


class Route(BaseModel):
    """Maps (device family, alarm types, points, the asset's 小类) to where the alarm ends."""

    model_config = ConfigDict(extra="forbid")

    family: str = Field(description="device family, or * for every family")
    alarm_types: list[str] = Field(min_length=1, description="wire.AlarmType values")
    points: list[str] | None = Field(default=None, description="only these points (default: any)")
    asset_subcategories: list[str] | None = Field(
        default=None, description="only devices bound to an asset of these 小类 (default: any)"
    )
    kind: RouteKind | None = None
    ignore: str | None = Field(
        default=None, min_length=1, description="no case: why (kept on the alarm as its outcome)"
    )
    problem: str = Field(default="", description="one open case per (asset or device, problem)")
    title: str = ""
    subcategory: str | None = Field(default=None, description="事件 小类 (event routes only)")
    auto_register: bool = Field(
        default=True, description="立案 at once, or wait in 受理 for an operator"
    )
    auto_dispatch: bool = Field(
        default=False, description="派遣 to the department right after 立案"
    )
    department: DepartmentRule | None = Field(
        default=None,
        description="owner, maintainer or grid (default: owner for 部件, grid for 事件)",
    )
    urgent_severity: int = Field(
        default=2, ge=1, le=4, description="severity at or above this (1 is highest) is urgent"
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "event_subcategory" in data:
            raise ValueError(
                "`event_subcategory` is gone: say what the route makes with `kind: event` and"
                " `subcategory: NNNN` (a hazard), or `kind: component` (a defect of the asset)"
            )
        return data

    @field_validator("subcategory")
    @classmethod
    def _sub(cls, v: str | None) -> str | None:
        return None if v is None else _code(v, "小类")

    @field_validator("asset_subcategories")
    @classmethod
    def _subs(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [_code(c, "asset 小类") for c in v]

    @model_validator(mode="after")
    def _says_where(self) -> "Route":
        if (self.kind is None) == (self.ignore is None):
            raise ValueError("a route needs exactly one of `kind` or `ignore: <reason>`")
        if self.kind is not None and not self.problem:
            raise ValueError(f"a {self.kind.value} route needs a `problem`")
        if self.kind is RouteKind.EVENT and self.subcategory is None:
            raise ValueError("an event route needs its 事件 `subcategory`")
        if self.kind is not RouteKind.EVENT and self.subcategory is not None:
            raise ValueError(
                "only event routes take a `subcategory`: a 部件 case takes its 小类 from the"
                " asset's 部件标识码"
            )
        return self

    def matches(
        self, family: str, alarm_type: str, point: str, asset_subcategory: str | None
    ) -> bool:
        """True if this route applies to the alarm."""
        return (
            self.family in (ANY, family)
            and alarm_type in self.alarm_types
            and (self.points is None or point in self.points)
            and (
                self.asset_subcategories is None
                or (asset_subcategory is not None and asset_subcategory in self.asset_subcategories)
            )
        )


class Unclassified(BaseModel):
    """The case an alarm of severity 1-2 opens when no route matches: 受理, for an operator to
    classify (accept with a kind and 小类) or void."""

    model_config = ConfigDict(extra="forbid")

    title: str = "未分类物联感知告警"
    urgent_severity: int = Field(default=2, ge=1, le=4)
    max_severity: int = Field(
        default=2, ge=1, le=4, description="alarms up to this severity open one (1-2 always)"
    )

    @field_validator("max_severity")
    @classmethod
    def _never_below_two(cls, v: int) -> int:
        if v < 2:
            raise ValueError("every alarm of severity 1 or 2 must end somewhere: at least 2")
        return v


class WorkOrders(BaseModel):
    """Device maintenance work orders (设备运维工单): who maintains the devices, how fast."""

    model_config = ConfigDict(extra="forbid")

    department: str = Field(default="物联感知设备运维单位", min_length=1)
    maintainers: dict[str, str] = Field(
        default_factory=dict, description="`gateway` or `gateway/device` -> maintainer"
    )
    auto_close: bool = Field(
        default=True, description="close as 自动恢复 when the device recovers before 接单"
    )
    deadlines: dict[str, Deadline] = Field(
        default_factory=lambda: {"default": Deadline(urgent=8, normal=72)},
        description="hours by problem, and a `default`",
    )

    @field_validator("deadlines")
    @classmethod
    def _default(cls, v: dict[str, Deadline]) -> dict[str, Deadline]:
        if "default" not in v:
            raise ValueError("work_orders.deadlines needs a 'default' entry")
        return v

    def maintainer(self, gateway: str, device: str) -> str:
        """The maintainer of a gateway's device: its own entry, its gateway's, else the default."""
        return (
            self.maintainers.get(f"{gateway}/{device}")
            or self.maintainers.get(gateway)
            or self.department
        )

    def allowed_ms(self, problem: str, urgent: bool) -> int:
        """Milliseconds allowed for a work order of this problem and urgency."""
        d = self.deadlines.get(problem, self.deadlines["default"])
        return int(d.hours(urgent) * HOUR_MS)


@dataclass(frozen=True, slots=True)
class Decision:
    """Where one alarm occurrence ends and with what (a pure result of the routing table)."""

    outcome: Outcome
    problem: str = ""
    kind: str = ""  # for a case: 部件, 事件 or 未分类
    subcategory: str = ""  # '' while unclassified
    title: str = ""
    urgent: bool = False
    allowed_ms: int | None = None  # None: the operator classifies first
    auto_register: bool = True
    auto_dispatch: bool = False
    department: str = ""
    reason: str = ""
    urgent_severity: int = 2
    # Departments the rule named but the registry does not hold, passed over for `department`.
    unregistered: tuple[str, ...] = ()


class Routing(BaseModel):
    """The whole routing table (config/routing/default.yaml)."""

    model_config = ConfigDict(extra="forbid")

    district: str | None = Field(
        default=None,
        pattern=AREA_CODE_PATTERN,
        validation_alias=AliasChoices("district", "area_code"),
        description="the collector's 6-digit area code, for cases whose place gives none",
    )
    utc_offset_hours: int = Field(
        default=8, ge=-12, le=14, description="local time for case-number dates"
    )
    auto_close: bool = Field(
        default=False,
        description="结案 (自动恢复) a case still before 派遣 when all its alarms cleared",
    )
    recurrence_window_h: float = Field(
        default=72, ge=0, description="an alarm back within this after 结案 opens a linked case"
    )
    departments: dict[str, str] = Field(
        default_factory=dict,
        description="department code -> name: the departments this table routes to, registered"
        " when the collector starts if the registry lacks the code",
    )
    default_department: str
    center: str | None = Field(
        default=None,
        description="the command centre (指挥中心) that holds the 受理, 立案, 派遣 and 核查 stages"
        " (应派遣 and 按时派遣 count for it); default_department if not given",
    )
    grid_departments: dict[str, str] = Field(
        default_factory=dict,
        description="单元网格 code -> department, before the grid registry's own departments",
    )
    event_departments: dict[str, str] = Field(
        default_factory=dict,
        description="事件 小类 -> its 主管部门, which takes the case before the grid (属地)",
    )

    @field_validator("departments")
    @classmethod
    def _declared(cls, v: dict[str, str]) -> dict[str, str]:
        for code, name in v.items():
            check_code(code)
            check_name(name)
            if name in v:
                raise ValueError(f"{code}: name {name!r} is a code: a name may not equal a code")
        names = list(v.values())
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"names declared twice: {', '.join(twice)}")
        return v

    @field_validator("grid_departments")
    @classmethod
    def _grid_codes(cls, v: dict[str, str]) -> dict[str, str]:
        for code in v:
            if not is_grid_code(code):
                raise ValueError(f"grid code {code!r} must be {GRID_CODE_RULE}")
        return v

    @field_validator("event_departments")
    @classmethod
    def _event_codes(cls, v: dict[str, str]) -> dict[str, str]:
        for code in v:
            if not is_subcategory(code):
                raise ValueError(f"小类 {code!r} must be 4 digits (大类 + 小类)")
        return v

    def named_departments(self) -> list[tuple[str, str]]:
        """Every department the table names, as (its key in the file, the value)."""
        w = self.work_orders
        return [
            ("default_department", self.default_department),
            *((("center", self.center),) if self.center else ()),
            *((f"grid_departments.{k}", d) for k, d in self.grid_departments.items()),
            *((f"event_departments.{k}", d) for k, d in self.event_departments.items()),
            ("work_orders.department", w.department),
            *((f"work_orders.maintainers.{k}", d) for k, d in w.maintainers.items()),
        ]

    grids: str | None = Field(
        default=None,
        description="the 单元网格 registry (GeoJSON) that places cases, relative to this file",
    )
    deadlines: dict[str, Deadline] = Field(
        description="the 处置 limit (from 派遣 to 反馈) by 小类, and a `default`"
    )
    stages: dict[Stage, dict[str, Deadline]] = Field(
        default_factory=dict,
        description="limits of the 受理, 立案, 派遣 and 核查 stages by 小类, each with a `default`",
    )
    calendar: str | None = Field(
        default=None,
        description="the working calendar file for 工作时/工作日 limits, relative to this file",
    )
    unclassified: Unclassified = Field(default_factory=Unclassified)
    work_orders: WorkOrders = Field(default_factory=WorkOrders)
    profiles: list[str] = Field(
        default_factory=list, description="extra profile files to check against (site profiles)"
    )
    routes: list[Route]

    @field_validator("deadlines")
    @classmethod
    def _default(cls, v: dict[str, Deadline]) -> dict[str, Deadline]:
        if "default" not in v:
            raise ValueError("deadlines needs a 'default' entry")
        for key in v:
            if key != "default":
                _code(key, "deadline 小类")
        return v

    def match(
        self, family: str, alarm_type: str, point: str, asset_subcategory: str | None = None
    ) -> Route | None:
        """The first route for this device family, alarm type, point and asset 小类."""
        return next(
            (r for r in self.routes if r.matches(family, alarm_type, point, asset_subcategory)),
            None,
        )

    @field_validator("stages")
    @classmethod
    def _stages(cls, v: dict[Stage, dict[str, Deadline]]) -> dict[Stage, dict[str, Deadline]]:
        for stage, table in v.items():
            if stage is Stage.DISPOSE:
                raise ValueError("the 处置 limits are `deadlines`, not stages.处置")
            if "default" not in table:
                raise ValueError(f"stages.{stage.value} needs a 'default' entry")
            for key in table:
                if key != "default":
                    _code(key, f"stages.{stage.value} 小类")
        return v

    def allowed_ms(self, subcategory: str, urgent: bool) -> int:
        """The 处置 limit of a case of this 小类 and urgency, as ms of its unit."""
        d = self.deadlines.get(subcategory, self.deadlines["default"])
        return int(d.hours(urgent) * HOUR_MS)

    def limit(self, stage: Stage, subcategory: str, urgent: bool) -> Limit | None:
        """The limit of `stage` for a case of this 小类 and urgency; None if the table gives
        that stage none (or the case is not classified yet and the stage has no default)."""
        table = self.deadlines if stage is Stage.DISPOSE else self.stages.get(stage)
        if table is None:
            return None
        return table.get(subcategory, table["default"]).limit(urgent)

    def area_code(self, asset: Asset | None, grid: str | None) -> str:
        """The case number's area code: from the asset's 部件标识码, else the grid code's prefix,
        else the collector's district, else 000000 (said at start-up, never another city's)."""
        if asset is not None:
            return asset.area
        if grid and is_area_code(grid[:6]):
            return grid[:6]
        return self.district or UNKNOWN_AREA

    def command_center(self, directory: Directory) -> str:
        """The registered name of the command centre (`center`, else `default_department`)
        in `directory`, the department the centre's stages are held by."""
        return self._registered([self.center or self.default_department], directory)[0]

    def _grid_department(self, grid: Grid | None) -> str | None:
        if grid is None:
            return None
        return self.grid_departments.get(grid.code) or grid.department

    def _department(
        self,
        rule: DepartmentRule,
        asset: Asset | None,
        grid: Grid | None,
        subcategory: str,
        directory: Directory,
    ) -> tuple[str, tuple[str, ...]]:
        """部件先属主后属地: owner (or maintainer) first, then the grid's department;
        事件先属地后属主: the 小类's 主管部门 if the table names one, then the grid's, then the
        asset's owner. The default department last. Each is taken only if `directory` holds it
        (as its registered name); returns (that name, the names passed over as unregistered)."""
        if rule is DepartmentRule.GRID:
            chain = [
                self.event_departments.get(subcategory),
                self._grid_department(grid),
                asset.owner if asset else None,
            ]
        else:
            first = [asset.maintainer, asset.owner] if asset is not None else []
            chain = [*(first if rule is DepartmentRule.MAINTAINER else first[1:])]
            chain.append(self._grid_department(grid))
        return self._registered([*chain, self.default_department], directory)

    def _registered(
        self, chain: Sequence[str | None], directory: Directory
    ) -> tuple[str, tuple[str, ...]]:
        """The registered name of the first department of `chain` the directory holds, and
        the ones before it it does not. The last of the chain (a default, checked at start)
        is taken as it is if even it is gone since."""
        skipped: list[str] = []
        for value in chain:
            if not value:
                continue
            name = directory.name(value)
            if name is not None:
                return name, tuple(skipped)
            skipped.append(value)
        return skipped.pop(), tuple(skipped)

    def department_for(
        self, kind: str, subcategory: str, grid: Grid | None, directory: Directory
    ) -> tuple[str, tuple[str, ...]]:
        """The 主办 department of a report with no asset behind it (a citizen's, in 单元网格
        `grid` or None): 事件先属地后属主 for an 事件, the grid's department for a 部件; as
        _department, with the unregistered names passed over."""
        rule = DepartmentRule.GRID if kind == EVENT else DepartmentRule.OWNER
        return self._department(rule, None, grid, subcategory, directory)

    def decide(
        self,
        *,
        family: str,
        alarm_type: str,
        point: str,
        severity: int,
        asset: Asset | None,
        directory: Directory,
        gateway: str = "",
        device: str = "",
        grid: Grid | None = None,
    ) -> Decision:
        """Where an alarm occurrence of `severity` (1 highest .. 4) ends: a pure function of the
        table, the alarm, the asset its device is bound to (None if unbound), the 单元网格 its
        place is in (None if unknown) and the department registry (`directory`: a department
        it does not hold is passed over, and listed in the decision's `unregistered`)."""
        route = self.match(family, alarm_type, point, asset.subcategory if asset else None)
        if route is None:
            return self._unrouted(severity, "no route matches this alarm", directory)
        if route.ignore is not None:
            return Decision(Outcome.IGNORED, reason=route.ignore)
        urgent = severity <= route.urgent_severity
        if route.kind is RouteKind.WORK_ORDER:
            maintainer = self.work_orders.maintainer(gateway, device)
            dept, skipped = self._registered([maintainer, self.work_orders.department], directory)
            return Decision(
                Outcome.WORK_ORDER,
                problem=route.problem,
                title=route.title or route.problem,
                urgent=urgent,
                allowed_ms=self.work_orders.allowed_ms(route.problem, urgent),
                department=dept,
                urgent_severity=route.urgent_severity,
                unregistered=skipped,
            )
        if route.kind is RouteKind.COMPONENT:
            if asset is None:
                return self._unrouted(
                    severity,
                    f"the route of {route.problem} makes a 部件 case, but the device"
                    " is bound to no 部件 (bind it to an asset)",
                    directory,
                )
            kind, sub = COMPONENT, asset.subcategory
            rule = route.department or DepartmentRule.OWNER
        else:
            assert route.subcategory is not None  # checked at load
            kind, sub = EVENT, route.subcategory
            rule = route.department or DepartmentRule.GRID
        dept, skipped = self._department(rule, asset, grid, sub, directory)
        return Decision(
            Outcome.CASE,
            problem=route.problem,
            kind=kind,
            subcategory=sub,
            title=route.title or route.problem,
            urgent=urgent,
            allowed_ms=self.allowed_ms(sub, urgent),
            auto_register=route.auto_register,
            auto_dispatch=route.auto_dispatch,
            department=dept,
            urgent_severity=route.urgent_severity,
            unregistered=skipped,
        )

    def _unrouted(self, severity: int, reason: str, directory: Directory) -> Decision:
        """A 受理 case for an operator to classify at severity 1-2 (up to `max_severity`), else
        a record on the alarm."""
        u = self.unclassified
        if severity > u.max_severity:
            return Decision(
                Outcome.RECORDED, reason=f"{reason}; severity {severity}: kept as an alarm only"
            )
        return Decision(
            Outcome.CASE,
            problem="unclassified",
            kind=UNCLASSIFIED,
            title=u.title,
            urgent=severity <= u.urgent_severity,
            auto_register=False,
            department=self._registered([self.default_department], directory)[0],
            reason=reason,
            urgent_severity=u.urgent_severity,
        )


def _hint(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(known))})"


def check_routes(routing: Routing, catalog: Catalog) -> list[str]:
    """Problems of the routes against the catalog and wire.AlarmType, and of the 小类 keys of
    `event_departments` against the 事件 catalogue (collector.cases.codes) and the table's event
    routes, as `field: reason`."""
    problems: list[str] = []
    events = sorted(EVENT_NAMES.keys() | {r.subcategory for r in routing.routes if r.subcategory})
    for code in routing.event_departments:
        if code not in events:
            close = difflib.get_close_matches(code, events, n=1)
            problems.append(
                f"event_departments.{code}: no 事件 小类 {code} in the catalogue or an event route"
                + (f" (did you mean {close[0]!r}?)" if close else "")
            )
    types = [t.value for t in AlarmType]
    families = sorted(catalog.families)
    for i, r in enumerate(routing.routes):
        where = f"routes.{i}"
        for j, t in enumerate(r.alarm_types):
            if t not in types:
                problems.append(
                    f"{where}.alarm_types.{j}: unknown alarm type {t!r}" + _hint(t, types)
                )
        if r.family != ANY and r.family not in catalog.families:
            problems.append(
                f"{where}.family: unknown family {r.family!r}" + _hint(r.family, families)
            )
            continue  # its points cannot be checked against a family that does not exist
        known = sorted(catalog.points(None if r.family == ANY else r.family) | {DEVICE_POINT})
        for j, p in enumerate(r.points or []):
            if p not in known:
                whose = "any profile" if r.family == ANY else f"the {r.family} profiles"
                problems.append(
                    f"{where}.points.{j}: {whose} have no point {p!r}" + _hint(p, known)
                )
    return problems


def check_departments(routing: Routing, directory: Directory) -> list[str]:
    """Problems of the departments the table names against the registry (`directory`), as
    `key: reason`: each must be a registered department's code or name, or declared in the
    table's `departments` (and so registered at start)."""
    problems = []
    for key, value in routing.named_departments():
        if directory.name(value) is None:
            close = difflib.get_close_matches(value, sorted(directory.names), n=1)
            problems.append(
                f"{key}: department {value!r} is neither declared in `departments` nor in the"
                " department registry" + (f" (did you mean {close[0]!r}?)" if close else "")
            )
    return problems


def check_grid_departments(routing: Routing, grids: GridMap) -> list[str]:
    """Problems of `grid_departments` against the grid file: each key must be one of its grids."""
    return [
        f"grid_departments.{code}: no 单元网格 {code} in the grid file"
        for code in routing.grid_departments
        if grids.get(code) is None
    ]


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel]:
    """The model whose key sits at `loc` of a routing file (for "did you mean")."""
    nested: dict[str, tuple[int, type[BaseModel]]] = {
        "routes": (3, Route),
        "deadlines": (3, Deadline),
        "unclassified": (2, Unclassified),
        "work_orders": (2, WorkOrders),
    }
    depth, model = nested.get(str(loc[0]), (1, Routing))
    if str(loc[0]) == "work_orders" and len(loc) == 4 and loc[1] == "deadlines":
        return Deadline
    return model if len(loc) == depth else Routing


def _format(exc: ValidationError) -> str:
    out = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(file)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden" and e["loc"]:
            fields = _model_at(e["loc"]).model_fields.items()
            msg += _hint(str(e["loc"][-1]), [f.alias or n for n, f in fields])
        out.append(f"{where}: {msg}")
    return "; ".join(out)


def load_routing(path: Path, catalog: Catalog | None = None) -> Routing:
    """Load a routing YAML file and check it against `catalog` (default: the shipped profiles)
    plus the profile files it lists; raise RoutingError with the file, field and reason."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        routing = Routing.model_validate(doc)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RoutingError(f"{path}: {exc}") from None
    except ValidationError as exc:
        raise RoutingError(f"{path}: {_format(exc)}") from None
    problems = check_routes(routing, routing_catalog(routing, path, catalog))
    if problems:
        raise RoutingError(f"{path}: {'; '.join(problems)}")
    routing_calendar(routing, path)  # a calendar or grid file that cannot be read is refused
    grids = routing_grids(routing, path)
    problems = check_grid_departments(routing, grids) if grids is not None else []
    if problems:
        raise RoutingError(f"{path}: {'; '.join(problems)}")
    return routing


def routing_calendar(routing: Routing, path: Path) -> WorkCalendar:
    """The working calendar the routing table at `path` names (relative to it), or the default
    one (Monday to Friday, no holidays) if it names none; RoutingError if it cannot be read."""
    if routing.calendar is None:
        return DEFAULT_CALENDAR
    try:
        return load_calendar(path.parent / routing.calendar)
    except CalendarError as exc:
        raise RoutingError(f"{path}: calendar: {exc}") from None


def routing_grids(routing: Routing, path: Path) -> GridMap | None:
    """The 单元网格 registry the routing table at `path` names (relative to it), or None;
    RoutingError if it cannot be read."""
    if routing.grids is None:
        return None
    try:
        return load_grids(path.parent / routing.grids)
    except GridError as exc:
        raise RoutingError(f"{path}: grids: {exc}") from None


def routing_catalog(routing: Routing, path: Path, catalog: Catalog | None = None) -> Catalog:
    """`catalog` (default: the shipped profiles) with the profile files the routing table at
    `path` lists (relative to it); RoutingError if one cannot be read."""
    base = catalog if catalog is not None else shipped_catalog()
    try:
        return base.merged(load_profile(path.parent / p) for p in routing.profiles)
    except CatalogError as exc:
        raise RoutingError(f"{path}: profiles: {exc}") from None


def default_routing_path() -> Path:
    """The routing table shipped in config/routing/default.yaml."""
    from importlib.resources import files

    return Path(str(files("lifeline.config") / "routing" / "default.yaml"))
