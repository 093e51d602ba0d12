"""The column-wise data decoder accepts exactly what the record-by-record decoder accepts."""

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifeline.wire import WireError
from lifeline.wire.codec import _dec_columns, _dec_rows

pytestmark = pytest.mark.unit

T0 = 1_763_700_000_000

# Mostly valid fields with the odd wrong one, so that both paths meet every kind of flaw.
devices = st.sampled_from(["d1", "dev-002", "bad id", "", 7, None, "x" * 70])
points = st.sampled_from(["p", "temp", "x" * 64, "x" * 65, 3, None])
stamps = st.sampled_from([T0, T0 + 1, 946_684_800_000, 4_102_444_800_001, 0, 1.5, True, "t"])
values = st.one_of(
    st.floats(),  # NaN and infinities included
    st.integers(-(2**64), 2**64),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.just("v" * 300),
    st.just([1]),
)
qualities = st.sampled_from(["good", "uncertain", "bad", "stale", "GOOD", 1, None])
hists = st.sampled_from([False, True, 0, 1, None])
rows = st.lists(
    st.one_of(
        st.tuples(devices, points, stamps, values, qualities, hists).map(list),
        st.just([]),
        st.just(("d1", "p", T0, 1.0, "good", False)),
        st.just(["d1", "p", T0, 1.0, "good"]),
    ),
    max_size=8,
)


def by_rows(raw: list[Any]) -> Any:
    try:
        return tuple(_dec_rows(raw))
    except WireError:
        return WireError


@settings(max_examples=600, deadline=None)
@given(rows)
def test_columns_agree_with_rows_or_step_aside(raw: list[Any]) -> None:
    got = _dec_columns(raw)
    if got is not None:
        assert got == by_rows(raw)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["d1", "d2", "dev-3"]),
            st.sampled_from(["a", "b"]),
            st.integers(T0, T0 + 10_000),
            st.floats(allow_nan=False, allow_infinity=False),
            st.sampled_from(["good", "uncertain", "bad"]),
            st.booleans(),
        ).map(list),
        min_size=1,
        max_size=50,
    )
)
def test_typical_telemetry_takes_the_column_path(raw: list[Any]) -> None:
    got = _dec_columns(raw)
    assert got is not None
    assert got == by_rows(raw)


def test_stale_with_a_value_is_left_to_the_row_path_which_refuses_it() -> None:
    raw = [["d1", "p", T0, 1.0, "good", False], ["d1", "p", T0, 2.0, "stale", False]]
    assert _dec_columns(raw) is None
    assert by_rows(raw) is WireError
    fine = [["d1", "p", T0, 1.0, "good", False], ["d1", "p", T0, None, "stale", False]]
    assert _dec_columns(fine) == by_rows(fine)
