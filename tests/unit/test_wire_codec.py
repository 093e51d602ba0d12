"""The wire codec round-trips every message kind and turns malformed payloads into WireError."""

from dataclasses import replace
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifeline.wire import (
    MAX_PAYLOAD_BYTES,
    AlarmBatch,
    AlarmEvent,
    AlarmState,
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
    WireError,
    decode,
    encode,
)

pytestmark = pytest.mark.unit

T0 = 1_763_700_000_000  # 2025-11-21, UTC ms

ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.\-]{0,20}\Z")
# Any text a store can hold: no C0 control (tab, line feed, carriage return excepted), no DEL,
# no lone surrogate (not UTF-8).
small_text = st.text(
    st.characters(blacklist_categories=("Cc", "Cs")) | st.sampled_from("\t\n\r"), max_size=40
)
timestamps = st.integers(0, 253_402_300_799_999)  # any clock from 1970 to the end of 9999
epochs = st.from_regex(r"\A[0-9A-Za-z_\-]{1,32}\Z")
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
headers = {"gateway": ids, "session": small_text, "sent_ms": timestamps, "epoch": epochs}
durable_seq = st.integers(1, 2**63 - 1)
value_maps = st.dictionaries(small_text.map(lambda t: t[:20]), values, max_size=8)

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
            st.builds(
                DeviceInfo,
                ids,
                small_text,
                small_text,
                st.booleans(),
                st.none() | ids,
                st.none()
                | st.builds(
                    Location,
                    st.floats(-180, 180),
                    st.floats(-90, 90),
                    st.sampled_from(["CGCS2000", "WGS84", "GCJ-02", "BD-09"]),
                    small_text,
                ),
            ),
            max_size=4,
        ).map(tuple),
        alarms=st.lists(alarm_events.map(lambda e: replace(e, historical=False)), max_size=3).map(
            tuple
        ),
        high_water=st.integers(0, 2**63 - 1),
        clock=st.builds(ClockInfo, st.booleans(), st.integers(-(2**63), 2**63 - 1), timestamps),
        **headers,
    ),
    st.builds(
        Death, seq=st.just(0), reason=small_text, bd_seq=st.integers(0, 2**63 - 1), **headers
    ),
    st.builds(
        Status,
        seq=st.just(0),
        counters=st.dictionaries(
            small_text.map(lambda t: t[:20]), st.integers(0, 10**9), max_size=8
        ),
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
        "e": "ep1",
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
    expected = (Record("mh-001", "tilt_x", T0, 1.5),)
    assert msg == DataBatch("gw-1", "sess", 7, T0, expected, epoch="ep1")


BIRTH_BODY: dict[str, Any] = {
    "sw": "", "ch": "", "d": [], "a": [], "h": 0, "ck": [True, 0, 0], "bd": 1
}  # fmt: skip

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
    ("sent time before 1970", _data_envelope(t=-1), "between 1970 and the end of year 9999"),
    ("sample time after 9999", _data_envelope(b=[["m", "x", 2**48, 1, "good", False]]), "9999"),
    ("data without epoch", {k: v for k, v in _data_envelope().items() if k != "e"}, "'e'"),
    ("data with empty epoch", _data_envelope(e=""), "need an epoch"),
    ("epoch with slash", _data_envelope(e="a/b"), "epoch 'a/b' may only hold"),
    # Python's `$` matches before a trailing newline: `^...$` with re.match took these.
    ("gateway ending in a newline", _data_envelope(g="gw-1\n"), "not a valid id"),
    ("epoch ending in a newline", _data_envelope(e="ep1\n"), "may only hold"),
    (
        "device ending in a newline",
        _data_envelope(b=[["mh-001\n", "tilt_x", T0, 1.5, "good", False]]),
        "not a valid id",
    ),
    ("epoch too long", _data_envelope(e="e" * 33), "over 32"),
    ("NUL in a point name", _data_envelope(b=[["m", "C\0H4", T0, 1, "good", False]]), r"U\+0000"),
    (
        "NUL in a string value",
        _data_envelope(b=[["m", "gas", T0, "C\0H4", "good", False]]),
        r"record 0 value contains control character U\+0000",
    ),
    ("escape in a value", _data_envelope(b=[["m", "x", T0, "\x1b[2J", "good", False]]), r"U\+001B"),
    ("NUL in the session", _data_envelope(s="s\0"), "session contains control character"),
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
        "alarm message with NUL",
        {
            **_data_envelope(k="alarm"),
            "b": [["a", "d", "p", "hi", 1, "normal", T0, 1, 2, "leak\0", None, None, False]],
        },
        "alarm event 0 message contains control character U\\+0000 at 4",
    ),
    (
        "birth unknown field",
        {**_data_envelope(k="birth", q=0), "b": {**BIRTH_BODY, "x": 1}},
        "unknown fields",
    ),
    (
        "birth alarm with a historical flag",
        {
            **_data_envelope(k="birth", q=0),
            "b": {
                **BIRTH_BODY,
                "a": [["a", "d", "p", "hi", 1, "active_unacked", T0, 1, 2, "", None, None, False]],
            },
        },
        "birth alarm 0 must have 12 fields",
    ),
    (
        "alarm of an unknown type",
        {
            **_data_envelope(k="alarm"),
            "b": [["a", "d", "p", "hihihi", 1, "normal", T0, 1, 2, "", None, None, False]],
        },
        "alarm event 0 has unknown alarm type 'hihihi'",
    ),
    (
        "birth device location in an unknown datum",
        {
            **_data_envelope(k="birth", q=0),
            "b": {**BIRTH_BODY, "d": [["m", "p", "f", True, None, [120.1, 30.2, "Beijing54", ""]]]},
        },
        "birth device 0 location datum 'Beijing54' is not one of",
    ),
    (
        "birth device latitude past the pole",
        {
            **_data_envelope(k="birth", q=0),
            "b": {**BIRTH_BODY, "d": [["m", "p", "f", True, None, [120.1, 91, "WGS84", ""]]]},
        },
        "birth device 0 location lat must be a number of degrees within ±90, got 91",
    ),
    (
        "birth device of the old five-field shape",
        {**_data_envelope(k="birth", q=0), "b": {**BIRTH_BODY, "d": [["m", "p", "f", True, None]]}},
        "birth device 0 must have 6 fields",
    ),
    (
        "birth clock not a triple",
        {**_data_envelope(k="birth", q=0), "b": {**BIRTH_BODY, "ck": [True]}},
        "birth clock must have 3 fields",
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


def test_a_clock_at_1970_still_carries_its_alarm() -> None:
    # A gateway without RTC boots at the epoch: its alarm must not become a dead letter.
    row = ["gw-1:e1:1", "gas-1", "ch4", "hi", 2, "active_unacked", 12_345, 30.0, 20.0, "", None]
    env = {**_data_envelope(k="alarm", t=12_400), "b": [[*row, None, False]]}
    msg = decode(_packed(env))
    assert isinstance(msg, AlarmBatch)
    assert msg.events[0].ts_ms == 12_345
    assert msg.sent_ms == 12_400


def test_tab_line_feed_and_carriage_return_pass_in_text() -> None:
    msg = decode(_packed(_data_envelope(b=[["m", "note", T0, "a\tb\r\nc", "good", False]])))
    assert isinstance(msg, DataBatch)
    assert msg.records[0].value == "a\tb\r\nc"


def test_control_characters_are_refused_on_the_column_path_too() -> None:
    # A batch of many uniform rows takes the columnar fast path: it must refuse the same input.
    rows = [["m", "p", T0 + i, 1.0, "good", False] for i in range(50)]
    rows[37] = ["m", "p\x07", T0 + 37, 1.0, "good", False]
    with pytest.raises(WireError, match="record 37 point contains control character U\\+0007"):
        decode(_packed(_data_envelope(b=rows)))


def test_non_durable_messages_may_carry_no_epoch() -> None:
    msg = Death("gw-1", "s", 0, T0, reason="shutdown")
    assert decode(encode(msg)) == msg
    assert msg.epoch == ""


def test_birth_carries_the_alarm_picture_and_clock() -> None:
    alarm = AlarmEvent(
        "gw-1:e1:3", "mh-1", "tilt", "hi", Severity.HIGH, AlarmState.ACTIVE_UNACKED, T0, 25.0, 10.0
    )
    birth = Birth(
        "gw-1",
        "s",
        0,
        T0,
        epoch="e1",
        alarms=(alarm,),
        high_water=41,
        clock=ClockInfo(plausible=False, step_ms=-3_600_000, step_at_ms=T0),
    )
    got = decode(encode(birth))
    assert got == birth
