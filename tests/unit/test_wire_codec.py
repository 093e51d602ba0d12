"""The wire codec round-trips every message kind and turns malformed payloads into WireError."""

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire import (
    MAX_PAYLOAD_BYTES,
    AlarmBatch,
    AlarmEvent,
    AlarmState,
    Birth,
    Command,
    CommandReply,
    DataBatch,
    Death,
    DeviceEvent,
    DeviceEventBatch,
    DeviceInfo,
    Message,
    Quality,
    Record,
    Severity,
    Status,
    WireError,
    decode,
    encode,
)

pytestmark = pytest.mark.unit

T0 = 1_763_700_000_000  # 2025-11-21, UTC ms

ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.\-]{0,20}\Z")
small_text = st.text(max_size=40)
timestamps = st.integers(946_684_800_000, 4_102_444_800_000)
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    small_text,
)


@st.composite
def records(draw: st.DrawFn) -> Record:
    quality = draw(st.sampled_from(Quality))
    value = None if quality is Quality.STALE else draw(values)
    return Record(
        draw(ids), draw(small_text), draw(timestamps), value, quality, draw(st.booleans())
    )


alarm_events = st.builds(
    AlarmEvent,
    alarm_id=small_text,
    device=ids,
    point=small_text,
    alarm_type=st.sampled_from(["hi", "hihi", "lo", "lolo", "roc", "state", "comm_loss"]),
    severity=st.sampled_from(Severity),
    state=st.sampled_from(AlarmState),
    ts_ms=timestamps,
    value=values,
    limit=values,
    message=small_text,
    ack_by=st.none() | small_text,
    ack_note=st.none() | small_text,
    historical=st.booleans(),
)
headers = {"gateway": ids, "session": small_text, "sent_ms": timestamps}
durable_seq = st.integers(1, 2**63 - 1)
value_maps = st.dictionaries(st.text(max_size=20), values, max_size=8)

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(DataBatch, seq=durable_seq, records=st.tuples(*[records()] * 3), **headers),
    st.builds(
        AlarmBatch, seq=durable_seq, events=st.lists(alarm_events, max_size=4).map(tuple), **headers
    ),
    st.builds(
        DeviceEventBatch,
        seq=durable_seq,
        events=st.lists(
            st.builds(DeviceEvent, ids, st.booleans(), timestamps, small_text, st.booleans()),
            max_size=4,
        ).map(tuple),
        **headers,
    ),
    st.builds(
        Birth,
        seq=st.just(0),
        software=small_text,
        config_hash=small_text,
        devices=st.lists(
            st.builds(DeviceInfo, ids, small_text, small_text, st.booleans(), st.none() | ids),
            max_size=4,
        ).map(tuple),
        **headers,
    ),
    st.builds(Death, seq=st.just(0), reason=small_text, **headers),
    st.builds(
        Status,
        seq=st.just(0),
        counters=st.dictionaries(st.text(max_size=20), st.integers(0, 10**9), max_size=8),
        **headers,
    ),
    st.builds(
        Command, seq=st.just(0), command_id=small_text, name=small_text, args=value_maps, **headers
    ),
    st.builds(
        CommandReply,
        seq=st.just(0),
        command_id=small_text,
        ok=st.booleans(),
        result=value_maps,
        error=small_text,
        **headers,
    ),
)


@given(messages)
def test_every_message_kind_round_trips(msg: Message) -> None:
    assert decode(encode(msg)) == msg


@settings(max_examples=500)
@given(st.binary(max_size=512))
def test_garbage_bytes_raise_wire_error_only(payload: bytes) -> None:
    try:
        decode(payload)
    except WireError:
        return
    # A random byte string that happens to decode must at least be a valid message.
    assert isinstance(decode(payload), DataBatch | AlarmBatch | Birth | Death | Status)


@given(messages, st.data())
def test_truncated_payloads_raise_wire_error(msg: Message, data: st.DataObject) -> None:
    payload = encode(msg)
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(WireError):
        decode(payload[:cut])


def _data_envelope(**override: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "v": 1,
        "k": "data",
        "g": "gw-1",
        "s": "sess",
        "q": 7,
        "t": T0,
        "b": [["mh-001", "tilt_x", T0, 1.5, "good", False]],
    }
    env.update(override)
    return env


def _packed(obj: Any) -> bytes:
    return bytes(msgpack.packb(obj, use_bin_type=True))


def test_valid_hand_built_envelope_decodes() -> None:
    msg = decode(_packed(_data_envelope()))
    assert msg == DataBatch("gw-1", "sess", 7, T0, (Record("mh-001", "tilt_x", T0, 1.5),))


MALFORMED: list[tuple[str, Any, str]] = [
    ("not a map", [1, 2, 3], "must be a map"),
    ("unknown version", _data_envelope(v=2), "unsupported wire version 2"),
    ("version as bool", _data_envelope(v=True), "unsupported wire version"),
    ("missing kind", {k: v for k, v in _data_envelope().items() if k != "k"}, "missing field 'k'"),
    ("missing body", {k: v for k, v in _data_envelope().items() if k != "b"}, "missing field 'b'"),
    ("unknown kind", _data_envelope(k="telemetry"), "unknown message kind"),
    ("unknown envelope field", _data_envelope(x=1), "unknown envelope fields"),
    ("gateway with slash", _data_envelope(g="gw/1"), "not a valid id"),
    ("gateway wildcard", _data_envelope(g="+"), "not a valid id"),
    ("seq as string", _data_envelope(q="7"), "seq must be an integer"),
    ("seq zero on data", _data_envelope(q=0), "seq >= 1"),
    ("negative seq", _data_envelope(q=-1), "outside"),
    ("sent time in 1970", _data_envelope(t=0), "between years 2000 and 2100"),
    ("sent time float", _data_envelope(t=1.5e12), "integer UTC milliseconds"),
    ("records not a list", _data_envelope(b={"a": 1}), "must be an array"),
    ("record too short", _data_envelope(b=[["mh-001", "x", T0, 1.0, "good"]]), "6 fields"),
    ("bad quality", _data_envelope(b=[["mh-001", "x", T0, 1.0, "great", False]]), "quality"),
    ("sample time string", _data_envelope(b=[["mh-001", "x", "now", 1.0, "good", False]]), "time"),
    ("value is a list", _data_envelope(b=[["mh-001", "x", T0, [1], "good", False]]), "value"),
    ("value is a map", _data_envelope(b=[["mh-001", "x", T0, {}, "good", False]]), "value"),
    ("historical not bool", _data_envelope(b=[["mh-001", "x", T0, 1, "good", 1]]), "historical"),
    ("stale with value", _data_envelope(b=[["mh-001", "x", T0, 1, "stale", False]]), "stale"),
    ("oversized string", _data_envelope(b=[["mh-001", "x" * 300, T0, 1, "good", False]]), "over"),
    (
        "int beyond 64 bits",
        _data_envelope(b=[["mh-001", "x", T0, 2**64 - 1, "good", False]]),
        "64 bits",
    ),
    (
        "alarm severity 5",
        {
            **_data_envelope(k="alarm"),
            "b": [["a", "d", "p", "hi", 5, "normal", T0, 1, 2, "", None, None, False]],
        },
        "1..4",
    ),
    (
        "alarm bad state",
        {
            **_data_envelope(k="alarm"),
            "b": [["a", "d", "p", "hi", 1, "on", T0, 1, 2, "", None, None, False]],
        },
        "state",
    ),
    (
        "birth unknown field",
        {**_data_envelope(k="birth", q=0), "b": {"sw": "", "ch": "", "d": [], "x": 1}},
        "unknown fields",
    ),
    (
        "status text counter",
        {**_data_envelope(k="status", q=0), "b": {"c": {"polls": "1"}}},
        "number",
    ),
    ("command missing args", {**_data_envelope(k="cmd", q=0), "b": {"id": "1", "n": "x"}}, "'a'"),
]


@pytest.mark.parametrize(("case", "obj", "reason"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_envelopes_say_why(case: str, obj: Any, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        decode(_packed(obj))


def test_nan_and_infinity_values_are_rejected() -> None:
    for bad in (float("nan"), float("inf")):
        with pytest.raises(WireError, match="finite"):
            decode(_packed(_data_envelope(b=[["mh-001", "x", T0, bad, "good", False]])))


def test_oversized_payload_is_rejected_before_parsing() -> None:
    with pytest.raises(WireError, match="over the"):
        decode(b"\x90" * (MAX_PAYLOAD_BYTES + 1))


def test_encode_refuses_a_batch_over_the_size_limit() -> None:
    big = tuple(Record("mh-001", "p" * 60, T0, "v" * 200) for _ in range(1000))
    with pytest.raises(WireError, match="over"):
        encode(DataBatch("gw-1", "s", 1, T0, big))


def test_extension_types_and_non_bytes_are_rejected() -> None:
    with pytest.raises(WireError):
        decode(_packed(msgpack.ExtType(5, b"xx")))
    with pytest.raises(WireError, match="must be bytes"):
        decode("text")  # type: ignore[arg-type]
    with pytest.raises(WireError, match="empty"):
        decode(b"")


def test_encode_turns_unencodable_values_into_wire_error() -> None:
    with pytest.raises(WireError, match="cannot encode"):
        encode(DataBatch("gw-1", "s", 1, T0, (Record("mh-001", "x", T0, 2**70),)))


@pytest.mark.parametrize(
    "device", [["a"], {"a": 1}, 7, None, b"mh-001"], ids=["list", "map", "int", "nil", "bin"]
)
def test_unhashable_or_non_string_device_ids_are_refused(device: Any) -> None:
    rows = [["mh-001", "x", T0, 1.0, "good", False], [device, "x", T0, 1.0, "good", False]]
    with pytest.raises(WireError, match="record 1 device"):
        decode(_packed(_data_envelope(b=rows)))
