"""Device profiles: a sensor's register map, identification registers and default alarm rules."""

from __future__ import annotations

import difflib
import importlib.resources
import itertools
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

__all__ = [
    "AlarmLadder",
    "AlarmRuleSpec",
    "ByteOrder",
    "DataType",
    "IdRegister",
    "Identification",
    "PointSpec",
    "Profile",
    "ProfileError",
    "Table",
    "builtin_profiles",
    "check_point_rules",
    "load_profile",
    "yaml_problem",
]


class ProfileError(ValueError):
    """A profile file that cannot be used, with the file, the place and the reason."""


class Table(StrEnum):
    """The four Modbus data tables."""

    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"
    HOLDING = "holding"
    INPUT = "input"

    @property
    def is_bits(self) -> bool:
        """True for the single-bit tables (coils, discrete inputs)."""
        return self in (Table.COIL, Table.DISCRETE_INPUT)


class DataType(StrEnum):
    """How a point's registers are interpreted."""

    BOOL = "bool"  # a coil / discrete input, or a whole register that is non-zero
    BIT = "bit"  # one bit of a holding/input register
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    FLOAT32 = "float32"
    STRING = "string"


class ByteOrder(StrEnum):
    """Byte order of multi-byte values, named as in Telegraf (A = most significant byte)."""

    ABCD = "ABCD"  # big-endian, high word first (the Modbus default)
    DCBA = "DCBA"  # little-endian
    BADC = "BADC"  # bytes swapped inside each word
    CDAB = "CDAB"  # words swapped (common on PLCs and many sensors)


# Enums come from YAML as strings; everything else is strict.
TableField = Annotated[Table, Field(strict=False)]
DataTypeField = Annotated[DataType, Field(strict=False)]
ByteOrderField = Annotated[ByteOrder, Field(strict=False)]

_FIXED_REGISTERS = {
    DataType.BOOL: 1,
    DataType.BIT: 1,
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.FLOAT32: 2,
}
_NUMERIC_RULES = ("hihi", "hi", "lo", "lolo", "roc")


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class AlarmRuleSpec(_Strict):
    """A default alarm rule of a point (ISA-18.2 style); sites may override it."""

    type: Literal["hihi", "hi", "lo", "lolo", "roc", "state"]
    limit: float | None = None  # threshold; for roc: units per second
    deadband: float = 0
    on_delay_s: float = 0
    off_delay_s: float = 0
    severity: int = Field(ge=1, le=4)  # 1 = 一级 critical ... 4 = 四级 low
    when: bool | None = None  # state alarms: active when the value equals `when`
    # hi/hihi only: judge the deviation |value - baseline| rather than the value, so that a tilt
    # alarms whichever way it leans. The baseline (the installed zero) is set per device in the
    # gateway config, or captured by `edge check --capture-baselines`; it defaults to 0.
    deviation: bool = False
    message: str = ""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.type == "state":
            if self.when is None:
                raise ValueError("a state alarm needs `when: true|false`")
            if self.limit is not None:
                raise ValueError("a state alarm has no `limit`")
        else:
            if self.limit is None:
                raise ValueError(f"a {self.type} alarm needs a `limit`")
            if self.when is not None:
                raise ValueError(f"`when` is only for state alarms, not {self.type}")
            if self.type == "roc" and self.limit <= 0:
                raise ValueError("a roc limit is a rate in units per second and must be > 0")
        if self.deviation and self.type not in ("hi", "hihi"):
            raise ValueError(
                f"only hi and hihi rules judge a deviation, not {self.type}: |value - baseline|"
                " is a distance, and a distance is alarmed when it is large"
            )
        if self.deviation and self.limit is not None and self.limit <= 0:
            raise ValueError("a deviation limit is a distance from the baseline and must be > 0")
        if self.deadband < 0 or self.on_delay_s < 0 or self.off_delay_s < 0:
            raise ValueError("deadband and delays must be >= 0")
        return self

    def describe(self) -> str:
        """The rule as a ladder step in messages: `hihi at 50`, or `hi at ±10` for a deviation."""
        return f"{self.type} at {'±' if self.deviation else ''}{self.limit:g}"


# The national four warning levels, as errors name them.
_LEVELS = {1: "一级/红", 2: "二级/橙", 3: "三级/黄", 4: "四级/蓝"}


def _ladder(rule: AlarmRuleSpec) -> tuple[str, float] | None:
    """The ladder a limit rule stands on and how extreme its limit is there (higher = worse).

    Highs climb with their limit, lows with minus theirs, a rate of change with its rate, a
    deviation from the baseline with its distance; state rules stand on no ladder.
    """
    if rule.limit is None:
        return None
    if rule.type in ("hi", "hihi"):
        return ("deviation" if rule.deviation else "high", rule.limit)
    if rule.type in ("lo", "lolo"):
        return ("low", -rule.limit)
    return ("rate", rule.limit)


def _check_ladder(rules: list[AlarmRuleSpec]) -> list[AlarmRuleSpec]:
    """Reject the rules of one point if a more extreme limit carries a less severe level.

    ISA-18.2 / IEC 62682 prioritise an alarm by the consequence of not acting on it: on one
    point, a hihi limit is a worse state than the hi below it, so it is never graded less
    severe (1 = 一级/红 is the worst). A hihi below its hi, or a lolo above its lo, is rejected
    too. Raises ValueError naming the two rules; returns the rules unchanged.
    """
    for a, b in itertools.permutations(rules, 2):
        if a.limit is None or b.limit is None or a.deviation != b.deviation:
            continue
        if (a.type, b.type) == ("hi", "hihi") and b.limit < a.limit:
            raise ValueError(
                f"{b.describe()} is below {a.describe()}: a high-high limit is above the high"
            )
        if (a.type, b.type) == ("lo", "lolo") and b.limit > a.limit:
            raise ValueError(
                f"{b.describe()} is above {a.describe()}: a low-low limit is below the low"
            )
    for a, b in itertools.permutations(rules, 2):
        on_a, on_b = _ladder(a), _ladder(b)
        if on_a is None or on_b is None or on_a[0] != on_b[0]:
            continue
        if on_b[1] > on_a[1] and b.severity > a.severity:
            raise ValueError(
                f"{b.describe()} is severity {b.severity} ({_LEVELS[b.severity]}), less severe "
                f"than {a.describe()} (severity {a.severity}, {_LEVELS[a.severity]}), a less "
                "extreme limit: a worse hazard must never be graded less severe"
            )
    return rules


# The alarm rules of one point, their ladder checked (profiles and site overrides alike).
AlarmLadder = Annotated[list[AlarmRuleSpec], AfterValidator(_check_ladder)]


class PointSpec(_Strict):
    """One named value of a device: where it lives and how to turn registers into a value."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    table: TableField
    address: int = Field(ge=0, le=65535)
    dtype: DataTypeField
    bit: int | None = Field(default=None, ge=0, le=15)
    byte_order: ByteOrderField = ByteOrder.ABCD
    scale: float = 1
    offset: float = 0
    unit: str = ""
    length: int | None = Field(default=None, ge=1, le=125)
    writable: bool = False
    alarms: AlarmLadder = []
    description: str = ""

    @property
    def register_count(self) -> int:
        """How many registers (or bits, on coil/discrete tables) the point occupies."""
        if self.dtype is DataType.STRING:
            return self.length or 0
        return _FIXED_REGISTERS[self.dtype]

    @property
    def end(self) -> int:
        """The first address after the point."""
        return self.address + self.register_count

    @property
    def is_numeric(self) -> bool:
        """True when the value is a number (scale and offset apply)."""
        return self.dtype not in (DataType.BOOL, DataType.BIT, DataType.STRING)

    @model_validator(mode="after")
    def _check(self) -> Self:
        self._check_layout()
        self._check_alarms()
        return self

    def _check_layout(self) -> None:
        dtype, table = self.dtype, self.table
        if table.is_bits and dtype is not DataType.BOOL:
            raise ValueError(f"{table} holds single bits: dtype must be bool, not {dtype}")
        if table in (Table.DISCRETE_INPUT, Table.INPUT) and self.writable:
            raise ValueError(f"{table} is read-only: a point there cannot be writable")
        if dtype is DataType.BIT and self.bit is None:
            raise ValueError("dtype bit needs `bit: 0..15`")
        if dtype is DataType.BIT and self.writable:
            raise ValueError("a bit point cannot be writable (writing one bit needs its register)")
        if dtype is not DataType.BIT and self.bit is not None:
            raise ValueError(f"`bit` is only for dtype bit, not {dtype}")
        if dtype is DataType.STRING and self.length is None:
            raise ValueError("dtype string needs `length` (registers)")
        if dtype in _FIXED_REGISTERS and self.length not in (None, _FIXED_REGISTERS[dtype]):
            raise ValueError(
                f"{dtype} needs {_FIXED_REGISTERS[dtype]} register(s) but length is {self.length}"
            )
        if self.address + self.register_count - 1 > 65535:
            raise ValueError(
                f"address {self.address} + {self.register_count} registers runs past 65535"
            )
        if not self.is_numeric and (self.scale != 1 or self.offset != 0):
            raise ValueError(f"scale/offset make no sense for dtype {dtype}")
        if self.scale == 0:
            raise ValueError("scale must not be 0")

    def _check_alarms(self) -> None:
        problem = check_point_rules(self, self.alarms)
        if problem:
            raise ValueError(problem)


def check_point_rules(point: PointSpec, rules: Sequence[AlarmRuleSpec]) -> str:
    """What makes `rules` unfit for `point` ('' if nothing): a state rule on a number, a limit
    on a bit. Used for the profile's own rules and for a site's override of them."""
    for rule in rules:
        if rule.type == "state" and point.dtype not in (DataType.BOOL, DataType.BIT):
            return f"a state alarm needs a bool or bit point, not {point.dtype}"
        if rule.type in _NUMERIC_RULES and not point.is_numeric:
            return f"a {rule.type} alarm needs a numeric point, not {point.dtype}"
    return ""


class IdRegister(_Strict):
    """A register in which a device reports who it is; `expect` is what a bus scan matches."""

    table: TableField = Table.HOLDING
    address: int = Field(ge=0, le=65535)
    dtype: DataTypeField = DataType.UINT16
    expect: int | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.dtype not in (DataType.UINT16, DataType.UINT32):
            raise ValueError(f"identification registers are uint16 or uint32, not {self.dtype}")
        if self.table.is_bits:
            raise ValueError("identification registers live in holding or input registers")
        return self


class Identification(_Strict):
    """How a bus scan recognises this device: vendor, model and their id registers."""

    vendor: str
    model: str
    vendor_id: IdRegister
    model_id: IdRegister
    firmware_version: IdRegister  # uint16 0xMMmm, e.g. 0x0102 = v1.2

    @model_validator(mode="after")
    def _check(self) -> Self:
        for name in ("vendor_id", "model_id"):
            if getattr(self, name).expect is None:
                raise ValueError(f"{name} needs `expect` so that a scan can match it")
        return self

    def as_points(self) -> list[PointSpec]:
        """The id registers as points named vendor_id, model_id, firmware_version."""
        return [
            PointSpec(name=name, table=reg.table, address=reg.address, dtype=reg.dtype)
            for name, reg in (
                ("vendor_id", self.vendor_id),
                ("model_id", self.model_id),
                ("firmware_version", self.firmware_version),
            )
        ]

    def matches(self, values: dict[str, Any]) -> bool:
        """True when values decoded from `as_points()` carry this profile's vendor and model ids."""
        return (
            values.get("vendor_id") == self.vendor_id.expect
            and values.get("model_id") == self.model_id.expect
        )


class Profile(_Strict):
    """A device profile: the register map of one sensor model plus its default alarm rules."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    family: Literal["manhole", "streetlight", "gas", "tilt"]
    description: str = ""
    identification: Identification
    points: list[PointSpec] = Field(min_length=1)
    # How this model wants to be read: the most registers one read may ask for, and the most
    # unused registers a merged read may span (0 = never merge). A device config overrides both.
    max_registers: int = Field(default=125, ge=1, le=125)
    max_gap: int = Field(default=16, ge=0, le=124)

    @property
    def vendor(self) -> str:
        """Manufacturer name (from the identification block)."""
        return self.identification.vendor

    @property
    def model(self) -> str:
        """Model name (from the identification block)."""
        return self.identification.model

    def point(self, name: str) -> PointSpec:
        """The point called `name`; KeyError names the closest existing point."""
        for p in self.points:
            if p.name == name:
                return p
        hint = difflib.get_close_matches(name, [p.name for p in self.points], n=1)
        raise KeyError(
            f"profile {self.name!r} has no point {name!r}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
        )

    @model_validator(mode="after")
    def _check(self) -> Self:
        seen: set[str] = set()
        for p in self.points:
            if p.name in seen:
                raise ValueError(f"point {p.name!r} is defined twice")
            seen.add(p.name)
            if not p.table.is_bits and p.register_count > self.max_registers:
                raise ValueError(
                    f"point {p.name!r} takes {p.register_count} registers, more than "
                    f"max_registers {self.max_registers} lets one read ask for"
                )
        _check_overlaps(self.points)
        return self


def _check_overlaps(points: list[PointSpec]) -> None:
    """Reject points sharing registers; `bit` points may share a register on distinct bits."""
    by_table: dict[Table, list[PointSpec]] = {}
    for p in points:
        by_table.setdefault(p.table, []).append(p)
    for table, pts in by_table.items():
        pts.sort(key=lambda p: (p.address, p.end))
        for a, b in itertools.pairwise(pts):
            if b.address >= a.end:
                continue
            both_bits = a.dtype is DataType.BIT and b.dtype is DataType.BIT
            if both_bits and a.address == b.address and a.bit != b.bit:
                continue
            raise ValueError(
                f"points {a.name!r} and {b.name!r} overlap in {table} registers "
                f"({a.address}..{a.end - 1} and {b.address}..{b.end - 1}"
                + (f", both bit {a.bit}" if both_bits else "")
                + ")"
            )


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel]:
    """The model class that owns the key at `loc` (used to suggest valid keys)."""
    model: type[BaseModel] = Profile
    for part in loc[:-1]:
        if isinstance(part, int) or part not in model.model_fields:
            continue
        stack: list[Any] = [model.model_fields[part].annotation]
        while stack:
            t = stack.pop()
            if isinstance(t, type) and issubclass(t, BaseModel):
                model = t
                break
            stack.extend(get_args(t))
    return model


def _where(loc: tuple[int | str, ...], data: Any) -> str:
    """A human place for an error: `point 'tilt_x'` or a dotted path."""
    if len(loc) >= 2 and loc[0] == "points" and isinstance(loc[1], int) and isinstance(data, dict):
        try:
            name = data["points"][loc[1]]["name"]
        except (KeyError, IndexError, TypeError):
            name = None
        rest = ".".join(str(x) for x in loc[2:])
        head = f"point {name!r}" if name else f"points[{loc[1]}]"
        return head + (f" field {rest!r}" if rest else "")
    return ".".join(str(x) for x in loc) or "profile"


def _explain(exc: ValidationError, data: Any) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = _where(loc, data)
        if err["type"] == "extra_forbidden":
            key = str(loc[-1])
            valid = list(_model_at(loc).model_fields)
            hint = difflib.get_close_matches(key, valid, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            lines.append(f"{_where(loc[:-1], data)}: unknown key {key!r}{suggestion}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {msg}")
    return lines


def parse_profile(data: Any, source: str = "<profile>") -> Profile:
    """Validate already-parsed YAML/JSON data as a profile; ProfileError says where and why."""
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(
            f"{source}: invalid profile:\n  " + "\n  ".join(_explain(exc, data))
        ) from None


def load_profile(path: str | Path) -> Profile:
    """Read and validate one profile YAML file.

    Raises ProfileError saying where and why: the file cannot be read, is not YAML, or is not
    a valid profile.
    """
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"{p}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ProfileError(f"{p}: {yaml_problem(exc)}") from None
    return parse_profile(data, str(p))


def yaml_problem(exc: yaml.YAMLError) -> str:
    """Say what is wrong with a YAML text and where (line, column), never quoting the text.

    Takes the error PyYAML raised; returns one line. A config or profile may be any file a
    command names (a gateway's `reload`): its content must not travel into a command reply or
    a log, where PyYAML's own message would show the offending line.
    """
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or type(exc).__name__
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML: {problem}{where}"


def builtin_profiles() -> dict[str, Profile]:
    """The profiles shipped in config/profiles, by name."""
    root = importlib.resources.files("lifeline.config") / "profiles"
    profiles: dict[str, Profile] = {}
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith((".yaml", ".yml")):
            data = yaml.safe_load(entry.read_text(encoding="utf-8"))
            profile = parse_profile(data, f"config/profiles/{entry.name}")
            profiles[profile.name] = profile
    return profiles
