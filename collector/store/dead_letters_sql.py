"""Dead-letter rows shared by the SQL backends: payloads refused, with the reason.

A row keeps the first DEAD_LETTER_PREFIX bytes of the payload with its size and SHA-256 (enough
to recognise and match it, not to fill the disk), and lives `retention` long.
"""

import hashlib
import logging

from lifeline.collector.models import (
    DeadLetter,
    Rejected,
)
from lifeline.collector.store.rows import Col, Cursor, RowMap, Rows

log = logging.getLogger(__name__)

DEAD_LETTER_PREFIX = 4096  # bytes of a refused payload kept
MAX_REASON = 1000  # characters of the reason kept
_DEAD_LETTER = RowMap(
    DeadLetter,
    # SQLite: substr of an empty blob is NULL
    payload=Col(lambda prefix: bytes(prefix or b""), "substr(payload, 1, :prefix)"),
    size=Col(int, "COALESCE(size, length(payload))"),
)


class DeadLetterRows(Rows):
    """Refused payloads, kept with their topic and reason."""

    def _dead_letter(self, cur: Cursor, item: Rejected) -> None:
        self._run(
            cur,
            "INSERT INTO dead_letters (topic, payload, reason, received_ms, size, sha256)"
            " VALUES (:topic, :payload, :reason, :ms, :size, :sha256)",
            {
                "topic": item.topic[:1000],
                "payload": item.payload[:DEAD_LETTER_PREFIX],
                "reason": item.reason[:MAX_REASON],
                "ms": item.received_ms,
                "size": len(item.payload),
                "sha256": hashlib.sha256(item.payload).hexdigest(),
            },
        )

    def count_dead_letters(self) -> int:
        """Total refused payloads."""
        return int(self._query("SELECT count(*) FROM dead_letters")[0][0])

    def dead_letters(self, limit: int = 100, before_id: int | None = None) -> list[DeadLetter]:
        """Refused payloads newest first, `limit` of them with an id below `before_id` (paging:
        pass the last id of the previous page). Each payload at most DEAD_LETTER_PREFIX bytes,
        rows stored before the prefix was kept included."""
        rows = self._query(
            f"SELECT {_DEAD_LETTER.select} FROM dead_letters"  # noqa: S608 - constant
            " WHERE id < :before ORDER BY id DESC LIMIT :n",
            {"n": limit, "before": 2**62 if before_id is None else before_id,
             "prefix": DEAD_LETTER_PREFIX},
        )  # fmt: skip
        return [_DEAD_LETTER(r) for r in rows]

    def prune_dead_letters(self, before_ms: int) -> int:
        """Delete dead letters received before `before_ms`; return how many."""
        with self._tx() as cur:
            self._run(cur, "DELETE FROM dead_letters WHERE received_ms < :t", {"t": before_ms})
            return int(cur.rowcount)
