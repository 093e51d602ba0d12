"""What the broker gives ingest, judged against what ingest relies on (pure logic, no I/O).

Ingest relies on a persistent session kept across reconnects (MQTT 5 session expiry), on
QoS 1 for every subscription (PUBACK only after the commit), and, in a scale-out group, on the
broker honouring the shared subscription (`$share/<group>/...`, MQTT 5 section 4.8.2). A broker
may grant less without refusing anything: it can grant QoS 0 in the SUBACK, start a clean
session on a reconnect (CONNACK session present = 0), or treat a `$share/...` filter as a
plain topic filter that matches nothing. Each of these can lose messages silently, so each is
a reason not to report ready, logged once when it happens.
"""

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

log = logging.getLogger(__name__)

NOT_PROBED, PROBING, HONOURED, NOT_HONOURED = "not probed", "probing", "honoured", "not honoured"


def connect_error(exc: BaseException | None) -> str:
    """What a failed connection attempt says: 'cannot connect', with the OS's reason when
    the attempt raised one (`exc`, e.g. ConnectionRefusedError -> 'cannot connect: [Errno 111]
    Connection refused'; a name lookup or TLS failure likewise). Any other `exc` adds nothing.
    """
    if not isinstance(exc, OSError):
        return "cannot connect"
    return f"cannot connect: {str(exc) or type(exc).__name__}"


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class BrokerHealth:
    """The broker as ingest sees it; every method takes the time (seconds) from the caller.

    `session_lost_hold_s` is how long a reconnect without the session keeps ingest not ready:
    the messages published meanwhile are gone, and an operator has to notice that.
    """

    url: str
    session_lost_hold_s: float = 600.0
    connected: bool = False
    since: float | None = None  # when `connected` last changed
    last_error: str = ""
    connects: int = 0
    sessions_lost: int = 0
    session_lost_at: float | None = None
    qos0: list[str] = field(default_factory=list)  # filters the broker granted only QoS 0
    refused: list[str] = field(default_factory=list)  # filters the broker refused
    share: str = NOT_PROBED
    connack: list[str] = field(default_factory=list)  # what the MQTT 5 CONNACK withholds
    session_probe: str = NOT_PROBED  # whether the broker keeps an absent client's session
    session_error: str = ""
    share_filter: str = ""
    probe_error: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def connection_failed(self, error: str, now: float) -> None:
        """A connection attempt failed or the connection was lost; logged once per outage."""
        with self._lock:
            was_up = self.connected or self.since is None
            self.connected, self.last_error = False, error
            if was_up:
                self.since = now
        if was_up:
            log.warning("broker %s unreachable: %s; reconnecting", self.url, error)

    def connected_now(self, session_present: bool, now: float) -> None:
        """A CONNACK accepted us; a reconnect without our session means messages were lost."""
        with self._lock:
            lost = self.connects > 0 and not session_present
            # An outage was logged (a lost connection, or a first connect that failed).
            outage = self.since if not self.connected and self.last_error else None
            self.connects += 1
            self.connected, self.since, self.last_error = True, now, ""
            self.qos0, self.refused = [], []
            self.share = NOT_PROBED
            if lost:
                self.sessions_lost += 1
                self.session_lost_at = now
        if outage is not None:
            log.warning("broker %s reachable again after %.1f s", self.url, now - outage)
        if lost:
            log.error(
                "broker %s did not keep the persistent session on reconnect: messages published"
                " while the collector was away may be lost",
                self.url,
            )

    def subscribed(self, granted: list[tuple[str, int | None]]) -> None:
        """The SUBACK: for each filter, the QoS granted (None: refused)."""
        with self._lock:
            self.refused = [f for f, q in granted if q is None]
            self.qos0 = [f for f, q in granted if q == 0]
        if self.refused:
            log.error("broker refused subscriptions: %s", ", ".join(self.refused))
        if self.qos0:
            log.error(
                "broker granted only QoS 0 for %s: it may drop messages before the collector"
                " has stored them",
                ", ".join(self.qos0),
            )

    def connack_limits(self, limits: list[str]) -> None:
        """What the broker's MQTT 5 CONNACK says it does not offer that ingest relies on
        (MQTT 5 section 3.2.2.3: Maximum QoS, Shared Subscription Available), logged once each."""
        with self._lock:
            new = [x for x in limits if x not in self.connack]
            self.connack = list(limits)
        for limit in new:
            log.error("broker %s: %s", self.url, limit)

    def session_probing(self) -> None:
        """A check of the broker's persistent sessions is under way (a reconnect)."""
        with self._lock:
            self.session_probe = PROBING

    def session_result(self, why: str) -> None:
        """The session probe's outcome: "" when the broker kept the session and its message,
        else what it did not keep (logged once per change)."""
        with self._lock:
            changed = why != self.session_error
            self.session_probe = NOT_HONOURED if why else HONOURED
            self.session_error = why
        if why and changed:
            log.error(
                "broker %s does not keep a persistent session for an absent collector: %s",
                self.url,
                why,
            )

    def probing(self, share_filter: str) -> None:
        """A probe of the shared subscription is under way."""
        with self._lock:
            self.share, self.share_filter = PROBING, share_filter

    def probe_result(self, honoured: bool, why: str = "") -> None:
        """Whether a probe published on the shared subscription's topics came back (`why`:
        what went wrong publishing it, if that is known)."""
        with self._lock:
            changed = self.share != (HONOURED if honoured else NOT_HONOURED)
            self.share = HONOURED if honoured else NOT_HONOURED
            self.probe_error = why
        if changed and not honoured:
            log.error(
                "broker %s does not deliver on the shared subscription %s: %s",
                self.url,
                self.share_filter,
                why or "no probe came back",
            )
        elif changed:
            log.info("shared subscription %s honoured", self.share_filter)

    def problems(self, now: float) -> list[str]:
        """Why the broker does not give ingest what it relies on now (empty: it does)."""
        with self._lock:
            out = []
            if not self.connected:
                since = f" since {_utc(self.since)}" if self.since is not None else ""
                error = f": {self.last_error}" if self.last_error else ""
                out.append(f"broker {self.url} unreachable{since}{error}")
            if self.connected:
                out.extend(f"broker {x}" for x in self.connack)
            if self.refused:
                out.append(f"broker refused the subscriptions {', '.join(self.refused)}")
            if self.qos0:
                out.append(
                    f"broker granted QoS 0, not 1, for {', '.join(self.qos0)}: messages can be"
                    " lost before they are stored"
                )
            if self.session_lost_at is not None and now - self.session_lost_at < (
                self.session_lost_hold_s
            ):
                out.append(
                    "broker did not keep the persistent session when the collector reconnected"
                    f" at {_utc(self.session_lost_at)}: messages published while it was away"
                    f" may be lost ({self.sessions_lost} time(s) since start)"
                )
            if self.connected and self.session_probe == NOT_HONOURED:
                out.append(
                    "broker does not keep a persistent session for an absent collector:"
                    f" {self.session_error} (messages published while a collector is away"
                    " would be lost)"
                )
            if self.connected and self.share == PROBING:
                out.append(f"shared subscription {self.share_filter} not confirmed yet (probing)")
            elif self.connected and self.share == NOT_HONOURED:
                out.append(
                    f"broker does not deliver on the shared subscription {self.share_filter}:"
                    f" {self.probe_error or 'a probe published on its topics never came back'}"
                )
            return out
