"""Local alarm rules (ISA-18.2 / IEC 62682) and report-by-exception: pure code, time passed in.

Two clocks are passed in, never read here: `ts_ms`, the wall-clock UTC time a sample was taken
(data: it stamps the alarm events), and `mono_ms`, a monotonic clock in milliseconds that times
every delay, rate and timer. A wall clock that NTP steps back by an hour, or that starts at 1970
on a cabinet without an RTC, must not hold an on-delayed gas alarm back or fire every stale timer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lifeline.wire import AlarmEvent, AlarmState, Severity
from lifeline.wire.messages import Value

LIMIT_TYPES = frozenset({"hihi", "hi", "lo", "lolo"})
COMM_LOSS = "comm_loss"
RULE_TYPES = LIMIT_TYPES | {"roc", "state", "stale", COMM_LOSS}
DEVICE_POINT = "_device"  # the point name comm-loss alarms are raised on


@dataclass(frozen=True, slots=True)
class Rule:
    """One alarm rule on one point: `limit` is a value, a rate per second, or seconds for stale.

    With a `baseline`, a hi/hihi rule judges the deviation |value - baseline| instead of the
    value (a tilt is judged from the installed zero, whichever way it leans); `limit` and
    `deadband` are then distances from the baseline.
    """

    type: str
    limit: float = 0.0
    severity: Severity = Severity.MEDIUM
    deadband: float = 0.0
    on_delay_s: float = 0.0
    off_delay_s: float = 0.0
    when: Value = True  # the value that raises a `state` alarm
    message: str = ""
    baseline: float | None = None  # None: the value itself is judged

    def __post_init__(self) -> None:
        if self.type not in RULE_TYPES:
            raise ValueError(
                f"unknown alarm rule type {self.type!r}; use one of {sorted(RULE_TYPES)}"
            )
        if self.deadband < 0 or self.on_delay_s < 0 or self.off_delay_s < 0:
            raise ValueError("deadband and delays must not be negative")
        if self.baseline is not None and self.type not in ("hi", "hihi"):
            raise ValueError(f"only hi and hihi rules judge a deviation, not {self.type}")


class UnknownAlarm(KeyError):
    """An acknowledgement named an alarm id that is not active here."""


@dataclass(slots=True)
class _Track:
    """Runtime state of one rule on one point."""

    rule: Rule
    condition: bool = False  # the debounced-free raw condition after hysteresis
    since_mono_ms: int = 0  # when `condition` last changed (monotonic)
    active: bool = False  # alarm raised (after on-delay) and not yet cleared (after off-delay)
    acked: bool = True
    alarm_id: str | None = None
    last_value: Value = None
    last_mono_ms: int = 0  # for rate of change and stale: previous good sample (monotonic)
    has_last: bool = False

    @property
    def state(self) -> AlarmState:
        if self.alarm_id is None:
            return AlarmState.NORMAL
        if self.active:
            return AlarmState.ACTIVE_ACKED if self.acked else AlarmState.ACTIVE_UNACKED
        return AlarmState.NORMAL if self.acked else AlarmState.CLEARED_UNACKED


def _number(value: Value) -> float | None:
    if value is None or isinstance(value, str):
        return None
    return float(value)


def _limit_condition(rule: Rule, x: float, was: bool) -> bool:
    """High types trip at or above the limit and clear below limit - deadband (lows mirror)."""
    if rule.type in ("hi", "hihi"):
        return x >= rule.limit if not was else x > rule.limit - rule.deadband
    return x <= rule.limit if not was else x < rule.limit + rule.deadband


@dataclass(slots=True)
class AlarmEngine:
    """Evaluates every rule of every point and turns condition changes into alarm events."""

    id_prefix: str  # `<gateway>:<buffer epoch>`: ids are `<prefix>:<n>`
    next_number: Callable[[], int]  # the buffer's persisted counter: ids survive restarts
    _tracks: dict[tuple[str, str], list[_Track]] = field(default_factory=dict)
    _by_id: dict[str, tuple[str, str, _Track]] = field(default_factory=dict)
    # The earliest moment (monotonic ms) a pending on- or off-delay may expire: a timer set for
    # it calls `tick` then, so a delayed alarm is raised on time, not at the next sample. It
    # may be early (the condition went away meanwhile): `tick` then recomputes it.
    next_due_ms: int | None = None

    def set_rules(self, device: str, point: str, rules: Iterable[Rule]) -> None:
        """Install the rules of one point, keeping the state of rules that did not change."""
        old = {t.rule: t for t in self._tracks.get((device, point), [])}
        tracks = [old.pop(r) if r in old else _Track(r) for r in rules]
        for gone in old.values():
            if gone.alarm_id is not None:
                self._by_id.pop(gone.alarm_id, None)
        if tracks:
            self._tracks[(device, point)] = tracks
        else:
            self._tracks.pop((device, point), None)

    def has_rules(self, device: str, point: str) -> bool:
        """True if the point has any rule (lets the hot path skip the rest)."""
        return (device, point) in self._tracks

    def evaluate(
        self, device: str, point: str, value: Value, ts_ms: int, mono_ms: int
    ) -> list[AlarmEvent]:
        """Feed one good sample; return the alarm transitions it caused (usually none).

        `ts_ms` is the sample's wall-clock UTC time (stamps the events), `mono_ms` the
        monotonic time it was taken at (times delays, rates and stale timers).
        """
        tracks = self._tracks.get((device, point))
        if not tracks:
            return []
        events: list[AlarmEvent] = []
        for t in tracks:
            cond = self._condition(t, value, mono_ms)
            if t.rule.type != "stale":
                t.last_value, t.last_mono_ms, t.has_last = value, mono_ms, True
            if cond is not None:
                self._advance(device, point, t, cond, value, ts_ms, mono_ms, events)
        return events

    def tick(self, ts_ms: int, mono_ms: int) -> list[AlarmEvent]:
        """Let time pass: expire on/off delays and stale timers without a new sample.

        `ts_ms` (wall clock, UTC ms) stamps the events raised; `mono_ms` decides what expired.
        """
        events: list[AlarmEvent] = []
        self.next_due_ms = None
        for (device, point), tracks in self._tracks.items():
            for t in tracks:
                if t.rule.type == COMM_LOSS:
                    continue  # driven by device health, not by time
                if t.rule.type == "stale":
                    if not t.has_last:  # the timer starts at first sight
                        t.last_mono_ms, t.has_last = mono_ms, True
                    cond = mono_ms - t.last_mono_ms >= t.rule.limit * 1000
                    self._advance(device, point, t, cond, None, ts_ms, mono_ms, events)
                else:
                    self._advance(
                        device, point, t, t.condition, t.last_value, ts_ms, mono_ms, events
                    )
        return events

    def comm_loss(
        self,
        device: str,
        lost: bool,
        ts_ms: int,
        mono_ms: int,
        severity: Severity = Severity.MEDIUM,
    ) -> list[AlarmEvent]:
        """Raise or clear the comm-loss alarm of a device (no delays: health already debounced)."""
        key = (device, DEVICE_POINT)
        tracks = self._tracks.get(key)
        if tracks is None:
            rule = Rule(COMM_LOSS, severity=severity, message=f"communication lost with {device}")
            tracks = self._tracks[key] = [_Track(rule)]
        events: list[AlarmEvent] = []
        self._advance(device, DEVICE_POINT, tracks[0], lost, None, ts_ms, mono_ms, events)
        return events

    def acknowledge(self, alarm_id: str, who: str, note: str, ts_ms: int) -> AlarmEvent:
        """Acknowledge an alarm; raise UnknownAlarm if it is not active or cleared-unacked here."""
        entry = self._by_id.get(alarm_id)
        if entry is None or entry[2].acked:
            raise UnknownAlarm(alarm_id)
        device, point, t = entry
        t.acked = True
        event = self._event(device, point, t, t.last_value, ts_ms, who, note)
        if not t.active:
            self._by_id.pop(alarm_id, None)
            t.alarm_id = None
        return event

    def active(self) -> list[tuple[str, str, str, AlarmState]]:
        """(alarm id, device, point, state) of every alarm that is not back to normal."""
        return [(aid, d, p, t.state) for aid, (d, p, t) in self._by_id.items()]

    def restore(self, events: Iterable[AlarmEvent], mono_ms: int) -> None:
        """Re-adopt alarms that were not normal at the last shutdown (latest event per alarm).

        Their conditions count as having changed at `mono_ms` (now): a monotonic clock does not
        survive a restart, and an off-delay restarts from the first sample that clears it.
        """
        for e in events:
            if e.state is AlarmState.NORMAL:
                continue
            tracks = self._tracks.get((e.device, e.point))
            if tracks is None and e.alarm_type == COMM_LOSS:
                self.comm_loss(e.device, False, e.ts_ms, mono_ms, e.severity)
                tracks = self._tracks[(e.device, e.point)]
            for t in tracks or []:
                if t.rule.type == e.alarm_type and t.alarm_id is None:
                    t.alarm_id = e.alarm_id
                    t.active = t.condition = e.state is not AlarmState.CLEARED_UNACKED
                    t.acked = e.state is AlarmState.ACTIVE_ACKED
                    t.since_mono_ms = mono_ms
                    self._by_id[e.alarm_id] = (e.device, e.point, t)
                    break

    # --- internals ------------------------------------------------------------------------

    def _condition(self, t: _Track, value: Value, mono_ms: int) -> bool | None:
        rule = t.rule
        if rule.type == "stale":
            t.last_mono_ms, t.has_last = mono_ms, True
            return False
        if rule.type == "state":
            return value == rule.when
        x = _number(value)
        if x is None:
            return None  # a limit rule cannot judge a non-number: keep the state as it is
        if rule.type == "roc":
            prev = _number(t.last_value) if t.has_last else None
            dt = (mono_ms - t.last_mono_ms) / 1000
            if prev is None or dt <= 0:
                return None
            rate = abs(x - prev) / dt
            return rate >= rule.limit if not t.condition else rate > rule.limit - rule.deadband
        if rule.baseline is not None:
            x = abs(x - rule.baseline)
        return _limit_condition(rule, x, t.condition)

    def _advance(
        self,
        device: str,
        point: str,
        t: _Track,
        cond: bool,
        value: Value,
        ts_ms: int,
        mono_ms: int,
        events: list[AlarmEvent],
    ) -> None:
        if cond != t.condition:
            t.condition, t.since_mono_ms = cond, mono_ms
        held_s = (mono_ms - t.since_mono_ms) / 1000
        if cond and not t.active and held_s >= t.rule.on_delay_s:
            t.active = True
            if t.alarm_id is None:  # a new occurrence; a return while cleared-unacked keeps its id
                t.alarm_id = f"{self.id_prefix}:{self.next_number()}"
                self._by_id[t.alarm_id] = (device, point, t)
                t.acked = False
            events.append(self._event(device, point, t, value, ts_ms))
        elif not cond and t.active and held_s >= t.rule.off_delay_s:
            t.active = False
            events.append(self._event(device, point, t, value, ts_ms))
            if t.acked and t.alarm_id is not None:
                self._by_id.pop(t.alarm_id, None)
                t.alarm_id = None
        elif cond != t.active:  # a delay is running
            delay_s = t.rule.on_delay_s if cond else t.rule.off_delay_s
            due = t.since_mono_ms + math.ceil(delay_s * 1000)
            if self.next_due_ms is None or due < self.next_due_ms:
                self.next_due_ms = due

    def _event(
        self,
        device: str,
        point: str,
        t: _Track,
        value: Value,
        ts_ms: int,
        who: str | None = None,
        note: str | None = None,
    ) -> AlarmEvent:
        rule = t.rule
        kind = rule.type
        limit: Value = None if kind in ("state", COMM_LOSS) else rule.limit
        if rule.baseline is not None:  # the bound crossed, in the point's unit: -25 beyond -10
            x = _number(value)
            below = x is not None and x < rule.baseline
            limit = rule.baseline - rule.limit if below else rule.baseline + rule.limit
        message = rule.message or _default_message(kind, point, rule)
        assert t.alarm_id is not None
        return AlarmEvent(
            alarm_id=t.alarm_id,
            device=device,
            point=point,
            alarm_type=kind,
            severity=rule.severity,
            state=t.state,
            ts_ms=ts_ms,
            value=value,
            limit=limit,
            message=message,
            ack_by=who,
            ack_note=note,
        )


def _default_message(kind: str, point: str, rule: Rule) -> str:
    if kind == COMM_LOSS:
        return "communication lost"
    if kind == "stale":
        return f"{point}: no fresh value for {rule.limit:g} s"
    if kind == "state":
        return f"{point} is {rule.when}"
    if kind == "roc":
        return f"{point} changing faster than {rule.limit:g}/s"
    word = {"hihi": "high-high", "hi": "high", "lo": "low", "lolo": "low-low"}[kind]
    if rule.baseline is not None:
        return f"{point} {word}: more than {rule.limit:g} from its baseline {rule.baseline:g}"
    return f"{point} {word} (limit {rule.limit:g})"


@dataclass(slots=True)
class ExceptionFilter:
    """Report-by-exception for one point: a change beyond `deadband`, or `heartbeat_s` of silence.

    `deadband=None` reports every sample. The heartbeat runs on the monotonic clock.
    """

    deadband: float | None = None
    heartbeat_s: float = 300.0
    _last: Value = None
    _last_ms: int = -(2**62)
    _last_quality: object = None

    def admit(self, value: Value, quality: object, mono_ms: int) -> bool:
        """Decide whether a sample taken at `mono_ms` (monotonic) is sent; remembers it if so."""
        if (
            self.deadband is not None
            and quality == self._last_quality
            and mono_ms - self._last_ms < self.heartbeat_s * 1000
        ):
            last = self._last
            if value == last:
                return False
            if (
                isinstance(value, int | float)
                and isinstance(last, int | float)
                and not isinstance(value, bool)
                and not isinstance(last, bool)
                and abs(value - last) <= self.deadband
            ):
                return False
        self._last, self._last_ms, self._last_quality = value, mono_ms, quality
        return True
