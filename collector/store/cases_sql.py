"""Store logic for cases, work orders and alarm links, shared by the SQL backends.

A mixin of SqlStore: it uses the store's transactions (`_tx`, `_run`, `_query`) and event log
(`_log_event`), declared in Rows. Shared SQL uses `:name` parameters (sqlite3 style); the
PostgreSQL backend rewrites them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from lifeline.collector.cases.phases import Phase, Stage
from lifeline.collector.cases.workflow import TIMED_STATES, Audit, Case, CaseState, Place
from lifeline.collector.cases.workorders import WorkOrder, WorkOrderState
from lifeline.collector.errors import Conflict
from lifeline.collector.models import AlarmLink, AlarmTransition, ReportClaim
from lifeline.collector.stats import NO_CASE, NO_GRID, Counts
from lifeline.collector.store import scope_sql as scoped
from lifeline.collector.store.rows import Col, Cursor, RowMap, Rows, json_tuple, sql_values

# An audit action of a case and the event it becomes (everything else: case.transition).
CASE_EVENT_TYPES = {"report": "case.opened", "upgrade": "case.upgraded", "rework": "case.reworked"}
# The group expression of a statistic, by name: constant SQL, never input.
_GROUP_SQL = {
    "department": "c.department",
    "grid": f"COALESCE(c.grid, '{NO_GRID}')",
    "subcategory": "c.subcategory",
    "source": "c.source",
}
# The case record's time of each action a case takes at most once (migration 22): the case
# figures of the statistics read these instead of the audit trail. A case is dispatched again
# only after a 回退, so its first 派遣 is the only one that can be 准确.
_RECORDED_AT = {
    "accept": "registered_ms = :ts",
    "dispatch": "dispatched_ms = COALESCE(dispatched_ms, :ts)",
    "close": "closed_ms = :ts",
    "auto_close": "auto_closed_ms = :ts",
    "void": "voided_ms = :ts",
}
_FINISHED = sql_values(CaseState.CLOSED, CaseState.VOIDED)
_TIMED = sql_values(*sorted(TIMED_STATES))
_CLOSED = sql_values(CaseState.CLOSED)


def _or(default: str) -> Col:
    """A text column read as `default` when NULL or empty."""
    return Col(lambda text: text or default)


# Where a case or work order is: columns of its own row.
_PLACE = RowMap(
    Place, datum=_or(""), address=_or(""), source=Col(lambda s: s or "none", "location_source")
)
_CASE = RowMap(
    Case,
    state=Col(CaseState),
    gateway="gateway_id",
    assist=Col(json_tuple),
    location=_PLACE,
)
_WORK_ORDER = RowMap(WorkOrder, state=Col(WorkOrderState), gateway="gateway_id", location=_PLACE)
_PHASE = RowMap(Phase)
_TRANSITION = RowMap(
    AlarmTransition,
    gateway="gateway_id",
    value=Col(json.loads),
    limit=Col(json.loads, "limit_value"),
)
_LINK = RowMap(
    AlarmLink, gateway="gateway_id", value=Col(json.loads), limit=Col(json.loads, "limit_value")
)
_CASE_AUDIT = RowMap(Audit, role="key_role")
_WORK_ORDER_AUDIT = RowMap(Audit, case_no="order_no", role="key_role")


def _place_params(place: Place) -> dict[str, Any]:
    return {
        "lon": place.lon,
        "lat": place.lat,
        "datum": place.datum,
        "addr": place.address,
        "src": place.source,
    }


class CaseRows(Rows):
    """Cases, work orders, and the alarm links that tie alarm occurrences to them."""

    # --- alarm transitions and links ----------------------------------------------------------

    def pending_alarm_transitions(self, limit: int = 500) -> list[AlarmTransition]:
        """Stored alarm events the case engine has not handled yet, oldest first."""
        rows = self._query(
            f"SELECT {_TRANSITION.select} FROM alarm_events"  # noqa: S608 - constant columns
            " WHERE handled = FALSE ORDER BY id LIMIT :n",
            {"n": limit},
        )
        return [_TRANSITION(r) for r in rows]

    def mark_transitions_handled(
        self, ids: Sequence[int], cleared: Sequence[tuple[str, int]] = ()
    ) -> None:
        """Record that the case engine handled these alarm events, and that the alarm ids of
        `cleared` cleared at the given times (ms)."""
        with self._tx() as cur:
            self._clear(cur, cleared)
            self._mark(cur, ids)

    def _mark(self, cur: Cursor, ids: Sequence[int]) -> None:
        for i in ids:
            self._run(cur, "UPDATE alarm_events SET handled = TRUE WHERE id = :id", {"id": i})

    def _clear(self, cur: Cursor, cleared: Sequence[tuple[str, int]]) -> None:
        # Only an alarm id's latest activation can still be active.
        for alarm_id, ts_ms in cleared:
            self._run(
                cur,
                "UPDATE alarm_links SET cleared_ms = :ts WHERE alarm_id = :aid"
                " AND cleared_ms IS NULL",
                {"aid": alarm_id, "ts": ts_ms},
            )

    def _link(self, cur: Cursor, links: Sequence[AlarmLink]) -> None:
        """Insert links; Conflict if an alarm id already belongs somewhere (another collector
        handled it first: the whole transaction is undone and the caller looks again)."""
        for k in links:
            self._run(
                cur,
                "INSERT INTO alarm_links (alarm_id, activation, gateway_id, device, point,"
                " alarm_type, severity, value, limit_value, unit, raised_ms, message, outcome,"
                " ref, reason, decided_ms, cleared_ms) VALUES (:aid, :act, :gw, :dev, :pt, :type,"
                " :sev, :val, :lim, :unit, :raised, :msg, :outcome, :ref, :reason, :decided,"
                " :cleared) ON CONFLICT (alarm_id, activation) DO NOTHING",
                {
                    "aid": k.alarm_id,
                    "act": k.activation,
                    "gw": k.gateway,
                    "dev": k.device,
                    "pt": k.point,
                    "type": k.alarm_type,
                    "sev": k.severity,
                    "val": json.dumps(k.value),
                    "lim": json.dumps(k.limit),
                    "unit": k.unit,
                    "raised": k.raised_ms,
                    "msg": k.message,
                    "outcome": k.outcome,
                    "ref": k.ref,
                    "reason": k.reason,
                    "decided": k.decided_ms,
                    "cleared": k.cleared_ms,
                },
            )
            if cur.rowcount != 1:
                raise Conflict(f"alarm {k.alarm_id} was handled meanwhile")

    def link(self, alarm_id: str) -> AlarmLink | None:
        """Where the latest occurrence (activation) of an alarm id ended, if the engine has
        handled it."""
        rows = self._query(
            f"SELECT {_LINK.select} FROM alarm_links WHERE alarm_id = :aid"  # noqa: S608
            " ORDER BY activation DESC LIMIT 1",
            {"aid": alarm_id},
        )
        return _LINK(rows[0]) if rows else None

    def links(self, ref: str) -> list[AlarmLink]:
        """The alarm occurrences of one case or work order, in the order they were attached."""
        rows = self._query(
            f"SELECT {_LINK.select} FROM alarm_links WHERE ref = :ref"  # noqa: S608
            " ORDER BY decided_ms, raised_ms, alarm_id, activation",
            {"ref": ref},
        )
        return [_LINK(r) for r in rows]

    def links_for(self, refs: Sequence[str]) -> dict[str, list[AlarmLink]]:
        """The alarm occurrences of several cases or work orders, by number."""
        out: dict[str, list[AlarmLink]] = {}
        if not refs:
            return out
        params = {f"r{i}": r for i, r in enumerate(refs)}
        rows = self._query(
            f"SELECT {_LINK.select} FROM alarm_links WHERE ref IN"  # noqa: S608 - placeholders
            f" ({', '.join(':' + k for k in params)})"
            " ORDER BY decided_ms, raised_ms, alarm_id, activation",
            params,
        )
        for r in rows:
            link = _LINK(r)
            out.setdefault(link.ref or "", []).append(link)
        return out

    def record_outcome(self, link: AlarmLink, transition_ids: Sequence[int]) -> None:
        """Store an occurrence that became no case nor work order (ignored or recorded) and
        mark its transitions handled, atomically; Conflict if it was handled meanwhile."""
        with self._tx() as cur:
            self._link(cur, [link])
            self._mark(cur, transition_ids)

    def count_alarm_outcomes(self) -> dict[str, int]:
        """How many alarm occurrences ended in each outcome (case, work_order, ...)."""
        rows = self._query("SELECT outcome, count(*) FROM alarm_links GROUP BY outcome")
        return {r[0]: int(r[1]) for r in rows}

    # --- cases --------------------------------------------------------------------------------

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

    def case_by_token(self, token: str) -> Case | None:
        """The case an Open311 POST created and answered with this token, if any."""
        rows = self._query(
            f"SELECT {_CASE.select} FROM cases WHERE token = :t",  # noqa: S608 - constant
            {"t": token},
        )
        return _CASE(rows[0]) if rows else None

    def open_case_for(self, subject: str, problem: str) -> Case | None:
        """The open case for (asset or device, problem), if there is one."""
        rows = self._query(
            f"SELECT {_CASE.select} FROM cases"  # noqa: S608 - constant column list
            f" WHERE subject = :s AND problem = :p AND state NOT IN {_FINISHED}",
            {"s": subject, "p": problem},
        )
        return _CASE(rows[0]) if rows else None

    def last_closed_case_for(self, subject: str, problem: str) -> Case | None:
        """The most recently closed (结案) case for (asset or device, problem), if any."""
        rows = self._query(
            f"SELECT {_CASE.select} FROM cases"  # noqa: S608 - constant column list
            f" WHERE subject = :s AND problem = :p AND state IN {_CLOSED}"
            " ORDER BY updated_ms DESC, case_no DESC LIMIT 1",
            {"s": subject, "p": problem},
        )
        return _CASE(rows[0]) if rows else None

    def save_case(
        self,
        case: Case,
        audits: Sequence[Audit],
        *,
        expect_state: str | None,
        transition_ids: Sequence[int] = (),
        links: Sequence[AlarmLink] = (),
        cleared: Sequence[tuple[str, int]] = (),
        phases: Sequence[Phase] = (),
        claims: Sequence[ReportClaim] = (),
    ) -> None:
        """Insert (expect_state None) or update a case with its audits, the alarm occurrences
        it takes (`links`), the ones that cleared, the handled events, its new or changed
        `phases` and the reporting client's ids for it (`claims`), atomically.

        An update saves only over the row `case` was read from: the stored row must still be
        in `expect_state` and at `case.version` (each save adds one to it), so two
        read-modify-writes of one case never lose one of them (optimistic locking; the same
        on SQLite and PostgreSQL, whose UPDATE waits for a concurrent writer's row lock and
        then sees its new version).

        Raises Conflict if the stored case is no longer in `expect_state` or at
        `case.version`, an alarm of `links` already belongs elsewhere, or a claim's id already
        names a case.
        """
        p: dict[str, Any] = {
            "no": case.case_no,
            "kind": case.kind,
            "sub": case.subcategory,
            "problem": case.problem,
            "asset": case.asset,
            "device": case.device,
            "subject": case.subject,
            "gw": case.gateway,
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
            "allowed": case.allowed_ms,
            "sev": case.severity,
            "assist": json.dumps(list(case.assist), ensure_ascii=False),
            "rew": case.reworks,
            "ret": case.returns,
            "closure": case.closure,
            "recur": case.recurrence_of,
            "remaining": case.remaining_ms,
            **_place_params(case.location),
            "pending": case.pending,
            "phours": case.pending_hours,
            "source": case.source,
            "vreason": case.void_reason,
            "media": case.media_url,
            "contact": case.contact,
            "confirmed": case.confirmed_by,
            "token": case.token,
            "recv_by": case.received_by,
            "recv_ms": case.received_ms,
            "reg_cond": case.register_condition,
            "close_cond": case.close_condition,
            "disposal": case.disposal_note,
            "check": case.check_result,
            "check_note": case.check_note,
            "check_media": case.check_media_url,
            "checked_by": case.checked_by,
            "checked_ms": case.checked_ms,
            "expect": expect_state,
            "ver": case.version,
        }
        with self._tx() as cur:
            if expect_state is None:
                self._run(
                    cur,
                    f"INSERT INTO cases ({_CASE.select}, subject)"  # noqa: S608 - constant
                    " VALUES (:no, :kind, :sub, :problem, :asset, :device, :state, :urg, :dept,"
                    " :grid, :created, :updated, :deadline, :timed, :rep, :esc, :title, :gw,"
                    " :allowed, :sev, :assist, :rew, :ret, :closure, :recur, :remaining, :lon,"
                    " :lat, :datum, :addr, :src, :pending, :phours, :source, :vreason, :media,"
                    " :contact, :confirmed, :recv_by, :recv_ms, :reg_cond, :close_cond,"
                    " :disposal, :check, :check_note, :check_media, :checked_by, :checked_ms,"
                    " :token, :ver, :subject)",
                    p,
                )
            else:
                self._run(
                    cur,
                    "UPDATE cases SET kind = :kind, subcategory = :sub, state = :state,"
                    " urgency = :urg, department = :dept, updated_ms = :updated,"
                    " deadline_ms = :deadline, timed_from_ms = :timed, repeats = :rep,"
                    " escalations = :esc, allowed_ms = :allowed, severity = :sev,"
                    " assist = :assist, reworks = :rew, returns = :ret, closure = :closure,"
                    " remaining_ms = :remaining, pending = :pending, pending_hours = :phours,"
                    " void_reason = :vreason, confirmed_by = :confirmed,"
                    " received_by = :recv_by, received_ms = :recv_ms,"
                    " register_condition = :reg_cond, close_condition = :close_cond,"
                    " disposal_note = :disposal, check_result = :check, check_note = :check_note,"
                    " check_media_url = :check_media, checked_by = :checked_by,"
                    " checked_ms = :checked_ms, version = version + 1"
                    " WHERE case_no = :no AND state = :expect AND version = :ver",
                    p,
                )
                if cur.rowcount != 1:
                    raise Conflict(
                        f"case {case.case_no} changed meanwhile (it was in state"
                        f" {expect_state}): the case changed, try again"
                    )
            for a in audits:
                self._audit_row(cur, "case_audit", "case_no", a)
                if a.action in _RECORDED_AT:
                    self._run(
                        cur,
                        f"UPDATE cases SET {_RECORDED_AT[a.action]}"  # noqa: S608 - constant
                        " WHERE case_no = :no",
                        {"no": case.case_no, "ts": a.ts_ms},
                    )
            self._claim(cur, case, claims)
            for ph in phases:
                self._phase_row(cur, ph)
            if any(
                ph.stage == Stage.DISPOSE and ph.end_ms is not None and ph.overdue(ph.end_ms)
                for ph in phases
            ):
                self._run(
                    cur,
                    "UPDATE cases SET late_disposal = TRUE WHERE case_no = :no",
                    {"no": case.case_no},
                )
            self._link(cur, links)
            self._clear(cur, cleared)
            for i in transition_ids:
                self._run(
                    cur,
                    "INSERT INTO case_alarms (case_no, alarm_event_id) VALUES (:no, :id)",
                    {"no": case.case_no, "id": i},
                )
            self._mark(cur, transition_ids)

    def _claim(self, cur: Cursor, case: Case, claims: Sequence[ReportClaim]) -> None:
        """Record the client's ids for `case`; Conflict if one names a case already (a retry
        that raced the first try: the whole transaction is undone and the caller looks again)."""
        for c in claims:
            self._run(
                cur,
                "INSERT INTO case_reports (scope, report_id, case_no, fingerprint, created_ms)"
                " VALUES (:scope, :id, :no, :fp, :ts) ON CONFLICT (scope, report_id) DO NOTHING",
                {"scope": c.scope, "id": c.report_id, "no": case.case_no,
                 "fp": c.fingerprint, "ts": case.created_ms},
            )  # fmt: skip
            if cur.rowcount != 1:
                raise Conflict(f"report {c.report_id} of {c.scope} is a case already")

    def reported_case(self, scope: str, report_id: str) -> tuple[str, str] | None:
        """The case number and fingerprint a client's report id (of `scope`) was stored with."""
        rows = self._query(
            "SELECT case_no, fingerprint FROM case_reports WHERE scope = :s AND report_id = :r",
            {"s": scope, "r": report_id},
        )
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    def _audit_row(self, cur: Cursor, table: str, key: str, a: Audit) -> None:
        self._run(
            cur,
            f"INSERT INTO {table} ({key}, ts_ms, actor, action, from_state, to_state, note,"  # noqa: S608 - constant names
            " key_id, key_role, on_behalf_of) VALUES (:no, :ts, :actor, :action, :from, :to,"
            " :note, :kid, :krole, :obo)",
            {
                "no": a.case_no,
                "ts": a.ts_ms,
                "actor": a.actor,
                "action": a.action,
                "from": a.from_state,
                "to": a.to_state,
                "note": a.note,
                "kid": a.key_id,
                "krole": a.role,
                "obo": a.on_behalf_of,
            },
        )

    def _phase_row(self, cur: Cursor, ph: Phase) -> None:
        self._run(
            cur,
            "INSERT INTO case_phases (case_no, seq, stage, department, start_ms, due_ms, unit,"
            " end_ms, parked_ms, parked_since_ms, left_ms, extended, escalated_due_ms) VALUES"
            " (:no, :seq, :stage, :dept, :start, :due, :unit, :end, :parked, :since, :left,"
            " :ext, :esc) ON CONFLICT (case_no, seq) DO UPDATE SET due_ms = :due, unit = :unit,"
            " end_ms = :end, parked_ms = :parked, parked_since_ms = :since, left_ms = :left,"
            " extended = :ext, escalated_due_ms = :esc",
            {
                "no": ph.case_no,
                "seq": ph.seq,
                "stage": ph.stage,
                "dept": ph.department,
                "start": ph.start_ms,
                "due": ph.due_ms,
                "unit": ph.unit,
                "end": ph.end_ms,
                "parked": ph.parked_ms,
                "since": ph.parked_since_ms,
                "left": ph.left_ms,
                "ext": ph.extended,
                "esc": ph.escalated_due_ms,
            },
        )

    def phases(self, case_no: str) -> list[Phase]:
        """The phase table of a case, in order."""
        rows = self._query(
            f"SELECT {_PHASE.select} FROM case_phases"  # noqa: S608 - constant column list
            " WHERE case_no = :no ORDER BY seq",
            {"no": case_no},
        )
        return [_PHASE(r) for r in rows]

    def overdue_phases(self, now_ms: int) -> list[Phase]:
        """Running, unparked phases past their due time and not escalated (督办) for it."""
        rows = self._query(
            f"SELECT {_PHASE.select} FROM case_phases"  # noqa: S608 - constant column list
            " WHERE end_ms IS NULL AND parked_since_ms IS NULL AND due_ms < :now"
            " AND (escalated_due_ms IS NULL OR escalated_due_ms <> due_ms)"
            " ORDER BY due_ms, case_no",
            {"now": now_ms},
        )
        return [_PHASE(r) for r in rows]

    def case(self, case_no: str) -> Case | None:
        """One case by number."""
        rows = self._query(
            f"SELECT {_CASE.select} FROM cases WHERE case_no = :no",  # noqa: S608 - constant
            {"no": case_no},
        )
        return _CASE(rows[0]) if rows else None

    def cases(self, open_only: bool = False) -> list[Case]:
        """Cases, newest first."""
        rows = self._query(
            f"SELECT {_CASE.select} FROM cases"  # noqa: S608 - constant column list
            f" WHERE (:all_ OR state NOT IN {_FINISHED})"
            " ORDER BY created_ms DESC, case_no DESC",
            {"all_": not open_only},
        )
        return [_CASE(r) for r in rows]

    def audit(self, case_no: str) -> list[Audit]:
        """The audit trail of a case, oldest first."""
        rows = self._query(
            f"SELECT {_CASE_AUDIT.select} FROM case_audit"  # noqa: S608 - constant columns
            " WHERE case_no = :no ORDER BY id",
            {"no": case_no},
        )
        return [_CASE_AUDIT(r) for r in rows]

    def find_cases(
        self,
        *,
        states: Sequence[str] = (),
        department: str | None = None,
        subcategory: str | None = None,
        subcategories: Sequence[str] = (),
        grid: str | None = None,
        created_from_ms: int | None = None,
        created_to_ms: int | None = None,
        overdue_at_ms: int | None = None,
        overdue: bool = True,
        before: tuple[int, str] | None = None,
        limit: int = 100,
        scope: Sequence[str] | None = None,
    ) -> list[Case]:
        """Cases matching every given filter, newest first, keyset-paged below `before`.

        With `subcategories`, keep only cases of one of these 小类; with `created_from_ms` /
        `created_to_ms`, only those reported in [from, to) (in the query, so a window is never
        cut short by the limit). With `overdue_at_ms`, keep only cases whose running deadline
        passed at that time (or, with overdue=False, only those it did not). With `scope`
        (department values), keep only cases whose 主办 or a 协办 is one of them (an empty scope
        keeps none).
        """
        params: dict[str, Any] = {
            "dept": department,
            "sub": subcategory,
            "grid": grid,
            "cf": created_from_ms,
            "ct": created_to_ms,
            "at": overdue_at_ms,
            "od": overdue,
            "bc": before[0] if before else None,
            "bn": before[1] if before else None,
            "n": limit,
        }
        where = ""
        if states:
            params.update({f"s{i}": s for i, s in enumerate(states)})
            where = " AND state IN (" + ", ".join(f":s{i}" for i in range(len(states))) + ")"
        if subcategories:
            params.update({f"c{i}": c for i, c in enumerate(subcategories)})
            where += (
                " AND subcategory IN ("
                + ", ".join(f":c{i}" for i in range(len(subcategories)))
                + ")"
            )
        if scope is not None:
            where += f" AND {scoped.case_in(scope, params)}"
        rows = self._query(
            f"SELECT {_CASE.select} FROM cases"  # noqa: S608 - placeholders only
            " WHERE (CAST(:dept AS TEXT) IS NULL OR department = :dept)"
            " AND (CAST(:sub AS TEXT) IS NULL OR subcategory = :sub)"
            " AND (CAST(:grid AS TEXT) IS NULL OR grid = :grid)"
            " AND (CAST(:cf AS BIGINT) IS NULL OR created_ms >= :cf)"
            " AND (CAST(:ct AS BIGINT) IS NULL OR created_ms < :ct)"
            f" AND (CAST(:at AS BIGINT) IS NULL OR (state IN {_TIMED}"
            " AND timed_from_ms IS NOT NULL AND deadline_ms < :at) = :od)"
            " AND (CAST(:bc AS BIGINT) IS NULL OR created_ms < :bc"
            " OR (created_ms = :bc AND case_no < :bn))"
            f"{where} ORDER BY created_ms DESC, case_no DESC LIMIT :n",
            params,
        )
        return [_CASE(r) for r in rows]

    def case_counts(
        self, from_ms: int, to_ms: int, group_by: str, scope: Sequence[str] | None = None
    ) -> dict[str, Counts]:
        """The 综合评价 counts of the window [from_ms, to_ms) per group (`department`, `grid`,
        `subcategory` or `source`): cases reported in it, workflow actions taken in it, stages
        of the phase table that ended in it, alarm occurrences decided in it (those that became
        no case under the key NO_CASE; cases placed in no grid under NO_GRID;
        docs/integration.md defines each).

        By department, a department is held to the stages it held: the stage figures (应派遣,
        按时派遣, 应处置, 按期/超期处置, the mean durations) count for the department of the
        stage (派遣 the command centre's, collector.cases.phases.holder), 应结案 for that of the
        处置 stage the 核查 stage verifies, and 返工, 回退, 延时 and 挂账 for that of the 处置
        stage they were taken in (the case's latest 处置 stage begun by then); the case
        figures (上报, 立案, 作废, 准确派遣, 结案, 按期结案, 误报, 自动恢复, alarms) count for the
        case's 主办. With `scope`
        (department values), only what counts for one of them, and no NO_CASE.

        Raises KeyError for another `group_by`."""
        g = _GROUP_SQL[group_by]
        w: dict[str, Any] = {"f": from_ms, "t": to_ms}
        mine = "TRUE" if scope is None else scoped.department_in("c.department", scope, w)
        # The stage figures: by the department credited with the stage, or by the case's grid,
        # 小类 or source. A stage is its holder's, but 应结案 is the verified department's (结案率
        # is its figure): a 核查 stage, the centre's, counts for the 处置 stage it verifies.
        credited = (
            "CASE WHEN p.stage = '核查' THEN COALESCE((SELECT d.department FROM case_phases d"
            " WHERE d.case_no = p.case_no AND d.stage = '处置' AND d.seq < p.seq"
            " ORDER BY d.seq DESC LIMIT 1), p.department) ELSE p.department END"
        )
        if group_by == "department":
            pg, cases = credited, ""
        else:
            pg, cases = g, " JOIN cases c ON c.case_no = p.case_no"
        held = "TRUE" if scope is None else scoped.department_in(credited, scope, w)
        out: dict[str, Counts] = {}

        def at(key: str) -> Counts:
            return out.setdefault(key, Counts())

        # The case figures: one read of the cases with an event in the window, by the times
        # the case record keeps (migration 22), each a sum of the cases it happened to in it.
        def within(column: str) -> str:
            return f"(c.{column} >= :f AND c.{column} < :t)"

        figures = {
            "reported": within("created_ms"),
            "registered": within("registered_ms"),
            "voided": within("voided_ms"),
            "dispatched_accurately": f"{within('dispatched_ms')} AND c.returns = 0",
            "closed": within("closed_ms"),
            "closed_on_time": f"{within('closed_ms')} AND NOT c.late_disposal",
            "false_alarms": f"({within('closed_ms')} AND c.closure = '误报')"
            f" OR ({within('voided_ms')} AND c.void_reason = '误报')",
            "auto_closed": within("auto_closed_ms"),
        }
        times = ("created", "registered", "dispatched", "closed", "auto_closed", "voided")
        sums = ", ".join(f"sum(CASE WHEN {cond} THEN 1 ELSE 0 END)" for cond in figures.values())
        for r in self._query(
            f"SELECT {g}, {sums} FROM cases c"  # noqa: S608 - constant expressions
            f" WHERE ({' OR '.join(within(f'{t}_ms') for t in times)}) AND {mine}"
            " GROUP BY 1",
            w,
        ):
            c = at(r[0])
            for name, n in zip(figures, r[1:], strict=True):
                setattr(c, name, getattr(c, name) + int(n))
        for r in self._query(
            f"SELECT {pg}, p.stage, count(*),"  # noqa: S608 - constant group expression
            " sum(CASE WHEN p.due_ms IS NULL OR p.end_ms <= p.due_ms THEN 1 ELSE 0 END),"
            " sum(p.end_ms - p.start_ms - p.parked_ms)"
            f" FROM case_phases p{cases}"
            f" WHERE p.end_ms >= :f AND p.end_ms < :t AND {held} GROUP BY 1, 2",
            w,
        ):
            c, n, on_time, spent = at(r[0]), int(r[2]), int(r[3]), int(r[4])
            if r[1] == "派遣":
                c.to_dispatch += n
                c.dispatched_on_time += on_time
                c.dispatch_ms += spent
            elif r[1] == "处置":
                c.to_dispose += n
                c.disposed_on_time += on_time
                c.disposed_late += n - on_time
                c.disposal_ms += spent
            elif r[1] == "核查":
                c.to_close += n
        # 回退, 延时, 挂账 and 返工 concern a 处置 stage (返工 opens the new round of the same
        # department): the case's latest one begun by the time of the action. 返工 is 核查不通过
        # (the 监督员 finds the work not done) as 数字城管 考核 counts it, and its sensor twin, the
        # alarm back after 反馈.
        in_stage = {
            "rework": "reworks",
            "reject": "reworks",
            "return": "returns",
            "extend": "extensions",
            "park": "parks",
        }
        for r in self._query(
            f"SELECT {pg}, a.action, count(*) FROM case_audit a"  # noqa: S608 - constant
            " JOIN case_phases p ON p.case_no = a.case_no AND p.seq = (SELECT max(s.seq)"
            " FROM case_phases s WHERE s.case_no = a.case_no AND s.stage = '处置'"
            f" AND s.start_ms <= a.ts_ms){cases} WHERE a.ts_ms >= :f AND a.ts_ms < :t"
            f" AND a.action IN {sql_values(*in_stage)} AND {held} GROUP BY 1, 2",
            w,
        ):
            c = at(r[0])
            setattr(c, in_stage[r[1]], getattr(c, in_stage[r[1]]) + int(r[2]))
        # Alarm occurrences decided in the window: those that became a case count in the
        # case's group; the rest (work orders, ignored, recorded) in a group of their own.
        for r in self._query(
            f"SELECT {g}, count(*) FROM alarm_links l"  # noqa: S608 - constant group expression
            " JOIN cases c ON c.case_no = l.ref"
            " WHERE l.decided_ms >= :f AND l.decided_ms < :t AND l.outcome = 'case'"
            f" AND {mine} GROUP BY 1",
            w,
        ):
            at(r[0]).alarms += int(r[1])
            at(r[0]).alarms_to_cases += int(r[1])
        if scope is not None:
            return out  # alarms that became no case belong to no department
        for r in self._query(
            "SELECT count(*) FROM alarm_links l"
            " WHERE l.decided_ms >= :f AND l.decided_ms < :t AND l.outcome <> 'case'",
            w,
        ):
            if int(r[0]):
                at(NO_CASE).alarms += int(r[0])
        return out

    def count_cases_by_state(self) -> dict[str, int]:
        """How many cases are in each state."""
        rows = self._query("SELECT state, count(*) FROM cases GROUP BY state")
        return {r[0]: int(r[1]) for r in rows}

    # --- work orders --------------------------------------------------------------------------

    def open_work_order_for(self, subject: str, problem: str) -> WorkOrder | None:
        """The unfinished work order for (gateway/device, problem), if there is one."""
        rows = self._query(
            f"SELECT {_WORK_ORDER.select} FROM work_orders"  # noqa: S608 - constant column list
            " WHERE subject = :s AND problem = :p AND state <> '已完成'",
            {"s": subject, "p": problem},
        )
        return _WORK_ORDER(rows[0]) if rows else None

    def last_closed_work_order_for(self, subject: str, problem: str) -> WorkOrder | None:
        """The most recently finished work order for (gateway/device, problem), if any."""
        rows = self._query(
            f"SELECT {_WORK_ORDER.select} FROM work_orders"  # noqa: S608 - constant column list
            " WHERE subject = :s AND problem = :p AND state = '已完成'"
            " ORDER BY updated_ms DESC, order_no DESC LIMIT 1",
            {"s": subject, "p": problem},
        )
        return _WORK_ORDER(rows[0]) if rows else None

    def save_work_order(
        self,
        order: WorkOrder,
        audits: Sequence[Audit],
        *,
        expect_state: str | None,
        transition_ids: Sequence[int] = (),
        links: Sequence[AlarmLink] = (),
        cleared: Sequence[tuple[str, int]] = (),
    ) -> None:
        """Insert (expect_state None) or update a work order with its audits, alarm links,
        cleared alarms and handled events, atomically; Conflict as save_case (state and
        `order.version`)."""
        p: dict[str, Any] = {
            "no": order.order_no,
            "problem": order.problem,
            "title": order.title,
            "gw": order.gateway,
            "dev": order.device,
            "subject": order.subject,
            "asset": order.asset,
            "state": order.state.value,
            "sev": order.severity,
            "urg": order.urgency,
            "dept": order.department,
            "created": order.created_ms,
            "updated": order.updated_ms,
            "deadline": order.deadline_ms,
            "allowed": order.allowed_ms,
            "rep": order.repeats,
            "closure": order.closure,
            "recur": order.recurrence_of,
            **_place_params(order.location),
            "expect": expect_state,
            "ver": order.version,
        }
        with self._tx() as cur:
            if expect_state is None:
                self._run(
                    cur,
                    f"INSERT INTO work_orders ({_WORK_ORDER.select}, subject)"  # noqa: S608 - constant
                    " VALUES (:no, :problem, :title, :gw, :dev, :asset, :state, :sev, :urg,"
                    " :dept, :created, :updated, :deadline, :allowed, :rep, :closure, :recur,"
                    " :lon, :lat, :datum, :addr, :src, :ver, :subject)",
                    p,
                )
            else:
                self._run(
                    cur,
                    "UPDATE work_orders SET state = :state, severity = :sev, urgency = :urg,"
                    " updated_ms = :updated, deadline_ms = :deadline, repeats = :rep,"
                    " closure = :closure, version = version + 1"
                    " WHERE order_no = :no AND state = :expect AND version = :ver",
                    p,
                )
                if cur.rowcount != 1:
                    raise Conflict(
                        f"work order {order.order_no} changed meanwhile (it was in state"
                        f" {expect_state}): try again"
                    )
            for a in audits:
                self._audit_row(cur, "work_order_audit", "order_no", a)
            self._link(cur, links)
            self._clear(cur, cleared)
            self._mark(cur, transition_ids)

    def work_order(self, order_no: str, scope: Sequence[str] | None = None) -> WorkOrder | None:
        """One work order by number (with `scope`, only if one of these departments maintains
        it)."""
        params: dict[str, Any] = {"no": order_no}
        mine = "" if scope is None else f" AND {scoped.department_in('department', scope, params)}"
        rows = self._query(
            f"SELECT {_WORK_ORDER.select} FROM work_orders WHERE order_no = :no{mine}",  # noqa: S608
            params,
        )
        return _WORK_ORDER(rows[0]) if rows else None

    def find_work_orders(
        self,
        *,
        states: Sequence[str] = (),
        department: str | None = None,
        gateway: str | None = None,
        device: str | None = None,
        before: tuple[int, str] | None = None,
        limit: int = 100,
        scope: Sequence[str] | None = None,
    ) -> list[WorkOrder]:
        """Work orders matching every given filter, newest first, keyset-paged below `before`;
        with `scope` (department values), only those one of them maintains."""
        params: dict[str, Any] = {
            "dept": department,
            "gw": gateway,
            "dev": device,
            "bc": before[0] if before else None,
            "bn": before[1] if before else None,
            "n": limit,
        }
        where = ""
        if states:
            params.update({f"s{i}": s for i, s in enumerate(states)})
            where = " AND state IN (" + ", ".join(f":s{i}" for i in range(len(states))) + ")"
        if scope is not None:
            where += f" AND {scoped.department_in('department', scope, params)}"
        rows = self._query(
            f"SELECT {_WORK_ORDER.select} FROM work_orders"  # noqa: S608 - placeholders only
            " WHERE (CAST(:dept AS TEXT) IS NULL OR department = :dept)"
            " AND (CAST(:gw AS TEXT) IS NULL OR gateway_id = :gw)"
            " AND (CAST(:dev AS TEXT) IS NULL OR device = :dev)"
            " AND (CAST(:bc AS BIGINT) IS NULL OR created_ms < :bc"
            " OR (created_ms = :bc AND order_no < :bn))"
            f"{where} ORDER BY created_ms DESC, order_no DESC LIMIT :n",
            params,
        )
        return [_WORK_ORDER(r) for r in rows]

    def work_order_audit(self, order_no: str) -> list[Audit]:
        """The audit trail of a work order, oldest first (`case_no` holds the order number)."""
        rows = self._query(
            f"SELECT {_WORK_ORDER_AUDIT.select} FROM work_order_audit"  # noqa: S608 - constant
            " WHERE order_no = :no ORDER BY id",
            {"no": order_no},
        )
        return [_WORK_ORDER_AUDIT(r) for r in rows]

    def count_work_orders_by_state(self) -> dict[str, int]:
        """How many work orders are in each state."""
        rows = self._query("SELECT state, count(*) FROM work_orders GROUP BY state")
        return {r[0]: int(r[1]) for r in rows}

    # --- event log ----------------------------------------------------------------------------

    def _pump_audits(self, cur: Cursor, now_ms: int, limit: int) -> int:
        rows = self._run(
            cur,
            "SELECT a.id, a.case_no, a.ts_ms, a.actor, a.action, a.from_state, a.to_state,"
            " a.note, c.subcategory, c.department, c.asset, c.device, c.urgency, c.title,"
            " c.grid, c.gateway_id, c.kind, c.severity, c.closure, c.recurrence_of, a.key_id,"
            " a.key_role, a.on_behalf_of"
            " FROM case_audit a JOIN cases c ON c.case_no = a.case_no"
            " WHERE NOT a.evented ORDER BY a.id LIMIT :n",
            {"n": limit},
        )
        for r in rows:
            data = {
                "case_no": r[1],
                "ts_ms": r[2],
                "actor": r[3],
                "action": r[4],
                "from_state": r[5],
                "to_state": r[6],
                "note": r[7],
                "kind": r[16],
                "subcategory": r[8],
                "department": r[9],
                "asset": r[10],
                "device": r[11],
                "gateway": r[15],
                "urgency": r[12],
                "severity": r[17],
                "title": r[13],
                "grid": r[14],
                "closure": r[18],
                "recurrence_of": r[19],
                "key_id": r[20],
                "role": r[21],
                "on_behalf_of": r[22],
            }
            etype = CASE_EVENT_TYPES.get(r[4], "case.transition")
            self._log_event(cur, etype, r[2], now_ms, r[1], data)
            self._run(cur, "UPDATE case_audit SET evented = TRUE WHERE id = :id", {"id": r[0]})
        return len(rows)

    def _pump_work_orders(self, cur: Cursor, now_ms: int, limit: int) -> int:
        rows = self._run(
            cur,
            "SELECT a.id, a.order_no, a.ts_ms, a.actor, a.action, a.from_state, a.to_state,"
            " a.note, o.problem, o.title, o.gateway_id, o.device, o.asset, o.department,"
            " o.severity, o.deadline_ms, o.closure FROM work_order_audit a"
            " JOIN work_orders o ON o.order_no = a.order_no WHERE NOT a.evented"
            " ORDER BY a.id LIMIT :n",
            {"n": limit},
        )
        for r in rows:
            data = {
                "order_no": r[1],
                "ts_ms": r[2],
                "actor": r[3],
                "action": r[4],
                "from_state": r[5],
                "to_state": r[6],
                "note": r[7],
                "problem": r[8],
                "title": r[9],
                "gateway": r[10],
                "device": r[11],
                "asset": r[12],
                "department": r[13],
                "severity": r[14],
                "deadline_ms": r[15],
                "closure": r[16],
            }
            etype = "work_order.opened" if r[5] is None else "work_order.transition"
            self._log_event(cur, etype, r[2], now_ms, r[1], data)
            self._run(
                cur, "UPDATE work_order_audit SET evented = TRUE WHERE id = :id", {"id": r[0]}
            )
        return len(rows)
