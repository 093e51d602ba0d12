"""The event log's vocabulary: every event type, their categories, and the patterns (`alarm.*`,
`case.opened`) an SSE client or a webhook selects them with."""

from lifeline.wire import AlarmState

ALARM_EVENT_TYPES = {
    AlarmState.ACTIVE_UNACKED.value: "alarm.raised",
    AlarmState.ACTIVE_ACKED.value: "alarm.acknowledged",
    AlarmState.CLEARED_UNACKED.value: "alarm.cleared",
    AlarmState.NORMAL.value: "alarm.normal",
}
EVENT_TYPES = (
    *ALARM_EVENT_TYPES.values(),
    "gateway.online",
    "gateway.offline",
    "gateway.unknown",
    "gateway.epoch",
    "gateway.conflict",
    "device.online",
    "device.offline",
    "device.unknown",
    "case.opened",
    "case.transition",
    "case.upgraded",
    "case.reworked",
    "work_order.opened",
    "work_order.transition",
)
EVENT_CATEGORIES = ("alarm", "gateway", "device", "case", "work_order")


def type_patterns(spec: str) -> list[str]:
    """Validate a comma-separated list like `alarm.*,case.opened`; return SQL LIKE patterns.

    Raises ValueError naming the unknown entry. An empty spec or `*` means everything.
    """
    patterns: list[str] = []
    for raw in spec.split(","):
        item = raw.strip()
        if item in ("", "*"):
            return []
        category = item.removesuffix(".*")
        if category in EVENT_CATEGORIES:
            patterns.append(f"{category}.%")
        elif item in EVENT_TYPES:
            patterns.append(item)
        else:
            known = ", ".join([f"{c}.*" for c in EVENT_CATEGORIES] + list(EVENT_TYPES))
            raise ValueError(f"unknown event type {item!r} (known: {known})")
    return patterns


def matches(patterns: list[str], event_type: str) -> bool:
    """True if `event_type` is selected by patterns from type_patterns (empty = all)."""
    if not patterns:
        return True
    return any(
        event_type.startswith(p[:-1]) if p.endswith("%") else event_type == p for p in patterns
    )
