"""The gateway's SQLite buffer file, and the only code that opens or parses it.

- schema.py: its tables, the columns added to older files, the counters, connections;
- file.py: the open file: one write transaction at a time, its sync level, a full disk
  (reserve.py: the reserve file beside it);
- outbox.py: store-and-forward: readings backlog, event lanes, frozen batches, acks, splits
  for the broker; `Outbox` is the daemon's one handle on the file;
- packing.py: how readings and events are held in it and cut into wire batches;
- alarmlog.py: the local alarm log and the crew's acknowledgement queue;
- health.py: the daemon's health snapshot;
- views.py: read-only views for the crew tools and the proof books (other processes).
"""

from lifeline.edge.buffer.file import BufferFull
from lifeline.edge.buffer.health import (
    HEALTH_EVERY_S,
    HEALTH_MIN_GAP_S,
    DeviceHealth,
    GatewayHealth,
)
from lifeline.edge.buffer.outbox import Frozen, Outbox
from lifeline.edge.buffer.packing import Sample
from lifeline.edge.buffer.schema import LANE_ALARM, LANE_DATA, LANE_DEVICE

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
