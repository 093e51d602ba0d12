"""RowMap: the SELECT list of a dataclass built from its fields, and its rows read by name."""

from dataclasses import dataclass

import pytest

from lifeline.collector.store.rows import Col, RowMap

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Spot:
    lon: float
    lat: float


@dataclass(frozen=True)
class Thing:
    id: int
    name: str
    tags: int
    spot: Spot | None


THING = RowMap(
    Thing,
    "t",
    name="t.label",
    tags=Col(int, "count(*)"),
    spot=RowMap(Spot, "s", nullable=True),
)


def test_the_select_list_follows_the_fields_with_their_alias_renames_and_nested_columns() -> None:
    assert THING.select == "t.id, t.label, count(*), s.lon, s.lat"
    assert THING.width == 5


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ((7, "井盖", "3", 120.1, 30.2), Thing(7, "井盖", 3, Spot(120.1, 30.2))),
        ((8, "路灯", "0", None, None), Thing(8, "路灯", 0, None)),
    ],
)
def test_a_row_is_read_by_field_and_a_nullable_nested_field_is_none_without_its_first_column(
    row: tuple[object, ...], expected: Thing
) -> None:
    assert THING(row) == expected


def test_a_column_for_no_field_is_refused_when_the_map_is_made() -> None:
    with pytest.raises(TypeError, match="Thing has no field colour, size"):
        RowMap(Thing, size="n", colour="c")


@pytest.mark.parametrize("row", [(1, "x", 2, 3.0), (1, "x", 2, 3.0, 4.0, 5)])
def test_a_row_of_another_width_is_refused(row: tuple[object, ...]) -> None:
    with pytest.raises(ValueError, match=r"a row of \d columns for Thing, which reads 5"):
        THING(row)
