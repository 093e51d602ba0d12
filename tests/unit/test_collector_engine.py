"""The case engine on plain values: an in-memory store (tests.fakes) and an injected clock.

Lifecycle truth (issue 14): escalation on a more severe alarm, recurrence (rework in 核查, a new
linked case after 结案), a cleared alarm as evidence only, closure types, 改派, unrouted alarms,
device work orders, and an alarm occurrence belonging to one case.
"""

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from lifeline.collector.assets import Asset
from lifeline.collector.cases.engine import CaseEngine, ReportReused
from lifeline.collector.cases.phases import Phase
from lifeline.collector.cases.routing import Routing, default_routing_path, load_routing
from lifeline.collector.cases.workflow import (
    Action,
    Audit,
    Case,
    CaseState,
    Closure,
    IllegalTransition,
    Place,
)
from lifeline.collector.cases.workorders import WorkOrderAction, WorkOrderState
from lifeline.collector.errors import Conflict
from lifeline.collector.models import (
    AlarmLink,
    AlarmTransition,
    ApiKey,
    DeviceState,
    ReportClaim,
    Role,
    Status,
)
from lifeline.wire import Location
from lifeline.wire.messages import Value
from tests.fakes import FakeCaseStore

pytestmark = pytest.mark.unit

H = 3600.0
T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC: 16:00 in Hangzhou
GW = "gw-demo"
WELL = Asset(
    code="3301060111000101", owner="杭州市燃气集团", maintainer="燃气运维站",
    grid="33010600100101", address="文三路东1号", lon=120.14, lat=30.27, devices=("mh-e01",),
)  # fmt: skip
BRIDGE = Asset(code="3301060208000101", owner="西湖区城市管理局", lon=120.145, lat=30.276)
LAMP = Asset(code="3301060118000102", owner="城管局", maintainer="路灯所", address="文三路东段")
POLE = Asset(code="3301060117000201", owner="城管局", maintainer="市政养护中心")
ON = Status.ONLINE
DEVICES = {
    "mh-e01": DeviceState("mh-e01", GW, "manhole_cover", "manhole", WELL.code, ON, 0, ""),
    "gas-e01": DeviceState(
        "gas-e01", GW, "gas_detector", "gas", None, Status.ONLINE, 0, "",
        Location(120.141, 30.2772, "CGCS2000", "文三路东侧机柜"),
    ),
    "tilt-b01": DeviceState("tilt-b01", GW, "tilt_sensor", "tilt", BRIDGE.code, ON, 0, ""),
    "sl-e02": DeviceState("sl-e02", GW, "streetlight", "streetlight", LAMP.code, ON, 0, ""),
    "x-9": DeviceState("x-9", GW, "gas_detector", "gas", None, Status.ONLINE, 0, ""),
    "tilt-w01": DeviceState("tilt-w01", GW, "tilt_sensor", "tilt", POLE.code, ON, 0, ""),
}  # fmt: skip
ACTIVE, ACKED, CLEARED = "active_unacked", "active_acked", "cleared_unacked"
# The registry: the shipped table's departments (registered at start) and these assets' owners.
REGISTRY = {
    **load_routing(default_routing_path()).departments,
    "gas-ops": "燃气运维站", "cgj": "城管局", "lamps": "路灯所", "upkeep": "市政养护中心",
}  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class District:
    """An engine over the fake store that raises alarms as a gateway would."""

    def __init__(self, **routing: object) -> None:
        base = load_routing(default_routing_path())
        self.routing: Routing = base.model_copy(update={"district": "330106", **routing})
        self.store = FakeCaseStore(
            list(DEVICES.values()), [WELL, BRIDGE, LAMP, POLE], registry=dict(REGISTRY)
        )
        self.clock = Clock()
        self.engine = CaseEngine(self.store, self.routing, self.clock)
        self._ids = iter(range(1, 1_000_000))

    def alarm(
        self,
        aid: str,
        device: str,
        point: str,
        kind: str,
        severity: int,
        state: str = ACTIVE,
        value: Value = 1.0,
        limit: Value = None,
        message: str = "",
    ) -> None:
        """One alarm transition stored and handed to the engine at the clock's time."""
        ts = int(self.clock.now * 1000)
        t = AlarmTransition(
            next(self._ids), GW, device, point, kind, f"{GW}:e1:{aid}", severity, state, ts,
            value, message, "gateway", limit,
        )  # fmt: skip
        self.store.pending.append(t)
        self.engine.process_pending()

    def later(self, hours: float) -> None:
        self.clock.now += hours * H

    def case(self) -> Case:
        (case,) = list(self.store.cases_.values())
        return case

    def actions(self, number: str) -> list[str]:
        return [a.action for a in self.store.audits[number]]


def test_methane_in_a_well_is_an_event_case_at_the_well_with_the_detectors_deadline() -> None:
    d = District()
    d.alarm("1", "mh-e01", "ch4", "hi", 2, value=22.5, limit=20, message="methane 一级报警")
    case = d.case()
    assert (case.kind, case.subcategory, case.asset, case.problem) == (
        "事件",
        "0403",
        WELL.code,
        "gas_leak",
    )
    assert (case.state, case.department, case.urgency) == (
        CaseState.DISPATCHED,
        "杭州市燃气集团",
        "urgent",
    )
    assert case.deadline_ms == int((T0 + H) * 1000)  # 0403 urgent: 1 h, as a detector's leak
    assert case.location.source == "asset"
    assert case.location.address == "文三路东1号"
    assert case.case_no == "330106202701150001"  # the well's area, never 310104
    (link,) = d.store.links(case.case_no)
    assert (link.alarm_id, link.value, link.limit, link.unit, link.raised_ms) == (
        f"{GW}:e1:1",
        22.5,
        20,
        "%LEL",
        int(T0 * 1000),
    )


def test_a_detector_on_no_asset_is_located_at_its_own_install_location() -> None:
    d = District()
    d.alarm("1", "gas-e01", "gas_concentration", "hi", 2)
    case = d.case()
    assert (case.kind, case.asset, case.location.source) == ("事件", None, "device")
    assert (case.location.lon, case.location.lat, case.location.address) == (
        120.141,
        30.2772,
        "文三路东侧机柜",
    )
    assert case.case_no.startswith("330106")  # the configured district


@pytest.mark.parametrize(
    ("first", "second", "hours_between", "urgency", "deadline_h", "upgraded"),
    [
        # gas first stage (severity 2) then second stage (1): already urgent, severity only
        (2, 1, 0.5, "urgent", 1, True),
        # roc (3, normal 8 h) then a limit alarm (2, urgent 1 h) two hours later: from now
        (3, 2, 2, "urgent", 3, True),
        # a less severe alarm never lowers anything
        (1, 3, 0.5, "urgent", 1, False),
    ],
)
def test_a_more_severe_alarm_upgrades_and_shortens_never_lengthens(
    first: int, second: int, hours_between: float, urgency: str, deadline_h: float, upgraded: bool
) -> None:
    d = District()
    d.alarm("1", "gas-e01", "gas_concentration", "roc" if first == 3 else "hi", first)
    d.later(hours_between)
    d.alarm("2", "gas-e01", "gas_concentration", "hihi", second)
    case = d.case()
    assert (case.severity, case.urgency, case.repeats) == (min(first, second), urgency, 1)
    assert case.deadline_ms == int((T0 + deadline_h * H) * 1000)
    assert ("upgrade" in d.actions(case.case_no)) is upgraded
    assert len(d.store.links(case.case_no)) == 2


def test_the_leak_back_while_in_verification_sends_the_case_back_to_handling() -> None:
    d = District()
    d.alarm("1", "gas-e01", "gas_concentration", "hi", 2)
    no = d.case().case_no
    d.later(0.2)
    d.alarm("1", "gas-e01", "gas_concentration", "hi", 2, state=CLEARED)
    assert d.case().state is CaseState.DISPATCHED  # a cleared alarm is evidence, not 核查
    for action in (Action.START, Action.FEEDBACK, Action.VERIFY):
        d.engine.act(no, action, "燃气抢修班", "已处置")
    assert d.case().state is CaseState.VERIFYING
    d.later(1)
    d.alarm("7", "gas-e01", "gas_concentration", "hi", 2)  # the leak is back
    case = d.case()
    assert (case.state, case.reworks) == (CaseState.HANDLING, 1)
    assert case.deadline_ms == int((T0 + 2.2 * H) * 1000)  # a new 处置 round of 1 h
    assert d.actions(no)[-2:] == ["attach", "rework"]


def test_the_leak_back_within_the_window_after_closure_opens_a_linked_case() -> None:
    d = District()
    d.alarm("1", "gas-e01", "gas_concentration", "hi", 2)
    first = d.case().case_no
    d.alarm("1", "gas-e01", "gas_concentration", "hi", 2, state=CLEARED)
    for action in (Action.START, Action.FEEDBACK, Action.VERIFY, Action.CHECK, Action.CLOSE):
        d.engine.act(first, action, "op", "已处置")
    d.later(71)
    d.alarm("2", "gas-e01", "gas_concentration", "hi", 2)
    (new,) = [c for c in d.store.cases_.values() if c.case_no != first]
    assert (new.recurrence_of, new.state) == (first, CaseState.DISPATCHED)
    assert "反复发生" in d.store.audits[new.case_no][0].note
    d.engine.act(new.case_no, Action.START, "op")
    for action in (Action.FEEDBACK, Action.VERIFY, Action.CHECK, Action.CLOSE):
        d.engine.act(new.case_no, action, "op", "已处置")
    d.later(73)  # beyond the 72 h window: a case of its own
    d.alarm("3", "gas-e01", "gas_concentration", "hi", 2)
    (third,) = [c for c in d.store.cases_.values() if c.case_no not in (first, new.case_no)]
    assert third.recurrence_of is None


def test_the_recurrence_window_is_configured() -> None:
    d = District(recurrence_window_h=1)
    d.alarm("1", "gas-e01", "gas_concentration", "hi", 2)
    first = d.case().case_no
    for action in (Action.START, Action.FEEDBACK, Action.VERIFY, Action.CHECK, Action.CLOSE):
        d.engine.act(first, action, "op", "已处置")
    d.later(2)
    d.alarm("2", "gas-e01", "gas_concentration", "hi", 2)
    assert all(c.recurrence_of is None for c in d.store.cases_.values())


@pytest.mark.parametrize(
    ("auto_close", "auto_register", "expected_state", "closure"),
    [
        (False, True, CaseState.REGISTERED, None),  # evidence only
        (True, True, CaseState.CLOSED, "自动恢复"),  # before 派遣, configured
        (True, False, CaseState.CLOSED, "自动恢复"),  # still in 受理
    ],
)
def test_automatic_closing_only_before_dispatch_and_only_by_configuration(
    auto_close: bool, auto_register: bool, expected_state: CaseState, closure: str | None
) -> None:
    d = District(auto_close=auto_close)
    if not auto_register:
        d.alarm("1", "mh-e01", "water_level", "hi", 3)  # flooding waits in 受理
    else:
        d.alarm("1", "mh-e01", "cover_open", "state", 2)  # 立案 at once, not dispatched
    kind = "water_level" if not auto_register else "cover_open"
    d.later(0.1)
    d.alarm("1", "mh-e01", kind, "hi" if not auto_register else "state", 2, state=CLEARED)
    case = d.case()
    assert (case.state, case.closure) == (expected_state, closure)
    assert "alarm_cleared" in d.actions(case.case_no)


def test_a_dispatched_case_is_never_closed_by_its_alarm_clearing() -> None:
    d = District(auto_close=True)
    d.alarm("1", "gas-e01", "gas_concentration", "hi", 2)  # auto-派遣
    d.alarm("1", "gas-e01", "gas_concentration", "hi", 2, state=CLEARED)
    d.alarm("1", "gas-e01", "gas_concentration", "hi", 2, state="normal")
    case = d.case()
    assert case.state is CaseState.DISPATCHED  # the department's 反馈 is still due
    assert d.actions(case.case_no).count("alarm_cleared") == 1
    assert d.store.links(case.case_no)[0].cleared_ms == int(T0 * 1000)


def test_closing_while_the_alarm_is_active_then_acknowledging_opens_no_duplicate() -> None:
    d = District()
    d.alarm("1", "mh-e01", "cover_open", "state", 2)
    no = d.case().case_no
    d.engine.act(no, Action.DISPATCH, "派遣员")
    for action in (Action.START, Action.FEEDBACK, Action.VERIFY, Action.CHECK):
        d.engine.act(no, action, "op", "已处置")
    d.engine.act(no, Action.CLOSE, "值班长", "井盖已复位，传感器待校准", closure=Closure.DONE)
    d.alarm("1", "mh-e01", "cover_open", "state", 2, state=ACKED)  # the same occurrence
    assert [c.case_no for c in d.store.cases_.values()] == [no]
    assert d.case().closure == "处置完成"


def test_a_cleared_alarm_is_not_an_action_a_key_may_post() -> None:
    d = District()
    d.alarm("1", "mh-e01", "cover_open", "state", 2)
    no = d.case().case_no
    for system in (Action.UPGRADE, Action.REWORK, Action.AUTO_CLOSE):
        with pytest.raises(ValueError, match="system only"):
            d.engine.act(no, system, "派遣员")
    with pytest.raises(IllegalTransition):
        d.engine.act(no, Action.CLOSE, "派遣员")  # 立案 -> 结案 is no step a person takes
    assert d.case().state is CaseState.REGISTERED


def test_a_returned_case_is_redispatched_to_a_named_department() -> None:
    d = District()
    d.alarm("1", "mh-e01", "cover_open", "state", 2)
    no = d.case().case_no
    d.engine.act(no, Action.DISPATCH, "派遣员", department="燃气运维站", assist=["交警大队"])
    d.engine.act(no, Action.RETURN, "燃气运维站", "井盖属雨水管网")
    with pytest.raises(ValueError, match="改派"):
        d.engine.act(no, Action.DISPATCH, "派遣员")
    case = d.engine.act(no, Action.DISPATCH, "派遣员", department="排水公司")
    assert (case.state, case.department, case.assist, case.returns) == (
        CaseState.DISPATCHED,
        "排水公司",
        (),
        1,
    )
    notes = [a.note for a in d.store.audits[no] if a.action == "dispatch"]
    assert notes == ["派遣 主办 燃气运维站, 协办 交警大队", "改派 主办 燃气运维站 → 排水公司"]


def test_an_unrouted_alarm_of_severity_two_waits_in_reception_to_be_classified() -> None:
    d = District()
    d.alarm("1", "x-9", "temperature", "hi", 2, message="cabinet hot")
    case = d.case()
    assert (case.kind, case.state, case.title, case.department) == (
        "未分类",
        CaseState.REPORTED,
        "未分类物联感知告警",
        "区城市运行管理中心",
    )
    # Waiting in 受理 runs the 立案 stage's clock (urgent: 30 natural minutes), with no 处置
    # limit known until it is classified.
    assert (case.deadline_ms, case.allowed_ms) == (int((T0 + H / 2) * 1000), None)
    accepted = d.engine.act(case.case_no, Action.ACCEPT, "受理员", kind="事件", subcategory="0499")
    assert (accepted.kind, accepted.subcategory, accepted.state) == (
        "事件",
        "0499",
        CaseState.REGISTERED,
    )
    assert accepted.deadline_ms == int((T0 + H / 2) * 1000)  # the 派遣 stage's 30 minutes
    d.later(3)
    sent = d.engine.act(case.case_no, Action.DISPATCH, "派遣员")
    # The 处置 clock starts at 派遣, not at 立案 (it ran from 立案 before issue 19).
    assert sent.deadline_ms == int((T0 + 5 * H) * 1000)  # 0499 urgent: 2 h from 派遣
    assert [p.stage for p in d.store.phases(case.case_no)] == ["立案", "派遣", "处置"]


def test_unrouted_and_ignored_alarms_say_where_they_ended() -> None:
    d = District()
    d.alarm("1", "x-9", "temperature", "hi", 3)  # severity 3, no route: recorded
    d.alarm("2", "tilt-w01", "vibration", "hi", 3)  # a pole's vibration: ignored, and why
    d.alarm("3", "tilt-b01", "vibration", "hi", 3)  # a bridge's vibration: an 事件
    recorded, ignored = d.store.link(f"{GW}:e1:1"), d.store.link(f"{GW}:e1:2")
    assert recorded is not None
    assert recorded.outcome == "recorded"
    assert "no route" in recorded.reason
    assert recorded.ref is None
    assert ignored is not None
    assert ignored.outcome == "ignored"
    assert "vibration of a pole" in ignored.reason
    assert [(c.kind, c.problem) for c in d.store.cases_.values()] == [
        ("事件", "structural_movement")
    ]
    d.alarm("1", "x-9", "temperature", "hi", 3, state=CLEARED)
    assert d.store.link(f"{GW}:e1:1").cleared_ms is not None  # type: ignore[union-attr]
    assert d.store.pending_alarm_transitions() == []


def test_an_alarm_back_under_the_same_id_is_a_new_occurrence() -> None:
    # ISA-18.2: an alarm that cleared unacknowledged and comes back keeps its id. The demo's
    # returning leak did exactly that and was taken for a repeat of the cleared transition.
    d = District()
    d.alarm("1", "gas-e01", "gas_concentration", "hi", 2)
    no = d.case().case_no
    d.alarm("1", "gas-e01", "gas_concentration", "hi", 2, state=CLEARED)
    for action in (Action.START, Action.FEEDBACK, Action.VERIFY):
        d.engine.act(no, action, "op", "已处置")
    d.later(0.5)
    d.alarm("1", "gas-e01", "gas_concentration", "hi", 2)  # back, same id
    case = d.case()
    assert (case.state, case.reworks, case.repeats) == (CaseState.HANDLING, 1, 1)
    back = d.store.link(f"{GW}:e1:1")
    assert back is not None
    assert (back.activation, back.cleared_ms, back.ref) == (1, None, no)
    d.alarm("1", "gas-e01", "gas_concentration", "hi", 2, state=ACKED)  # the return, acked
    assert d.case().repeats == 1
    assert d.store.pending_alarm_transitions() == []


def test_device_health_becomes_a_work_order_not_a_case() -> None:
    d = District()
    d.alarm("1", "sl-e02", "_device", "comm_loss", 3, value=None)
    assert d.store.cases_ == {}
    (order,) = d.store.orders.values()
    assert (order.problem, order.state, order.department, order.asset) == (
        "comm_loss",
        WorkOrderState.OPEN,
        "物联感知设备运维单位",
        LAMP.code,
    )
    assert order.order_no == "YW330106202701150001"
    assert order.deadline_ms == int((T0 + 24 * H) * 1000)  # comm_loss, normal: 24 h
    d.later(0.5)
    d.alarm("1", "sl-e02", "_device", "comm_loss", 3, state=CLEARED)
    order = d.store.orders[order.order_no]
    assert (order.state, order.closure) == (WorkOrderState.DONE, "自动恢复")


def test_a_work_order_taken_by_its_maintainer_waits_for_completion() -> None:
    d = District()
    d.alarm("1", "mh-e01", "battery", "lo", 4, value=12)
    (order,) = d.store.orders.values()
    d.engine.act_on_work_order(order.order_no, WorkOrderAction.ACCEPT, "运维张工")
    d.alarm("1", "mh-e01", "battery", "lo", 4, state=CLEARED)
    assert d.store.orders[order.order_no].state is WorkOrderState.ACCEPTED
    done = d.engine.act_on_work_order(
        order.order_no, WorkOrderAction.COMPLETE, "运维张工", "已更换电池", Closure.DONE
    )
    assert (done.state, done.closure) == (WorkOrderState.DONE, "处置完成")
    d.later(2)
    d.alarm("2", "mh-e01", "battery", "lo", 4)  # back within 72 h: a new, linked order
    (again,) = [o for o in d.store.orders.values() if o.order_no != order.order_no]
    assert again.recurrence_of == order.order_no


class RacingStore(FakeCaseStore):
    """A store where another collector saves a case first, once."""

    raced = False

    def save_case(
        self,
        case: Case,
        audits: Sequence[Audit],
        *,
        expect_state: str | None,
        transition_ids: Sequence[int] = (),
        links: Sequence[AlarmLink] = (),
        cleared: Sequence[tuple[str, int]] = (),
        phases: Sequence[Phase] = (),
        claims: Sequence[ReportClaim] = (),
    ) -> None:
        if not self.raced:
            self.raced = True
            raise Conflict(f"case {case.case_no} is no longer in state 立案")
        super().save_case(
            case,
            audits,
            expect_state=expect_state,
            transition_ids=transition_ids,
            links=links,
            cleared=cleared,
            phases=phases,
            claims=claims,
        )


def test_the_engine_stops_a_pass_at_a_conflict_and_takes_it_up_again() -> None:
    d = District()
    d.store = RacingStore(d.store.known_devices, d.store.known_assets)
    d.engine = CaseEngine(d.store, d.routing, d.clock)
    d.alarm("1", "gas-e01", "gas_concentration", "hi", 2)
    assert d.store.cases_ == {}
    assert len(d.store.pending_alarm_transitions()) == 1
    assert d.engine.process_pending() == 1
    assert d.case().problem == "gas_leak"
    assert d.store.pending_alarm_transitions() == []


def test_an_owner_the_registry_does_not_hold_is_passed_over_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Reproduced on main (review of issue 19, item 2): the case went to whatever name the asset
    # file gave, registered or not, and nothing said so.
    d = District()
    del d.store.registry["hz-gas"]  # the well's owner, 杭州市燃气集团, is not registered
    with caplog.at_level(logging.WARNING, logger="lifeline.collector.cases.engine"):
        d.alarm("1", "mh-e01", "ch4", "hi", 2, value=22.5, limit=20)
        d.alarm("2", "mh-e01", "ch4", "hihi", 1, value=40.0, limit=25)  # decided again
    assert d.case().department == "区城市运行管理中心"  # 后属地: no grid here, so the default
    assert d.engine.unregistered_total == 2
    said = [r.getMessage() for r in caplog.records if "杭州市燃气集团" in r.getMessage()]
    assert len(said) == 1
    assert "is not in the department registry; routed to 区城市运行管理中心" in said[0]


def test_a_department_renamed_in_the_registry_gets_its_cases_under_its_new_name() -> None:
    # Reproduced on main: after `departments rename`, auto-派遣 still used the asset file's name.
    d = District()
    d.store.registry["hz-gas"] = "杭州燃气集团有限公司"
    d.alarm("1", "mh-e01", "ch4", "hi", 2, value=22.5, limit=20)
    case = d.case()
    assert (case.state, case.department) == (CaseState.DISPATCHED, "杭州燃气集团有限公司")
    assert d.engine.unregistered_total == 0


class RetriedStore(FakeCaseStore):
    """A store where a retry of the same report (another request, same id) saves first, once."""

    def save_case(self, case: Case, audits: Sequence[Audit], **kw: Any) -> None:
        if kw.get("claims") and not self.cases_:
            super().save_case(replace(case, case_no="FIRST"), audits, **kw)
        super().save_case(case, audits, **kw)


def test_a_report_racing_its_own_retry_answers_the_case_the_retry_stored() -> None:
    d = District()
    d.store = RetriedStore()
    d.engine = CaseEngine(d.store, d.routing, d.clock)
    key = ApiKey(7, "城管通-7", Role.INSPECTOR, "llk_x", 0, None)
    report: dict[str, Any] = {
        "kind": "事件", "subcategory": "0403", "description": "燃气味", "key": key,
        "place": Place(address="文三路 1 号"), "media_url": "", "contact": "", "source": "监督员",
    }  # fmt: skip
    claim = ReportClaim("key:7", "r-1", "fp")
    case, new = d.engine.report(**report, claims=[claim])
    assert (case.case_no, new) == ("FIRST", False)
    assert list(d.store.cases_) == ["FIRST"]
    again, new = d.engine.report(**report, claims=[claim])  # a later retry: looked up first
    assert (again.case_no, new) == ("FIRST", False)
    with pytest.raises(ReportReused, match="FIRST"):
        d.engine.report(**report, claims=[replace(claim, fingerprint="other")])
    fresh, new = d.engine.report(**report)  # no id: every post is a report
    assert new
    assert fresh.source == "监督员"
    assert fresh.received_by is None  # waits for the 受理员
