"""综合评价: the monthly figures a 数字城管 command center reports, from counts over the phase
table and the audit trail (definitions in docs/integration.md, "Statistics").

Pure code: the store counts (collector.store.cases_sql.CaseRows.case_counts), this module turns
counts into the rates and means, per group and in total, and lays them out as CSV rows or as an
XLSX workbook (Office Open XML, ECMA-376, written by XlsxWriter).
"""

import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

import xlsxwriter

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
# What each figure counts, for the definitions sheet of the XLSX export: the table of
# docs/integration.md ("Statistics") in the words of a report.
DEFINITIONS = {
    "reported": "统计期内新建的案件",
    "registered": "统计期内的立案（含系统自动立案）",
    "voided": "统计期内的作废",
    "to_dispatch": "统计期内结束的派遣阶段（自立案起；按部门时计入指挥中心）",
    "dispatched_on_time": "其中在时限内结束（或无时限）的",
    "dispatched_accurately": "统计期内的派遣，其案件从未回退（无改派）",
    "to_dispose": "统计期内结束的处置阶段（自派遣起；按部门时计入该阶段的部门）",
    "disposed_on_time": "其中在时限内结束的（挂账时间不计）",
    "disposed_late": "其中超过时限结束的（挂账时间不计）",
    "reworks": "统计期内的返工：核查不通过，及反馈后报警复现（按部门时计入所返工处置阶段的部门）",
    "returns": "统计期内批准的回退（按部门时计入回退的处置阶段的部门）",
    "extensions": "统计期内批准的延时（仅申请不计；按部门时计入所在处置阶段的部门）",
    "parks": "统计期内批准的挂账（按部门时计入所在处置阶段的部门）",
    "to_close": "统计期内结束的核查阶段（结案或核查不通过；按部门时计入所核查处置阶段的部门）",
    "closed": "统计期内的结案（处置完成或误报）",
    "closed_on_time": "其中各处置阶段均未超期的",
    "false_alarms": "统计期内以误报结案或作废的案件",
    "auto_closed": "系统以自动恢复关闭的案件，另计，不计入结案数",
    "alarms": "统计期内判定的报警（每次激活计一次）；未成案的计入“未成案报警”",
    "alarms_to_cases": "其中成为案件的（新立或并入在办案件）",
    "closure_rate": "结案数 ÷ 应结案数",
    "on_time_closure_rate": "按期结案数 ÷ 应结案数",
    "on_time_disposal_rate": "按期处置数 ÷ 应处置数",
    "rework_rate": "返工数 ÷ 应处置数",
    "false_alarm_rate": "误报数 ÷ (结案数 + 作废数)",
    "mean_dispatch_ms": "所计派遣阶段的平均时长（毫秒）",
    "mean_disposal_ms": "所计处置阶段扣除挂账时间后的平均时长（毫秒）",
    "alarm_to_case_rate": "报警转案件数 ÷ 报警数",
}
# What a report calls each grouping (GET /api/v1/stats?group_by=).
GROUPINGS = {
    "department": "专业部门",
    "grid": "单元网格",
    "subcategory": "小类",
    "source": "案件来源",
}
# The group of the alarm occurrences that became no case (work orders, ignored, recorded).
NO_CASE = "未成案报警"
# The 单元网格 group of the cases placed in no grid (no location, or outside every grid): a
# name no grid code can be, since codes are digits.
NO_GRID = "无网格"


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


# Cells a spreadsheet program would run as a formula (OWASP "CSV Injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_row(row: Mapping[str, object]) -> list[object]:
    """One CSV row in the order of `csv_header` (empty for a rate without a base).

    A group key that a spreadsheet program would take for a formula (it starts with =, +, -, @,
    a tab or a carriage return) is prefixed with an apostrophe, as OWASP's CSV Injection advice
    says, so a department or grid name can never run in the reader's spreadsheet."""
    keys = ["key", *(k for k, _ in COUNTS), *(k for k, _ in RATES)]
    cells = ["" if row[k] is None else row[k] for k in keys]
    if isinstance(cells[0], str) and cells[0].startswith(_FORMULA_START):
        cells[0] = "'" + cells[0]
    return cells


def _utc(ms: int) -> str:
    # time.gmtime, not datetime: the API takes instants past the year 9999 datetime stops at
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


def xlsx_report(
    rows: Sequence[Mapping[str, object]],
    total: Mapping[str, object],
    group_by: str,
    from_ms: int,
    to_ms: int,
) -> bytes:
    """The rows and total of `report` as an XLSX workbook (bytes of an ECMA-376 package).

    Sheet 1, 综合评价-<grouping>, has the columns and names of `csv_header`: counts and mean
    durations (ms) as numbers, rates as numbers formatted as percentages, an empty cell for a
    figure without a base. Sheet 2, 指标说明, gives the window [from_ms, to_ms) in UTC, the
    grouping and each figure's definition. Group keys are written as text, never as formulas
    or links, whatever they hold. Raises KeyError for a `group_by` not in GROUPINGS."""
    grouping = GROUPINGS[group_by]
    out = io.BytesIO()
    # in_memory: no temporary files, the workbook is small
    book = xlsxwriter.Workbook(out, {"in_memory": True})
    bold = book.add_format({"bold": True})
    percent = book.add_format({"num_format": "0.00%"})
    whole = book.add_format({"num_format": "0"})
    sheet = book.add_worksheet(f"综合评价-{grouping}")
    for col, name in enumerate(csv_header()):
        sheet.write_string(0, col, name, bold)
    rate_keys = {key for key, _ in RATES if key.endswith("_rate")}
    keys = [key for key, _ in (*COUNTS, *RATES)]
    for r, row in enumerate([*rows, total], start=1):
        sheet.write_string(r, 0, str(row["key"]), bold if row is total else None)
        for col, key in enumerate(keys, start=1):
            value = row[key]
            if isinstance(value, int | float):
                sheet.write_number(r, col, value, percent if key in rate_keys else whole)
    sheet.freeze_panes(1, 1)
    sheet.set_column(0, 0, 24)
    sheet.set_column(1, len(keys), 12)
    notes = book.add_worksheet("指标说明")
    for r, (label, text) in enumerate(
        (("统计起（含）", _utc(from_ms)), ("统计止（不含）", _utc(to_ms)), ("分组", grouping))
    ):
        notes.write_string(r, 0, label, bold)
        notes.write_string(r, 1, text)
    for col, name in enumerate(("指标", "字段", "定义")):
        notes.write_string(4, col, name, bold)
    for r, (key, name) in enumerate((*COUNTS, *RATES), start=5):
        notes.write_string(r, 0, name)
        notes.write_string(r, 1, key)
        notes.write_string(r, 2, DEFINITIONS[key])
    notes.set_column(0, 1, 22)
    notes.set_column(2, 2, 60)
    book.close()
    return out.getvalue()
