"""综合评价: the monthly figures a 数字城管 command center reports, from counts over the phase
table and the audit trail (definitions in docs/integration.md, "Statistics").

Pure code: the store counts (collector.store.cases_sql.CaseRows.case_counts), this module turns
counts into the rates and means, per group and in total.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

# (JSON key, the name a center's report uses), in report order.
COUNTS = (
    ("reported", "上报数"),
    ("registered", "立案数"),
    ("voided", "作废数"),
    ("to_dispatch", "应派遣数"),
    ("dispatched_on_time", "按时派遣数"),
    ("dispatched_accurately", "准确派遣数"),
    ("to_dispose", "应处置数"),
    ("disposed_on_time", "按期处置数"),
    ("disposed_late", "超期处置数"),
    ("reworks", "返工数"),
    ("returns", "回退数"),
    ("extensions", "延时数"),
    ("parks", "挂账数"),
    ("to_close", "应结案数"),
    ("closed", "结案数"),
    ("closed_on_time", "按期结案数"),
    ("false_alarms", "误报数"),
    ("auto_closed", "自动恢复数"),
    ("alarms", "报警数"),
    ("alarms_to_cases", "报警转案件数"),
)
RATES = (
    ("closure_rate", "结案率"),
    ("on_time_closure_rate", "按期结案率"),
    ("on_time_disposal_rate", "按期处置率"),
    ("rework_rate", "返工率"),
    ("false_alarm_rate", "误报率"),
    ("mean_dispatch_ms", "平均派遣时长(ms)"),
    ("mean_disposal_ms", "平均处置时长(ms)"),
    ("alarm_to_case_rate", "报警转案率"),
)
# The group of the alarm occurrences that became no case (work orders, ignored, recorded).
NO_CASE = "未成案报警"


@dataclass(slots=True)
class Counts:
    """The counts of one group over a time window, plus the sums the means need."""

    reported: int = 0
    registered: int = 0
    voided: int = 0
    to_dispatch: int = 0
    dispatched_on_time: int = 0
    dispatched_accurately: int = 0
    to_dispose: int = 0
    disposed_on_time: int = 0
    disposed_late: int = 0
    reworks: int = 0
    returns: int = 0
    extensions: int = 0
    parks: int = 0
    to_close: int = 0
    closed: int = 0
    closed_on_time: int = 0
    false_alarms: int = 0
    auto_closed: int = 0
    alarms: int = 0
    alarms_to_cases: int = 0
    dispatch_ms: int = field(default=0, repr=False)  # summed 派遣 stage durations
    disposal_ms: int = field(default=0, repr=False)  # summed 处置 durations less 挂账

    def add(self, other: "Counts") -> None:
        """Add `other` into this one."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def figures(c: Counts) -> dict[str, int | float | None]:
    """Every count and rate of one group: rates are shares 0..1 (None where the base is 0),
    means are milliseconds (None where nothing ended)."""
    out: dict[str, int | float | None] = {key: getattr(c, key) for key, _ in COUNTS}
    out["closure_rate"] = _ratio(c.closed, c.to_close)
    out["on_time_closure_rate"] = _ratio(c.closed_on_time, c.to_close)
    out["on_time_disposal_rate"] = _ratio(c.disposed_on_time, c.to_dispose)
    out["rework_rate"] = _ratio(c.reworks, c.to_dispose)
    out["false_alarm_rate"] = _ratio(c.false_alarms, c.closed + c.voided)
    out["mean_dispatch_ms"] = c.dispatch_ms // c.to_dispatch if c.to_dispatch else None
    out["mean_disposal_ms"] = c.disposal_ms // c.to_dispose if c.to_dispose else None
    out["alarm_to_case_rate"] = _ratio(c.alarms_to_cases, c.alarms)
    return out


def report(groups: Mapping[str, Counts]) -> tuple[list[dict[str, object]], dict[str, object]]:
    """Rows per group (by key) and the total row, each with every count and rate."""
    total = Counts()
    rows: list[dict[str, object]] = []
    for key in sorted(groups):
        total.add(groups[key])
        rows.append({"key": key, **figures(groups[key])})
    return rows, {"key": "合计", **figures(total)}


def csv_header() -> list[str]:
    """The CSV column names: the group, then the report's names of every figure."""
    return ["分组", *(name for _, name in COUNTS), *(name for _, name in RATES)]


def csv_row(row: Mapping[str, object]) -> list[object]:
    """One CSV row in the order of `csv_header` (empty for a rate without a base)."""
    keys = ["key", *(k for k, _ in COUNTS), *(k for k, _ in RATES)]
    return ["" if row[k] is None else row[k] for k in keys]
