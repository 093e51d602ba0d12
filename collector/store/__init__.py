"""Collector storage: one Store interface, SQLite and PostgreSQL backends."""

from collector.store.base import (
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
        from collector.store.sqlite import SqliteStore

        path = url.removeprefix("sqlite://").removeprefix("/") or ":memory:"
        return SqliteStore(path)
    if url.startswith(("postgresql://", "postgres://")):
        from collector.store.postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"unsupported database URL {url!r} (use sqlite:///FILE or postgresql://...)")


__all__ = [
    "Conflict",
    "Store",
    "StoreDataError",
    "StoreError",
    "StoreUnavailable",
    "open_store",
]
