"""The gateway's SQLite buffer file and the only code that opens or parses it.

The daemon writes it through `Outbox` (store-and-forward of readings and events, the alarm log,
the health snapshot); crew tools in other processes read it through `edge.buffer.views`.
"""

from edge.buffer.file import BufferFull
from edge.buffer.health import HEALTH_EVERY_S, HEALTH_MIN_GAP_S, DeviceHealth, GatewayHealth
from edge.buffer.outbox import Frozen, Outbox
from edge.buffer.packing import Sample
from edge.buffer.schema import LANE_ALARM, LANE_DATA, LANE_DEVICE

__all__ = [
    "HEALTH_EVERY_S",
    "HEALTH_MIN_GAP_S",
    "LANE_ALARM",
    "LANE_DATA",
    "LANE_DEVICE",
    "BufferFull",
    "DeviceHealth",
    "Frozen",
    "GatewayHealth",
    "Outbox",
    "Sample",
]
