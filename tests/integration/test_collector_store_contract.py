"""One contract suite for every Store backend: SQLite, a real PostgreSQL server (natively
partitioned readings) and a real TimescaleDB engine (hypertable readings; PGlite, tests/tsdb)."""

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lifeline.collector.assets import Asset, AssetError
from lifeline.collector.cases.phases import Phase
from lifeline.collector.cases.workflow import (
    Action,
    Args,
    Audit,
    Case,
    CaseState,
    Place,
    apply,
    open_case,
)
from lifeline.collector.cases.workorders import WorkOrderAction, act_on, open_work_order
from lifeline.collector.models import Accepted, AlarmLink, Rejected, Status
from lifeline.collector.store import Conflict, Store, StoreDataError, StoreUnavailable, open_store
from lifeline.collector.store.sqlite import SqliteStore
from lifeline.wire import (
    AlarmBatch,
    AlarmEvent,
    AlarmState,
    Birth,
    ClockInfo,
    Death,
    DeviceEvent,
    DeviceEventBatch,
    DeviceInfo,
    Kind,
    Location,
    Quality,
    Record,
    Severity,
    TopicParts,
)
from lifeline.wire import DataBatch as Data
from lifeline.wire import Status as StatusMsg
from lifeline.wire.messages import Value

pytestmark = pytest.mark.integration

T0 = 1_795_000_000_000  # 2026-11-18, inside the partitions the PostgreSQL store creates ahead
GW = "gw-1"
H = 3_600_000


@pytest.fixture(params=["sqlite", "postgres", "timescaledb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated store of each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/contract.db"
    elif request.param == "postgres":
        url = request.getfixturevalue("pg_url")
    else:
        url = request.getfixturevalue("tsdb_fresh_url")
    s = open_store(url)
    s.migrate()
    if request.param == "timescaledb":
        assert s.backend == "timescaledb"  # the hypertable layout, not the partitioned fallback
    yield s
    s.close()


def acc(msg: object, kind: Kind, gw: str = GW) -> Accepted:
    return Accepted(TopicParts("site-a", gw, kind), msg)  # type: ignore[arg-type]


def data(seq: int, *records: Record, gw: str = GW) -> Accepted:
    return acc(Data(gw, "s1", seq, T0, tuple(records), epoch="e1"), Kind.DATA, gw)


def test_migrations_are_idempotent(store: Store) -> None:
    assert store.migrate() == []
    assert store.backend in ("sqlite", "postgres-partitioned", "timescaledb")


def test_values_and_sample_times_survive_intact(store: Store) -> None:
    values: list[Value] = [21.5, -3, 2**60 + 1, True, False, "ON", None, 0.1]
    recs = [
        Record("dev", f"p{i}", T0 + i, v, Quality.BAD if v is None else Quality.GOOD, i % 2 == 0)
        for i, v in enumerate(values)
    ]
    result = store.write([data(1, *recs)], T0)
    assert result.readings == len(values)
    got = store.readings("dev")
    assert [(r.point, r.ts_ms, r.value, r.historical) for r in got] == [
        (r.point, r.ts_ms, r.value, r.historical) for r in recs
    ]
    assert [type(r.value) for r in got] == [type(v) for v in values]
    assert got[6].quality == "bad"


def test_duplicate_keys_are_ignored_across_and_within_batches(store: Store) -> None:
    first = data(1, Record("dev", "p", T0, 1.0))
    r1 = store.write([first, first, data(2, Record("dev", "p", T0 + 1, 2.0))], T0)
    r2 = store.write([first, data(2, Record("dev", "p", T0 + 1, 2.0))], T0)
    other_gw = data(1, Record("dev2", "p", T0, 3.0), gw="gw-2")
    r3 = store.write([other_gw], T0)
    assert (r1.readings, r1.duplicates) == (2, 1)
    assert (r2.readings, r2.duplicates) == (0, 2)
    assert r3.readings == 1  # the key is (gateway, epoch, seq): another gateway's seq 1 is new
    assert store.count_readings() == 3


def keyed(seq: int, epoch: str, digest: bytes, *records: Record) -> Accepted:
    """A data batch as ingest hands it over: with the digest of its payload."""
    msg = Data(GW, "s1", seq, T0, tuple(records), epoch=epoch)
    return Accepted(TopicParts("site-a", GW, Kind.DATA), msg, digest, f"l/v1/site-a/{GW}/data")


def test_a_new_buffer_epoch_numbers_from_one_and_nothing_is_taken_for_a_duplicate(
    store: Store,
) -> None:
    # The old buffer's batches 1..3, then a new SD card: batches 1..3 again, other readings.
    old = [keyed(s, "e-old", bytes([s]) * 16, Record("dev", "p", T0 + s, 1.0)) for s in (1, 2, 3)]
    new = [
        keyed(s, "e-new", bytes([9, s]) * 8, Record("dev", "p", T0 + 10 + s, 2.0))
        for s in (1, 2, 3)
    ]
    first = store.write(old, T0)
    second = store.write(new, T0 + 60_000)
    assert (first.readings, first.new_epochs) == (3, 0)  # a gateway's first epoch is not news
    assert (second.readings, second.duplicates, second.new_epochs) == (3, 0, 1)
    assert store.count_readings() == 6
    assert [(e.epoch, e.first_ms) for e in store.gateway_epochs(GW)] == [
        ("e-new", T0 + 60_000),
        ("e-old", T0),
    ]
    # Redelivery inside an epoch stays a harmless duplicate, in either epoch.
    again = store.write([old[0], new[2]], T0 + 70_000)
    assert (again.readings, again.duplicates, again.new_epochs) == (0, 2, 0)
    store.pump_events(T0 + 80_000)
    epochs = [e for e in store.events(0) if e.type == "gateway.epoch"]
    assert [(e.subject, e.data["reason"]) for e in epochs] == [
        (GW, "new buffer epoch e-new: its batches number from 1 again")
    ]


def test_a_duplicate_key_with_other_content_is_dead_lettered_not_dropped(store: Store) -> None:
    store.write([keyed(5, "e1", b"a" * 16, Record("dev", "p", T0, 1.0))], T0)
    clash = keyed(5, "e1", b"b" * 16, Record("dev", "p", T0 + 1, 99.0))
    result = store.write([clash, clash], T0 + 1)
    assert (result.readings, result.duplicates, result.conflicts) == (0, 0, 2)
    assert result.dead_letters == 2
    letters = store.dead_letters()
    assert "epoch e1, seq 5) was stored before with different content" in letters[0].reason
    assert letters[0].topic == f"l/v1/site-a/{GW}/data"
    assert store.count_readings() == 1
    # Within one commit too: the first copy wins, a different second copy is a conflict.
    pair = [
        keyed(6, "e1", b"c" * 16, Record("dev", "p", T0 + 6, 6.0)),
        keyed(6, "e1", b"d" * 16, Record("dev", "p", T0 + 7, 7.0)),
    ]
    assert store.write(pair, T0 + 2).conflicts == 1
    assert store.count_readings() == 2


def test_a_failed_batch_commits_nothing(store: Store) -> None:
    bad = Rejected("t", b"x", "r", T0)
    good = data(1, Record("dev", "p", T0, 1.0))

    class Boom:
        topic = TopicParts("site-a", GW, Kind.DATA)

        @property
        def message(self) -> object:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.write([good, bad, Boom()], T0)  # type: ignore[list-item]
    assert store.count_readings() == 0
    assert store.count_dead_letters() == 0
    assert store.write([good], T0).readings == 1  # the key was rolled back too


def test_range_and_point_queries(store: Store) -> None:
    recs = [Record("dev", p, T0 + i * 1000, float(i)) for i in range(10) for p in ("a", "b")]
    store.write([data(1, *recs)], T0)
    got = store.readings("dev", "a", since_ms=T0 + 2000, until_ms=T0 + 5000)
    assert [r.ts_ms for r in got] == [T0 + 2000, T0 + 3000, T0 + 4000]
    assert len(store.readings("dev", limit=5)) == 5
    assert store.readings("nobody") == []


def test_newest_first_gives_the_newest_window(store: Store) -> None:
    """A chart asks for the last N readings; oldest-first with a limit gave the first N."""
    recs = [Record("dev", p, T0 + i * 1000, float(i)) for i in range(10) for p in ("a", "b")]
    store.write([data(1, *recs)], T0)
    got = store.readings("dev", "a", limit=3, newest_first=True)
    assert [r.ts_ms for r in got] == [T0 + 9000, T0 + 8000, T0 + 7000]
    got = store.readings("dev", until_ms=T0 + 5000, limit=4, newest_first=True)
    assert [(r.ts_ms, r.point) for r in got] == [
        (T0 + 4000, "a"), (T0 + 4000, "b"), (T0 + 3000, "a"), (T0 + 3000, "b"),
    ]  # fmt: skip
    assert [r.ts_ms for r in store.readings("dev", "a", limit=2)] == [T0, T0 + 1000]


def test_bucketed_series(store: Store) -> None:
    base = T0 - T0 % 60_000
    recs = [Record("dev", "a", base + i * 10_000, float(i)) for i in range(12)]
    recs.append(Record("dev", "a", base + 5, "text is not aggregated"))
    store.write([data(1, *recs)], T0)
    buckets = store.series("dev", "a", base, base + 120_000, 60_000)
    assert [(b.ts_ms, b.count, b.min, b.avg, b.max) for b in buckets] == [
        (base, 6, 0.0, 2.5, 5.0),
        (base + 60_000, 6, 6.0, 8.5, 11.0),
    ]


def test_latest_value_per_point(store: Store) -> None:
    store.write(
        [
            data(1, Record("d1", "a", T0 + 5, 1.0), Record("d1", "a", T0 + 9, 2.0)),
            data(2, Record("d1", "b", T0 + 1, "x"), Record("d2", "a", T0, 7)),
        ],
        T0,
    )
    assert [(r.device, r.point, r.value) for r in store.latest()] == [
        ("d1", "a", 2.0),
        ("d1", "b", "x"),
        ("d2", "a", 7),
    ]
    assert [r.value for r in store.latest("d2")] == [7]


def test_dead_letters_keep_raw_bytes_topic_time_and_reason(store: Store) -> None:
    raw = bytes(range(256))
    store.write([Rejected("a/b", raw, "not msgpack", T0 + 7)], T0)
    (dl,) = store.dead_letters()
    assert (dl.topic, dl.payload, dl.reason, dl.received_ms) == ("a/b", raw, "not msgpack", T0 + 7)
    assert store.count_dead_letters() == 1


def birth(session: str, sent: int, *devices: DeviceInfo, bd: int = 0) -> Accepted:
    return acc(Birth(GW, session, 0, sent, "1.0", "abc", devices, bd_seq=bd), Kind.BIRTH)


def death(session: str, sent: int, reason: str, bd: int = 0) -> Accepted:
    return acc(Death(GW, session, 0, sent, reason, bd_seq=bd), Kind.DEATH)


def test_a_will_the_broker_kept_from_an_earlier_connection_ends_no_later_birth(
    store: Store,
) -> None:
    # A broker publishes its clients' wills when it shuts down itself, and keeps them
    # retained: after a broker restart, the gateway (same process, same session) is born
    # again on its second connection while its first connection's will lingers. A collector
    # that subscribes then gets both, in either order, and later the gateway's fresh birth.
    first, second = birth("s1", T0, bd=1), birth("s1", T0 + 20_000, bd=2)
    will = death("s1", T0, "connection lost", bd=1)
    for order in ([first, will, second], [first, second, will], [will, second]):
        store.write(order, T0 + 30_000)
        (gw,) = store.gateways()
        assert gw.status is Status.ONLINE, order
        store.write([birth("s1", T0 + 40_000, bd=2)], T0 + 40_000)  # the answer to a rebirth
        assert store.gateways()[0].since_ms == T0 + 40_000, order
        store.write([death("s1", T0 + 50_000, "shutdown", bd=2)], T0 + 50_000)
        assert store.gateways()[0].status is Status.OFFLINE
        store.write([second], T0 + 60_000)  # its retained birth, after the death: still dead
        assert store.gateways()[0].status is Status.OFFLINE
        store.write([birth("s0", T0 - 1, bd=7)], T0)  # reset: a stream of its own


def test_birth_death_and_device_events_track_status_with_times(store: Store) -> None:
    devs = (
        DeviceInfo("m1", "manhole_cover", "manhole", True, "3101040111000001"),
        DeviceInfo("m2", "manhole_cover", "manhole", False),
    )
    store.write([birth("s1", T0, *devs)], T0)
    (gw,) = store.gateways()
    assert (gw.status, gw.since_ms, gw.site, gw.software) == (Status.ONLINE, T0, "site-a", "1.0")
    by_id = {d.device: d for d in store.devices()}
    assert (by_id["m1"].status, by_id["m1"].asset, by_id["m1"].family) == (
        Status.ONLINE,
        "3101040111000001",
        "manhole",
    )
    assert by_id["m2"].status is Status.OFFLINE

    events = DeviceEventBatch(
        GW, "s1", 1, T0, (DeviceEvent("m2", True, T0 + 50, "answered"),), epoch="e1"
    )
    store.write([acc(events, Kind.DEVICE)], T0)
    assert {d.device: (d.status, d.since_ms) for d in store.devices(GW)}["m2"] == (
        Status.ONLINE,
        T0 + 50,
    )

    store.write([birth("s1", T0, *devs)], T0 + 60)  # the retained birth again: no change
    store.write([acc(Death(GW, "old-session", 0, T0, "x"), Kind.DEATH)], T0 + 70)
    assert store.gateways()[0].status is Status.ONLINE  # an older session's death is ignored

    store.write([acc(Death(GW, "s1", 0, T0, "lost"), Kind.DEATH)], T0 + 100)
    (gw,) = store.gateways()
    assert (gw.status, gw.since_ms, gw.reason) == (Status.OFFLINE, T0 + 100, "lost")
    assert {d.status for d in store.devices()} == {Status.UNKNOWN}

    store.write([birth("s2", T0 + 200, *devs)], T0 + 200)
    assert store.gateways()[0].status is Status.ONLINE


def test_status_counters_follow_arrival_even_when_the_gateway_clock_steps_back(
    store: Store,
) -> None:
    # Status is QoS 0 on one connection (never redelivered): what arrives last is the latest,
    # whatever its clock says (NTP stepped it back an hour here).
    for sent, n in ((T0 + 10, 5), (T0 - 3_600_000, 6)):
        store.write([acc(StatusMsg(GW, "s1", 0, sent, {"polls": n}), Kind.STATUS)], T0)
    (gw,) = store.gateways()
    assert (gw.counters, gw.counters_ms) == ({"polls": 6}, T0 - 3_600_000)


def alarm(seq: int, aid: str, state: AlarmState, ts: int, value: float = 30.0) -> Accepted:
    ev = AlarmEvent(aid, "g1", "gas", "hi", Severity.HIGH, state, ts, value, 20, "gas high")
    return acc(AlarmBatch(GW, "s1", seq, ts, (ev,), epoch="e1"), Kind.ALARM)


def test_alarms_dedup_by_source_and_type_with_count_and_times(store: Store) -> None:
    store.write(
        [
            alarm(1, "gw-1:1", AlarmState.ACTIVE_UNACKED, T0),
            alarm(2, "gw-1:1", AlarmState.NORMAL, T0 + 10),
            alarm(3, "gw-1:5", AlarmState.ACTIVE_UNACKED, T0 + 20, 40.0),
            alarm(3, "gw-1:5", AlarmState.ACTIVE_UNACKED, T0 + 20, 40.0),  # redelivered
        ],
        T0,
    )
    (a,) = store.alarms()
    assert (a.count, a.first_ms, a.last_ms, a.state, a.alarm_id, a.value) == (
        2,
        T0,
        T0 + 20,
        "active_unacked",
        "gw-1:5",
        40.0,
    )
    assert len(store.alarms(active_only=True)) == 1
    pending = store.pending_alarm_transitions()
    assert [p.state for p in pending] == ["active_unacked", "normal", "active_unacked"]
    store.mark_transitions_handled([pending[0].id])
    assert len(store.pending_alarm_transitions()) == 2


def test_assets_and_device_binding(store: Store) -> None:
    a = Asset(code="3101040111000001", owner="燃气公司", grid="31010400100101", devices=("g1",))
    assert store.upsert_assets([a]) == 1
    assert store.assets() == [a]
    # Named without its gateway before any gateway announced it: the first one to do so has it.
    assert store.asset_of_device(GW, "g1") is None
    store.write([birth("s1", T0, DeviceInfo("g1", "gas_detector", "gas", True))], T0)
    got = store.asset_of_device(GW, "g1")
    assert got is not None
    assert (got.subcategory, got.maintainer) == ("0111", "燃气公司")
    assert store.asset_of_device(GW, "nobody") is None
    assert store.asset_of_device("gw-other", "g1") is None


def test_cases_audit_serials_and_one_open_case_per_problem(store: Store) -> None:
    assert [store.next_case_serial("31010420261118") for _ in range(3)] == [1, 2, 3]
    assert store.next_case_serial("31010420261119") == 1
    case, audits = open_case(
        case_no="310104202611180001",
        kind="部件",
        subcategory="0111",
        problem="gas_leak",
        asset="3101040111000001",
        device="g1",
        urgency="urgent",
        department="燃气公司",
        grid=None,
        allowed_ms=7_200_000,
        auto_register=True,
        actor="system",
        now_ms=T0,
    )
    store.save_case(case, audits, expect_state=None)
    assert store.open_case_for("3101040111000001", "gas_leak") == case
    dispatched, audit = apply(case, Action.DISPATCH, actor="op", now_ms=T0 + 1)
    store.save_case(dispatched, [audit], expect_state=CaseState.REGISTERED.value)
    with pytest.raises(Conflict):
        store.save_case(dispatched, [audit], expect_state=CaseState.REGISTERED.value)
    assert [(a.from_state, a.to_state) for a in store.audit(case.case_no)] == [
        (None, "受理"),
        ("受理", "立案"),
        ("立案", "派遣"),
    ]
    twin = replace(case, case_no="310104202611180002")
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        store.save_case(twin, [], expect_state=None)
    assert [c.case_no for c in store.cases(open_only=True)] == [case.case_no]


def test_a_birth_never_replaces_a_binding_with_an_unregistered_asset(store: Store) -> None:
    known = Asset(code="3101040111000001", owner="燃气公司", devices=("g1",))
    other = Asset(code="3101040118000002", owner="路灯所")
    store.upsert_assets([known, other])
    unknown_asset = DeviceInfo("g1", "manhole_cover", "manhole", True, "3301060111999999")
    store.write([birth("s1", T0, unknown_asset)], T0)
    got = store.asset_of_device(GW, "g1")
    assert got is not None
    assert got.code == known.code  # the registry's binding stands
    rebound = DeviceInfo("g1", "manhole_cover", "manhole", True, other.code)
    store.write([birth("s2", T0 + 1, rebound)], T0 + 1)
    got = store.asset_of_device(GW, "g1")
    assert got is not None
    assert got.code == other.code


# --- order of events, not timestamps (issue 13, items 3 and 5) ---------------------------------

EPOCH = "e1"


def gw_alarm(seq: int, aid: str, state: AlarmState, ts: int, dev: str = "g1") -> Accepted:
    ev = AlarmEvent(aid, dev, "gas", "hi", Severity.HIGH, state, ts, 30.0, 20, "gas high")
    return acc(AlarmBatch(GW, "s1", seq, ts, (ev,), epoch=EPOCH), Kind.ALARM)


def dev_event(seq: int, online: bool, ts: int, dev: str = "m1") -> Accepted:
    ev = DeviceEvent(dev, online, ts, "answered" if online else "timeout")
    return acc(DeviceEventBatch(GW, "s1", seq, ts, (ev,), epoch=EPOCH), Kind.DEVICE)


def pictured(
    session: str,
    sent: int,
    high_water: int,
    alarms: tuple[AlarmEvent, ...] = (),
    devices: tuple[DeviceInfo, ...] = (),
    plausible: bool = True,
) -> Accepted:
    clock = ClockInfo(plausible, 0 if plausible else -3_600_000, sent)
    msg = Birth(GW, session, 0, sent, "1.0", "abc", devices, alarms, high_water, clock, epoch=EPOCH)
    return acc(msg, Kind.BIRTH)


def leak(aid: str, state: AlarmState, ts: int, dev: str = "g1") -> AlarmEvent:
    return AlarmEvent(aid, dev, "gas", "hi", Severity.HIGH, state, ts, 30.0, 20, "gas high")


def test_a_1970_clock_is_stored_as_sent_flagged_and_never_freezes_state(store: Store) -> None:
    # A gateway without RTC boots at 1970 after running at T0: its alarm and readings are kept
    # as sent, flagged with the receive time, and its later events still move the state on.
    now = T0 + 5_000
    early = 42_000  # 1970-01-01T00:00:42Z
    store.write([gw_alarm(1, f"{GW}:e1:1", AlarmState.ACTIVE_UNACKED, T0)], now)
    rec = Record("g1", "gas", early, 31.5)
    result = store.write([gw_alarm(2, f"{GW}:e1:1", AlarmState.NORMAL, early), data(3, rec)], now)
    assert (result.readings, result.alarm_events, result.dead_letters) == (1, 1, 0)
    (a,) = store.alarms()
    assert (a.state, a.state_ms) == ("normal", early)
    (r,) = store.readings("g1")
    assert (r.ts_ms, r.value, r.received_ms) == (early, 31.5, now)
    store.pump_events(now)
    view = store.alarm(f"{GW}:e1:1")
    assert view is not None
    assert (view.state, view.received_ms) == ("normal", now)
    # A plausible reading carries no receive time.
    store.write([data(4, Record("g1", "gas", T0 + 1, 1.0))], now)
    assert [x.received_ms for x in store.readings("g1")] == [now, None]


def test_device_status_follows_the_gateway_order_not_the_largest_timestamp(
    store: Store,
) -> None:
    far_future = 253_402_300_799_000  # 9999-12-31: a clock gone wild
    store.write([dev_event(1, False, far_future)], T0)
    store.write([dev_event(2, True, T0 + 1)], T0 + 2)  # later in the stream, earlier stamp
    by_id = {d.device: d for d in store.devices()}
    assert (by_id["m1"].status, by_id["m1"].since_ms) == (Status.ONLINE, T0 + 1)
    store.write([dev_event(1, False, far_future)], T0 + 3)  # a redelivery: a duplicate key
    store.pump_events(T0 + 4)
    flagged = [e for e in store.events(0) if e.type == "device.offline"]
    assert flagged
    assert {d.device: d.status for d in store.devices()}["m1"] is Status.ONLINE


def test_a_birth_stamped_1970_after_a_death_brings_the_gateway_back(store: Store) -> None:
    store.write([pictured("s1", T0, 0)], T0)
    store.write([acc(Death(GW, "s1", 0, T0, "lost"), Kind.DEATH)], T0 + 100)
    store.write([pictured("s2", 5_000, 0, plausible=False)], T0 + 200)
    (gw,) = store.gateways()
    assert (gw.status, gw.session) == (Status.ONLINE, "s2")
    assert gw.clock is not None
    assert (gw.clock.plausible, gw.clock.step_ms, gw.clock.received_ms) == (
        False,
        -3_600_000,
        T0 + 200,
    )


def test_a_birth_picture_creates_missing_alarms_clears_vanished_ones_idempotently(
    store: Store,
) -> None:
    # The collector holds g2's leak active; the gateway (birth) says g2 is normal and g1 leaks.
    store.write([gw_alarm(1, f"{GW}:e1:1", AlarmState.ACTIVE_UNACKED, T0, dev="g2")], T0)
    store.mark_transitions_handled([t.id for t in store.pending_alarm_transitions()])
    birth = pictured("s2", T0 + 10, 1, (leak(f"{GW}:e1:2", AlarmState.ACTIVE_UNACKED, T0 + 5),))
    assert store.write([birth], T0 + 10).alarm_events == 2
    state = {a.device: (a.alarm_id, a.state, a.message) for a in store.alarms()}
    assert state == {
        "g1": (f"{GW}:e1:2", "active_unacked", "gas high"),
        "g2": (f"{GW}:e1:1", "normal", "reconciled from birth"),
    }
    pending = store.pending_alarm_transitions()
    assert [(t.device, t.state, t.origin) for t in pending] == [
        ("g1", "active_unacked", "birth"),
        ("g2", "normal", "birth"),
    ]
    # The same picture again (a rebirth, a retained copy): nothing new.
    again = pictured("s2", T0 + 20, 1, (leak(f"{GW}:e1:2", AlarmState.ACTIVE_UNACKED, T0 + 5),))
    assert store.write([again], T0 + 20).alarm_events == 0
    assert len(store.pending_alarm_transitions()) == 2


def test_batches_up_to_the_birth_high_water_never_roll_the_picture_back(store: Store) -> None:
    devs = (DeviceInfo("m1", "manhole_cover", "manhole", True),)
    acked = AlarmEvent(f"{GW}:e1:1", "g1", "gas", "hi", Severity.HIGH, AlarmState.ACTIVE_ACKED,
                       T0 + 30, 30.0, 20, "gas high", "值班员", "seen")  # fmt: skip
    store.write([pictured("s1", T0 + 40, 5, (acked,), devs)], T0 + 40)
    # Batches 3 and 4 were frozen before the picture was taken but arrive after the birth.
    late = [
        gw_alarm(3, f"{GW}:e1:1", AlarmState.ACTIVE_UNACKED, T0 + 10),
        dev_event(4, False, T0 + 20),
    ]
    result = store.write(late, T0 + 50)
    assert (result.alarm_events, result.duplicates) == (1, 0)  # kept in the history
    (a,) = store.alarms()
    assert (a.state, a.ack_by) == ("active_acked", "值班员")
    assert {d.device: d.status for d in store.devices()}["m1"] is Status.ONLINE
    assert [t.origin for t in store.pending_alarm_transitions()] == ["birth"]  # not the stale one
    # Batch 6 is newer than the picture: it applies.
    store.write([gw_alarm(6, f"{GW}:e1:1", AlarmState.CLEARED_UNACKED, T0 + 60)], T0 + 60)
    assert store.alarms()[0].state == "cleared_unacked"
    store.pump_events(T0 + 70)
    view = store.alarm(f"{GW}:e1:1")
    assert view is not None
    assert view.state == "cleared_unacked"
    raised = [e.data["state"] for e in store.events(0) if e.type.startswith("alarm.")]
    assert raised == ["active_acked", "cleared_unacked"]  # the stale event is not announced


# --- a device belongs to its gateway (issue 13, item 4) ----------------------------------------


def born(gw: str, session: str, *devices: DeviceInfo) -> Accepted:
    return acc(Birth(gw, session, 0, T0, "1.0", "h", devices, epoch=EPOCH), Kind.BIRTH, gw)


def test_two_cabinets_with_the_same_device_ids_never_mix(store: Store) -> None:
    a1, b1 = "3101040111000001", "3101040111000002"
    store.upsert_assets([
        Asset(code=a1, owner="燃气公司", devices=("gw-a/mh-01",)),
        Asset(code=b1, owner="燃气公司", devices=("gw-b/mh-01",)),
    ])  # fmt: skip
    store.write([
        born("gw-a", "sa", DeviceInfo("mh-01", "manhole_cover", "manhole", True)),
        born("gw-b", "sb", DeviceInfo("mh-01", "gas_detector", "gas", False)),
    ], T0)  # fmt: skip
    store.write([
        acc(Data("gw-a", "sa", 1, T0, (Record("mh-01", "tilt", T0 + 1, 1.5),), epoch=EPOCH),
            Kind.DATA, "gw-a"),
        acc(Data("gw-b", "sb", 1, T0, (Record("mh-01", "gas", T0 + 2, 42.0),), epoch=EPOCH),
            Kind.DATA, "gw-b"),
        acc(AlarmBatch("gw-b", "sb", 2, T0, (leak("gw-b:e1:1", AlarmState.ACTIVE_UNACKED, T0,
            dev="mh-01"),), epoch=EPOCH), Kind.ALARM, "gw-b"),
    ], T0)  # fmt: skip
    devices = {(d.gateway, d.device): d for d in store.devices()}
    assert {k: (d.family, d.status, d.asset) for k, d in devices.items()} == {
        ("gw-a", "mh-01"): ("manhole", Status.ONLINE, a1),
        ("gw-b", "mh-01"): ("gas", Status.OFFLINE, b1),
    }
    assert [r.value for r in store.readings("mh-01", gateway="gw-a")] == [1.5]
    assert [r.value for r in store.readings("mh-01", gateway="gw-b")] == [42.0]
    assert [(r.gateway, r.value) for r in store.latest("mh-01")] == [
        ("gw-a", 1.5),
        ("gw-b", 42.0),
    ]
    assert [r.point for r in store.latest(gateway="gw-b")] == ["gas"]
    got = store.asset_of_device("gw-b", "mh-01")
    assert got is not None
    assert got.code == b1
    (alarm_b,) = store.alarms()
    assert (alarm_b.gateway, alarm_b.device) == ("gw-b", "mh-01")
    assert [d.gateway for d in store.devices(device="mh-01")] == ["gw-a", "gw-b"]


def test_a_birth_claiming_another_gateways_asset_is_refused_and_reported(store: Store) -> None:
    asset = "3101040111000001"
    store.upsert_assets([Asset(code=asset, owner="燃气公司")])
    store.write([born("gw-a", "sa", DeviceInfo("mh-01", "manhole_cover", "manhole", True, asset))],
                T0)  # fmt: skip
    claim = DeviceInfo("gas-9", "gas_detector", "gas", True, asset)
    result = store.write([born("gw-x", "sx", claim)], T0 + 1)
    assert (result.dead_letters, result.gateway_conflicts) == (1, 1)
    assert store.asset_of_device("gw-x", "gas-9") is None
    got = store.asset_of_device("gw-a", "mh-01")
    assert got is not None  # never a silent takeover
    (letter,) = store.dead_letters()
    assert "the asset is bound to gw-a/mh-01: claim refused" in letter.reason
    assert {g.gateway: g.status for g in store.gateways()}["gw-x"] is Status.ONLINE
    store.pump_events(T0 + 2)
    (event,) = [e for e in store.events(0) if e.type == "gateway.conflict"]
    assert (event.subject, event.data["gateway"]) == ("gw-x", "gw-x")
    assert "claims asset" in event.data["reason"]


def test_a_registry_entry_naming_an_id_two_gateways_have_needs_the_gateway(
    store: Store,
) -> None:
    store.write([
        born("gw-a", "sa", DeviceInfo("mh-01", "manhole_cover", "manhole", True)),
        born("gw-b", "sb", DeviceInfo("mh-01", "manhole_cover", "manhole", True)),
    ], T0)  # fmt: skip
    with pytest.raises(AssetError, match=r"gw-a, gw-b; name it as gw-a/mh-01"):
        store.upsert_assets([Asset(code="3101040111000001", owner="x", devices=("mh-01",))])
    assert store.assets() == []  # nothing stored
    store.upsert_assets([Asset(code="3101040111000001", owner="x", devices=("gw-b/mh-01",))])
    assert {d.gateway: d.asset for d in store.devices()} == {
        "gw-a": None,
        "gw-b": "3101040111000001",
    }


def test_the_allowed_skew_ahead_of_the_collector_clock_is_configured(store: Store) -> None:
    now = T0
    ahead = Record("dev", "p", now + 60_000, 1.0)  # a minute ahead
    store.write([data(1, ahead)], now)
    store.max_skew_ms = 30_000
    store.write([data(2, ahead._replace(point="q"))], now)
    assert [(r.point, r.received_ms) for r in store.readings("dev")] == [("p", None), ("q", now)]


def test_a_batch_mixing_plausible_and_implausible_times_flags_only_the_implausible(
    store: Store,
) -> None:
    recs = (Record("dev", "a", 5_000, 1.0), Record("dev", "b", T0, 2.0), Record("dev", "c", 7, "x"))
    assert store.write([data(1, *recs)], T0).readings == 3
    got = {r.point: (r.ts_ms, r.value, r.received_ms) for r in store.readings("dev")}
    assert got == {"a": (5_000, 1.0, T0), "b": (T0, 2.0, None), "c": (7, "x", T0)}


# --- issue 14: alarm links, case places and lifecycle fields, work orders, device history -----


def link(aid: str, ref: str | None, outcome: str = "case", ts: int = T0) -> AlarmLink:
    return AlarmLink(
        aid, GW, "g1", "gas_concentration", "hi", 2, 31.5, 20, "%LEL", ts, "一级报警",
        outcome, ref, "" if ref else "why not", ts + 5,
    )  # fmt: skip


def a_case(no: str = "330106202611180001", **changes: object) -> tuple[Case, list[Audit]]:
    case, audits = open_case(
        case_no=no, kind="事件", subcategory="0403", problem="gas_leak",
        asset="3301060111000101", device="g1", urgency="urgent", department="燃气集团",
        grid="33010600100101", allowed_ms=3_600_000, auto_register=True, actor="system",
        now_ms=T0, gateway=GW, severity=2,
        location=Place(120.14, 30.27, "CGCS2000", "文三路东1号", "asset"),
    )  # fmt: skip
    return replace(case, **changes), audits  # type: ignore[arg-type]


def stored(store: Store, case_no: str) -> Case:
    """The case as the store has it now (its row version included)."""
    case = store.case(case_no)
    assert case is not None
    return case


def test_a_case_keeps_its_phase_table_and_overdue_stages_are_found(store: Store) -> None:
    case, audits = a_case()
    first = Phase(case.case_no, 1, "派遣", "燃气集团", T0, T0 + H, "工作时")
    store.save_case(case, audits, expect_state=None, phases=[first])
    assert store.phases(case.case_no) == [first]
    assert store.overdue_phases(T0 + H) == []  # due, not past
    assert store.overdue_phases(T0 + H + 1) == [first]
    ended = replace(first, end_ms=T0 + 2 * H)
    second = Phase(case.case_no, 2, "处置", "燃气集团", T0 + 2 * H, T0 + 3 * H, "自然时",
                   parked_since_ms=T0 + 2 * H, left_ms=H, extended=1.5)  # fmt: skip
    moved, audit = apply(case, Action.DISPATCH, actor="派遣员", now_ms=T0 + 2 * H)
    store.save_case(moved, [audit], expect_state="立案", phases=[ended, second])
    assert store.phases(case.case_no) == [ended, second]
    assert store.overdue_phases(T0 + 9 * H) == []  # ended, or parked: never overdue
    resumed = replace(second, parked_since_ms=None, left_ms=None, escalated_due_ms=T0 + 3 * H)
    with pytest.raises(Conflict):  # `moved` is the case as read before its save: stale
        store.save_case(moved, [], expect_state="派遣", phases=[resumed])
    assert store.phases(case.case_no) == [ended, second]  # nothing of that save stayed
    store.save_case(stored(store, case.case_no), [], expect_state="派遣", phases=[resumed])
    assert store.overdue_phases(T0 + 9 * H) == []  # escalated for this due time already
    again = replace(resumed, due_ms=T0 + 4 * H)  # 延时: a new due time, not escalated yet
    store.save_case(stored(store, case.case_no), [], expect_state="派遣", phases=[again])
    assert store.overdue_phases(T0 + 9 * H) == [again]


def test_a_case_keeps_its_place_limit_severity_and_lifecycle_fields(store: Store) -> None:
    case, audits = a_case(
        recurrence_of="330106202611150003", deadline_ms=T0 + 3_600_000, timed_from_ms=T0
    )
    store.save_case(case, audits, expect_state=None)
    assert store.case(case.case_no) == case
    moved, audit = apply(
        case, Action.DISPATCH, actor="派遣员", now_ms=T0 + 1,
        args=Args(department="燃气抢修中心", assist=("交警大队", "街道办")),
    )  # fmt: skip
    moved = replace(moved, severity=1, reworks=2, returns=1, closure=None, remaining_ms=5)
    store.save_case(moved, [audit], expect_state="立案")
    got = store.case(case.case_no)
    assert got == moved
    assert got is not None
    assert got.assist == ("交警大队", "街道办")
    (listed,) = store.find_cases(states=["派遣"])
    assert listed == moved


def test_an_alarm_occurrence_belongs_to_one_case_and_says_so(store: Store) -> None:
    case, audits = a_case()
    store.save_case(case, audits, expect_state=None, links=[link("gw-1:e1:1", case.case_no)])
    assert store.link("gw-1:e1:1") == link("gw-1:e1:1", case.case_no)
    assert store.links(case.case_no) == [link("gw-1:e1:1", case.case_no)]
    other, other_audits = a_case("330106202611180002", problem="other")
    with pytest.raises(Conflict, match="handled meanwhile"):
        store.save_case(
            other, other_audits, expect_state=None, links=[link("gw-1:e1:1", other.case_no)]
        )
    assert store.case(other.case_no) is None  # nothing of that transaction stayed
    store.mark_transitions_handled([], cleared=[("gw-1:e1:1", T0 + 60_000)])
    store.mark_transitions_handled([], cleared=[("gw-1:e1:1", T0 + 90_000)])  # first one stays
    got = store.link("gw-1:e1:1")
    assert got is not None
    assert got.cleared_ms == T0 + 60_000
    store.record_outcome(link("gw-1:e1:2", None, "recorded"), [])
    assert store.links_for([case.case_no, "nothing"]) == {case.case_no: [got]}
    assert store.count_alarm_outcomes() == {"case": 1, "recorded": 1}


def test_the_alarm_list_shows_where_each_occurrence_ended(store: Store) -> None:
    store.write([alarm(1, "gw-1:1", AlarmState.ACTIVE_UNACKED, T0)], T0)
    store.write([alarm(2, "gw-1:2", AlarmState.ACTIVE_UNACKED, T0 + 1)], T0 + 1)
    store.record_outcome(link("gw-1:1", None, "recorded"), [])
    store.pump_events(T0 + 2)
    recorded = store.alarm("gw-1:1")
    assert recorded is not None
    assert (recorded.outcome, recorded.outcome_ref, recorded.outcome_reason) == (
        "recorded",
        None,
        "why not",
    )
    assert [a.alarm_id for a in store.find_alarms(outcomes=["recorded"])] == ["gw-1:1"]
    assert [a.alarm_id for a in store.find_alarms(outcomes=["pending"])] == ["gw-1:2"]


def test_the_last_closed_case_of_a_subject_and_problem(store: Store) -> None:
    assert store.last_closed_case_for("3301060111000101", "gas_leak") is None
    for n, closed_at in ((1, T0 + 10), (2, T0 + 20)):
        case, audits = a_case(f"33010620261118000{n}")
        closed = replace(case, state=CaseState.CLOSED, updated_ms=closed_at, closure="处置完成")
        store.save_case(closed, audits, expect_state=None)
    last = store.last_closed_case_for("3301060111000101", "gas_leak")
    assert last is not None
    assert (last.case_no, last.closure) == ("330106202611180002", "处置完成")


def test_work_orders_one_open_per_device_and_problem_with_audit_and_events(store: Store) -> None:
    order, audit = open_work_order(
        order_no="YW330106202611180001", problem="comm_loss", title="设备通信中断",
        gateway=GW, device="sl-1", asset=None, severity=3, urgent=False,
        department="运维公司", allowed_ms=86_400_000, now_ms=T0,
        location=Place(120.1, 30.2, "CGCS2000", "机柜", "device"),
    )  # fmt: skip
    store.save_work_order(
        order, [audit], expect_state=None, links=[link("gw-1:e1:9", order.order_no)]
    )
    assert store.work_order(order.order_no) == order
    assert store.open_work_order_for(f"{GW}/sl-1", "comm_loss") == order
    twin = replace(order, order_no="YW330106202611180002")
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        store.save_work_order(twin, [], expect_state=None)
    taken, a2 = act_on(order, WorkOrderAction.ACCEPT, actor="张工", now_ms=T0 + 1)
    store.save_work_order(taken, [a2], expect_state="待接单")
    with pytest.raises(Conflict):
        store.save_work_order(taken, [a2], expect_state="待接单")
    # Still 处理中, but `taken` is the order as read before its save: stale, so a Conflict.
    with pytest.raises(Conflict):
        store.save_work_order(replace(taken, repeats=5), [], expect_state="处理中")
    current = store.work_order(order.order_no)
    assert current == taken
    assert current is not None
    done, a3 = act_on(current, WorkOrderAction.COMPLETE, actor="张工", now_ms=T0 + 2)
    store.save_work_order(done, [a3], expect_state="处理中")
    assert store.open_work_order_for(f"{GW}/sl-1", "comm_loss") is None
    assert store.last_closed_work_order_for(f"{GW}/sl-1", "comm_loss") == done
    assert [a.action for a in store.work_order_audit(order.order_no)] == [
        "open",
        "accept",
        "complete",
    ]
    assert store.find_work_orders(states=["已完成"], device="sl-1") == [done]
    assert store.find_work_orders(department="nobody") == []
    assert store.count_work_orders_by_state() == {"已完成": 1}
    store.pump_events(T0 + 3)
    events = [
        (e.type, e.data["to_state"]) for e in store.events(0) if e.type.startswith("work_order")
    ]
    assert events == [
        ("work_order.opened", "待接单"),
        ("work_order.transition", "处理中"),
        ("work_order.transition", "已完成"),
    ]


def test_a_device_keeps_its_install_location_from_the_birth(store: Store) -> None:
    where = Location(120.1402, 30.2771, "CGCS2000", "文三路与学院路口东侧")
    store.write(
        [
            birth(
                "s1",
                T0,
                DeviceInfo("g1", "gas_detector", "gas", True, location=where),
                DeviceInfo("g2", "gas_detector", "gas", True),
            )
        ],
        T0,
    )
    by_id = {d.device: d for d in store.devices()}
    assert (by_id["g1"].location, by_id["g2"].location) == (where, None)
    moved = Location(120.2, 30.3, "WGS84", "")
    store.write(
        [birth("s2", T0 + 1, DeviceInfo("g1", "gas_detector", "gas", True, location=moved))], T0 + 1
    )
    assert store.devices(GW, "g1")[0].location == moved


def test_device_history_gives_the_status_at_the_start_and_the_changes_after(store: Store) -> None:
    store.write([birth("s1", T0, DeviceInfo("g1", "gas_detector", "gas", True))], T0)
    for seq, (online, ts) in enumerate(((False, T0 + 100), (True, T0 + 300)), start=1):
        batch = DeviceEventBatch(GW, "s1", seq, ts, (DeviceEvent("g1", online, ts),), epoch="e1")
        store.write([acc(batch, Kind.DEVICE)], ts)
    history = store.device_history(T0 + 200, T0 + 1000)
    assert [(c.device, c.status, c.ts_ms) for c in history] == [
        ("g1", "offline", T0 + 100),
        ("g1", "online", T0 + 300),
    ]


@pytest.mark.parametrize(
    "record",
    [
        Record("g1", "ts", 2**63, 1.0),  # beyond BIGINT
        Record("g1", "p\ud800", T0, 1.0),  # a lone surrogate no encoding can carry
        Record("g1", "big", T0, 10**400),  # beyond a double
    ],
    ids=["ts-beyond-bigint", "lone-surrogate", "int-beyond-double"],
)
def test_a_value_no_column_can_hold_is_a_data_error_and_commits_nothing(
    store: Store, record: Record
) -> None:
    good = Data(GW, "s1", 1, T0, (Record("g1", "p", T0, 1.0),), epoch="e1")
    bad = Data(GW, "s1", 2, T0, (record,), epoch="e1")
    with pytest.raises(StoreDataError, match="cannot store"):
        store.write([acc(good, Kind.DATA), acc(bad, Kind.DATA)], T0)
    assert store.count_readings() == 0
    assert store.write([acc(good, Kind.DATA)], T0).readings == 1


class BuggyStore(SqliteStore):
    """A real SQLite store with a bug on the alarm path (what a bad refactoring leaves)."""

    def _alarm_event(self, *args: Any, **kwargs: Any) -> int:
        raise KeyError("a bug on the alarm path")


def test_a_bug_on_the_write_path_leaves_the_store_as_itself_not_as_a_data_error(
    tmp_path: Path,
) -> None:
    # Disguised as a StoreDataError, a bug made ingest dead-letter every healthy message
    # that took the broken path.
    store = BuggyStore(str(tmp_path / "bug.db"))
    store.migrate()
    ev = AlarmEvent(f"{GW}:e1:1", "g1", "gas", "hi", Severity.HIGH, AlarmState.ACTIVE_UNACKED,
                    T0, 30.0, 20, "gas high")  # fmt: skip
    with pytest.raises(KeyError, match="a bug on the alarm path"):
        store.write([acc(AlarmBatch(GW, "s1", 1, T0, (ev,), epoch="e1"), Kind.ALARM)], T0)
    assert store.count_dead_letters() == 0
    store.close()


@pytest.mark.parametrize("where", ["no-such-dir/x.db", "a-file/x.db"])
def test_a_sqlite_file_that_cannot_be_opened_is_store_unavailable(
    tmp_path: Path, where: str
) -> None:
    # An OSError as much as an sqlite3 one: a folder that is a file failed with
    # NotADirectoryError before.
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(StoreUnavailable, match="cannot open SQLite database"):
        open_store(f"sqlite:///{tmp_path}/{where}")


def test_a_department_scope_matches_department_names_exactly_whatever_they_hold(
    store: Store,
) -> None:
    # Department names are the registry's free text: a LIKE wildcard, a quote or a backslash
    # in one must not widen a 专业部门 key's scope to another department's case or work order
    # (store/scope_sql.py matches a 协办 inside a JSON list with LIKE).
    sly, near = '燃气_集团%"\\', "燃气X集团abc"
    for n, (lead, assist) in enumerate(
        [(sly, ()), (near, ()), ("路灯所", (sly,)), ("路灯所", (near,))], start=1
    ):
        case, audits = a_case(f"33010620261118000{n}", asset=f"330106011100010{n}",
                              department=lead, assist=assist)  # fmt: skip
        store.save_case(case, audits, expect_state=None)
    assert {c.case_no for c in store.find_cases(scope=[sly])} == {
        "330106202611180001",  # 主办
        "330106202611180003",  # 协办
    }
    assert store.find_cases(scope=[]) == []  # a key scoped to nothing sees nothing
    for n, department in enumerate((sly, near), start=1):
        order, audit = open_work_order(
            order_no=f"YW{n}", problem="comm_loss", title="通信中断", gateway=GW,
            device=f"d{n}", asset=None, severity=3, urgent=False, department=department,
            allowed_ms=H, now_ms=T0,
        )  # fmt: skip
        store.save_work_order(order, [audit], expect_state=None)
    assert [o.order_no for o in store.find_work_orders(scope=[sly])] == ["YW1"]
    assert store.work_order("YW2", scope=[sly]) is None
    assert store.work_order("YW1", scope=[sly]) is not None
