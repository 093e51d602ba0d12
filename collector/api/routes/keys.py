"""API keys (admin): create (the key is shown once), list, revoke."""

import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response
from pydantic import BaseModel, Field

from collector.api.auth import Admin
from collector.api.deps import StoreDep
from collector.api.schemas import KeyOut, NewKeyOut
from collector.keys import digest, display_prefix, new_token
from collector.models import ApiKey, Role

router = APIRouter(prefix="/api/v1/keys", tags=["keys"])


class KeyIn(BaseModel):
    """A key to create: who holds it and its role."""

    name: str = Field(min_length=1, max_length=100, description="recorded as the actor")
    role: Role


def key_doc(k: ApiKey) -> dict[str, Any]:
    """The JSON form of a stored key (never the secret)."""
    return {
        "id": k.id,
        "name": k.name,
        "role": k.role.value,
        "prefix": k.prefix,
        "created_ms": k.created_ms,
        "revoked_ms": k.revoked_ms,
    }


def create_key(store: StoreDep, name: str, role: Role) -> tuple[ApiKey, str]:
    """Create a key; return it and its secret (which is not stored)."""
    token = new_token()
    now = int(time.time() * 1000)
    key_id = store.create_api_key(name, role.value, digest(token), display_prefix(token), now)
    return ApiKey(key_id, name, role, display_prefix(token), now, None), token


@router.post("", status_code=201, response_model=NewKeyOut)
def create(store: StoreDep, admin: Admin, body: KeyIn) -> dict[str, Any]:
    """Create a key; `key` in the answer is the only time the secret is shown."""
    key, token = create_key(store, body.name, body.role)
    return {**key_doc(key), "key": token}


@router.get("", response_model=list[KeyOut])
def list_keys(store: StoreDep, admin: Admin) -> list[dict[str, Any]]:
    """Every key, active and revoked, without secrets."""
    return [key_doc(k) for k in store.api_keys()]


@router.delete("/{key_id}", status_code=204)
def revoke(store: StoreDep, admin: Admin, key_id: Annotated[int, Path(ge=1, le=2**62)]) -> Response:
    """Revoke a key at once."""
    if not store.revoke_api_key(key_id, int(time.time() * 1000)):
        raise HTTPException(404, f"no active key {key_id}")
    return Response(status_code=204)
