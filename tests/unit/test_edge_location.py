"""Install locations: the gateway config's `location` blocks, strictly checked, and the birth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lifeline.edge.config import ConfigError, load_config
from lifeline.wire import Birth, Location, decode, encode
from tests.fakes import fake_gateway

pytestmark = pytest.mark.unit

CABINET: dict[str, Any] = {
    "lon": 120.1302,
    "lat": 30.2745,
    "datum": "CGCS2000",
    "address": "文三路 412 号机柜",
}


def config(tmp_path: Path, **top: Any) -> dict[str, Any]:
    return {
        "gateway": "gw-1",
        "site": "xihu",
        "buffer": {"path": str(tmp_path / "b.sqlite")},
        "buses": [
            {
                "type": "tcp",
                "host": "127.0.0.1",
                "devices": [
                    {"id": "mh-1", "unit": 1, "profile": "manhole_cover"},
                    {"id": "gas-1", "unit": 2, "profile": "gas_detector"},
                ],
            }
        ],
        **top,
    }


def load(tmp_path: Path, data: dict[str, Any]) -> Any:
    path = tmp_path / "gw.yaml"
    # Escaped (not allow_unicode): a raw U+0085 would be read back as a line break.
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_config(path)


DTU: dict[str, Any] = {"lon": 120.1452, "lat": 30.2768, "address": "古新河桥 DTU 箱"}


def test_the_birth_gives_each_device_its_own_location_else_its_cabinets(tmp_path: Path) -> None:
    """Device's own, else its bus's cabinet (a DTU box), else the gateway's cabinet."""
    data = config(tmp_path, location=CABINET)
    well: dict[str, Any] = {
        "lon": 120.1311,
        "lat": 30.2751,
        "datum": "GCJ-02",
        "address": "井 A-07\n东侧",
    }
    data["buses"][0]["devices"][0]["location"] = well
    bridge = {"type": "tcp", "host": "127.0.0.1", "port": 1503, "location": DTU}
    bridge["devices"] = [{"id": "tilt-1", "unit": 1, "profile": "tilt_sensor"}]
    data["buses"].append(bridge)
    cfg = load(tmp_path, data)
    gw, _ = fake_gateway(cfg, tmp_path)
    birth = gw.birth()
    places = {d.device: d.location for d in birth.devices}
    assert places == {
        "mh-1": Location(**well),
        "gas-1": Location(**CABINET),
        "tilt-1": Location(**DTU),  # CGCS2000 unless said otherwise
    }
    again = decode(encode(birth))  # the collector reads what the gateway wrote
    assert isinstance(again, Birth)
    assert again.devices == birth.devices


def test_without_any_location_the_birth_says_none(tmp_path: Path) -> None:
    cfg = load(tmp_path, config(tmp_path))
    gw, _ = fake_gateway(cfg, tmp_path)
    assert [d.location for d in gw.birth().devices] == [None, None]


@pytest.mark.parametrize(
    ("location", "field", "reason"),
    [
        ({**CABINET, "lon": 181}, "location.lon", "less than or equal to 180"),
        ({**CABINET, "lat": -91}, "location.lat", "greater than or equal to -90"),
        ({**CABINET, "lat": float("nan")}, "location.lat", "finite number"),
        ({**CABINET, "lat": "30.27"}, "location.lat", "valid number"),
        ({**CABINET, "datum": "GCJ02"}, "location.datum", "'CGCS2000', 'WGS84', 'GCJ-02' or"),
        ({"lon": 120.1}, "location.lat", "Field required"),
        ({**CABINET, "lng": 120.1}, "location.lng", "did you mean 'lon'?"),
        ({**CABINET, "address": "路\x00口"}, "location.address", "control character U+0000"),
        ({**CABINET, "address": "路\x85口"}, "location.address", "control character U+0085"),
        ({**CABINET, "address": "路" * 257}, "location.address", "at most 256 characters"),
    ],
)
def test_a_bad_location_is_rejected_with_field_and_reason(
    tmp_path: Path, location: dict[str, Any], field: str, reason: str
) -> None:
    on_bus = config(tmp_path)
    on_bus["buses"][0]["location"] = location
    for data, prefix in (
        (config(tmp_path, location=location), ""),
        (on_bus, "buses[0]."),
        (_on_device(config(tmp_path), location), "buses[0].devices[1]."),
    ):
        with pytest.raises(ConfigError) as err:
            load(tmp_path, data)
        assert any(f == prefix + field and reason in r for f, r in err.value.problems), (
            err.value.problems
        )


def _on_device(data: dict[str, Any], location: dict[str, Any]) -> dict[str, Any]:
    data["buses"][0]["devices"][1]["location"] = location
    return data


def test_an_address_keeps_lines_tabs_and_quotes(tmp_path: Path) -> None:
    address = "文三路 412 号\r\n\t\"东北角\" 'B' 机柜 # 2"
    cfg = load(tmp_path, config(tmp_path, location={"lon": 120, "lat": 30, "address": address}))
    assert cfg.location is not None
    assert (cfg.location.address, cfg.location.datum, cfg.location.lon) == (
        address,
        "CGCS2000",
        120.0,
    )
