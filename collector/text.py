"""The one rule for free text a person types (notes, 处置意见, 核查结果, 立案/结案条件,
descriptions, addresses, a caller's name), shared by the case API, 上报 and Open311.

Names of departments and key holders follow the stricter label rule in
collector.departments (no format character at all, no line break)."""

import re

# C0 and C1 controls; the bidi embeddings, overrides, isolates and marks (U+202A-U+202E,
# U+2066-U+2069, U+200E/U+200F, U+061C) that reorder what a reader sees (Unicode TR #9,
# "Trojan Source"); the line and paragraph separators U+2028/U+2029, which split a line where
# a reader, a log or a CSV does not expect one; lone surrogates, which no database stores.
_REFUSED = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff]"
)
_MULTILINE_OK = frozenset("\n\t")


def check_text(value: str, what: str, *, multiline: bool) -> str:
    """`value` if it is free text a person may type into field `what` (e.g. "note"): no control
    character (only newline and tab, and only where `multiline` text is allowed), no bidi
    control (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C), no line or paragraph
    separator (U+2028, U+2029) and no lone surrogate.

    Returns `value` unchanged; raises ValueError naming the field and the first refused
    character (as U+XXXX)."""
    for match in _REFUSED.finditer(value):
        c = match.group()
        if multiline and c in _MULTILINE_OK:
            continue
        lines = "" if multiline else "; it is one line"
        raise ValueError(f"{what} holds a control or bidi character U+{ord(c):04X}{lines}")
    return value
