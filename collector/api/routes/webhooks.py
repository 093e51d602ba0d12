"""Webhooks (admin): register an endpoint for some event types, list, delete, see deliveries."""

import time
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Response
from pydantic import BaseModel, Field, field_validator

from lifeline.collector.api.auth import Admin
from lifeline.collector.api.deps import RuntimeDep, StoreDep
from lifeline.collector.api.schemas import NewWebhookOut, WebhookOut
from lifeline.collector.event_types import type_patterns
from lifeline.collector.models import Delivery
from lifeline.collector.webhooks import UnsafeTarget, new_secret, resolve_target, webhook_doc

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])

HookId = Annotated[int, Path(ge=1, le=2**62)]


class WebhookIn(BaseModel):
    """An endpoint and the event types it wants (`alarm.*`, `case.opened`, ...; `*` = all)."""

    url: str = Field(pattern=r"^https?://[^\s/?#]+[^\s]*$", max_length=500)
    events: list[str] = Field(min_length=1, max_length=20)
    description: str = Field(default="", max_length=200)

    @field_validator("events")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        type_patterns(",".join(v))  # raises ValueError naming the unknown type
        return v


@router.post("", status_code=201, response_model=NewWebhookOut)
def register(runtime: RuntimeDep, store: StoreDep, admin: Admin, body: WebhookIn) -> dict[str, Any]:
    """Register; `secret` (for verifying signatures) is shown only in this answer. The host
    must resolve to public addresses only, or to networks of the collector's webhook
    allow-list (`--webhook-allow`): 422 otherwise."""
    try:
        resolve_target(body.url, runtime.config.webhooks.allow)
    except UnsafeTarget as exc:
        raise HTTPException(422, str(exc)) from None
    secret = new_secret()
    hook = store.create_webhook(
        body.url, body.events, secret, body.description, int(time.time() * 1000)
    )
    return {**webhook_doc(hook), "secret": secret}


@router.get("", response_model=list[WebhookOut])
def list_webhooks(store: StoreDep, admin: Admin) -> list[dict[str, Any]]:
    """Every registered webhook (without secrets)."""
    return [webhook_doc(h) for h in store.webhooks()]


@router.get("/{hook_id}", response_model=WebhookOut)
def get_webhook(store: StoreDep, admin: Admin, hook_id: HookId) -> dict[str, Any]:
    """One webhook; 404 if there is none of that id."""
    hook = next((h for h in store.webhooks() if h.id == hook_id), None)
    if hook is None:
        raise HTTPException(404, f"no webhook {hook_id}")
    return webhook_doc(hook)


@router.delete("/{hook_id}", status_code=204)
def delete(store: StoreDep, admin: Admin, hook_id: HookId) -> Response:
    """Unregister; pending deliveries are cancelled. 404 if there is none of that id."""
    if not store.delete_webhook(hook_id, int(time.time() * 1000)):
        raise HTTPException(404, f"no webhook {hook_id}")
    return Response(status_code=204)


@router.get("/{hook_id}/deliveries", response_model=list[Delivery])
def deliveries(
    store: StoreDep,
    admin: Admin,
    hook_id: HookId,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[dict[str, Any]]:
    """The latest deliveries with status (pending, delivered, failed), attempts, last error."""
    return [asdict(d) for d in store.deliveries(hook_id, limit)]
