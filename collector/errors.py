"""The collector's storage errors: what a store raises instead of its driver's errors."""


class StoreError(RuntimeError):
    """A database operation failed. Driver errors never leave a store: they become one of these.

    The subclasses tell the caller what to do: StoreUnavailable (retry the same work later),
    StoreDataError (this data will never be stored as it is) and Conflict (reload and retry).
    """


class StoreUnavailable(StoreError):
    """The database cannot work now: connection lost, refused or timed out, server shutting
    down, out of disk, memory or connections, a deadlock. Retrying the same work can succeed."""


class StoreDataError(StoreError):
    """The database refused the data itself (PostgreSQL SQLSTATE classes 22 data exception and
    23 integrity constraint violation, a trigger's RAISE, a value SQLite cannot hold, ...):
    retrying the same data fails the same way."""


class Conflict(StoreError):
    """A write lost a race (the case changed underneath); reload and retry."""


class InUse(StoreError):
    """A record that others still refer to cannot be removed; the message says which, and what
    to do first."""


class NameTaken(StoreDataError):
    """A department name or code the registry refuses: another department's name (now or
    before: names are never reused), or a name equal to a code; the message says which."""
