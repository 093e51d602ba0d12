"""The case engine over a real (SQLite) store with an injected clock."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.assets import Asset
from collector.cases.engine import CaseEngine
from collector.cases.routing import Routing, default_routing_path, load_routing
from collector.cases.workflow import Action, CaseState
from collector.models import Accepted
from collector.store import Store, open_store
from wire import AlarmBatch, AlarmEvent, AlarmState, Birth, DeviceInfo, Kind, Severity, TopicParts

pytestmark = pytest.mark.integration

T0 = 1_800_000_000.0  # seconds: 2027-01-15 08:00 UTC = 16:00 in Shanghai
H = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path}/cases.db")
    s.migrate()
    devices = (
        DeviceInfo("gas-1", "gas_detector", "gas", True),
        DeviceInfo("mh-1", "manhole_cover", "manhole", True),
        DeviceInfo("lamp-1", "streetlight", "streetlight", True),
    )
    birth = Birth("gw", "s", 0, int(T0 * 1000), "1", "h", devices)
    s.write([Accepted(TopicParts("site", "gw", Kind.BIRTH), birth)], int(T0 * 1000))
    yield s
    s.close()


@pytest.fixture
def routing() -> Routing:
    return load_routing(default_routing_path())


seq = iter(range(1, 1_000_000))


def raise_alarm(
    store: Store, device: str, point: str, kind: str, state: AlarmState, aid: str = "gw:1"
) -> None:
    ev = AlarmEvent(aid, device, point, kind, Severity.HIGH, state, int(T0 * 1000), 1.0)
    batch = AlarmBatch("gw", "s", next(seq), int(T0 * 1000), (ev,), epoch="e1")
    store.write([Accepted(TopicParts("site", "gw", Kind.ALARM), batch)], int(T0 * 1000))


def test_assetless_gas_leak_becomes_an_event_case_for_the_default_department(
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
    assert case.case_no == "310104202701150001"  # area + local date + serial
    assert store.pending_alarm_transitions() == []


def test_waiting_for_acceptance_then_operator_flow(store: Store, routing: Routing) -> None:
    engine = CaseEngine(store, routing, Clock())
    raise_alarm(store, "mh-1", "water_level", "hi", AlarmState.ACTIVE_UNACKED)
    engine.process_pending()
    (case,) = store.cases()
    assert (case.state, case.subcategory) == (CaseState.REPORTED, "0404")
    case = engine.act(case.case_no, Action.ACCEPT, "值班员")
    assert case.state is CaseState.REGISTERED


def test_unrouted_alarms_make_no_case(store: Store, routing: Routing) -> None:
    engine = CaseEngine(store, routing, Clock())
    raise_alarm(store, "mh-1", "battery", "lo", AlarmState.ACTIVE_UNACKED)
    assert engine.process_pending() == 1
    assert store.cases() == []
    assert store.pending_alarm_transitions() == []


def test_overdue_case_raises_one_escalation(store: Store, routing: Routing) -> None:
    store.upsert_assets([Asset(code="3101040111000001", owner="燃气公司", devices=("gas-1",))])
    clock = Clock()
    engine = CaseEngine(store, routing, clock)
    raise_alarm(store, "gas-1", "gas_concentration", "hi", AlarmState.ACTIVE_UNACKED)
    engine.process_pending()
    clock.now += 1.9 * H
    assert engine.escalate_overdue() == []
    clock.now += 0.2 * H  # past the 2 h of an urgent 0111 case
    (no,) = engine.escalate_overdue()
    assert engine.escalate_overdue() == []
    assert [a.action for a in store.audit(no)][-1] == "escalate"
    assert store.audit(no)[-1].note == "overdue: 督办"


def test_auto_close_when_configured(store: Store, routing: Routing) -> None:
    store.upsert_assets([Asset(code="3101040111000001", owner="燃气公司", devices=("gas-1",))])
    engine = CaseEngine(store, routing.model_copy(update={"auto_close": True}), Clock())
    raise_alarm(store, "gas-1", "gas_concentration", "hi", AlarmState.ACTIVE_UNACKED)
    raise_alarm(store, "gas-1", "gas_concentration", "hi", AlarmState.CLEARED_UNACKED)
    engine.process_pending()
    (case,) = store.cases()
    assert case.state is CaseState.CLOSED
    assert [a.to_state for a in store.audit(case.case_no)][-2:] == ["核查", "结案"]
    # The next leak opens a new case: the closed one is finished.
    raise_alarm(store, "gas-1", "gas_concentration", "hi", AlarmState.ACTIVE_UNACKED, "gw:9")
    engine.process_pending()
    assert len(store.cases(open_only=True)) == 1
    assert len(store.cases()) == 2


def test_alarms_from_a_birth_picture_open_and_clear_cases_with_a_note(
    store: Store, routing: Routing
) -> None:
    # A collector that missed the leak learns it from the gateway's birth, and later learns
    # from the next birth that it is gone; the case says so both times.
    store.upsert_assets([Asset(code="3101040111000001", owner="燃气公司", devices=("gas-1",))])
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
    assert "alarm gw:e1:7: gas high (value 30.0) (reconciled from birth)" in notes
    assert "alarm gw:e1:7 cleared (reconciled from birth)" in notes
    assert case.state is CaseState.VERIFYING


def test_a_gas_alarm_on_a_device_id_another_cabinet_also_has_opens_its_own_case(
    store: Store, routing: Routing
) -> None:
    # gw and gw-2 both have a gas-1; only gw-2's is bound to the asset. Its leak opens a case on
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
        "部件",
        "3101040111000001",
        "gas-1",
    )
    assert (cases["gw"].kind, cases["gw"].asset) == ("事件", None)
    assert store.open_case_for("gw/gas-1", cases["gw"].problem) == cases["gw"]
