"""Every code and number a person types is ASCII, by one rule per code (wire.codes) that every
place checking it uses: `\\d` and `str.isdigit()` take the digits of any script."""

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import pytest
import typer
from pydantic import Field, TypeAdapter, ValidationError
from typer.testing import CliRunner

from lifeline.collector.assets import Asset
from lifeline.collector.cases.routing import RoutingError, load_routing
from lifeline.collector.cli import _split_http
from lifeline.collector.cli import app as collector_cli
from lifeline.edge.config import ConfigError, parse_config
from lifeline.edge.crew import _parse_since
from lifeline.edge.installer import _check_asset_code, _check_ident, _line_settings, _parse_asset
from lifeline.firmware_sim.cli import _control_address
from lifeline.wire import WireError
from lifeline.wire.codes import (
    AREA_CODE_PATTERN,
    ASSET_CODE_PATTERN,
    GRID_CODE_PATTERN,
    SUBCATEGORY_PATTERN,
    is_area_code,
    is_ascii_number,
    is_asset_code,
    is_grid_code,
    is_subcategory,
)
from lifeline.wire.topics import check_ident

pytestmark = pytest.mark.unit

ARABIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")  # Arabic-Indic digits
FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")  # what a Chinese IME may type
DEVANAGARI = str.maketrans("0123456789", "०१२३४५६७८९")


def not_ascii(code: str) -> list[str]:
    """`code` in other scripts' digits, with one digit swapped, and with a trailing newline
    (which Python's `$` lets through)."""
    return [
        code.translate(ARABIC),
        code.translate(FULLWIDTH),
        code.translate(DEVANAGARI),
        code[:-1] + "٣",
        code + "\n",
    ]


def routing_file(tmp_path: Path, **doc: object) -> Path:
    """A routing table with `doc` over the least a table needs (JSON is YAML)."""
    base = {"default_department": "中心", "deadlines": {"default": {"urgent": 1, "normal": 2}}}
    path = tmp_path / "routing.yaml"
    path.write_text(json.dumps({"routes": [], **base, **doc}), encoding="utf-8")
    return path


AREA = "330106"
SUBCATEGORY = "0111"
ASSET = "3301060111000001"
GRID = "33010600100101"


@pytest.mark.parametrize(
    ("check", "pattern", "good"),
    [
        (is_area_code, AREA_CODE_PATTERN, AREA),
        (is_subcategory, SUBCATEGORY_PATTERN, SUBCATEGORY),
        (is_asset_code, ASSET_CODE_PATTERN, ASSET),
        (is_grid_code, GRID_CODE_PATTERN, GRID),
    ],
)
def test_each_code_is_ascii_digits_by_its_check_and_its_pattern(
    check: Callable[[str], bool], pattern: str, good: str
) -> None:
    # The pattern as pydantic and FastAPI run it: Rust's regex, where `\d` is Unicode too.
    field = TypeAdapter(Annotated[str, Field(pattern=pattern)])
    assert check(good)
    assert field.validate_python(good) == good
    for bad in [*not_ascii(good), good[:-1], good + "00", ""]:
        assert not check(bad), bad
        with pytest.raises(ValidationError):
            field.validate_python(bad)


@pytest.mark.parametrize("code", not_ascii(ASSET))
def test_an_asset_code_in_other_digits_is_refused_by_the_collector_and_the_edge(
    code: str, tmp_path: Path
) -> None:
    with pytest.raises(ValidationError, match="16 digits"):
        Asset(code=code, owner="燃气集团")
    device = {"id": "mh-1", "unit": 1, "profile": "manhole_cover", "asset": code}
    bus = {"type": "tcp", "host": "127.0.0.1", "port": 1502, "devices": [device]}
    with pytest.raises(ConfigError) as err:
        parse_config({"gateway": "gw-1", "site": "demo", "buses": [bus]})
    assert [f for f, _ in err.value.problems] == ["buses[0].devices[0].asset"]
    with pytest.raises(typer.BadParameter, match="16-digit 部件标识码"):
        _check_asset_code(code)
    known = [{"devices": [{"id": "gw.b1-mh-001", "unit": 1}]}]
    if code.strip() == ASSET:  # --asset DEVICE=CODE trims blanks around what was typed
        assert _parse_asset(f"b1-mh-001={code}", known) == ("gw.b1-mh-001", ASSET)
        return
    with pytest.raises(typer.BadParameter, match="16-digit 部件标识码"):
        _parse_asset(f"b1-mh-001={code}", known)


def test_the_ascii_asset_code_is_taken_everywhere() -> None:
    assert Asset(code=ASSET, owner="燃气集团").subcategory == SUBCATEGORY
    assert _check_asset_code(ASSET) == ASSET
    known = [{"devices": [{"id": "gw.b1-mh-001", "unit": 1}]}]
    assert _parse_asset(f"b1-mh-001={ASSET}", known) == ("gw.b1-mh-001", ASSET)


@pytest.mark.parametrize("code", not_ascii(SUBCATEGORY))
def test_a_subcategory_in_other_digits_is_refused_by_the_routing_table(
    code: str, tmp_path: Path
) -> None:
    route = {"family": "gas", "alarm_types": ["hi"], "kind": "event", "problem": "x"}
    with pytest.raises(RoutingError, match=re.escape("must be 4 digits (大类 + 小类)")):
        load_routing(routing_file(tmp_path, routes=[{**route, "subcategory": code}]))


@pytest.mark.parametrize("code", not_ascii(AREA))
def test_an_area_code_in_other_digits_is_refused_as_the_district(code: str, tmp_path: Path) -> None:
    with pytest.raises(RoutingError, match="district"):
        load_routing(routing_file(tmp_path, district=code))
    result = CliRunner().invoke(collector_cli, ["run", "--district", code], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert "is not an area code: 6 digits (GB/T 2260 行政区划代码)" in result.output


def test_a_case_number_takes_no_area_code_from_a_grid_in_other_digits(tmp_path: Path) -> None:
    routing = load_routing(routing_file(tmp_path, district=AREA))
    assert routing.area_code(None, "320102" + "00100101") == "320102"
    assert routing.area_code(None, "３２０１０２00100101") == AREA


@pytest.mark.parametrize("text", ["8080", "0"])
def test_an_ascii_number_is_a_number(text: str) -> None:
    assert is_ascii_number(text)
    assert _split_http(f"127.0.0.1:{text}") == ("127.0.0.1", int(text))
    assert _control_address(f"127.0.0.1:{text}", None) == ("127.0.0.1", int(text))


@pytest.mark.parametrize("text", ["８０８０", "٨٠٨٠", "80²", "²", "", "-1", "+1", " 1"])
def test_a_number_in_other_digits_is_refused_not_read_or_crashed_on(text: str) -> None:
    # ８０８０ was read as port 8080; 80² passed isdigit() and int() raised ValueError.
    assert not is_ascii_number(text)
    with pytest.raises(typer.BadParameter, match="HOST:PORT"):
        _split_http(f"127.0.0.1:{text}")
    with pytest.raises(typer.BadParameter, match="HOST:PORT"):
        _control_address(f"127.0.0.1:{text}", None)
    with pytest.raises(typer.BadParameter, match="is not a baud rate"):
        _line_settings(text or "0", "N")


@pytest.mark.parametrize("text", ["２h", "٢h", "1.５h", "²h"])
def test_a_duration_in_other_digits_is_refused(text: str) -> None:
    assert _parse_since("2h") == 2 * 3600 * 1000
    with pytest.raises(typer.BadParameter, match="is not a duration"):
        _parse_since(text)


def test_an_id_ending_in_a_newline_is_refused() -> None:
    # Python's `$` matches before a trailing newline: `^...$` with re.match took "gw-1\n".
    with pytest.raises(WireError, match="not a valid id"):
        check_ident("gw-1\n", "gateway")
    with pytest.raises(typer.BadParameter, match="a gateway id is letters"):
        _check_ident("--gateway", "gateway id")("gw-1\n")
    with pytest.raises(ValidationError, match="gateway/device"):
        Asset(code=ASSET, owner="燃气集团", devices=("gw-1/mh-1\n",))
