"""The routing table's departments come from the department registry (review of issue 19, item
2) on SQLite and PostgreSQL: the table declares its departments and the collector registers
them at start; a table naming a department neither declared nor registered does not start."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from lifeline.collector.api.app import create_app
from lifeline.collector.cases.routing import RoutingError, default_routing_path, load_routing
from lifeline.collector.keys import digest, display_prefix, new_token
from lifeline.collector.runtime import CollectorConfig, Runtime
from lifeline.collector.store import open_store

pytestmark = pytest.mark.integration

NOW_S = 1_800_000_000.0
SHIPPED = load_routing(default_routing_path())


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "postgres":
        yield request.getfixturevalue("pg_url")
    else:
        yield f"sqlite:///{tmp_path}/r.db"


def table(tmp_path: Path, **changes: object) -> Path:
    """The shipped routing table with `changes`, written beside its grid and calendar files."""
    doc = yaml.safe_load(default_routing_path().read_text(encoding="utf-8"))
    doc.update(changes)
    for key in ("grids", "calendar"):
        doc[key] = str(default_routing_path().parent / doc[key])
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def start(db_url: str, routing: Path | None = None) -> Runtime:
    config = CollectorConfig(db_url=db_url, ingest=None, routing_file=routing)
    return Runtime(config, clock=lambda: NOW_S)


def test_the_collector_registers_the_departments_its_table_declares(db_url: str) -> None:
    # Reproduced on main: the demo started with an empty registry while its cases went to the
    # asset file's owners and the grid file's departments, none of them registered.
    runtime = start(db_url)
    try:
        registry = {d.code: d.name for d in runtime.store.departments()}
        assert registry == SHIPPED.departments
        # An admin's rename stands at the next start; the table's name still routes to it.
        runtime.store.put_department("hz-gas", "杭州燃气集团有限公司", int(NOW_S * 1000))
    finally:
        runtime.close()
    runtime = start(db_url)
    try:
        names = {d.code: d.name for d in runtime.store.departments()}
        assert names["hz-gas"] == "杭州燃气集团有限公司"
        assert runtime.cases.directory().name("杭州市燃气集团") == "杭州燃气集团有限公司"
        assert runtime.cases.unregistered_total == 0
    finally:
        runtime.close()


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"default_department": "西湖区应急管理局"},
         "default_department: department '西湖区应急管理局' is neither declared in `departments`"
         " nor in the department registry"),
        ({"event_departments": {"0404": "西湖区排水有限公司"}},
         "event_departments.0404: department '西湖区排水有限公司' is neither declared"),
        ({"grid_departments": {"33010600100101": "NOPE"}},
         "grid_departments.33010600100101: department 'NOPE' is neither declared"),
        ({"work_orders": {"department": "某运维公司"}},
         "work_orders.department: department '某运维公司' is neither declared"),
        ({"departments": {**SHIPPED.departments, "gas2": "燃气集团"}},
         "departments.gas2: department gas is already named '燃气集团'"),
    ],
)  # fmt: skip
def test_a_table_naming_a_department_the_registry_cannot_hold_does_not_start(
    db_url: str, tmp_path: Path, changes: dict[str, object], says: str
) -> None:
    store = open_store(db_url)
    try:
        store.migrate()
        store.put_department("gas", "燃气集团", int(NOW_S * 1000))
    finally:
        store.close()
    path = table(tmp_path, **changes)
    with pytest.raises(RoutingError) as err:
        start(db_url, path)
    assert str(err.value).startswith(f"{path}: ")
    assert says in str(err.value)
    # Registered under its code, a department the table names by code or name is fine.
    store = open_store(db_url)
    try:
        store.put_department("xh-ps", "西湖区排水有限公司", int(NOW_S * 1000))
    finally:
        store.close()
    runtime = start(db_url, table(tmp_path, event_departments={"0404": "xh-ps"}))
    runtime.close()


def test_a_department_the_routing_table_names_is_not_removed_through_the_api(
    tmp_path: Path,
) -> None:
    # Before, DELETE took the default department away while the table still routed to it.
    runtime = start(f"sqlite:///{tmp_path}/d.db")
    try:
        token = new_token()
        runtime.store.create_api_key(
            "admin", "admin", digest(token), display_prefix(token), int(NOW_S * 1000)
        )
        with TestClient(create_app(runtime.config, runtime)) as client:
            gone = client.delete("/api/v1/departments/xh-center", headers={"X-API-Key": token})
            assert gone.status_code == 409, gone.text
            assert gone.json()["detail"] == (
                "department xh-center (区城市运行管理中心) is named by the routing table"
                " (default_department); name another department there and restart the"
                " collector first"
            )
            unused = client.delete("/api/v1/departments/xh-river", headers={"X-API-Key": token})
            assert unused.status_code == 204, unused.text  # only in the grid file: passed over
    finally:
        runtime.close()
