"""Alarm rows shared by the SQL backends: alarm transitions as they arrive, each alarm source's
state, a birth's alarm picture reconciled, and the alarm index the API and the event log read.
"""

import json
import logging
from collections.abc import Sequence
from typing import Any

from lifeline.collector.event_types import ALARM_EVENT_TYPES
from lifeline.collector.models import (
    ORIGIN_BIRTH,
    ORIGIN_GATEWAY,
    RECONCILED,
    AlarmRecord,
    AlarmView,
)
from lifeline.collector.store import scope_sql as scoped
from lifeline.collector.store.rows import (
    BIRTH_IDX,
    Col,
    Commit,
    Cursor,
    Pos,
    RowMap,
    Rows,
    at_or_after,
    sql_values,
)
from lifeline.wire import (
    AlarmEvent,
    AlarmState,
    Birth,
    Severity,
)

log = logging.getLogger(__name__)

ACTIVE_STATES = (AlarmState.ACTIVE_UNACKED.value, AlarmState.ACTIVE_ACKED.value)
_ACTIVE = sql_values(*ACTIVE_STATES)
_ALARM = RowMap(
    AlarmRecord,
    gateway="gateway_id",
    value=Col(json.loads),
    limit=Col(json.loads, "limit_value"),
)
# An occurrence from alarm_index (a), with its asset (b) and where it ended (k).
_ALARM_VIEW = RowMap(
    AlarmView,
    "a",
    gateway="a.gateway_id",
    value=Col(json.loads),
    limit=Col(json.loads, "a.limit_value"),
    asset="b.asset",
    outcome="k.outcome",
    outcome_ref="k.ref",
    outcome_reason="k.reason",
)


class AlarmRows(Rows):
    """Alarms: `alarm_events` (every transition), `alarms` (by source) and `alarm_index` (by
    occurrence)."""

    def _alarm_event(
        self,
        cur: Cursor,
        gateway: str,
        ev: AlarmEvent,
        pos: Pos,
        ctx: "Commit",
        origin: str = ORIGIN_GATEWAY,
    ) -> int:
        """Store one alarm transition; apply it to the alarm's state if it is the newest.

        The state of an alarm source (gateway, device, point, type) follows the gateway's order
        of events, `pos`, never the timestamps: a transition older than the stored state, or
        one repeating it, is kept in the history but handed to nobody. A transition of origin
        `birth` (from a birth's alarm picture) is stored only if it changes the state.
        Returns how many alarm events were stored (0 or 1).
        """
        p: dict[str, Any] = {
            "gw": gateway,
            "dev": ev.device,
            "pt": ev.point,
            "type": ev.alarm_type,
            "aid": ev.alarm_id,
            "sev": int(ev.severity),
            "state": ev.state.value,
            "ts": ev.ts_ms,
            "val": json.dumps(ev.value),
            "lim": json.dumps(ev.limit),
            "msg": ev.message,
            "by": ev.ack_by,
            "note": ev.ack_note,
            "hist": ev.historical,
            "r": pos[0],
            "s": pos[1],
            "i": pos[2],
            "recv": ctx.received(ev.ts_ms),
            "origin": origin,
        }
        rows = self._run(
            cur,
            "SELECT alarm_id, state, pos_rank, pos_seq, pos_idx FROM alarms"
            " WHERE gateway_id = :gw AND device = :dev AND point = :pt AND alarm_type = :type",
            p,
        )
        row = rows[0] if rows else None
        applies = row is None or (
            at_or_after(pos, row[2:5]) and (row[0], row[1]) != (ev.alarm_id, ev.state.value)
        )
        if not applies and origin != ORIGIN_GATEWAY:
            return 0
        self._run(
            cur,
            "INSERT INTO alarm_events (gateway_id, device, point, alarm_type, alarm_id, severity,"
            " state, ts_ms, value, limit_value, message, ack_by, ack_note, historical, handled,"
            " pos_rank, pos_seq, pos_idx, received_ms, origin)"
            " VALUES (:gw, :dev, :pt, :type, :aid, :sev, :state, :ts, :val, :lim, :msg, :by, :note,"
            " :hist, :handled, :r, :s, :i, :recv, :origin)",
            {**p, "handled": not applies},
        )
        active = ev.state.value in ACTIVE_STATES
        if row is None:
            self._run(
                cur,
                "INSERT INTO alarms (gateway_id, device, point, alarm_type, alarm_id, severity,"
                " state, count, first_ms, last_ms, state_ms, value, limit_value, message, ack_by,"
                " ack_note, pos_rank, pos_seq, pos_idx)"
                " VALUES (:gw, :dev, :pt, :type, :aid, :sev, :state, :cnt, :ts, :ts, :ts, :val,"
                " :lim, :msg, :by, :note, :r, :s, :i)",
                {**p, "cnt": 1 if active else 0},
            )
        elif applies:
            new_activation = active and row[0] != ev.alarm_id
            self._run(
                cur,
                "UPDATE alarms SET alarm_id = :aid, severity = :sev, state = :state,"
                " state_ms = :ts, count = count + :inc,"
                " last_ms = CASE WHEN :inc = 1 THEN :ts ELSE last_ms END, value = :val,"
                " limit_value = :lim, message = :msg, ack_by = :by, ack_note = :note,"
                " pos_rank = :r, pos_seq = :s, pos_idx = :i"
                " WHERE gateway_id = :gw AND device = :dev AND point = :pt AND alarm_type = :type",
                {**p, "inc": 1 if new_activation else 0},
            )
        elif at_or_after(pos, row[2:5]):
            # The same state again (a birth's picture got there first): only the position moves.
            self._run(
                cur,
                "UPDATE alarms SET pos_rank = :r, pos_seq = :s, pos_idx = :i"
                " WHERE gateway_id = :gw AND device = :dev AND point = :pt AND alarm_type = :type",
                p,
            )
        return 1

    def _reconcile_alarms(self, cur: Cursor, msg: Birth, rank: int, ctx: "Commit") -> int:
        """Make the collector's alarms of this gateway match the birth's alarm picture.

        Sparkplug's host behaviour: an alarm of the picture the collector does not hold in
        that state is applied (as an alarm event, so cases open as usual); an alarm the
        collector holds not normal that the picture lacks is normal at the gateway, and is
        set so with the note "reconciled from birth". Idempotent when repeated. Returns how
        many alarm events it stored.
        """
        held = self._run(
            cur,
            "SELECT device, point, alarm_type, alarm_id, severity, state, value, limit_value,"
            " pos_rank, pos_seq, pos_idx FROM alarms WHERE gateway_id = :gw",
            {"gw": msg.gateway},
        )
        stored = 0
        pictured: set[tuple[str, str, str]] = set()
        for i, ev in enumerate(msg.alarms):
            pictured.add((ev.device, ev.point, ev.alarm_type))
            pos = (rank, msg.high_water, BIRTH_IDX + i)
            stored += self._alarm_event(cur, msg.gateway, ev, pos, ctx, ORIGIN_BIRTH)
        pos = (rank, msg.high_water, BIRTH_IDX + len(msg.alarms))
        for dev, point, kind, aid, sev, state, value, limit, *at in held:
            if (dev, point, kind) in pictured or state == AlarmState.NORMAL.value:
                continue
            if not at_or_after(pos, at):
                continue  # changed by a batch newer than the picture
            cleared = AlarmEvent(
                aid,
                dev,
                point,
                kind,
                Severity(sev),
                AlarmState.NORMAL,
                msg.sent_ms,
                json.loads(value),
                json.loads(limit),
                RECONCILED,
            )
            stored += self._alarm_event(cur, msg.gateway, cleared, pos, ctx, ORIGIN_BIRTH)
        if stored:
            log.info("gateway %s: %d alarm states reconciled from its birth", msg.gateway, stored)
        return stored

    def alarms(self, active_only: bool = False) -> list[AlarmRecord]:
        """Deduplicated alarms, newest first."""
        rows = self._query(
            f"SELECT {_ALARM.select} FROM alarms"  # noqa: S608 - constant
            f" WHERE (:all_ OR state IN {_ACTIVE}) ORDER BY state_ms DESC",
            {"all_": not active_only},
        )
        return [_ALARM(r) for r in rows]

    _ALARM_FROM = (
        " FROM alarm_index a LEFT JOIN device_assets b"
        " ON b.gateway_id = a.gateway_id AND b.device = a.device"
        " LEFT JOIN alarm_links k ON k.alarm_id = a.alarm_id AND k.activation ="
        " (SELECT max(x.activation) FROM alarm_links x WHERE x.alarm_id = a.alarm_id)"
    )

    def find_alarms(
        self,
        *,
        states: Sequence[str] = (),
        severities: Sequence[int] = (),
        gateway: str | None = None,
        device: str | None = None,
        asset: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        before_id: int | None = None,
        limit: int = 100,
        outcomes: Sequence[str] = (),
        scope: Sequence[str] | None = None,
    ) -> list[AlarmView]:
        """Alarm occurrences matching every given filter, newest first, ids below `before_id`;
        `outcomes` selects by where they ended (`pending`: not handled yet); with `scope`
        (department values), only those attached to a case or work order of one of them."""
        params: dict[str, Any] = {
            "gw": gateway,
            "dev": device,
            "asset": asset,
            "since": since_ms,
            "until": until_ms,
            "before": before_id,
            "n": limit,
        }
        where = ""
        if states:
            params.update({f"s{i}": s for i, s in enumerate(states)})
            where += " AND a.state IN (" + ", ".join(f":s{i}" for i in range(len(states))) + ")"
        if severities:
            params.update({f"v{i}": v for i, v in enumerate(severities)})
            where += " AND a.severity IN (" + ", ".join(f":v{i}" for i in range(len(severities)))
            where += ")"
        if outcomes:
            params.update({f"o{i}": o for i, o in enumerate(outcomes)})
            where += " AND (COALESCE(k.outcome, 'pending') IN ("
            where += ", ".join(f":o{i}" for i in range(len(outcomes))) + "))"
        if scope is not None:
            where += f" AND {scoped.alarm_is('a.alarm_id', scope, params)}"
        rows = self._query(
            f"SELECT {_ALARM_VIEW.select}{self._ALARM_FROM}"
            " WHERE (CAST(:gw AS TEXT) IS NULL OR a.gateway_id = :gw)"
            " AND (CAST(:dev AS TEXT) IS NULL OR a.device = :dev)"
            " AND (CAST(:asset AS TEXT) IS NULL OR b.asset = :asset)"
            " AND (CAST(:since AS BIGINT) IS NULL OR a.raised_ms >= :since)"
            " AND (CAST(:until AS BIGINT) IS NULL OR a.raised_ms < :until)"
            f" AND (CAST(:before AS BIGINT) IS NULL OR a.id < :before){where}"
            " ORDER BY a.id DESC LIMIT :n",
            params,
        )
        return [_ALARM_VIEW(r) for r in rows]

    def alarm(self, alarm_id: str, scope: Sequence[str] | None = None) -> AlarmView | None:
        """One alarm occurrence by its edge id (`gateway:epoch:n`, n counts alarms); with
        `scope`, only if it is attached to a case or work order of one of these departments."""
        params: dict[str, Any] = {"aid": alarm_id}
        mine = "" if scope is None else f" AND {scoped.alarm_is('a.alarm_id', scope, params)}"
        rows = self._query(
            f"SELECT {_ALARM_VIEW.select}{self._ALARM_FROM} WHERE a.alarm_id = :aid{mine}",
            params,
        )
        return _ALARM_VIEW(rows[0]) if rows else None

    def _pump_alarms(self, cur: Cursor, now_ms: int, limit: int) -> int:
        rows = self._run(
            cur,
            "SELECT e.id, e.gateway_id, e.device, e.point, e.alarm_type, e.alarm_id, e.severity,"
            " e.state, e.ts_ms, e.value, e.limit_value, e.message, e.ack_by, e.ack_note,"
            " e.historical, b.asset, e.pos_rank, e.pos_seq, e.pos_idx, e.received_ms, e.origin"
            " FROM alarm_events e LEFT JOIN device_assets b"
            " ON b.gateway_id = e.gateway_id AND b.device = e.device"
            " WHERE NOT e.evented ORDER BY e.id LIMIT :n",
            {"n": limit},
        )
        for r in rows:
            p: dict[str, Any] = {
                "gw": r[1],
                "dev": r[2],
                "pt": r[3],
                "type": r[4],
                "aid": r[5],
                "sev": r[6],
                "state": r[7],
                "ts": r[8],
                "val": r[9],
                "lim": r[10],
                "msg": r[11],
                "by": r[12],
                "note": r[13],
                "r": r[16],
                "s": r[17],
                "i": r[18],
                "recv": r[19],
            }
            # An occurrence's state follows its gateway's order of events: a transition that
            # arrived after a newer one of the same alarm changes nothing and is not announced.
            self._run(
                cur,
                "INSERT INTO alarm_index (alarm_id, gateway_id, device, point, alarm_type,"
                " severity, state, raised_ms, state_ms, value, limit_value, message, ack_by,"
                " ack_note, pos_rank, pos_seq, pos_idx, received_ms) VALUES (:aid, :gw, :dev,"
                " :pt, :type, :sev, :state, :ts, :ts, :val, :lim, :msg, :by, :note, :r, :s, :i,"
                " :recv)"
                " ON CONFLICT (alarm_id) DO UPDATE SET severity = :sev, state = :state,"
                " state_ms = :ts, value = :val, message = :msg,"
                " ack_by = COALESCE(CAST(:by AS TEXT), alarm_index.ack_by),"
                " ack_note = COALESCE(CAST(:note AS TEXT), alarm_index.ack_note),"
                " pos_rank = :r, pos_seq = :s, pos_idx = :i, received_ms = :recv"
                " WHERE alarm_index.pos_rank IS NULL OR CAST(:r AS BIGINT) IS NULL"
                " OR alarm_index.pos_rank < :r OR (alarm_index.pos_rank = :r"
                " AND (alarm_index.pos_seq < :s"
                " OR (alarm_index.pos_seq = :s AND alarm_index.pos_idx <= :i)))",
                p,
            )
            if cur.rowcount == 1:
                data = {
                    "alarm_id": r[5],
                    "gateway": r[1],
                    "device": r[2],
                    "point": r[3],
                    "alarm_type": r[4],
                    "severity": r[6],
                    "state": r[7],
                    "ts_ms": r[8],
                    "value": json.loads(r[9]),
                    "limit": json.loads(r[10]),
                    "message": r[11],
                    "ack_by": r[12],
                    "ack_note": r[13],
                    "historical": bool(r[14]),
                    "asset": r[15],
                    "received_ms": r[19],
                    "origin": r[20],
                }
                etype = ALARM_EVENT_TYPES.get(r[7], "alarm.raised")
                self._log_event(cur, etype, r[8], now_ms, r[5], data)
            self._run(cur, "UPDATE alarm_events SET evented = TRUE WHERE id = :id", {"id": r[0]})
        return len(rows)
