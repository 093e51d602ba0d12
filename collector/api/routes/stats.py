"""综合评价: `GET /api/v1/stats` — the counts and rates a command center reports, per department,
grid or 小类 over a time window, as JSON, CSV or XLSX (definitions in docs/integration.md)."""

import csv
import io
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from lifeline.collector.api.auth import ScopedReader
from lifeline.collector.api.deps import StoreDep
from lifeline.collector.stats import COUNTS, RATES, csv_header, csv_row, report, xlsx_report

router = APIRouter(prefix="/api/v1", tags=["statistics"])

DAY_MS = 86_400_000
MAX_WINDOW_MS = 400 * DAY_MS  # a year and a bit: a report, not a scan of all history
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class StatsRow(BaseModel):
    """One group's figures: every count, the rates (0..1, null without a base) and the mean
    stage durations (ms)."""

    model_config = ConfigDict(extra="allow")

    key: str


class StatsOut(BaseModel):
    """The figures of each group of the window, and their total (key 合计)."""

    model_config = ConfigDict(extra="forbid")

    from_ms: int
    to_ms: int
    group_by: str
    groups: list[StatsRow]
    total: StatsRow


StatsRow.__doc__ = (
    (StatsRow.__doc__ or "")
    + "\n\nFigures: "
    + ", ".join(f"{k} ({name})" for k, name in (*COUNTS, *RATES))
)


@router.get(
    "/stats", response_model=StatsOut, responses={200: {"content": {"text/csv": {}, XLSX: {}}}}
)
def stats(
    store: StoreDep,
    reader: ScopedReader,
    from_ms: Annotated[int, Query(alias="from", ge=0, le=2**62, description="UTC ms, included")],
    to_ms: Annotated[int, Query(alias="to", ge=0, le=2**62, description="UTC ms, excluded")],
    group_by: Literal["department", "grid", "subcategory", "source"] = "department",
    format: Literal["json", "csv", "xlsx"] = "json",
) -> Any:
    """Every count and rate of 综合评价 for the window [from, to) per group, and the total;
    `format=csv` answers the same table as CSV (UTF-8 with BOM, for spreadsheet programs),
    `format=xlsx` as an XLSX workbook (the table, then a sheet of definitions). A 专业部门
    key gets the figures of the cases its departments are 主办 of only.
    422 if the window is empty, reversed or longer than 400 days."""
    if to_ms <= from_ms or to_ms - from_ms > MAX_WINDOW_MS:
        raise HTTPException(422, "the window needs from < to, at most 400 days apart")
    rows, total = report(store.case_counts(from_ms, to_ms, group_by, reader.scope))
    name = f"stats-{group_by}-{time.strftime('%Y%m%d', time.gmtime(from_ms / 1000))}"
    if format == "xlsx":
        return Response(
            xlsx_report(rows, total, group_by, from_ms, to_ms),
            media_type=XLSX,
            headers={"Content-Disposition": f'attachment; filename="{name}.xlsx"'},
        )
    if format == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(csv_header())
        for row in [*rows, total]:
            writer.writerow(csv_row(row))
        return Response(
            "\ufeff" + out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    return {
        "from_ms": from_ms,
        "to_ms": to_ms,
        "group_by": group_by,
        "groups": rows,
        "total": total,
    }
