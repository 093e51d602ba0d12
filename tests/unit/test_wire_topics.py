"""Topic names are built and parsed per the v1 scheme, and hostile names are refused."""

import pytest

from lifeline.wire import Kind, TopicParts, WireError, parse_topic, subscription, topic

pytestmark = pytest.mark.unit


def test_topic_round_trip_for_every_kind() -> None:
    for kind in Kind:
        name = topic("xh-district", "gw-07", kind)
        assert name == f"lifeline/v1/xh-district/gw-07/{kind.value}"
        assert parse_topic(name) == TopicParts("xh-district", "gw-07", kind)


def test_custom_root_is_honoured() -> None:
    name = topic("s", "g", Kind.CMD_REPLY, root="t-1/lifeline")
    assert parse_topic(name, root="t-1/lifeline").kind is Kind.CMD_REPLY
    with pytest.raises(WireError, match="not under root"):
        parse_topic(name)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("lifeline/v2/s/g/data", "unsupported version"),
        ("lifeline/v1/s/g/telemetry", "unknown kind"),
        ("lifeline/v1/s/g", "must be"),
        ("lifeline/v1/s/g/data/extra", "must be"),
        ("lifeline/v1/s/+/data", "not a valid id"),
        ("lifeline/v1/s/ /data", "not a valid id"),
        ("lifeline/v1/" + "s" * 65 + "/g/data", "not a valid id"),
        ("other/v1/s/g/data", "not under root"),
    ],
)
def test_malformed_topics_say_why(name: str, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        parse_topic(name)


def test_ids_with_wildcards_cannot_build_a_topic() -> None:
    for bad in ("#", "a/b", "", "-lead"):
        with pytest.raises(WireError):
            topic("site", bad, Kind.DATA)


def test_subscriptions_plain_and_shared() -> None:
    assert subscription() == "lifeline/v1/+/+/+"
    assert subscription(Kind.DATA, share_group="col") == "$share/col/lifeline/v1/+/+/data"
    with pytest.raises(WireError):
        subscription(share_group="a/b")
