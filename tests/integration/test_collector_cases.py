"""The case engine over real stores (SQLite and PostgreSQL) with an injected clock: alarms as a
gateway sends them, cases and work orders as the store keeps them."""

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace as changed
from pathlib import Path

import pytest

from lifeline.collector.assets import Asset
from lifeline.collector.cases.codes import conditions
from lifeline.collector.cases.engine import CaseEngine
from lifeline.collector.cases.phases import Phase
from lifeline.collector.cases.routing import Routing, default_routing_path, load_routing
from lifeline.collector.cases.workflow import (
    Action,
    Audit,
    Case,
    CaseState,
    Closure,
    open_case,
)
from lifeline.collector.cases.workorders import WorkOrderState
from lifeline.collector.grids import load_grids
from lifeline.collector.models import Accepted
from lifeline.collector.store import Conflict, Store, open_store
from lifeline.collector.store.postgres import PostgresStore
from lifeline.collector.store.schema import case_record_statements
from lifeline.collector.store.sql import SqlStore
from lifeline.wire import (
    AlarmBatch,
    AlarmEvent,
    AlarmState,
    Birth,
    DeviceInfo,
    Kind,
    Location,
    Severity,
    TopicParts,
)

pytestmark = pytest.mark.integration

T0 = 1_800_000_000.0  # seconds: 2027-01-15 08:00 UTC = 16:00 in Shanghai
H = 3600.0
GAS_SITE = Location(121.437, 31.187, "CGCS2000", "漕溪北路 88 号机柜")
WELL = Asset(
    code="3101040111000001", owner="燃气公司", maintainer="燃气运维站", grid="31010400100101",
    address="漕溪北路 88 号", lon=121.4371, lat=31.1873, devices=("mh-1",),
)  # fmt: skip


HELD = {"gas-co": "燃气公司", "gas-ops": "燃气运维站", "chj": "漕河泾街道城管科"}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database of `store`, for a test that also opens an API over it."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/cases.db"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    s.migrate()
    devices = (
        DeviceInfo("gas-1", "gas_detector", "gas", True, location=GAS_SITE),
        DeviceInfo("mh-1", "manhole_cover", "manhole", True),
        DeviceInfo("lamp-1", "streetlight", "streetlight", True),
    )
    birth = Birth("gw", "s", 0, int(T0 * 1000), "1", "h", devices)
    s.write([Accepted(TopicParts("site", "gw", Kind.BIRTH), birth)], int(T0 * 1000))
    # The registry: what the shipped table registers at start, and the departments here.
    held = {**load_routing(default_routing_path()).departments, **HELD}
    for code, name in held.items():
        s.put_department(code, name, int(T0 * 1000))
    yield s
    s.close()


@pytest.fixture
def routing() -> Routing:
    return load_routing(default_routing_path()).model_copy(update={"district": "310104"})


seq = iter(range(1, 1_000_000))


def raise_alarm(
    store: Store,
    device: str,
    point: str,
    kind: str,
    state: AlarmState,
    aid: str = "gw:1",
    severity: Severity = Severity.HIGH,
    at: float = T0,
) -> None:
    ev = AlarmEvent(aid, device, point, kind, severity, state, int(at * 1000), 30.0, 20)
    batch = AlarmBatch("gw", "s", next(seq), int(at * 1000), (ev,), epoch="e1")
    store.write([Accepted(TopicParts("site", "gw", Kind.ALARM), batch)], int(at * 1000))


def test_assetless_gas_leak_is_an_event_case_at_the_detectors_own_location(
    store: Store, routing: Routing
) -> None:
    engine = CaseEngine(store, routing, Clock())
    raise_alarm(store, "gas-1", "gas_concentration", "hi", AlarmState.ACTIVE_UNACKED)
    assert engine.process_pending() == 1
    (case,) = store.cases()
    assert (case.kind, case.subcategory, case.asset, case.department) == (
        "事件",
        "0403",
        None,
        routing.default_department,
    )
    assert case.case_no == "310104202701150001"  # the district + local date + serial
    assert (case.location.lon, case.location.lat, case.location.source) == (
        121.437,
        31.187,
        "device",
    )
    assert case.location.address == "漕溪北路 88 号机柜"
    (link,) = store.links(case.case_no)
    assert (link.alarm_id, link.value, link.limit, link.unit) == ("gw:1", 30.0, 20, "%LEL")
    assert store.pending_alarm_transitions() == []


def test_a_case_is_placed_in_its_grid_by_polygon_and_routed_to_the_grids_department(
    store: Store, routing: Routing, tmp_path: Path
) -> None:
    # Before issue 19 the assetless detector's 事件 went to the center and had no grid.
    around = [[121.43, 31.18], [121.44, 31.18], [121.44, 31.19], [121.43, 31.19], [121.43, 31.18]]
    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"code": "31010400200301", "street": "漕河泾街道",
                               "community": "漕溪社区", "departments": ["漕河泾街道城管科"]},
                "geometry": {"type": "Polygon", "coordinates": [around]},
            }
        ],
    }  # fmt: skip
    path = tmp_path / "grids.geojson"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    engine = CaseEngine(store, routing, Clock(), grids=load_grids(path))
    raise_alarm(store, "gas-1", "gas_concentration", "hi", AlarmState.ACTIVE_UNACKED)
    engine.process_pending()
    (case,) = store.cases()
    assert (case.grid, case.department) == ("31010400200301", "漕河泾街道城管科")
    (listed,) = store.find_cases(grid="31010400200301")
    assert listed.case_no == case.case_no


def test_each_stage_runs_its_own_clock_and_dispose_starts_at_dispatch(
    store: Store, routing: Routing
) -> None:
    store.upsert_assets([WELL])
    clock = Clock()
    engine = CaseEngine(store, routing, clock)
    raise_alarm(store, "mh-1", "water_level", "hi", AlarmState.ACTIVE_UNACKED)
    engine.process_pending()
    (case,) = store.cases()
    assert (case.state, case.kind, case.subcategory, case.asset) == (
        CaseState.REPORTED,
        "事件",
        "0404",
        WELL.code,
    )
    # Urgent (0404 urgent: 4 h to 处置): the 立案 stage has 30 natural minutes.
    assert (case.deadline_ms, case.allowed_ms) == (int((T0 + H / 2) * 1000), 4 * 3_600_000)
    clock.now += H
    case = engine.act(case.case_no, Action.ACCEPT, "值班员")
    assert case.state is CaseState.REGISTERED
    assert store.case(case.case_no) == case
    assert case.deadline_ms == int((T0 + 1.5 * H) * 1000)  # the 派遣 stage: 30 minutes
    clock.now += H
    case = engine.act(case.case_no, Action.DISPATCH, "派遣员")
    # Before issue 19 the one clock ran from 立案 (T0 + 5 h); 处置 now counts from 派遣.
    assert case.deadline_ms == int((T0 + 6 * H) * 1000)
    rows = [(p.stage, p.start_ms, p.due_ms, p.end_ms) for p in store.phases(case.case_no)]
    ms = [int((T0 + k * H) * 1000) for k in (0, 0.5, 1, 1.5, 2, 6)]
    assert rows == [
        ("立案", ms[0], ms[1], ms[2]),
        ("派遣", ms[2], ms[3], ms[4]),
        ("处置", ms[4], ms[5], None),
    ]
    assert [p.overdue(ms[4]) for p in store.phases(case.case_no)] == [True, True, False]


def test_unrouted_and_device_health_alarms_say_where_they_ended(
    store: Store, routing: Routing
) -> None:
    engine = CaseEngine(store, routing, Clock())
    raise_alarm(
        store, "mh-1", "temperature", "hi", AlarmState.ACTIVE_UNACKED, "gw:1", Severity.MEDIUM
    )
    raise_alarm(store, "mh-1", "battery", "lo", AlarmState.ACTIVE_UNACKED, "gw:2", Severity.LOW)
    engine.process_pending()
    assert store.cases() == []
    store.pump_events(int(T0 * 1000))
    recorded, order = store.alarm("gw:1"), store.alarm("gw:2")
    assert recorded is not None
    assert (recorded.outcome, recorded.outcome_ref) == ("recorded", None)
    assert "no route" in (recorded.outcome_reason or "")
    assert order is not None
    assert order.outcome == "work_order"
    assert order.outcome_ref is not None
    wo = store.work_order(order.outcome_ref)
    assert wo is not None
    assert (wo.problem, wo.state, wo.department) == (
        "low_battery",
        WorkOrderState.OPEN,
        "物联感知设备运维单位",
    )
    assert [a.outcome for a in store.find_alarms(outcomes=["recorded"])] == ["recorded"]
    assert store.count_alarm_outcomes() == {"recorded": 1, "work_order": 1}


def test_each_new_overdue_raises_one_escalation(store: Store, routing: Routing) -> None:
    store.upsert_assets([WELL])
    clock = Clock()
    engine = CaseEngine(store, routing, clock)
    raise_alarm(store, "mh-1", "cover_open", "state", AlarmState.ACTIVE_UNACKED)
    engine.process_pending()  # 立案 at once: the 派遣 stage, urgent: 30 minutes
    clock.now += 0.4 * H
    assert engine.escalate_overdue() == []
    clock.now += 0.2 * H
    (no,) = engine.escalate_overdue()
    assert engine.escalate_overdue() == []  # once per overdue
    engine.act(no, Action.DISPATCH, "派遣员")  # 处置: 2 h from 派遣 (urgent 0111)
    clock.now += 1.9 * H
    assert engine.escalate_overdue() == []
    clock.now += 0.2 * H
    # Before issue 19 a case was escalated once in its life; every new overdue is a 督办 now.
    assert engine.escalate_overdue() == [no]
    notes = [a.note for a in store.audit(no) if a.action == "escalate"]
    assert notes == ["督办 第1次: overdue in 派遣", "督办 第2次: overdue in 处置"]


def test_auto_close_only_before_dispatch_and_only_when_configured(
    store: Store, routing: Routing
) -> None:
    store.upsert_assets([WELL])
    engine = CaseEngine(store, routing.model_copy(update={"auto_close": True}), Clock())
    raise_alarm(store, "mh-1", "cover_open", "state", AlarmState.ACTIVE_UNACKED)
    raise_alarm(store, "mh-1", "cover_open", "state", AlarmState.CLEARED_UNACKED)
    raise_alarm(store, "gas-1", "gas_concentration", "hi", AlarmState.ACTIVE_UNACKED, "gw:2")
    raise_alarm(store, "gas-1", "gas_concentration", "hi", AlarmState.CLEARED_UNACKED, "gw:2")
    engine.process_pending()
    cases = {c.problem: c for c in store.cases()}
    cover, leak = cases["cover_displaced"], cases["gas_leak"]
    assert (cover.state, cover.closure) == (CaseState.CLOSED, "自动恢复")
    assert [a.action for a in store.audit(cover.case_no)][-2:] == ["alarm_cleared", "auto_close"]
    assert leak.state is CaseState.DISPATCHED  # dispatched at once: its 反馈 is still due
    assert store.links(leak.case_no)[0].cleared_ms == int(T0 * 1000)


def test_alarms_from_a_birth_picture_open_cases_and_clear_with_a_note(
    store: Store, routing: Routing
) -> None:
    # A collector that missed the leak learns it from the gateway's birth, and later learns
    # from the next birth that it is gone; the case says so both times.
    engine = CaseEngine(store, routing, Clock())
    devices = (DeviceInfo("gas-1", "gas_detector", "gas", True),)
    ev = AlarmEvent("gw:e1:7", "gas-1", "gas_concentration", "hi", Severity.HIGH,
                    AlarmState.ACTIVE_UNACKED, int(T0 * 1000), 30.0, 20, "gas high")  # fmt: skip
    t = int(T0 * 1000)
    for session, alarms in (("s2", (ev,)), ("s3", ())):
        birth = Birth("gw", session, 0, t, "1", "h", devices, alarms, 0, epoch="e1")
        store.write([Accepted(TopicParts("site", "gw", Kind.BIRTH), birth)], t)
        engine.process_pending()
    (case,) = store.cases()
    notes = [a.note for a in store.audit(case.case_no)]
    assert "alarm gw:e1:7: gas high (severity 2, value 30.0) (reconciled from birth)" in notes
    assert "alarm gw:e1:7 cleared (reconciled from birth)" in notes
    assert case.state is CaseState.DISPATCHED  # a cleared alarm is evidence, not 核查


def test_a_gas_alarm_on_a_device_id_another_cabinet_also_has_opens_its_own_case(
    store: Store, routing: Routing
) -> None:
    # gw and gw-2 both have a gas-1; only gw-2's is bound to an asset. Its leak is an 事件 at
    # that asset, for that gateway; gw's own gas-1 stays an asset-less 事件 case of its own.
    t = int(T0 * 1000)
    birth = Birth("gw-2", "s", 0, t, "1", "h", (DeviceInfo("gas-1", "gas_detector", "gas", True),))
    store.write([Accepted(TopicParts("site", "gw-2", Kind.BIRTH), birth)], t)
    store.upsert_assets([Asset(code="3101040111000001", owner="燃气公司", devices=("gw-2/gas-1",))])
    engine = CaseEngine(store, routing, Clock())
    ev = AlarmEvent("gw-2:e1:1", "gas-1", "gas_concentration", "hi", Severity.HIGH,
                    AlarmState.ACTIVE_UNACKED, t, 30.0, 20, "gas high")  # fmt: skip
    batch = AlarmBatch("gw-2", "s", 1, t, (ev,), epoch="e1")
    store.write([Accepted(TopicParts("site", "gw-2", Kind.ALARM), batch)], t)
    raise_alarm(store, "gas-1", "gas_concentration", "hi", AlarmState.ACTIVE_UNACKED, "gw:e1:1")
    engine.process_pending()
    cases = {c.gateway: c for c in store.cases()}
    assert (cases["gw-2"].kind, cases["gw-2"].asset, cases["gw-2"].device) == (
        "事件",
        "3101040111000001",
        "gas-1",
    )
    assert cases["gw-2"].department == "燃气公司"  # the well's owner
    assert (cases["gw"].kind, cases["gw"].asset) == ("事件", None)
    assert store.open_case_for("gw/gas-1", cases["gw"].problem) == cases["gw"]


def test_closing_while_active_then_acknowledging_opens_no_duplicate(
    store: Store, routing: Routing
) -> None:
    store.upsert_assets([WELL])
    engine = CaseEngine(store, routing, Clock())
    raise_alarm(store, "mh-1", "cover_open", "state", AlarmState.ACTIVE_UNACKED)
    engine.process_pending()
    (case,) = store.cases()
    for action in (Action.DISPATCH, Action.START, Action.FEEDBACK, Action.VERIFY):
        engine.act(case.case_no, action, "op", "井盖已复位")
    engine.act(case.case_no, Action.CLOSE, "监督员", closure=Closure.FALSE_ALARM)
    raise_alarm(store, "mh-1", "cover_open", "state", AlarmState.ACTIVE_ACKED)  # acknowledged
    engine.process_pending()
    (only,) = store.cases()
    assert (only.case_no, only.state, only.closure) == (case.case_no, CaseState.CLOSED, "误报")
    assert (only.check_result, only.disposal_note) == ("误报", "井盖已复位")


def test_rework_and_recurrence_over_the_store(store: Store, routing: Routing) -> None:
    clock = Clock()
    engine = CaseEngine(store, routing, clock)
    raise_alarm(store, "gas-1", "gas_concentration", "hi", AlarmState.ACTIVE_UNACKED, "gw:1")
    engine.process_pending()
    (case,) = store.cases()
    raise_alarm(store, "gas-1", "gas_concentration", "hi", AlarmState.CLEARED_UNACKED, "gw:1")
    engine.process_pending()
    for action in (Action.START, Action.FEEDBACK, Action.VERIFY):
        engine.act(case.case_no, action, "燃气抢修班", "已关阀")
    clock.now += H
    raise_alarm(
        store, "gas-1", "gas_concentration", "hi", AlarmState.ACTIVE_UNACKED, "gw:2", at=clock.now
    )
    engine.process_pending()
    back = store.case(case.case_no)
    assert back is not None
    assert (back.state, back.reworks, back.repeats) == (CaseState.HANDLING, 1, 1)
    raise_alarm(
        store, "gas-1", "gas_concentration", "hi", AlarmState.CLEARED_UNACKED, "gw:2", at=clock.now
    )
    engine.process_pending()
    engine.act(case.case_no, Action.FEEDBACK, "燃气抢修班", "更换管段")
    engine.act(case.case_no, Action.VERIFY, "受理员")
    photo = "https://photos.example.org/gas.jpg"
    engine.act(case.case_no, Action.CHECK, "监督员", "复测无泄漏", media_url=photo)
    engine.act(case.case_no, Action.CLOSE, "值班长", condition="泄漏点已修复，复测合格")
    done = store.case(case.case_no)  # the case record, as the store keeps it
    assert done is not None
    assert (done.register_condition, done.close_condition, done.disposal_note) == (
        conditions("事件", "0403")[0], "泄漏点已修复，复测合格", "更换管段",
    )  # fmt: skip
    assert (done.check_result, done.check_note, done.check_media_url, done.checked_by) == (
        "通过", "复测无泄漏", photo, "监督员",
    )  # fmt: skip
    assert done.checked_ms == int(clock.now * 1000)
    clock.now += 24 * H
    raise_alarm(
        store, "gas-1", "gas_concentration", "hi", AlarmState.ACTIVE_UNACKED, "gw:3", at=clock.now
    )
    engine.process_pending()
    new = store.open_case_for("gw/gas-1", "gas_leak")
    assert new is not None
    assert new.recurrence_of == case.case_no
    assert store.last_closed_case_for("gw/gas-1", "gas_leak") == store.case(case.case_no)
    assert [k.alarm_id for k in store.links(case.case_no)] == ["gw:1", "gw:2"]


def test_comm_loss_is_a_work_order_that_closes_when_the_device_recovers(
    store: Store, routing: Routing
) -> None:
    clock = Clock()
    engine = CaseEngine(store, routing, clock)
    raise_alarm(
        store, "lamp-1", "_device", "comm_loss", AlarmState.ACTIVE_UNACKED, severity=Severity.MEDIUM
    )
    engine.process_pending()
    (order,) = store.find_work_orders()
    assert (order.problem, order.state, order.urgency) == (
        "comm_loss",
        WorkOrderState.OPEN,
        "normal",
    )
    assert order.deadline_ms == int((T0 + 24 * H) * 1000)
    assert order.order_no == "YW310104202701150001"
    clock.now += 0.5 * H
    raise_alarm(store, "lamp-1", "_device", "comm_loss", AlarmState.CLEARED_UNACKED, at=clock.now)
    engine.process_pending()
    done = store.work_order(order.order_no)
    assert done is not None
    assert (done.state, done.closure) == (WorkOrderState.DONE, "自动恢复")
    assert [a.action for a in store.work_order_audit(order.order_no)] == [
        "open",
        "alarm_cleared",
        "auto_close",
    ]
    assert store.cases() == []


def test_a_birth_restating_the_alarm_of_a_closed_case_opens_no_duplicate(
    store: Store, routing: Routing
) -> None:
    # The same kind as close-then-acknowledge: the gateway's birth states the alarm (acked at
    # the edge meanwhile) after its case was closed; it is the same occurrence.
    store.upsert_assets([WELL])
    engine = CaseEngine(store, routing, Clock())
    raise_alarm(store, "mh-1", "cover_open", "state", AlarmState.ACTIVE_UNACKED, "gw:e1:5")
    engine.process_pending()
    (case,) = store.cases()
    for action in (Action.DISPATCH, Action.START, Action.FEEDBACK, Action.VERIFY):
        engine.act(case.case_no, action, "op", "井盖已复位")
    engine.act(case.case_no, Action.CHECK, "监督员", "井盖平稳")
    engine.act(case.case_no, Action.CLOSE, "值班长")
    t = int(T0 * 1000)
    acked = AlarmEvent(
        "gw:e1:5", "mh-1", "cover_open", "state", Severity.HIGH, AlarmState.ACTIVE_ACKED, t, True
    )
    devices = (DeviceInfo("mh-1", "manhole_cover", "manhole", True),)
    birth = Birth("gw", "s9", 0, t + 1, "1", "h", devices, (acked,), next(seq), epoch="e1")
    store.write([Accepted(TopicParts("site", "gw", Kind.BIRTH), birth)], t + 1)
    assert engine.process_pending() == 1
    assert [c.case_no for c in store.cases()] == [case.case_no]


def test_migration_17_says_who_received_the_cases_of_older_versions(store: Store) -> None:
    # Cases as version 16 left them: no receipt. A sensor's case was received by the system as
    # it opened, a case past 受理 by whoever did its 立案, and a report still in 受理 waits in
    # the 受理 stage (its running phase was the 立案 stage's).
    t = int(T0 * 1000)
    for no, source, state in [
        ("C-IOT", "物联网感知", CaseState.REGISTERED),
        ("C-DONE", "公众", CaseState.REGISTERED),
        ("C-WAIT", "公众", CaseState.REPORTED),
    ]:
        case, audits = open_case(
            case_no=no, kind="事件", subcategory="0406", problem=no, asset=None, device=None,
            urgency="normal", department="排水", grid=None, allowed_ms=None,
            auto_register=False, actor="app", now_ms=t, source=source,
        )  # fmt: skip
        if state is CaseState.REGISTERED:
            audits.append(Audit(no, t + 60_000, "lead-1", "accept", "受理", "立案"))
            audits.append(Audit(no, t + 120_000, "lead-2", "accept", "受理", "立案"))
        phase = Phase(no, 1, "立案", "排水", t, None)
        store.save_case(changed(case, state=state), audits, expect_state=None, phases=[phase])
    assert isinstance(store, SqlStore)
    dialect = "postgres" if isinstance(store, PostgresStore) else "sqlite"
    with store._tx() as cur:  # replays the migration's data steps
        cur.execute("UPDATE cases SET received_by = NULL, received_ms = NULL")
        for stmt in case_record_statements(dialect):
            if stmt.startswith("UPDATE"):
                cur.execute(stmt)
    got = {no: store.case(no) for no in ("C-IOT", "C-DONE", "C-WAIT")}
    assert {no: (c.received_by, c.received_ms) for no, c in got.items() if c} == {
        "C-IOT": ("system", t),
        "C-DONE": ("lead-1", t + 60_000),
        "C-WAIT": (None, None),
    }
    assert [p.stage for p in store.phases("C-WAIT")] == ["受理"]
    assert [p.stage for p in store.phases("C-DONE")] == ["立案"]


def _at_once(n: int, work: Callable[[int], object]) -> list[object]:
    """Run work(0..n-1) on n threads released together; each result, or the exception raised."""
    gate = threading.Barrier(n)

    def run(i: int) -> object:
        gate.wait()
        try:
            return work(i)
        except (ValueError, Conflict) as exc:  # IllegalTransition is a ValueError
            return exc

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def test_actions_at_once_on_one_case_lose_no_update(store: Store, routing: Routing) -> None:
    # Review 2 item 1: each writer read the case, changed it and saved it over whatever another
    # writer had saved meanwhile in the same state (10 escalates left escalations = 7).
    n = 10
    store.upsert_assets([WELL])
    engine = CaseEngine(store, routing, Clock())
    raise_alarm(store, "mh-1", "cover_open", "state", AlarmState.ACTIVE_UNACKED)
    engine.process_pending()
    (case,) = store.cases()
    no = engine.act(case.case_no, Action.DISPATCH, "派遣员").case_no
    due = store.phases(no)[-1].due_ms
    assert due is not None

    results = _at_once(n, lambda i: engine.act(no, Action.ESCALATE, f"值班长{i}"))
    assert not [r for r in results if isinstance(r, Exception)]
    assert stored(store, no).escalations == n
    notes = sorted(a.note for a in store.audit(no) if a.action == "escalate")
    assert notes == sorted(f"督办 第{k}次" for k in range(1, n + 1))

    def application(i: int) -> object:
        return engine.act(no, Action.APPLY, f"燃气公司{i}", request="extend", extend_hours=1)

    results = _at_once(n, application)
    (applied,) = [r for r in results if not isinstance(r, Exception)]
    assert all("already has an application" in str(r) for r in results if r is not applied)
    assert [a.action for a in store.audit(no)].count("apply") == 1
    assert stored(store, no) == applied
    assert (stored(store, no).pending, stored(store, no).pending_hours) == ("extend", 1)

    results = _at_once(n, lambda i: engine.act(no, Action.APPROVE, f"派遣员{i}"))
    (approved,) = [r for r in results if not isinstance(r, Exception)]
    assert all("no application" in str(r) for r in results if r is not approved)
    dispose = store.phases(no)[-1]
    assert (dispose.stage, dispose.extended, dispose.due_ms) == ("处置", 1, due + int(H * 1000))

    # An approve racing escalates: its 延时 and every 督办 stay.
    engine.act(no, Action.APPLY, "燃气公司", request="extend", extend_hours=1)

    def mixed(i: int) -> object:
        if i == 0:
            return engine.act(no, Action.APPROVE, "派遣员")
        return engine.act(no, Action.ESCALATE, f"值班长{i}")

    results = _at_once(n, mixed)
    assert not [r for r in results if isinstance(r, Exception)]
    dispose = store.phases(no)[-1]
    assert (dispose.extended, dispose.due_ms) == (2, due + int(2 * H * 1000))
    assert stored(store, no).escalations == 2 * n - 1
    assert stored(store, no).pending is None


def test_the_systems_writers_lose_no_update_to_an_operator_in_between(
    store: Store, routing: Routing, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The 督办 run and an alarm's 升级 read the case, then saved over a person's 督办 made
    # between their read and their save (same state): that 督办 was lost.
    store.upsert_assets([WELL])
    clock = Clock()
    engine = CaseEngine(store, routing, clock)
    raise_alarm(store, "mh-1", "cover_open", "state", AlarmState.ACTIVE_UNACKED)
    engine.process_pending()  # 立案 at once: the 派遣 stage, urgent: 30 minutes
    (case,) = store.cases()
    no = case.case_no
    real = store.phases
    between: list[Callable[[], object]] = []

    def phases(case_no: str) -> list[Phase]:
        if between:  # the system has read the case; a 值班长 saves it before the system does
            between.pop()()
        return real(case_no)

    monkeypatch.setattr(store, "phases", phases)

    def escalations_kept() -> None:
        notes = [a.note for a in store.audit(no) if a.action == "escalate"]
        levels = [note.split(":")[0] for note in notes]
        assert len(set(levels)) == len(levels) == stored(store, no).escalations

    clock.now += 0.6 * H
    between.append(lambda: engine.act(no, Action.ESCALATE, "值班长"))
    assert engine.escalate_overdue() == []  # lost the race: the next run looks again
    engine.escalate_overdue()
    escalations_kept()

    between.append(lambda: engine.act(no, Action.ESCALATE, "值班长"))
    raise_alarm(
        store, "mh-1", "cover_open", "state", AlarmState.ACTIVE_UNACKED, "gw:2", Severity.CRITICAL
    )
    assert engine.process_pending() == 0  # lost the race: the next pass takes it up
    assert engine.process_pending() == 1
    escalations_kept()
    assert (stored(store, no).repeats, stored(store, no).severity) == (1, Severity.CRITICAL)


def stored(store: Store, case_no: str) -> Case:
    """The case as the store has it now."""
    case = store.case(case_no)
    assert case is not None
    return case
