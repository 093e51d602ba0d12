"""`lifeline collector departments list|add|rename|remove` (issue 19 §1's registry) on SQLite and
PostgreSQL, and the API's DELETE beside it: a rename carries the open cases with it; a
department that open cases or active keys still name is not removed."""

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from lifeline.cli import main as lifeline_main
from lifeline.collector.cases.phases import Phase
from lifeline.collector.cases.workflow import Case, CaseState
from lifeline.collector.cases.workorders import WorkOrderState, open_work_order
from lifeline.collector.cli import app as collector_cli
from lifeline.collector.departments import check_name
from lifeline.collector.store import Conflict, Store, open_store
from tests.integration.test_open311 import BASE, NOW

pytestmark = pytest.mark.integration

OPEN = replace(BASE, case_no="C-OPEN", department="燃气集团", assist=("水务集团",))
CLOSED = replace(BASE, case_no="C-CLOSED", department="燃气集团", state=CaseState.CLOSED)


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Store]]:
    url: str = (
        request.getfixturevalue("pg_url")
        if request.param == "postgres"
        else f"sqlite:///{tmp_path}/d.db"
    )
    store = open_store(url)
    store.migrate()
    yield url, store
    store.close()


def cli(url: str, *args: str) -> Result:
    return CliRunner().invoke(collector_cli, ["departments", *args, "--db", url])


def ok(url: str, *args: str) -> str:
    r = cli(url, *args)
    assert r.exit_code == 0, r.output
    return r.stdout


def refused(url: str, *args: str, code: int = 1) -> str:
    r = cli(url, *args)
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    assert r.stdout == ""
    return r.stderr


def error_line(url: str, *args: str) -> str:
    err = refused(url, *args)
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    return err.removeprefix("error: ").strip()


def case(store: Store, no: str) -> Case:
    found = store.case(no)
    assert found is not None
    return found


def test_departments_are_added_listed_renamed_and_removed(db: tuple[str, Store]) -> None:
    url, store = db
    assert ok(url, "add", "gas", "燃气集团", "--json") == (
        '{"code": "gas", "name": "燃气集团", "added": true}\n'
    )
    assert ok(url, "add", "water", "水务集团") == "added department water 水务集团\n"
    assert ok(url, "list") == "gas\t燃气集团\nwater\t水务集团\n"
    store.save_case(
        OPEN, [], expect_state=None, phases=[Phase("C-OPEN", 1, "处置", "燃气集团", NOW, None)]
    )
    store.save_case(
        CLOSED,
        [],
        expect_state=None,
        phases=[Phase("C-CLOSED", 1, "处置", "燃气集团", NOW, None, end_ms=NOW + 1)],
    )

    # The open case follows the department to its new name; the closed one keeps the old.
    read_before = case(store, "C-OPEN")
    assert (
        ok(url, "rename", "gas", "燃气有限公司")
        == "renamed department gas: 燃气集团 -> 燃气有限公司\n"
    )
    assert ok(url, "rename", "water", "水务有限公司", "--json") == (
        '{"code": "water", "name": "水务有限公司", "was": "水务集团"}\n'
    )
    assert (case(store, "C-OPEN").department, case(store, "C-OPEN").assist) == (
        "燃气有限公司",
        ("水务有限公司",),
    )
    assert case(store, "C-CLOSED").department == "燃气集团"
    assert [p.department for p in store.phases("C-OPEN")] == ["燃气有限公司"]
    assert [p.department for p in store.phases("C-CLOSED")] == ["燃气集团"]
    # A save of the case as read before the rename would write the old name back: a Conflict.
    with pytest.raises(Conflict):
        store.save_case(replace(read_before, repeats=1), [], expect_state="派遣")
    assert case(store, "C-OPEN").department == "燃气有限公司"

    # In use: refused with what holds it; nothing removed.
    assert error_line(url, "remove", "gas") == (
        "department gas (燃气有限公司) is still in use: 1 open cases (C-OPEN); re-dispatch (改派)"
        " or close the open cases first"
    )
    key = store.create_api_key("水务值班", "department", "h" * 64, "llk_x", NOW, ("water",))
    assert error_line(url, "remove", "water") == (
        "department water (水务有限公司) is still in use: 1 open cases (C-OPEN) and active keys"
        f" {key} (水务值班) scoped to it; re-dispatch (改派) or close the open cases, revoke"
        " the keys first"
    )
    store.save_case(replace(case(store, "C-OPEN"), state=CaseState.CLOSED), [], expect_state="派遣")
    assert "active keys" in error_line(url, "remove", "water")
    store.revoke_api_key(key, NOW)
    assert ok(url, "remove", "water", "--json") == (
        '{"code": "water", "name": "水务有限公司", "removed": true}\n'
    )
    assert ok(url, "remove", "gas") == "removed department gas (燃气有限公司)\n"
    listed: dict[str, Any] = {"departments": []}
    assert ok(url, "list", "--json") == '{"departments": []}\n' == f"{listed}\n".replace("'", '"')
    assert case(store, "C-CLOSED").department == "燃气集团"  # history keeps its names


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["add", "gas", "燃气"], "department gas is already registered as '燃气集团'; rename it"),
        (["add", "gas2", "燃气集团"], "department gas is already named '燃气集团'"),
        (["rename", "nope", "某部门"], "no department nope; register it with"),
        (["rename", "water", "燃气集团"], "department gas is already named '燃气集团'"),
        (["add", "evil", "gas"], "'gas' is a department code: a name may not equal a code"),
        (["rename", "water", "gas"], "'gas' is a department code: a name may not equal a code"),
        (["remove", "nope"], "no department nope"),
    ],
)
def test_a_department_command_that_cannot_be_done_says_why_in_one_line(
    db: tuple[str, Store], args: list[str], says: str
) -> None:
    url, store = db
    store.put_department("gas", "燃气集团", NOW)
    store.put_department("water", "水务集团", NOW)
    assert error_line(url, *args).startswith(says)
    assert {d.code: d.name for d in store.departments()} == {"gas": "燃气集团", "water": "水务集团"}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["add", "燃气", "燃气集团"], "must be 1-32 of A-Z"),
        (["add", "-gas", "燃气集团"], "No such option"),  # an option, to the command line
        (["add", "g" * 33, "燃气集团"], "must be 1-32 of A-Z"),
        (["add", "gas", ""], "must not be empty"),
        (["add", "gas", "  "], "must not be empty"),
        (["add", "gas", " 燃气集团"], "must not start or end with a space"),
        (["add", "gas", "燃气\n集团"], "control character U+000A"),
        (["add", "gas", "燃气\u202e集团"], "control character U+202E"),
        (["add", "gas", "燃" * 101], "at most 100 characters"),
        (["rename", "gas"], "Missing argument 'name'"),
        (["remove", "gas/../x"], "must be 1-32 of A-Z"),
    ],
)
def test_hostile_department_arguments_are_usage_errors(
    tmp_path: Path, args: list[str], says: str
) -> None:
    url = f"sqlite:///{tmp_path}/h.db"
    assert CliRunner().invoke(collector_cli, ["migrate", "--db", url]).exit_code == 0
    err = refused(url, *args, code=2)
    assert says in " ".join(line.strip("│ ") for line in err.splitlines())


def test_a_department_command_on_a_database_without_the_schema_creates_nothing(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/typo.db"
    assert "no collector database at" in error_line(url, "add", "gas", "燃气集团")
    assert not (tmp_path / "typo.db").exists()


@pytest.mark.parametrize("url", ["sqlite:///", "sqlite://", "sqlite:///:memory:"])
@pytest.mark.parametrize(
    "args",
    [
        ["departments", "add", "ZZ", "测试"],
        ["keys", "create", "--role", "viewer", "--name", "大屏"],
        ["keys", "list"],
        ["migrate"],
    ],
    ids=["departments-add", "keys-create", "keys-list", "migrate"],
)
def test_an_in_memory_database_is_refused_in_one_line_not_written_and_forgotten(
    url: str, args: list[str]
) -> None:
    r = CliRunner().invoke(collector_cli, [*args, "--db", url])
    assert (r.exit_code, r.stdout) == (1, ""), r.output
    assert r.stderr.startswith(f"error: --db {url} is an in-memory database"), r.stderr
    assert r.stderr.count("\n") == 1


def test_a_department_whose_case_waits_for_its_acceptance_is_told_to_void_it(
    db: tuple[str, Store],
) -> None:
    url, store = db
    ok(url, "add", "gas", "燃气集团")
    waiting = replace(OPEN, case_no="C-NEW", state=CaseState.REPORTED, assist=())
    store.save_case(waiting, [], expect_state=None)
    store.save_case(OPEN, [], expect_state=None)
    assert error_line(url, "remove", "gas") == (
        "department gas (燃气集团) is still in use: 1 cases in 受理 (C-NEW) and 1 open cases"
        " (C-OPEN); void (作废) the cases in 受理, re-dispatch (改派) or close the open cases"
        " first"
    )


def test_a_key_for_an_unregistered_department_is_refused_in_one_line(
    db: tuple[str, Store],
) -> None:
    url, _ = db
    args = ["keys", "create", "--role", "department", "--department", "NOPE", "--name", "x"]
    r = CliRunner().invoke(collector_cli, [*args, "--db", url])
    assert (r.exit_code, r.stdout) == (1, ""), r.output
    assert r.stderr.startswith("error: not in the department registry: NOPE")
    assert r.stderr.count("\n") == 1
    # how the command is written is still a usage error, before any database is opened
    usage = ["keys", "create", "--role", "viewer", "--department", "GAS", "--name", "x"]
    assert CliRunner().invoke(collector_cli, [*usage, "--db", url]).exit_code == 2


def test_bytes_that_are_not_utf8_in_an_argument_are_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/b.db"
    name = b"\xff".decode("utf-8", "surrogateescape")  # as Python hands over such argv bytes
    with pytest.raises(SystemExit) as ended:
        lifeline_main(["collector", "departments", "add", "B1", name, "--db", url])
    assert ended.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: argument 5 (\\udcff) holds the byte 0xFF, which is not UTF-8")
    assert err.count("\n") == 1
    assert not (tmp_path / "b.db").exists()
    with pytest.raises(ValueError, match="lone surrogate"):
        check_name(name)  # the API's JSON can carry one too (\\udcff)


def test_work_orders_follow_a_rename_and_hold_their_department_and_names_are_not_reused(
    db: tuple[str, Store],
) -> None:
    # Reproduced on main (review of issue 19, item 4): a rename left open work orders under the
    # old name (out of the maintainer's scope), a department with an open work order was
    # removed, and a name a department gave up could be taken by another.
    url, store = db
    ok(url, "add", "ops", "设备运维站")
    for no, done in (("YW-OPEN", False), ("YW-DONE", True)):
        order, audit = open_work_order(
            order_no=no, problem="comm_loss", title="设备通信中断", gateway="gw", device=no,
            asset=None, severity=2, urgent=True, department="设备运维站", allowed_ms=3_600_000,
            now_ms=NOW,
        )  # fmt: skip
        if done:
            order = replace(order, state=WorkOrderState.DONE)
        store.save_work_order(order, [audit], expect_state=None)
    assert error_line(url, "remove", "ops").startswith(
        "department ops (设备运维站) is still in use: 1 open work orders (YW-OPEN);"
    )
    ok(url, "rename", "ops", "物联设备运维站")
    departments = {no: o.department for no in ("YW-OPEN", "YW-DONE") if (o := store.work_order(no))}
    assert departments == {"YW-OPEN": "物联设备运维站", "YW-DONE": "设备运维站"}
    assert error_line(url, "add", "ops2", "设备运维站").startswith(
        "'设备运维站' was the name of department ops: names are never reused"
    )
    assert error_line(url, "add", "ops3", "物联设备运维站").startswith(
        "department ops is already named"
    )


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("system", "reserved for the collector's own actions"),
        ("SYSTEM", "reserved for the collector's own actions"),
        ("值班\x1b[2J", "control character U+001B"),
        ("值班\n员", "control character U+000A"),
        ("值班\u202e员", "control character U+202E"),
        ("   ", "must not be empty"),
        ("值" * 101, "at most 100 characters"),
    ],
)
def test_a_key_name_that_would_mislead_the_audit_is_a_usage_error(
    tmp_path: Path, name: str, says: str
) -> None:
    # Reproduced on main (item 13): the CLI took `system`, control characters and 5000-char names.
    url = f"sqlite:///{tmp_path}/k.db"
    assert CliRunner().invoke(collector_cli, ["migrate", "--db", url]).exit_code == 0
    r = CliRunner().invoke(
        collector_cli, ["keys", "create", "--role", "viewer", "--name", name, "--db", url]
    )
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert r.stdout == ""
    assert says in " ".join(line.strip("│ ") for line in r.stderr.splitlines())
    store = open_store(url)
    try:
        assert store.api_keys() == []
        # One stored before names were checked is listed escaped, never raw.
        store.create_api_key("值班\x1b[2J\u202e员", "viewer", "h" * 64, "llk_x", NOW)
    finally:
        store.close()
    listed = CliRunner().invoke(collector_cli, ["keys", "list", "--db", url]).stdout
    assert listed.endswith("\tllk_x...\t'值班\\x1b[2J\\u202e员'\n")
