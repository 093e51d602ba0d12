"""Read planning (drivers/planner.py): coalescing, limits, splitting a refused read."""

import pytest

from lifeline.drivers.planner import ReadRequest, plan_reads, split_read
from lifeline.drivers.profile import PointSpec
from lifeline.drivers.values import decode_response

pytestmark = pytest.mark.unit


def pt(name: str = "p", **kw: object) -> PointSpec:
    base: dict[str, object] = {"name": name, "table": "holding", "address": 0, "dtype": "uint16"}
    return PointSpec.model_validate({**base, **kw})


def spans(points: list[PointSpec], **kw: int) -> list[tuple[str, int, int]]:
    return [(str(r.table), r.address, r.count) for r in plan_reads(points, **kw)]


PLAN_CASES = [
    # (points as (table, address, dtype), planner kwargs, expected (table, address, count))
    ([("holding", 0, "uint16"), ("holding", 1, "uint16")], {}, [("holding", 0, 2)]),
    ([("holding", 0, "uint16"), ("holding", 10, "float32")], {"max_gap": 9}, [("holding", 0, 12)]),
    (
        [("holding", 0, "uint16"), ("holding", 10, "uint16")],
        {"max_gap": 8},
        [("holding", 0, 1), ("holding", 10, 1)],
    ),
    ([("holding", 0, "uint16"), ("input", 1, "uint16")], {}, [("holding", 0, 1), ("input", 1, 1)]),
    (
        [("holding", 0, "uint16"), ("holding", 124, "uint16"), ("holding", 125, "uint16")],
        {"max_gap": 200},
        [("holding", 0, 125), ("holding", 125, 1)],
    ),
    (
        [("holding", 123, "float32"), ("holding", 0, "uint16")],
        {"max_gap": 200},
        [("holding", 0, 125)],
    ),
    (
        [("holding", 124, "float32"), ("holding", 0, "uint16")],
        {"max_gap": 200},
        [("holding", 0, 1), ("holding", 124, 2)],
    ),
    ([("coil", 0, "bool"), ("coil", 1999, "bool")], {"max_gap": 5000}, [("coil", 0, 2000)]),
    (
        [("coil", 0, "bool"), ("coil", 2000, "bool")],
        {"max_gap": 5000},
        [("coil", 0, 1), ("coil", 2000, 1)],
    ),
    (
        [("holding", 0, "uint16"), ("holding", 3, "uint16")],
        {"max_registers": 3},
        [("holding", 0, 1), ("holding", 3, 1)],
    ),
    (
        [("holding", 5, "uint16"), ("holding", 1, "uint16")],
        {"max_gap": 0},
        [("holding", 1, 1), ("holding", 5, 1)],
    ),
    # max_gap 0 never merges, not even adjacent points (a device that serves one point a read)
    (
        [("holding", 1, "uint16"), ("holding", 2, "float32"), ("holding", 4, "uint16")],
        {"max_gap": 0},
        [("holding", 1, 1), ("holding", 2, 2), ("holding", 4, 1)],
    ),
    ([("holding", 1, "uint16"), ("holding", 2, "uint16")], {"max_gap": 1}, [("holding", 1, 2)]),
]


@pytest.mark.parametrize(("defs", "kwargs", "expected"), PLAN_CASES)
def test_plan_reads_coalesces_within_limits(
    defs: list[tuple[str, int, str]], kwargs: dict[str, int], expected: list[tuple[str, int, int]]
) -> None:
    points = [pt(f"p{i}", table=t, address=a, dtype=d) for i, (t, a, d) in enumerate(defs)]
    assert spans(points, **kwargs) == expected


def test_bits_sharing_a_register_share_one_read_and_decode_apart() -> None:
    points = [pt("a", dtype="bit", bit=0, address=7), pt("b", dtype="bit", bit=1, address=7)]
    (request,) = plan_reads(points)
    assert (request.address, request.count, request.function) == (7, 1, 3)
    assert decode_response(request, [0b10]) == {"a": False, "b": True}


def test_decode_response_maps_each_point_at_its_offset() -> None:
    points = [pt("a", address=2), pt("b", address=5, dtype="int16")]
    (request,) = plan_reads(points)
    assert decode_response(request, [10, 0, 0, 0xFFFF]) == {"a": 10, "b": -1}
    with pytest.raises(ValueError, match="asked for 4"):
        decode_response(request, [10, 0])


def test_max_gap_zero_still_reads_bits_of_one_register_once() -> None:
    points = [pt("a", dtype="bit", bit=0, address=7), pt("b", dtype="bit", bit=3, address=7)]
    assert spans(points, max_gap=0) == [("holding", 7, 1)]


def merged(*defs: tuple[int, str]) -> ReadRequest:
    """One read over points given as (address, dtype), as the planner would merge them."""
    points = [pt(f"p{a}_{i}", address=a, dtype=d, bit=i if d == "bit" else None)
              for i, (a, d) in enumerate(defs)]  # fmt: skip
    (request,) = plan_reads(points, max_gap=125)
    return request


SPLIT_CASES = [
    # (the refused read, the reads tried instead as (address, count))
    # the field's meter: 11174, 11176, 11177, nothing at 11175 -> split at the gap
    (merged((11174, "uint16"), (11176, "uint16"), (11177, "uint16")), [(11174, 1), (11176, 2)]),
    # several gaps: one read per run of adjacent points
    (merged((0, "uint16"), (2, "float32"), (4, "uint16"), (9, "uint16")), [(0, 1), (2, 3), (9, 1)]),
    # no gap (a register limit): halves at a point boundary, never inside a float
    (merged((0, "uint16"), (1, "float32"), (3, "uint16"), (4, "float32")), [(0, 3), (3, 3)]),
    (merged(*[(a, "uint16") for a in range(40)]), [(0, 20), (20, 20)]),
    # bits of one register stay one read; a single point cannot be split
    (merged((7, "bit"), (7, "bit")), []),
    (merged((3, "float32")), []),
    (merged((7, "bit"), (7, "bit"), (8, "uint16")), [(7, 1), (8, 1)]),
]


@pytest.mark.parametrize(("request_", "expected"), SPLIT_CASES)
def test_split_read_at_gaps_then_in_halves(
    request_: ReadRequest, expected: list[tuple[int, int]]
) -> None:
    parts = split_read(request_)
    assert [(r.address, r.count) for r in parts] == expected
    assert sorted(p.name for r in parts for p in r.points) == (
        sorted(p.name for p in request_.points) if parts else []
    )
    assert all(r.table is request_.table for r in parts)
