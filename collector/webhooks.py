"""Webhooks: signed, retried deliveries of the event log to registered HTTP endpoints.

Each delivery is a POST of one event as JSON with the header

    Lifeline-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

(the scheme Stripe uses: the timestamp is signed too, so a captured request cannot be replayed
later than the receiver's tolerance). Deliveries run in their own thread with their own HTTP
client and read the event log from the database, so a slow or failing endpoint never holds up
ingest. Delivery is at least once: receivers deduplicate by the `Lifeline-Event-Id` header.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from collector.errors import StoreError
from collector.event_log import Notifier
from collector.models import DueDelivery, EventRecord, Webhook

if TYPE_CHECKING:
    from collector.store.base import WebhookStore

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Lifeline-Signature"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a label, not a secret


@dataclass
class WebhookConfig:
    """Delivery timing: retry after base, 2*base, 4*base ... capped, up to max_attempts."""

    retry_base_s: float = 2.0
    retry_max_s: float = 600.0
    max_attempts: int = 10
    timeout_s: float = 5.0
    poll_s: float = 0.5
    workers: int = 4


def new_secret() -> str:
    """A fresh signing secret (shown once when the webhook is registered)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def sign(secret: str, body: bytes, ts: int) -> str:
    """The signature header value for `body` sent at unix time `ts`."""
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def verify(secret: str, header: str, body: bytes, now: float, tolerance_s: float = 300) -> bool:
    """True if `header` is a valid signature of `body` made within `tolerance_s` of `now`."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        ts = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs(now - ts) > tolerance_s:
        return False
    expected = sign(secret, body, ts).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, v) for v in fields.get("v1", []))


def event_body(event: EventRecord) -> bytes:
    """The JSON body of a delivery."""
    doc = {
        "id": event.id,
        "type": event.type,
        "ts_ms": event.ts_ms,
        "subject": event.subject,
        "data": event.data,
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def backoff_s(config: WebhookConfig, attempts: int) -> float:
    """Delay before the next try after `attempts` failed tries (1 -> base)."""
    return float(min(config.retry_base_s * 2 ** (attempts - 1), config.retry_max_s))


class Deliverer:
    """A thread that fans new events out to webhooks and sends what is due, with retries."""

    def __init__(
        self,
        store: WebhookStore,
        notifier: Notifier,
        config: WebhookConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config
        self._clock = clock
        self._wake = threading.Event()
        notifier.add_thread_listener(self._wake)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="webhooks", daemon=True)
        self._pool = ThreadPoolExecutor(config.workers, thread_name_prefix="webhook-send")
        self._http = httpx.Client(timeout=config.timeout_s, follow_redirects=False)
        self.failures = 0  # failed attempts since start (for /metrics)
        self.delivered = 0
        self._failing = False  # the last pass hit a database error (logged once)

    def start(self) -> None:
        """Start delivering."""
        self._thread.start()

    def stop(self) -> None:
        """Stop; claimed deliveries not yet sent are retried by the next run."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.config.timeout_s + 5)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._http.close()

    def run_once(self) -> int:
        """Fan out new events and send every due delivery; return how many were attempted."""
        now_ms = int(self._clock() * 1000)
        self.store.fan_out_deliveries(now_ms)
        due = self.store.claim_due_deliveries(now_ms, limit=100)
        list(self._pool.map(self._send, due))
        return len(due)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.config.poll_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.run_once()
            except StoreError as exc:  # everything stays pending for the next pass
                if not self._failing:
                    log.warning("webhook passes failing: %s", exc)
                self._failing = True
                continue
            if self._failing:
                log.info("webhook passes succeed again")
                self._failing = False

    def _send(self, d: DueDelivery) -> None:
        body = event_body(d.event)
        now = self._clock()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(d.secret, body, int(now)),
            "Lifeline-Event-Id": str(d.event.id),
            "Lifeline-Event-Type": d.event.type,
            "Lifeline-Delivery": str(d.id),
            "User-Agent": "lifeline-collector-webhooks/1",
        }
        code: int | None = None
        try:
            resp = self._http.post(d.url, content=body, headers=headers)
            code = resp.status_code
            error = "" if resp.is_success else f"HTTP {code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        attempts = d.attempts + 1
        now_ms = int(self._clock() * 1000)
        if not error:
            self.delivered += 1
            self.store.record_delivery(d.id, "delivered", attempts, now_ms, code, "", now_ms)
            return
        self.failures += 1
        if attempts >= self.config.max_attempts:
            status, next_ms = "failed", now_ms
            log.warning("webhook %d gave up on event %d: %s", d.webhook_id, d.event.id, error)
        else:
            status = "pending"
            next_ms = now_ms + int(backoff_s(self.config, attempts) * 1000)
        self.store.record_delivery(d.id, status, attempts, next_ms, code, error, now_ms)


def webhook_doc(hook: Webhook) -> dict[str, Any]:
    """The JSON form of a webhook (never its secret)."""
    return {
        "id": hook.id,
        "url": hook.url,
        "events": list(hook.event_types),
        "description": hook.description,
        "created_ms": hook.created_ms,
        "cursor": hook.cursor,
    }
