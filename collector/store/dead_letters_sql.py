"""Dead-letter rows shared by the SQL backends: payloads refused, with the reason."""

import logging

from collector.models import (
    DeadLetter,
    Rejected,
)
from collector.store.rows import Cursor, Rows

log = logging.getLogger(__name__)


class DeadLetterRows(Rows):
    """Refused payloads, kept with their topic and reason."""

    def _dead_letter(self, cur: Cursor, item: Rejected) -> None:
        self._run(
            cur,
            "INSERT INTO dead_letters (topic, payload, reason, received_ms)"
            " VALUES (:topic, :payload, :reason, :ms)",
            {
                "topic": item.topic,
                "payload": item.payload,
                "reason": item.reason,
                "ms": item.received_ms,
            },
        )

    def count_dead_letters(self) -> int:
        """Total refused payloads."""
        return int(self._query("SELECT count(*) FROM dead_letters")[0][0])

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Most recent refused payloads first."""
        rows = self._query(
            "SELECT id, topic, payload, reason, received_ms FROM dead_letters"
            " ORDER BY id DESC LIMIT :n",
            {"n": limit},
        )
        return [DeadLetter(r[0], r[1], bytes(r[2]), r[3], r[4]) for r in rows]
