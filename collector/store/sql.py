"""The store shared by the SQL backends: each aggregate's rows composed into one SqlStore, and
the write path that turns a commit's messages into rows of every aggregate.

Subclasses (sqlite.py, postgres.py) supply connections, migrations and the readings hot path.
Shared SQL uses `:name` parameters (sqlite3 style); the PostgreSQL backend rewrites them.
"""

import logging
from abc import abstractmethod
from collections.abc import Sequence

from lifeline.collector.grids import GridMap
from lifeline.collector.models import Accepted, Incoming, Rejected, Status, WriteResult
from lifeline.collector.store.alarms_sql import AlarmRows
from lifeline.collector.store.assets_sql import AssetRows
from lifeline.collector.store.base import StoreDataError
from lifeline.collector.store.cases_sql import CaseRows
from lifeline.collector.store.dead_letters_sql import DeadLetterRows
from lifeline.collector.store.events_sql import EventLogRows
from lifeline.collector.store.gateways_sql import GatewayRows
from lifeline.collector.store.keys_sql import KeyRows
from lifeline.collector.store.readings_sql import FlaggedRow, ReadingRow, ReadingRows
from lifeline.collector.store.rows import Change, Commit, Cursor
from lifeline.collector.store.webhooks_sql import WebhookRows
from lifeline.wire import (
    EARLIEST_PLAUSIBLE_MS,
    AlarmBatch,
    Birth,
    CommandReply,
    DataBatch,
    Death,
    DeviceEventBatch,
    encode,
)
from lifeline.wire import Status as StatusMsg

log = logging.getLogger(__name__)

BatchKey = tuple[str, str, int]  # gateway, buffer epoch, seq: the idempotency key
KeyedDigest = tuple[str, str, int, bytes | None]  # a batch key and its payload digest


class SqlStore(
    ReadingRows,
    GatewayRows,
    AssetRows,
    AlarmRows,
    CaseRows,
    DeadLetterRows,
    KeyRows,
    EventLogRows,
    WebhookRows,
):
    """Every aggregate's rows, and the write path across them; a backend adds connections,
    migrations and the readings hot path."""

    # (gateway, epoch) pairs known to be recorded, with their rank (first seen, ms): most
    # writes then skip `_note_epochs`.
    _known_epochs: dict[tuple[str, str], int]
    # How far ahead of the collector's ctx a sample time may be and still be plausible.
    max_skew_ms: int = 300_000

    def use_grids(self, grids: GridMap | None) -> tuple[int, int]:
        """Place devices and assets in the 单元网格 registry `grids` (None: none) from now on,
        and place every stored one again now (a registry with redrawn grids moves them);
        return how many assets and how many devices changed grid (grids.place's rule)."""
        self.grids = grids
        with self._tx() as cur:
            return self._place_assets(cur), self._place_devices(cur)

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

    # --- ingest -------------------------------------------------------------------------------

    def write(self, items: Sequence[Incoming], now_ms: int) -> WriteResult:
        """Commit a batch in one transaction; ignore durable keys (gateway, epoch, seq) seen before.

        A key seen before with the same bytes is a redelivery, counted as a duplicate. A key
        seen before with different bytes is a conflict: the first stays, the newcomer is
        dead-lettered and logged, never dropped in silence. Raises StoreUnavailable (retry
        later) or StoreDataError (something in `items` cannot be stored); nothing is committed
        then. Any other exception is a bug and leaves as it is.
        """
        try:
            return self._write(items, now_ms)
        except (ValueError, OverflowError) as exc:
            # A value no column can hold fails in Python before the database sees it: an int
            # beyond BIGINT or a double, a string with a lone surrogate (UnicodeEncodeError).
            # That is about this data, so the caller isolates and dead-letters it. Anything
            # else (a TypeError, a KeyError...) is a bug: disguised as a data error it would
            # dead-letter healthy messages one after another, so it is not converted.
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
                    alarm_events += self._apply_birth(cur, item, msg, rank, ctx)
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

    def _apply_birth(self, cur: Cursor, item: Accepted, msg: Birth, rank: int, ctx: Commit) -> int:
        """Apply a birth across aggregates: the gateway and its devices, the asset claims of its
        devices (refused claims dead-lettered), its alarm picture; return how many alarm
        events the picture added (0 if the birth was skipped)."""
        if not self._birth(cur, item.topic.site, msg, rank, ctx):
            return 0
        refused = self._bind_announced(cur, msg, ctx)
        if refused:
            reason = "; ".join(refused) + " (the rest of the birth was applied)"
            letter = Rejected(item.topic_name, item.payload or encode(msg), reason, ctx.now_ms)
            self._dead_letter(cur, letter)
            ctx.dead_letters += 1
        return self._reconcile_alarms(cur, msg, rank, ctx)

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

    # --- event log ----------------------------------------------------------------------------

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
