"""What every SQL module of the store shares: the cursor it writes through, the base of the
aggregates' row classes (transactions, statements, and the seams between aggregates), what
one ingest commit knows, and the reading of SELECT rows into dataclasses by field name (RowMap).

Shared SQL uses `:name` parameters (sqlite3 style); the PostgreSQL backend rewrites them.
"""

import json
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from lifeline.collector.grids import GridMap
from lifeline.collector.models import EventRecord, Status
from lifeline.wire import Record

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Pos = tuple[int, int, int]  # (epoch rank, batch seq, index): the gateway's order of events
BIRTH_IDX = 2**31  # a birth's picture comes after every event of its high-water batch
_TS = operator.itemgetter(2)  # Record.ts_ms, without the property call


def at_or_after(pos: Pos, stored: Sequence[Any]) -> bool:
    """True if `pos` is not older than a stored (rank, seq, idx), unknown (NULLs) included."""
    if stored[0] is None:
        return True
    return pos >= (int(stored[0]), int(stored[1]), int(stored[2]))


@dataclass(slots=True)
class Commit:
    """What one commit knows and counts beyond its rows: the collector's time, the window of
    plausible sample times [lo, hi], and the claims refused to gateways."""

    now_ms: int
    lo: int
    hi: int
    gateway_conflicts: int = 0
    dead_letters: int = 0  # besides the Rejected items: births whose claims were refused

    def received(self, ts_ms: int) -> int | None:
        """The receive time to store beside `ts_ms` if it is implausible, else None."""
        return self.now_ms if not self.lo <= ts_ms <= self.hi else None

    def span(self, records: Sequence[Record]) -> tuple[int, int]:
        """The earliest and latest sample time of a batch, (lo, hi) if it is empty."""
        if not records:
            return self.lo, self.hi
        return min(map(_TS, records)), max(map(_TS, records))


@dataclass(frozen=True, slots=True)
class Change:
    """A device status change at a position in its gateway's order of events."""

    status: Status
    ts_ms: int
    reason: str
    pos: Pos


class Cursor(Protocol):
    """The slice of a DB-API cursor the shared code uses."""

    def execute(self, sql: Any, params: Any = ..., /) -> Any:
        """Run one statement."""
        ...

    def executemany(self, sql: Any, params_seq: Any, /) -> Any:
        """Run one statement for many parameter sets."""
        ...

    def fetchall(self) -> list[Any]:
        """Rows of the last statement."""
        ...

    @property
    def description(self) -> Any:
        """Result columns of the last statement, None if it returned no rows."""
        ...

    @property
    def rowcount(self) -> int:
        """Rows touched by the last statement."""
        ...


def sql_values(*values: str) -> str:
    """`('a', 'b')`: SQL text for values of the collector's own enums (never input), written
    into a statement rather than bound, so that PostgreSQL can match a partial index on them.
    Raises ValueError for a value with a quote."""
    if any("'" in v for v in values):
        raise ValueError(f"not a constant for SQL text: {values!r}")
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


T = TypeVar("T", bound="DataclassInstance")


@dataclass(frozen=True, slots=True)
class Col:
    """A field read through `decode(value)` from column `sql` (the field's own column if None)."""

    decode: Callable[[Any], Any]
    sql: str | None = None


class RowMap(Generic[T]):
    """How SELECT rows become dataclass `cls`, by field name rather than by position.

    Each field of `cls`, in declaration order, is read from the column `alias.field` (`field`
    without an alias) unless `columns` gives, under the field's name, another column or SQL
    expression (a str), a Col (a decode, and optionally the column), or a RowMap (a nested
    dataclass read from as many columns as it has; with `nullable=True`, None when its first
    column is NULL). `select` is the SELECT list in that order, `width` how many columns it has.
    Raises TypeError for a name in `columns` that is no field of `cls`.
    """

    width: int
    select: str

    def __init__(
        self,
        cls: type[T],
        alias: str = "",
        *,
        nullable: bool = False,
        **columns: "str | Col | RowMap[Any]",
    ) -> None:
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(columns) - set(names))
        if unknown:
            raise TypeError(f"{cls.__name__} has no field {', '.join(unknown)}")
        self.nullable = nullable
        self._cls = cls
        self._reads: list[tuple[str, int, int, Callable[[Sequence[Any]], Any]]] = []
        sql: list[str] = []
        width = 0
        for name in names:
            own = f"{alias}.{name}" if alias else name
            spec = columns.get(name, own)
            read: Callable[[Sequence[Any]], Any]
            if isinstance(spec, RowMap):
                sql.append(spec.select)
                n, read = spec.width, spec._nested
            elif isinstance(spec, Col):
                sql.append(spec.sql or own)
                n, read = 1, _first(spec.decode)
            else:
                sql.append(spec)
                n, read = 1, operator.itemgetter(0)
            self._reads.append((name, width, width + n, read))
            width += n
        self.width = width
        self.select = ", ".join(sql)

    def __call__(self, row: Sequence[Any]) -> T:
        """The dataclass of one row whose columns are `select`'s; ValueError if the row has
        another number of columns."""
        if len(row) != self.width:
            raise ValueError(
                f"a row of {len(row)} columns for {self._cls.__name__}, which reads {self.width}"
            )
        return self._cls(**{name: read(row[a:b]) for name, a, b, read in self._reads})

    def _nested(self, values: Sequence[Any]) -> T | None:
        return None if self.nullable and values[0] is None else self(values)


def _first(decode: Callable[[Any], Any]) -> Callable[[Sequence[Any]], Any]:
    return lambda values: decode(values[0])


def json_tuple(text: str) -> tuple[Any, ...]:
    """A JSON array stored as text, as a tuple (a frozen dataclass's sequence field)."""
    return tuple(json.loads(text))


class Rows(ABC):
    """The base of each aggregate's rows (readings, gateways, assets, alarms, cases, keys, the
    event log, webhooks): a backend supplies transactions; the few calls from one aggregate
    into another are declared here, so that each module names what it needs of the others."""

    # The 单元网格 registry that births and asset writes place devices and assets in (see
    # SqlStore.use_grids); None: no registry, an asset keeps the grid it declares.
    grids: GridMap | None = None

    @abstractmethod
    def _tx(self) -> AbstractContextManager[Cursor]:
        """A cursor inside one transaction, committed on normal exit."""

    @abstractmethod
    def _sql(self, sql: str) -> str:
        """Translate shared `:name` SQL to the driver's parameter style."""

    def _run(self, cur: Cursor, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Run one statement; its rows, if it returns any."""
        cur.execute(self._sql(sql), params or {})
        return cur.fetchall() if cur.description is not None else []

    def _query(self, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Run one statement in its own transaction; its rows."""
        with self._tx() as cur:
            return self._run(cur, sql, params)

    # --- the seams between aggregates ----------------------------------------------------------

    @abstractmethod
    def _log_event(
        self, cur: Cursor, etype: str, ts_ms: int, now_ms: int, subject: str, data: dict[str, Any]
    ) -> None:
        """Append one entry to the event log (EventLogRows)."""

    @abstractmethod
    def _gateway_conflict(self, cur: Cursor, gateway: str, why: str, ctx: Commit) -> None:
        """Report a claim a gateway may not make (GatewayRows)."""

    @abstractmethod
    def last_event_id(self) -> int:
        """The newest event id, 0 if the log is empty (EventLogRows)."""

    @abstractmethod
    def events(
        self,
        after_id: int,
        limit: int = 500,
        types: Sequence[str] = (),
        scope: Sequence[str] | None = None,
        until_id: int | None = None,
    ) -> list[EventRecord]:
        """Event log entries with id > after_id, oldest first (EventLogRows)."""
