"""The event log behind SSE and webhooks: the pump that fills it and a wake-up notifier (its
entries, EventRecord, are in collector.models; its event types in collector.event_types).

Ingest and the case engine write alarm events, status changes and case audits to their own
tables. The pump copies each of them once into `events`, whose id is the id a client resumes
from (SSE Last-Event-ID, webhook cursors). Pump passes are serialized in the database, so ids
become visible in increasing order and a reader that saw id N never later finds a smaller one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from lifeline.collector.errors import StoreError

if TYPE_CHECKING:
    from lifeline.collector.store.base import EventLogStore

log = logging.getLogger(__name__)


class Notifier:
    """Wakes asyncio listeners (SSE streams) and thread listeners when new events are logged."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._async: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._threads: list[threading.Event] = []

    @property
    def listeners(self) -> int:
        """How many asyncio listeners (SSE clients) are waiting."""
        return len(self._async)

    def publish(self) -> None:
        """Wake everyone (callable from any thread)."""
        with self._lock:
            waiters = list(self._async)
            threads = list(self._threads)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop closed under us: its listener is gone
                continue
        for t in threads:
            t.set()

    def add_thread_listener(self, event: threading.Event) -> None:
        """Set `event` on every publish."""
        with self._lock:
            self._threads.append(event)

    @contextmanager
    def listen(self) -> Iterator[asyncio.Event]:
        """An asyncio.Event set on every publish while the block runs (clear it after waking)."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._async.add(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                self._async.discard(entry)


class EventPump:
    """A thread that copies new alarm/status/case rows into the event log, then notifies.

    `kick()` (after each ingest commit or API write) runs a pass at once; without kicks it
    still looks every `interval_s`, which also picks up rows written by other collectors.
    """

    def __init__(
        self,
        store: EventLogStore,
        notifier: Notifier,
        interval_s: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.interval_s = interval_s
        self._clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="event-pump", daemon=True)
        self.last_id = 0
        self.failures = 0
        self._failing = False  # the last pass hit a database error (logged once)
        self.crashed: str | None = None  # why the thread stopped, if a bug stopped it

    def start(self) -> None:
        """Start the pump thread."""
        self.last_id = self.store.last_event_id()
        self._thread.start()

    def stop(self) -> None:
        """Stop after the pass in hand."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def kick(self) -> None:
        """Run a pass now (cheap: callable after every commit)."""
        self._wake.set()

    def run_once(self) -> int:
        """One pass: copy what is pending (all of it, in chunks); notify if the log grew."""
        total = 0
        while True:
            n = self.store.pump_events(int(self._clock() * 1000))
            total += n
            if n == 0:
                break
        newest = self.store.last_event_id()
        if newest != self.last_id:
            self.last_id = newest
            self.notifier.publish()
        return total

    def _loop(self) -> None:
        try:
            self._passes()
        except Exception as exc:
            # A bug, not a database problem (those are handled per pass): say so where an
            # operator looks (/readyz) instead of leaving a log that silently stopped growing.
            self.crashed = f"event pump stopped: {type(exc).__name__}: {exc}"
            log.critical("%s", self.crashed, exc_info=True)

    def _passes(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.run_once()
            except StoreError as exc:  # the rows stay pending for the next pass
                self.failures += 1
                if not self._failing:
                    log.warning("event pump passes failing: %s", exc)
                self._failing = True
                continue
            if self._failing:
                log.info("event pump passes succeed again")
                self._failing = False
