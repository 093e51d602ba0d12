"""Readings rows shared by the SQL backends: the value codec and the rows a data batch becomes.

The backends own the readings table itself (its layout and bulk insert differ: SQLite rows,
PostgreSQL COPY into partitions or a hypertable) and its queries.
"""

import logging
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import replace

from lifeline.collector.store.rows import Commit, Cursor, Rows
from lifeline.wire import (
    DataBatch,
)
from lifeline.wire.messages import Value

log = logging.getLogger(__name__)

# A reading row as the backends insert it.
ReadingRow = tuple[str, str, str, int, int, float | None, str | None, str, bool]
# A reading row with the time it was received (its sample time was implausible).
FlaggedRow = tuple[str, str, str, int, int, float | None, str | None, str, bool, int]

V_NULL, V_BOOL, V_INT, V_FLOAT, V_STR = 0, 1, 2, 3, 4
_EXACT_FLOAT_INT = 2**53


def encode_value(v: Value) -> tuple[int, float | None, str | None]:
    """Split a wire value into (type tag, numeric column, text column) without losing it."""
    if v is None:
        return V_NULL, None, None
    if isinstance(v, bool):
        return V_BOOL, float(v), None
    if isinstance(v, int):
        # Doubles hold integers exactly only up to 2**53: keep the digits for bigger ones.
        return V_INT, float(v), (str(v) if abs(v) > _EXACT_FLOAT_INT else None)
    if isinstance(v, float):
        return V_FLOAT, v, None
    return V_STR, None, v


def decode_value(tag: int, num: float | None, text: str | None) -> Value:
    """Inverse of encode_value."""
    if tag == V_BOOL:
        return bool(num)
    if tag == V_INT:
        return int(text) if text is not None else int(num or 0)
    if tag == V_FLOAT:
        return num
    if tag == V_STR:
        return text
    return None


class ReadingRows(Rows):
    """The rows of data batches; a backend inserts them and answers the readings queries."""

    @abstractmethod
    def _insert_readings(self, cur: Cursor, rows: list[ReadingRow]) -> None:
        """Bulk-insert readings inside the batch transaction."""

    @abstractmethod
    def _insert_flagged_readings(self, cur: Cursor, rows: list[FlaggedRow]) -> None:
        """Insert readings with a `received_ms` column (a batch with implausible times)."""

    def _data_rows(
        self,
        msg: DataBatch,
        ctx: "Commit",
        readings: list[ReadingRow],
        flagged: list[FlaggedRow],
    ) -> None:
        """Add a batch's rows to `readings`, or with their receive time to `flagged` if their
        sample time is implausible (a batch of plausible times costs two C-level passes)."""
        lo, hi = ctx.span(msg.records)
        if lo >= ctx.lo and hi <= ctx.hi:
            readings.extend(self._reading_rows(msg))
        elif hi < ctx.lo or lo > ctx.hi:
            flagged.extend(self._flagged_rows(msg, ctx.now_ms))
        else:  # some of each: rare enough to sort record by record
            good = tuple(r for r in msg.records if ctx.lo <= r.ts_ms <= ctx.hi)
            bad = tuple(r for r in msg.records if not ctx.lo <= r.ts_ms <= ctx.hi)
            readings.extend(self._reading_rows(replace(msg, records=good)))
            flagged.extend(self._flagged_rows(replace(msg, records=bad), ctx.now_ms))

    def _flagged_rows(self, msg: DataBatch, received_ms: int) -> Iterator[FlaggedRow]:
        """The batch's reading rows (as the backend builds them), each with `received_ms`."""
        return ((*row, received_ms) for row in self._reading_rows(msg))

    @staticmethod
    def _reading_rows(msg: DataBatch) -> Iterator[ReadingRow]:
        for r in msg.records:
            tag, num, text = encode_value(r.value)
            yield (
                msg.gateway,
                r.device,
                r.point,
                r.ts_ms,
                tag,
                num,
                text,
                r.quality.value,
                r.historical,
            )
