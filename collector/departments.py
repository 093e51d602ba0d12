"""The department registry's rules: what a department code and name may be, checked alike by
the HTTP API and `lifeline collector departments`; and what may name a key's holder or the
person a key acts for."""

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class Directory:
    """The department registry as routing reads it: every value that names a registered
    department — its code, its registered name, a name it had before (a rename or a table
    written earlier follows it), the name a routing table declares for its code — mapped to the
    registered name cases carry. Nothing else resolves: routing never hands a case to a name
    the registry does not hold."""

    names: Mapping[str, str]

    @classmethod
    def of(
        cls,
        registry: Mapping[str, str],
        history: Mapping[str, Sequence[str]] | None = None,
        declared: Mapping[str, str] | None = None,
    ) -> "Directory":
        """The directory of `registry` (code -> registered name), `history` (code -> every
        name it has had, KeyStore.department_names) and `declared` (code -> name, a routing
        table's `departments`); codes not in `registry` add nothing."""
        names: dict[str, str] = {}
        # Weakest first: a registered name or a code wins over an older or declared label.
        for code, name in (declared or {}).items():
            if code in registry:
                names[name] = registry[code]
        for code, old in (history or {}).items():
            for name in old if code in registry else ():
                names[name] = registry[code]
        for code, name in registry.items():
            names[name] = name
            names[code] = name
        return cls(names)

    def name(self, value: str) -> str | None:
        """The registered name of the department `value` names (code or name), else None."""
        return self.names.get(value)
