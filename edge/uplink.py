"""MQTT uplink: QoS 1 batches with a bounded in-flight window, birth/death, commands.

paho-mqtt runs inside the asyncio loop (its socket is registered with the loop, as in paho's
asyncio example), so every callback runs on the loop thread and can touch the outbox directly.
A fresh paho client is made per connection: on reconnect we republish frozen batches ourselves,
with their original seq, instead of letting paho's session replay race with ours.

MQTT 5 by default (`mqtt.protocol`; "3.1.1" for brokers that refuse 5, which the CONNACK
refusal then says). `mqtt.url` and `mqtt.failover_urls` are nodes of one broker cluster: a
connection that fails moves on to the next URL at once, and only a whole round of failures
backs off. Batches are cut to what the broker takes (edge/packets.py):
its CONNACK Maximum Packet Size, `mqtt.max_packet_bytes`, or what its refusals taught; a frozen
batch over that is split under new seqs by the outbox. A PUBACK with an error reason code never
removes a batch: it is split (a size refusal) or held back and offered again later.

The last will is the death "connection lost", built when the connection is made: its time is
that of the connect, not of the loss (the collector stamps a death with its own receive time).
A clean close publishes the death "shutdown" and sends DISCONNECT, so the broker never publishes
the will then and the retained death it keeps says "shutdown".

Why paho-mqtt directly and not a wrapper (aiomqtt): docs/wire.md, "The MQTT client on both ends".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from lifeline.edge.buffer import LANE_ALARM, LANE_DATA, LANE_DEVICE, BufferFull, Outbox
from lifeline.edge.clock import wall_ms
from lifeline.edge.config import MqttConfig, host_port
from lifeline.edge.packets import PacketLimit, publish_overhead
from lifeline.wire import (
    MAX_ERROR,
    Birth,
    Command,
    CommandReply,
    Death,
    Kind,
    Status,
    WireError,
    command_id_of,
    decode,
    encode,
    topic,
)

log = logging.getLogger("lifeline.edge.uplink")

CommandHandler = Callable[[Command], Awaitable[CommandReply]]
_CONNECT_TIMEOUT_S = 10.0
_LANE_KIND = {LANE_ALARM: Kind.ALARM, LANE_DEVICE: Kind.DEVICE, LANE_DATA: Kind.DATA}
# A connection lost sooner than this after its CONNACK does not reset the reconnect backoff: a
# broker that ends connections at once (refusing a batch, a duplicate client id) is not a loop.
_SHORT_LIVED_S = 10.0
# The most a gateway waits before trying the next broker URL of a cluster (jittered, so that a
# city's gateways do not all arrive at a surviving node in the same instant).
_NEXT_URL_PAUSE_S = 0.5
# A drop this soon after the largest batch in flight was published may be the broker refusing it.
_DROP_WINDOW_S = 2.0
# MQTT 5 reason codes: a DISCONNECT saying the packet was too large, and the protocol error paho
# reports when Mosquitto (message_size_limit) answers a too large publish with PUBACK 0x95,
# which is not a PUBACK reason code: measured with Mosquitto 2.0.11 and paho-mqtt 2.2.
_PACKET_TOO_LARGE = 0x95
_PROTOCOL_ERROR = 0x82
# PUBACK reason codes that say nothing about the payload's size: the batch is held back and
# offered again later, never split (not authorized, topic name invalid, packet id in use,
# quota exceeded).
_NOT_SIZE = frozenset({0x87, 0x90, 0x91, 0x97})
# CONNACK reason codes that say what to change.
_UNSUPPORTED_PROTOCOL = 0x84
_CLIENT_ID_NOT_VALID = 0x85


class BrokerRefused(ConnectionError):
    """The broker took the TCP connection but not the MQTT one; the message says why."""


class Uplink:
    """Publishes the outbox to the broker; reconnects with capped, jittered backoff."""

    def __init__(
        self,
        cfg: MqttConfig,
        site: str,
        gateway: str,
        session: str,
        outbox: Outbox,
        birth: Callable[[], Birth],
        on_command: CommandHandler,
    ) -> None:
        self.cfg = cfg
        self.gateway = gateway
        self.session = session
        self.outbox = outbox
        self._birth = birth
        self._on_command = on_command
        self._topics = {k: topic(site, gateway, k, root=cfg.root) for k in Kind}
        self._urls = cfg.urls
        self._url_index = 0
        self._round_start = 0  # where the current round of connection attempts began
        self._last_url = ""  # of the last accepted connection
        self.failovers = 0  # connections accepted by another broker URL than the one before
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._misc: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._stopping = False
        self._inflight: dict[int, tuple[int, float, int]] = {}  # mid -> (seq, sent, bytes)
        self._inflight_seqs: set[int] = set()
        self._control: dict[int, asyncio.Future[None]] = {}  # mid -> waiter (birth, death)
        self._pump_scheduled = False
        self._pumping = False  # publishing a batch: the pump writes the socket itself after
        self._acked_seqs: list[int] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.live_since_ms: int | None = None
        self.latencies_ms: deque[float] = deque(maxlen=512)
        self.published = 0
        self.acked = 0
        self.connects = 0
        # Sparkplug's bdSeq: one per connection attempt of this process. The will built for a
        # connection and the birth published on it carry the same number, so that collectors
        # match a death to the birth it ends (a broker restart leaves an old will retained).
        self._bd_seq = 0
        # For the health snapshot: connected or not since when, the last error, the last PUBACK.
        self._up = False  # as last reported: unlike `connected`, cleared only by _down
        self.state_since_ms = wall_ms()
        self.last_error = ""
        self.last_error_ms: int | None = None
        self.last_puback_ms: int | None = None
        self._refusal = ""  # why the broker refused or closed the connection being made
        self._lost_reason = ""  # the reason code of the last disconnect, if any
        self._logged = ""  # the last connection problem logged: each is logged once
        # A callback that failed: loop callbacks die in silence, so run() raises it instead.
        self.failure: BaseException | None = None
        self._pump_soon = self._guarded(self._pump)
        longest = max(len(t.encode()) for t in self._topics.values())
        self.limit = PacketLimit(
            outbox.batch_bytes, cfg.max_packet_bytes, publish_overhead(longest)
        )
        outbox.set_batch_bytes(self.limit.budget())
        # Batches the broker refused for another reason than size: seq -> (monotonic time they
        # may go again, the wait before that).
        self._parked: dict[int, tuple[float, float]] = {}
        self.refused = 0  # PUBACKs with an error reason code
        self._refused_at = -_DROP_WINDOW_S  # monotonic time of the last one
        self._refusing = ""  # the last refusal logged

    # --- public -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True between CONNACK and the connection dropping."""
        return self.live_since_ms is not None

    @property
    def room(self) -> int:
        """Free places in the in-flight window."""
        return self.cfg.inflight - len(self._inflight) if self.connected else 0

    async def run(self) -> None:
        """Stay connected until `close`; each connection publishes birth and drains the outbox.

        Raises what a paho or loop callback of the uplink raised (kept in `failure`): the
        gateway stops on it rather than keep a connection nobody serves.
        """
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        attempt = 0  # rounds over every broker URL that failed in a row
        while not self._stopping:
            try:
                await self._connect()
            except (OSError, TimeoutError, ValueError) as exc:
                self._raise_failure()
                failed = self.url
                wrapped = self._next_broker()
                if wrapped:  # every URL tried: back off before the next round
                    attempt += 1
                    delay = self._backoff(attempt)
                    then = f"; retrying (next in {delay:.1f} s, backing off)"
                else:  # another node of the cluster may be up: try it at once
                    delay = random.uniform(0.0, _NEXT_URL_PAUSE_S)
                    then = f"; trying {self.url} next"
                why = str(exc) or type(exc).__name__
                self._problem(
                    f"broker {failed}: {why}"
                    if isinstance(exc, BrokerRefused)
                    else f"broker {failed} unreachable: {why}",
                    then,
                )
                await asyncio.sleep(delay)
                continue
            self._round_start = self._url_index
            up_since = time.monotonic()
            self._logged = ""  # connected: the next problem is news again
            await self._lost.wait()
            self._raise_failure()
            self._teardown()
            self._down()
            if self._stopping:
                break
            attempt = attempt + 1 if time.monotonic() - up_since < _SHORT_LIVED_S else 0
            why = f": {self._lost_reason}" if self._lost_reason else ""
            self._problem(f"connection to {self.url} lost{why}", "; reconnecting")
            pause = self.cfg.reconnect_min_s * random.uniform(0.1, 0.5)
            await asyncio.sleep(self._backoff(attempt) if attempt else pause)

    @property
    def url(self) -> str:
        """The broker URL in use (or tried next): one of `mqtt.url` and `mqtt.failover_urls`."""
        return self._urls[self._url_index]

    def _next_broker(self) -> bool:
        """Move on to the next broker URL; True when that completes a round over all of them
        since the last connection that was accepted (always, with a single URL)."""
        self._url_index = (self._url_index + 1) % len(self._urls)
        return self._url_index == self._round_start

    def _backoff(self, attempt: int) -> float:
        """Seconds before connection attempt `attempt` (1, 2, ...): doubling, capped, jittered."""
        delay = min(self.cfg.reconnect_max_s, self.cfg.reconnect_min_s * 2.0 ** (attempt - 1))
        return delay * random.uniform(0.5, 1.0)

    def _problem(self, message: str, then: str) -> None:
        """A connection problem: remembered for `status`, logged once until it changes."""
        self._error(message)
        if message != self._logged:
            self._logged = message
            log.warning("%s%s", message, then)

    def kick(self) -> None:
        """Something new was frozen, queued or acknowledged: fill the window soon (coalesced)."""
        if not self._pump_scheduled and self._loop is not None:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump_soon)

    def publish_birth(self) -> None:
        """Publish the retained birth for this session (on connect and on `rebirth`)."""
        if self._client is not None and self.connected:
            payload = encode(replace(self._birth(), bd_seq=self._bd_seq))
            if self._fits(Kind.BIRTH, payload):
                self._client.publish(self._topics[Kind.BIRTH], payload, 1, retain=True)

    def clock_stepped(self, step_ms: int) -> None:
        """The wall clock jumped by `step_ms`: keep `live_since_ms` on the clock's new scale.

        Without this, a step back would flag every live sample "historical" (sampled before
        this connection) until the next reconnect.
        """
        if self.live_since_ms is not None:
            self.live_since_ms += step_ms

    def publish_status(self, counters: dict[str, int | float]) -> None:
        """Publish a status message (QoS 0: the next one supersedes it)."""
        if self._client is not None and self.connected:
            msg = Status(
                self.gateway, self.session, 0, wall_ms(), counters=counters, epoch=self.outbox.epoch
            )
            payload = encode(msg)
            if self._fits(Kind.STATUS, payload):
                self._client.publish(self._topics[Kind.STATUS], payload, 0)

    async def drain(self, timeout_s: float) -> bool:
        """Wait until nothing is frozen or in flight (or the timeout); True if empty."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._pump()
            if not self._inflight and not self.outbox.frozen_count() and not self.outbox.backlog:
                return True
            await asyncio.sleep(0.02)
        return False

    async def close(self, reason: str = "shutdown") -> None:
        """Publish death (retained), disconnect, and stop reconnecting."""
        self._stopping = True
        client = self._client
        if client is not None and self.connected:
            death = self._death(reason)
            if self._fits(Kind.DEATH, death):
                info = client.publish(self._topics[Kind.DEATH], death, 1, retain=True)
                waiter = asyncio.get_running_loop().create_future()
                self._control[info.mid] = waiter
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter, 2.0)
            await self._disconnect(client)
        self._lost.set()
        self._teardown()
        self._down()

    async def _disconnect(self, client: mqtt.Client) -> None:
        """Send MQTT DISCONNECT and let paho close the socket after it (at most 2 s).

        A socket closed without DISCONNECT makes the broker publish the last will, and the
        retained death it keeps would say "connection lost" after a clean stop.
        """
        client.disconnect()
        deadline = time.monotonic() + 2.0
        # paho closes the socket itself once the DISCONNECT packet is written.
        while client.socket() is not None and time.monotonic() < deadline:
            if client.loop_write() != mqtt.MQTT_ERR_SUCCESS:
                break
            await asyncio.sleep(0.01)

    def counters(self) -> dict[str, int | float]:
        """Uplink figures for the status message."""
        lat = sorted(self.latencies_ms)
        return {
            "published": self.published,
            "acked": self.acked,
            "inflight": len(self._inflight),
            "connects": self.connects,
            "broker_failovers": self.failovers,
            "puback_refused": self.refused,
            "batches_split": self.outbox.retired,
            "batch_budget_bytes": self.limit.budget(),
            "broker_max_packet": self.limit.announced or 0,
            "publish_latency_p50_ms": lat[len(lat) // 2] if lat else 0.0,
            "publish_latency_max_ms": lat[-1] if lat else 0.0,
        }

    # --- failures -----------------------------------------------------------------------------

    def _guarded(self, fn: Callable[..., object]) -> Callable[..., None]:
        """`fn` for the event loop to call: a failure stops the uplink (run() raises it)."""

        def call(*args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:  # any failure: a loop callback would die in silence
                self._crash(exc)

        return call

    def _crash(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        self._lost.set()

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    # --- connection ---------------------------------------------------------------------------

    def _error(self, message: str) -> None:
        """Remember the latest error; a new kind of error is a change worth saving soon."""
        if message != self.last_error:
            self.outbox.health_changed()
        self.last_error, self.last_error_ms = message, wall_ms()

    def _down(self) -> None:
        """The connection is gone (lost or closed): down from now on, if it was up."""
        if self._up:
            self._up = False
            self.state_since_ms = wall_ms()
            self.outbox.health_changed()

    def _death(self, reason: str) -> bytes:
        death = Death(
            self.gateway,
            self.session,
            0,
            wall_ms(),
            reason=reason,
            bd_seq=self._bd_seq,
            epoch=self.outbox.epoch,
        )
        return encode(death)

    @property
    def client_id(self) -> str:
        """The MQTT client id: fixed per gateway (the broker's ACL and logs know it)."""
        return f"lifeline-edge-{self.gateway}"

    def _whom(self) -> str:
        return f"MQTT {self.cfg.protocol}, client id {self.client_id}"

    def _advice(self, code: int) -> str:
        """What to change for a CONNACK refusal `code`, when the code says (else "").

        paho reports MQTT 3.1.1 return codes 1 and 2 as the MQTT 5 codes 0x84 and 0x85.
        """
        if code == _UNSUPPORTED_PROTOCOL:
            other = "3.1.1" if self.cfg.protocol == "5" else "5"
            return (
                f": the broker does not speak MQTT {self.cfg.protocol};"
                f' set mqtt.protocol: "{other}" in the gateway config'
            )
        if code == _CLIENT_ID_NOT_VALID:
            return ": the broker refuses this client id (some refuse '.' or long ids)"
        return ""

    def _fits(self, kind: Kind, payload: bytes) -> bool:
        """Whether a birth, status, death or reply fits the broker's packet limit; if not, say
        so once (the broker would drop the connection for it, again and again)."""
        if self.limit.fits(len(payload), len(self._topics[kind].encode())):
            return True
        self._problem(
            f"the {kind} message is {len(payload)} bytes, over the broker's maximum packet size"
            f" of {self.limit.packet_limit()} bytes",
            ": not published (raise the broker's max_packet_size)",
        )
        return False

    def _new_client(self) -> mqtt.Client:
        cfg = self.cfg
        self._bd_seq += 1  # before the will is built: this connection's number
        if cfg.protocol == "5":  # a clean start is asked for in connect(), not here
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=mqtt.MQTTv5,
                reconnect_on_failure=False,
            )
        else:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=mqtt.MQTTv311,
                clean_session=True,
                reconnect_on_failure=False,
            )
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls is not None or self.url.startswith("mqtts:"):
            tls = cfg.tls
            client.tls_set(
                ca_certs=tls.ca if tls else None,
                certfile=tls.cert if tls else None,
                keyfile=tls.key if tls else None,
            )
        client.will_set(self._topics[Kind.DEATH], self._death("connection lost"), 1, retain=True)
        # Our window bounds data batches; leave paho room for birth, replies and status.
        client.max_inflight_messages_set(cfg.inflight + 32)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        return client

    async def _connect(self) -> None:
        assert self._loop is not None
        client = self._new_client()
        self._client = client
        self._lost.clear()
        self._connected.clear()
        self._refusal = ""  # the broker's reason, if it refuses this connection
        self._lost_reason = ""
        cfg = self.cfg
        host, port = host_port(self.url)
        connect = functools.partial(client.connect, host, port, cfg.keepalive_s)
        if cfg.protocol == "5":  # no session kept: we republish frozen batches ourselves
            connect = functools.partial(connect, clean_start=True)
        # connect() blocks on DNS, TCP and TLS: keep it off the loop so polling goes on.
        try:
            await self._loop.run_in_executor(None, connect)
        except OSError as exc:
            self._teardown()
            raise ConnectionError(str(exc)) from None
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                await first_set(self._connected, self._lost)
        except TimeoutError:
            self._teardown()
            raise BrokerRefused(
                f"no CONNACK within {_CONNECT_TIMEOUT_S:g} s ({self._whom()})"
            ) from None
        if not self._connected.is_set():  # (lost after a CONNACK: run() sees it at once)
            self._teardown()
            raise BrokerRefused(
                self._refusal
                or f"the broker closed the connection before its CONNACK ({self._whom()}):"
                " does it take this protocol version and client id? its log says why"
            )

    def _teardown(self) -> None:
        client, self._client = self._client, None
        self.live_since_ms = None
        if self._acked_seqs:
            self.outbox.acked(self._acked_seqs)
            self._acked_seqs = []
            self.last_puback_ms = wall_ms()
        self._inflight.clear()
        self._inflight_seqs.clear()
        for waiter in self._control.values():
            if not waiter.done():
                waiter.cancel()
        self._control.clear()
        if client is not None:
            sock = client.socket()
            if sock is not None and self._loop is not None:
                self._loop.remove_reader(sock)
                self._loop.remove_writer(sock)
            with contextlib.suppress(Exception):
                client.disconnect()
            # Detach first: paho may close the socket later (even from __del__), loop gone.
            client.on_socket_open = client.on_socket_close = None
            client.on_socket_register_write = client.on_socket_unregister_write = None
            with contextlib.suppress(Exception):
                client._reset_sockets()  # close without waiting for the peer
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None

    # --- paho socket hooks (may be called from the connect thread: hop to the loop) ----------

    def _hop(self, fn: Callable[..., None], *args: Any) -> None:
        """Run `fn` on the loop thread (a no-op once the loop is gone).

        At once when already on it (every publish); through the loop from the connect executor.
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            fn(*args)  # no wake-up through the loop's self-pipe per publish
        else:
            loop.call_soon_threadsafe(self._guarded(fn), *args)

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._hop(self._register_reader, client, sock)

    def _register_reader(self, client: mqtt.Client, sock: Any) -> None:
        if client is not self._client:
            return
        assert self._loop is not None
        # Read every waiting packet per wake-up (paho's default is one): PUBACKs come in bursts.
        self._loop.add_reader(sock, self._guarded(client.loop_read), self.cfg.inflight + 32)
        if self._misc is None:
            self._misc = self._loop.create_task(self._misc_loop(client), name="mqtt-misc")

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._hop(self._forget_socket, client, sock)

    def _forget_socket(self, client: mqtt.Client, sock: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(Exception):
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
        if client is self._client:  # not a late word from a connection given up already
            self._lost.set()

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if self._pumping:
            return  # the pump's loop_write, right after the publish, registers it if needed
        self._hop(self._add_writer, client, sock)

    def _add_writer(self, client: mqtt.Client, sock: Any) -> None:
        if client is self._client and sock.fileno() >= 0:
            assert self._loop is not None
            self._loop.add_writer(sock, self._guarded(client.loop_write))

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._hop(self._remove_writer, sock)

    def _remove_writer(self, sock: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(Exception):
            self._loop.remove_writer(sock)

    async def _misc_loop(self, client: mqtt.Client) -> None:
        # paho wants loop_misc about once a second for keepalive pings and timeouts.
        try:
            while client.loop_misc() == mqtt.MQTT_ERR_SUCCESS:  # noqa: ASYNC110
                await asyncio.sleep(1.0)
        except Exception as exc:  # a task nobody awaits: it would die in silence
            self._crash(exc)
        self._lost.set()

    # --- paho protocol callbacks (loop thread) ------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if client is not self._client:
            return
        if reason.is_failure:
            self._refusal = (
                f"refused by the broker: CONNACK {reason} (0x{reason.value:02X}; {self._whom()})"
                + self._advice(reason.value)
            )
            self._lost.set()
            return
        self.connects += 1
        if self._last_url and self._last_url != self.url:
            self.failovers += 1
        self._last_url = self.url
        self.live_since_ms = wall_ms()
        self._up = True
        self.state_since_ms = self.live_since_ms
        self.outbox.health_changed()
        self.limit.announced = getattr(props, "MaximumPacketSize", None)
        budget = self.limit.budget()
        self.outbox.set_batch_bytes(budget)
        client.subscribe(self._topics[Kind.CMD], qos=1)
        self.publish_birth()
        packet = self.limit.packet_limit()
        cut = f"; packets up to {packet} bytes: batches of {budget} bytes" if packet else ""
        log.info(
            "connected to %s (MQTT %s, session %s%s)",
            self.url,
            self.cfg.protocol,
            self.session,
            cut,
        )
        self._connected.set()
        self.kick()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if client is not self._client:
            return  # a connection given up already (paho may still report it)
        self.live_since_ms = None
        code = getattr(reason, "value", 0)
        if code:
            self._lost_reason = f"{reason} (0x{code:02X})"
            if not self._stopping:
                self._judge_drop(code)
        self._lost.set()

    def _judge_drop(self, code: int) -> None:
        """The connection dropped: was it the broker refusing the largest batch in flight?"""
        if not self._inflight or time.monotonic() - self._refused_at < _DROP_WINDOW_S:
            return  # nothing in flight, or the broker said why just before (Mosquitto 2.0
            # drops an MQTT 5 client right after a PUBACK "Not authorized")
        seq, sent, size = max(self._inflight.values(), key=lambda entry: entry[2])
        if self.cfg.protocol == "5" and code in (_PACKET_TOO_LARGE, _PROTOCOL_ERROR):
            lowered = self.limit.refused(size)  # said so, or a PUBACK paho could not read
        elif time.monotonic() - sent <= _DROP_WINDOW_S:
            # No reason given (MQTT 3.1.1; Mosquitto also resets MQTT 5 connections after an
            # oversize publish): believed at the second such drop in a row.
            lowered = self.limit.dropped(size)
        else:
            return
        if lowered:
            self._budget_lowered(f"dropped the connection ({self._lost_reason}) after batch {seq}"
                                 f" of {size} bytes")  # fmt: skip

    def _budget_lowered(self, why: str) -> None:
        budget = self.limit.budget()
        self.outbox.set_batch_bytes(budget)
        message = f"broker {self.url} {why}; batches are cut to {budget} bytes from now on"
        self._error(message)
        log.warning("%s (larger frozen batches are split, under new seqs)", message)

    def _refused(self, seq: int, size: int, reason: Any) -> None:
        """An MQTT 5 PUBACK with an error reason code: the batch stays in the buffer."""
        self.refused += 1
        self._refused_at = time.monotonic()
        code = reason.value
        what = f"PUBACK {reason} (0x{code:02X})"
        if code not in _NOT_SIZE and self.limit.refused(size):
            self._budget_lowered(f"refused batch {seq} of {size} bytes: {what}")
            self.kick()  # it is split and offered again
            return
        _, wait = self._parked.get(seq, (0.0, self.cfg.reconnect_min_s / 2))
        wait = min(self.cfg.reconnect_max_s, wait * 2)
        self._parked[seq] = (time.monotonic() + wait, wait)
        message = f"broker {self.url} refused batch {seq}: {what}"
        self._error(message)
        if what != self._refusing:
            self._refusing = what
            log.warning("%s; it stays in the buffer and is offered again (next in %.1f s)",
                        message, wait)  # fmt: skip
        if self._loop is not None:
            self._loop.call_later(wait, self.kick)

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any
    ) -> None:
        entry = self._inflight.pop(mid, None)
        if entry is None:
            waiter = self._control.pop(mid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            return
        seq, sent, size = entry
        self._inflight_seqs.discard(seq)
        if reason.is_failure:  # MQTT 5 only: the broker did not take it
            self._refused(seq, size, reason)
            return
        self.limit.accepted(size)
        if self._parked:
            self._parked.pop(seq, None)
        self.latencies_ms.append((time.monotonic() - sent) * 1000)
        self.acked += 1
        self._acked_seqs.append(seq)  # only now may the batch leave the buffer (in _pump)
        self.kick()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            decoded = decode(bytes(msg.payload))
            if not isinstance(decoded, Command):
                raise WireError(f"expected a command, got a {decoded.kind} message")
        except WireError as exc:
            # Answer under its id when it can be read: the sender's reply is not left pending.
            cid = command_id_of(bytes(msg.payload))
            reply = CommandReply(self.gateway, self.session, 0, wall_ms(), command_id=cid,
                                 error=f"cannot decode the command: {exc}")  # fmt: skip
            self._reply(reply)
            return
        task = asyncio.get_running_loop().create_task(self._run_command(decoded))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_command(self, cmd: Command) -> None:
        try:
            reply = await self._on_command(cmd)
        except BufferFull as exc:  # ... unless it cannot store the alarm event it made
            self._crash(exc)
            return
        except Exception as exc:  # a command must never take the daemon down
            log.exception("command %s failed", cmd.name)
            reply = CommandReply(
                self.gateway,
                self.session,
                0,
                wall_ms(),
                command_id=cmd.command_id,
                error=f"{type(exc).__name__}: {exc}",
            )
        self._reply(reply)

    def _reply(self, reply: CommandReply) -> None:
        if len(reply.error) > MAX_ERROR:  # the collector would refuse the reply, not the error
            reply = replace(reply, error=reply.error[: MAX_ERROR - 1] + "…")
        if self._client is not None and self.connected:
            payload = encode(reply)
            if self._fits(Kind.CMD_REPLY, payload):
                self._client.publish(self._topics[Kind.CMD_REPLY], payload, 1)

    def _pump(self) -> None:
        """Fill the in-flight window: alarm lane first, then device events, then telemetry."""
        self._pump_scheduled = False
        if self._acked_seqs:  # one transaction for every PUBACK of this loop iteration
            self.outbox.acked(self._acked_seqs)
            self._acked_seqs = []
            self.last_puback_ms = wall_ms()
        client = self._client
        if client is None or self.live_since_ms is None:
            return
        room = self.cfg.inflight - len(self._inflight)
        if room <= 0:
            return
        exclude = self._inflight_seqs
        if self._parked:  # refused for another reason than size: not before their time
            now = time.monotonic()
            held = {seq for seq, (until, _) in self._parked.items() if until > now}
            exclude = exclude | held if held else exclude
        for batch in self.outbox.ready(exclude, room, self.live_since_ms):
            self._pumping = True
            try:
                info = client.publish(self._topics[_LANE_KIND[batch.lane]], batch.payload, 1)
            finally:
                self._pumping = False
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break  # the connection is going down; the batch stays frozen for the next
            self._inflight[info.mid] = (batch.seq, time.monotonic(), len(batch.payload))
            self._inflight_seqs.add(batch.seq)
            self.published += 1
            # Send each batch at once, not after the whole refill: the broker works on it while
            # the next is read from the buffer (a refill of a dozen took long enough for the
            # few batches still in flight to be acknowledged, and the link went idle).
            # If the socket is full, loop_write registers the writer callback to finish.
            if client.loop_write() != mqtt.MQTT_ERR_SUCCESS:
                break  # the connection dropped (paho has called on_disconnect)


async def first_set(*events: asyncio.Event) -> None:
    """Wait until any of `events` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
