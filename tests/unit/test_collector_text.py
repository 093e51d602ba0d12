"""The one rule for free text a person types (collector.text), with plain values."""

import pytest

from lifeline.collector.text import check_text


@pytest.mark.parametrize(
    "bad",
    [
        "\x00", "\x1b", "\r", "\x7f", "\x85", "\u061c",
        "\u200e", "\u200f", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e",
        "\u2066", "\u2067", "\u2068", "\u2069", "\u2028", "\u2029", "\ud800",
    ],
)  # fmt: skip
def test_control_bidi_and_separator_characters_are_refused(bad: str) -> None:
    for multiline in (True, False):
        with pytest.raises(ValueError, match=f"U\\+{ord(bad):04X}"):
            check_text(f"闻到燃气{bad}味", "note", multiline=multiline)


def test_newline_and_tab_only_where_lines_are_allowed() -> None:
    text = "现场:\n\t井盖缺失"
    assert check_text(text, "note", multiline=True) == text
    with pytest.raises(ValueError, match="one line"):
        check_text(text, "condition", multiline=False)
    # Text of every script, emoji joiners and full-width forms stay: only the listed are refused.
    ordinary = "井盖缺失 👨\u200d🔧 ＡＢＣ مرحبا"
    assert check_text(ordinary, "note", multiline=False) == ordinary
