"""The department registry's rules: what a department code and name may be, checked alike by
the HTTP API and `lifeline collector departments`; and what may name a key's holder or the
person a key acts for."""

import re
import unicodedata

CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"
MAX_NAME = 100
SYSTEM_ACTOR = "system"  # the actor of the collector's own audit rows


def check_code(code: str) -> str:
    """`code` if it is a department code (1-32 of A-Z a-z 0-9 _ . -, starting alphanumeric);
    ValueError saying the rule otherwise."""
    if not re.fullmatch(CODE_PATTERN, code, flags=re.ASCII):
        raise ValueError(
            f"department code {code!r} must be 1-32 of A-Z a-z 0-9 _ . -, starting with a"
            " letter or digit"
        )
    return code


def check_label(value: str, what: str) -> str:
    """`value` if it can name someone in the registry or the audit (`what` says which, e.g. "a
    department name"): 1-100 characters, no control, format (bidi) or line-separator character
    (ESC, newline, U+202E would rewrite a terminal or reorder what a reader sees), no lone
    surrogate (undecodable bytes, or a JSON escape like \\udcff), no space at
    either end (two names that differ only there would pass for one); ValueError otherwise."""
    if not value.strip():
        raise ValueError(f"{what} must not be empty")
    if len(value) > MAX_NAME:
        raise ValueError(f"{what} is at most {MAX_NAME} characters")
    if value != value.strip():
        raise ValueError(f"{what} {value!r} must not start or end with a space")
    bad = next((c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)
    if bad is not None:
        raise ValueError(f"{what} {value!r} holds a control character U+{ord(bad):04X}")
    if any(unicodedata.category(c) == "Cs" for c in value):  # no database or terminal takes it
        raise ValueError(f"{what} {value!r} holds a lone surrogate: it is not text")
    return value


def check_name(name: str) -> str:
    """`name` if it can name a department (see check_label); ValueError otherwise."""
    return check_label(name, "a department name")


def check_actor(name: str) -> str:
    """`name` if it can name a key holder or the person a key acts for (`on_behalf_of`): a
    label (see check_label) other than the reserved actor `system`, which marks the collector's
    own audit rows. ValueError otherwise."""
    check_label(name, "a name")
    if name.strip().casefold() == SYSTEM_ACTOR:
        raise ValueError(f"{name!r} is reserved for the collector's own actions")
    return name
