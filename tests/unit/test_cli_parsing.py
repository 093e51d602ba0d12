"""Pure parts of the installer/crew CLI: argument parsing and plain table output."""

import re

import pytest
import typer
import yaml

from lifeline.collector.grids import GridError, check_grid_code
from lifeline.drivers.baudrates import baudrate_problem
from lifeline.drivers.scan import firmware_text, parse_units
from lifeline.edge.cli_output import print_table
from lifeline.edge.config import ConfigError, config_warnings, parse_config
from lifeline.edge.crew import _parse_severity, _parse_since, _parse_value
from lifeline.edge.device_names import KnownDevice, UnknownDevice, resolve_device
from lifeline.edge.installer import _check_grid, _hostname, _line_settings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("code", "valid"),
    [
        ("33010600100101", True),  # 6 area + 3 街道 + 3 社区 + 2 grid
        ("330106001001012", True),  # the 15-digit variant
        ("330106001001", False),  # a 社区 code, which the edge took as a grid
        ("330106", False),
        ("33010600100101234567", False),  # 20 digits: the edge took those too
        ("3301060010010x", False),
        ("٣٣٠١٠٦٠٠١٠٠١٠١", False),  # 14 Arabic-Indic digits
        ("33010600100101\nx: 1", False),
    ],
)
def test_edge_commission_takes_the_grid_codes_the_collector_takes(code: str, valid: bool) -> None:
    # edge commission --grid took 6-20 digits while the collector wants 14 or 15: a cabinet
    # commissioned with a 社区 code carried a grid the command center refuses.
    if valid:
        assert check_grid_code(code) == _check_grid(code) == code
        return
    rule = re.escape("14 digits (6 area + 3 街道 + 3 社区 + 2 grid) or 15")
    with pytest.raises(GridError, match=rule):
        check_grid_code(code)
    with pytest.raises(typer.BadParameter, match=rule):
        _check_grid(code)


@pytest.mark.parametrize(
    ("text", "units"),
    [("1-4", [1, 2, 3, 4]), ("7", [7]), ("1,5,3-4", [1, 3, 4, 5]), (" 2 , 2-3 ", [2, 3])],
)
def test_parse_units(text: str, units: list[int]) -> None:
    assert parse_units(text) == units


@pytest.mark.parametrize("text", ["0-3", "5-2", "1-248", "a", "1-", ""])
def test_parse_units_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="unit"):
        parse_units(text)


def test_firmware_text_reads_major_minor() -> None:
    assert (firmware_text(0x0102), firmware_text(0x0A00), firmware_text(None)) == (
        "1.2",
        "10.0",
        None,
    )


def test_line_settings_cross_product_and_errors() -> None:
    lines = _line_settings("9600,19200", "n,E")
    assert [str(x) for x in lines] == ["9600 8N1", "9600 8E1", "19200 8N1", "19200 8E1"]
    with pytest.raises(typer.BadParameter, match="not a parity"):
        _line_settings("9600", "X")
    with pytest.raises(typer.BadParameter, match="not a baud rate"):
        _line_settings("96OO", "N")


@pytest.mark.parametrize(
    ("text", "ms"), [("90s", 90_000), ("30m", 1_800_000), ("2h", 7_200_000), ("1.5d", 129_600_000)]
)
def test_parse_since(text: str, ms: int) -> None:
    assert _parse_since(text) == ms


@pytest.mark.parametrize("text", ["2", "2 weeks", "-1h", "h"])
def test_parse_since_rejects(text: str) -> None:
    with pytest.raises(typer.BadParameter, match="duration"):
        _parse_since(text)


def test_parse_severity_accepts_levels_and_words() -> None:
    assert [_parse_severity(x) for x in ("1", "critical", "High", "4")] == [1, 1, 2, 4]
    with pytest.raises(typer.BadParameter):
        _parse_severity("5")


def test_parse_value_by_point_type() -> None:
    assert [_parse_value(x, "bool") for x in ("on", "OFF", "1", "false")] == [
        True,
        False,
        True,
        False,
    ]
    assert _parse_value("40", "uint16") == 40
    assert isinstance(_parse_value("40", "uint16"), int)
    assert _parse_value("2.5", "float32") == 2.5
    with pytest.raises(typer.BadParameter, match="on/off"):
        _parse_value("dim", "bool")
    with pytest.raises(typer.BadParameter, match="not a number"):
        _parse_value("lots", "uint16")


def test_hostname_is_made_valid() -> None:
    assert _hostname("lifeline-GW_Xh.0412") == "lifeline-gw-xh-0412"


def test_plain_table_aligns_wide_characters(capsys: pytest.CaptureFixture[str]) -> None:
    print_table(["严重度", "state"], [["二级 high", "active_unacked"], ["4", "normal"]])
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["严重度     state", "二级 high  active_unacked", "4          normal"]


def test_non_standard_baud_rates_are_named_with_the_standard_ones() -> None:
    assert baudrate_problem(9600) == ""
    assert baudrate_problem(115200) == ""
    assert baudrate_problem(96000).startswith(
        "96000 is not a standard baud rate (did you mean 9600?)"
    )
    assert "(did you mean 9600?)" in baudrate_problem(9601)
    assert "did you mean" not in baudrate_problem(12345)
    assert "standard: 300, 600, 1200, 2400, 4800, 9600, 14400, 19200" in baudrate_problem(12345)


def test_scan_warns_about_a_non_standard_baud_rate_and_refuses_the_absurd(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert [str(x) for x in _line_settings("9601", "N")] == ["9601 8N1"]
    assert "warning: --baud 9601 is not a standard baud rate (did you mean 9600?)" in (
        capsys.readouterr().err
    )
    with pytest.raises(typer.BadParameter, match=r"standard: 300, .*, 115200"):
        _line_settings("5000000", "N")


def test_gateway_config_warns_about_a_non_standard_rate_and_refuses_the_absurd() -> None:
    def rtu(baudrate: int) -> dict[str, object]:
        device = {"id": "sl-1", "unit": 1, "profile": "streetlight"}
        bus = {"type": "rtu", "port": "/dev/ttyUSB0", "baudrate": baudrate, "devices": [device]}
        return {"gateway": "gw", "site": "s", "buses": [bus]}

    assert config_warnings(parse_config(rtu(9600))) == []
    ((field, reason),) = config_warnings(parse_config(rtu(96000)))
    assert field == "buses[0].baudrate"
    assert reason.startswith("96000 is not a standard baud rate (did you mean 9600?)")
    with pytest.raises(ConfigError, match=r"5000000 is no serial line rate .*standard: 300"):
        parse_config(rtu(5_000_000))


def test_a_device_is_named_by_its_id_its_part_after_the_gateway_or_a_unit_found_once() -> None:
    known = [
        KnownDevice("gw-xh.b1-mh-001", 1),
        KnownDevice("gw-xh.b1-sl-004", 4),
        KnownDevice("gw-xh.b2-sl-004", 4),
        KnownDevice("7", 9),  # a hand-written config may call a device anything
        KnownDevice("gas-1"),  # from a buffer read without its config: no unit known
    ]
    assert resolve_device("gw-xh.b1-mh-001", known) == "gw-xh.b1-mh-001"
    assert resolve_device("b1-sl-004", known) == "gw-xh.b1-sl-004"
    assert resolve_device(" b2-sl-004 ", known) == "gw-xh.b2-sl-004"
    assert resolve_device("1", known) == "gw-xh.b1-mh-001"
    assert resolve_device("7", known) == "7"  # its id, though no unit 7
    assert resolve_device("gas-1", known) == "gas-1"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nosuch", "no device 'nosuch' on gateway gw-xh; its devices: gw-xh.b1-mh-001, "
         "gw-xh.b1-sl-004, gw-xh.b2-sl-004"),
        ("4", "'4' names 2 devices on gateway gw-xh (gw-xh.b1-sl-004, gw-xh.b2-sl-004): give "
         "the full device id"),
        ("", "no device '' on gateway gw-xh"),
        ("sl-004", "no device 'sl-004'"),  # a tail must start after a dot, not inside a part
        ("GW-XH.B1-MH-001", "no device 'GW-XH.B1-MH-001'"),  # ids are case-sensitive
        ("b1-mh-001\nerror: forged", r"no device 'b1-mh-001\nerror: forged'"),  # one line
    ],
)  # fmt: skip
def test_a_name_of_no_device_or_of_several_lists_them(name: str, message: str) -> None:
    known = [
        KnownDevice("gw-xh.b1-mh-001", 1),
        KnownDevice("gw-xh.b1-sl-004", 4),
        KnownDevice("gw-xh.b2-sl-004", 4),
    ]
    with pytest.raises(UnknownDevice) as err:
        resolve_device(name, known, "on gateway gw-xh")
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def _follow(data: object, path: str) -> object:
    """The value a YAML path such as `buses[1].devices[0].unit` leads to in parsed YAML."""
    for key, index in re.findall(r"\.?([^.\[\]]+)|\[(\d+)\]", path):
        data = data[int(index)] if index else data[key]  # type: ignore[index]
    return data


def test_config_warnings_and_errors_name_the_yaml_path_a_person_edits() -> None:
    # The warning said `buses.1.baudrate` and a schema error `buses.1.rtu.devices.0.unit`
    # (pydantic's bus type tag): neither is a path in the file.
    tcp = {"type": "tcp", "host": "10.0.0.5", "devices": [{"id": "a", "unit": 1, "profile": "x"}]}
    device = {"id": "b", "unit": 1, "profile": "streetlight"}
    rtu = {"type": "rtu", "port": "/dev/ttyUSB0", "baudrate": 96000, "devices": [device]}
    data = yaml.safe_load(yaml.safe_dump({"gateway": "gw", "site": "s", "buses": [tcp, rtu]}))
    ((field, _),) = config_warnings(parse_config(data))
    assert field == "buses[1].baudrate"
    assert _follow(data, field) == 96000
    data["buses"][1]["devices"][0]["unit"] = 999
    data["buses"][1]["parity"] = "X"
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    fields = [f for f, _ in err.value.problems]
    assert fields == ["buses[1].devices[0].unit", "buses[1].parity"]
    assert [_follow(data, f) for f in fields] == [999, "X"]
