"""Room on the filesystem under the gateway's buffer: a reserve file kept for a full disk.

SQLite in WAL mode needs disk space to give disk space back: the pages a checkpoint copies from
the write-ahead log into the database may grow the database file, and only then can the log be
truncated. On a disk that filled up (another process, logs, a small SD card) both can be stuck,
and then not even an eviction can be written. A reserve file, made while the disk still has room,
is deleted at the first "database or disk is full" to give that checkpoint its room; the write-
ahead log is kept no larger than the reserve (`wal_pages`), so the reserve is always enough.
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from pathlib import Path

RESERVE_BYTES = 16 * 1024 * 1024  # ... and at most 1/8 of a small filesystem
_TIGHT = 8  # the disk is tight, and the reserve is made, below this many reserves free
_ROOM = 2  # a full disk has room again at this many reserves free


@dataclass(slots=True)
class Reserve:
    """The reserve file beside the buffer (`<buffer>.reserve`) and looks at its filesystem."""

    path: Path
    size: int

    @classmethod
    def beside(cls, buffer: Path, page_size: int) -> Reserve:
        """The reserve for `buffer`: RESERVE_BYTES, or 1/8 of a smaller filesystem, in pages."""
        total = _statvfs(buffer.parent)[0]
        size = min(RESERVE_BYTES, total // 8) // page_size * page_size
        return cls(Path(f"{buffer}.reserve"), max(size, 16 * page_size))

    def wal_pages(self, page_size: int) -> int:
        """The `wal_autocheckpoint` that keeps the write-ahead log within the reserve."""
        return max(16, self.size // page_size)

    def free_bytes(self) -> int:
        """Bytes an unprivileged writer may still use on the buffer's filesystem."""
        return _statvfs(self.path.parent)[1]

    def tight(self) -> bool:
        """Little room left: time to make sure the reserve exists."""
        return self.free_bytes() < _TIGHT * self.size

    def roomy(self) -> bool:
        """Room again for the reserve and as much besides (a full disk's end)."""
        return self.free_bytes() >= _ROOM * self.size

    def keep(self) -> bool:
        """Make the reserve file if it is missing; True if it exists afterwards.

        Space is allocated for real (fallocate), so the reserve holds blocks that a full disk
        cannot take; without room for all of it, nothing is kept.
        """
        if self.path.exists():
            return True
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            return False
        try:
            try:
                os.posix_fallocate(fd, 0, self.size)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                os.pwrite(fd, bytes(self.size), 0)  # a filesystem without fallocate
                os.fsync(fd)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                self.path.unlink()
            return False
        os.close(fd)
        return True

    def release(self) -> bool:
        """Delete the reserve file; True if it existed (its space is free now)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True


def _statvfs(folder: Path) -> tuple[int, int]:
    """(total, available) bytes of the filesystem holding `folder`."""
    st = os.statvfs(folder)
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
