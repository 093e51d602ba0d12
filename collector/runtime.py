"""The collector's composition root: store, case engine and ingest built from one config."""

import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from lifeline.collector import assets as asset_files
from lifeline.collector.cases.engine import CaseEngine
from lifeline.collector.cases.routing import (
    UNKNOWN_AREA,
    Routing,
    RoutingError,
    check_departments,
    default_routing_path,
    load_routing,
    routing_calendar,
    routing_catalog,
    routing_grids,
)
from lifeline.collector.departments import Directory
from lifeline.collector.event_log import EventPump, Notifier
from lifeline.collector.ingest import Ingest, IngestConfig
from lifeline.collector.partitions import Partition, PartitionedIngest
from lifeline.collector.store import Store, open_store
from lifeline.collector.store.base import KeyStore
from lifeline.collector.webhooks import Deliverer, WebhookConfig

log = logging.getLogger(__name__)


def tune_gc() -> None:
    """Set the garbage collector up for ingest: freeze what is loaded, collect less often."""
    # Decoded batches wait in the queue as tuples the collector cannot untrack (their Quality
    # members are objects). At the default threshold, a collection every 700 allocations,
    # ingest spent about a fifth of its CPU in collections that freed nothing, and each full
    # one also walked every module, class and function loaded: those live as long as the
    # process, so they are frozen out of every pass.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


# Datums a Web-Mercator tile server may draw in: 天地图 and most city servers use CGCS2000 (the
# same as WGS84 at a map's scale), 高德/腾讯 use GCJ-02. BD-09 tiles need Baidu's own projection.
TILE_DATUMS = ("WGS84", "CGCS2000", "GCJ-02")


@dataclass(frozen=True)
class ConsoleConfig:
    """The console map's base layer: none (the city's own geometry) or an XYZ tile URL such as
    `https://t{s}.example.cn/{z}/{x}/{y}.png` and the datum its tiles are drawn in."""

    tiles_url: str | None = None
    tiles_datum: str = "CGCS2000"

    def __post_init__(self) -> None:
        url = self.tiles_url
        if url is not None and (
            not url.startswith(("https://", "http://"))
            or not all(p in url for p in ("{z}", "{x}", "{y}"))
        ):
            raise ValueError(
                f"console tiles_url {url!r} must be an http(s) URL with {{z}}, {{x}} and {{y}}"
            )
        if self.tiles_datum not in TILE_DATUMS:
            raise ValueError(
                f"console tiles_datum {self.tiles_datum!r} is not one of {', '.join(TILE_DATUMS)}"
            )


@dataclass
class CollectorConfig:
    """Everything `collector run` needs; built from CLI options and/or a YAML file."""

    db_url: str = "sqlite:///lifeline-collector.db"
    ingest: IngestConfig | None = field(default_factory=IngestConfig)
    # The topic space split by site among collectors with leases in PostgreSQL (for brokers
    # without shared subscriptions); None: this collector ingests every site itself.
    partitions: list[Partition] | None = None
    assets_file: Path | None = None
    routing_file: Path | None = None
    # The collector's district (6-digit area code) for case numbers whose place gives none;
    # overrides the routing table's `district`.
    district: str | None = None
    escalate_every_s: float = 5.0
    events_poll_s: float = 0.5  # event-log pass without a kick (rows from other collectors)
    webhooks: WebhookConfig = field(default_factory=WebhookConfig)
    # A sample time more than this ahead of the collector's clock is implausible (stored as
    # sent, flagged with its receive time); so is one before the software was built.
    max_clock_skew_s: float = 300.0
    # Dead letters older than this are deleted (checked hourly): refused payloads are for
    # finding a fault, not an archive.
    dead_letter_retention_days: float = 30.0
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    # The URL clients reach this collector at (e.g. https://lifeline.example.gov.cn, behind a
    # proxy), for documents that must name it (Open311 discovery); None: they give relative URLs.
    # Never taken from a request's Host header, which any client sets.
    public_url: str | None = None

    def __post_init__(self) -> None:
        if self.public_url is not None:
            self.public_url = check_public_url(self.public_url)


def check_public_url(url: str) -> str:
    """`url` (an http or https base URL: scheme and host, optionally a path prefix) without its
    trailing slash. Raises ValueError naming what does not fit: another scheme, no host, a user
    or password, a query or a fragment."""
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.query
        or parts.fragment
        or any(c.isspace() for c in url)
    ):
        raise ValueError(
            f"public_url {url[:200]!r} must be an http(s) base URL such as"
            " https://lifeline.example.gov.cn (no user, query or fragment)"
        )
    return url.rstrip("/")


def adopt_departments(store: KeyStore, routing: Routing, path: Path, now_ms: int) -> None:
    """Register the departments the routing table at `path` declares whose codes the registry
    lacks (config as code: a fresh district starts with its registry), then check that every
    department the table names is registered. A declared code already registered keeps its
    registered name (an admin may have renamed it; the declared name still routes to it).
    Raises RoutingError naming the file and key."""
    from lifeline.collector.store import NameTaken

    known = {d.code for d in store.departments()}
    for code, name in routing.departments.items():
        if code in known:
            continue
        try:
            store.put_department(code, name, now_ms)
        except NameTaken as exc:
            raise RoutingError(f"{path}: departments.{code}: {exc}") from None
        log.info("registered department %s %s from %s", code, name, path)
    registry = {d.code: d.name for d in store.departments()}
    directory = Directory.of(registry, store.department_names(), routing.departments)
    problems = check_departments(routing, directory)
    if problems:
        raise RoutingError(f"{path}: {'; '.join(problems)}")


class Runtime:
    """The running collector: owns the store, the case engine and (optionally) ingest."""

    def __init__(self, config: CollectorConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store: Store = open_store(config.db_url)
        self.store.max_skew_ms = int(config.max_clock_skew_s * 1000)
        self.store.migrate()
        log.info("store ready: %s", self.store.backend)
        routing_path = config.routing_file or default_routing_path()
        routing = load_routing(routing_path)
        if config.district is not None:
            routing = routing.model_copy(update={"district": config.district})
        if routing.district is None:
            log.warning(
                "no district configured (--district, or `district:` in the routing table): a"
                " case whose asset or grid gives no area code is numbered with %s",
                UNKNOWN_AREA,
            )
        adopt_departments(self.store, routing, routing_path, int(clock() * 1000))
        grids = routing_grids(routing, routing_path)
        moved = self.store.use_grids(grids)
        if any(moved):
            log.info("placed in the grid registry anew: %d assets and %d devices moved", *moved)
        if config.assets_file is not None:
            records = asset_files.load(config.assets_file)
            for why in asset_files.misplaced(records, grids):
                log.warning("%s: %s", config.assets_file, why)
            n = self.store.upsert_assets(records)
            log.info("imported %d assets from %s", n, config.assets_file)
        self.cases = CaseEngine(
            self.store,
            routing,
            clock,
            routing_catalog(routing, routing_path),
            routing_calendar(routing, routing_path),
            grids,
        )
        self.notifier = Notifier()
        self.event_pump = EventPump(self.store, self.notifier, config.events_poll_s, clock)
        self.webhooks = Deliverer(self.store, self.notifier, config.webhooks, clock)
        self._lock = threading.Lock()
        self._last_escalation = 0.0
        self._last_prune = -3600.0
        self._clock = clock
        self._calendar_logged: set[int] = set()
        self.ingest: Ingest | PartitionedIngest | None = None
        if config.ingest is not None and config.partitions is not None:
            if not config.db_url.startswith(("postgresql:", "postgres:")):
                raise ValueError(
                    "partitions need PostgreSQL (their leases are advisory locks there);"
                    " a collector on SQLite is the only one and takes every site"
                )
            self.ingest = PartitionedIngest(
                self.store,
                config.ingest,
                config.partitions,
                config.db_url,
                on_commit=self.after_commit,
                clock=clock,
            )
        elif config.ingest is not None:
            self.ingest = Ingest(
                self.store, config.ingest, on_commit=self.after_commit, clock=clock
            )

    def start(self) -> None:
        """Start ingest (if configured) after handling alarm events left from a previous run."""
        tune_gc()
        self.after_commit()
        self.event_pump.start()
        self.webhooks.start()
        if self.ingest is not None:
            self.ingest.start()

    def after_commit(self) -> None:
        """Feed new alarm transitions to the case engine; escalate overdue cases now and then."""
        with self._lock:
            while self.cases.process_pending() > 0:
                pass
            now = self._clock()
            if now - self._last_escalation >= self.config.escalate_every_s:
                self._last_escalation = now
                self.cases.escalate_overdue()
            if now - self._last_prune >= 3600:
                self._last_prune = now
                keep_ms = self.config.dead_letter_retention_days * 86_400_000
                pruned = self.store.prune_dead_letters(int(now * 1000 - keep_ms))
                if pruned:
                    log.info("deleted %d dead letters older than %g days",
                             pruned, self.config.dead_letter_retention_days)  # fmt: skip
        self.event_pump.kick()

    def problems(self) -> list[str]:
        """Why a background thread (event pump, webhook deliveries) stopped, one sentence each:
        only a bug stops one. Empty while they run; ingest reports its own (Ingest.problems)."""
        return [p for p in (self.event_pump.crashed, self.webhooks.crashed) if p is not None]

    def calendar_warnings(self) -> list[str]:
        """One sentence for each year that due times may reach within NOTICE_WARN_DAYS and
        whose 调休 arrangement the working calendar does not list (WorkCalendar.unlisted_years):
        there only the statutory holidays count. Logs each year once, as a warning, the first
        time it is seen. Not a reason to be unready: due times still keep the law's holidays."""
        calendar = self.cases.calendar
        years = calendar.unlisted_years(int(self._clock() * 1000))
        warnings = [
            f"calendar {calendar.name!r} does not list {year}'s holidays and make-up working"
            f" days (调休): due times in {year} keep only the statutory holidays; add the State"
            " Council notice for the year"
            for year in years
        ]
        with self._lock:
            new = [(y, w) for y, w in zip(years, warnings, strict=True)
                   if y not in self._calendar_logged]  # fmt: skip
            self._calendar_logged.update(y for y, _ in new)
        for _, warning in new:
            log.warning("%s", warning)
        return warnings

    def close(self) -> None:
        """Stop ingest, then close the store."""
        if self.ingest is not None:
            self.ingest.stop()
        self.webhooks.stop()
        self.event_pump.stop()
        self.store.close()
