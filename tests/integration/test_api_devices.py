"""The API names a device by gateway and device: two cabinets may both have an `mh-01`."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifeline.collector.models import Accepted, Role
from lifeline.wire import (
    AlarmBatch,
    AlarmEvent,
    AlarmState,
    Birth,
    DataBatch,
    DeviceInfo,
    Record,
    Severity,
    TopicParts,
)
from tests.integration.test_api_http import Api, problem_of, running_api

pytestmark = pytest.mark.integration

ASSET = "3101040111000042"


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def twins(tmp_path: Path) -> Iterator[Api]:
    """gw-a and gw-b each with an mh-01 (and gw-b with a gas-3 no one else has)."""
    with running_api(f"sqlite:///{tmp_path}/twins.db") as api:
        store, t = api.runtime.store, now_ms()
        for gw, value, extra in (("gw-a", 1.0, ()), ("gw-b", 2.0, ("gas-3",))):
            devs = tuple(DeviceInfo(d, "gas_detector", "gas", True) for d in ("mh-01", *extra))
            birth = Birth(gw, "s", 0, t, "1", "h", devs, epoch="e1")
            rec = Record("mh-01", "gas_concentration", t - 1000, value)
            data = DataBatch(gw, "s", 1, t, (rec,), epoch="e1")
            ev = AlarmEvent(f"{gw}:e1:1", "mh-01", "gas_concentration", "hi", Severity.HIGH,
                            AlarmState.ACTIVE_UNACKED, t, value, 10, "gas")  # fmt: skip
            alarm = AlarmBatch(gw, "s", 2, t, (ev,), epoch="e1")
            store.write(
                [Accepted(TopicParts("xuhui", gw, m.kind), m) for m in (birth, data, alarm)],
                t,
            )
        api.runtime.after_commit()
        yield api


def test_an_id_two_gateways_have_answers_409_with_the_candidates(twins: Api) -> None:
    c, h = twins.client, twins.h()
    since, until = now_ms() - 60_000, now_ms()
    series = f"/api/v1/series?device=mh-01&point=gas_concentration&since={since}&until={until}"
    for path in ("/api/v1/devices/mh-01", "/api/v1/readings?device=mh-01",
                 "/api/v1/latest?device=mh-01", series):  # fmt: skip
        body = problem_of(c.get(path, headers=h), 409)
        assert [x["gateway"] for x in body["candidates"]] == ["gw-a", "gw-b"], path
        assert body["candidates"][0]["href"] == "/api/v1/gateways/gw-a/devices/mh-01"
    one = c.get("/api/v1/gateways/gw-b/devices/mh-01", headers=h).json()
    assert (one["gateway"], one["device"], one["latest"][0]["value"]) == ("gw-b", "mh-01", 2.0)
    readings = c.get("/api/v1/readings?device=mh-01&gateway=gw-a", headers=h).json()
    assert [(r["gateway"], r["value"]) for r in readings] == [("gw-a", 1.0)]
    # The old single-id routes keep working where the id is unambiguous.
    assert c.get("/api/v1/devices/gas-3", headers=h).json()["gateway"] == "gw-b"
    problem_of(c.get("/api/v1/gateways/gw-a/devices/gas-3", headers=h), 404)
    alarms = c.get("/api/v1/alarms?device=mh-01&gateway=gw-b", headers=h).json()["items"]
    assert [a["alarm_id"] for a in alarms] == ["gw-b:e1:1"]


def test_binding_names_the_gateway_and_cases_carry_it(twins: Api) -> None:
    c, admin = twins.client, twins.h(Role.ADMIN)
    asset = {"code": ASSET, "owner": "燃气公司"}
    assert c.put(f"/api/v1/assets/{ASSET}", json=asset, headers=admin).status_code == 200
    body = problem_of(
        c.put("/api/v1/devices/mh-01/asset", json={"asset": ASSET}, headers=admin), 409
    )
    assert len(body["candidates"]) == 2
    r = c.put("/api/v1/gateways/gw-b/devices/mh-01/asset", json={"asset": ASSET}, headers=admin)
    assert r.json() == {"gateway": "gw-b", "device": "mh-01", "asset": ASSET}
    twin = {**asset, "devices": ["mh-01"]}
    assert (
        "name it as gw-a/mh-01"
        in problem_of(c.put(f"/api/v1/assets/{ASSET}", json=twin, headers=admin), 409)["detail"]
    )
    detail = c.get(f"/api/v1/assets/{ASSET}", headers=twins.h()).json()
    assert [(d["gateway"], d["device"]) for d in detail["devices"]] == [("gw-b", "mh-01")]
    cases = c.get("/api/v1/cases", headers=twins.h()).json()["items"]
    assert sorted((x["gateway"], x["device"]) for x in cases) == [
        ("gw-a", "mh-01"),
        ("gw-b", "mh-01"),
    ]
