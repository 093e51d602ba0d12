"""Codes of 数字城管 that the edge and the collector must check alike, so that what an installer
enters at a cabinet is what the command center accepts.

单元网格 codes follow GB/T 30428.2 (单元网格划分与编码): 14 digits — 6 area (行政区划代码)
+ 3 街道 + 3 社区 + 2 grid — or the 15-digit variant some cities use (3 grid digits). A
12-digit code is a 社区, not a grid.
"""

import re

# ASCII digits: `\d` would take the digits of any script (٣٣٠١... is no grid code).
_GRID_CODE = re.compile(r"[0-9]{14}[0-9]?")
GRID_CODE_PATTERN = f"^{_GRID_CODE.pattern}$"  # for JSON Schema / OpenAPI `pattern`
GRID_CODE_RULE = "14 digits (6 area + 3 街道 + 3 社区 + 2 grid) or 15"


def is_grid_code(code: str) -> bool:
    """True if `code` is a 单元网格 code: 14 or 15 ASCII digits (GRID_CODE_RULE)."""
    return _GRID_CODE.fullmatch(code) is not None
