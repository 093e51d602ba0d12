"""How the outbox holds readings and events in the file, and cuts them into wire batches.

- A backlog chunk (table `chunks`) is wire record rows `[device, point, ts_ms, value, quality,
  historical]`, msgpack-packed back to back, one batch's worth at most: publishing a range of
  chunks wraps their bytes in a data envelope (`wire.encode_data_packed`), with no work per
  reading. Chunks are read back through wire's own decoder (`chunk_records`).
- An alarm or device event waiting for its batch (table `events`) is the event's fields as a
  msgpack array (`pack_event`); it is encoded for the wire when its batch is frozen.
- A batch is cut to a number of records and a byte budget (`cut`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import astuple, replace
from typing import Any, TypeVar

import msgpack

from lifeline.edge.buffer.schema import LANE_ALARM
from lifeline.wire import (
    AlarmBatch,
    AlarmEvent,
    AlarmState,
    DataBatch,
    DeviceEvent,
    DeviceEventBatch,
    Quality,
    Record,
    Severity,
    WireError,
    decode,
    encode,
    encode_data_packed,
)
from lifeline.wire.messages import Value

T = TypeVar("T")

Sample = tuple[str, str, int, Value, Quality]  # device, point, sample ms, value, quality

# The envelope a chunk is read back in: a data batch only in order to be decoded, whose own
# fields (gateway, session, epoch, seq, sent time) nobody reads.
_READ_AS = ("buffer", "", "0", 1, 0)


def live_rows(samples: Sequence[Sample], live_since_ms: int) -> list[list[Any]]:
    """Wire record rows of samples frozen as they arrive; historical if sampled before the
    broker connection `live_since_ms` (UTC ms) began."""
    return [[d, p, ts, v, q.value, ts < live_since_ms] for d, p, ts, v, q in samples]


def record_rows(records: Sequence[Record]) -> list[list[Any]]:
    """Wire record rows of decoded records (to cut a stored batch again)."""
    return [[r.device, r.point, r.ts_ms, r.value, r.quality.value, r.historical] for r in records]


def pack_chunks(samples: Sequence[Sample], most: int, limit_bytes: int) -> list[tuple[int, bytes]]:
    """Backlog chunks of samples in arrival order: (rows, packed historical wire rows), each of
    at most `most` rows and `limit_bytes` bytes (a single row may be larger)."""
    pack = msgpack.Packer(use_bin_type=True).pack
    chunks: list[tuple[int, bytes]] = []
    parts: list[bytes] = []
    size = 0
    for d, p, ts, v, q in samples:
        row = pack([d, p, ts, v, q.value, True])
        if parts and (len(parts) >= most or size + len(row) > limit_bytes):
            chunks.append((len(parts), b"".join(parts)))
            parts, size = [], 0
        parts.append(row)
        size += len(row)
    if parts:
        chunks.append((len(parts), b"".join(parts)))
    return chunks


def chunk_records(n: int, body: bytes) -> tuple[Record, ...]:
    """The `n` readings a backlog chunk holds, read by wire's decoder.

    Raises WireError if they are not valid wire records.
    """
    return payload_records(encode_data_packed(*_READ_AS, n, body))


def payload_records(payload: bytes) -> tuple[Record, ...]:
    """The readings of a data batch stored with its payload, read by wire's decoder.

    Raises WireError if it is not a valid data batch.
    """
    batch = decode(payload, max_bytes=len(payload))
    if not isinstance(batch, DataBatch):
        raise WireError(f"a stored data batch holds a {batch.kind} message")
    return batch.records


def pack_event(e: AlarmEvent | DeviceEvent) -> bytes:
    """An event as it waits in table `events` for its batch."""
    data: bytes = msgpack.packb(astuple(e), use_bin_type=True)
    return data


def unpack_event(lane: int, body: bytes) -> Any:
    """The AlarmEvent (alarm lane) or DeviceEvent that `pack_event` stored as `body`."""
    fields = msgpack.unpackb(body, raw=False)
    if lane == LANE_ALARM:
        e = AlarmEvent(*fields)
        return replace(e, severity=Severity(e.severity), state=AlarmState(e.state))
    return DeviceEvent(*fields)


def encode_events(
    lane: int, gateway: str, session: str, epoch: str, seq: int, now: int, events: list[Any]
) -> bytes:
    """The wire payload of a batch of alarm events (alarm lane) or device events."""
    if lane == LANE_ALARM:
        return encode(AlarmBatch(gateway, session, seq, now, tuple(events), epoch=epoch))
    return encode(DeviceEventBatch(gateway, session, seq, now, tuple(events), epoch=epoch))


def cut(
    items: list[T], most: int, budget: int, encode: Callable[[list[T], int], bytes], seq: int
) -> Iterator[tuple[list[T], bytes]]:
    """Encode `items` as consecutive batches from `seq` on: (items, payload) each, at most
    `most` items and `budget` payload bytes (a single item may be larger: it cannot be cut).

    `encode(items, seq)` makes a payload; one that is too large is tried again with fewer.
    """
    i = 0
    while i < len(items):
        n = min(most, len(items) - i)
        while True:
            chunk = items[i : i + n]
            payload = encode(chunk, seq)
            if len(payload) <= budget or n == 1:
                break
            n = max(1, n * budget // len(payload) * 9 // 10)
        yield chunk, payload
        seq += 1
        i += n
