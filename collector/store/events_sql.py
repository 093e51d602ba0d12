"""Event log rows shared by the SQL backends: the `events` table that SSE and webhooks read.

Each aggregate copies its own rows into the log (`_pump_*`); SqlStore.pump_events runs them.
"""

import json
import logging
from collections.abc import Sequence
from typing import Any

from lifeline.collector.models import (
    EventRecord,
)
from lifeline.collector.store import scope_sql as scoped
from lifeline.collector.store.rows import Col, Cursor, RowMap, Rows

log = logging.getLogger(__name__)

EVENT = RowMap(EventRecord, "e", data=Col(json.loads))  # an entry of `events e`


class EventLogRows(Rows):
    """The event log: appended by the pump, read by id."""

    def _log_event(
        self, cur: Cursor, etype: str, ts_ms: int, now_ms: int, subject: str, data: dict[str, Any]
    ) -> None:
        self._run(
            cur,
            "INSERT INTO events (type, ts_ms, created_ms, subject, data)"
            " VALUES (:type, :ts, :now, :subject, :data)",
            {
                "type": etype,
                "ts": ts_ms,
                "now": now_ms,
                "subject": subject,
                "data": json.dumps(data, ensure_ascii=False),
            },
        )

    def last_event_id(self) -> int:
        """The newest event id (0 if the log is empty)."""
        return int(self._query("SELECT COALESCE(max(id), 0) FROM events")[0][0])

    def events(
        self,
        after_id: int,
        limit: int = 500,
        types: Sequence[str] = (),
        scope: Sequence[str] | None = None,
        until_id: int | None = None,
    ) -> list[EventRecord]:
        """Events with id > after_id (and ≤ until_id, if given), oldest first; `types` are
        LIKE patterns (empty = all); with `scope` (department values), only the events of
        cases, work orders, alarms, devices and gateways in scope (scope_sql)."""
        params: dict[str, Any] = {"after": after_id, "n": limit}
        where = ""
        if types:
            params.update({f"t{i}": t for i, t in enumerate(types)})
            where = " AND (" + " OR ".join(f"type LIKE :t{i}" for i in range(len(types))) + ")"
        if until_id is not None:
            params["until"] = until_id
            where += " AND id <= :until"
        if scope is not None:
            where += f" AND {scoped.event_in('e', scope, params)}"
        rows = self._query(
            f"SELECT {EVENT.select} FROM events e"  # noqa: S608 - constant columns, placeholders
            f" WHERE id > :after{where} ORDER BY id LIMIT :n",
            params,
        )
        return [EVENT(r) for r in rows]
