"""Read an XLSX package back with the standard library alone (zipfile and ElementTree over the
SpreadsheetML parts of ECMA-376), so a test of our export does not trust the library that
wrote it."""

from __future__ import annotations

import io
import re
import zipfile
from xml.etree import ElementTree as ET

M = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
# The built-in number formats a writer may use instead of declaring them (ECMA-376 §18.8.30).
BUILTIN_FORMATS = {0: "General", 1: "0", 2: "0.00", 9: "0%", 10: "0.00%"}

# A cell: its value (text, a number, or None for an empty cell) and its number format.
Cell = tuple[str | float | None, str]


def _column(ref: str) -> int:
    """0-based column of a cell reference such as "AB12"."""
    letters = re.match(r"[A-Z]+", ref)
    assert letters, ref
    n = 0
    for ch in letters.group():
        n = n * 26 + ord(ch) - ord("A") + 1
    return n - 1


def _part(z: zipfile.ZipFile, name: str) -> ET.Element:
    # the package is the one our own collector just wrote in a test, not untrusted input
    return ET.fromstring(z.read(name))  # noqa: S314


def read_xlsx(data: bytes) -> dict[str, list[list[Cell]]]:
    """Every sheet, by name in workbook order, as rows of cells (short rows padded with empty
    cells). Fails the test on a formula: an export must hold values only."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = set(z.namelist())
        shared = []
        if "xl/sharedStrings.xml" in names:
            for si in _part(z, "xl/sharedStrings.xml").iter(f"{M}si"):
                shared.append("".join(t.text or "" for t in si.iter(f"{M}t")))
        styles = _part(z, "xl/styles.xml")
        custom = {
            int(f.get("numFmtId", "0")): f.get("formatCode", "") for f in styles.iter(f"{M}numFmt")
        }
        cell_xfs = styles.find(f"{M}cellXfs")
        assert cell_xfs is not None
        formats = [
            custom.get(int(xf.get("numFmtId", "0")))
            or BUILTIN_FORMATS.get(int(xf.get("numFmtId", "0")), "?")
            for xf in cell_xfs.iter(f"{M}xf")
        ]
        rels = {r.get("Id"): r.get("Target", "") for r in _part(z, "xl/_rels/workbook.xml.rels")}
        sheets: dict[str, list[list[Cell]]] = {}
        for sheet in _part(z, "xl/workbook.xml").iter(f"{M}sheet"):
            part = _part(z, "xl/" + rels[sheet.get(f"{R}id")].removeprefix("/xl/"))
            rows: dict[int, dict[int, Cell]] = {}
            for row in part.iter(f"{M}row"):
                cells = rows.setdefault(int(row.get("r", "0")) - 1, {})
                for c in row.iter(f"{M}c"):
                    ref = c.get("r", "")
                    assert c.find(f"{M}f") is None, f"a formula in {ref}"
                    v = c.find(f"{M}v")
                    value: str | float | None
                    if c.get("t") == "inlineStr":
                        value = "".join(t.text or "" for t in c.iter(f"{M}t"))
                    elif v is None or v.text is None:
                        value = None
                    elif c.get("t") == "s":
                        value = shared[int(v.text)]
                    elif c.get("t", "n") == "n":
                        value = float(v.text)
                    else:
                        value = v.text
                    cells[_column(ref)] = (value, formats[int(c.get("s", "0"))])
            width = max((max(r, default=-1) + 1 for r in rows.values()), default=0)
            sheets[sheet.get("name", "")] = [
                [rows.get(i, {}).get(j, (None, "General")) for j in range(width)]
                for i in range(max(rows, default=-1) + 1)
            ]
        return sheets
