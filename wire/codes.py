"""Codes and numbers of 数字城管 that the edge and the collector must check alike, so that what
an installer enters at a cabinet is what the command center accepts.

Every code is ASCII: Python's `\\d` and `str.isdigit()`, and `\\d` in pydantic's Rust regex,
take the digits of any script, but ٣٣٠١٠٦ (Arabic-Indic) or ３３０１０６ (fullwidth) is no
area code, and a record stored under it never meets the one stored under 330106. So each rule
here is written with `[0-9]`, and its `*_PATTERN` (anchored, for pydantic `pattern=`, FastAPI
`Path`/`Query` and OpenAPI) is the same expression as its `is_*` check.

- 行政区划代码 (area code): 6 digits, GB/T 2260.
- 部件 小类 code: 4 digits, 2 大类 + 2 小类 (GB/T 30428.2, CJJ/T 106).
- 部件标识码: 16 digits — 6 area + 2 大类 + 2 小类 + 6 serial (GB/T 30428.2).
- 单元网格 code: 14 digits — 6 area + 3 街道 + 3 社区 + 2 grid — or the 15-digit variant some
  cities use (3 grid digits), GB/T 30428.2 (单元网格划分与编码). A 12-digit code is a 社区.
"""

import re


def _code(expr: str) -> tuple[re.Pattern[str], str]:
    # fullmatch, not `$`: Python's `$` also matches before a trailing newline ("330106\n").
    return re.compile(expr, re.ASCII), f"^{expr}$"


_AREA_CODE, AREA_CODE_PATTERN = _code("[0-9]{6}")
AREA_CODE_RULE = "6 digits (GB/T 2260 行政区划代码)"

_SUBCATEGORY, SUBCATEGORY_PATTERN = _code("[0-9]{4}")
SUBCATEGORY_RULE = "4 digits (大类 + 小类)"

_ASSET_CODE, ASSET_CODE_PATTERN = _code("[0-9]{16}")
ASSET_CODE_RULE = "16 digits (6 area + 2 大类 + 2 小类 + 6 serial)"

_GRID_CODE, GRID_CODE_PATTERN = _code("[0-9]{14}[0-9]?")
GRID_CODE_RULE = "14 digits (6 area + 3 街道 + 3 社区 + 2 grid) or 15"


def is_area_code(code: str) -> bool:
    """True if `code` is a 行政区划代码: 6 ASCII digits (AREA_CODE_RULE, GB/T 2260)."""
    return _AREA_CODE.fullmatch(code) is not None


def is_subcategory(code: str) -> bool:
    """True if `code` is a 部件 小类 code: 4 ASCII digits (SUBCATEGORY_RULE)."""
    return _SUBCATEGORY.fullmatch(code) is not None


def is_asset_code(code: str) -> bool:
    """True if `code` is a 部件标识码: 16 ASCII digits (ASSET_CODE_RULE, GB/T 30428.2)."""
    return _ASSET_CODE.fullmatch(code) is not None


def is_grid_code(code: str) -> bool:
    """True if `code` is a 单元网格 code: 14 or 15 ASCII digits (GRID_CODE_RULE)."""
    return _GRID_CODE.fullmatch(code) is not None


def is_ascii_number(text: str) -> bool:
    """True if `text` is one or more ASCII digits 0-9, the only digits `int()` should be given
    from a person or a peer: `str.isdigit()` also holds for ٣ and ３ (which `int()` reads as
    3, so ３３０１ slips through as a port) and for ² (which `int()` refuses with ValueError)."""
    return text.isascii() and text.isdigit()
