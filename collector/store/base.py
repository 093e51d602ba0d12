"""The storage port: everything ingest, the case engine and the API need from a database."""

from collections.abc import Sequence
from typing import Protocol

from collector.assets import Asset
from collector.cases.workflow import Audit, Case
from collector.models import (
    AlarmRecord,
    AlarmTransition,
    Bucket,
    DeadLetter,
    DeviceState,
    GatewayState,
    Incoming,
    Reading,
    WriteResult,
)


class StoreError(RuntimeError):
    """A database problem the caller cannot fix by changing its input (connection lost, ...)."""


class Conflict(StoreError):
    """A write lost a race (the case changed underneath); reload and retry."""


class Store(Protocol):
    """One storage interface; SQLite and PostgreSQL implement it and pass one contract suite."""

    @property
    def backend(self) -> str:
        """Which engine and layout: sqlite, postgres-partitioned or timescaledb."""
        ...

    def migrate(self) -> list[int]:
        """Apply pending schema migrations; return the versions applied (empty if none)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...

    def write(self, items: Sequence[Incoming], now_ms: int) -> WriteResult:
        """Commit a batch in one transaction, ignoring durable keys (gateway, seq) already seen."""
        ...

    def readings(
        self,
        device: str,
        point: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = 1000,
    ) -> list[Reading]:
        """Raw readings of a device (optionally one point) in [since, until), oldest first."""
        ...

    def series(
        self, device: str, point: str, since_ms: int, until_ms: int, bucket_ms: int
    ) -> list[Bucket]:
        """Numeric readings bucketed into min/avg/max over [since, until)."""
        ...

    def latest(self, device: str | None = None) -> list[Reading]:
        """The newest reading of every (device, point), optionally for one device."""
        ...

    def count_readings(self) -> int:
        """Total stored readings."""
        ...

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Most recent refused payloads first."""
        ...

    def count_dead_letters(self) -> int:
        """Total refused payloads."""
        ...

    def gateways(self) -> list[GatewayState]:
        """All known gateways."""
        ...

    def devices(self, gateway: str | None = None) -> list[DeviceState]:
        """All known devices, optionally of one gateway."""
        ...

    def alarms(self, active_only: bool = False) -> list[AlarmRecord]:
        """Deduplicated alarms, newest first."""
        ...

    def upsert_assets(self, assets: Sequence[Asset]) -> int:
        """Insert or replace assets and bind their listed devices; return how many."""
        ...

    def assets(self) -> list[Asset]:
        """All assets ordered by code."""
        ...

    def asset_of_device(self, device: str) -> Asset | None:
        """The asset a device is bound to, if any."""
        ...

    def bind_device(self, device: str, asset: str) -> None:
        """Bind a device to an asset (replacing any earlier binding)."""
        ...

    def pending_alarm_transitions(self, limit: int = 500) -> list[AlarmTransition]:
        """Stored alarm events the case engine has not handled yet, oldest first."""
        ...

    def mark_transitions_handled(self, ids: Sequence[int]) -> None:
        """Record that the case engine handled these alarm events."""
        ...

    def next_case_serial(self, prefix: str) -> int:
        """Allocate the next serial for case numbers starting with `prefix` (1, 2, ...)."""
        ...

    def open_case_for(self, subject: str, problem: str) -> Case | None:
        """The open case for (asset or device, problem), if there is one."""
        ...

    def save_case(
        self,
        case: Case,
        audits: Sequence[Audit],
        *,
        expect_state: str | None,
        transition_ids: Sequence[int] = (),
    ) -> None:
        """Insert (expect_state None) or update a case, its audits and handled events atomically.

        Raises Conflict if the stored case is no longer in `expect_state`.
        """
        ...

    def case(self, case_no: str) -> Case | None:
        """One case by number."""
        ...

    def cases(self, open_only: bool = False) -> list[Case]:
        """Cases, newest first."""
        ...

    def audit(self, case_no: str) -> list[Audit]:
        """The audit trail of a case, oldest first."""
        ...
