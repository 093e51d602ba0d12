"""msgpack codec for v1 messages: compact arrays on the hot path, strict validation on decode."""

import functools
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import msgpack

from lifeline.wire.errors import WireError
from lifeline.wire.messages import (
    DATUMS,
    AlarmBatch,
    AlarmEvent,
    AlarmState,
    AlarmType,
    Birth,
    ClockInfo,
    Command,
    CommandReply,
    DataBatch,
    Death,
    DeviceEvent,
    DeviceEventBatch,
    DeviceInfo,
    Location,
    Message,
    Quality,
    Record,
    Severity,
    Status,
    Value,
)
from lifeline.wire.topics import DURABLE_KINDS, IDENT_RE, WIRE_VERSION, Kind, check_ident

MAX_PAYLOAD_BYTES = 256 * 1024
MAX_ITEMS = 20_000  # records or events in one message
MAX_STR = 256  # any string field
MAX_ERROR = 1024  # a command reply's error text
MAX_MAP = 256  # keys in status counters, command args, results
# Any time a clock can show is carried, plausible or not: a gateway that boots at 1970 (no RTC,
# NTP not yet synced) must still deliver its alarms. The receiver judges plausibility
# (EARLIEST_PLAUSIBLE_MS, its own clock) and flags; the codec refuses only what no store or
# client can represent: before 1970 or after 9999-12-31T23:59:59.999Z (ISO 8601, datetime).
MIN_TS_MS = 0
MAX_TS_MS = 253_402_300_799_999
# No clock that reads earlier than this release's build is right (bumped with each release).
EARLIEST_PLAUSIBLE_MS = 1_793_491_200_000  # 2026-11-01T00:00:00Z
MAX_SEQ = 2**63 - 1
MAX_EPOCH = 32
_INT64 = 2**63
_EPOCH_RE = re.compile(r"^[0-9A-Za-z_\-]*$")
# Characters no wire string may carry: NUL (PostgreSQL text cannot hold it) and the other C0
# controls and DEL (terminal escapes, log forgery); tab, line feed and carriage return pass.
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

_QUALITIES = {q.value: q for q in Quality}
_STATES = {s.value: s for s in AlarmState}
_SEVERITIES = {int(s): s for s in Severity}
_KINDS = {k.value: k for k in Kind}
_ALARM_TYPES = frozenset(t.value for t in AlarmType)


def encode(msg: Message) -> bytes:
    """Serialize a message; raise WireError if it exceeds MAX_PAYLOAD_BYTES."""
    head: dict[str, Any] = {
        "v": WIRE_VERSION,
        "k": msg.kind.value,
        "g": msg.gateway,
        "s": msg.session,
        "e": msg.epoch,
        "q": msg.seq,
        "t": msg.sent_ms,
        "b": _ENCODERS[msg.kind](msg),
    }
    try:
        data: bytes = msgpack.packb(head, use_bin_type=True)
    except (OverflowError, TypeError, ValueError) as exc:
        raise WireError(f"cannot encode {msg.kind}: {exc}") from None
    if len(data) > MAX_PAYLOAD_BYTES:
        raise WireError(f"encoded {msg.kind} is {len(data)} bytes, over {MAX_PAYLOAD_BYTES}")
    return data


def encode_data(
    gateway: str, session: str, epoch: str, seq: int, sent_ms: int, rows: Sequence[Sequence[Any]]
) -> bytes:
    """Encode a DataBatch from wire-shaped record rows without building Record objects.

    `rows` are `[device, point, ts_ms, value, quality, historical]` lists. Byte-identical to
    `encode(DataBatch(...))` (a unit test holds it to that): the gateway's hot path saves an
    object per reading. No size check: the caller cuts batches to its own byte budget.
    """
    packer = msgpack.Packer(use_bin_type=True)
    body = b"".join(packer.pack(row) for row in rows)
    return encode_data_packed(gateway, session, epoch, seq, sent_ms, len(rows), body)


def encode_data_packed(
    gateway: str, session: str, epoch: str, seq: int, sent_ms: int, n: int, body: bytes
) -> bytes:
    """Encode a DataBatch around `n` record rows already msgpack-packed back to back in `body`."""
    packb = msgpack.packb
    return b"".join(
        (
            _data_head(gateway, session, epoch),
            packb(seq),
            _T_KEY,
            packb(sent_ms),
            _B_KEY,
            msgpack.Packer().pack_array_header(n),
            body,
        )
    )


@functools.lru_cache(maxsize=16)
def _data_head(gateway: str, session: str, epoch: str) -> bytes:
    """The envelope bytes that are the same for every data batch of a session, up to seq."""
    packer = msgpack.Packer(use_bin_type=True)
    fields = ("v", WIRE_VERSION, "k", Kind.DATA.value, "g", gateway, "s", session, "e", epoch, "q")
    return packer.pack_map_header(8) + b"".join(packer.pack(x) for x in fields)


_T_KEY = msgpack.packb("t")
_B_KEY = msgpack.packb("b")


def decode(payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> Message:
    """Parse and validate a payload, raising WireError with the reason for anything malformed."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise WireError(f"payload must be bytes, not {type(payload).__name__}")
    if len(payload) > max_bytes:
        raise WireError(f"payload is {len(payload)} bytes, over the {max_bytes}-byte limit")
    if not payload:
        raise WireError("payload is empty")
    try:
        obj = msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            max_str_len=max_bytes,
            max_bin_len=max_bytes,
            max_array_len=MAX_ITEMS,
            max_map_len=max(MAX_MAP, 16),
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises a zoo of types for malformed input
        raise WireError(f"payload is not valid msgpack: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, dict):
        raise WireError(f"payload must be a map, got {type(obj).__name__}")
    return _decode_envelope(obj)


def command_id_of(payload: bytes) -> str:
    """The command id in a payload that `decode` refused, or "" when there is none to read.

    Takes the raw payload of a cmd message; never raises. A gateway answers a command it
    cannot decode with an error reply under this id, so that the sender's reply is not left
    pending for ever (an over-long argument, a control character, an unknown field).
    """
    if not isinstance(payload, bytes | bytearray) or not 0 < len(payload) <= MAX_PAYLOAD_BYTES:
        return ""
    try:
        obj = msgpack.unpackb(payload, raw=False, max_ext_len=0)
    except Exception:  # msgpack raises a zoo of types for malformed input
        return ""
    body = obj.get("b") if isinstance(obj, dict) else None
    found = body.get("id") if isinstance(body, dict) else None
    if isinstance(found, str) and len(found) <= 64 and not _BAD_CHARS.search(found):
        return found
    return ""


def _decode_envelope(obj: dict[str, Any]) -> Message:
    version = obj.get("v")
    if version != WIRE_VERSION or isinstance(version, bool):
        raise WireError(f"unsupported wire version {version!r} (this side speaks {WIRE_VERSION})")
    unknown = set(obj) - {"v", "k", "g", "s", "e", "q", "t", "b"}
    if unknown:
        raise WireError(f"unknown envelope fields {sorted(unknown)}")
    kind_name = _field(obj, "k")
    kind = _KINDS.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        raise WireError(f"unknown message kind {kind_name!r}")
    gateway = check_ident(_field(obj, "g"), "gateway")
    session = _str(_field(obj, "s"), "session", 64)
    epoch = _epoch(_field(obj, "e"))
    seq = _int(_field(obj, "q"), "seq", 0, MAX_SEQ)
    if kind in DURABLE_KINDS and (seq == 0 or not epoch):
        raise WireError(f"{kind} messages need an epoch and a seq >= 1")
    sent_ms = _ts(_field(obj, "t"), "sent time")
    return _DECODERS[kind](_Head(gateway, session, seq, sent_ms, epoch), _field(obj, "b"))


# --- field checks -----------------------------------------------------------------------------


def _field(obj: dict[str, Any], key: str) -> Any:
    try:
        return obj[key]
    except KeyError:
        raise WireError(f"missing field {key!r}") from None


def _str(x: Any, what: str, max_len: int = MAX_STR) -> str:
    if not isinstance(x, str):
        raise WireError(f"{what} must be a string, got {type(x).__name__}")
    if len(x) > max_len:
        raise WireError(f"{what} is {len(x)} characters, over {max_len}")
    bad = _BAD_CHARS.search(x)
    if bad is not None:
        raise WireError(
            f"{what} contains control character U+{ord(bad.group()):04X} at {bad.start()}"
        )
    return x


def _alarm_type(x: Any, what: str) -> str:
    if x not in _ALARM_TYPES:
        raise WireError(f"{what} has unknown alarm type {x!r} (known: {sorted(_ALARM_TYPES)})")
    return str(x)


def _location(x: Any, what: str) -> Location | None:
    if x is None:
        return None
    row = _row(x, what, 4)
    lon = _coordinate(row[0], f"{what} lon", 180)
    lat = _coordinate(row[1], f"{what} lat", 90)
    datum = _str(row[2], f"{what} datum", 16)
    if datum not in DATUMS:
        raise WireError(f"{what} datum {datum!r} is not one of {', '.join(DATUMS)}")
    return Location(lon, lat, datum, _str(row[3], f"{what} address"))


def _coordinate(x: Any, what: str, limit: float) -> float:
    if not isinstance(x, int | float) or isinstance(x, bool) or not -limit <= x <= limit:
        raise WireError(f"{what} must be a number of degrees within ±{limit:g}, got {x!r}")
    return float(x)


def _epoch(x: Any) -> str:
    epoch = _str(x, "epoch", MAX_EPOCH)
    if not _EPOCH_RE.fullmatch(epoch):
        raise WireError(f"epoch {epoch!r} may only hold A-Z a-z 0-9 _ -")
    return epoch


def _opt_str(x: Any, what: str) -> str | None:
    return None if x is None else _str(x, what)


def _int(x: Any, what: str, lo: int, hi: int) -> int:
    if not isinstance(x, int) or isinstance(x, bool):
        raise WireError(f"{what} must be an integer, got {type(x).__name__}")
    if not lo <= x <= hi:
        raise WireError(f"{what} {x} is outside {lo}..{hi}")
    return x


def _ts(x: Any, what: str) -> int:
    if not isinstance(x, int) or isinstance(x, bool):
        raise WireError(f"{what} must be integer UTC milliseconds, got {type(x).__name__}")
    if not MIN_TS_MS <= x <= MAX_TS_MS:
        raise WireError(f"{what} {x} ms is not between 1970 and the end of year 9999")
    return x


def _bool(x: Any, what: str) -> bool:
    if not isinstance(x, bool):
        raise WireError(f"{what} must be a boolean, got {type(x).__name__}")
    return x


def _value(x: Any, what: str) -> Value:
    if x is None or isinstance(x, bool):
        return x
    if isinstance(x, int):
        if not -_INT64 <= x < _INT64:
            raise WireError(f"{what} {x} does not fit in 64 bits")
        return x
    if isinstance(x, float):
        if not math.isfinite(x):
            raise WireError(f"{what} must be finite (send quality 'bad' with no value instead)")
        return x
    if isinstance(x, str):
        return _str(x, what)
    raise WireError(f"{what} must be null, bool, int, float or string, got {type(x).__name__}")


def _list(x: Any, what: str) -> list[Any]:
    if not isinstance(x, list):
        raise WireError(f"{what} must be an array, got {type(x).__name__}")
    return x


def _row(x: Any, what: str, width: int) -> list[Any]:
    row = _list(x, what)
    if len(row) != width:
        raise WireError(f"{what} must have {width} fields, got {len(row)}")
    return row


def _map(x: Any, what: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(x, dict):
        raise WireError(f"{what} must be a map, got {type(x).__name__}")
    unknown = set(x) - keys
    if unknown:
        raise WireError(f"{what} has unknown fields {sorted(unknown)}")
    return x


def _value_map(x: Any, what: str, numbers_only: bool = False) -> dict[str, Any]:
    if not isinstance(x, dict):
        raise WireError(f"{what} must be a map, got {type(x).__name__}")
    if len(x) > MAX_MAP:
        raise WireError(f"{what} has {len(x)} entries, over {MAX_MAP}")
    out: dict[str, Any] = {}
    for key, val in x.items():
        name = _str(key, f"{what} key", 64)
        v = _value(val, f"{what}[{name}]")
        if numbers_only and (v is None or isinstance(v, bool | str)):
            raise WireError(f"{what}[{name}] must be a number")
        out[name] = v
    return out


# --- per-kind bodies --------------------------------------------------------------------------


def _enc_data(msg: Message) -> list[list[Any]]:
    assert isinstance(msg, DataBatch)
    return [
        [r.device, r.point, r.ts_ms, r.value, r.quality.value, r.historical] for r in msg.records
    ]


class _Head(NamedTuple):
    """The envelope fields every message has, passed from the envelope to the body decoders."""

    gateway: str
    session: str
    seq: int
    sent_ms: int
    epoch: str


def _dec_data(h: _Head, body: Any) -> DataBatch:
    rows = _list(body, "records")
    records = _dec_columns(rows)
    if records is None:
        records = tuple(_dec_rows(rows))
    return DataBatch(*h[:4], records, epoch=h.epoch)


# tuple.__new__(Record, fields) is what Record._make does, minus a Python call per record.
_new_record = functools.partial(tuple.__new__, Record)
_QUALITY_NAMES = frozenset(_QUALITIES)


def _dec_columns(rows: list[Any]) -> tuple[Record, ...] | None:
    """Records of a batch checked column by column, or None to take the row-by-row path.

    Accepts exactly what `_dec_rows` accepts on its fast path, but every check runs as one
    C-level pass over a column (types, ranges, the few distinct devices, points and
    qualities), not as Python code per record: a typical batch of telemetry.
    """
    if not rows or set(map(type, rows)) != {list} or set(map(len, rows)) != {6}:
        return None
    devices, points, stamps, values, qualities, hists = zip(*rows, strict=True)
    if (
        set(map(type, devices)) != {str}
        or set(map(type, points)) != {str}
        or set(map(type, stamps)) != {int}
        or set(map(type, qualities)) != {str}
        or set(map(type, hists)) != {bool}
    ):
        return None
    quality_names = set(qualities)
    point_names = set(points)
    if (
        not quality_names <= _QUALITY_NAMES
        or min(stamps) < MIN_TS_MS
        or max(stamps) > MAX_TS_MS
        or max(map(len, point_names)) > 64
        or _BAD_CHARS.search("".join(point_names))
        or not all(map(IDENT_RE.fullmatch, set(devices)))
    ):
        return None
    if set(map(type, values)) == {float}:
        if not all(map(math.isfinite, values)):
            return None
    elif not all(map(_plain_value, values)):
        return None
    stale = Quality.STALE.value
    if stale in quality_names and any(
        v is not None for v, q in zip(values, qualities, strict=True) if q == stale
    ):
        return None
    quality = map(_QUALITIES.__getitem__, qualities)
    return tuple(
        map(_new_record, zip(devices, points, stamps, values, quality, hists, strict=True))
    )


def _dec_rows(rows: list[Any]) -> list[Record]:
    """Records of a batch checked one by one: any batch, with the precise error if invalid."""
    records: list[Record] = []
    append = records.append
    devices: set[str] = set()  # ids already checked in this batch: the regex runs once per device
    for i, row in enumerate(rows):
        # Fast path: every check inline, no message built unless something is wrong.
        if type(row) is list and len(row) == 6:
            device, point, ts, value, q, hist = row
            quality = _QUALITIES.get(q) if type(q) is str else None
            if (
                quality is not None
                and type(point) is str
                and len(point) <= 64
                and not _BAD_CHARS.search(point)
                and type(ts) is int
                and MIN_TS_MS <= ts <= MAX_TS_MS
                and type(hist) is bool
                and _plain_value(value)
                and (value is None or quality is not Quality.STALE)
                and type(device) is str
                and (device in devices or IDENT_RE.fullmatch(device) is not None)
            ):
                devices.add(device)
                append(Record(device, point, ts, value, quality, hist))
                continue
        append(_dec_record(i, row))  # raises WireError saying exactly what is wrong
    return records


def _plain_value(x: Any) -> bool:
    """True for a value the fast path accepts as is; anything else takes the checked path."""
    t = type(x)
    if t is float:
        return bool(x - x == 0.0)  # false for NaN and infinities
    if t is int:
        return bool(-_INT64 <= x < _INT64)
    if t is str:
        return len(x) <= MAX_STR and not _BAD_CHARS.search(x)
    return x is None or t is bool


def _dec_record(i: int, raw: Any) -> Record:
    row = _row(raw, f"record {i}", 6)
    quality = _QUALITIES.get(row[4]) if isinstance(row[4], str) else None
    if quality is None:
        raise WireError(f"record {i} has unknown quality {row[4]!r}")
    value = _value(row[3], f"record {i} value")
    if quality is Quality.STALE and value is not None:
        raise WireError(f"record {i} is stale but carries a value")
    return Record(
        check_ident(row[0], f"record {i} device"),
        _str(row[1], f"record {i} point", 64),
        _ts(row[2], f"record {i} sample time"),
        value,
        quality,
        _bool(row[5], f"record {i} historical flag"),
    )


def alarm_fields(e: AlarmEvent) -> list[Any]:
    """An alarm event's own fields as plain values, in wire order (no `historical` flag)."""
    return [
        e.alarm_id,
        e.device,
        e.point,
        e.alarm_type,
        int(e.severity),
        e.state.value,
        e.ts_ms,
        e.value,
        e.limit,
        e.message,
        e.ack_by,
        e.ack_note,
    ]


def _enc_alarm(msg: Message) -> list[list[Any]]:
    assert isinstance(msg, AlarmBatch)
    return [[*alarm_fields(e), e.historical] for e in msg.events]


def _dec_alarm(h: _Head, body: Any) -> AlarmBatch:
    events = []
    for i, raw in enumerate(_list(body, "alarm events")):
        row = _row(raw, f"alarm event {i}", 13)
        what = f"alarm event {i}"
        events.append(_dec_alarm_fields(row, what, _bool(row[12], f"{what} historical flag")))
    return AlarmBatch(*h[:4], tuple(events), epoch=h.epoch)


def _dec_alarm_fields(row: list[Any], what: str, historical: bool) -> AlarmEvent:
    """An alarm event from the fields `alarm_fields` writes (the first 12 of `row`)."""
    severity = _SEVERITIES.get(row[4]) if type(row[4]) is int else None
    if severity is None:
        raise WireError(f"{what} severity must be 1..4, got {row[4]!r}")
    state = _STATES.get(row[5]) if isinstance(row[5], str) else None
    if state is None:
        raise WireError(f"{what} has unknown state {row[5]!r}")
    return AlarmEvent(
        alarm_id=_str(row[0], f"{what} id", 96),
        device=check_ident(row[1], f"{what} device"),
        point=_str(row[2], f"{what} point", 64),
        alarm_type=_alarm_type(row[3], what),
        severity=severity,
        state=state,
        ts_ms=_ts(row[6], f"{what} time"),
        value=_value(row[7], f"{what} value"),
        limit=_value(row[8], f"{what} limit"),
        message=_str(row[9], f"{what} message"),
        ack_by=_opt_str(row[10], f"{what} ack_by"),
        ack_note=_opt_str(row[11], f"{what} ack_note"),
        historical=historical,
    )


def _enc_device(msg: Message) -> list[list[Any]]:
    assert isinstance(msg, DeviceEventBatch)
    return [[e.device, e.online, e.ts_ms, e.reason, e.historical] for e in msg.events]


def _dec_device(h: _Head, body: Any) -> DeviceEventBatch:
    events = []
    for i, raw in enumerate(_list(body, "device events")):
        row = _row(raw, f"device event {i}", 5)
        events.append(
            DeviceEvent(
                check_ident(row[0], f"device event {i} device"),
                _bool(row[1], f"device event {i} online flag"),
                _ts(row[2], f"device event {i} time"),
                _str(row[3], f"device event {i} reason"),
                _bool(row[4], f"device event {i} historical flag"),
            )
        )
    return DeviceEventBatch(*h[:4], tuple(events), epoch=h.epoch)


def _enc_birth(msg: Message) -> dict[str, Any]:
    assert isinstance(msg, Birth)
    devices = [
        [d.device, d.profile, d.family, d.online, d.asset, _enc_location(d.location)]
        for d in msg.devices
    ]
    clock = msg.clock
    return {
        "sw": msg.software,
        "ch": msg.config_hash,
        "d": devices,
        "a": [alarm_fields(e) for e in msg.alarms],
        "h": msg.high_water,
        "ck": [clock.plausible, clock.step_ms, clock.step_at_ms],
        "bd": msg.bd_seq,
    }


def _enc_location(loc: Location | None) -> list[Any] | None:
    return None if loc is None else [loc.lon, loc.lat, loc.datum, loc.address]


def _dec_birth(h: _Head, body: Any) -> Birth:
    b = _map(body, "birth", {"sw", "ch", "d", "a", "h", "ck", "bd"})
    devices = []
    for i, raw in enumerate(_list(_field(b, "d"), "birth devices")):
        row = _row(raw, f"birth device {i}", 6)
        devices.append(
            DeviceInfo(
                check_ident(row[0], f"birth device {i} id"),
                _str(row[1], f"birth device {i} profile", 64),
                _str(row[2], f"birth device {i} family", 64),
                _bool(row[3], f"birth device {i} online flag"),
                _opt_str(row[4], f"birth device {i} asset"),
                _location(row[5], f"birth device {i} location"),
            )
        )
    alarms = tuple(
        _dec_alarm_fields(_row(raw, f"birth alarm {i}", 12), f"birth alarm {i}", False)
        for i, raw in enumerate(_list(_field(b, "a"), "birth alarms"))
    )
    clock = _row(_field(b, "ck"), "birth clock", 3)
    return Birth(
        *h[:4],
        epoch=h.epoch,
        software=_str(_field(b, "sw"), "software version", 64),
        config_hash=_str(_field(b, "ch"), "config hash", 128),
        devices=tuple(devices),
        alarms=alarms,
        high_water=_int(_field(b, "h"), "birth high-water seq", 0, MAX_SEQ),
        clock=ClockInfo(
            _bool(clock[0], "birth clock plausible flag"),
            _int(clock[1], "birth clock step", -_INT64, _INT64 - 1),
            _int(clock[2], "birth clock step time", 0, MAX_TS_MS),
        ),
        bd_seq=_int(_field(b, "bd"), "birth bd_seq", 0, MAX_SEQ),
    )


def _enc_death(msg: Message) -> dict[str, Any]:
    assert isinstance(msg, Death)
    return {"r": msg.reason, "bd": msg.bd_seq}


def _dec_death(h: _Head, body: Any) -> Death:
    b = _map(body, "death", {"r", "bd"})
    return Death(
        *h[:4],
        reason=_str(_field(b, "r"), "death reason"),
        bd_seq=_int(_field(b, "bd"), "death bd_seq", 0, MAX_SEQ),
        epoch=h.epoch,
    )


def _enc_status(msg: Message) -> dict[str, Any]:
    assert isinstance(msg, Status)
    return {"c": msg.counters}


def _dec_status(h: _Head, body: Any) -> Status:
    b = _map(body, "status", {"c"})
    counters = _value_map(_field(b, "c"), "status counters", numbers_only=True)
    return Status(*h[:4], counters=counters, epoch=h.epoch)


def _enc_cmd(msg: Message) -> dict[str, Any]:
    assert isinstance(msg, Command)
    return {"id": msg.command_id, "n": msg.name, "a": msg.args}


def _dec_cmd(h: _Head, body: Any) -> Command:
    b = _map(body, "command", {"id", "n", "a"})
    return Command(
        *h[:4],
        epoch=h.epoch,
        command_id=_str(_field(b, "id"), "command id", 64),
        name=_str(_field(b, "n"), "command name", 64),
        args=_value_map(_field(b, "a"), "command args"),
    )


def _enc_reply(msg: Message) -> dict[str, Any]:
    assert isinstance(msg, CommandReply)
    return {"id": msg.command_id, "ok": msg.ok, "r": msg.result, "e": msg.error}


def _dec_reply(h: _Head, body: Any) -> CommandReply:
    b = _map(body, "command reply", {"id", "ok", "r", "e"})
    return CommandReply(
        *h[:4],
        epoch=h.epoch,
        command_id=_str(_field(b, "id"), "command id", 64),
        ok=_bool(_field(b, "ok"), "command ok flag"),
        result=_value_map(_field(b, "r"), "command result"),
        error=_str(_field(b, "e"), "command error", MAX_ERROR),
    )


_ENCODERS: dict[Kind, Callable[[Message], Any]] = {
    Kind.DATA: _enc_data,
    Kind.ALARM: _enc_alarm,
    Kind.DEVICE: _enc_device,
    Kind.BIRTH: _enc_birth,
    Kind.DEATH: _enc_death,
    Kind.STATUS: _enc_status,
    Kind.CMD: _enc_cmd,
    Kind.CMD_REPLY: _enc_reply,
}
_DECODERS: dict[Kind, Callable[[_Head, Any], Message]] = {
    Kind.DATA: _dec_data,
    Kind.ALARM: _dec_alarm,
    Kind.DEVICE: _dec_device,
    Kind.BIRTH: _dec_birth,
    Kind.DEATH: _dec_death,
    Kind.STATUS: _dec_status,
    Kind.CMD: _dec_cmd,
    Kind.CMD_REPLY: _dec_reply,
}
