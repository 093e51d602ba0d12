"""docs/wire.md is the wire contract: real gateway batches decode with its tables alone.

The tables are parsed from the document; a small decoder built only from them reads real
payloads (from the gateway's outbox and the codec's encoder) and must agree, field by field,
with `wire.decode`. The codec's strictness then pins the rest: a documented key left out, or
one key or row field more than documented, is refused. So the document cannot drift.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import msgpack
import pytest

from lifeline.edge.buffer import Outbox
from lifeline.wire import (
    AlarmEvent,
    AlarmState,
    Birth,
    ClockInfo,
    Command,
    CommandReply,
    Death,
    DeviceEvent,
    DeviceInfo,
    Location,
    Message,
    Quality,
    Severity,
    Status,
    WireError,
    decode,
    encode,
)

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[2] / "docs" / "wire.md"
T0 = 1_795_000_000_000
Table = list[dict[str, str]]


def sections(text: str) -> dict[str, Table]:
    """The first table under every heading, as rows of {column: cell}, keyed by heading text."""
    out: dict[str, Table] = {}
    heading = ""
    header: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("#"):
            heading, header = line.lstrip("#").strip(), None
            continue
        if not line.startswith("|"):
            if header is not None:
                heading = ""  # one table per heading
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            out.setdefault(heading, [])
        elif set(line) <= set("|-: "):
            continue
        elif heading in out:
            out[heading].append(dict(zip(header, cells, strict=True)))
    return out


DOCS = sections(DOC.read_text(encoding="utf-8"))
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
CODES = {name: {r[name] for r in DOCS[name]} for name in ("quality", "state", "alarm type")}


def check(kind: str, x: Any) -> Any:
    """Check one value against a type of the document's type table; return it."""
    known = {r["type"] for r in DOCS["Types"]}
    base = re.sub(r"\(\d+\)$", "", kind)
    assert base in known or kind in known, f"type {kind!r} is not in the document's type table"
    if kind.startswith("str"):
        limit = int(kind[4:-1]) if "(" in kind else 256
        assert isinstance(x, str), (kind, x)
        assert len(x) <= limit, (kind, x)
        assert not CONTROL.search(x), (kind, x)
    elif kind == "opt str":
        assert x is None or check("str", x) is not None
    elif kind == "severity":
        assert x in {int(r["severity"]) for r in DOCS["severity"]}, (kind, x)
    elif kind == "degrees":
        assert isinstance(x, int | float), (kind, x)
        assert not isinstance(x, bool), (kind, x)
    elif kind in ("int", "uint64", "time"):
        assert isinstance(x, int), (kind, x)
        assert not isinstance(x, bool), (kind, x)
        lo, hi = {
            "int": (-(2**63), 2**63 - 1),
            "uint64": (0, 2**63 - 1),
            "time": (0, 253_402_300_799_999),
        }[kind]
        assert lo <= x <= hi, (kind, x)
    elif kind == "bool":
        assert isinstance(x, bool), (kind, x)
    elif kind == "id":
        assert isinstance(x, str), (kind, x)
        assert ID.match(x), (kind, x)
    elif kind == "epoch":
        assert isinstance(x, str), (kind, x)
        assert re.fullmatch(r"[0-9A-Za-z_\-]{0,32}", x), (kind, x)
    elif kind in CODES:
        assert x in CODES[kind], (kind, x)
    elif kind == "value":
        assert x is None or isinstance(x, bool | int | str) or math.isfinite(x), (kind, x)
    elif kind in ("array", "map", "body"):
        assert isinstance(x, list | dict), (kind, x)
    elif kind == "opt array":
        assert x is None or isinstance(x, list), (kind, x)
    return x


def body_heading(kind: str) -> str:
    """The heading of a kind's body section (`data: array of records`, `birth: map`)."""
    found = [h for h in DOCS if h.startswith(f"{kind}: ")]
    assert len(found) == 1, f"no single body section for {kind!r}"
    return found[0]


def sub_table(row: dict[str, str]) -> str | None:
    """The sub-table a field's rows follow, from its meaning ("each a birth device row below")."""
    m = re.search(r"\ba (.+? row) below", row["meaning"])
    return m.group(1) if m else None


def positional(rows: Table, item: list[Any]) -> dict[str, Any]:
    assert isinstance(item, list), item
    assert len(item) == len(rows), (item, rows)
    out = {}
    for r in rows:
        value = check(r["type"], item[int(r["#"])])
        sub = sub_table(r)
        out[r["field"]] = value if sub is None or value is None else positional(DOCS[sub], value)
    return out


def doc_decode(payload: bytes) -> dict[str, Any]:
    """Decode a payload using nothing but the document's tables."""
    obj = msgpack.unpackb(payload, raw=False)
    envelope = DOCS["Envelope"]
    assert set(obj) == {r["key"] for r in envelope}
    out = {r["field"]: check(r["type"], obj[r["key"]]) for r in envelope if r["key"] != "b"}
    heading = body_heading(out["kind"])
    spec = DOCS[heading]
    body = obj["b"]
    if "array of" in heading:
        out["items"] = [positional(spec, item) for item in body]
        return out
    assert set(body) == {r["key"] for r in spec}, (set(body), heading)
    for r in spec:
        value = check(r["type"], body[r["key"]])
        sub = sub_table(r)
        if sub is not None:
            rows = DOCS[sub]
            value = (
                [positional(rows, item) for item in value]
                if "each" in r["meaning"]
                else positional(rows, value)
            )
        out[r["field"]] = value
    return out


def plain(x: Any) -> Any:
    """A decoded message's field as plain msgpack-like values (enums to their values)."""
    if isinstance(x, Quality | AlarmState):
        return x.value
    if isinstance(x, Severity):
        return int(x)
    if isinstance(x, Location):
        return {"lon": x.lon, "lat": x.lat, "datum": x.datum, "address": x.address}
    return x


ITEMS = {"data": "records", "alarm": "events", "device": "events"}


def agree(doc: dict[str, Any], msg: Message) -> None:
    """The document's decoding and the codec's say the same thing, field by field."""
    for field, value in doc.items():
        if field in ("version", "kind"):
            continue
        if field == "items":
            got = getattr(msg, ITEMS[doc["kind"]])
            assert len(got) == len(value)
            for row, obj in zip(value, got, strict=True):
                assert {k: plain(getattr(obj, k)) for k in row} == row
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            objs = getattr(msg, field)
            pairs = zip(value, objs, strict=True)
            assert [{k: plain(getattr(o, k)) for k in row} for row, o in pairs] == value
        elif isinstance(value, dict) and field == "clock":
            assert {k: getattr(msg.clock, k) for k in value} == value  # type: ignore[union-attr]
        else:
            assert plain(getattr(msg, field)) == value, field


def gateway_payloads(tmp_path: Path) -> list[bytes]:
    """Data, alarm and device batches exactly as the gateway's outbox writes them."""
    box = Outbox(tmp_path / "buf.sqlite", "gw-1", "s1")
    box.add_alarm_events(
        [
            AlarmEvent(f"gw-1:{box.epoch}:1", "gas-1", "gas_concentration", "hi",
                       Severity.HIGH, AlarmState.ACTIVE_UNACKED, T0, 21.5, 20.0, "一级报警"),
            AlarmEvent(f"gw-1:{box.epoch}:1", "gas-1", "gas_concentration", "hi",
                       Severity.HIGH, AlarmState.ACTIVE_ACKED, T0 + 5, 21.5, 20.0, "一级报警",
                       "crew 3", "on site\tventing"),
        ]
    )  # fmt: skip
    box.add_device_events([DeviceEvent("mh-2", False, T0, "timeout (unit 2 fc 4)")])
    box.add(
        [
            ("gas-1", "gas_concentration", T0, 21.5, Quality.GOOD),
            ("gas-1", "gas_name", T0, "CH4", Quality.GOOD),
            ("mh-2", "cover_open", T0, True, Quality.GOOD),
            ("mh-2", "battery", T0, 87, Quality.UNCERTAIN),
            ("mh-2", "tilt_x", T0, None, Quality.STALE),
        ]
    )
    box.flush(live_since_ms=None, room=0)  # into the backlog: wrapped at publish time
    box.add([("gas-1", "gas_concentration", T0 + 1000, 22.0, Quality.GOOD)])
    box.flush(live_since_ms=T0 + 500, room=8)  # after the backlog: still goes through it
    payloads = [f.payload for f in box.ready(set(), 16, T0 + 500)]
    box.close()
    return payloads


OTHER_MESSAGES: list[Message] = [
    Birth(
        "gw-1", "s1", 0, T0, epoch="5a1f", software="0.2.0", config_hash="c0ffee",
        devices=(DeviceInfo("gas-1", "gas_detector", "gas", True, "3301060111000001",
                            Location(120.1402, 30.2771, "CGCS2000", "文三路与学院路口东侧")),
                 DeviceInfo("mh-2", "manhole_cover", "manhole", False)),
        alarms=(AlarmEvent("gw-1:5a1f:1", "gas-1", "gas_concentration", "hi", Severity.HIGH,
                           AlarmState.ACTIVE_UNACKED, T0, 21.5, 20.0, "一级报警"),),
        high_water=17, clock=ClockInfo(False, -3_600_000, T0), bd_seq=3,
    ),
    Death("gw-1", "s1", 0, T0, epoch="5a1f", reason="shutdown", bd_seq=3),
    Status("gw-1", "s1", 0, T0, epoch="5a1f", counters={"polls": 12, "uptime_s": 3.5}),
    Command("gw-1", "collector", 0, T0, command_id="c1", name="ack",
            args={"alarm_id": "gw-1:5a1f:1", "note": "ok"}),
    CommandReply("gw-1", "s1", 0, T0, command_id="c1", ok=False, result={}, error="no alarm"),
]  # fmt: skip


def test_every_kind_of_the_topic_table_has_a_body_section() -> None:
    kinds = [r["kind"] for r in DOCS["Topics"]]
    assert kinds == ["data", "alarm", "device", "birth", "death", "status", "cmd", "cmd-reply"]
    for kind in kinds:
        body_heading(kind)


def test_real_gateway_batches_decode_with_the_document_alone(tmp_path: Path) -> None:
    payloads = gateway_payloads(tmp_path)
    kinds = [doc_decode(p)["kind"] for p in payloads]
    assert kinds == ["alarm", "device", "data"]
    for payload in payloads:
        agree(doc_decode(payload), decode(payload))


@pytest.mark.parametrize("msg", OTHER_MESSAGES, ids=lambda m: m.kind.value)
def test_every_other_kind_decodes_with_the_document_alone(msg: Message) -> None:
    payload = encode(msg)
    agree(doc_decode(payload), decode(payload))


@pytest.mark.parametrize("key", [r["key"] for r in DOCS["Envelope"]])
def test_every_documented_envelope_key_is_required(key: str, tmp_path: Path) -> None:
    obj = msgpack.unpackb(gateway_payloads(tmp_path)[-1], raw=False)
    del obj[key]
    with pytest.raises(WireError):
        decode(msgpack.packb(obj))


def test_a_key_or_field_more_than_documented_is_refused(tmp_path: Path) -> None:
    obj = msgpack.unpackb(gateway_payloads(tmp_path)[-1], raw=False)
    with pytest.raises(WireError, match="unknown envelope fields"):
        decode(msgpack.packb({**obj, "x": 1}))
    row = obj["b"][0]
    assert len(row) == len(DOCS[body_heading("data")])
    with pytest.raises(WireError, match="must have 6 fields"):
        decode(msgpack.packb({**obj, "b": [[*row, None]]}))
    for msg in OTHER_MESSAGES:
        env = msgpack.unpackb(encode(msg), raw=False)
        documented = {r["key"] for r in DOCS[body_heading(msg.kind.value)]}
        assert set(env["b"]) == documented, msg.kind
        with pytest.raises(WireError, match="unknown fields"):
            decode(msgpack.packb({**env, "b": {**env["b"], "zz": 1}}))
