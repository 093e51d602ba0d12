"""Pure input handling: asset files, the routing table, and payload classification."""

from pathlib import Path

import pytest

from lifeline.collector.assets import AssetError, load, parse_csv, parse_yaml
from lifeline.collector.ingest import classify, parse_mqtt_url
from lifeline.collector.models import Accepted, Rejected
from lifeline.wire import DataBatch, Kind, Record, Status, encode, topic

pytestmark = pytest.mark.unit

CSV_HEAD = "code,name,owner,maintainer,grid,address,lon,lat,datum,devices\n"


def test_csv_assets_parse_with_derived_fields() -> None:
    row = "3101040111000001,井盖,燃气公司,,31010400100101,漕溪路1号,121.43,31.18,CGCS2000,g1;g2"
    text = CSV_HEAD + row + "\n"
    (a,) = parse_csv(text)
    assert (a.area, a.subcategory, a.maintainer, a.devices) == (
        "310104",
        "0111",
        "燃气公司",
        ("g1", "g2"),
    )


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("311040111000001,x,o,,,a,,,CGCS2000,", "16 digits"),
        ("31010401110000AB,x,o,,,a,,,CGCS2000,", "16 digits"),
        ("3101040111000001,x,,,,a,,,CGCS2000,", "owner"),
        ("3101040111000001,x,o,,,a,121.4,,CGCS2000,", "both lon and lat"),
        ("3101040111000001,x,o,,,a,221.4,31,CGCS2000,", "out of range"),
        ("3101040111000001,x,o,,,a,,,Beijing54,", "datum"),
        ("3101040111000001,x,o,,310104001,a,,,CGCS2000,", "14 digits"),  # a 社区, not a grid
    ],
)
def test_bad_csv_rows_name_the_line_and_field(row: str, message: str) -> None:
    with pytest.raises(AssetError, match=message) as err:
        parse_csv(CSV_HEAD + row + "\n", "assets.csv")
    assert "assets.csv line 2" in str(err.value)


def test_yaml_assets_check_subcategory_and_duplicates() -> None:
    ok = "assets:\n  - {code: '3101040118000002', owner: 路灯所, subcategory: '0118'}\n"
    assert parse_yaml(ok)[0].subcategory == "0118"
    with pytest.raises(AssetError, match="does not match"):
        parse_yaml("- {code: '3101040118000002', owner: o, subcategory: '0111'}")
    with pytest.raises(AssetError, match="already defined"):
        parse_yaml("- {code: '3101040118000002', owner: o}\n- {code: '3101040118000002', owner: p}")
    with pytest.raises(AssetError, match="colour: Extra inputs"):
        parse_yaml("- {code: '3101040118000002', owner: o, colour: red}")


def test_an_asset_file_that_cannot_be_read_is_an_asset_error_naming_it(tmp_path: Path) -> None:
    # Before, these left load() as UnicodeDecodeError and IsADirectoryError: a traceback from
    # `lifeline collector assets import`.
    gbk = tmp_path / "assets.csv"
    gbk.write_bytes(CSV_HEAD.encode() + "3101040111000001,井盖,o,,,a,,,CGCS2000,\n".encode("gbk"))
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    for path in (gbk, folder):
        with pytest.raises(AssetError, match=f"^{path}: cannot read it: "):
            load(path)


ROOT = "lifeline"
BATCH = DataBatch(
    "gw1", "s", 1, 1_800_000_000_000, (Record("d", "p", 1_800_000_000_000, 1),), epoch="e1"
)


@pytest.mark.parametrize(
    ("topic_name", "payload", "reason"),
    [
        (topic("s", "gw2", Kind.DATA), encode(BATCH), "does not match payload gateway"),
        (topic("s", "gw1", Kind.ALARM), encode(BATCH), "does not match payload kind"),
        ("other/v1/s/gw1/data", encode(BATCH), "not under root"),
        (topic("s", "gw1", Kind.DATA), b"\xc1", "not valid msgpack"),
        (topic("s", "gw1", Kind.DATA), b"", "empty"),
    ],
)
def test_classify_rejects_with_reason(topic_name: str, payload: bytes, reason: str) -> None:
    got = classify(topic_name, payload, ROOT, 5)
    assert isinstance(got, Rejected)
    assert reason in got.reason
    assert (got.topic, got.payload, got.received_ms) == (topic_name, payload, 5)


def test_classify_accepts_matching_messages() -> None:
    got = classify(topic("s", "gw1", Kind.DATA), encode(BATCH), ROOT, 5)
    assert isinstance(got, Accepted)
    assert (got.topic.site, got.message) == ("s", BATCH)
    status = Status("gw1", "s", 0, 1_800_000_000_000, {"x": 1})
    assert isinstance(classify(topic("s", "gw1", Kind.STATUS), encode(status), ROOT, 5), Accepted)


def test_mqtt_urls() -> None:
    assert parse_mqtt_url("mqtt://10.0.0.2:1884") == ("10.0.0.2", 1884)
    assert parse_mqtt_url("mqtt://broker") == ("broker", 1883)
    with pytest.raises(ValueError, match="mqtt://"):
        parse_mqtt_url("http://x:1")
