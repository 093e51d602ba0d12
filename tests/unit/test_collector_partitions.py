"""Partitions of the topic space: parsing, each collector's order of preference, fair shares."""

import pytest

from lifeline.collector.partitions import Partition, parse_partitions, preference, target

pytestmark = pytest.mark.unit


def test_partitions_parse_names_and_sites() -> None:
    assert parse_partitions("north=xihu,gongshu; south=binjiang;") == [
        Partition("north", ("xihu", "gongshu")),
        Partition("south", ("binjiang",)),
    ]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "no partitions given"),
        ("north", "is not NAME=SITE,SITE"),
        ("nor th=a", "is not NAME=SITE,SITE"),
        ("north=", "has no sites"),
        ("north=a/b", "is not an MQTT topic level"),
        ("north=a+", "is not an MQTT topic level"),
        ("north=a;south=b,a", "site 'a' is in partitions 'north' and 'south'"),
        ("north=a;north=b", "named twice"),
    ],
)
def test_bad_partitions_are_refused_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_partitions(text)


def test_each_member_has_its_own_stable_order() -> None:
    names = [f"p{i}" for i in range(8)]
    a, b = preference("collector-a", names), preference("collector-b", names)
    assert sorted(a) == sorted(b) == names
    assert a == preference("collector-a", list(reversed(names)))  # the order given is no matter
    assert a != b  # two collectors starting at once mostly want different partitions first


@pytest.mark.parametrize(
    ("partitions", "members", "share"), [(2, 1, 2), (2, 2, 1), (3, 2, 2), (2, 3, 1), (4, 0, 4)]
)
def test_fair_share(partitions: int, members: int, share: int) -> None:
    assert target(partitions, members) == share
