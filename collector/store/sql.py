"""Store logic shared by the SQL backends; subclasses supply connections and the readings hot path.

Shared SQL uses `:name` parameters (sqlite3 style); the PostgreSQL backend rewrites them.
"""

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from collector.assets import Asset
from collector.cases.workflow import Audit, Case, CaseState
from collector.models import (
    Accepted,
    AlarmRecord,
    AlarmTransition,
    DeadLetter,
    DeviceState,
    GatewayState,
    Incoming,
    Rejected,
    Status,
    WriteResult,
)
from collector.store.base import Conflict
from wire import (
    AlarmBatch,
    AlarmEvent,
    AlarmState,
    Birth,
    CommandReply,
    DataBatch,
    Death,
    DeviceEventBatch,
)
from wire import Status as StatusMsg
from wire.messages import Value

# A reading row as the backends insert it.
ReadingRow = tuple[str, str, str, int, int, float | None, str | None, str, bool]

V_NULL, V_BOOL, V_INT, V_FLOAT, V_STR = 0, 1, 2, 3, 4
_EXACT_FLOAT_INT = 2**53
ACTIVE_STATES = (AlarmState.ACTIVE_UNACKED.value, AlarmState.ACTIVE_ACKED.value)
FINISHED_STATES = (CaseState.CLOSED.value, CaseState.VOIDED.value)


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


class Cursor(Protocol):
    """The slice of a DB-API cursor the shared code uses."""

    def execute(self, sql: Any, params: Any = ..., /) -> Any:
        """Run one statement."""
        ...

    def executemany(self, sql: Any, params_seq: Any, /) -> Any:
        """Run one statement for many parameter sets."""
        ...

    def fetchall(self) -> list[Any]:
        """Rows of the last statement."""
        ...

    @property
    def description(self) -> Any:
        """Result columns of the last statement, None if it returned no rows."""
        ...

    @property
    def rowcount(self) -> int:
        """Rows touched by the last statement."""
        ...


class SqlStore(ABC):
    """Everything but connections, migrations and the readings hot path."""

    # --- what a backend provides ------------------------------------------------------------

    @abstractmethod
    def _tx(self) -> AbstractContextManager[Cursor]:
        """A cursor inside one transaction, committed on normal exit."""

    @abstractmethod
    def _sql(self, sql: str) -> str:
        """Translate shared `:name` SQL to the driver's parameter style."""

    @abstractmethod
    def _claim_keys(
        self, cur: Cursor, keys: list[tuple[str, int]], now_ms: int
    ) -> set[tuple[str, int]]:
        """Insert durable keys, returning those not seen before."""

    @abstractmethod
    def _insert_readings(self, cur: Cursor, rows: list[ReadingRow]) -> None:
        """Bulk-insert readings inside the batch transaction."""

    def _run(self, cur: Cursor, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        cur.execute(self._sql(sql), params or {})
        return cur.fetchall() if cur.description is not None else []

    def _query(self, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        with self._tx() as cur:
            return self._run(cur, sql, params)

    # --- ingest -------------------------------------------------------------------------------

    def write(self, items: Sequence[Incoming], now_ms: int) -> WriteResult:
        """Commit a batch in one transaction, ignoring durable keys (gateway, seq) already seen."""
        keys = [
            (i.message.gateway, i.message.seq)
            for i in items
            if isinstance(i, Accepted)
            and isinstance(i.message, DataBatch | AlarmBatch | DeviceEventBatch)
        ]
        readings: list[ReadingRow] = []
        dead = dupes = alarm_events = 0
        with self._tx() as cur:
            fresh = self._claim_keys(cur, list(dict.fromkeys(keys)), now_ms) if keys else set()
            for item in items:
                if isinstance(item, Rejected):
                    self._dead_letter(cur, item)
                    dead += 1
                    continue
                msg = item.message
                if isinstance(msg, DataBatch | AlarmBatch | DeviceEventBatch):
                    key = (msg.gateway, msg.seq)
                    if key not in fresh:
                        dupes += 1
                        continue
                    fresh.discard(key)  # a second copy in this very batch is a duplicate too
                if isinstance(msg, DataBatch):
                    readings.extend(self._reading_rows(msg))
                elif isinstance(msg, AlarmBatch):
                    for ev in msg.events:
                        self._alarm_event(cur, msg.gateway, ev)
                    alarm_events += len(msg.events)
                elif isinstance(msg, DeviceEventBatch):
                    for dev_ev in msg.events:
                        status = Status.ONLINE if dev_ev.online else Status.OFFLINE
                        self._device_status(
                            cur, msg.gateway, dev_ev.device, status, dev_ev.ts_ms, dev_ev.reason
                        )
                elif isinstance(msg, Birth):
                    self._birth(cur, item.topic.site, msg)
                elif isinstance(msg, Death):
                    self._death(cur, item.topic.site, msg, now_ms)
                elif isinstance(msg, StatusMsg):
                    self._status(cur, item.topic.site, msg)
                elif isinstance(msg, CommandReply):
                    self._command_reply(cur, msg, now_ms)
            if readings:
                self._insert_readings(cur, readings)
        return WriteResult(len(readings), dupes, dead, alarm_events)

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

    def _alarm_event(self, cur: Cursor, gateway: str, ev: AlarmEvent) -> None:
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
        }
        self._run(
            cur,
            "INSERT INTO alarm_events (gateway_id, device, point, alarm_type, alarm_id, severity,"
            " state, ts_ms, value, limit_value, message, ack_by, ack_note, historical, handled)"
            " VALUES (:gw, :dev, :pt, :type, :aid, :sev, :state, :ts, :val, :lim, :msg, :by, :note,"
            " :hist, FALSE)",
            p,
        )
        rows = self._run(
            cur,
            "SELECT alarm_id, state_ms FROM alarms WHERE gateway_id = :gw AND device = :dev"
            " AND point = :pt AND alarm_type = :type",
            p,
        )
        active = ev.state.value in ACTIVE_STATES
        if not rows:
            self._run(
                cur,
                "INSERT INTO alarms (gateway_id, device, point, alarm_type, alarm_id, severity,"
                " state, count, first_ms, last_ms, state_ms, value, limit_value, message, ack_by,"
                " ack_note)"
                " VALUES (:gw, :dev, :pt, :type, :aid, :sev, :state, :cnt, :ts, :ts, :ts, :val,"
                " :lim, :msg, :by, :note)",
                {**p, "cnt": 1 if active else 0},
            )
            return
        prev_id, prev_ms = rows[0]
        if ev.ts_ms < prev_ms:
            return  # an older transition replayed late: the stored state is newer
        new_activation = active and prev_id != ev.alarm_id
        self._run(
            cur,
            "UPDATE alarms SET alarm_id = :aid, severity = :sev, state = :state, state_ms = :ts,"
            " count = count + :inc, last_ms = CASE WHEN :inc = 1 THEN :ts ELSE last_ms END,"
            " value = :val, limit_value = :lim, message = :msg, ack_by = :by, ack_note = :note"
            " WHERE gateway_id = :gw AND device = :dev AND point = :pt AND alarm_type = :type",
            {**p, "inc": 1 if new_activation else 0},
        )

    def _device_status(
        self, cur: Cursor, gateway: str, device: str, status: Status, ts_ms: int, reason: str
    ) -> None:
        p = {"dev": device, "gw": gateway, "st": status.value, "ts": ts_ms, "why": reason}
        rows = self._run(cur, "SELECT status, since_ms FROM devices WHERE device = :dev", p)
        if not rows:
            self._run(
                cur,
                "INSERT INTO devices (device, gateway_id, profile, family, status, since_ms,"
                " reason) VALUES (:dev, :gw, '', '', :st, :ts, :why)",
                p,
            )
        elif rows[0][0] != status.value and ts_ms >= rows[0][1]:
            self._run(
                cur,
                "UPDATE devices SET gateway_id = :gw, status = :st, since_ms = :ts, reason = :why"
                " WHERE device = :dev",
                p,
            )
        else:
            return
        self._log_status(cur, "device", device, status, ts_ms, reason)

    def _log_status(
        self, cur: Cursor, entity: str, ident: str, status: Status, ts_ms: int, reason: str
    ) -> None:
        self._run(
            cur,
            "INSERT INTO status_log (entity, ident, status, ts_ms, reason)"
            " VALUES (:e, :i, :s, :ts, :why)",
            {"e": entity, "i": ident, "s": status.value, "ts": ts_ms, "why": reason},
        )

    def _gateway_row(self, cur: Cursor, gateway: str) -> tuple[str, int, str] | None:
        rows = self._run(
            cur,
            "SELECT status, since_ms, session FROM gateways WHERE gateway_id = :gw",
            {"gw": gateway},
        )
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def _birth(self, cur: Cursor, site: str, msg: Birth) -> None:
        prev = self._gateway_row(cur, msg.gateway)
        if prev is not None and (
            (prev[2] == msg.session and prev[0] == Status.ONLINE.value) or msg.sent_ms < prev[1]
        ):
            return  # a retained birth seen again, or one older than what we know
        self._run(
            cur,
            "INSERT INTO gateways (gateway_id, site, status, since_ms, session, software,"
            " config_hash, reason, counters, counters_ms)"
            " VALUES (:gw, :site, 'online', :ts, :sess, :sw, :ch, 'birth', '{}', NULL)"
            " ON CONFLICT (gateway_id) DO UPDATE SET site = :site, status = 'online',"
            " since_ms = :ts, session = :sess, software = :sw, config_hash = :ch, reason = 'birth'",
            {
                "gw": msg.gateway,
                "site": site,
                "ts": msg.sent_ms,
                "sess": msg.session,
                "sw": msg.software,
                "ch": msg.config_hash,
            },
        )
        self._log_status(cur, "gateway", msg.gateway, Status.ONLINE, msg.sent_ms, "birth")
        for d in msg.devices:
            self._run(
                cur,
                "INSERT INTO devices (device, gateway_id, profile, family, status, since_ms,"
                " reason) VALUES (:dev, :gw, :prof, :fam, 'unknown', 0, '')"
                " ON CONFLICT (device) DO UPDATE SET gateway_id = :gw, profile = :prof,"
                " family = :fam",
                {"dev": d.device, "gw": msg.gateway, "prof": d.profile, "fam": d.family},
            )
            status = Status.ONLINE if d.online else Status.OFFLINE
            self._device_status(cur, msg.gateway, d.device, status, msg.sent_ms, "birth")
            if d.asset:
                self._bind(cur, d.device, d.asset)

    def _death(self, cur: Cursor, site: str, msg: Death, now_ms: int) -> None:
        prev = self._gateway_row(cur, msg.gateway)
        if prev is not None and (prev[2] != msg.session or prev[0] == Status.OFFLINE.value):
            return  # the death of an older session, or one we already applied
        # A last will is built at connect time, so its sent time is not the time of death.
        ts = max(msg.sent_ms, now_ms)
        self._run(
            cur,
            "INSERT INTO gateways (gateway_id, site, status, since_ms, session, software,"
            " config_hash, reason, counters, counters_ms)"
            " VALUES (:gw, :site, 'offline', :ts, :sess, '', '', :why, '{}', NULL)"
            " ON CONFLICT (gateway_id) DO UPDATE SET status = 'offline', since_ms = :ts,"
            " reason = :why",
            {"gw": msg.gateway, "site": site, "ts": ts, "sess": msg.session, "why": msg.reason},
        )
        self._log_status(cur, "gateway", msg.gateway, Status.OFFLINE, ts, msg.reason)
        devices = self._run(
            cur,
            "SELECT device FROM devices WHERE gateway_id = :gw AND status <> 'unknown'",
            {"gw": msg.gateway},
        )
        for (device,) in devices:
            self._device_status(cur, msg.gateway, device, Status.UNKNOWN, ts, "gateway offline")

    def _status(self, cur: Cursor, site: str, msg: StatusMsg) -> None:
        p = {"gw": msg.gateway, "site": site, "c": json.dumps(msg.counters), "ts": msg.sent_ms}
        self._run(
            cur,
            "INSERT INTO gateways (gateway_id, site, status, since_ms, session, software,"
            " config_hash, reason, counters, counters_ms)"
            " VALUES (:gw, :site, 'unknown', 0, '', '', '', '', :c, :ts)"
            " ON CONFLICT (gateway_id) DO UPDATE SET counters = :c, counters_ms = :ts"
            " WHERE gateways.counters_ms IS NULL OR gateways.counters_ms <= :ts",
            p,
        )

    def _command_reply(self, cur: Cursor, msg: CommandReply, now_ms: int) -> None:
        self._run(
            cur,
            "INSERT INTO command_replies (gateway_id, command_id, ok, result, error, sent_ms,"
            " received_ms) VALUES (:gw, :id, :ok, :res, :err, :sent, :now)"
            " ON CONFLICT (gateway_id, command_id) DO NOTHING",
            {
                "gw": msg.gateway,
                "id": msg.command_id,
                "ok": msg.ok,
                "res": json.dumps(msg.result),
                "err": msg.error,
                "sent": msg.sent_ms,
                "now": now_ms,
            },
        )

    # --- reads --------------------------------------------------------------------------------

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

    def gateways(self) -> list[GatewayState]:
        """All known gateways."""
        rows = self._query(
            "SELECT gateway_id, site, status, since_ms, session, software, config_hash, reason,"
            " counters, counters_ms FROM gateways ORDER BY gateway_id"
        )
        return [
            GatewayState(
                r[0], r[1], Status(r[2]), r[3], r[4], r[5], r[6], r[7], json.loads(r[8]), r[9]
            )
            for r in rows
        ]

    def devices(self, gateway: str | None = None) -> list[DeviceState]:
        """All known devices, optionally of one gateway."""
        rows = self._query(
            "SELECT d.device, d.gateway_id, d.profile, d.family, b.asset, d.status, d.since_ms,"
            " d.reason FROM devices d LEFT JOIN device_assets b ON b.device = d.device"
            " WHERE (CAST(:gw AS TEXT) IS NULL OR d.gateway_id = :gw) ORDER BY d.device",
            {"gw": gateway},
        )
        return [DeviceState(r[0], r[1], r[2], r[3], r[4], Status(r[5]), r[6], r[7]) for r in rows]

    def alarms(self, active_only: bool = False) -> list[AlarmRecord]:
        """Deduplicated alarms, newest first."""
        rows = self._query(
            "SELECT gateway_id, device, point, alarm_type, alarm_id, severity, state, count,"
            " first_ms, last_ms, state_ms, value, limit_value, message, ack_by, ack_note"
            " FROM alarms WHERE (:all_ OR state IN ('active_unacked', 'active_acked'))"
            " ORDER BY state_ms DESC",
            {"all_": not active_only},
        )
        return [
            AlarmRecord(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                r[7],
                r[8],
                r[9],
                r[10],
                json.loads(r[11]),
                json.loads(r[12]),
                r[13],
                r[14],
                r[15],
            )
            for r in rows
        ]

    # --- assets -------------------------------------------------------------------------------

    def _bind(self, cur: Cursor, device: str, asset: str) -> None:
        self._run(
            cur,
            "INSERT INTO device_assets (device, asset) VALUES (:dev, :asset)"
            " ON CONFLICT (device) DO UPDATE SET asset = :asset",
            {"dev": device, "asset": asset},
        )

    def bind_device(self, device: str, asset: str) -> None:
        """Bind a device to an asset (replacing any earlier binding)."""
        with self._tx() as cur:
            self._bind(cur, device, asset)

    def upsert_assets(self, assets: Sequence[Asset]) -> int:
        """Insert or replace assets and bind their listed devices; return how many."""
        with self._tx() as cur:
            for a in assets:
                doc = a.model_dump_json()
                self._run(
                    cur,
                    "INSERT INTO assets (code, subcategory, owner, maintainer, grid, doc)"
                    " VALUES (:code, :sub, :owner, :maint, :grid, :doc)"
                    " ON CONFLICT (code) DO UPDATE SET subcategory = :sub, owner = :owner,"
                    " maintainer = :maint, grid = :grid, doc = :doc",
                    {
                        "code": a.code,
                        "sub": a.subcategory,
                        "owner": a.owner,
                        "maint": a.maintainer,
                        "grid": a.grid,
                        "doc": doc,
                    },
                )
                for device in a.devices:
                    self._bind(cur, device, a.code)
        return len(assets)

    def assets(self) -> list[Asset]:
        """All assets ordered by code."""
        rows = self._query("SELECT doc FROM assets ORDER BY code")
        return [Asset.model_validate_json(r[0]) for r in rows]

    def asset_of_device(self, device: str) -> Asset | None:
        """The asset a device is bound to, if any."""
        rows = self._query(
            "SELECT a.doc FROM device_assets b JOIN assets a ON a.code = b.asset"
            " WHERE b.device = :dev",
            {"dev": device},
        )
        return Asset.model_validate_json(rows[0][0]) if rows else None

    # --- cases --------------------------------------------------------------------------------

    def pending_alarm_transitions(self, limit: int = 500) -> list[AlarmTransition]:
        """Stored alarm events the case engine has not handled yet, oldest first."""
        rows = self._query(
            "SELECT id, gateway_id, device, point, alarm_type, alarm_id, severity, state, ts_ms,"
            " value, message FROM alarm_events WHERE handled = FALSE ORDER BY id LIMIT :n",
            {"n": limit},
        )
        return [
            AlarmTransition(
                r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], json.loads(r[9]), r[10]
            )
            for r in rows
        ]

    def mark_transitions_handled(self, ids: Sequence[int]) -> None:
        """Record that the case engine handled these alarm events."""
        with self._tx() as cur:
            self._mark(cur, ids)

    def _mark(self, cur: Cursor, ids: Sequence[int]) -> None:
        for i in ids:
            self._run(cur, "UPDATE alarm_events SET handled = TRUE WHERE id = :id", {"id": i})

    def next_case_serial(self, prefix: str) -> int:
        """Allocate the next serial for case numbers starting with `prefix` (1, 2, ...)."""
        with self._tx() as cur:
            rows = self._run(
                cur,
                "INSERT INTO case_serials (prefix, last) VALUES (:p, 1)"
                " ON CONFLICT (prefix) DO UPDATE SET last = case_serials.last + 1 RETURNING last",
                {"p": prefix},
            )
        return int(rows[0][0])

    _CASE_COLS = (
        "case_no, kind, subcategory, problem, asset, device, state, urgency, department, grid,"
        " created_ms, updated_ms, deadline_ms, timed_from_ms, repeats, escalations, title"
    )

    @staticmethod
    def _case(r: Sequence[Any]) -> Case:
        return Case(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            CaseState(r[6]),
            r[7],
            r[8],
            r[9],
            r[10],
            r[11],
            r[12],
            r[13],
            r[14],
            r[15],
            r[16],
        )

    def open_case_for(self, subject: str, problem: str) -> Case | None:
        """The open case for (asset or device, problem), if there is one."""
        rows = self._query(
            f"SELECT {self._CASE_COLS} FROM cases"  # noqa: S608 - constant column list
            " WHERE subject = :s AND problem = :p"
            " AND state NOT IN ('结案', '作废')",
            {"s": subject, "p": problem},
        )
        return self._case(rows[0]) if rows else None

    def save_case(
        self,
        case: Case,
        audits: Sequence[Audit],
        *,
        expect_state: str | None,
        transition_ids: Sequence[int] = (),
    ) -> None:
        """Insert (expect_state None) or update a case, its audits and handled events atomically.

        Raises Conflict if the stored case is no longer in `expect_state`.
        """
        p: dict[str, Any] = {
            "no": case.case_no,
            "kind": case.kind,
            "sub": case.subcategory,
            "problem": case.problem,
            "asset": case.asset,
            "device": case.device,
            "subject": case.asset or case.device or case.case_no,
            "state": case.state.value,
            "urg": case.urgency,
            "dept": case.department,
            "grid": case.grid,
            "created": case.created_ms,
            "updated": case.updated_ms,
            "deadline": case.deadline_ms,
            "timed": case.timed_from_ms,
            "rep": case.repeats,
            "esc": case.escalations,
            "title": case.title,
            "expect": expect_state,
        }
        with self._tx() as cur:
            if expect_state is None:
                self._run(
                    cur,
                    f"INSERT INTO cases ({self._CASE_COLS}, subject)"  # noqa: S608 - constant
                    " VALUES (:no, :kind, :sub,"
                    " :problem, :asset, :device, :state, :urg, :dept, :grid, :created, :updated,"
                    " :deadline, :timed, :rep, :esc, :title, :subject)",
                    p,
                )
            else:
                self._run(
                    cur,
                    "UPDATE cases SET state = :state, urgency = :urg, department = :dept,"
                    " updated_ms = :updated, deadline_ms = :deadline, timed_from_ms = :timed,"
                    " repeats = :rep, escalations = :esc WHERE case_no = :no AND state = :expect",
                    p,
                )
                if cur.rowcount != 1:
                    raise Conflict(f"case {case.case_no} is no longer in state {expect_state}")
            for a in audits:
                self._run(
                    cur,
                    "INSERT INTO case_audit (case_no, ts_ms, actor, action, from_state, to_state,"
                    " note) VALUES (:no, :ts, :actor, :action, :from, :to, :note)",
                    {
                        "no": a.case_no,
                        "ts": a.ts_ms,
                        "actor": a.actor,
                        "action": a.action,
                        "from": a.from_state,
                        "to": a.to_state,
                        "note": a.note,
                    },
                )
            for i in transition_ids:
                self._run(
                    cur,
                    "INSERT INTO case_alarms (case_no, alarm_event_id) VALUES (:no, :id)",
                    {"no": case.case_no, "id": i},
                )
            self._mark(cur, transition_ids)

    def case(self, case_no: str) -> Case | None:
        """One case by number."""
        rows = self._query(
            f"SELECT {self._CASE_COLS} FROM cases WHERE case_no = :no",  # noqa: S608 - constant
            {"no": case_no},
        )
        return self._case(rows[0]) if rows else None

    def cases(self, open_only: bool = False) -> list[Case]:
        """Cases, newest first."""
        rows = self._query(
            f"SELECT {self._CASE_COLS} FROM cases"  # noqa: S608 - constant column list
            " WHERE (:all_ OR state NOT IN ('结案', '作废'))"
            " ORDER BY created_ms DESC, case_no DESC",
            {"all_": not open_only},
        )
        return [self._case(r) for r in rows]

    def audit(self, case_no: str) -> list[Audit]:
        """The audit trail of a case, oldest first."""
        rows = self._query(
            "SELECT case_no, ts_ms, actor, action, from_state, to_state, note FROM case_audit"
            " WHERE case_no = :no ORDER BY id",
            {"no": case_no},
        )
        return [Audit(*r) for r in rows]
