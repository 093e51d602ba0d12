"""The store-and-forward outbox: readings backlog, event lanes, frozen batches, acknowledgement.

Durability per write (one WAL database, file.py; `synchronous` is switched per transaction):
- readings backlog: NORMAL. kill -9 loses nothing committed; a power cut may lose the last
  few hundred milliseconds of telemetry, and that is the price of not wearing out the SD card.
  The backlog is kept as chunks of readings already packed as wire rows (one row per flush, not
  per reading; packing.py), so draining it is byte concatenation, not per-reading work; a
  reading that went through the backlog is flagged historical.
- alarm and device events, the alarm log (alarmlog.py), counters and *freezing a batch*: FULL.
  A batch's seq must be on disk before the batch is published, or a power cut could reuse the
  seq for other data, which the collector would then drop as a duplicate. A backlog is frozen a
  window of batches per commit (FREEZE_WINDOW), not one fsync per batch; after a crash,
  whatever of the window was not acknowledged is resent under the same seqs.
- deleting a PUBACKed batch: NORMAL, and grouped (ACK_BATCH / ACK_DELAY_S). Losing that
  delete only causes a harmless redelivery under the same seq.
- the health snapshot (health.py): written at most every HEALTH_EVERY_S, or soon after a state
  change, inside a flush transaction when there is one (no extra commit per reading or poll).

A full disk is a full buffer (file.py): the oldest telemetry is evicted to make room, and
counted; telemetry that still does not fit is counted as dropped, an alarm or device event that
does not raises BufferFull.

Batches are cut to `batch_bytes`, which the uplink lowers to what the broker takes; a frozen
batch over it is split under new seqs, in its place in its lane, and its seq is recorded in
`retired` (the proof books count it beside the seqs still waiting).

`Outbox` is also the daemon's one handle on the file: it opens the alarm log and the health
snapshot on the same connection and passes their calls on.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifeline.edge.buffer.alarmlog import AlarmLog
from lifeline.edge.buffer.file import BufferFile
from lifeline.edge.buffer.health import HealthSnapshot
from lifeline.edge.buffer.packing import (
    Sample,
    cut,
    encode_events,
    live_rows,
    pack_chunks,
    pack_event,
    record_rows,
    unpack_event,
)
from lifeline.edge.buffer.schema import (
    LANE_ALARM,
    LANE_DATA,
    LANE_DEVICE,
    epoch_text,
    get_meta,
    new_epoch_number,
    set_meta,
)
from lifeline.edge.clock import wall_ms
from lifeline.wire import (
    AlarmBatch,
    AlarmEvent,
    DataBatch,
    DeviceEvent,
    DeviceEventBatch,
    decode,
    encode_data,
    encode_data_packed,
)

if TYPE_CHECKING:
    from lifeline.edge.buffer.health import GatewayHealth

log = logging.getLogger("lifeline.edge.outbox")

# Backlog batches given their seqs in one FULL-sync commit while draining (an fsync costs
# milliseconds, a publish tens of microseconds), capped at a share of the buffer because
# frozen readings can no longer be evicted.
FREEZE_WINDOW = 256
FREEZE_SHARE = 8  # at most 1/8 of the buffer's bytes frozen ahead
# PUBACKed batches deleted per transaction (few enough that their pages, read to publish
# them, are still in SQLite's page cache: deleting a record walks its overflow pages) ...
ACK_BATCH = 16
ACK_DELAY_S = 0.25  # ... or after this long: a delete lost in a crash only means a resend
_ENVELOPE_SLACK = 512  # bytes of a batch that are not records (header, ids, array size)
_EVENTS_PER_BATCH = 1000  # alarm or device events in one batch, at most
_EVICT_FRACTION = 0.05  # of the backlog, per eviction round: a little at a time, counted


@dataclass(frozen=True, slots=True)
class Frozen:
    """A batch with its seq and payload fixed on disk, waiting for a PUBACK."""

    seq: int
    lane: int
    n: int
    payload: bytes


@dataclass(slots=True)
class _Batch:
    """In-memory index of a frozen batch (the `batches` row), so publishing needs no scan."""

    seq: int
    lane: int
    n: int
    created_ms: int
    session: str
    lo: int | None  # backlog batch: its records are chunks lo..hi
    hi: int | None
    payload: bytes | None  # held for live batches; None: read from disk when published
    size: int  # payload bytes (for a backlog batch: its chunks plus the envelope, at most)


def backlog_readings(db: sqlite3.Connection) -> int:
    """Readings in the backlog not yet frozen into a batch (the chunks after the last one a
    frozen batch holds)."""
    return int(
        db.execute(
            "SELECT coalesce(sum(n), 0) FROM chunks"
            " WHERE id > (SELECT coalesce(max(hi), 0) FROM batches)"
        ).fetchone()[0]
    )


class Outbox:
    """The gateway's SQLite buffer; all methods run on one thread (the daemon's event loop).

    Opens (or creates) the file at `path` for gateway `gateway` and this process's `session`;
    `max_mb` bounds it (telemetry is evicted beyond), batches hold at most `batch_records`
    readings and `batch_bytes` payload bytes; `clock` (monotonic seconds) times the health
    snapshot. Raises sqlite3.Error if the file cannot be opened or brought up to this schema.
    """

    def __init__(
        self,
        path: str | Path,
        gateway: str,
        session: str,
        max_mb: float = 256,
        batch_records: int = 2000,
        batch_bytes: int = 128 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gateway = gateway
        self.session = session
        self.batch_records = batch_records
        self.batch_bytes = batch_bytes
        self.path = Path(path)
        self.file = BufferFile(
            self.path, int(max_mb * 1024 * 1024), self._evict_if_full, self._disk_full_changed
        )
        self.db = self.file.db
        self.health = HealthSnapshot(self.file, clock)
        self.alarm_log = AlarmLog(self.file)
        self.disk_dropped = 0  # readings not stored at all for lack of room (this process)
        self.on_disk_full: Callable[[bool], None] | None = None  # told when a full disk starts/ends
        self.epoch = self._epoch()
        self.next_seq = get_meta(self.db, "next_seq", 1)
        self.evicted = get_meta(self.db, "evicted", 0)
        # Readings ever committed (with `evicted`, what the proof suites account against).
        self.committed = get_meta(self.db, "committed", 0)
        self._frozen_hi = self.db.execute("SELECT coalesce(max(hi), 0) FROM batches").fetchone()[0]
        self.backlog = backlog_readings(self.db)
        self.pending_events = self.db.execute("SELECT count(*) FROM events").fetchone()[0]
        # Frozen, unacknowledged batches per lane in seq order (alarm, device, data).
        self._lanes: tuple[dict[int, _Batch], ...] = ({}, {}, {})
        for seq, lane, n, created, session, lo, hi, size in self.db.execute(
            "SELECT seq, lane, n, created_ms, session, lo, hi, coalesce(length(payload),"
            " (SELECT sum(length(body)) FROM chunks WHERE id BETWEEN lo AND hi) + ?)"
            " FROM batches ORDER BY coalesce(place, seq)",
            (_ENVELOPE_SLACK,),
        ):
            self._lanes[lane][seq] = _Batch(seq, lane, n, created, session, lo, hi, None, size)
        self.retired = get_meta(self.db, "retired", 0)  # frozen batches split for the broker
        self._oversize = True  # frozen batches may be over batch_bytes: check before publishing
        self._mem: list[Sample] = []
        self._acks: list[int] = []  # PUBACKed, delete pending
        self._acks_since = 0.0

    def _epoch(self) -> str:
        """The buffer's epoch, created with it: batch keys are (gateway, epoch, seq).

        A new buffer (new SD card, deleted or corrupt file) numbers its batches from 1 again; the
        new epoch keeps them from being taken for duplicates of the old buffer's batches.
        """
        number = get_meta(self.db, "epoch", 0)
        if not number:
            number = new_epoch_number()
            self.file.write(lambda: set_meta(self.db, "epoch", number), "FULL")
        return epoch_text(number)

    # --- the file's bound and a full disk (file.py) ------------------------------------------

    @property
    def max_bytes(self) -> int:
        """The buffer's configured bound (`max_mb`), in bytes."""
        return self.file.max_bytes

    @property
    def cap_bytes(self) -> int:
        """The bound in force, in bytes: lower than `max_bytes` while the disk is full."""
        return self.file.cap_bytes

    @property
    def disk_full_since_ms(self) -> int | None:
        """UTC ms since when the disk under the buffer is full; None while it has room."""
        return self.file.disk_full_since_ms

    @property
    def full_wait_s(self) -> float:
        """How long an alarm or device event write tries on a full disk before BufferFull."""
        return self.file.full_wait_s

    @full_wait_s.setter
    def full_wait_s(self, seconds: float) -> None:
        self.file.full_wait_s = seconds

    def used_bytes(self) -> int:
        """Bytes of the database in use (free pages excluded)."""
        return self.file.used_bytes()

    def check_disk(self) -> None:
        """Called about once a second: keep the reserve while the disk is tight, and end a
        full-disk episode once the filesystem has room again (the bound goes back to max_mb)."""
        self.file.check_disk()

    def _disk_full_changed(self, full: bool) -> None:
        """A full disk began or ended: one log line, the health snapshot and the daemon told."""
        if full:
            log.warning(
                "disk full under the buffer %s: evicting the oldest telemetry to make room"
                " (alarms are kept); the buffer is bounded by the disk until it has room again",
                self.path,
            )
        else:
            log.warning(
                "disk under the buffer %s has room again (%.1f MB free): the buffer is bounded by"
                " max_mb again; %d readings evicted in all, %d could not be stored at all",
                self.path,
                self.file.reserve.free_bytes() / 1e6,
                self.evicted,
                self.disk_dropped,
            )
        self.health.changed()
        if self.on_disk_full is not None:
            self.on_disk_full(full)

    def _dropped(self, n: int) -> None:
        """Readings that could not be stored at all: counted (in memory), never silent."""
        self.disk_dropped += n

    # --- writes ---------------------------------------------------------------------------

    def add(self, samples: Iterable[Sample]) -> None:
        """Queue samples in memory; `flush` commits them (one transaction per flush)."""
        self._mem.extend(samples)

    @property
    def unflushed(self) -> tuple[Sample, ...]:
        """Samples held in memory, not yet committed, oldest first."""
        return tuple(self._mem)

    def add_alarm_events(self, events: Sequence[AlarmEvent]) -> None:
        """Commit alarm events to the outgoing lane and the local alarm log (FULL sync).

        On a full disk telemetry is evicted to make room; BufferFull if that is not enough.
        """
        self._add_events(LANE_ALARM, events, self.alarm_log.log)

    def add_device_events(self, events: Sequence[DeviceEvent]) -> None:
        """Commit device online/offline events to their lane (FULL sync); BufferFull as above."""
        self._add_events(LANE_DEVICE, events)

    def _add_events(
        self,
        lane: int,
        events: Sequence[AlarmEvent] | Sequence[DeviceEvent],
        also: Callable[[Any], None] | None = None,
    ) -> None:
        """Queue events on `lane`, plus `also(events)`, in one FULL-sync transaction."""
        if not events:
            return

        def insert() -> None:
            self.db.executemany(
                "INSERT INTO events (lane, body) VALUES (?, ?)",
                [(lane, pack_event(e)) for e in events],
            )
            if also is not None:
                also(events)

        self.file.write(insert, "FULL")
        self.pending_events += len(events)

    def flush(self, live_since_ms: int | None, room: int) -> int:
        """Commit the samples held in memory; return how many batches were frozen directly.

        With the uplink connected (`live_since_ms` set), no backlog and `room` for more
        batches, samples go straight into frozen batches (one row per batch, not per
        reading); otherwise they join the readings backlog in arrival order.
        """
        mem, self._mem = self._mem, []
        if not mem:
            return 0
        if live_since_ms is not None and self.backlog == 0 and room > 0:
            return self._freeze_rows(LANE_DATA, live_rows(mem, live_since_ms))
        self._store_backlog(mem)
        return 0

    def _store_backlog(self, mem: list[Sample]) -> None:
        """Pack samples as historical wire rows, cut into chunks that fit one batch, commit."""
        chunks = pack_chunks(mem, self.batch_records, self.batch_bytes - _ENVELOPE_SLACK)

        def insert() -> None:
            self.db.executemany("INSERT INTO chunks (n, body) VALUES (?, ?)", chunks)
            set_meta(self.db, "committed", self.committed + len(mem))
            self.health.put_if_due()

        if not self.file.try_write(insert, "NORMAL"):
            self._dropped(len(mem))
            return
        self.committed += len(mem)
        self.backlog += len(mem)
        self._evict_if_full()

    def _evict_if_full(self) -> int:
        """Evict the oldest unfrozen telemetry while the buffer is over its bound; return how
        many readings went (counted in `evicted`, persisted with the delete)."""
        total = 0
        while self.backlog and self.file.used_bytes() > self.file.cap_bytes:
            want = max(1, int(self.backlog * _EVICT_FRACTION))
            ids, n = [], 0
            for chunk_id, size in self.db.execute(
                "SELECT id, n FROM chunks WHERE id > ? ORDER BY id", (self._frozen_hi,)
            ):
                ids.append((chunk_id,))
                n += size
                if n >= want:
                    break
            self.file.sync("NORMAL")
            try:  # not through file.attempt: making room must not recurse into making room
                with self.db:
                    self.db.execute("BEGIN IMMEDIATE")
                    self.db.executemany("DELETE FROM chunks WHERE id = ?", ids)
                    set_meta(self.db, "evicted", self.evicted + n)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_FULL:
                    raise
                break
            self.evicted += n
            self.backlog -= n
            total += n
        return total

    # --- freezing and acknowledging ---------------------------------------------------------

    def _freeze_rows(self, lane: int, rows: list[list[Any]]) -> int:
        """Split wire-shaped data rows into batches, give each a seq and commit (FULL)."""
        frozen = []
        seq = self.next_seq
        now = wall_ms()
        for chunk in self._chunks(rows, seq, now):
            frozen.append((seq, lane, len(chunk[0]), now, self.session, chunk[1]))
            seq += 1

        def count() -> None:
            set_meta(self.db, "committed", self.committed + len(rows))
            self.health.put_if_due()

        if not self._commit_frozen(frozen, held=True, also=count):
            self._dropped(len(rows))
            return 0
        self.committed += len(rows)
        return len(frozen)

    def _commit_frozen(
        self,
        frozen: list[tuple[Any, ...]],
        held: bool,
        also: Callable[[], None] | None = None,
        sizes: Sequence[int] = (),
    ) -> bool:
        """Insert frozen batches (with payload, or chunk range lo..hi) and advance `next_seq`.

        One FULL-synced transaction with whatever `also` writes; then the in-memory index
        (`sizes`: the payload bytes of chunk-range batches). False if the disk stayed full
        (nothing was written; try again later).
        """
        columns_values = (
            "payload) VALUES (?, ?, ?, ?, ?, ?)" if held else "lo, hi) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        next_seq = frozen[-1][0] + 1

        def insert() -> None:
            self.db.executemany(
                f"INSERT INTO batches (seq, lane, n, created_ms, session, {columns_values}", frozen
            )
            if also is not None:
                also()
            set_meta(self.db, "next_seq", next_seq)

        if not self.file.try_write(insert, "FULL"):
            return False
        self.next_seq = next_seq
        self._index(frozen, held=held, sizes=sizes)
        return True

    def _chunks(
        self, rows: list[list[Any]], seq: int, now: int
    ) -> Iterable[tuple[list[list[Any]], bytes]]:
        """Cut rows into payloads under the record and byte limits."""

        def encode(chunk: list[list[Any]], at: int) -> bytes:
            return encode_data(self.gateway, self.session, self.epoch, at, now, chunk)

        return cut(rows, self.batch_records, self.batch_bytes, encode, seq)

    def _event_chunks(
        self, lane: int, events: list[Any], seq: int, now: int
    ) -> Iterable[tuple[list[Any], bytes]]:
        """Cut alarm or device events into payloads under the record and byte limits."""

        def encode(chunk: list[Any], at: int) -> bytes:
            return encode_events(lane, self.gateway, self.session, self.epoch, at, now, chunk)

        return cut(events, _EVENTS_PER_BATCH, self.batch_bytes, encode, seq)

    # --- fitting frozen batches to the broker ------------------------------------------------

    def set_batch_bytes(self, limit: int) -> None:
        """Cut batches to at most `limit` payload bytes from now on (what the broker takes).

        Batches frozen larger are split before they are published again (`ready`).
        """
        if limit < self.batch_bytes:
            self._oversize = True
        self.batch_bytes = limit

    def _fit(self, exclude: set[int]) -> None:
        """Split every frozen batch over `batch_bytes` (new seqs; the old ones retired).

        Not those in `exclude` (in flight: the broker may still take them, and their records
        would then arrive twice); they are looked at again next time.
        """
        self._oversize = False
        for lane in self._lanes:
            for b in [b for b in lane.values() if b.size > self.batch_bytes]:
                if b.seq in exclude or (not self._split(b) and b.n > 1):
                    self._oversize = True  # in flight, or the disk did not let us

    def _split(self, b: _Batch) -> bool:
        """Replace frozen batch `b` by batches within `batch_bytes` under new seqs, in its place
        in the lane; `b.seq` is retired (table `retired`). One FULL commit. False if it cannot
        be cut smaller (one record) or the disk does not let us.
        """
        now = wall_ms()
        seq = self.next_seq
        msg = decode(self._payload(b))
        if isinstance(msg, DataBatch):
            rows = record_rows(msg.records)
            pieces = [(len(c), p) for c, p in self._chunks(rows, seq, now)]
        elif isinstance(msg, AlarmBatch | DeviceEventBatch):
            events = list(msg.events)
            pieces = [(len(c), p) for c, p in self._event_chunks(b.lane, events, seq, now)]
        else:
            raise TypeError(f"batch {b.seq} holds a {msg.kind} message")
        if len(pieces) < 2:
            return False
        frozen = [(seq + i, b.lane, n, now, self.session, p) for i, (n, p) in enumerate(pieces)]
        last = seq + len(pieces) - 1
        # The new batches go where the old one was in its lane, after a restart too.
        start, end = self.db.execute(
            "SELECT coalesce(place, seq), (SELECT min(coalesce(place, seq)) FROM batches"
            " WHERE lane = ?1 AND coalesce(place, seq) > coalesce(b.place, b.seq))"
            " FROM batches AS b WHERE seq = ?2",
            (b.lane, b.seq),
        ).fetchone()
        end = start + 1 if end is None else end
        step = (end - start) / (len(pieces) + 1)
        placed = [(*f, start + step * (i + 1)) for i, f in enumerate(frozen)]

        def write() -> None:
            self.db.executemany(
                "INSERT INTO batches (seq, lane, n, created_ms, session, payload, place)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                placed,
            )
            if b.lo is not None:
                self.db.execute("DELETE FROM chunks WHERE id BETWEEN ? AND ?", (b.lo, b.hi))
            self.db.execute("DELETE FROM batches WHERE seq = ?", (b.seq,))
            self.db.execute(
                "INSERT INTO retired (seq, lane, n, first_seq, last_seq, retired_ms)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (b.seq, b.lane, b.n, seq, last, now),
            )
            set_meta(self.db, "retired", self.retired + 1)
            set_meta(self.db, "next_seq", last + 1)

        if not self.file.try_write(write, "FULL"):
            return False
        self.next_seq = last + 1
        self.retired += 1
        lane = self._lanes[b.lane]
        replacement = [_Batch(f[0], b.lane, f[2], now, self.session, None, None, f[5], len(f[5]))
                       for f in frozen]  # fmt: skip
        order = list(lane.values())
        at = order.index(b)
        lane.clear()
        lane.update((x.seq, x) for x in (*order[:at], *replacement, *order[at + 1 :]))
        log.info(
            "batch %d (%d bytes, %d records) split into %d..%d for the broker",
            b.seq, b.size, b.n, seq, last,
        )  # fmt: skip
        return True

    def ready(self, exclude: set[int], limit: int, live_since_ms: int) -> Iterator[Frozen]:
        """Up to `limit` frozen batches not in `exclude`: alarms first, then device, then data.

        Freezes pending events and backlog as needed, at once; anything sampled before
        `live_since_ms` (the current broker connection) is flagged historical. A batch's bytes
        are read when the iteration reaches it, so the uplink sends the first while the rest
        are still on disk: consume the iterator before anything else changes the outbox.
        """
        if self.pending_events:  # always: an alarm overtakes a data window frozen earlier
            self._freeze_events(live_since_ms)
        if self._oversize:
            self._fit(exclude)
        picked: list[_Batch] = []
        for lane in self._lanes:
            self._pick(lane, exclude, limit, picked)
        if len(picked) < limit and self.backlog and self._freeze_backlog(limit - len(picked)):
            if self._oversize:  # a chunk stored before batch_bytes was lowered
                self._fit(exclude)
                picked = [b for b in picked if b.seq in self._lanes[b.lane]]
            # The data lane again, for the batches just frozen (not those already picked).
            self._pick(self._lanes[LANE_DATA], exclude | {b.seq for b in picked}, limit, picked)
        return (Frozen(b.seq, b.lane, b.n, self._payload(b)) for b in picked)

    @staticmethod
    def _pick(lane: dict[int, _Batch], exclude: set[int], limit: int, out: list[_Batch]) -> None:
        for b in lane.values():
            if len(out) >= limit:
                return
            if b.seq not in exclude:
                out.append(b)

    def _payload(self, b: _Batch) -> bytes:
        """The batch's bytes, the same on every (re)publish: held, stored, or chunks wrapped."""
        if b.payload is not None:
            return b.payload
        if b.lo is None:
            (payload,) = self.db.execute(
                "SELECT payload FROM batches WHERE seq = ?", (b.seq,)
            ).fetchone()
            return bytes(payload)
        if b.lo == b.hi:  # a batch of one chunk: a blob handle skips a statement (~30 % faster)
            with self.db.blobopen("chunks", "body", b.lo, readonly=True) as blob:
                body = blob.read()
        else:
            rows = self.db.execute(
                "SELECT body FROM chunks WHERE id BETWEEN ? AND ? ORDER BY id", (b.lo, b.hi)
            )
            body = b"".join(part for (part,) in rows)
        return encode_data_packed(
            self.gateway, b.session, self.epoch, b.seq, b.created_ms, b.n, body
        )

    def _index(self, rows: Sequence[tuple[Any, ...]], held: bool, sizes: Sequence[int]) -> None:
        """Add freshly committed `batches` rows to the in-memory lanes."""
        for i, (seq, lane, n, created, session, *rest) in enumerate(rows):
            if held:
                self._lanes[lane][seq] = _Batch(
                    seq, lane, n, created, session, None, None, rest[0], len(rest[0])
                )
            else:
                self._lanes[lane][seq] = _Batch(
                    seq, lane, n, created, session, rest[0], rest[1], None, sizes[i]
                )

    def frozen_count(self) -> int:
        """Batches frozen and not yet acknowledged."""
        return sum(len(lane) for lane in self._lanes)

    def _freeze_events(self, live_since_ms: int) -> None:
        rows = self.db.execute("SELECT id, lane, body FROM events ORDER BY id").fetchall()
        if not rows:
            self.pending_events = 0
            return
        now = wall_ms()
        seq = self.next_seq
        frozen = []
        for lane in (LANE_ALARM, LANE_DEVICE):
            events = [
                replace(e, historical=True) if e.ts_ms < live_since_ms else e
                for e in (unpack_event(lane, body) for _, ln, body in rows if ln == lane)
            ]
            for chunk, payload in self._event_chunks(lane, events, seq, now):
                frozen.append((seq, lane, len(chunk), now, self.session, payload))
                seq += 1

        def clear_events() -> None:
            self.db.execute("DELETE FROM events WHERE id <= ?", (rows[-1][0],))

        if self._commit_frozen(frozen, held=True, also=clear_events):
            self.pending_events = 0

    def _freeze_backlog(self, need: int) -> int:
        """Give the oldest chunks seqs, in batches of whole chunks, all in one commit.

        Freezes `need` batches, or a window of up to FREEZE_WINDOW batches and a share of
        the buffer if that is more. Only (seq, chunk range) is written: the records stay where
        they are until the PUBACK. Returns how many batches were frozen.
        """
        share = self.max_bytes // FREEZE_SHARE // self.batch_bytes
        batches = max(need, min(FREEZE_WINDOW, share))
        now = wall_ms()
        seq = self.next_seq
        frozen: list[tuple[int, int, int, int, str, int, int]] = []
        sizes: list[int] = []  # payload bytes of each, at most
        taken = 0
        n = size = lo = hi = 0
        limit_bytes = self.batch_bytes - _ENVELOPE_SLACK
        rows = self.db.execute(
            "SELECT id, n, length(body) FROM chunks WHERE id > ? ORDER BY id LIMIT ?",
            (self._frozen_hi, batches * 64),
        ).fetchall()
        for chunk_id, chunk_n, chunk_bytes in rows:
            if n and (n + chunk_n > self.batch_records or size + chunk_bytes > limit_bytes):
                frozen.append((seq, LANE_DATA, n, now, self.session, lo, hi))
                sizes.append(size + _ENVELOPE_SLACK)
                seq += 1
                taken += n
                n = size = 0
                if len(frozen) >= batches:
                    break
            if not n:
                lo = chunk_id
            n += chunk_n
            size += chunk_bytes
            hi = chunk_id
        if n and len(frozen) < batches:
            frozen.append((seq, LANE_DATA, n, now, self.session, lo, hi))
            sizes.append(size + _ENVELOPE_SLACK)
            seq += 1
            taken += n
        if not frozen:
            self.backlog = 0
            return 0
        if not self._commit_frozen(frozen, held=False, sizes=sizes):
            return 0
        if max(sizes) > self.batch_bytes:  # a chunk stored when batches could be larger
            self._oversize = True
        self._frozen_hi = frozen[-1][-1]
        self.backlog = max(0, self.backlog - taken)
        return len(frozen)

    def acked(self, seqs: Sequence[int]) -> None:
        """Batches the broker acknowledged: they never go out again and are deleted soon."""
        if not seqs:
            return
        if not self._acks:
            self._acks_since = time.monotonic()
        for seq in seqs:
            for lane in self._lanes:
                if lane.pop(seq, None) is not None:
                    break
        self._acks.extend(seqs)
        if len(self._acks) >= ACK_BATCH or time.monotonic() - self._acks_since > ACK_DELAY_S:
            self.commit_acks()

    def commit_acks(self) -> None:
        """Delete acknowledged batches and their chunks (NORMAL sync: a lost delete resends)."""
        if not self._acks:
            return
        keys = [(s,) for s in self._acks]

        def delete() -> None:
            self.db.executemany(
                "DELETE FROM chunks WHERE id BETWEEN (SELECT lo FROM batches WHERE seq = ?1)"
                " AND (SELECT hi FROM batches WHERE seq = ?1)",
                keys,
            )
            self.db.executemany("DELETE FROM batches WHERE seq = ?", keys)

        if self.file.try_write(delete, "NORMAL"):  # else kept for the next try: a delete frees room
            self._acks = []

    # --- the health snapshot (health.py) -----------------------------------------------------

    @property
    def health_source(self) -> Callable[[], GatewayHealth] | None:
        """Where the health snapshot comes from (the daemon sets it); None: none is written."""
        return self.health.source

    @health_source.setter
    def health_source(self, source: Callable[[], GatewayHealth] | None) -> None:
        self.health.source = source

    def health_changed(self) -> None:
        """A device or the uplink changed state: write the snapshot soon (with the next write)."""
        self.health.changed()

    def save_health(self) -> bool:
        """Write the health snapshot in its own transaction if it is due; True if written.

        The daemon calls this about once a second: with readings flowing, the flush
        transactions have written it already and this does nothing.
        """
        return self.health.save()

    # --- the alarm log (alarmlog.py) ---------------------------------------------------------

    def open_alarms(self) -> list[AlarmEvent]:
        """The latest event of every alarm not back to normal (to restore rules after restart)."""
        return self.alarm_log.open_alarms()

    def next_alarm_number(self) -> int:
        """Take the next alarm number from a persisted counter (ids never repeat in an epoch).

        Raises BufferFull if even that cannot be written.
        """
        return self.alarm_log.next_alarm_number()

    def take_ack_requests(self) -> list[tuple[str, str, str]]:
        """Acknowledgements queued by the crew CLI: (alarm id, who, note), removed once read."""
        return self.alarm_log.take_ack_requests()

    def prune_alarm_log(self, retention_days: float) -> int:
        """Delete alarm log rows older than the retention, except alarms still open."""
        return self.alarm_log.prune(retention_days)

    def close(self) -> None:
        """Commit what is in memory, pending deletes and a last health snapshot; close."""
        self.commit_acks()
        if self._mem:
            self._store_backlog(self._mem)
            self._mem = []
        self.health.save_stopped()
        self.file.close()
