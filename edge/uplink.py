"""MQTT uplink: QoS 1 batches with a bounded in-flight window, birth/death, commands.

paho-mqtt runs inside the asyncio loop (its socket is registered with the loop, as in paho's
asyncio example), so every callback runs on the loop thread and can touch the outbox directly.
A fresh paho client is made per connection: on reconnect we republish frozen batches ourselves,
with their original seq, instead of letting paho's session replay race with ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.clock import wall_ms
from edge.config import MqttConfig
from edge.outbox import LANE_ALARM, LANE_DATA, LANE_DEVICE, BufferFull, Outbox
from wire import Birth, Command, CommandReply, Death, Kind, Status, WireError, decode, encode, topic

log = logging.getLogger("lifeline.edge.uplink")

CommandHandler = Callable[[Command], Awaitable[CommandReply]]
_CONNECT_TIMEOUT_S = 10.0
_LANE_KIND = {LANE_ALARM: Kind.ALARM, LANE_DEVICE: Kind.DEVICE, LANE_DATA: Kind.DATA}


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
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._misc: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._stopping = False
        self._inflight: dict[int, tuple[int, float]] = {}  # mid -> (seq, monotonic sent)
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
        # For the health snapshot: connected or not since when, the last error, the last PUBACK.
        self._up = False  # as last reported: unlike `connected`, cleared only by _down
        self.state_since_ms = wall_ms()
        self.last_error = ""
        self.last_error_ms: int | None = None
        self.last_puback_ms: int | None = None
        self._refusal = ""
        # A callback that failed: loop callbacks die in silence, so run() raises it instead.
        self.failure: BaseException | None = None
        self._pump_soon = self._guarded(self._pump)

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
        """Stay connected until `close`; each connection publishes birth and drains the outbox."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        attempt = 0
        while not self._stopping:
            try:
                await self._connect()
            except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
                self._raise_failure()
                self._error(f"broker {self.cfg.url} unreachable: {str(exc) or type(exc).__name__}")
                attempt += 1
                delay = min(self.cfg.reconnect_max_s, self.cfg.reconnect_min_s * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.0)
                log.warning(
                    "broker %s unreachable (%s); retrying in %.1f s", self.cfg.url, exc, delay
                )
                await asyncio.sleep(delay)
                continue
            attempt = 0
            await self._lost.wait()
            self._raise_failure()
            self._teardown()
            self._down()
            if not self._stopping:
                self._error(f"connection to {self.cfg.url} lost")
                log.warning("connection to %s lost; reconnecting", self.cfg.url)
                await asyncio.sleep(self.cfg.reconnect_min_s * random.uniform(0.1, 0.5))

    def kick(self) -> None:
        """Something new was frozen, queued or acknowledged: fill the window soon (coalesced)."""
        if not self._pump_scheduled and self._loop is not None:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump_soon)

    def publish_birth(self) -> None:
        """Publish the retained birth for this session (on connect and on `rebirth`)."""
        if self._client is not None and self.connected:
            self._client.publish(self._topics[Kind.BIRTH], encode(self._birth()), 1, retain=True)

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
            self._client.publish(self._topics[Kind.STATUS], encode(msg), 0)

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
            info = client.publish(self._topics[Kind.DEATH], self._death(reason), 1, retain=True)
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
            self.gateway, self.session, 0, wall_ms(), reason=reason, epoch=self.outbox.epoch
        )
        return encode(death)

    def _new_client(self) -> mqtt.Client:
        cfg = self.cfg
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"lifeline-edge-{self.gateway}",
            clean_session=True,
            reconnect_on_failure=False,
        )
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls is not None or cfg.url.startswith("mqtts:"):
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
        # connect() blocks on DNS, TCP and TLS: keep it off the loop so polling goes on.
        try:
            await self._loop.run_in_executor(
                None, client.connect, self.cfg.host, self.cfg.port, self.cfg.keepalive_s
            )
        except OSError as exc:
            self._teardown()
            raise ConnectionError(str(exc)) from None
        try:
            await asyncio.wait_for(self._connected.wait(), _CONNECT_TIMEOUT_S)
        except TimeoutError:
            self._teardown()
            raise
        if self._lost.is_set():
            self._teardown()
            raise ConnectionError(f"refused by broker: {self._refusal or 'connection closed'}")

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
        self._hop(self._forget_socket, sock)

    def _forget_socket(self, sock: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(Exception):
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
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
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            self._refusal = str(reason)
            self._lost.set()
            self._connected.set()
            return
        self.connects += 1
        self.live_since_ms = wall_ms()
        self._up = True
        self.state_since_ms = self.live_since_ms
        self.outbox.health_changed()
        client.subscribe(self._topics[Kind.CMD], qos=1)
        self.publish_birth()
        log.info("connected to %s (session %s)", self.cfg.url, self.session)
        self._connected.set()
        self.kick()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.live_since_ms = None
        self._lost.set()

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any
    ) -> None:
        entry = self._inflight.pop(mid, None)
        if entry is None:
            waiter = self._control.pop(mid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            return
        seq, sent = entry
        self._inflight_seqs.discard(seq)
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
            self._reply(CommandReply(self.gateway, self.session, 0, wall_ms(), error=str(exc)))
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
        if self._client is not None and self.connected:
            self._client.publish(self._topics[Kind.CMD_REPLY], encode(reply), 1)

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
        for batch in self.outbox.ready(self._inflight_seqs, room, self.live_since_ms):
            self._pumping = True
            try:
                info = client.publish(self._topics[_LANE_KIND[batch.lane]], batch.payload, 1)
            finally:
                self._pumping = False
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break  # the connection is going down; the batch stays frozen for the next
            self._inflight[info.mid] = (batch.seq, time.monotonic())
            self._inflight_seqs.add(batch.seq)
            self.published += 1
            # Send each batch at once, not after the whole refill: the broker works on it while
            # the next is read from the buffer (a refill of a dozen took long enough for the
            # few batches still in flight to be acknowledged, and the link went idle).
            # If the socket is full, loop_write registers the writer callback to finish.
            if client.loop_write() != mqtt.MQTT_ERR_SUCCESS:
                break  # the connection dropped (paho has called on_disconnect)
