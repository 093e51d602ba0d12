"""API keys (admin): create (the key is shown once), list, revoke."""

import time
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response
from pydantic import BaseModel, Field, field_validator

from lifeline.collector.api.auth import Admin
from lifeline.collector.api.deps import StoreDep
from lifeline.collector.api.schemas import KeyOut, NewKeyOut
from lifeline.collector.departments import CODE_PATTERN, MAX_NAME, check_actor
from lifeline.collector.keys import digest, display_prefix, new_token
from lifeline.collector.models import ApiKey, Role
from lifeline.collector.store import Store

router = APIRouter(prefix="/api/v1/keys", tags=["keys"])


class KeyIn(BaseModel):
    """A key to create: who holds it, its role, and for a 专业部门 key its department codes."""

    name: str = Field(
        min_length=1, max_length=MAX_NAME, description="recorded as the actor (not `system`)"
    )
    role: Role
    departments: list[Annotated[str, Field(pattern=CODE_PATTERN)]] = Field(
        default_factory=list,
        max_length=20,
        description="for role `department` (required): registered department codes it acts for",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_actor(v)


def check_scope_shape(role: Role, departments: Sequence[str]) -> None:
    """Refuse a scope that cannot fit `role`, whatever the registry holds: a `department` key
    needs at least one code, and no other role takes any. Raises ValueError with the reason."""
    if role is not Role.DEPARTMENT and departments:
        raise ValueError(f"only a department key is scoped to departments, not {role.value}")
    if role is Role.DEPARTMENT and not departments:
        raise ValueError("a department key needs the department codes it acts for")


def check_scope(store: Store, role: Role, departments: Sequence[str]) -> tuple[str, ...]:
    """The department codes a new key is scoped to, checked: a `department` key needs at least
    one registered code, and no other role takes any. Raises ValueError with the reason."""
    check_scope_shape(role, departments)
    if role is not Role.DEPARTMENT:
        return ()
    known = {d.code for d in store.departments()}
    unknown = [c for c in departments if c not in known]
    if unknown:
        raise ValueError(
            f"not in the department registry: {', '.join(unknown)}"
            " (register them with `lifeline collector departments add CODE NAME` or"
            " PUT /api/v1/departments/{code})"
        )
    return tuple(dict.fromkeys(departments))


def key_doc(k: ApiKey) -> dict[str, Any]:
    """The JSON form of a stored key (never the secret)."""
    return {
        "id": k.id,
        "name": k.name,
        "role": k.role.value,
        "prefix": k.prefix,
        "created_ms": k.created_ms,
        "revoked_ms": k.revoked_ms,
        "departments": list(k.departments),
    }


def create_key(
    store: StoreDep, name: str, role: Role, departments: Sequence[str] = ()
) -> tuple[ApiKey, str]:
    """Create a key scoped to `departments` (checked codes); return it and its secret (which
    is not stored)."""
    token = new_token()
    now = int(time.time() * 1000)
    prefix = display_prefix(token)
    key_id = store.create_api_key(name, role.value, digest(token), prefix, now, departments)
    return ApiKey(key_id, name, role, prefix, now, None, tuple(departments)), token


@router.post("", status_code=201, response_model=NewKeyOut)
def create(store: StoreDep, admin: Admin, body: KeyIn) -> dict[str, Any]:
    """Create a key; `key` in the answer is the only time the secret is shown. 422 if a
    department key names no registered department code, or another role names any."""
    try:
        scope = check_scope(store, body.role, body.departments)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    key, token = create_key(store, body.name, body.role, scope)
    return {**key_doc(key), "key": token}


@router.get("", response_model=list[KeyOut])
def list_keys(store: StoreDep, admin: Admin) -> list[dict[str, Any]]:
    """Every key, active and revoked, without secrets."""
    return [key_doc(k) for k in store.api_keys()]


@router.delete("/{key_id}", status_code=204)
def revoke(store: StoreDep, admin: Admin, key_id: Annotated[int, Path(ge=1, le=2**62)]) -> Response:
    """Revoke a key at once; 404 if there is no such active key."""
    if not store.revoke_api_key(key_id, int(time.time() * 1000)):
        raise HTTPException(404, f"no active key {key_id}")
    return Response(status_code=204)
