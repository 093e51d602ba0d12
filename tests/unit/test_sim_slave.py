"""firmware-sim as a faithful slave and its quirks, without sockets: request PDU in, answer out.

Table-driven: each case is a request PDU as the standard spells it (function code + data) and
the exception code (or none) the slave must answer, so that what a strict device refuses is
refused here too.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU

from lifeline.drivers.profile import builtin_profiles
from lifeline.firmware_sim.device import SimDevice
from lifeline.firmware_sim.physics import SimEventError
from lifeline.firmware_sim.scenario import ScenarioError, load_scenario
from lifeline.firmware_sim.servers import Reply, Request, RtuRequestFramer, respond

pytestmark = pytest.mark.unit

_RTU = FramerRTU(DecodePDU(is_server=True))
_MBAP = FramerSocket(DecodePDU(is_server=True))
LIGHT = builtin_profiles()["streetlight"]  # dimming: holding 1, writable


def light(unit: int = 1, transport: str = "tcp", unmapped: str = "zero") -> SimDevice:
    return SimDevice(
        "sl", unit, LIGHT, random.Random(1), load_scenario("demo").start,
        transport=transport, unmapped=unmapped,  # type: ignore[arg-type]
    )  # fmt: skip


def ask(devices: dict[int, SimDevice], pdu: bytes, unit: int = 1, since: float = 1.0) -> Reply:
    raw = bytes([unit]) + pdu
    raw += FramerRTU.compute_CRC(raw).to_bytes(2, "big")
    return respond(devices, Request(unit, pdu, len(raw), raw, 9), _MBAP, 0.0, since, True)


def answer_pdu(reply: Reply) -> bytes | None:
    """The PDU of an MBAP reply (function code + data), None if silent."""
    return None if reply.frame is None else reply.frame[7:]


def u16(*words: int) -> bytes:
    return b"".join(w.to_bytes(2, "big") for w in words)


FAITHFUL_CASES = [
    # (id, request PDU, unmapped policy, expected exception code; 0 = a normal answer)
    ("read holding", b"\x03" + u16(1, 1), "zero", 0),
    ("unknown function 0x41", b"\x41\x00\x01", "zero", 1),
    ("diagnostics not implemented", b"\x08" + u16(0, 0), "zero", 1),
    ("quantity 0", b"\x03" + u16(1, 0), "zero", 3),
    ("quantity 126", b"\x03" + u16(0, 126), "zero", 3),
    ("quantity 125", b"\x03" + u16(0, 125), "zero", 0),
    ("2001 coils", b"\x01" + u16(0, 2001), "zero", 3),
    ("past 65535", b"\x03" + u16(65535, 2), "zero", 2),
    ("past 65535, unmapped zero", b"\x04" + u16(65500, 40), "zero", 2),
    ("unmapped register, zeros", b"\x03" + u16(900, 2), "zero", 0),
    ("unmapped register, strict", b"\x03" + u16(900, 2), "exception", 2),
    ("read with a trailing byte", b"\x03" + u16(1, 1) + b"\x00", "zero", 3),
    ("FC16 byte count 4 for 1 register", b"\x10" + u16(1, 1) + b"\x04" + u16(7, 7), "zero", 3),
    ("FC16 byte count 2, 4 bytes", b"\x10" + u16(1, 1) + b"\x02" + u16(7, 7), "zero", 3),
    ("FC16 124 registers", b"\x10" + u16(1, 124) + b"\xf8" + bytes(248), "zero", 3),
    ("FC16 well formed", b"\x10" + u16(1, 1) + b"\x02" + u16(40), "zero", 0),
    ("FC15 byte count wrong", b"\x0f" + u16(0, 9) + b"\x01\xff", "zero", 3),
    ("FC5 value 0x1234", b"\x05" + u16(0, 0x1234), "zero", 3),
    ("FC6 read-only register", b"\x06" + u16(3, 1), "zero", 2),
]


@pytest.mark.parametrize(
    ("pdu", "unmapped", "code"),
    [case[1:] for case in FAITHFUL_CASES],
    ids=[case[0] for case in FAITHFUL_CASES],
)
def test_the_slave_refuses_what_the_standard_refuses(pdu: bytes, unmapped: str, code: int) -> None:
    dev = light(unmapped=unmapped)
    got = answer_pdu(ask({1: dev}, pdu))
    assert got is not None
    if code:
        assert got == bytes([pdu[0] | 0x80, code])
    else:
        assert not got[0] & 0x80, got.hex()


def test_a_refused_write_multiple_writes_nothing() -> None:
    dev = light()
    before = dev.values()["dimming"]
    ask({1: dev}, b"\x10" + u16(1, 1) + b"\x04" + u16(7, 7))
    assert dev.values()["dimming"] == before


def test_broadcast_writes_reach_every_device_and_nobody_answers() -> None:
    devices = {1: light(1), 2: light(2)}
    reply = ask(devices, b"\x06" + u16(1, 35), unit=0)
    assert reply.frame is None
    assert [d.values()["dimming"] for d in devices.values()] == [35, 35]
    assert ask(devices, b"\x03" + u16(1, 1), unit=0).frame is None  # a read is not broadcast


def test_quirks_add_up_and_answer_faults_replace_each_other() -> None:
    dev = light(transport="serial")
    dev.set_fault("register_limit", {"limit": 4})
    dev.set_fault("gap_exceptions", {})
    assert answer_pdu(ask({1: dev}, b"\x03" + u16(0, 5))) == b"\x83\x03"
    assert answer_pdu(ask({1: dev}, b"\x03" + u16(900, 1))) == b"\x83\x02"
    dev.set_fault("no_answer", {})
    dev.set_fault("exception", {"code": 4})
    assert answer_pdu(ask({1: dev}, b"\x03" + u16(1, 1))) == b"\x83\x04"
    dev.set_fault("register_limit", {"off": True})
    dev.set_fault("exception", {"off": True})
    assert answer_pdu(ask({1: dev}, b"\x03" + u16(0, 5)))[:2] == b"\x03\x0a"  # type: ignore[index]
    assert answer_pdu(ask({1: dev}, b"\x03" + u16(900, 1))) == b"\x83\x02"  # still strict
    dev.set_fault("none", {})
    assert answer_pdu(ask({1: dev}, b"\x03" + u16(900, 1))) == b"\x03\x02\x00\x00"


def test_busy_at_a_rate_is_seeded_and_counted() -> None:
    dev = light()
    dev.set_fault("busy", {"probability": 0.4})
    answers = [answer_pdu(ask({1: dev}, b"\x03" + u16(1, 1))) for _ in range(500)]
    busy = sum(a == b"\x83\x06" for a in answers)
    assert 150 < busy < 250
    assert dev.stats.busy == busy
    dev.set_fault("busy", {"code": 5})
    assert answer_pdu(ask({1: dev}, b"\x03" + u16(1, 1))) == b"\x83\x05"


def test_turnaround_drops_requests_that_come_too_soon() -> None:
    dev = light()
    dev.set_fault("turnaround", {"delay_s": 0.05})
    assert ask({1: dev}, b"\x03" + u16(1, 1), since=0.02).frame is None
    assert ask({1: dev}, b"\x03" + u16(1, 1), since=0.06).frame is not None
    assert dev.stats.dropped == 1


def test_echo_noise_and_late_answers_decorate_the_frame() -> None:
    dev = light(transport="serial")
    dev.set_fault("echo", {})
    dev.set_fault("noise", {"before": 2, "after": 3})
    dev.set_fault("late", {"delay_s": 0.7})
    request = b"\x03" + u16(1, 1)
    raw = b"\x01" + request + FramerRTU.compute_CRC(b"\x01" + request).to_bytes(2, "big")
    reply = respond({1: dev}, Request(1, request, 8, raw), _RTU, 0.001, 1.0, False)
    assert reply.frame is not None
    assert reply.late
    assert reply.delay_s > 0.7
    assert reply.frame[2:10] == raw  # noise, echo, answer, noise
    assert len(reply.frame) == 2 + 8 + 7 + 3


@pytest.mark.parametrize(
    ("transport", "kind", "error"),
    [
        ("tcp", "echo", "RTU line effect"),
        ("tcp", "noise", "RTU line effect"),
        ("serial", "half_open", "needs a TCP connection"),
        ("tcp", "busy", ""),
        ("tcp", "wobble", "unknown fault"),
    ],
)
def test_a_quirk_the_transport_cannot_show_is_refused(
    transport: str, kind: str, error: str
) -> None:
    dev = light(transport=transport)
    if error:
        with pytest.raises(SimEventError, match=error):
            dev.set_fault(kind, {})
    else:
        dev.set_fault(kind, {})


def test_fault_arguments_are_checked_per_kind() -> None:
    dev = light()
    with pytest.raises(SimEventError, match="register_limit takes limit"):
        dev.set_fault("register_limit", {"limt": 16})
    with pytest.raises(SimEventError, match=r"probability is 0\.\.1"):
        dev.set_fault("busy", {"probability": 4})


def rtu(unit: int, pdu: bytes) -> bytes:
    frame = bytes([unit]) + pdu
    return frame + FramerRTU.compute_CRC(frame).to_bytes(2, "big")


READ = rtu(1, b"\x03" + u16(1, 2))
UNKNOWN = rtu(1, b"\x41\x00\x01")

FRAMER_CASES = [
    # (id, [(bytes, at seconds)], requests cut out as (unit, function code))
    ("one read", [(READ, 0.0)], [(1, 3)]),
    ("two reads in one chunk", [(READ + READ, 0.0)], [(1, 3), (1, 3)]),
    ("split inside the gap", [(READ[:3], 0.0), (READ[3:], 0.001)], [(1, 3)]),
    # a silence of more than 3.5 characters ends a frame: the halves are not joined
    ("split by a silence", [(READ[:3], 0.0), (READ[3:], 0.01)], []),
    ("a silence, then a whole frame", [(READ[:3], 0.0), (READ, 0.01)], [(1, 3)]),
    ("bad CRC ignored", [(READ[:-1] + b"\x00", 0.0)], []),
    ("unknown function code", [(UNKNOWN, 0.0)], [(1, 0x41)]),
]


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [case[1:] for case in FRAMER_CASES],
    ids=[case[0] for case in FRAMER_CASES],
)
def test_rtu_requests_are_cut_by_size_and_by_silence(
    chunks: list[tuple[bytes, float]], expected: list[tuple[int, int]]
) -> None:
    framer = RtuRequestFramer(gap_s=0.004)  # 3.5 characters at 9600 baud 8E1
    got = [(r.unit, r.pdu[0]) for data, at in chunks for r in framer.feed(data, at)]
    assert got == expected


def test_scenario_quirks_are_validated_with_the_reason(tmp_path: Path) -> None:
    def scenario(**device: object) -> None:
        dev = {"id": "a", "unit": 1, "profile": "streetlight", **device}
        path = tmp_path / "s.yaml"
        path.write_text(
            yaml.safe_dump({"servers": [{"name": "s", "kind": "tcp", "devices": [dev]}]})
        )
        load_scenario(path)

    scenario(quirks=[{"kind": "busy", "probability": 0.4}], unmapped="exception")
    bad: list[tuple[dict[str, object], str]] = [
        ({"quirks": [{"kind": "echo"}]}, "RTU line effect"),
        ({"quirks": [{"kind": "no_answer"}]}, "not a quirk"),
        ({"fault": {"kind": "busy"}}, "not an answer fault"),
        ({"quirks": [{"kind": "register_limit", "before": 2}]}, "register_limit takes limit"),
        ({"unmapped": "sometimes"}, "unmapped"),
    ]
    for fields, why in bad:
        with pytest.raises(ScenarioError, match=why):
            scenario(**fields)
