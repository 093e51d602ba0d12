"""API key rows shared by the SQL backends: digests and roles, never the keys themselves."""

import logging

from collector.models import (
    ApiKey,
    Role,
)
from collector.store.rows import Rows

log = logging.getLogger(__name__)


class KeyRows(Rows):
    """API keys by digest."""

    def create_api_key(self, name: str, role: str, key_hash: str, prefix: str, now_ms: int) -> int:
        """Store a new key by its digest; return its id."""
        rows = self._query(
            "INSERT INTO api_keys (name, role, key_hash, prefix, created_ms, revoked_ms)"
            " VALUES (:name, :role, :h, :prefix, :now, NULL) RETURNING id",
            {"name": name, "role": role, "h": key_hash, "prefix": prefix, "now": now_ms},
        )
        return int(rows[0][0])

    _KEY_COLS = "id, name, role, prefix, created_ms, revoked_ms"

    def api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        """The active (not revoked) key with this digest."""
        rows = self._query(
            f"SELECT {self._KEY_COLS} FROM api_keys"  # noqa: S608 - constant column list
            " WHERE key_hash = :h AND revoked_ms IS NULL",
            {"h": key_hash},
        )
        return ApiKey(rows[0][0], rows[0][1], Role(rows[0][2]), *rows[0][3:]) if rows else None

    def api_keys(self) -> list[ApiKey]:
        """Every key (active and revoked), oldest first."""
        rows = self._query(
            f"SELECT {self._KEY_COLS} FROM api_keys ORDER BY id"  # noqa: S608 - constant
        )
        return [ApiKey(r[0], r[1], Role(r[2]), *r[3:]) for r in rows]

    def revoke_api_key(self, key_id: int, now_ms: int) -> bool:
        """Revoke a key; False if there is no such active key."""
        with self._tx() as cur:
            self._run(
                cur,
                "UPDATE api_keys SET revoked_ms = :now WHERE id = :id AND revoked_ms IS NULL",
                {"id": key_id, "now": now_ms},
            )
            return cur.rowcount == 1
