"""The edge<->collector contract: topic names, message envelopes and the msgpack codec (v1)."""

from wire.codec import MAX_PAYLOAD_BYTES, alarm_fields, decode, encode
from wire.errors import WireError
from wire.messages import (
    AlarmBatch,
    AlarmEvent,
    AlarmState,
    Birth,
    Command,
    CommandReply,
    DataBatch,
    Death,
    DeviceEvent,
    DeviceEventBatch,
    DeviceInfo,
    Message,
    Quality,
    Record,
    Severity,
    Status,
)
from wire.topics import WIRE_VERSION, Kind, TopicParts, parse_topic, subscription, topic

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "WIRE_VERSION",
    "AlarmBatch",
    "AlarmEvent",
    "AlarmState",
    "Birth",
    "Command",
    "CommandReply",
    "DataBatch",
    "Death",
    "DeviceEvent",
    "DeviceEventBatch",
    "DeviceInfo",
    "Kind",
    "Message",
    "Quality",
    "Record",
    "Severity",
    "Status",
    "TopicParts",
    "WireError",
    "alarm_fields",
    "decode",
    "encode",
    "parse_topic",
    "subscription",
    "topic",
]
