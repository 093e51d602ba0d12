"""MQTT ingest: QoS 1, persistent session, batched commits, PUBACK only after the commit.

MQTT 5 by default (`IngestConfig.protocol`), or MQTT 3.1.1 for brokers that speak nothing newer
(NATS, RabbitMQ 3.x). Both keep a persistent session (3.1.1: clean session 0; 5: clean start 0
and a session expiry that never ends) and acknowledge through paho's manual ack, which works
the same in both versions.
"""

import contextlib
import hashlib
import itertools
import logging
import queue
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from lifeline.collector.broker_health import (
    NOT_HONOURED,
    NOT_PROBED,
    PROBING,
    BrokerHealth,
    connect_error,
)
from lifeline.collector.models import Accepted, Incoming, Rejected, WriteResult
from lifeline.collector.store import Store, StoreDataError, StoreError, StoreUnavailable
from lifeline.wire import (
    AlarmBatch,
    Birth,
    Command,
    DataBatch,
    Kind,
    Message,
    WireError,
    decode,
    encode,
    parse_topic,
    subscription,
    topic,
)
from lifeline.wire.messages import Value
from lifeline.wire.topics import DURABLE_KINDS, WIRE_VERSION

log = logging.getLogger(__name__)

# What the collector listens to; cmd is what it sends, so it is left out.
INGEST_KINDS = (
    Kind.DATA,
    Kind.ALARM,
    Kind.DEVICE,
    Kind.BIRTH,
    Kind.DEATH,
    Kind.STATUS,
    Kind.CMD_REPLY,
)
SESSION_NEVER_EXPIRES = 0xFFFFFFFF
PROTOCOLS = {"5": MQTTProtocolVersion.MQTTv5, "3.1.1": MQTTProtocolVersion.MQTTv311}
# CONNACK reason codes (paho maps the MQTT 3.1.1 return codes 1 and 2 onto these).
_UNSUPPORTED_PROTOCOL = 0x84
_CLIENT_ID_NOT_VALID = 0x85
# Shared-subscription probes travel on `<root>/v1/lifeline-probe/<nonce>/cmd`: a kind the
# collector may publish under the shipped ACL, a site no gateway has, and a filter of its own
# in the same share group, so that real gateways' commands never reach a collector.
PROBE_SITE = "lifeline-probe"
# The MQTT user of a collector's probe connections is its own user name plus this (same
# password): config/mosquitto/lifeline.acl gives `lifeline-collector-probe` the collector's
# topics, the password file needs it too.
PROBE_USER_SUFFIX = "-probe"


def classify(topic_name: str, payload: bytes, root: str, now_ms: int) -> Incoming:
    """Decode one MQTT message, or say why it belongs in the dead-letter table.

    Durable batches get a digest of their bytes: a redelivery is byte-identical, so the store
    can tell it from a different batch that reuses its key.
    """
    try:
        parts = parse_topic(topic_name, root)
        msg = decode(payload)
    except WireError as exc:
        return Rejected(topic_name, payload, str(exc), now_ms)
    if msg.kind is not parts.kind:
        reason = f"topic kind {parts.kind} does not match payload kind {msg.kind}"
        return Rejected(topic_name, payload, reason, now_ms)
    if msg.gateway != parts.gateway:
        reason = f"topic gateway {parts.gateway!r} does not match payload gateway {msg.gateway!r}"
        return Rejected(topic_name, payload, reason, now_ms)
    foreign = _foreign_alarm(msg)
    if foreign is not None:
        reason = (
            f"alarm id {foreign!r} is not one of gateway {msg.gateway!r}"
            f" (its ids start with {msg.gateway + ':'!r}): a gateway speaks only for itself"
        )
        return Rejected(topic_name, payload, reason, now_ms, conflict_of=msg.gateway)
    digest = None
    if parts.kind in DURABLE_KINDS:
        digest = hashlib.blake2b(payload, digest_size=16).digest()
    return Accepted(parts, msg, digest, topic_name, payload)


def _foreign_alarm(msg: Message) -> str | None:
    """The first alarm id in `msg` that its gateway did not make (`<gateway>:...`), if any."""
    if isinstance(msg, AlarmBatch):
        events = msg.events
    elif isinstance(msg, Birth):
        events = msg.alarms
    else:
        return None
    prefix = msg.gateway + ":"
    return next((e.alarm_id for e in events if not e.alarm_id.startswith(prefix)), None)


def _ascii(text: str) -> str:
    """`text` with every character outside printable ASCII escaped (\\x00, \\u4e2d, ...)."""
    return "".join(c if " " <= c <= "~" else ascii(c)[1:-1] for c in text)


def refusal(reason: ReasonCode, protocol: str, client_id: str) -> str:
    """One sentence for a CONNACK that refused the collector: the broker's reason, its code,
    the protocol and client id asked for, and what to change when that is known.

    `protocol` is "5" or "3.1.1" (MQTT 5 section 3.2.2.2; MQTT 3.1.1 return codes 1-5 arrive
    as the MQTT 5 codes 0x84-0x87 from paho).
    """
    code = int(reason.value)
    text = (
        f"broker refused the connection: CONNACK {reason} (0x{code:02X};"
        f" MQTT {protocol}, client id {client_id})"
    )
    if code == _UNSUPPORTED_PROTOCOL:
        other = "3.1.1" if protocol == "5" else "5"
        text += (
            f": the broker does not speak MQTT {protocol}; switch with --mqtt-protocol {other}"
            f' (mqtt_protocol: "{other}" in the collector config)'
        )
    elif code == _CLIENT_ID_NOT_VALID:
        text += ": choose another --client-id (some brokers refuse '.', '/' or long ids)"
    return text


def parse_mqtt_urls(urls: str) -> list[tuple[str, int]]:
    """Split a comma-separated list of broker URLs (nodes of one cluster, tried in turn) into
    (host, port) pairs; raises ValueError naming a URL that is not mqtt:// or mqtts://."""
    found = [parse_mqtt_url(u.strip()) for u in urls.split(",")]
    schemes = {urlsplit(u.strip()).scheme == "mqtts" for u in urls.split(",")}
    if len(schemes) > 1:
        raise ValueError(f"MQTT URLs {urls!r} mix TLS (mqtts://) and plain ones: use one kind")
    return found


def parse_mqtt_url(url: str) -> tuple[str, int]:
    """Split mqtt://host:port (or mqtts://host:port, TLS, default 8883) into (host, port);
    raises ValueError for any other URL, and for one with user info: credentials in a URL were
    ignored and then logged with it (the message shows neither)."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        where = parts.netloc.rsplit("@", 1)[1]
        raise ValueError(
            f"the MQTT URL {parts.scheme}://***@{where} carries credentials: give the user "
            "with --mqtt-username (mqtt_username:) and the password in $LIFELINE_MQTT_PASSWORD"
        )
    if parts.scheme not in ("mqtt", "tcp", "mqtts") or not parts.hostname:
        raise ValueError(f"MQTT URL {url!r} must look like mqtt://HOST:PORT or mqtts://HOST:PORT")
    return parts.hostname, parts.port or (8883 if parts.scheme == "mqtts" else 1883)


@dataclass
class IngestStats:
    """Counters since start."""

    received: int = 0
    batches: int = 0
    readings: int = 0
    duplicates: int = 0
    conflicts: int = 0  # keys seen before with different content (dead-lettered)
    new_epochs: int = 0  # known gateways that started a new buffer epoch
    dead_letters: int = 0
    store_errors: int = 0  # failed commits (each retried, split or dead-lettered)
    poisoned: int = 0  # messages the database refused every time: dead-lettered with its reason
    rebirths_requested: int = 0  # retained (possibly old) births answered with `rebirth`
    gateway_conflicts: int = 0  # claims refused to a gateway (another's alarm id or asset)
    connected: bool = False


@dataclass(frozen=True, slots=True)
class _Pending:
    item: Incoming
    mid: int
    qos: int


@dataclass
class IngestConfig:
    """How ingest connects and batches."""

    # One broker URL, or several (comma-separated): nodes of one cluster, tried in turn.
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    protocol: str = "5"  # or "3.1.1" (a key of PROTOCOLS)
    root: str = "lifeline"
    client_id: str = "lifeline-collector"
    share_group: str | None = None
    # Only these sites' topics (a partition of the topic space, collector/partitions.py);
    # empty: every site.
    sites: tuple[str, ...] = ()
    batch_max: int = 500  # messages per transaction
    batch_wait_s: float = 0.05  # how long to wait for a batch to fill
    receive_maximum: int = 2000  # unacknowledged QoS 1 messages the broker may send us
    retry_s: float = 1.0  # first back-off after a store error
    session_lost_hold_s: float = 600.0  # not ready this long after the broker lost our session
    probe_tries: int = 20  # shared-subscription probes before calling it not honoured
    # At the first connect without a session, drop the connection once and check that the
    # reconnect finds the session (not every broker keeps one for a client that is away).
    session_probe: bool = True
    probe_interval_s: float = 0.5
    poison_tries: int = 3  # a message the database refuses this often is dead-lettered
    keepalive_s: int = 30
    kinds: tuple[Kind, ...] = field(default=INGEST_KINDS)
    username: str | None = None  # broker credentials (a password_file deployment)
    password: str | None = field(default=None, repr=False)  # never in logs or reprs
    tls_ca: str | None = None  # CA file to trust; TLS is on for mqtts:// or when set
    tls_cert: str | None = None  # client certificate (with tls_key) for brokers that ask
    tls_key: str | None = None


class Ingest:
    """Subscribes, batches, commits through the store and only then acknowledges each message.

    As many writer threads as the store takes concurrent transactions (two on PostgreSQL):
    while one waits for the server, the next prepares its batch. Each batch gets a ticket
    when it is taken from the queue; PUBACKs go out in ticket order (MQTT wants them in
    receive order), and a batch that changes state (anything but readings and dead letters)
    is written only after every earlier batch has committed, so births, deaths, alarms and
    device events apply in the order they arrived.
    """

    def __init__(
        self,
        store: Store,
        config: IngestConfig,
        on_commit: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config
        self.stats = IngestStats()
        self._on_commit = on_commit
        self._clock = clock
        self._queue: queue.Queue[_Pending] = queue.Queue()
        self._stop = threading.Event()
        self._writers = [
            threading.Thread(
                target=self._write_loop, args=(i,), name=f"ingest-writer-{i}", daemon=True
            )
            for i in range(max(1, store.write_concurrency))
        ]
        self._take = threading.Lock()  # a batch and its ticket are taken together
        self._tickets = itertools.count(1)
        self._turn = threading.Condition()  # guards _acked and the stats
        self._acked = 0  # the last ticket whose messages were acknowledged
        self._hook = threading.Lock()  # on_commit never runs twice at once
        self._hook_failing = False
        self._ready = threading.Event()
        # Why each writer cannot commit right now (absent: it can); guarded by _turn.
        self._failing: dict[int, str] = {}
        self._crashed: str | None = None
        self._refusal = ""  # the broker's last CONNACK refusal, until a CONNACK accepts us
        if config.protocol not in PROTOCOLS:
            raise ValueError(
                f"MQTT protocol {config.protocol!r} is not one of {', '.join(PROTOCOLS)}"
            )
        self._brokers = parse_mqtt_urls(config.mqtt_url)
        self._broker = 0  # index of the broker in use (or tried next)
        self._client = self._new_client(config.client_id, ingesting=True)
        self.health = BrokerHealth(self.broker_url, config.session_lost_hold_s)
        self._filters: list[str] = []  # of the last SUBSCRIBE, in order
        self._probe_wanted = threading.Event()
        self._probe_back = threading.Event()
        self._probe_topic = ""
        self._probe_prefix = f"{config.root}/v{WIRE_VERSION}/{PROBE_SITE}/"
        self._session_checked = not config.session_probe  # the broker keeps sessions
        self._session_probe = False  # the connection was dropped on purpose, to see
        self._prober = threading.Thread(target=self._probe_loop, name="share-probe", daemon=True)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.reconnect_delay_set(1, 5)

    def _new_client(self, client_id: str, ingesting: bool = False) -> mqtt.Client:
        """A paho client speaking the configured protocol, with the broker credentials.

        `ingesting`: the client messages arrive on, with a persistent session (MQTT 3.1.1:
        clean session 0 here; MQTT 5 asks for it at connect) and acknowledged by hand. Any other
        client (the probes) logs in as the user name plus PROBE_USER_SUFFIX, with the same
        password: a broker that binds client ids to users (lifeline-secure.conf,
        use_username_as_clientid) would otherwise give a probe the ingest connection's client
        id, and each would disconnect the other.
        """
        cfg = self.config
        v5 = cfg.protocol == "5"
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=PROTOCOLS[cfg.protocol],
            clean_session=None if v5 else not ingesting,
            manual_ack=ingesting,
        )
        if cfg.username is not None:
            user = cfg.username if ingesting else cfg.username + PROBE_USER_SUFFIX
            client.username_pw_set(user, cfg.password)
        if cfg.mqtt_url.startswith("mqtts://") or cfg.tls_ca is not None:
            client.tls_set(ca_certs=cfg.tls_ca, certfile=cfg.tls_cert, keyfile=cfg.tls_key)
        return client

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Connect (retrying in the background) and start the writer thread."""
        for writer in self._writers:
            writer.start()
        if self.config.share_group is not None:
            self._prober.start()
        self._connect_async(self._client)
        self._client.loop_start()

    @property
    def broker_url(self) -> str:
        """The broker in use, or tried next (one of `mqtt_url`'s)."""
        return self.config.mqtt_url.split(",")[self._broker].strip()

    def _connect_async(self, client: mqtt.Client) -> None:
        """Point paho's (re)connections at the broker in use; its loop thread connects."""
        cfg = self.config
        host, port = self._brokers[self._broker]
        if cfg.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            # A persistent session in MQTT 5 needs a session expiry: without it the broker
            # discards our queue as soon as we disconnect, and with it everything we missed.
            props.SessionExpiryInterval = SESSION_NEVER_EXPIRES
            props.ReceiveMaximum = cfg.receive_maximum
            client.connect_async(host, port, cfg.keepalive_s, clean_start=False, properties=props)
        else:  # the broker's own limit on unacknowledged messages applies (no Receive Maximum)
            client.connect_async(host, port, cfg.keepalive_s)

    def _next_broker(self, client: mqtt.Client) -> None:
        """Send paho's next reconnect to the next broker URL of the list, if there are several.

        Runs in paho's callbacks once a connection attempt failed or the connection closed:
        connect_async there only changes where its loop thread reconnects to.
        """
        if len(self._brokers) < 2:
            return
        self._broker = (self._broker + 1) % len(self._brokers)
        self._connect_async(client)
        self.health.url = self.broker_url
        log.info("trying broker %s next", self.broker_url)

    @property
    def ready(self) -> bool:
        """Connected and subscribed."""
        return self._ready.is_set()

    def problems(self) -> list[str]:
        """Why ingest is not doing its job right now, one sentence each (empty: it is)."""
        out: list[str] = []
        if self._crashed is not None:
            out.append(self._crashed)
        out.extend(self.health.problems(self._clock()))
        if (
            self.health.connected
            and not self._ready.is_set()
            and not self.health.refused
            and self.health.session_probe != NOT_HONOURED
        ):
            out.append(
                "checking that the broker keeps a session for an absent collector (probe)"
                if self.health.session_probe == PROBING
                else "subscriptions not active yet"
            )
        with self._turn:
            failing = sorted(set(self._failing.values()))
        out.extend(f"database commits failing (retrying): {why}" for why in failing)
        return out

    def wait_ready(self, timeout: float) -> bool:
        """Wait until connected and subscribed."""
        return self._ready.wait(timeout)

    def stop(self) -> None:
        """Finish the batch in hand, then disconnect; unacknowledged messages stay queued."""
        self._stop.set()
        self._probe_wanted.set()
        for writer in self._writers:
            writer.join(timeout=30)
        if self._prober.is_alive():
            self._prober.join(timeout=10)
        self._client.disconnect()
        self._client.loop_stop()

    # --- MQTT callbacks (network thread) -------------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._refusal = refusal(reason, self.config.protocol, self.config.client_id)
            self.health.connection_failed(self._refusal, self._clock())
            return
        self._refusal = ""
        cfg = self.config
        self._filters = [
            subscription(k, cfg.root, site=site, share_group=cfg.share_group)
            for site in cfg.sites or ("+",)
            for k in cfg.kinds
        ]
        if cfg.share_group is not None:
            self._filters.append(
                subscription(Kind.CMD, cfg.root, site=PROBE_SITE, share_group=cfg.share_group)
            )
        client.subscribe([(f, 1) for f in self._filters])
        self.stats.connected = True
        self.health.connected_now(flags.session_present, self._clock())
        self.health.connack_limits(self._connack_limits(props))
        if flags.session_present:  # the broker kept ours: it keeps sessions
            self._session_checked = True
        if self._session_probe:
            self._session_probe = False
            self.health.session_result(
                ""
                if flags.session_present
                else "the collector's reconnect found no session (CONNACK session present 0)"
            )
        log.info(
            "connected to %s as %s (MQTT %s, session present: %s)",
            self.broker_url,
            cfg.client_id,
            cfg.protocol,
            flags.session_present,
        )

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        # paho passes no error, but calls this while it handles the OSError of the attempt.
        self.health.connection_failed(connect_error(sys.exception()), self._clock())
        self._next_broker(client)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reasons: list[ReasonCode],
        props: Properties | None,
    ) -> None:
        # Ready only once the broker routes to us: anything published earlier would be missed.
        granted = [
            (f, None if r.is_failure else int(r.value))
            for f, r in zip(self._filters, reasons, strict=False)
        ]
        self.health.subscribed(granted)
        if self.health.refused:
            return
        if not self._session_checked:
            if self.health.session_probe == NOT_PROBED:
                self._drop_to_probe_session(client)
            return  # ready once a reconnect found the session
        self._subscribed()

    def _connack_limits(self, props: Properties | None) -> list[str]:
        """What an MQTT 5 CONNACK withholds that ingest relies on, one phrase each."""
        out = []
        if props is not None and getattr(props, "MaximumQoS", 1) == 0:
            out.append(
                "CONNACK says Maximum QoS 0: QoS 1 is not offered, messages can be lost before"
                " they are stored"
            )
        shared = getattr(props, "SharedSubscriptionAvailable", 1) if props is not None else 1
        if self.config.share_group is not None and shared == 0:
            out.append(
                "CONNACK says Shared Subscription Available 0: --share-group cannot work;"
                " split collectors with --partitions (docs/brokers.md)"
            )
        return out

    def _drop_to_probe_session(self, client: mqtt.Client) -> None:
        """A first connect without a session proves nothing about the broker keeping one, so
        drop this connection (no DISCONNECT: the session stays, as after a crash) and let
        paho reconnect: CONNACK must say session present. The collector's own connection and
        client id, so that no second connection takes its place (`use_username_as_clientid`)
        or touches its session; what arrives meanwhile waits in that session."""
        self._session_probe = True
        self.health.session_probing()
        sock = client.socket()
        if isinstance(sock, socket.socket):  # also TLS: SSLSocket is one
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _subscribed(self) -> None:
        """Subscribed and the broker keeps sessions: ready; probe a shared subscription."""
        self._ready.set()
        if self.config.share_group is not None:
            self.health.probing(self._filters[0])
            self._probe_wanted.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        self.stats.connected = False
        self._ready.clear()
        # After a refused CONNACK the broker closes the connection, and paho reports that as
        # "Unspecified error": the refusal is the reason worth showing.
        if not self._stop.is_set() and not self._refusal and not self._session_probe:
            self.health.connection_failed(f"disconnected ({reason})", self._clock())
        if not self._stop.is_set():
            self._next_broker(client)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.startswith(self._probe_prefix):
            # A shared-subscription probe: ours, or another group member's. Never stored.
            if msg.qos > 0:
                client.ack(msg.mid, msg.qos)
            if msg.topic == self._probe_topic:
                self._probe_back.set()
            return
        # Decoding here overlaps with the writer thread waiting on the database.
        now_ms = int(self._clock() * 1000)
        item = classify(msg.topic, bytes(msg.payload), self.config.root, now_ms)
        self._queue.put(_Pending(item, msg.mid, msg.qos))
        if msg.retain and isinstance(item, Accepted) and item.topic.kind is Kind.BIRTH:
            self._ask_rebirth(item.topic.site, item.topic.gateway)

    def _ask_rebirth(self, site: str, gateway: str) -> None:
        """Ask a gateway for a fresh birth (Sparkplug's host behaviour on a stored birth).

        A retained birth is the broker's copy from when the gateway connected: its alarm
        picture and device states may be long out of date. Applying it is harmless (older
        positions never roll state back); the fresh birth brings the current picture.
        """
        try:
            self.send_command(site, gateway, "rebirth")
        except ConnectionError as exc:
            log.warning("cannot ask gateway %s for a fresh birth: %s", gateway, exc)
            return
        self.stats.rebirths_requested += 1
        log.info("gateway %s: retained birth received, asked for a fresh one", gateway)

    def _probe_loop(self) -> None:
        """After each SUBACK of a shared subscription, publish probes until one comes back.

        The probes go out on a connection of their own: a broker that refuses them (an ACL)
        may drop that connection, never the one ingest runs on. The group's members share the
        probe filter too, so a probe may go to another member: several are sent,
        `probe_interval_s` apart; none back after `probe_tries` means the broker does not
        deliver on the shared subscription.
        """
        while not self._stop.is_set():
            self._probe_wanted.wait()
            self._probe_wanted.clear()
            if self._stop.is_set() or not self._ready.is_set():
                continue
            try:
                honoured, why = self._probe(), ""
            except (OSError, RuntimeError, ValueError) as exc:
                honoured, why = False, f"cannot publish a probe: {type(exc).__name__}: {exc}"
            if self._stop.is_set() or not self._ready.is_set():
                continue  # disconnected meanwhile: the next SUBACK probes again
            self.health.probe_result(honoured, why)

    def _probe(self) -> bool:
        """Publish probes on a connection of our own; True as soon as one comes back."""
        cfg = self.config
        host, port = self._brokers[self._broker]
        pub = self._new_client(f"{cfg.client_id}-probe")
        pub.connect(host, port, cfg.keepalive_s)
        pub.loop_start()
        try:
            for _ in range(cfg.probe_tries):
                if self._stop.is_set() or not self._ready.is_set():
                    return False
                self._probe_back.clear()
                nonce = f"p{uuid.uuid4().hex[:16]}"
                self._probe_topic = topic(PROBE_SITE, nonce, Kind.CMD, root=cfg.root)
                pub.publish(self._probe_topic, b"probe", qos=1)
                if self._probe_back.wait(cfg.probe_interval_s):
                    return True
            return False
        finally:
            pub.disconnect()
            pub.loop_stop()

    # --- writer thread ------------------------------------------------------------------------

    def _next_batch(self) -> list[_Pending]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.config.batch_wait_s
        while len(batch) < self.config.batch_max:
            remaining = deadline - time.monotonic()
            try:
                batch.append(
                    self._queue.get(timeout=max(remaining, 0))
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
        return batch

    def _write_loop(self, index: int) -> None:
        try:
            self._write_batches(index)
        except Exception as exc:
            # A bug, not a database problem (those are handled below): say so where an
            # operator looks instead of leaving a collector that silently stopped ingesting.
            self._crashed = f"ingest writer {index} stopped: {type(exc).__name__}: {exc}"
            log.critical("%s", self._crashed, exc_info=True)

    def _write_batches(self, index: int) -> None:
        while not self._stop.is_set():
            with self._take:
                batch = self._next_batch()
                ticket = next(self._tickets) if batch else 0
            if batch:
                self._commit(index, ticket, batch)
            # After each commit, and on idle passes by the first writer only.
            if self._on_commit is not None and (batch or index == 0):
                with self._hook:
                    self._run_hook(self._on_commit)

    def _run_hook(self, hook: Callable[[], None]) -> None:
        """Run the post-commit hook; a database error there never stops ingest."""
        try:
            hook()
        except StoreError as exc:
            if not self._hook_failing:
                log.warning("post-commit hook failed (retried after the next commit): %s", exc)
            self._hook_failing = True
            return
        if self._hook_failing:
            log.info("post-commit hook succeeds again")
            self._hook_failing = False

    def _await_turn(self, ticket: int) -> bool:
        """Wait until every earlier batch is acknowledged; False if stopping meanwhile."""
        with self._turn:
            while self._acked != ticket - 1:
                if self._stop.is_set():
                    return False
                self._turn.wait(0.2)
        return True

    def _commit(self, writer: int, ticket: int, batch: list[_Pending]) -> None:
        now_ms = int(self._clock() * 1000)
        items = [p.item for p in batch]
        ordered = any(
            isinstance(i, Accepted) and not isinstance(i.message, DataBatch) for i in items
        )
        if ordered and not self._await_turn(ticket):
            return  # stopping: unacknowledged, so the broker redelivers these
        result = self._write(writer, items, now_ms)
        if result is None:
            return  # stopping: the broker redelivers these to the next run
        self._write_succeeded(writer)
        if not self._await_turn(ticket):
            return  # committed but unacknowledged: the redelivery is a duplicate, and ignored
        with self._turn:
            # Only now is it safe for the broker to forget these messages.
            for p in batch:
                if p.qos > 0:
                    self._client.ack(p.mid, p.qos)
            self.stats.received += len(batch)
            self.stats.batches += 1
            self.stats.readings += result.readings
            self.stats.duplicates += result.duplicates
            self.stats.conflicts += result.conflicts
            self.stats.new_epochs += result.new_epochs
            self.stats.gateway_conflicts += result.gateway_conflicts
            self.stats.dead_letters += result.dead_letters
            self._acked = ticket
            self._turn.notify_all()
        for item in items:
            if isinstance(item, Rejected):
                log.info("dead letter from %s: %s", item.topic, item.reason)

    def _write(self, writer: int, items: list[Incoming], now_ms: int) -> WriteResult | None:
        """Commit `items` in order, isolating any the database refuses; None if stopping.

        A lost connection is retried for ever (the batch stays unacknowledged). A data error
        in a commit of several messages splits it in halves, each committed in turn, until
        the refused messages stand alone; each of those is tried `poison_tries` times and
        then dead-lettered with the database's reason, so one bad value never stops a lane.
        """
        delay = self.config.retry_s
        tries = 0
        while True:
            try:
                result = self.store.write(items, now_ms)
            except StoreUnavailable as exc:
                self._write_failed(writer, exc)
            except StoreDataError as exc:
                self._write_failed(writer, exc)
                tries += 1
                if len(items) > 1:
                    half = len(items) // 2
                    first = self._write(writer, items[:half], now_ms)
                    rest = None if first is None else self._write(writer, items[half:], now_ms)
                    return None if first is None or rest is None else first + rest
                if tries >= self.config.poison_tries:
                    return self._dead_letter_poison(writer, items[0], exc, now_ms)
            else:
                return result
            if self._stop.wait(delay):
                return None
            delay = min(delay * 2, 10.0)

    def _dead_letter_poison(
        self, writer: int, item: Incoming, exc: StoreDataError, now_ms: int
    ) -> WriteResult | None:
        """Store a message the database keeps refusing as a dead letter with its reason."""
        if isinstance(item, Accepted):
            reason = f"the database refused it {self.config.poison_tries} times: {exc}"
            letter = Rejected(item.topic_name, item.payload or encode(item.message), reason, now_ms)
        else:
            # Its own dead letter was refused: keep only what any text column can hold.
            letter = Rejected(
                _ascii(item.topic), item.payload, _ascii(f"{item.reason}; then {exc}"), now_ms
            )
        log.warning("dead-lettered a message from %s: %s", letter.topic, letter.reason)
        with self._turn:
            self.stats.poisoned += 1
        delay = self.config.retry_s
        while True:
            try:
                result = self.store.write([letter], now_ms)
            except StoreError as error:
                # Not even a dead letter commits: the database, not the message, is the
                # problem. Keep the message unacknowledged and retry.
                self._write_failed(writer, error)
            else:
                return result
            if self._stop.wait(delay):
                return None
            delay = min(delay * 2, 10.0)

    def _write_failed(self, writer: int, exc: StoreError) -> None:
        with self._turn:
            self.stats.store_errors += 1
            first = not self._failing
            self._failing[writer] = str(exc)
        if first:
            log.warning("database commits failing: %s; retrying", exc)

    def _write_succeeded(self, writer: int) -> None:
        with self._turn:
            if self._failing.pop(writer, None) is None or self._failing:
                return
        log.warning("database commits succeed again")

    # --- commands -----------------------------------------------------------------------------

    def send_command(
        self, site: str, gateway: str, name: str, args: dict[str, Value] | None = None
    ) -> str:
        """Publish a command on the gateway's cmd topic (QoS 1); return its command id.

        Raises ValueError, before publishing, for a command the gateway could not decode (an
        argument over the wire's length limits, a control character): a gateway cannot answer
        what it cannot read, and its reply would stay pending for ever. ConnectionError when
        the broker connection is down.
        """
        command_id = uuid.uuid4().hex
        cmd = Command(
            gateway,
            "collector",
            0,
            int(self._clock() * 1000),
            command_id=command_id,
            name=name,
            args=dict(args or {}),
        )
        payload = encode(cmd)
        try:
            decode(payload)
        except WireError as exc:
            raise ValueError(f"the gateway could not read this command: {exc}") from None
        info = self._client.publish(
            topic(site, gateway, Kind.CMD, root=self.config.root), payload, qos=1
        )
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(
                f"cannot publish command to {gateway}: {mqtt.error_string(info.rc)}"
            )
        return command_id
