"""Webhook rows shared by the SQL backends: endpoints, their cursors in the event log, and
deliveries with their leases and outcomes.
"""

import json
import logging
from collections.abc import Sequence

from lifeline.collector.event_types import matches, type_patterns
from lifeline.collector.models import (
    Delivery,
    DueDelivery,
    Webhook,
)
from lifeline.collector.store.events_sql import EVENT
from lifeline.collector.store.rows import Col, RowMap, Rows, json_tuple

log = logging.getLogger(__name__)

_WEBHOOK = RowMap(Webhook, event_types=Col(json_tuple, "events"))
_DELIVERY = RowMap(Delivery)
# A pending delivery (d) of an event (e) to its webhook (w).
_DUE = RowMap(
    DueDelivery,
    "d",
    url="w.url",
    secret="w.secret",  # noqa: S106 - the column, not a secret
    event=EVENT,
)


class WebhookRows(Rows):
    """Webhooks and their deliveries."""

    def create_webhook(
        self, url: str, event_types: Sequence[str], secret: str, description: str, now_ms: int
    ) -> Webhook:
        """Register an endpoint for event types (patterns like `alarm.*`); it receives the
        matching events logged from now on."""
        rows = self._query(
            "INSERT INTO webhooks (url, events, secret, description, created_ms, cursor)"  # noqa: S608
            " VALUES (:url, :ev, :secret, :desc, :now,"
            " (SELECT COALESCE(max(id), 0) FROM events))"
            f" RETURNING {_WEBHOOK.select}",
            {
                "url": url,
                "ev": json.dumps(list(event_types)),
                "secret": secret,
                "desc": description,
                "now": now_ms,
            },
        )
        return _WEBHOOK(rows[0])

    def webhooks(self) -> list[Webhook]:
        """Every registered webhook."""
        rows = self._query(
            f"SELECT {_WEBHOOK.select} FROM webhooks ORDER BY id"  # noqa: S608 - constant
        )
        return [_WEBHOOK(r) for r in rows]

    def delete_webhook(self, webhook_id: int, now_ms: int) -> bool:
        """Unregister a webhook, cancelling its pending deliveries; False if unknown."""
        with self._tx() as cur:
            self._run(cur, "DELETE FROM webhooks WHERE id = :id", {"id": webhook_id})
            gone = cur.rowcount == 1
            self._run(
                cur,
                "UPDATE webhook_deliveries SET status = 'cancelled', updated_ms = :now"
                " WHERE webhook_id = :id AND status = 'pending'",
                {"id": webhook_id, "now": now_ms},
            )
        return gone

    def fan_out_deliveries(self, now_ms: int, limit: int = 500) -> int:
        """Create pending deliveries for events past each webhook's cursor; return how many."""
        newest = self.last_event_id()
        created = 0
        for hook in self.webhooks():
            if hook.cursor >= newest:
                continue
            events = self.events(hook.cursor, limit)
            patterns = type_patterns(",".join(hook.event_types))
            wanted = [e for e in events if matches(patterns, e.type)]
            with self._tx() as cur:
                # Compare-and-set: of two collectors fanning out, only one wins each range.
                self._run(
                    cur,
                    "UPDATE webhooks SET cursor = :new WHERE id = :id AND cursor = :old",
                    {"new": events[-1].id, "id": hook.id, "old": hook.cursor},
                )
                if cur.rowcount != 1:
                    continue
                for e in wanted:
                    self._run(
                        cur,
                        "INSERT INTO webhook_deliveries (webhook_id, event_id, status, attempts,"
                        " next_ms, response_code, error, created_ms, updated_ms)"
                        " VALUES (:hook, :ev, 'pending', 0, :now, NULL, '', :now, :now)",
                        {"hook": hook.id, "ev": e.id, "now": now_ms},
                    )
                created += len(wanted)
        return created

    def claim_due_deliveries(
        self, now_ms: int, limit: int = 100, lease_ms: int = 60_000
    ) -> list[DueDelivery]:
        """Pending deliveries due now, leased for `lease_ms` so no other sender takes them."""
        rows = self._query(
            f"SELECT {_DUE.select} FROM webhook_deliveries d"  # noqa: S608 - constant
            " JOIN webhooks w ON w.id = d.webhook_id JOIN events e ON e.id = d.event_id"
            " WHERE d.status = 'pending' AND d.next_ms <= :now ORDER BY d.next_ms, d.id LIMIT :n",
            {"now": now_ms, "n": limit},
        )
        claimed = []
        with self._tx() as cur:
            for due in map(_DUE, rows):
                self._run(
                    cur,
                    "UPDATE webhook_deliveries SET next_ms = :lease"
                    " WHERE id = :id AND status = 'pending' AND next_ms <= :now",
                    {"lease": now_ms + lease_ms, "id": due.id, "now": now_ms},
                )
                if cur.rowcount == 1:
                    claimed.append(due)
        return claimed

    def record_delivery(
        self,
        delivery_id: int,
        status: str,
        attempts: int,
        next_ms: int,
        response_code: int | None,
        error: str,
        now_ms: int,
    ) -> None:
        """Store the outcome of one delivery attempt."""
        with self._tx() as cur:
            self._run(
                cur,
                "UPDATE webhook_deliveries SET status = :st, attempts = :att, next_ms = :next,"
                " response_code = :code, error = :err, updated_ms = :now WHERE id = :id",
                {
                    "st": status,
                    "att": attempts,
                    "next": next_ms,
                    "code": response_code,
                    "err": error,
                    "now": now_ms,
                    "id": delivery_id,
                },
            )

    def deliveries(self, webhook_id: int, limit: int = 100) -> list[Delivery]:
        """The most recent deliveries of a webhook, newest first."""
        rows = self._query(
            f"SELECT {_DELIVERY.select} FROM webhook_deliveries"  # noqa: S608 - constant
            " WHERE webhook_id = :id ORDER BY id DESC LIMIT :n",
            {"id": webhook_id, "n": limit},
        )
        return [_DELIVERY(r) for r in rows]

    def count_deliveries_by_status(self) -> dict[str, int]:
        """How many deliveries are in each status."""
        rows = self._query("SELECT status, count(*) FROM webhook_deliveries GROUP BY status")
        return {r[0]: int(r[1]) for r in rows}
