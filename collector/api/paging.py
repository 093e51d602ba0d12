"""Opaque keyset cursors and shared query-parameter limits."""

import base64
import binascii
from typing import Annotated

from fastapi import HTTPException, Query

from lifeline.wire.codes import GRID_CODE_PATTERN, is_ascii_number

MAX_MS = 2**53  # beyond any real time, inside every integer column
MAX_PAGE = 500

TimeMs = Annotated[int | None, Query(ge=0, le=MAX_MS, description="UTC milliseconds")]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"items per page (≤ {MAX_PAGE})")]
Cursor = Annotated[
    str | None,
    Query(max_length=200, description="`next_cursor` of the previous page"),
]
Name = Annotated[str | None, Query(min_length=1, max_length=200)]
GridCode = Annotated[
    str | None,
    Query(pattern=GRID_CODE_PATTERN, description="单元网格 code: 14 digits, or 15"),
]
# A case or work-order number (tag + area code + date + serial, e.g. 330106202611300001) is
# ASCII: ٣٣٠١٠٦... is refused as malformed rather than looked up and not found.
CASE_NO_PATTERN = "^[A-Za-z0-9-]{1,64}$"


def encode_cursor(*parts: object) -> str:
    """An opaque cursor holding `parts` (ints and strings without NUL)."""
    raw = "\x00".join(str(p) for p in parts)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, count: int) -> list[str]:
    """The `count` parts of a cursor; 400 if it is not one we made."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise HTTPException(400, "malformed cursor: pass next_cursor back unchanged") from None
    parts = raw.split("\x00")
    if len(parts) != count:
        raise HTTPException(400, "malformed cursor: pass next_cursor back unchanged")
    return parts


def cursor_int(text: str) -> int:
    """An integer cursor part; 400 if it is not one."""
    if not is_ascii_number(text) or int(text) > MAX_MS:
        raise HTTPException(400, "malformed cursor: pass next_cursor back unchanged")
    return int(text)
