"""Scale-out without shared subscriptions: the topic space split by site, one lease per part.

A partition is a named set of sites. Each partition is one persistent MQTT session (client id
`<client_id>-<partition>`, so every collector of the group runs with the same `client_id` and
the same partitions) subscribed to its sites' topics only, so a broker that ignores
`$share` (NATS, RabbitMQ) still splits the load: every message is queued in exactly one
session. Collectors share the partitions through leases held in PostgreSQL as advisory locks
(`pg_try_advisory_lock`, one per partition, held by a connection of their own): a lock is
released by the server the moment its holder's connection ends, so when a collector dies
another takes its partitions over, resumes the same sessions and receives everything queued
there, acknowledged or not. Redelivery is harmless (the batch key makes it a duplicate).

Balance: each collector also holds a member lock while it runs; the number of member locks
is the number of live collectors, and each aims to hold ceil(partitions / collectors). One
above that releases a partition (its ingest stops first: what it holds unacknowledged stays in
the session), one below takes a free one, in an order of its own (rendezvous hashing), so
two collectors do not race for the same one.

SQLite collectors are single: partitions need PostgreSQL.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from lifeline.collector.ingest import Ingest, IngestConfig, IngestStats
from lifeline.collector.store import Store
from lifeline.wire.messages import Value

log = logging.getLogger(__name__)

# Two-key advisory locks: (namespace, id). The namespaces are ours ("LL" and a kind), the ids
# hashes of a partition name or a member's client id.
_PARTITION_NS = 0x4C4C0001
_MEMBER_NS = 0x4C4C0002
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SITE = re.compile(r"^[^/+#,;=\s\x00]{1,64}$")
# libpq keepalives on the lease connection: a collector whose machine vanishes (no FIN, no
# RST) loses its leases after about idle + interval * count = 11 s, not the kernel's 2 hours.
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
               "keepalives_count": 3}  # fmt: skip


@dataclass(frozen=True)
class Partition:
    """A named part of the topic space: the sites whose gateways it covers."""

    name: str
    sites: tuple[str, ...]


def parse_partitions(text: str) -> list[Partition]:
    """Parse `north=site-a,site-b;south=site-c` into partitions.

    Raises ValueError naming the first problem: an empty or malformed name, a site that is not
    an MQTT topic level, a site in two partitions, a name used twice.
    """
    out: list[Partition] = []
    seen: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, eq, sites_text = part.partition("=")
        name = name.strip()
        if not eq or not _NAME.match(name):
            raise ValueError(
                f"{part!r} is not NAME=SITE,SITE (a name of letters, digits, '-' or '_')"
            )
        if any(p.name == name for p in out):
            raise ValueError(f"partition {name!r} is named twice")
        sites = tuple(filter(None, (s.strip() for s in sites_text.split(","))))
        if not sites:
            raise ValueError(f"partition {name!r} has no sites")
        for site in sites:
            if not _SITE.match(site):
                raise ValueError(f"site {site!r} of partition {name!r} is not an MQTT topic level")
            if site in seen:
                raise ValueError(f"site {site!r} is in partitions {seen[site]!r} and {name!r}")
            seen[site] = name
        out.append(Partition(name, sites))
    if not out:
        raise ValueError("no partitions given: NAME=SITE,SITE;NAME=SITE")
    return out


def _sum(stats: list[IngestStats]) -> IngestStats:
    """The counters of `stats` added up (`connected` left false)."""
    total = IngestStats()
    for f in fields(IngestStats):
        if f.name != "connected":
            setattr(total, f.name, sum(getattr(s, f.name) for s in stats))
    return total


def _key(text: str) -> int:
    """A stable signed 32-bit lock id for `text` (PostgreSQL's advisory lock key half)."""
    return int.from_bytes(
        hashlib.blake2b(text.encode(), digest_size=4).digest(), "big", signed=True
    )


def preference(member: str, names: list[str]) -> list[str]:
    """`names` in the order `member` takes them (rendezvous hashing: each member its own order,
    so that members joining at once mostly pick different partitions first)."""
    return sorted(names, key=lambda n: hashlib.blake2b(f"{member}/{n}".encode()).digest())


def target(partitions: int, members: int) -> int:
    """How many partitions one of `members` live collectors holds at most."""
    return math.ceil(partitions / max(1, members))


class Leases:
    """Advisory locks on one PostgreSQL connection of their own: the member lock and one per
    partition held. Not thread-safe: used by the lease thread only."""

    def __init__(self, db_url: str, member: str) -> None:
        self.db_url = db_url
        self.member = member
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self.held: set[str] = set()

    @property
    def connected(self) -> bool:
        """Whether the lease connection is open (it may still have died unnoticed)."""
        return self._conn is not None

    def connect(self) -> None:
        """Open the lease connection and take the member lock (raises psycopg.Error)."""
        self.close()
        conninfo = make_conninfo(self.db_url, connect_timeout=5, **_KEEPALIVES)
        conn = psycopg.connect(conninfo, autocommit=True)
        # Shared locks: a (rare) hash collision of two members' ids still counts both.
        conn.execute("SELECT pg_advisory_lock_shared(%s, %s)", (_MEMBER_NS, _key(self.member)))
        self._conn = conn

    def members(self) -> int:
        """Live collectors: member locks granted in this database (raises psycopg.Error)."""
        assert self._conn is not None
        row = self._conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = %s"
            " AND l.objsubid = 2 AND d.datname = current_database()",
            (_MEMBER_NS,),
        ).fetchone()
        return int(row[0]) if row else 1

    def try_take(self, name: str) -> bool:
        """Take partition `name`'s lease if it is free (raises psycopg.Error)."""
        assert self._conn is not None
        row = self._conn.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", (_PARTITION_NS, _key(name))
        ).fetchone()
        if row and row[0]:
            self.held.add(name)
            return True
        return False

    def release(self, name: str) -> None:
        """Give partition `name`'s lease back (raises psycopg.Error)."""
        assert self._conn is not None
        self._conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_PARTITION_NS, _key(name)))
        self.held.discard(name)

    def close(self) -> None:
        """Close the connection: the server releases every lock it held."""
        conn, self._conn = self._conn, None
        self.held.clear()
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error as exc:
                log.debug("closing the lease connection: %s", exc)


class PartitionedIngest:
    """Ingest for the partitions this collector holds the lease of, one `Ingest` (one MQTT
    session) each; the same surface as `Ingest` for the rest of the collector."""

    def __init__(
        self,
        store: Store,
        config: IngestConfig,
        partitions: list[Partition],
        db_url: str,
        on_commit: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
        check_s: float = 1.0,
    ) -> None:
        self.store = store
        self.config = config
        self.partitions = {p.name: p for p in partitions}
        self._on_commit = on_commit
        self._clock = clock
        self._check_s = check_s
        # The member: this process (the client id is the group's, the same on every collector).
        self._member = f"{config.client_id}/{uuid.uuid4().hex}"
        self._leases = Leases(db_url, self._member)
        self._running: dict[str, Ingest] = {}
        self._retired = IngestStats()  # counters of ingests stopped since start
        self._lock = threading.Lock()  # guards _running and _retired
        self._hook = threading.Lock()  # on_commit is run by one ingest at a time
        self._stop = threading.Event()
        self._problem = ""  # why the leases cannot be kept right now
        self._checked = threading.Event()  # one lease round done
        self.handovers = 0  # partitions taken over or given back since start
        self._thread = threading.Thread(target=self._lease_loop, name="leases", daemon=True)

    # --- the Ingest surface -------------------------------------------------------------------

    def start(self) -> None:
        """Take leases (in the background) and ingest the partitions held."""
        self._thread.start()

    def stop(self) -> None:
        """Stop every partition's ingest, then give the leases back."""
        self._stop.set()
        self._thread.join(timeout=60)
        for name in list(self._running):
            self._stop_partition(name)
        self._leases.close()

    @property
    def held(self) -> list[str]:
        """The partitions this collector ingests now, by name."""
        with self._lock:
            return sorted(self._running)

    @property
    def ready(self) -> bool:
        """Leases kept, and every partition held is connected and subscribed."""
        with self._lock:
            running = list(self._running.values())
        return self._checked.is_set() and not self._problem and all(i.ready for i in running)

    def wait_ready(self, timeout: float) -> bool:
        """Wait until `ready` (or the timeout)."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def problems(self) -> list[str]:
        """Why ingest is not doing its job, one sentence each (empty: it is)."""
        out = [self._problem] if self._problem else []
        with self._lock:
            running = dict(self._running)
        for name, ingest in sorted(running.items()):
            out.extend(f"partition {name}: {p}" for p in ingest.problems())
        return out

    @property
    def stats(self) -> IngestStats:
        """Counters since start, summed over every partition ingested."""
        with self._lock:
            running = [i.stats for i in self._running.values()]
            total = _sum([self._retired, *running])
        total.connected = bool(running) and all(s.connected for s in running)
        return total

    def send_command(
        self, site: str, gateway: str, name: str, args: dict[str, Value] | None = None
    ) -> str:
        """Publish a command through the session of the partition with `site`, or any held
        one (raises ConnectionError when this collector holds none)."""
        with self._lock:
            running = dict(self._running)
        owner = next((n for n, p in self.partitions.items() if site in p.sites), None)
        ingest = running.get(owner) if owner else None
        ingest = ingest or next(iter(running.values()), None)
        if ingest is None:
            raise ConnectionError("this collector holds no partition, so no broker connection")
        return ingest.send_command(site, gateway, name, args)

    # --- leases -------------------------------------------------------------------------------

    def _lease_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._balance()
            except psycopg.Error as exc:
                self._leases_lost(f"partition leases lost: PostgreSQL: {exc}")
            self._checked.set()
            self._stop.wait(self._check_s)

    def _balance(self) -> None:
        """One round: take or give back partitions towards this collector's fair share."""
        if not self._leases.connected:
            self._leases.connect()
            if self._problem:
                log.warning("partition leases can be kept again")
            self._problem = ""
        members = self._leases.members()
        share = target(len(self.partitions), members)
        held = set(self._leases.held)
        if len(held) > share:
            # Give back the one we like least: its ingest stops before the lease goes.
            name = preference(self._member, sorted(held))[-1]
            self._stop_partition(name)
            self._leases.release(name)
            self.handovers += 1
            log.info("partition %s given back (%d collectors, %d each)", name, members, share)
            return
        for name in preference(self._member, list(self.partitions)):
            if len(self._leases.held) >= share or self._stop.is_set():
                break
            if name not in held and self._leases.try_take(name):
                self._start_partition(name)
                self.handovers += 1
                log.info("partition %s taken (%d collectors, %d each)", name, members, share)

    def _leases_lost(self, why: str) -> None:
        """The lease connection failed: the server may have released every lock, and another
        collector may take the partitions, so every partition stops here at once."""
        if why != self._problem:
            log.error("%s; stopping every partition until they are taken again", why)
        self._problem = why
        for name in list(self._running):
            self._stop_partition(name)
        self._leases.close()

    def _start_partition(self, name: str) -> None:
        part = self.partitions[name]
        cfg = replace(self.config, client_id=f"{self.config.client_id}-{name}", sites=part.sites)
        ingest = Ingest(self.store, cfg, on_commit=self._after_commit, clock=self._clock)
        with self._lock:
            self._running[name] = ingest
        ingest.start()

    def _stop_partition(self, name: str) -> None:
        with self._lock:
            ingest = self._running.pop(name, None)
        if ingest is None:
            return
        ingest.stop()
        with self._lock:
            self._retired = _sum([self._retired, ingest.stats])

    def _after_commit(self) -> None:
        if self._on_commit is not None:
            with self._hook:
                self._on_commit()
