"""The open buffer file: one connection, one write transaction at a time, and a full disk.

Durability is chosen per transaction (one WAL database; `synchronous` is switched per write):
what must survive a power cut (alarms, device events, ids, seqs of frozen batches) is written
FULL, telemetry, deletes and the health snapshot NORMAL. Which is which is the caller's choice.

A full disk ("database or disk is full") is a full buffer: every write goes through `attempt`,
which makes room (a reserve file, a log checkpoint, a lower bound and the oldest telemetry
evicted) and tries again; a write that may be given up (`try_write`) is then given up, one that
must not (`write`) raises BufferFull (the gateway exits, its supervisor restarts it).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from lifeline.edge.buffer.reserve import Reserve
from lifeline.edge.buffer.schema import connect, create
from lifeline.edge.clock import wall_ms

T = TypeVar("T")

# When the disk is found full, the buffer's bound drops below what it holds by this share: the
# oldest telemetry is evicted, and later writes reuse its pages inside the file.
FULL_HEADROOM = 0.1
_WRITE_TRIES = 3  # a write that found the disk full: made room for and tried again this often
# ... and an alarm or device event, for this long, before BufferFull: room can come back in a
# moment (a reader such as `edge status` or `edge tail` keeps a checkpoint from truncating the
# write-ahead log while it reads). The event loop waits with it: the alarm comes first.
_FULL_WAIT_S = 3.0


class BufferFull(RuntimeError):
    """The buffer cannot write an alarm or device event even after evicting all telemetry.

    Raised only for what must never be dropped: the gateway exits non-zero on it, so that its
    supervisor (systemd) restarts it and the crew sees it, instead of running without alarms.
    """


class BufferFile:
    """The gateway's buffer file, open for writing; used on one thread (the daemon's loop).

    `evict()` removes the oldest telemetry while the file is over `cap_bytes` and returns how
    many readings went (the outbox's); `on_full(True)` is called when a full disk is found,
    `on_full(False)` when it has room again. Raises sqlite3.Error if the file cannot be opened
    or brought up to this schema.
    """

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        evict: Callable[[], int],
        on_full: Callable[[bool], None],
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.cap_bytes = max_bytes  # the bound in force: lower while the disk is full
        self.evict = evict
        self.on_full = on_full
        self.db = connect(path)
        create(self.db)
        self._sync_mode = ""
        self.sync("NORMAL")
        self._page = self.db.execute("PRAGMA page_size").fetchone()[0]
        self.reserve = Reserve.beside(self.path, self._page)
        # The write-ahead log never outgrows the reserve, so the reserve is room enough to
        # checkpoint it into the database on a full disk (reserve.py).
        self._wal_pages(full=False)
        self.disk_full_since_ms: int | None = None
        self.full_wait_s = _FULL_WAIT_S  # a write that must not be dropped tries this long
        if self.reserve.tight():
            self.reserve.keep()

    def sync(self, mode: str) -> None:
        """Set `synchronous` (NORMAL or FULL) for the next transaction, if it differs."""
        if self._sync_mode != mode:
            self.db.execute(f"PRAGMA synchronous={mode}")
            self._sync_mode = mode

    def attempt(self, body: Callable[[], T], sync: str) -> tuple[bool, T | None]:
        """Run `body` in one write transaction; on a full disk make room and try again.

        Returns (True, result), or (False, None) when the disk stayed full. Any other
        sqlite3.Error propagates (the transaction rolled back).
        """
        for _ in range(_WRITE_TRIES):
            self.sync(sync)
            try:
                with self.db:
                    self.db.execute("BEGIN IMMEDIATE")
                    result = body()
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_FULL:
                    raise
                if not self.make_room():
                    break
            else:
                return True, result
        return False, None

    def write(self, body: Callable[[], T], sync: str) -> T:
        """A write that must not be dropped (alarms, device events, ids): its result.

        Raises BufferFull if the disk stays full for `full_wait_s`.
        """
        deadline = time.monotonic() + self.full_wait_s
        while True:
            done, result = self.attempt(body, sync)
            if done:
                return result  # type: ignore[return-value]
            if time.monotonic() >= deadline:
                raise BufferFull(
                    f"the disk under {self.path} is full and even after evicting all telemetry"
                    f" it may and {self.full_wait_s:g} s of trying, an alarm or device event cannot"
                    " be written"
                )
            time.sleep(0.05)

    def try_write(self, body: Callable[[], object], sync: str) -> bool:
        """A write that may be given up when the disk stays full (telemetry, deletes, health):
        True if it was committed."""
        return self.attempt(body, sync)[0]

    def used_bytes(self) -> int:
        """Bytes of the database in use (free pages excluded)."""
        page = self.db.execute("PRAGMA page_size").fetchone()[0]
        count = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        return int((count - free) * page)

    def _wal_pages(self, full: bool) -> None:
        """Checkpoint the write-ahead log at the reserve's size, or far sooner on a full disk,
        where what the log holds is room the buffer lacks."""
        pages = self.reserve.wal_pages(self._page)
        self.db.execute(f"PRAGMA wal_autocheckpoint={max(16, pages // 8) if full else pages}")

    def make_room(self) -> bool:
        """The disk is full: free room for the next write; False if nothing more could be freed.

        In order: the reserve file (room for the checkpoint), a TRUNCATE checkpoint (the write-
        ahead log's blocks back to the filesystem once its pages are in the database), and a
        lower bound for the buffer with the oldest telemetry evicted below it, so later writes
        reuse pages inside the file instead of growing it.
        """
        if self.disk_full_since_ms is None:
            self.disk_full_since_ms = wall_ms()
            self._wal_pages(full=True)
            self.on_full(True)
        progress = self.reserve.release()
        wal = Path(f"{self.path}-wal")
        before = wal.stat().st_size if wal.exists() else 0
        # It fails if the database cannot grow by the log's pages: then no room came this way.
        with contextlib.suppress(sqlite3.OperationalError):
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        progress |= (wal.stat().st_size if wal.exists() else 0) < before
        self.cap_bytes = min(self.cap_bytes, int(self.used_bytes() * (1 - FULL_HEADROOM)))
        return self.evict() > 0 or progress

    def check_disk(self) -> None:
        """Called about once a second: keep the reserve while the disk is tight, and end a
        full-disk episode once the filesystem has room again (the bound goes back to max_bytes)."""
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
        self.on_full(False)

    def close(self) -> None:
        """Close the connection (what is committed stays; nothing else is written)."""
        self.db.close()
