"""Collector storage: one Store interface, SQLite and PostgreSQL backends.

- `base.py`: the ports, one protocol per aggregate, and Store (all of them plus the write path)
- `sql.py`: SqlStore, the aggregates' rows composed, and the write path across them
- `readings_sql.py`, `gateways_sql.py`, `assets_sql.py`, `alarms_sql.py`, `cases_sql.py` (cases,
  work orders, alarm links), `dead_letters_sql.py`, `keys_sql.py`, `events_sql.py` (the event
  log), `webhooks_sql.py`: each aggregate's SQL
- `rows.py`: what they share (cursor, transactions, the calls across aggregates, a commit's
  context, RowMap: SELECT lists built from dataclass fields and rows read by name)
- `sqlite.py`, `postgres.py`: connections, migrations (`schema.py`) and the readings hot path;
  each turns its driver's errors into StoreError (collector.errors)
"""

from lifeline.collector.errors import InUse, NameTaken
from lifeline.collector.store.base import (
    Conflict,
    Store,
    StoreDataError,
    StoreError,
    StoreUnavailable,
)


def open_store(url: str) -> Store:
    """Open the store named by a URL: sqlite:///path (or sqlite:///:memory:) or postgresql://...

    Raises ValueError for any other URL, StoreUnavailable if the database cannot be opened or
    reached.
    """
    if url.startswith("sqlite://"):
        from lifeline.collector.store.sqlite import SqliteStore

        path = url.removeprefix("sqlite://").removeprefix("/") or ":memory:"
        return SqliteStore(path)
    if url.startswith(("postgresql://", "postgres://")):
        from lifeline.collector.store.postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"unsupported database URL {url!r} (use sqlite:///FILE or postgresql://...)")


__all__ = [
    "Conflict",
    "InUse",
    "NameTaken",
    "Store",
    "StoreDataError",
    "StoreError",
    "StoreUnavailable",
    "open_store",
]
