"""The durable store-and-forward buffer: readings, alarm/device events, frozen batches, alarm log.

Durability per write (one WAL database; `synchronous` is switched per transaction):
- readings backlog: NORMAL. kill -9 loses nothing committed; a power cut may lose the last
  few hundred milliseconds of telemetry, and that is the price of not wearing out the SD card.
  The backlog is kept as chunks of readings already packed as wire rows (one row per flush, not
  per reading), so draining it is byte concatenation, not per-reading work; a reading that went
  through the backlog is flagged historical.
- alarm and device events, the alarm log, counters and *freezing a batch*: FULL. A batch's
  seq must be on disk before the batch is published, or a power cut could reuse the seq for
  other data, which the collector would then drop as a duplicate. A backlog is frozen a
  window of batches per commit (FREEZE_WINDOW), not one fsync per batch; after a crash,
  whatever of the window was not acknowledged is resent under the same seqs.
- deleting a PUBACKed batch: NORMAL, and grouped (ACK_BATCH / ACK_DELAY_S). Losing that
  delete only causes a harmless redelivery under the same seq.
- the health snapshot (`daemon` and `health` tables, read by `lifeline edge status`): kept in
  memory by the daemon and written at most every HEALTH_EVERY_S, or soon after a state change,
  inside a flush transaction when there is one (no extra commit per reading or per poll).

A full disk ("database or disk is full") is a full buffer: every write goes through one helper
that makes room (a reserve file, a log checkpoint, a lower bound and the oldest telemetry
evicted) and tries again; telemetry that still does not fit is counted, an alarm or device event
that does not raises BufferFull (the gateway exits, its supervisor restarts it).

Batches are cut to `batch_bytes`, which the uplink lowers to what the broker takes; a frozen
batch over it is split under new seqs, in its place in its lane, and its seq is recorded in
`retired` (the proof books count it beside the seqs still waiting).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import astuple, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from edge.buffer.reserve import Reserve
from edge.buffer.schema import (
    LANE_ALARM,
    LANE_DATA,
    LANE_DEVICE,
    connect,
    create,
    epoch_text,
    get_meta,
    new_epoch_number,
    set_meta,
)
from wire import (
    AlarmBatch,
    AlarmEvent,
    AlarmState,
    DataBatch,
    DeviceEvent,
    DeviceEventBatch,
    Quality,
    Severity,
    alarm_fields,
    decode,
    encode,
    encode_data,
    encode_data_packed,
)
from wire.messages import Value

log = logging.getLogger("lifeline.edge.outbox")

T = TypeVar("T")

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
# The health snapshot is rewritten this often (a heartbeat), or at the next write after a state
# change; readers call a daemon gone when its heartbeat is several periods old.
HEALTH_EVERY_S = 5.0
HEALTH_MIN_GAP_S = 1.0  # ... and no oftener than this, even when 50 devices answer at start
# When the disk is found full, the buffer's bound drops below what it holds by this share: the
# oldest telemetry is evicted, and later writes reuse its pages inside the file.
FULL_HEADROOM = 0.1
_WRITE_TRIES = 3  # a write that found the disk full: made room for and tried again this often
# ... and an alarm or device event, for this long, before BufferFull: room can come back in a
# moment (a reader such as `edge status` or `edge tail` keeps a checkpoint from truncating the
# write-ahead log while it reads). The event loop waits with it: the alarm comes first.
_FULL_WAIT_S = 3.0

Sample = tuple[str, str, int, Value, Quality]  # device, point, sample ms, value, quality


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    """What the daemon knows about one device: state since when, last good poll, last error."""

    device: str
    state: str  # online, degraded or offline
    since_ms: int
    last_ok_ms: int | None
    last_error: str
    last_error_ms: int | None
    timeouts: int = 0  # timeouts a retry covered, since the daemon started
    detail: str = ""  # why it is degraded or offline ("" when online)


@dataclass(frozen=True, slots=True)
class GatewayHealth:
    """The daemon's health snapshot: itself, its uplink and its devices."""

    pid: int
    started_ms: int
    heartbeat_ms: int
    stopped_ms: int | None
    uplink_connected: bool
    uplink_since_ms: int
    uplink_error: str
    uplink_error_ms: int | None
    last_puback_ms: int | None
    devices: tuple[DeviceHealth, ...]
    clock_plausible: bool = True  # False: the wall clock reads before the software was built
    clock_step_ms: int = 0  # the last wall-clock step seen by this process (signed)
    clock_step_at_ms: int | None = None  # wall time just after it
    clock_steps: int = 0  # steps seen by this process
    disk_full_since_ms: int | None = None  # the disk under the buffer is full since then
    disk_dropped: int = 0  # readings this process could not store at all (disk full, no room)
    buffer_cap_bytes: int | None = None  # the buffer's bound now (lower than max_mb: disk full)


class BufferFull(RuntimeError):
    """The buffer cannot write an alarm or device event even after evicting all telemetry.

    Raised only for what must never be dropped: the gateway exits non-zero on it, so that its
    supervisor (systemd) restarts it and the crew sees it, instead of running without alarms.
    """


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


class Outbox:
    """The gateway's SQLite buffer; all methods run on one thread (the daemon's event loop)."""

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
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.cap_bytes = self.max_bytes  # the bound in force: lower while the disk is full
        self.batch_records = batch_records
        self.batch_bytes = batch_bytes
        self.path = Path(path)
        self.db = connect(path)
        create(self.db)
        self._sync_mode = ""
        self._sync("NORMAL")
        self._page = self.db.execute("PRAGMA page_size").fetchone()[0]
        self.reserve = Reserve.beside(self.path, self._page)
        # The write-ahead log never outgrows the reserve, so the reserve is room enough to
        # checkpoint it into the database on a full disk (reserve.py).
        self._wal_pages(full=False)
        self.disk_full_since_ms: int | None = None
        self.disk_dropped = 0  # readings not stored at all for lack of room (this process)
        self.full_wait_s = _FULL_WAIT_S  # an event write on a full disk tries this long
        self.on_disk_full: Callable[[bool], None] | None = None  # told when a full disk starts/ends
        if self.reserve.tight():
            self.reserve.keep()
        self.epoch = self._epoch()
        self.next_seq = get_meta(self.db, "next_seq", 1)
        self.evicted = get_meta(self.db, "evicted", 0)
        # Readings ever committed (with `evicted`, what the proof suites account against).
        self.committed = get_meta(self.db, "committed", 0)
        self._frozen_hi = self.db.execute("SELECT coalesce(max(hi), 0) FROM batches").fetchone()[0]
        self.backlog = self.db.execute(
            "SELECT coalesce(sum(n), 0) FROM chunks WHERE id > ?", (self._frozen_hi,)
        ).fetchone()[0]
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
        # Where the health snapshot comes from (the daemon sets it); written when due.
        self.health_source: Callable[[], GatewayHealth] | None = None
        self.clock = clock  # for the health snapshot's timing (tests inject one)
        self._health_due = 0.0  # clock time of the next snapshot write; 0: at the next write
        self._health_written = -HEALTH_MIN_GAP_S  # clock time of the last one
        self._health_devices: tuple[str, ...] = ()  # the devices of the last one

    # --- counters -------------------------------------------------------------------------

    def _epoch(self) -> str:
        """The buffer's epoch, created with it: batch keys are (gateway, epoch, seq).

        A new buffer (new SD card, deleted or corrupt file) numbers its batches from 1 again; the
        new epoch keeps them from being taken for duplicates of the old buffer's batches.
        """
        number = get_meta(self.db, "epoch", 0)
        if not number:
            number = new_epoch_number()
            self._write(lambda: set_meta(self.db, "epoch", number), "FULL")
        return epoch_text(number)

    def _sync(self, mode: str) -> None:
        if self._sync_mode != mode:
            self.db.execute(f"PRAGMA synchronous={mode}")
            self._sync_mode = mode

    def next_alarm_number(self) -> int:
        """Take the next alarm number from a persisted counter (ids never repeat in an epoch).

        Raises BufferFull if even that cannot be written.
        """

        def take() -> int:
            n = get_meta(self.db, "next_alarm", 1)
            set_meta(self.db, "next_alarm", n + 1)
            return n

        return self._write(take, "FULL")

    # --- transactions and a full disk -----------------------------------------------------

    def _attempt(self, body: Callable[[], T], sync: str) -> tuple[bool, T | None]:
        """Run `body` in one write transaction; on a full disk make room and try again.

        Returns (True, result), or (False, None) when the disk stayed full.
        """
        for _ in range(_WRITE_TRIES):
            self._sync(sync)
            try:
                with self.db:
                    self.db.execute("BEGIN IMMEDIATE")
                    result = body()
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_FULL:
                    raise
                if not self._make_room():
                    break
            else:
                return True, result
        return False, None

    def _write(self, body: Callable[[], T], sync: str) -> T:
        """A write that must not be dropped (alarms, device events, ids): BufferFull if it is."""
        deadline = time.monotonic() + self.full_wait_s
        while True:
            done, result = self._attempt(body, sync)
            if done:
                return result  # type: ignore[return-value]
            if time.monotonic() >= deadline:
                raise BufferFull(
                    f"the disk under {self.path} is full and even after evicting all telemetry"
                    f" it may and {self.full_wait_s:g} s of trying, an alarm or device event cannot"
                    " be written"
                )
            time.sleep(0.05)

    def _wal_pages(self, full: bool) -> None:
        """Checkpoint the write-ahead log at the reserve's size, or far sooner on a full disk,
        where what the log holds is room the buffer lacks."""
        pages = self.reserve.wal_pages(self._page)
        self.db.execute(f"PRAGMA wal_autocheckpoint={max(16, pages // 8) if full else pages}")

    def _try_write(self, body: Callable[[], object], sync: str) -> bool:
        """A write that may be given up when the disk stays full (telemetry, deletes, health)."""
        return self._attempt(body, sync)[0]

    def _make_room(self) -> bool:
        """The disk is full: free room for the next write; False if nothing more could be freed.

        In order: the reserve file (room for the checkpoint), a TRUNCATE checkpoint (the write-
        ahead log's blocks back to the filesystem once its pages are in the database), and a
        lower bound for the buffer with the oldest telemetry evicted below it, so later writes
        reuse pages inside the file instead of growing it.
        """
        if self.disk_full_since_ms is None:
            self.disk_full_since_ms = _now_ms()
            self._wal_pages(full=True)
            log.warning(
                "disk full under the buffer %s: evicting the oldest telemetry to make room"
                " (alarms are kept); the buffer is bounded by the disk until it has room again",
                self.path,
            )
            self._disk_state_changed(True)
        progress = self.reserve.release()
        wal = Path(f"{self.path}-wal")
        before = wal.stat().st_size if wal.exists() else 0
        # It fails if the database cannot grow by the log's pages: then no room came this way.
        with contextlib.suppress(sqlite3.OperationalError):
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        progress |= (wal.stat().st_size if wal.exists() else 0) < before
        self.cap_bytes = min(self.cap_bytes, int(self.used_bytes() * (1 - FULL_HEADROOM)))
        return self._evict_if_full() > 0 or progress

    def check_disk(self) -> None:
        """Called about once a second: keep the reserve while the disk is tight, and end a
        full-disk episode once the filesystem has room again (the bound goes back to max_mb)."""
        if self.disk_full_since_ms is None:
            if self.reserve.tight():
                self.reserve.keep()
            return
        if not self.reserve.roomy():
            return
        self.reserve.keep()
        self.disk_full_since_ms = None
        self.cap_bytes = self.max_bytes
        self._wal_pages(full=False)
        log.warning(
            "disk under the buffer %s has room again (%.1f MB free): the buffer is bounded by"
            " max_mb again; %d readings evicted in all, %d could not be stored at all",
            self.path,
            self.reserve.free_bytes() / 1e6,
            self.evicted,
            self.disk_dropped,
        )
        self._disk_state_changed(False)

    def _disk_state_changed(self, full: bool) -> None:
        self.health_changed()
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
    def unflushed(self) -> int:
        """Samples held in memory, not yet committed."""
        return len(self._mem)

    def add_alarm_events(self, events: Sequence[AlarmEvent]) -> None:
        """Commit alarm events to the outgoing lane and the local alarm log (FULL sync).

        On a full disk telemetry is evicted to make room; BufferFull if that is not enough.
        """
        self._add_events(LANE_ALARM, events, self._log_alarms)

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
                [(lane, _pack_event(e)) for e in events],
            )
            if also is not None:
                also(events)

        self._write(insert, "FULL")
        self.pending_events += len(events)

    def _log_alarms(self, events: Sequence[AlarmEvent]) -> None:
        self.db.executemany(
            "INSERT INTO alarm_log (alarm_id, device, point, alarm_type, severity, state,"
            " ts_ms, value, limit_value, message, ack_by, ack_note)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [alarm_fields(e) for e in events],
        )

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
            rows = [[d, p, ts, v, q.value, ts < live_since_ms] for d, p, ts, v, q in mem]
            return self._freeze_rows(LANE_DATA, rows)
        self._store_backlog(mem)
        return 0

    def _store_backlog(self, mem: list[Sample]) -> None:
        """Pack samples as historical wire rows, cut into chunks that fit one batch, commit."""
        pack = msgpack.Packer(use_bin_type=True).pack
        limit_n, limit_bytes = self.batch_records, self.batch_bytes - _ENVELOPE_SLACK
        chunks: list[tuple[int, bytes]] = []
        parts: list[bytes] = []
        size = 0
        for d, p, ts, v, q in mem:
            row = pack([d, p, ts, v, q.value, True])
            if parts and (len(parts) >= limit_n or size + len(row) > limit_bytes):
                chunks.append((len(parts), b"".join(parts)))
                parts, size = [], 0
            parts.append(row)
            size += len(row)
        if parts:
            chunks.append((len(parts), b"".join(parts)))

        def insert() -> None:
            self.db.executemany("INSERT INTO chunks (n, body) VALUES (?, ?)", chunks)
            set_meta(self.db, "committed", self.committed + len(mem))
            self._put_health_if_due()

        if not self._try_write(insert, "NORMAL"):
            self._dropped(len(mem))
            return
        self.committed += len(mem)
        self.backlog += len(mem)
        self._evict_if_full()

    def used_bytes(self) -> int:
        """Bytes of the database in use (free pages excluded)."""
        page = self.db.execute("PRAGMA page_size").fetchone()[0]
        count = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        return int((count - free) * page)

    def _evict_if_full(self) -> int:
        """Evict the oldest unfrozen telemetry while the buffer is over its bound; return how
        many readings went (counted in `evicted`, persisted with the delete)."""
        total = 0
        while self.backlog and self.used_bytes() > self.cap_bytes:
            want = max(1, int(self.backlog * _EVICT_FRACTION))
            ids, n = [], 0
            for chunk_id, size in self.db.execute(
                "SELECT id, n FROM chunks WHERE id > ? ORDER BY id", (self._frozen_hi,)
            ):
                ids.append((chunk_id,))
                n += size
                if n >= want:
                    break
            self._sync("NORMAL")
            try:  # not through _attempt: making room must not recurse into making room
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
        now = _now_ms()
        for chunk in self._chunks(rows, seq, now):
            frozen.append((seq, lane, len(chunk[0]), now, self.session, chunk[1]))
            seq += 1

        def count() -> None:
            set_meta(self.db, "committed", self.committed + len(rows))
            self._put_health_if_due()

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

        if not self._try_write(insert, "FULL"):
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

        return self._cut(rows, self.batch_records, encode, seq)

    def _event_chunks(
        self, lane: int, events: list[Any], seq: int, now: int
    ) -> Iterable[tuple[list[Any], bytes]]:
        """Cut alarm or device events into payloads under the record and byte limits."""

        def encode(chunk: list[Any], at: int) -> bytes:
            return _encode_events(lane, self.gateway, self.session, self.epoch, at, now, chunk)

        return self._cut(events, _EVENTS_PER_BATCH, encode, seq)

    def _cut(
        self, items: list[T], most: int, encode: Callable[[list[T], int], bytes], seq: int
    ) -> Iterator[tuple[list[T], bytes]]:
        """Encode `items` as consecutive batches from `seq` on, each of at most `most` items
        and `batch_bytes` bytes (a single item may be larger: it cannot be cut)."""
        i = 0
        while i < len(items):
            n = min(most, len(items) - i)
            while True:
                chunk = items[i : i + n]
                payload = encode(chunk, seq)
                if len(payload) <= self.batch_bytes or n == 1:
                    break
                n = max(1, n * self.batch_bytes // len(payload) * 9 // 10)
            yield chunk, payload
            seq += 1
            i += n

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
        now = _now_ms()
        seq = self.next_seq
        msg = decode(self._payload(b))
        if isinstance(msg, DataBatch):
            rows = [[r.device, r.point, r.ts_ms, r.value, r.quality.value, r.historical]
                    for r in msg.records]  # fmt: skip
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

        if not self._try_write(write, "FULL"):
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
        now = _now_ms()
        seq = self.next_seq
        frozen = []
        for lane in (LANE_ALARM, LANE_DEVICE):
            events = [
                replace(e, historical=True) if e.ts_ms < live_since_ms else e
                for e in (_unpack_event(lane, body) for _, ln, body in rows if ln == lane)
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
        now = _now_ms()
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

        if self._try_write(delete, "NORMAL"):  # else kept for the next try: a delete frees room
            self._acks = []

    # --- health snapshot ----------------------------------------------------------------------

    def health_changed(self) -> None:
        """A device or the uplink changed state: write the snapshot soon (with the next write)."""
        self._health_due = min(self._health_due, self._health_written + HEALTH_MIN_GAP_S)

    def save_health(self) -> bool:
        """Write the health snapshot in its own transaction if it is due; True if written.

        The daemon calls this about once a second: with readings flowing, the flush
        transactions have written it already and this does nothing.
        """
        if self.health_source is None or self.clock() < self._health_due:
            return False
        source = self.health_source
        return self._try_write(lambda: self._put_health(source()), "NORMAL")

    def _put_health_if_due(self) -> None:
        """Inside an open transaction: add the health snapshot if it is due."""
        if self.health_source is not None and self.clock() >= self._health_due:
            self._put_health(self.health_source())

    def _put_health(self, h: GatewayHealth) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO daemon (id, pid, started_ms, heartbeat_ms, stopped_ms,"
            " uplink_connected, uplink_since_ms, uplink_error, uplink_error_ms, last_puback_ms,"
            " clock_plausible, clock_step_ms, clock_step_at_ms, clock_steps,"
            " disk_full_since_ms, disk_dropped, buffer_cap_bytes)"
            " VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                h.pid,
                h.started_ms,
                h.heartbeat_ms,
                h.stopped_ms,
                int(h.uplink_connected),
                h.uplink_since_ms,
                h.uplink_error,
                h.uplink_error_ms,
                h.last_puback_ms,
                int(h.clock_plausible),
                h.clock_step_ms,
                h.clock_step_at_ms,
                h.clock_steps,
                h.disk_full_since_ms,
                h.disk_dropped,
                h.buffer_cap_bytes,
            ),
        )
        devices = tuple(d.device for d in h.devices)
        if devices != self._health_devices:  # first write, or a reload changed the devices
            self.db.execute("DELETE FROM health")
            self._health_devices = devices
        self.db.executemany(
            "INSERT INTO health (device, state, since_ms, last_ok_ms, last_error, last_error_ms,"
            " timeouts, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device) DO UPDATE"
            " SET state = excluded.state, since_ms = excluded.since_ms,"
            " last_ok_ms = excluded.last_ok_ms, last_error = excluded.last_error,"
            " last_error_ms = excluded.last_error_ms, timeouts = excluded.timeouts,"
            " detail = excluded.detail",
            [astuple(d) for d in h.devices],
        )
        self._health_written = self.clock()
        self._health_due = self._health_written + HEALTH_EVERY_S

    # --- alarm log ----------------------------------------------------------------------------

    def open_alarms(self) -> list[AlarmEvent]:
        """The latest event of every alarm not back to normal (to restore rules after restart)."""
        rows = self.db.execute(
            "SELECT alarm_id, device, point, alarm_type, severity, state, ts_ms, value,"
            " limit_value, message, ack_by, ack_note FROM alarm_log WHERE id IN"
            " (SELECT max(id) FROM alarm_log GROUP BY alarm_id) AND state != 'normal'"
        ).fetchall()
        return [_log_event(r) for r in rows]

    def take_ack_requests(self) -> list[tuple[str, str, str]]:
        """Acknowledgements queued by the crew CLI: (alarm id, who, note), removed once read."""

        def take() -> list[tuple[str, str, str]]:
            rows = self.db.execute(
                "SELECT id, alarm_id, who, note FROM ack_requests ORDER BY id"
            ).fetchall()
            if rows:
                self.db.execute("DELETE FROM ack_requests WHERE id <= ?", (rows[-1][0],))
            return [(a, w, n) for _, a, w, n in rows]

        done, taken = self._attempt(take, "NORMAL")
        return taken if done and taken is not None else []

    def prune_alarm_log(self, retention_days: float) -> int:
        """Delete alarm log rows older than the retention, except alarms still open."""
        cutoff = _now_ms() - int(retention_days * 86_400_000)

        def delete() -> int:
            return self.db.execute(
                "DELETE FROM alarm_log WHERE ts_ms < ? AND alarm_id NOT IN"
                " (SELECT alarm_id FROM alarm_log WHERE id IN"
                " (SELECT max(id) FROM alarm_log GROUP BY alarm_id) AND state != 'normal')",
                (cutoff,),
            ).rowcount

        done, deleted = self._attempt(delete, "NORMAL")
        return deleted if done and deleted is not None else 0

    def close(self) -> None:
        """Commit what is in memory, pending deletes and a last health snapshot; close."""
        self.commit_acks()
        if self._mem:
            self._store_backlog(self._mem)
            self._mem = []
        if self.health_source is not None:
            h = self.health_source()
            stopped = replace(h, stopped_ms=h.heartbeat_ms)
            self._try_write(lambda: self._put_health(stopped), "NORMAL")
        self.db.close()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _pack_event(e: AlarmEvent | DeviceEvent) -> bytes:
    data: bytes = msgpack.packb(astuple(e), use_bin_type=True)
    return data


def _unpack_event(lane: int, body: bytes) -> Any:
    fields = msgpack.unpackb(body, raw=False)
    if lane == LANE_ALARM:
        e = AlarmEvent(*fields)
        return replace(e, severity=Severity(e.severity), state=AlarmState(e.state))
    return DeviceEvent(*fields)


def _encode_events(
    lane: int, gateway: str, session: str, epoch: str, seq: int, now: int, events: list[Any]
) -> bytes:
    if lane == LANE_ALARM:
        return encode(AlarmBatch(gateway, session, seq, now, tuple(events), epoch=epoch))
    return encode(DeviceEventBatch(gateway, session, seq, now, tuple(events), epoch=epoch))


def _log_event(r: Sequence[Any]) -> AlarmEvent:
    return AlarmEvent(
        alarm_id=r[0],
        device=r[1],
        point=r[2],
        alarm_type=r[3],
        severity=Severity(r[4]),
        state=AlarmState(r[5]),
        ts_ms=r[6],
        value=r[7],
        limit=r[8],
        message=r[9],
        ack_by=r[10],
        ack_note=r[11],
    )
