"""The HTTP server of the API: uvicorn, bounded against clients that hold connections open.

uvicorn alone lets a connection that never finishes its request live for ever, and accepts
connections until the process runs out of file descriptors: ~1 000 half-sent requests then
took the API down, and with it the collector's reconnection to its broker and its database
(every new socket failed with EMFILE). Here each connection must deliver a whole request
within `request_timeout_s` of being accepted (or of its previous response), and connections
beyond `max_connections` are answered 503 and closed at once, leaving descriptors for the
broker, the database and the webhooks. (uvicorn's `limit_concurrency` does not do this: it
answers 503 only once a request's head has arrived.)
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

# Descriptors kept free of HTTP connections: the database pool, the MQTT connection(s), webhook
# deliveries, log and data files.
HEADROOM_FDS = 256
_BUSY_BODY = b'{"title":"Service Unavailable","status":503,"detail":"too many connections"}'
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n"
    b"retry-after: 5\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


@dataclass
class HttpGuard:
    """Limits and counters shared by every connection of one server (shown in /metrics)."""

    max_connections: int
    request_timeout_s: float
    refused: int = 0  # connections answered 503 at accept: over the cap
    timed_out: int = 0  # connections closed for not sending a whole request in time
    full: bool = False  # at the cap now (one log line when it starts, one when it ends)


def raise_fd_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit; return the new soft
    limit. systemd's default soft limit is 1 024 (the shipped unit sets LimitNOFILE)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def default_max_connections() -> int:
    """The connection cap when none is given: the file limit less HEADROOM_FDS (at least 16)."""
    return max(16, raise_fd_limit() - HEADROOM_FDS)


def guarded_protocol(guard: HttpGuard) -> type[H11Protocol]:
    """uvicorn's h11 protocol with `guard`'s connection cap and request deadline."""

    class Guarded(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > guard.max_connections:
                guard.refused += 1
                if not guard.full:
                    guard.full = True
                    log.warning(
                        "HTTP: %d connections open, the cap: answering new ones 503 until "
                        "some close",
                        guard.max_connections,
                    )
                transport.write(_BUSY)
                transport.close()
                return
            if guard.full and len(self.connections) < guard.max_connections * 0.9:
                guard.full = False
                log.warning(
                    "HTTP: below the connection cap again (%d refused so far)", guard.refused
                )
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.DONE:  # a whole request: the app has it now
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is not h11.DONE:
                self._arm()  # the next request on this keep-alive connection

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(guard.request_timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                guard.timed_out += 1
                self.transport.close()

    return Guarded


def server(app: Any, host: str, port: int, guard: HttpGuard) -> uvicorn.Server:
    """A uvicorn server for `app` on host:port, bounded by `guard`."""
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            http=guarded_protocol(guard),
            timeout_keep_alive=5,
            log_config=None,  # uvicorn logs through the root handlers (and their RepeatLimiter)
        )
    )
