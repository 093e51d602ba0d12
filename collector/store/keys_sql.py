"""API key rows shared by the SQL backends (digests and roles, never the keys themselves), and
the department registry that 专业部门 keys are scoped to."""

import json
import logging
from collections.abc import Sequence

from lifeline.collector.models import ApiKey, Department, Role
from lifeline.collector.store.rows import Col, RowMap, Rows, json_tuple

log = logging.getLogger(__name__)

_KEY = RowMap(ApiKey, role=Col(Role), departments=Col(json_tuple))
_DEPARTMENT = RowMap(Department)


class KeyRows(Rows):
    """API keys by digest, and the departments they may be scoped to."""

    def create_api_key(
        self,
        name: str,
        role: str,
        key_hash: str,
        prefix: str,
        now_ms: int,
        departments: Sequence[str] = (),
    ) -> int:
        """Store a new key by its digest, scoped to `departments` (codes); return its id."""
        rows = self._query(
            "INSERT INTO api_keys (name, role, key_hash, prefix, created_ms, revoked_ms,"
            " departments) VALUES (:name, :role, :h, :prefix, :now, NULL, :depts) RETURNING id",
            {
                "name": name,
                "role": role,
                "h": key_hash,
                "prefix": prefix,
                "now": now_ms,
                "depts": json.dumps(list(departments), ensure_ascii=False),
            },
        )
        return int(rows[0][0])

    def api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        """The active (not revoked) key with this digest."""
        rows = self._query(
            f"SELECT {_KEY.select} FROM api_keys"  # noqa: S608 - constant column list
            " WHERE key_hash = :h AND revoked_ms IS NULL",
            {"h": key_hash},
        )
        return _KEY(rows[0]) if rows else None

    def api_keys(self) -> list[ApiKey]:
        """Every key (active and revoked), oldest first."""
        rows = self._query(
            f"SELECT {_KEY.select} FROM api_keys ORDER BY id"  # noqa: S608 - constant
        )
        return [_KEY(r) for r in rows]

    def revoke_api_key(self, key_id: int, now_ms: int) -> bool:
        """Revoke a key; False if there is no such active key."""
        with self._tx() as cur:
            self._run(
                cur,
                "UPDATE api_keys SET revoked_ms = :now WHERE id = :id AND revoked_ms IS NULL",
                {"id": key_id, "now": now_ms},
            )
            return cur.rowcount == 1

    # --- department registry ------------------------------------------------------------------

    def put_department(self, code: str, name: str, now_ms: int) -> bool:
        """Register a department or rename it; True if it is new. Raises StoreDataError if
        another code already has this name."""
        with self._tx() as cur:
            self._run(
                cur,
                "UPDATE departments SET name = :name, updated_ms = :now WHERE code = :code",
                {"code": code, "name": name, "now": now_ms},
            )
            if cur.rowcount == 1:
                return False
            self._run(
                cur,
                "INSERT INTO departments (code, name, updated_ms) VALUES (:code, :name, :now)",
                {"code": code, "name": name, "now": now_ms},
            )
            return True

    def departments(self) -> list[Department]:
        """The department registry, by code."""
        rows = self._query(
            f"SELECT {_DEPARTMENT.select} FROM departments ORDER BY code"  # noqa: S608 - constant
        )
        return [_DEPARTMENT(r) for r in rows]
