"""API keys: random bearer tokens stored only as SHA-256 digests, each with one role.

Roles are hierarchical: viewer < dispatcher < operator < admin, and a key may do everything the
roles below it may. A dispatcher moves cases through the workflow, an operator also acknowledges
alarms and sends gateway commands, an admin also manages keys, webhooks and the asset registry.

Why SHA-256 and not bcrypt/argon2: those slow hashes protect low-entropy passwords against
guessing. Our keys are 256 random bits, so nobody can guess them from the digest whatever the
hash costs, and a fast, unsalted digest lets every request find its key with one indexed lookup
instead of spending ~100 ms of CPU per request.
"""

import hashlib
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from lifeline.collector.models import Role

if TYPE_CHECKING:
    from lifeline.collector.store.base import KeyStore

KEY_PREFIX = "llk_"  # recognisable in a leaked-secret scan
# Both headers work; the 401, the demo banner and the docs name them the same way.
KEY_HEADERS = "X-API-Key: KEY or Authorization: Bearer KEY"


def new_token() -> str:
    """A fresh secret key (shown once, never stored)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def display_prefix(token: str) -> str:
    """The part of a key that may be shown in listings and logs."""
    return token[: len(KEY_PREFIX) + 6]


def write_secret_file(path: Path, token: str) -> None:
    """Write a key to `path`, readable by its owner only (0600 from the start, no window)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that already existed


def bootstrap_admin_key(store: "KeyStore", path: Path, now_ms: int) -> bool:
    """Create an admin key into `path` if the database has no active admin key; True if made."""
    if any(k.role is Role.ADMIN and k.revoked_ms is None for k in store.api_keys()):
        return False
    token = new_token()
    store.create_api_key(
        "bootstrap-admin", Role.ADMIN.value, digest(token), display_prefix(token), now_ms
    )
    write_secret_file(path, token)
    return True
