"""Webhooks: signed, retried deliveries of the event log to registered HTTP endpoints.

Each delivery is a POST of one event as JSON with the header

    Lifeline-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

(the scheme Stripe uses: the timestamp is signed too, so a captured request cannot be replayed
later than the receiver's tolerance). Deliveries run in their own thread with their own HTTP
client and read the event log from the database, so a slow or failing endpoint never holds up
ingest. Delivery is at least once: receivers deduplicate by the `Lifeline-Event-Id` header.

A webhook may not reach the collector's own neighbourhood (SSRF): its host must resolve only to
public addresses — not loopback, private (RFC 1918, fc00::/7), link-local, multicast, reserved
or unspecified — unless they are inside `WebhookConfig.allow` (a deployment's internal
receiver, the tests). The check runs at registration and again before every delivery, which
then connects to the very address it checked (DNS rebinding). A failed delivery records what
failed (`HTTP 503`, `timed out`, ...), never what the target sent.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from lifeline.collector.errors import StoreError
from lifeline.collector.event_log import Notifier
from lifeline.collector.models import DueDelivery, EventRecord, Webhook

if TYPE_CHECKING:
    from lifeline.collector.store.base import WebhookStore

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
    # Networks (CIDR) a webhook may reach although they are not public, e.g. ("10.20.0.0/16",)
    # for a receiver inside the city's network; empty: public addresses only.
    allow: tuple[str, ...] = ()


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeTarget(ValueError):
    """A webhook URL whose host cannot be resolved or resolves to an address it may not reach."""


def redact(url: str) -> str:
    """`url` with the password of its user info replaced by `***` (for logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve_target(url: str, allow: Sequence[str]) -> list[IPAddress]:
    """The addresses `url`'s host resolves to, all of which a delivery may reach.

    Takes an http(s) URL and the allowed non-public networks (CIDR strings). Raises
    UnsafeTarget naming the host and the first address that is not public (loopback, private,
    link-local, multicast, reserved, unspecified) and not allowed, or saying it does not
    resolve.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:  # a bad port or IPv6 literal
        raise UnsafeTarget(f"not a usable URL: {exc}") from None
    if not host or parts.scheme not in ("http", "https"):
        raise UnsafeTarget("a webhook URL is http(s)://host/...")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError, UnicodeError) as exc:
        raise UnsafeTarget(f"cannot resolve {host}: {exc}") from None
    nets = [ipaddress.ip_network(n, strict=False) for n in allow]
    found: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip in found:
            continue
        if not _public(ip) and not any(ip in n for n in nets):
            raise UnsafeTarget(
                f"{host} resolves to {ip}, which is not a public address (loopback, private, "
                "link-local, multicast or reserved): webhooks may not reach the collector's "
                "own network unless the webhook allow-list names it"
            )
        found.append(ip)
    if not found:
        raise UnsafeTarget(f"{host} resolves to no address")
    return found


def _pinned(url: str, ip: IPAddress) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The request for `url` sent to `ip` itself: URL, Host header, TLS server name."""
    parts = urlsplit(url)
    literal = f"[{ip}]" if ip.version == 6 else str(ip)
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    host = parts.netloc.rsplit("@", 1)[-1]
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return target, {"Host": host}, extensions


# What a failed attempt records: the kind of failure, never text the target sent (a protocol
# error quotes the first bytes of, say, an SSH banner).
_FAILURES: tuple[tuple[type[httpx.HTTPError], str], ...] = (
    (httpx.TimeoutException, "timed out"),
    (httpx.ConnectError, "could not connect"),
    (httpx.RemoteProtocolError, "the answer was not HTTP"),
    (httpx.TransportError, "connection failed"),
)


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
        self.crashed: str | None = None  # why the thread stopped, if a bug stopped it

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
        try:
            self._passes()
        except Exception as exc:
            # A bug, not a database problem (those are handled per pass): say so where an
            # operator looks (/readyz) instead of deliveries that silently stopped.
            self.crashed = f"webhook deliveries stopped: {type(exc).__name__}: {exc}"
            log.critical("%s", self.crashed, exc_info=True)

    def _passes(self) -> None:
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
        try:  # again at each delivery: the name may point elsewhere now (DNS rebinding)
            ip = resolve_target(d.url, self.config.allow)[0]
        except UnsafeTarget as exc:
            self._failed(d, None, f"refused: {exc}")
            return
        target, host, extensions = _pinned(d.url, ip)
        parts = urlsplit(d.url)
        auth: dict[str, Any] = {}
        if parts.username is not None:  # user info goes as basic auth, never into a log line
            auth["auth"] = httpx.BasicAuth(unquote(parts.username), unquote(parts.password or ""))
        headers = {
            **host,
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(d.secret, body, int(now)),
            "Lifeline-Event-Id": str(d.event.id),
            "Lifeline-Event-Type": d.event.type,
            "Lifeline-Delivery": str(d.id),
            "User-Agent": "lifeline-collector-webhooks/1",
        }
        code: int | None = None
        try:
            resp = self._http.post(
                target, content=body, headers=headers, extensions=extensions, **auth
            )
            code = resp.status_code
            error = "" if resp.is_success else f"HTTP {code}"
        except httpx.HTTPError as exc:
            error = next((say for kind, say in _FAILURES if isinstance(exc, kind)), "failed")
        if not error:
            now_ms = int(self._clock() * 1000)
            self.delivered += 1
            self.store.record_delivery(d.id, "delivered", d.attempts + 1, now_ms, code, "", now_ms)
            return
        self._failed(d, code, error)

    def _failed(self, d: DueDelivery, code: int | None, error: str) -> None:
        attempts = d.attempts + 1
        now_ms = int(self._clock() * 1000)
        self.failures += 1
        if attempts >= self.config.max_attempts:
            status, next_ms = "failed", now_ms
            log.warning("webhook %d (%s) gave up on event %d: %s",
                        d.webhook_id, redact(d.url), d.event.id, error)  # fmt: skip
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
