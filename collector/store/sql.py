"""Store logic shared by the SQL backends; subclasses supply connections and the readings hot path.

Shared SQL uses `:name` parameters (sqlite3 style); the PostgreSQL backend rewrites them.
"""

import json
import logging
import operator
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any, Protocol

from collector.assets import Asset, AssetError
from collector.events import (
    ALARM_EVENT_TYPES,
    matches,
    type_patterns,
)
from collector.models import (
    ORIGIN_BIRTH,
    ORIGIN_GATEWAY,
    RECONCILED,
    Accepted,
    AlarmRecord,
    AlarmView,
    ApiKey,
    DeadLetter,
    Delivery,
    DeviceState,
    DueDelivery,
    EventRecord,
    GatewayClock,
    GatewayEpoch,
    GatewayState,
    Incoming,
    Rejected,
    Role,
    Status,
    Webhook,
    WriteResult,
)
from collector.store.base import StoreDataError, StoreError
from collector.store.cases_sql import CaseRows
from wire import (
    EARLIEST_PLAUSIBLE_MS,
    AlarmBatch,
    AlarmEvent,
    AlarmState,
    Birth,
    CommandReply,
    DataBatch,
    Death,
    DeviceEventBatch,
    Location,
    Record,
    Severity,
    encode,
)
from wire import Status as StatusMsg
from wire.messages import Value

log = logging.getLogger(__name__)

BatchKey = tuple[str, str, int]  # gateway, buffer epoch, seq: the idempotency key
KeyedDigest = tuple[str, str, int, bytes | None]  # a batch key and its payload digest
# A reading row as the backends insert it.
ReadingRow = tuple[str, str, str, int, int, float | None, str | None, str, bool]

V_NULL, V_BOOL, V_INT, V_FLOAT, V_STR = 0, 1, 2, 3, 4
_EXACT_FLOAT_INT = 2**53
CONFLICT = "conflict"  # the status_log status of a claim a gateway may not make
ACTIVE_STATES = (AlarmState.ACTIVE_UNACKED.value, AlarmState.ACTIVE_ACKED.value)


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


Pos = tuple[int, int, int]  # (epoch rank, batch seq, index): the gateway's order of events
BIRTH_IDX = 2**31  # a birth's picture comes after every event of its high-water batch
# A reading row with the time it was received (its sample time was implausible).
FlaggedRow = tuple[str, str, str, int, int, float | None, str | None, str, bool, int]
_TS = operator.itemgetter(2)  # Record.ts_ms, without the property call


def at_or_after(pos: Pos, stored: Sequence[Any]) -> bool:
    """True if `pos` is not older than a stored (rank, seq, idx), unknown (NULLs) included."""
    if stored[0] is None:
        return True
    return pos >= (int(stored[0]), int(stored[1]), int(stored[2]))


@dataclass(slots=True)
class Commit:
    """What one commit knows and counts beyond its rows: the collector's time, the window of
    plausible sample times [lo, hi], and the claims refused to gateways."""

    now_ms: int
    lo: int
    hi: int
    gateway_conflicts: int = 0
    dead_letters: int = 0  # besides the Rejected items: births whose claims were refused

    def received(self, ts_ms: int) -> int | None:
        """The receive time to store beside `ts_ms` if it is implausible, else None."""
        return self.now_ms if not self.lo <= ts_ms <= self.hi else None

    def span(self, records: Sequence[Record]) -> tuple[int, int]:
        """The earliest and latest sample time of a batch, (lo, hi) if it is empty."""
        if not records:
            return self.lo, self.hi
        return min(map(_TS, records)), max(map(_TS, records))


@dataclass(frozen=True, slots=True)
class Change:
    """A device status change at a position in its gateway's order of events."""

    status: Status
    ts_ms: int
    reason: str
    pos: Pos


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


class SqlStore(CaseRows, ABC):
    """Everything but connections, migrations and the readings hot path."""

    # (gateway, epoch) pairs known to be recorded, with their rank (first seen, ms): most
    # writes then skip `_note_epochs`.
    _known_epochs: dict[tuple[str, str], int]
    # How far ahead of the collector's ctx a sample time may be and still be plausible.
    max_skew_ms: int = 300_000

    # --- what a backend provides ------------------------------------------------------------

    @abstractmethod
    def _tx(self) -> AbstractContextManager[Cursor]:
        """A cursor inside one transaction, committed on normal exit."""

    @abstractmethod
    def _sql(self, sql: str) -> str:
        """Translate shared `:name` SQL to the driver's parameter style."""

    @abstractmethod
    def _claim_keys(self, cur: Cursor, keys: list[KeyedDigest], now_ms: int) -> set[BatchKey]:
        """Insert durable batch keys with their digests, returning the keys not seen before."""

    def _stored_digests(self, cur: Cursor, keys: list[BatchKey]) -> dict[BatchKey, bytes | None]:
        """The digests stored with keys seen before (for telling redeliveries from conflicts)."""
        out: dict[BatchKey, bytes | None] = {}
        for gw, epoch, seq in keys:
            rows = self._run(
                cur,
                "SELECT digest FROM batch_keys WHERE gateway_id = :gw AND epoch = :ep"
                " AND seq = :seq",
                {"gw": gw, "ep": epoch, "seq": seq},
            )
            if rows:
                out[(gw, epoch, seq)] = None if rows[0][0] is None else bytes(rows[0][0])
        return out

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
        """Commit a batch in one transaction; ignore durable keys (gateway, epoch, seq) seen before.

        A key seen before with the same bytes is a redelivery, counted as a duplicate. A key
        seen before with different bytes is a conflict: the first stays, the newcomer is
        dead-lettered and logged, never dropped in silence. Raises StoreUnavailable (retry
        later) or StoreDataError (something in `items` cannot be stored); nothing is committed
        then.
        """
        try:
            return self._write(items, now_ms)
        except StoreError:
            raise
        except Exception as exc:
            # The store boundary: whatever else fails while turning these messages into rows
            # (a value a driver cannot adapt, a bug on one message's path) is about this data,
            # so the caller isolates and dead-letters it instead of retrying it for ever.
            raise StoreDataError(f"cannot store: {type(exc).__name__}: {exc}") from exc

    def _write(self, items: Sequence[Incoming], now_ms: int) -> WriteResult:
        digests: dict[BatchKey, bytes | None] = {}
        epochs: set[tuple[str, str]] = set()
        for i in items:
            if isinstance(i, Accepted):
                msg = i.message
                if isinstance(msg, DataBatch | AlarmBatch | DeviceEventBatch):
                    digests.setdefault((msg.gateway, msg.epoch, msg.seq), i.digest)
                if msg.epoch and (msg.gateway, msg.epoch) not in self._known_epochs:
                    epochs.add((msg.gateway, msg.epoch))
        readings: list[ReadingRow] = []
        flagged: list[FlaggedRow] = []
        dead = dupes = alarm_events = conflicts = 0
        ctx = Commit(now_ms, EARLIEST_PLAUSIBLE_MS, now_ms + self.max_skew_ms)
        with self._tx() as cur:
            ranks, new_epochs = self._note_epochs(cur, sorted(epochs), now_ms)
            claimed = [(*k, d) for k, d in digests.items()]
            fresh = self._claim_keys(cur, claimed, now_ms) if claimed else set()
            stored = self._stored_digests(cur, [k for k in digests if k not in fresh])
            for item in items:
                if isinstance(item, Rejected):
                    self._dead_letter(cur, item)
                    dead += 1
                    if item.conflict_of is not None:
                        self._gateway_conflict(cur, item.conflict_of, item.reason, ctx)
                    continue
                msg = item.message
                if isinstance(msg, DataBatch | AlarmBatch | DeviceEventBatch):
                    key = (msg.gateway, msg.epoch, msg.seq)
                    if key not in fresh:
                        # Seen in an earlier commit (stored) or earlier in this one (digests).
                        first = stored[key] if key in stored else digests[key]
                        if first is not None and item.digest is not None and first != item.digest:
                            self._conflict(cur, item, now_ms)
                            conflicts += 1
                        else:
                            dupes += 1
                        continue
                    fresh.discard(key)  # a second copy in this very batch is a duplicate too
                rank = ranks.get((msg.gateway, msg.epoch)) or self._known_epochs.get(
                    (msg.gateway, msg.epoch), 0
                )
                if isinstance(msg, DataBatch):
                    self._data_rows(msg, ctx, readings, flagged)
                elif isinstance(msg, AlarmBatch):
                    for n, ev in enumerate(msg.events):
                        self._alarm_event(cur, msg.gateway, ev, (rank, msg.seq, n), ctx)
                    alarm_events += len(msg.events)
                elif isinstance(msg, DeviceEventBatch):
                    for n, dev_ev in enumerate(msg.events):
                        status = Status.ONLINE if dev_ev.online else Status.OFFLINE
                        self._device_status(
                            cur,
                            msg.gateway,
                            dev_ev.device,
                            Change(status, dev_ev.ts_ms, dev_ev.reason, (rank, msg.seq, n)),
                            ctx,
                        )
                elif isinstance(msg, Birth):
                    alarm_events += self._birth(
                        cur, item.topic.site, msg, rank, ctx, item.topic_name, item.payload
                    )
                elif isinstance(msg, Death):
                    self._death(cur, item.topic.site, msg, ctx)
                elif isinstance(msg, StatusMsg):
                    self._status(cur, item.topic.site, msg)
                elif isinstance(msg, CommandReply):
                    self._command_reply(cur, msg, now_ms)
            if readings:
                self._insert_readings(cur, readings)
            if flagged:
                self._insert_flagged_readings(cur, flagged)
        self._known_epochs.update(ranks)  # only once committed
        return WriteResult(
            len(readings) + len(flagged),
            dupes,
            dead + conflicts + ctx.dead_letters,
            alarm_events,
            conflicts,
            new_epochs,
            ctx.gateway_conflicts,
        )

    def _note_epochs(
        self, cur: Cursor, epochs: list[tuple[str, str]], now_ms: int
    ) -> tuple[dict[tuple[str, str], int], int]:
        """Record (gateway, epoch) pairs; log each new epoch of a known gateway.

        Returns each pair's rank (when this collector first saw the epoch: a buffer that
        replaced another is seen later) and how many known gateways started a new epoch.
        """
        ranks: dict[tuple[str, str], int] = {}
        new = 0
        for gw, epoch in epochs:
            self._run(
                cur,
                "INSERT INTO gateway_epochs (gateway_id, epoch, first_ms) VALUES (:gw, :ep, :now)"
                " ON CONFLICT (gateway_id, epoch) DO NOTHING",
                {"gw": gw, "ep": epoch, "now": now_ms},
            )
            inserted = cur.rowcount == 1
            ranks[(gw, epoch)] = self._run(
                cur,
                "SELECT first_ms FROM gateway_epochs WHERE gateway_id = :gw AND epoch = :ep",
                {"gw": gw, "ep": epoch},
            )[0][0]
            if not inserted:
                continue
            known = self._run(
                cur,
                "SELECT count(*) FROM gateway_epochs WHERE gateway_id = :gw",
                {"gw": gw},
            )
            if known[0][0] > 1:
                new += 1
                reason = f"new buffer epoch {epoch}: its batches number from 1 again"
                log.warning("gateway %s started a %s", gw, reason)
                self._run(
                    cur,
                    "INSERT INTO status_log (entity, ident, status, ts_ms, reason)"
                    " VALUES ('gateway', :gw, 'epoch', :now, :why)",
                    {"gw": gw, "now": now_ms, "why": reason},
                )
        return ranks, new

    def _conflict(self, cur: Cursor, item: Accepted, now_ms: int) -> None:
        """Dead-letter a batch whose key was stored before with different content."""
        msg = item.message
        reason = (
            f"batch key (gateway {msg.gateway}, epoch {msg.epoch}, seq {msg.seq}) was stored"
            " before with different content: the first was kept, this one refused"
        )
        log.warning("conflicting duplicate: %s", reason)
        payload = item.payload or encode(msg)
        self._dead_letter(cur, Rejected(item.topic_name, payload, reason, now_ms))

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

    @abstractmethod
    def _insert_flagged_readings(self, cur: Cursor, rows: list[FlaggedRow]) -> None:
        """Insert readings with a `received_ms` column (a batch with implausible times)."""

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

    def _device_status(
        self, cur: Cursor, gateway: str, device: str, change: "Change", ctx: "Commit"
    ) -> None:
        """Apply a device status change if it is not older (in the gateway's order) than the
        stored one; log it if the status changed."""
        p = {
            "dev": device,
            "gw": gateway,
            "st": change.status.value,
            "ts": change.ts_ms,
            "why": change.reason,
            "r": change.pos[0],
            "s": change.pos[1],
            "i": change.pos[2],
        }
        rows = self._run(
            cur,
            "SELECT status, pos_rank, pos_seq, pos_idx FROM devices"
            " WHERE gateway_id = :gw AND device = :dev",
            p,
        )
        if not rows:
            self._run(
                cur,
                "INSERT INTO devices (gateway_id, device, profile, family, status, since_ms,"
                " reason, pos_rank, pos_seq, pos_idx)"
                " VALUES (:gw, :dev, '', '', :st, :ts, :why, :r, :s, :i)",
                p,
            )
        elif not at_or_after(change.pos, rows[0][1:4]):
            return  # an older transition arrived late: the stored status is newer
        elif rows[0][0] == change.status.value:
            self._run(
                cur,
                "UPDATE devices SET pos_rank = :r, pos_seq = :s, pos_idx = :i"
                " WHERE gateway_id = :gw AND device = :dev",
                p,
            )
            return
        else:
            self._run(
                cur,
                "UPDATE devices SET status = :st, since_ms = :ts, reason = :why, pos_rank = :r,"
                " pos_seq = :s, pos_idx = :i WHERE gateway_id = :gw AND device = :dev",
                p,
            )
        self._log_status(
            cur, "device", device, change.status, change.ts_ms, change.reason, ctx, gateway
        )

    def _log_status(
        self,
        cur: Cursor,
        entity: str,
        ident: str,
        status: str,
        ts_ms: int,
        reason: str,
        ctx: "Commit",
        gateway: str | None = None,
    ) -> None:
        """Log a status change; a device's names its gateway (`gateway`)."""
        self._run(
            cur,
            "INSERT INTO status_log (entity, ident, status, ts_ms, reason, received_ms, gateway_id)"
            " VALUES (:e, :i, :s, :ts, :why, :recv, :gw)",
            {
                "e": entity,
                "i": ident,
                "s": str(status),
                "ts": ts_ms,
                "why": reason,
                "recv": ctx.received(ts_ms),
                "gw": gateway,
            },
        )

    def _birth(
        self,
        cur: Cursor,
        site: str,
        msg: Birth,
        rank: int,
        ctx: "Commit",
        topic_name: str = "",
        payload: bytes = b"",
    ) -> int:
        """Apply a birth: the gateway online, its devices, its alarm picture; return how many
        alarm events the picture added.

        Skipped if it is this very birth again (a retained copy), the birth of a connection
        (session, bd_seq) that already died, or older, in the gateway's order, than the birth
        applied last.
        """
        rows = self._run(
            cur,
            "SELECT status, session, bd_seq, birth_rank, birth_seq, birth_sent_ms FROM gateways"
            " WHERE gateway_id = :gw",
            {"gw": msg.gateway},
        )
        pos = (rank, msg.high_water, BIRTH_IDX)
        if rows:
            status, session, bd_seq, b_rank, b_seq, b_sent = rows[0]
            if (session, bd_seq) == (msg.session, msg.bd_seq) and (
                status == Status.OFFLINE.value or b_sent == msg.sent_ms
            ):
                return 0  # this very birth again, or the birth of a connection that died
            if b_rank is not None and (rank, msg.high_water) < (b_rank, b_seq):
                log.info("gateway %s: a birth older than the one applied is ignored", msg.gateway)
                return 0
        p = {
            "gw": msg.gateway,
            "site": site,
            "ts": msg.sent_ms,
            "sess": msg.session,
            "bd": msg.bd_seq,
            "sw": msg.software,
            "ch": msg.config_hash,
            "r": rank,
            "s": msg.high_water,
            "recv": ctx.now_ms,
            "cp": msg.clock.plausible,
            "cs": msg.clock.step_ms,
            "ca": msg.clock.step_at_ms,
        }
        self._run(
            cur,
            "INSERT INTO gateways (gateway_id, site, status, since_ms, session, bd_seq, software,"
            " config_hash, reason, counters, counters_ms, birth_rank, birth_seq, birth_sent_ms,"
            " birth_received_ms, clock_plausible, clock_step_ms, clock_step_at_ms)"
            " VALUES (:gw, :site, 'online', :ts, :sess, :bd, :sw, :ch, 'birth', '{}', NULL, :r,"
            " :s, :ts, :recv, :cp, :cs, :ca)"
            " ON CONFLICT (gateway_id) DO UPDATE SET site = :site, status = 'online',"
            " since_ms = :ts, session = :sess, bd_seq = :bd, software = :sw, config_hash = :ch,"
            " reason = 'birth',"
            " birth_rank = :r, birth_seq = :s, birth_sent_ms = :ts, birth_received_ms = :recv,"
            " clock_plausible = :cp, clock_step_ms = :cs, clock_step_at_ms = :ca",
            p,
        )
        if not msg.clock.plausible:
            log.warning("gateway %s reports an implausible wall clock", msg.gateway)
        self._log_status(cur, "gateway", msg.gateway, Status.ONLINE, msg.sent_ms, "birth", ctx)
        for d in msg.devices:
            loc = d.location
            self._run(
                cur,
                "INSERT INTO devices (gateway_id, device, profile, family, status, since_ms,"
                " reason, lon, lat, datum, address)"
                " VALUES (:gw, :dev, :prof, :fam, 'unknown', 0, '', :lon, :lat, :datum, :addr)"
                " ON CONFLICT (gateway_id, device) DO UPDATE SET profile = :prof, family = :fam,"
                " lon = :lon, lat = :lat, datum = :datum, address = :addr",
                {
                    "dev": d.device,
                    "gw": msg.gateway,
                    "prof": d.profile,
                    "fam": d.family,
                    "lon": loc.lon if loc else None,
                    "lat": loc.lat if loc else None,
                    "datum": loc.datum if loc else None,
                    "addr": loc.address if loc else None,
                },
            )
            status = Status.ONLINE if d.online else Status.OFFLINE
            change = Change(status, msg.sent_ms, "birth", pos)
            self._device_status(cur, msg.gateway, d.device, change, ctx)
        refused = self._bind_announced(cur, msg, ctx)
        if refused:
            reason = "; ".join(refused) + " (the rest of the birth was applied)"
            letter = Rejected(topic_name, payload or encode(msg), reason, ctx.now_ms)
            self._dead_letter(cur, letter)
            ctx.dead_letters += 1
        return self._reconcile_alarms(cur, msg, rank, ctx)

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

    def _death(self, cur: Cursor, site: str, msg: Death, ctx: "Commit") -> None:
        rows = self._run(
            cur,
            "SELECT status, session, bd_seq FROM gateways WHERE gateway_id = :gw",
            {"gw": msg.gateway},
        )
        if rows and (
            (rows[0][1], rows[0][2]) != (msg.session, msg.bd_seq)
            or rows[0][0] == Status.OFFLINE.value
        ):
            # The death of another connection (an older session, or a will the broker kept
            # from before the gateway reconnected), or one already applied.
            return
        # A last will is built at connect time, so its sent time is not the time of death;
        # a ctx running ahead is no time of death either.
        ts = ctx.now_ms if ctx.received(msg.sent_ms) else max(msg.sent_ms, ctx.now_ms)
        self._run(
            cur,
            "INSERT INTO gateways (gateway_id, site, status, since_ms, session, bd_seq, software,"
            " config_hash, reason, counters, counters_ms)"
            " VALUES (:gw, :site, 'offline', :ts, :sess, :bd, '', '', :why, '{}', NULL)"
            " ON CONFLICT (gateway_id) DO UPDATE SET status = 'offline', since_ms = :ts,"
            " reason = :why",
            {
                "gw": msg.gateway,
                "site": site,
                "ts": ts,
                "sess": msg.session,
                "bd": msg.bd_seq,
                "why": msg.reason,
            },
        )
        self._log_status(cur, "gateway", msg.gateway, Status.OFFLINE, ts, msg.reason, ctx)
        devices = self._run(
            cur,
            "SELECT device FROM devices WHERE gateway_id = :gw AND status <> 'unknown'",
            {"gw": msg.gateway},
        )
        for (device,) in devices:
            # Not an event of the gateway's stream: the position stays, so that the stream's
            # next event (whatever its order) applies.
            self._run(
                cur,
                "UPDATE devices SET status = 'unknown', since_ms = :ts, reason = 'gateway offline'"
                " WHERE gateway_id = :gw AND device = :dev",
                {"ts": ts, "dev": device, "gw": msg.gateway},
            )
            self._log_status(
                cur, "device", device, Status.UNKNOWN, ts, "gateway offline", ctx, msg.gateway
            )

    def _status(self, cur: Cursor, site: str, msg: StatusMsg) -> None:
        # Counters follow arrival: a gateway's ctx may step back, its messages do not.
        p = {"gw": msg.gateway, "site": site, "c": json.dumps(msg.counters), "ts": msg.sent_ms}
        self._run(
            cur,
            "INSERT INTO gateways (gateway_id, site, status, since_ms, session, software,"
            " config_hash, reason, counters, counters_ms)"
            " VALUES (:gw, :site, 'unknown', 0, '', '', '', '', :c, :ts)"
            " ON CONFLICT (gateway_id) DO UPDATE SET counters = :c, counters_ms = :ts",
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
            " counters, counters_ms, clock_plausible, clock_step_ms, clock_step_at_ms,"
            " birth_received_ms FROM gateways ORDER BY gateway_id"
        )
        return [
            GatewayState(
                r[0],
                r[1],
                Status(r[2]),
                r[3],
                r[4],
                r[5],
                r[6],
                r[7],
                json.loads(r[8]),
                r[9],
                None if r[10] is None else GatewayClock(bool(r[10]), r[11], r[12], r[13]),
            )
            for r in rows
        ]

    def gateway_epochs(self, gateway: str) -> list[GatewayEpoch]:
        """The buffer epochs a gateway has used, newest first."""
        rows = self._query(
            "SELECT epoch, first_ms FROM gateway_epochs WHERE gateway_id = :gw"
            " ORDER BY first_ms DESC, epoch",
            {"gw": gateway},
        )
        return [GatewayEpoch(r[0], r[1]) for r in rows]

    def devices(self, gateway: str | None = None, device: str | None = None) -> list[DeviceState]:
        """All known devices, optionally of one gateway and/or with one device id."""
        rows = self._query(
            "SELECT d.device, d.gateway_id, d.profile, d.family, b.asset, d.status, d.since_ms,"
            " d.reason, d.lon, d.lat, d.datum, d.address FROM devices d LEFT JOIN device_assets b"
            " ON b.gateway_id = d.gateway_id AND b.device = d.device"
            " WHERE (CAST(:gw AS TEXT) IS NULL OR d.gateway_id = :gw)"
            " AND (CAST(:dev AS TEXT) IS NULL OR d.device = :dev)"
            " ORDER BY d.device, d.gateway_id",
            {"gw": gateway, "dev": device},
        )
        return [
            DeviceState(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                Status(r[5]),
                r[6],
                r[7],
                None if r[8] is None else Location(r[8], r[9], r[10] or "CGCS2000", r[11] or ""),
            )
            for r in rows
        ]

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

    def _bind(self, cur: Cursor, gateway: str, device: str, asset: str) -> None:
        self._run(
            cur,
            "INSERT INTO device_assets (gateway_id, device, asset) VALUES (:gw, :dev, :asset)"
            " ON CONFLICT (gateway_id, device) DO UPDATE SET asset = :asset",
            {"gw": gateway, "dev": device, "asset": asset},
        )

    def _bind_announced(self, cur: Cursor, msg: Birth, ctx: "Commit") -> list[str]:
        """Apply a birth's device -> asset claims; return why each refused claim was refused.

        A gateway speaks only for its own devices: a claim on an asset already bound to a
        device of another gateway is refused (an operator rebinds through the API or the
        registry), logged, and reported as a `gateway.conflict` event. An asset the registry
        lacks never replaces a binding: the registry is the authority on city components.
        A device the registry named without its gateway is claimed here by the first gateway
        that announces it, while no other gateway has a device of that id.
        """
        refused: list[str] = []
        gw = msg.gateway
        for d in msg.devices:
            self._claim_pending(cur, gw, d.device, ctx)
            if d.asset is None:
                continue
            p = {"gw": gw, "dev": d.device, "asset": d.asset}
            if not self._run(cur, "SELECT 1 FROM assets WHERE code = :asset", p):
                log.warning(
                    "gateway %s announces device %s on asset %s, which is not in the asset"
                    " registry",
                    gw,
                    d.device,
                    d.asset,
                )
                self._run(
                    cur,
                    "INSERT INTO device_assets (gateway_id, device, asset)"
                    " VALUES (:gw, :dev, :asset) ON CONFLICT (gateway_id, device) DO NOTHING",
                    p,
                )
                continue
            owners = self._run(
                cur,
                "SELECT gateway_id, device FROM device_assets WHERE asset = :asset"
                " AND gateway_id <> :gw AND gateway_id <> '' ORDER BY gateway_id, device",
                p,
            )
            if owners:
                holder = f"{owners[0][0]}/{owners[0][1]}"
                why = (
                    f"birth of {gw} claims asset {d.asset} for device {d.device}, but the asset"
                    f" is bound to {holder}: claim refused"
                )
                refused.append(why)
                self._gateway_conflict(cur, gw, why, ctx)
                continue
            self._bind(cur, gw, d.device, d.asset)
        return refused

    def _claim_pending(self, cur: Cursor, gateway: str, device: str, ctx: "Commit") -> None:
        """Bind a device to the asset the registry named it under without a gateway, if the
        id is this gateway's alone."""
        p = {"gw": gateway, "dev": device}
        pending = self._run(
            cur, "SELECT asset FROM device_assets WHERE gateway_id = '' AND device = :dev", p
        )
        if not pending:
            return
        others = self._run(
            cur,
            "SELECT gateway_id FROM devices WHERE device = :dev AND gateway_id <> :gw"
            " ORDER BY gateway_id",
            p,
        )
        if others:
            why = (
                f"the registry binds device {device} to asset {pending[0][0]} without naming its"
                f" gateway, and gateways {', '.join([gateway] + [o[0] for o in others])} all"
                f" have a device {device}: bind it as gateway/device"
            )
            self._gateway_conflict(cur, gateway, why, ctx)
            return
        if not self._run(
            cur, "SELECT 1 FROM device_assets WHERE gateway_id = :gw AND device = :dev", p
        ):
            self._bind(cur, gateway, device, pending[0][0])
        self._run(cur, "DELETE FROM device_assets WHERE gateway_id = '' AND device = :dev", p)

    def _gateway_conflict(self, cur: Cursor, gateway: str, why: str, ctx: "Commit") -> None:
        """Report a claim a gateway may not make: a log line and a `gateway.conflict` event."""
        log.warning("gateway %s: %s", gateway, why)
        ctx.gateway_conflicts += 1
        self._log_status(cur, "gateway", gateway, CONFLICT, ctx.now_ms, why, ctx)

    def bind_device(self, gateway: str | None, device: str, asset: str) -> None:
        """Bind a gateway's device to an asset (replacing any earlier binding); without a
        gateway, the binding waits for the first gateway that announces the device."""
        with self._tx() as cur:
            self._bind(cur, gateway or "", device, asset)

    def _resolve(self, cur: Cursor, ref: str, code: str) -> tuple[str, str]:
        """(gateway, device) for a registry entry `gateway/device` or `device` (see Asset)."""
        gateway, _, device = ref.rpartition("/")
        if gateway:
            return gateway, device
        found = self._run(
            cur,
            "SELECT gateway_id FROM devices WHERE device = :dev UNION"
            " SELECT gateway_id FROM device_assets WHERE device = :dev AND gateway_id <> ''",
            {"dev": device},
        )
        gateways = sorted(r[0] for r in found)
        if len(gateways) > 1:
            raise AssetError(
                f"asset {code}: device {device} is on gateways {', '.join(gateways)};"
                f" name it as {gateways[0]}/{device}"
            )
        return (gateways[0] if gateways else ""), device

    def upsert_assets(self, assets: Sequence[Asset]) -> int:
        """Insert or replace assets and bind their listed devices; return how many.

        Raises AssetError (nothing stored) if a device is named without its gateway while
        several gateways have a device of that id.
        """
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
                for ref in a.devices:
                    self._bind(cur, *self._resolve(cur, ref, a.code), a.code)
        return len(assets)

    def assets(self) -> list[Asset]:
        """All assets ordered by code."""
        rows = self._query("SELECT doc FROM assets ORDER BY code")
        return [Asset.model_validate_json(r[0]) for r in rows]

    def asset_of_device(self, gateway: str, device: str) -> Asset | None:
        """The asset a gateway's device is bound to, if any."""
        rows = self._query(
            "SELECT a.doc FROM device_assets b JOIN assets a ON a.code = b.asset"
            " WHERE b.gateway_id = :gw AND b.device = :dev",
            {"gw": gateway, "dev": device},
        )
        return Asset.model_validate_json(rows[0][0]) if rows else None

    # --- command-center API (migration 3): keys, event log, alarm index, webhooks -------------

    def create_api_key(self, name: str, role: str, key_hash: str, prefix: str, now_ms: int) -> int:
        """Store a new key by its digest; return its id."""
        rows = self._query(
            "INSERT INTO api_keys (name, role, key_hash, prefix, created_ms, revoked_ms)"
            " VALUES (:name, :role, :h, :prefix, :now, NULL) RETURNING id",
            {"name": name, "role": role, "h": key_hash, "prefix": prefix, "now": now_ms},
        )
        return int(rows[0][0])

    _KEY_COLS = "id, name, role, prefix, created_ms, revoked_ms"

    def api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        """The active (not revoked) key with this digest."""
        rows = self._query(
            f"SELECT {self._KEY_COLS} FROM api_keys"  # noqa: S608 - constant column list
            " WHERE key_hash = :h AND revoked_ms IS NULL",
            {"h": key_hash},
        )
        return ApiKey(rows[0][0], rows[0][1], Role(rows[0][2]), *rows[0][3:]) if rows else None

    def api_keys(self) -> list[ApiKey]:
        """Every key (active and revoked), oldest first."""
        rows = self._query(
            f"SELECT {self._KEY_COLS} FROM api_keys ORDER BY id"  # noqa: S608 - constant
        )
        return [ApiKey(r[0], r[1], Role(r[2]), *r[3:]) for r in rows]

    def revoke_api_key(self, key_id: int, now_ms: int) -> bool:
        """Revoke a key; False if there is no such active key."""
        with self._tx() as cur:
            self._run(
                cur,
                "UPDATE api_keys SET revoked_ms = :now WHERE id = :id AND revoked_ms IS NULL",
                {"id": key_id, "now": now_ms},
            )
            return cur.rowcount == 1

    def pump_events(self, now_ms: int, limit: int = 500) -> int:
        """Copy alarm events, status changes, case and work-order audits not yet logged into
        `events`."""
        pending = self._query(
            "SELECT EXISTS (SELECT 1 FROM alarm_events WHERE NOT evented)"
            " OR EXISTS (SELECT 1 FROM status_log WHERE NOT evented)"
            " OR EXISTS (SELECT 1 FROM case_audit WHERE NOT evented)"
            " OR EXISTS (SELECT 1 FROM work_order_audit WHERE NOT evented)"
        )
        if not pending[0][0]:
            return 0  # the common case costs one read, not a write transaction
        with self._tx() as cur:
            # Serializes pumps (several collectors): event ids then commit in increasing order.
            self._run(cur, "UPDATE event_pump SET passes = passes + 1 WHERE id = 1")
            return (
                self._pump_alarms(cur, now_ms, limit)
                + self._pump_status(cur, now_ms, limit)
                + self._pump_audits(cur, now_ms, limit)
                + self._pump_work_orders(cur, now_ms, limit)
            )

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

    def _pump_status(self, cur: Cursor, now_ms: int, limit: int) -> int:
        rows = self._run(
            cur,
            "SELECT id, entity, ident, status, ts_ms, reason, gateway_id, received_ms"
            " FROM status_log WHERE NOT evented ORDER BY id LIMIT :n",
            {"n": limit},
        )
        for r in rows:
            data: dict[str, Any] = {r[1]: r[2], "status": r[3], "ts_ms": r[4], "reason": r[5]}
            subject = r[2]
            if r[6] is not None:  # a device: named with its gateway
                data["gateway"] = r[6]
                subject = f"{r[6]}/{r[2]}"
            if r[7] is not None:
                data["received_ms"] = r[7]
            self._log_event(cur, f"{r[1]}.{r[3]}", r[4], now_ms, subject, data)
            self._run(cur, "UPDATE status_log SET evented = TRUE WHERE id = :id", {"id": r[0]})
        return len(rows)

    def last_event_id(self) -> int:
        """The newest event id (0 if the log is empty)."""
        return int(self._query("SELECT COALESCE(max(id), 0) FROM events")[0][0])

    def events(
        self, after_id: int, limit: int = 500, types: Sequence[str] = ()
    ) -> list[EventRecord]:
        """Events with id > after_id, oldest first; `types` are LIKE patterns (empty = all)."""
        params: dict[str, Any] = {"after": after_id, "n": limit}
        where = ""
        if types:
            params.update({f"t{i}": t for i, t in enumerate(types)})
            where = " AND (" + " OR ".join(f"type LIKE :t{i}" for i in range(len(types))) + ")"
        rows = self._query(
            "SELECT id, type, ts_ms, created_ms, subject, data FROM events"  # noqa: S608
            f" WHERE id > :after{where} ORDER BY id LIMIT :n",
            params,
        )
        return [EventRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]

    _ALARM_COLS = (
        "a.id, a.alarm_id, a.gateway_id, a.device, a.point, a.alarm_type, a.severity, a.state,"
        " a.raised_ms, a.state_ms, a.value, a.limit_value, a.message, a.ack_by, a.ack_note,"
        " b.asset, a.received_ms, k.outcome, k.ref, k.reason"
    )
    _ALARM_FROM = (
        " FROM alarm_index a LEFT JOIN device_assets b"
        " ON b.gateway_id = a.gateway_id AND b.device = a.device"
        " LEFT JOIN alarm_links k ON k.alarm_id = a.alarm_id AND k.activation ="
        " (SELECT max(x.activation) FROM alarm_links x WHERE x.alarm_id = a.alarm_id)"
    )

    @staticmethod
    def _alarm_view(r: Sequence[Any]) -> AlarmView:
        value, limit = json.loads(r[10]), json.loads(r[11])
        return AlarmView(
            r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], value, limit, *r[12:20]
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
    ) -> list[AlarmView]:
        """Alarm occurrences matching every given filter, newest first, ids below `before_id`;
        `outcomes` selects by where they ended (`pending`: not handled yet)."""
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
        rows = self._query(
            f"SELECT {self._ALARM_COLS}{self._ALARM_FROM}"
            " WHERE (CAST(:gw AS TEXT) IS NULL OR a.gateway_id = :gw)"
            " AND (CAST(:dev AS TEXT) IS NULL OR a.device = :dev)"
            " AND (CAST(:asset AS TEXT) IS NULL OR b.asset = :asset)"
            " AND (CAST(:since AS BIGINT) IS NULL OR a.raised_ms >= :since)"
            " AND (CAST(:until AS BIGINT) IS NULL OR a.raised_ms < :until)"
            f" AND (CAST(:before AS BIGINT) IS NULL OR a.id < :before){where}"
            " ORDER BY a.id DESC LIMIT :n",
            params,
        )
        return [self._alarm_view(r) for r in rows]

    def alarm(self, alarm_id: str) -> AlarmView | None:
        """One alarm occurrence by its edge id (`gateway:seq`)."""
        rows = self._query(
            f"SELECT {self._ALARM_COLS}{self._ALARM_FROM} WHERE a.alarm_id = :aid",
            {"aid": alarm_id},
        )
        return self._alarm_view(rows[0]) if rows else None

    def command_reply(self, gateway: str, command_id: str) -> dict[str, Any] | None:
        """A gateway's reply to a command, if it arrived."""
        rows = self._query(
            "SELECT ok, result, error, sent_ms, received_ms FROM command_replies"
            " WHERE gateway_id = :gw AND command_id = :id",
            {"gw": gateway, "id": command_id},
        )
        if not rows:
            return None
        r = rows[0]
        return {
            "ok": bool(r[0]),
            "result": json.loads(r[1]),
            "error": r[2],
            "sent_ms": r[3],
            "received_ms": r[4],
        }

    _HOOK_COLS = "id, url, events, description, created_ms, cursor"

    @staticmethod
    def _webhook(r: Sequence[Any]) -> Webhook:
        return Webhook(r[0], r[1], tuple(json.loads(r[2])), r[3], r[4], r[5])

    def create_webhook(
        self, url: str, events: Sequence[str], secret: str, description: str, now_ms: int
    ) -> Webhook:
        """Register an endpoint; it receives events logged from now on."""
        rows = self._query(
            "INSERT INTO webhooks (url, events, secret, description, created_ms, cursor)"  # noqa: S608
            " VALUES (:url, :ev, :secret, :desc, :now,"
            " (SELECT COALESCE(max(id), 0) FROM events))"
            f" RETURNING {self._HOOK_COLS}",
            {
                "url": url,
                "ev": json.dumps(list(events)),
                "secret": secret,
                "desc": description,
                "now": now_ms,
            },
        )
        return self._webhook(rows[0])

    def webhooks(self) -> list[Webhook]:
        """Every registered webhook."""
        rows = self._query(
            f"SELECT {self._HOOK_COLS} FROM webhooks ORDER BY id"  # noqa: S608 - constant
        )
        return [self._webhook(r) for r in rows]

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
            patterns = type_patterns(",".join(hook.events))
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
            "SELECT d.id, d.webhook_id, w.url, w.secret, d.attempts, e.id, e.type, e.ts_ms,"
            " e.created_ms, e.subject, e.data FROM webhook_deliveries d"
            " JOIN webhooks w ON w.id = d.webhook_id JOIN events e ON e.id = d.event_id"
            " WHERE d.status = 'pending' AND d.next_ms <= :now ORDER BY d.next_ms, d.id LIMIT :n",
            {"now": now_ms, "n": limit},
        )
        claimed = []
        with self._tx() as cur:
            for r in rows:
                self._run(
                    cur,
                    "UPDATE webhook_deliveries SET next_ms = :lease"
                    " WHERE id = :id AND status = 'pending' AND next_ms <= :now",
                    {"lease": now_ms + lease_ms, "id": r[0], "now": now_ms},
                )
                if cur.rowcount == 1:
                    event = EventRecord(r[5], r[6], r[7], r[8], r[9], json.loads(r[10]))
                    claimed.append(DueDelivery(r[0], r[1], r[2], r[3], r[4], event))
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
            "SELECT id, webhook_id, event_id, status, attempts, next_ms, response_code, error,"
            " created_ms, updated_ms FROM webhook_deliveries WHERE webhook_id = :id"
            " ORDER BY id DESC LIMIT :n",
            {"id": webhook_id, "n": limit},
        )
        return [Delivery(*r) for r in rows]

    def count_deliveries_by_status(self) -> dict[str, int]:
        """How many deliveries are in each status."""
        rows = self._query("SELECT status, count(*) FROM webhook_deliveries GROUP BY status")
        return {r[0]: int(r[1]) for r in rows}
