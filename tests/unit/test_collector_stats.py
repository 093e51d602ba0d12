"""The XLSX and CSV forms of 综合评价 (collector.stats) on plain counts: a group key is text
whatever it holds, never a formula or a link a spreadsheet program would act on."""

import pytest

from lifeline.collector.stats import Counts, csv_header, csv_row, report, xlsx_report
from tests.xlsx import read_xlsx

pytestmark = pytest.mark.unit

HOSTILE = ['=HYPERLINK("http://evil.example/","点此")', "+1+1", "@SUM(A1)", "http://evil.example/"]


def test_group_keys_are_written_as_text_never_as_formulas_or_links() -> None:
    rows, total = report({key: Counts(reported=1, to_close=2, closed=1) for key in HOSTILE})
    sheets = read_xlsx(xlsx_report(rows, total, "department", 0, 86_400_000))  # no <f> in it
    header, *body = sheets["综合评价-专业部门"]
    assert [h for h, _ in header] == csv_header()
    assert [cells[0][0] for cells in body] == [*sorted(HOSTILE), "合计"]
    closure_rate = csv_header().index("结案率")
    assert [cells[closure_rate] for cells in body] == [(0.5, "0.00%")] * (len(HOSTILE) + 1)
    assert sheets["指标说明"][0][1] == ("1970-01-01 00:00:00 UTC", "General")


def test_csv_group_keys_that_look_like_formulas_are_quoted_as_text() -> None:
    rows, total = report({key: Counts(reported=1) for key in [*HOSTILE, "-2+3", "\t=1", "道路科"]})
    first = {csv_row(r)[0] for r in [*rows, total]}
    assert first == {
        '\'=HYPERLINK("http://evil.example/","点此")',
        "'+1+1",
        "'@SUM(A1)",
        "http://evil.example/",
        "'-2+3",
        "'\t=1",
        "道路科",
        "合计",
    }
