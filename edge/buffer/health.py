"""The health snapshot in the buffer file: the daemon, its uplink and its devices.

Kept in memory by the daemon (`HealthSnapshot.source`) and written to tables `daemon` and
`health` at most every HEALTH_EVERY_S, or soon after a state change, inside a flush transaction
when there is one (no extra commit per reading or per poll); NORMAL sync. `lifeline edge status`
reads it back from another process (`read`, through views.py) and judges from its heartbeat
whether the daemon still runs (`daemon_running`).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass, replace
from typing import Any

from lifeline.edge.buffer.file import BufferFile
from lifeline.edge.buffer.schema import DAEMON_COLUMNS, columns_of, tables_of

# The health snapshot is rewritten this often (a heartbeat), or at the next write after a state
# change; readers call a daemon gone when its heartbeat is several periods old.
HEALTH_EVERY_S = 5.0
HEALTH_MIN_GAP_S = 1.0  # ... and no oftener than this, even when 50 devices answer at start
# A daemon whose heartbeat is this old is gone (killed, hung or powered off): it rewrites
# the snapshot every HEALTH_EVERY_S.
DAEMON_STALE_MS = int(4 * HEALTH_EVERY_S * 1000)


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


class HealthSnapshot:
    """Writes the daemon's health snapshot into the buffer file when it is due.

    `source` is where the snapshot comes from (the daemon sets it; None: nothing is written);
    `clock` is monotonic seconds (tests inject one).
    """

    def __init__(self, file: BufferFile, clock: Callable[[], float] = time.monotonic) -> None:
        self.file = file
        self.source: Callable[[], GatewayHealth] | None = None
        self.clock = clock
        self._due = 0.0  # clock time of the next snapshot write; 0: at the next write
        self._written = -HEALTH_MIN_GAP_S  # clock time of the last one
        self._devices: tuple[str, ...] = ()  # the devices of the last one

    def changed(self) -> None:
        """A device or the uplink changed state: write the snapshot soon (with the next write)."""
        self._due = min(self._due, self._written + HEALTH_MIN_GAP_S)

    def save(self) -> bool:
        """Write the snapshot in its own transaction if it is due; True if written.

        The daemon calls this about once a second: with readings flowing, the flush
        transactions have written it already and this does nothing.
        """
        if self.source is None or self.clock() < self._due:
            return False
        source = self.source
        return self.file.try_write(lambda: self._put(source()), "NORMAL")

    def put_if_due(self) -> None:
        """Inside an open transaction: add the snapshot if it is due."""
        if self.source is not None and self.clock() >= self._due:
            self._put(self.source())

    def save_stopped(self) -> None:
        """A last snapshot that says the daemon stopped (at its heartbeat), if there is a source."""
        if self.source is not None:
            h = self.source()
            stopped = replace(h, stopped_ms=h.heartbeat_ms)
            self.file.try_write(lambda: self._put(stopped), "NORMAL")

    def _put(self, h: GatewayHealth) -> None:
        db = self.file.db
        db.execute(
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
        if devices != self._devices:  # first write, or a reload changed the devices
            db.execute("DELETE FROM health")
            self._devices = devices
        db.executemany(
            "INSERT INTO health (device, state, since_ms, last_ok_ms, last_error, last_error_ms,"
            " timeouts, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device) DO UPDATE"
            " SET state = excluded.state, since_ms = excluded.since_ms,"
            " last_ok_ms = excluded.last_ok_ms, last_error = excluded.last_error,"
            " last_error_ms = excluded.last_error_ms, timeouts = excluded.timeouts,"
            " detail = excluded.detail",
            [astuple(d) for d in h.devices],
        )
        self._written = self.clock()
        self._due = self._written + HEALTH_EVERY_S


_HEALTH_QUERY_V1 = (
    "SELECT device, state, since_ms, last_ok_ms, last_error, last_error_ms"
    " FROM health ORDER BY device"
)
_HEALTH_QUERY = (
    "SELECT device, state, since_ms, last_ok_ms, last_error, last_error_ms, timeouts, detail"
    " FROM health ORDER BY device"
)


def read(db: sqlite3.Connection) -> GatewayHealth | None:
    """The snapshot the daemon last wrote to the file `db` is open on; None if none ever was.

    Reads the files of older daemons too (fewer columns: the newer fields keep their defaults).
    Raises sqlite3.Error.
    """
    if not {"daemon", "health"} <= tables_of(db):  # a buffer written by an older daemon
        return None
    have = columns_of(db, "daemon")
    newer = [c for c in DAEMON_COLUMNS if c in have]  # an older daemon wrote fewer
    columns = ", ".join(
        [
            "pid, started_ms, heartbeat_ms, stopped_ms, uplink_connected, uplink_since_ms,"
            " uplink_error, uplink_error_ms, last_puback_ms",
            *newer,
        ]
    )
    # The only interpolated text is column names from DAEMON_COLUMNS, a constant.
    sql = f"SELECT {columns} FROM daemon WHERE id = 1"  # noqa: S608
    row = db.execute(sql).fetchone()
    if row is None:
        return None
    query = (  # an older daemon's buffer has no timeouts and detail yet
        _HEALTH_QUERY if {"timeouts", "detail"} <= columns_of(db, "health") else _HEALTH_QUERY_V1
    )
    devices = tuple(DeviceHealth(*r) for r in db.execute(query))
    pid, started, heartbeat, stopped, connected, since, error, error_ms, puback = row[:9]
    extra: dict[str, Any] = dict(zip(newer, row[9:], strict=True))
    if "clock_plausible" in extra:
        extra["clock_plausible"] = bool(extra["clock_plausible"])
    return GatewayHealth(
        pid,
        started,
        heartbeat,
        stopped,
        bool(connected),
        since,
        error,
        error_ms,
        puback,
        devices,
        **extra,
    )


def daemon_running(h: GatewayHealth | None, now_ms: int) -> tuple[bool, str]:
    """Whether the daemon that wrote `h` still runs, and why we think so (or not).

    `now_ms` is UTC wall-clock milliseconds. A daemon runs if it did not say it stopped, its
    heartbeat is younger than DAEMON_STALE_MS and its process exists.
    """
    if h is None:
        return False, "no daemon has written a heartbeat to this buffer"
    if h.stopped_ms is not None:
        return False, "stopped"
    age_s = (now_ms - h.heartbeat_ms) // 1000
    if now_ms - h.heartbeat_ms > DAEMON_STALE_MS:
        return False, f"no heartbeat for {age_s} s (killed or hung?)"
    if not _pid_alive(h.pid):
        return False, f"process {h.pid} is gone (killed?)"
    return True, f"pid {h.pid}, heartbeat {age_s} s ago"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, run by another user (the gateway's service account)
        return True
    return True
