"""API key rows shared by the SQL backends (digests and roles, never the keys themselves), and
the department registry that 专业部门 keys are scoped to."""

import json
import logging
from collections.abc import Sequence

from lifeline.collector.cases.workflow import CaseState
from lifeline.collector.errors import InUse, NameTaken
from lifeline.collector.models import ApiKey, Department, Role
from lifeline.collector.store.rows import Col, Cursor, RowMap, Rows, json_tuple

log = logging.getLogger(__name__)

_KEY = RowMap(ApiKey, role=Col(Role), departments=Col(json_tuple))
_DEPARTMENT = RowMap(Department)


def _some(numbers: Sequence[str]) -> str:
    """The first five of `numbers`, and "..." if there are more."""
    return ", ".join(numbers[:5]) + (" ..." if len(numbers) > 5 else "")


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
        """Register a department or rename it; True if it is new.

        Raises NameTaken (nothing changed) if `name` is another department's name, now or
        before (names are never reused), or any department's code, or if `code` is any
        department's name: a value that is both would let one department pass for another
        where cases, scopes and dispatch take a code or a name.

        Cases and work orders name their department by name: a rename carries the open cases
        (主办 and 协办, and their running phases) and open work orders over to the new name, so
        the department's keys keep seeing them; closed and voided cases keep the name they were
        closed under, which stays the department's (department_names) and in its keys' scope.
        """
        with self._tx() as cur:
            self._refuse_clash(cur, code, name)
            before = self._run(
                cur, "SELECT name FROM departments WHERE code = :code", {"code": code}
            )
            if before:
                self._run(
                    cur,
                    "UPDATE departments SET name = :name, updated_ms = :now WHERE code = :code",
                    {"code": code, "name": name, "now": now_ms},
                )
                if before[0][0] != name:
                    self._retire(cur, code, before[0][0], now_ms)
                    self._relabel(cur, before[0][0], name)
                return False
            self._run(
                cur,
                "INSERT INTO departments (code, name, updated_ms) VALUES (:code, :name, :now)",
                {"code": code, "name": name, "now": now_ms},
            )
            return True

    def _refuse_clash(self, cur: Cursor, code: str, name: str) -> None:
        """Raise NameTaken if `name` is another code's name (now or before) or any code, or
        `code` is any name."""
        owners = self._run(
            cur,
            "SELECT code, 1 FROM departments WHERE name = :name"
            " UNION ALL SELECT code, 0 FROM department_names WHERE name = :name",
            {"name": name},
        )
        other = next(((c, now) for c, now in owners if c != code), None)
        if other is not None:
            if other[1]:
                raise NameTaken(f"department {other[0]} is already named {name!r}")
            raise NameTaken(
                f"{name!r} was the name of department {other[0]}: names are never reused, so"
                " its closed cases stay its own; choose another name"
            )
        codes = self._run(
            cur,
            "SELECT code FROM departments WHERE code = :name"
            " UNION SELECT code FROM department_names WHERE code = :name",
            {"name": name},
        )
        if codes:
            raise NameTaken(
                f"{name!r} is a department code: a name may not equal a code (one department"
                " would pass for the other)"
            )
        names = self._run(
            cur,
            "SELECT code FROM departments WHERE name = :code"
            " UNION SELECT code FROM department_names WHERE name = :code",
            {"code": code},
        )
        if names:
            raise NameTaken(
                f"{code!r} is the name of department {names[0][0]}: a code may not equal a name"
                " (one department would pass for the other)"
            )

    def _retire(self, cur: Cursor, code: str, name: str, now_ms: int) -> None:
        """Keep `name` as a former name of `code`, never to be given to another department."""
        self._run(
            cur,
            "INSERT INTO department_names (name, code, retired_ms) VALUES (:name, :code, :now)"
            " ON CONFLICT (name) DO NOTHING",
            {"name": name, "code": code, "now": now_ms},
        )

    def _relabel(self, cur: Cursor, old: str, new: str) -> None:
        """Name the department `new` instead of `old` on every open case (the states outside
        workflow.OPEN_STATES are 结案 and 作废), running phase and open work order (not 已完成)."""
        p = {"old": old, "new": new}
        # A new row version for every case touched, so that an action that read the old name
        # meanwhile is a Conflict rather than writing the old name back (see save_case).
        self._run(
            cur,
            "UPDATE cases SET version = version + 1 WHERE state NOT IN ('结案', '作废')"
            " AND (department = :old OR case_no IN (SELECT case_no FROM case_phases"
            " WHERE department = :old AND end_ms IS NULL))",
            p,
        )
        self._run(
            cur,
            "UPDATE cases SET department = :new WHERE department = :old"
            " AND state NOT IN ('结案', '作废')",
            p,
        )
        for case_no, assist in self._run(
            cur,
            "SELECT case_no, assist FROM cases WHERE assist <> '[]'"
            " AND state NOT IN ('结案', '作废')",
        ):
            names = json.loads(assist)
            if old in names:
                self._run(
                    cur,
                    "UPDATE cases SET assist = :assist, version = version + 1"
                    " WHERE case_no = :no",
                    {"no": case_no, "assist": json.dumps(
                        [new if n == old else n for n in names], ensure_ascii=False
                    )},
                )  # fmt: skip
        self._run(
            cur,
            "UPDATE case_phases SET department = :new WHERE department = :old AND end_ms IS NULL",
            p,
        )
        self._run(
            cur,
            "UPDATE work_orders SET department = :new, version = version + 1"
            " WHERE department = :old AND state <> '已完成'",
            p,
        )

    def department_names(self) -> dict[str, tuple[str, ...]]:
        """Every name each department code has had (the registered one first, then former ones
        by when they were given up), including codes since removed: what its keys' scope is."""
        found: dict[str, list[str]] = {}
        for code, name in self._query(
            "SELECT code, name FROM (SELECT code, name, 0 AS ord, 0 AS at FROM departments"
            " UNION ALL SELECT code, name, 1, retired_ms FROM department_names) n"
            " ORDER BY code, ord, at"
        ):
            found.setdefault(code, [])
            if name not in found[code]:
                found[code].append(name)
        return {c: tuple(n) for c, n in found.items()}

    def remove_department(self, code: str, now_ms: int) -> Department | None:
        """Remove a department from the registry and return it; None if no department has this
        code. Raises InUse (nothing removed) while an open case has it as 主办 or 协办 (by name
        or code), an open work order names it or an active key is scoped to it: those would be
        left pointing at nothing. Its name stays its own (department_names): the closed cases
        under it keep their department."""
        with self._tx() as cur:
            rows = self._run(
                cur,
                f"SELECT {_DEPARTMENT.select} FROM departments WHERE code = :code",  # noqa: S608
                {"code": code},
            )
            if not rows:
                return None
            found = _DEPARTMENT(rows[0])
            labels = {found.code, found.name}
            held = [
                (no, state)
                for no, state, lead, assist in self._run(
                    cur,
                    "SELECT case_no, state, department, assist FROM cases"
                    " WHERE state NOT IN ('结案', '作废') ORDER BY case_no",
                )
                if lead in labels or labels & set(json.loads(assist))
            ]
            # A case still in 受理 cannot be re-dispatched or closed, only voided (作废).
            unaccepted = [no for no, state in held if state == CaseState.REPORTED.value]
            cases = [no for no, state in held if state != CaseState.REPORTED.value]
            orders = [
                no
                for (no,) in self._run(
                    cur,
                    "SELECT order_no FROM work_orders WHERE state <> '已完成'"
                    " AND department IN (:code, :name) ORDER BY order_no",
                    {"code": found.code, "name": found.name},
                )
            ]
            keys = [
                f"{key_id} ({name})"
                for key_id, name, scope in self._run(
                    cur,
                    "SELECT id, name, departments FROM api_keys WHERE revoked_ms IS NULL"
                    " AND departments <> '[]' ORDER BY id",
                )
                if code in json.loads(scope)
            ]
            if unaccepted or cases or orders or keys:
                ties, todo = [], []
                if unaccepted:
                    ties.append(f"{len(unaccepted)} cases in 受理 ({_some(unaccepted)})")
                    todo.append("void (作废) the cases in 受理")
                if cases:
                    ties.append(f"{len(cases)} open cases ({_some(cases)})")
                    todo.append("re-dispatch (改派) or close the open cases")
                if orders:
                    ties.append(f"{len(orders)} open work orders ({_some(orders)})")
                    todo.append("complete the work orders")
                if keys:
                    ties.append(f"active keys {', '.join(keys)} scoped to it")
                    todo.append("revoke the keys")
                raise InUse(
                    f"department {code} ({found.name}) is still in use: {' and '.join(ties)};"
                    f" {', '.join(todo)} first"
                )
            self._retire(cur, found.code, found.name, now_ms)
            self._run(cur, "DELETE FROM departments WHERE code = :code", {"code": code})
            return found

    def departments(self) -> list[Department]:
        """The department registry, by code."""
        rows = self._query(
            f"SELECT {_DEPARTMENT.select} FROM departments ORDER BY code"  # noqa: S608 - constant
        )
        return [_DEPARTMENT(r) for r in rows]
