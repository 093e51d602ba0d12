"""The department registry's rules: what a department code and name may be, checked alike by
the HTTP API and `lifeline collector departments`."""

import re
import unicodedata

CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"
MAX_NAME = 100


def check_code(code: str) -> str:
    """`code` if it is a department code (1-32 of A-Z a-z 0-9 _ . -, starting alphanumeric);
    ValueError saying the rule otherwise."""
    if not re.fullmatch(CODE_PATTERN, code, flags=re.ASCII):
        raise ValueError(
            f"department code {code!r} must be 1-32 of A-Z a-z 0-9 _ . -, starting with a"
            " letter or digit"
        )
    return code


def check_name(name: str) -> str:
    """`name` if it can name a department: 1-100 characters, no control character, no space at
    either end (two names that differ only there would pass for one); ValueError otherwise."""
    if not name.strip():
        raise ValueError("a department name must not be empty")
    if len(name) > MAX_NAME:
        raise ValueError(f"a department name is at most {MAX_NAME} characters")
    if name != name.strip():
        raise ValueError(f"department name {name!r} must not start or end with a space")
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)
    if bad is not None:
        raise ValueError(f"department name {name!r} holds a control character U+{ord(bad):04X}")
    return name
