"""The routing table: where every alarm of every shipped profile ends, and a table that cannot
silently miss (misspelt families, points and alarm types are refused with "did you mean").

Written against the profiles as they are on main (severities included); the gateway side of
issue 14 changes some severities, which moves rows between urgent and normal, never out of a
case or work order.
"""

import json
from pathlib import Path

import pytest

from lifeline.collector.assets import Asset
from lifeline.collector.cases.routing import (
    UNKNOWN_AREA,
    Outcome,
    Routing,
    RoutingError,
    check_departments,
    default_routing_path,
    load_routing,
)
from lifeline.collector.departments import Directory
from lifeline.collector.profiles import DEVICE_POINT, shipped_catalog
from lifeline.wire import AlarmType

pytestmark = pytest.mark.unit

ROUTING = load_routing(default_routing_path())
CATALOG = shipped_catalog()

# The asset each family's devices are bound to in a district (None: a device on no asset).
ASSETS = {
    "0111": Asset(code="3301060111000101", owner="燃气集团", maintainer="燃气运维站"),
    "0118": Asset(code="3301060118000101", owner="城管局", maintainer="路灯所"),
    "0117": Asset(code="3301060117000201", owner="城管局", maintainer="市政养护中心"),
    "0208": Asset(code="3301060208000101", owner="城管局", maintainer="市政养护中心"),
}
# The registry: the shipped table's departments (registered at start) and these assets' owners.
SHIPPED = Directory.of(
    {
        **ROUTING.departments,
        "gas": "燃气集团",
        "gas-ops": "燃气运维站",
        "cgj": "城管局",
        "lamps": "路灯所",
        "upkeep": "市政养护中心",
    }
)
CONTEXTS = {
    "gas_detector": (None,),
    "manhole_cover": ("0111",),
    "streetlight": ("0118",),
    "tilt_sensor": ("0117", "0208"),
}

CASE, ORDER, IGNORED = Outcome.CASE, Outcome.WORK_ORDER, Outcome.IGNORED
PART, EV, COVER, MOVE = "部件", "事件", "cover_displaced", "structural_movement"
GAS, LEAK, DARK = "gas_concentration", "electric_leakage", "lamp_failure"
CENTER, UPKEEP = "区城市运行管理中心", "物联感知设备运维单位"  # the defaults of default.yaml
GASCO, STATION, LAMPS, CITY = "燃气集团", "燃气运维站", "路灯所", "城管局"
# (profile, point, alarm type, asset 小类) -> (outcome, kind, 小类, problem, urgent, department)
WHERE: dict[tuple[str, str, str, str | None], tuple[Outcome, str, str, str, bool, str]] = {
    # A detector's gas leak and methane in a well: one 事件, one classification, one deadline.
    ("gas_detector", GAS, "hi", None): (CASE, EV, "0403", "gas_leak", True, CENTER),
    ("gas_detector", GAS, "hihi", None): (CASE, EV, "0403", "gas_leak", True, CENTER),
    ("gas_detector", GAS, "roc", None): (CASE, EV, "0403", "gas_leak", False, CENTER),
    ("gas_detector", "sensor_fault", "state", None): (ORDER, "", "", "sensor_fault", False, UPKEEP),
    ("manhole_cover", "ch4", "hi", "0111"): (CASE, EV, "0403", "gas_leak", True, GASCO),
    ("manhole_cover", "ch4", "hihi", "0111"): (CASE, EV, "0403", "gas_leak", True, GASCO),
    # The cover itself: a 部件 case on the asset, 小类 from its code.
    ("manhole_cover", "tilt_x", "hi", "0111"): (CASE, PART, "0111", COVER, True, STATION),
    ("manhole_cover", "tilt_y", "hi", "0111"): (CASE, PART, "0111", COVER, True, STATION),
    ("manhole_cover", "cover_open", "state", "0111"): (CASE, PART, "0111", COVER, True, STATION),
    ("manhole_cover", "displaced", "state", "0111"): (CASE, PART, "0111", COVER, False, STATION),
    ("manhole_cover", "water_level", "hi", "0111"): (CASE, EV, "0404", "flooding", False, STATION),
    ("manhole_cover", "battery", "lo", "0111"): (ORDER, "", "", "low_battery", False, UPKEEP),
    # Leakage current is its own urgent problem, not a dark lamp.
    ("streetlight", "leakage_current", "hi", "0118"): (CASE, PART, "0118", LEAK, True, LAMPS),
    ("streetlight", DARK, "state", "0118"): (CASE, PART, "0118", DARK, False, LAMPS),
    ("streetlight", "voltage", "hi", "0118"): (CASE, PART, "0118", "supply_voltage", False, LAMPS),
    ("streetlight", "voltage", "lo", "0118"): (CASE, PART, "0118", "supply_voltage", False, LAMPS),
    # A leaning pole is a defect of the pole ...
    ("tilt_sensor", "angle_x", "hi", "0117"): (CASE, PART, "0117", "tilt", False, CITY),
    ("tilt_sensor", "angle_x", "hihi", "0117"): (CASE, PART, "0117", "tilt", True, CITY),
    ("tilt_sensor", "angle_x", "roc", "0117"): (CASE, PART, "0117", "tilt", True, CITY),
    ("tilt_sensor", "angle_y", "hi", "0117"): (CASE, PART, "0117", "tilt", False, CITY),
    ("tilt_sensor", "angle_y", "hihi", "0117"): (CASE, PART, "0117", "tilt", True, CITY),
    ("tilt_sensor", "vibration", "hi", "0117"): (IGNORED, "", "", "", False, ""),
    ("tilt_sensor", "battery", "lo", "0117"): (ORDER, "", "", "low_battery", False, UPKEEP),
    # ... a bridge that moves is a hazard at the bridge (事件 located at it, referencing it).
    ("tilt_sensor", "angle_x", "hi", "0208"): (CASE, EV, "0499", MOVE, False, CITY),
    ("tilt_sensor", "angle_x", "hihi", "0208"): (CASE, EV, "0499", MOVE, True, CITY),
    ("tilt_sensor", "angle_x", "roc", "0208"): (CASE, EV, "0499", MOVE, True, CITY),
    ("tilt_sensor", "angle_y", "hi", "0208"): (CASE, EV, "0499", MOVE, False, CITY),
    ("tilt_sensor", "angle_y", "hihi", "0208"): (CASE, EV, "0499", MOVE, True, CITY),
    ("tilt_sensor", "vibration", "hi", "0208"): (CASE, EV, "0499", MOVE, False, CITY),
    ("tilt_sensor", "battery", "lo", "0208"): (ORDER, "", "", "low_battery", False, UPKEEP),
}  # fmt: skip

RULES = [
    (p.name, p.family, pt.name, r.alarm_type, r.severity, sub)
    for p, pt, r in CATALOG.rules()
    for sub in CONTEXTS[p.name]
]


def test_every_rule_of_every_shipped_profile_is_in_the_table() -> None:
    walked = {(name, point, kind, sub) for name, _, point, kind, _, sub in RULES}
    assert walked == set(WHERE), "a profile rule without an expected end, or a stale row"


@pytest.mark.parametrize(("profile", "family", "point", "kind", "severity", "sub"), RULES)
def test_where_every_alarm_rule_ends(
    profile: str, family: str, point: str, kind: str, severity: int, sub: str | None
) -> None:
    asset = ASSETS[sub] if sub else None
    d = ROUTING.decide(
        family=family, alarm_type=kind, point=point, severity=severity, asset=asset,
        directory=SHIPPED,
    )  # fmt: skip
    got = (d.outcome, d.kind, d.subcategory, d.problem, d.urgent, d.department)
    assert got == WHERE[(profile, point, kind, sub)]
    if d.outcome is Outcome.IGNORED:
        assert d.reason  # an explicit rule says why not
    if d.outcome in (Outcome.CASE, Outcome.WORK_ORDER):
        assert d.allowed_ms is not None
        assert d.allowed_ms > 0


@pytest.mark.parametrize("family", sorted(CATALOG.families))
@pytest.mark.parametrize(
    ("kind", "problem", "title"),
    [("comm_loss", "comm_loss", "设备通信中断"), ("stale", "stale_data", "设备数据停止更新")],
)
def test_device_health_becomes_a_work_order_for_every_family(
    family: str, kind: str, problem: str, title: str
) -> None:
    point = DEVICE_POINT if kind == "comm_loss" else "temperature"
    for severity in (1, 3):
        d = ROUTING.decide(
            family=family, alarm_type=kind, point=point, severity=severity, asset=None,
            gateway="gw-demo", device="x", directory=SHIPPED,
        )  # fmt: skip
        assert (d.outcome, d.problem, d.title) == (Outcome.WORK_ORDER, problem, title)


@pytest.mark.parametrize(("profile", "family", "point", "kind", "severity", "sub"), RULES)
@pytest.mark.parametrize("severity_now", [1, 2])
def test_no_alarm_of_severity_one_or_two_vanishes(
    profile: str,
    family: str,
    point: str,
    kind: str,
    severity: int,
    sub: str | None,
    severity_now: int,
) -> None:
    # Whatever a site overrides the severity to, and whether or not the device is bound.
    for asset in (ASSETS[sub] if sub else None, None):
        d = ROUTING.decide(
            family=family,
            alarm_type=kind,
            point=point,
            severity=severity_now,
            asset=asset,
            directory=SHIPPED,
        )
        assert d.outcome is not Outcome.RECORDED
        assert d.outcome is not Outcome.IGNORED or d.reason


def test_an_unrouted_alarm_of_severity_two_opens_an_unclassified_case() -> None:
    d = ROUTING.decide(
        family="gas", alarm_type="hi", point="temperature", severity=2, asset=None,
        directory=SHIPPED,
    )  # fmt: skip
    assert (d.outcome, d.kind, d.subcategory, d.title, d.auto_register) == (
        Outcome.CASE,
        "未分类",
        "",
        "未分类物联感知告警",
        False,
    )
    assert d.allowed_ms is None  # the limit comes with the 小类 an operator gives it


def test_an_unrouted_alarm_of_severity_three_is_recorded_and_says_so() -> None:
    d = ROUTING.decide(
        family="gas", alarm_type="hi", point="temperature", severity=3, asset=None,
        directory=SHIPPED,
    )  # fmt: skip
    assert d.outcome is Outcome.RECORDED
    assert "no route" in d.reason
    assert "severity 3" in d.reason


def test_a_component_alarm_of_an_unbound_device_is_classified_by_an_operator() -> None:
    d = ROUTING.decide(
        family="manhole",
        alarm_type="state",
        point="cover_open",
        severity=2,
        asset=None,
        directory=SHIPPED,
    )
    assert (d.outcome, d.kind) == (Outcome.CASE, "未分类")
    assert "bound to no 部件" in d.reason
    low = ROUTING.decide(
        family="streetlight",
        alarm_type="state",
        point="lamp_failure",
        severity=4,
        asset=None,
        directory=SHIPPED,
    )
    assert low.outcome is Outcome.RECORDED
    assert "bound to no 部件" in low.reason


@pytest.mark.parametrize(
    ("asset", "grid", "district", "expected"),
    [
        (ASSETS["0111"], None, "310104", "330106"),  # the asset's code
        (None, "330108001002", "310104", "330108"),  # the grid code's prefix
        (None, None, "330106", "330106"),  # the collector's district
        (None, None, None, UNKNOWN_AREA),  # never another city's code
    ],
)
def test_the_area_code_comes_from_the_place(
    asset: Asset | None, grid: str | None, district: str | None, expected: str
) -> None:
    routing = ROUTING.model_copy(update={"district": district})
    assert routing.area_code(asset, grid) == expected


def test_the_shipped_table_has_no_district_of_another_city() -> None:
    assert ROUTING.district is None


def write(tmp_path: Path, body: str) -> Path:
    f = tmp_path / "routing.yaml"
    f.write_text(
        "default_department: 中心\ndeadlines: {default: {urgent: 1, normal: 2}}\n" + body,
        encoding="utf-8",
    )
    return f


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        ("- {family: gass, alarm_types: [hi], kind: work_order, problem: x}",
         "routes.0.family: unknown family 'gass' (did you mean 'gas'?)"),
        ("- {family: gas, alarm_types: [hihgh], kind: work_order, problem: x}",
         "routes.0.alarm_types.0: unknown alarm type 'hihgh' (did you mean 'hihi'?)"),
        ("- {family: manhole, alarm_types: [hi], points: [cover_opn], kind: component, problem: x}",
         "the manhole profiles have no point 'cover_opn' (did you mean 'cover_open'?)"),
        ("- {family: '*', alarm_types: [lo], points: [batery], kind: work_order, problem: x}",
         "routes.0.points.0: any profile have no point 'batery' (did you mean 'battery'?)"),
        ("- {family: gas, alarm_types: [hi], kind: event, problem: x}",
         "needs its 事件 `subcategory`"),
        ("- {family: gas, alarm_types: [hi], kind: component, subcategory: '0111', problem: x}",
         "only event routes take a `subcategory`"),
        ("- {family: gas, alarm_types: [hi], problem: x}",
         "exactly one of `kind` or `ignore: <reason>`"),
        ("- {family: gas, alarm_types: [hi], kind: work_order, ignore: why, problem: x}",
         "exactly one of `kind` or `ignore: <reason>`"),
        ("- {family: gas, alarm_types: [hi], event_subcategory: '0403', problem: x}",
         "`event_subcategory` is gone"),
        ("- {family: gas, alarm_types: [hi], kind: work_order, problem: x, departmnt: owner}",
         "routes.0.departmnt: Extra inputs are not permitted (did you mean 'department'?)"),
        ("- {family: gas, alarm_types: [hi], kind: event, subcategory: '403', problem: x}",
         "小类 '403' must be 4 digits"),
    ],
)  # fmt: skip
def test_a_route_that_could_never_match_is_refused(
    tmp_path: Path, routes: str, expected: str
) -> None:
    with pytest.raises(RoutingError) as err:
        load_routing(write(tmp_path, "routes:\n  " + routes + "\n"))
    assert str(err.value).startswith(str(tmp_path / "routing.yaml"))
    assert expected in str(err.value)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("distrcit: '330106'\n", r"distrcit: .*did you mean 'district'\?"),
        ("work_orders: {departmnt: x}\n", r"work_orders.departmnt: .*did you mean 'department'"),
        ("unclassified: {titel: x}\n", r"unclassified.titel: .*did you mean 'title'"),
        (
            "work_orders: {deadlines: {default: {urgent: 1, nromal: 2}}}\n",
            r"work_orders.deadlines.default.nromal: .*did you mean 'normal'",
        ),
    ],
)
def test_a_misspelt_key_gets_a_hint_from_its_own_section(
    tmp_path: Path, body: str, expected: str
) -> None:
    with pytest.raises(RoutingError, match=expected):
        load_routing(write(tmp_path, body + "routes: []\n"))


def test_the_old_area_code_key_still_names_the_district(tmp_path: Path) -> None:
    assert load_routing(write(tmp_path, "area_code: '330106'\nroutes: []\n")).district == "330106"
    with pytest.raises(RoutingError, match="area_code"):
        load_routing(write(tmp_path, "area_code: '31'\nroutes: []\n"))


def test_a_site_profile_listed_by_the_table_is_checked_too(tmp_path: Path) -> None:
    (tmp_path / "pump.yaml").write_text(
        "name: pump_station\nfamily: pump\npoints:\n  - {name: flow, unit: m3/h}\n",
        encoding="utf-8",
    )
    body = "profiles: [pump.yaml]\nroutes:\n  - {family: pump, alarm_types: [lo], points: [flow],"
    body += " kind: work_order, problem: pump_flow}\n"
    assert load_routing(write(tmp_path, body)).routes[0].family == "pump"
    with pytest.raises(RoutingError, match="unknown family 'pump'"):
        load_routing(write(tmp_path, body.replace("profiles: [pump.yaml]\n", "")))
    with pytest.raises(RoutingError, match=r"profiles: .*missing\.yaml"):
        load_routing(write(tmp_path, body.replace("pump.yaml", "missing.yaml")))


def test_every_alarm_type_is_a_wire_alarm_type() -> None:
    kinds = {t.value for t in AlarmType}
    for r in ROUTING.routes:
        assert set(r.alarm_types) <= kinds


def test_the_unclassified_case_cannot_be_configured_away(tmp_path: Path) -> None:
    with pytest.raises(RoutingError, match="every alarm of severity 1 or 2 must end somewhere"):
        load_routing(write(tmp_path, "unclassified: {max_severity: 1}\nroutes: []\n"))
    assert isinstance(ROUTING, Routing)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # Reproduced on main (review of issue 19, item 9): these loaded and never matched.
        ("grid_departments: {'3301060010010': x}\n",
         "grid_departments: grid code '3301060010010' must be 14 digits"),
        ("grid_departments: {'99999999999999': x}\ngrids: g.geojson\n",
         "grid_departments.99999999999999: no 单元网格 99999999999999 in the grid file"),
        ("event_departments: {'04O4': x}\n", "小类 '04O4' must be 4 digits"),
        ("event_departments: {abc: x}\n", "小类 'abc' must be 4 digits"),
        ("event_departments: {'0450': x}\n",
         "event_departments.0450: no 事件 小类 0450 in the catalogue or an event route (did you"),
        ("departments: {'燃气': 燃气集团}\n", "department code '燃气' must be 1-32"),
        ("departments: {gas: ' 燃气集团'}\n", "must not start or end with a space"),
        ("departments: {gas: water, water: 水务}\n", "name 'water' is a code"),
        ("departments: {gas: 燃气集团, gas2: 燃气集团}\n", "names declared twice: 燃气集团"),
    ],
)  # fmt: skip
def test_a_department_entry_that_could_never_match_is_refused(
    tmp_path: Path, body: str, expected: str
) -> None:
    feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        [[120, 30], [121, 30], [121, 31], [120, 31], [120, 30]]
    ]}, "properties": {"code": "33010600100101", "departments": []}}  # fmt: skip
    (tmp_path / "g.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": [feature]}), encoding="utf-8"
    )
    with pytest.raises(RoutingError) as err:
        load_routing(write(tmp_path, body + "routes: []\n"))
    assert str(err.value).startswith(str(tmp_path / "routing.yaml"))
    assert expected in str(err.value)


def test_a_department_the_registry_does_not_hold_is_passed_over_for_the_next() -> None:
    # Reproduced on main (item 2): routing handed cases to any name an asset or grid gave.
    unknown = Asset(code="3301060111000109", owner="无名燃气公司", maintainer="无名运维")
    bridge = Asset(code="3301060208000109", owner="无名城管")
    d = ROUTING.decide(
        family="gas", alarm_type="hihi", point="gas_concentration", severity=1, asset=unknown,
        directory=SHIPPED,
    )  # fmt: skip
    assert (d.department, d.unregistered) == ("区城市运行管理中心", ("无名燃气公司",))
    d = ROUTING.decide(
        family="tilt", alarm_type="hi", point="angle_x", severity=1, asset=bridge,
        directory=SHIPPED,
    )  # fmt: skip
    assert (d.department, d.unregistered) == ("区城市运行管理中心", ("无名城管",))
    # A name the registry gave up follows its code; the table's declared name does too.
    renamed = Directory.of(
        {**ROUTING.departments, "gas": "燃气集团有限公司", "iot-ops": "感知运维中心"},
        history={"gas": ("燃气集团有限公司", "燃气集团")},
        declared=ROUTING.departments,
    )
    d = ROUTING.decide(
        family="gas", alarm_type="hihi", point="gas_concentration", severity=1,
        asset=ASSETS["0111"], directory=renamed,
    )  # fmt: skip
    assert (d.department, d.unregistered) == ("燃气集团有限公司", ())
    d = ROUTING.decide(
        family="gas", alarm_type="comm_loss", point=DEVICE_POINT, severity=2, asset=None,
        directory=renamed, gateway="gw", device="x",
    )  # fmt: skip
    assert (d.outcome, d.department, d.unregistered) == (Outcome.WORK_ORDER, "感知运维中心", ())


def test_a_table_naming_a_department_neither_declared_nor_registered_is_reported() -> None:
    table = ROUTING.model_copy(
        update={"event_departments": {"0404": "排水公司"}, "default_department": "区城市运行管理中"}
    )
    assert check_departments(table, SHIPPED) == [
        "default_department: department '区城市运行管理中' is neither declared in `departments`"
        " nor in the department registry (did you mean '区城市运行管理中心'?)",
        "event_departments.0404: department '排水公司' is neither declared in `departments` nor"
        " in the department registry",
    ]
    assert check_departments(ROUTING, Directory.of(ROUTING.departments)) == []


def test_the_command_centre_is_center_else_the_default_department_by_its_registered_name() -> None:
    # The centre holds 受理, 立案, 派遣 and 核查 (collector.cases.phases.holder).
    assert ROUTING.command_center(SHIPPED) == ROUTING.default_department
    renamed = Directory.of({"xh-center": "西湖区城市运行管理中心"})
    table = ROUTING.model_copy(update={"center": "xh-center"})
    assert table.command_center(renamed) == "西湖区城市运行管理中心"
    # A centre neither declared nor registered is refused like any department the table names.
    wrong = ROUTING.model_copy(update={"center": "区指挥中心"})
    assert check_departments(wrong, SHIPPED) == [
        "center: department '区指挥中心' is neither declared in `departments` nor in the"
        " department registry"
    ]
