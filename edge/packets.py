"""How large a PUBLISH the broker takes, as far as the gateway knows: said, configured or learned.

A broker announces its Maximum Packet Size in the MQTT 5 CONNACK (Mosquitto: `max_packet_size`);
an operator can state it (`mqtt.max_packet_bytes`) for a broker that cannot say it (MQTT 3.1.1,
Mosquitto's `message_size_limit`). What neither says is learned from refusals: an MQTT 5 PUBACK
with an error reason code, the broker's DISCONNECT "Packet too large" (0x95), or, measured with
Mosquitto 2.0, a PUBACK 0x95 that paho rejects as a malformed packet (a protocol-error
disconnect) after an oversized publish; with MQTT 3.1.1 only the connection dropping right after
the same batch was published, twice. Pure logic: sizes in, budget out.
"""

from __future__ import annotations

from dataclasses import dataclass

# No batch budget below this: one reading row or alarm event fits with room to spare.
FLOOR_BYTES = 512
# MQTT 3.1.1 gives no reason for a dropped connection: the same batch must be in flight at
# this many drops in a row before the drops are taken for a size refusal.
SUSPECT_DROPS = 2


def publish_overhead(topic_bytes: int) -> int:
    """Bytes of an MQTT PUBLISH (QoS 1) besides its payload, at most.

    Fixed header 1 + remaining length up to 4, topic length 2 + topic, packet id 2, and the
    MQTT 5 property length 1 (no properties are sent).
    """
    return 1 + 4 + 2 + topic_bytes + 2 + 1


@dataclass(slots=True)
class PacketLimit:
    """The payload budget of a batch: `batch_bytes`, the broker's limits and what was learned."""

    batch_bytes: int  # buffer.batch_bytes: the gateway's own choice
    configured: int | None  # mqtt.max_packet_bytes: whole packets, as the operator states it
    overhead: int  # publish_overhead() of the longest topic a batch goes to
    announced: int | None = None  # the CONNACK Maximum Packet Size of this connection
    learned: int | None = None  # payload bytes below the smallest refusal (this process)
    largest_ok: int = 0  # the largest payload the broker acknowledged (this process)
    _suspect: tuple[int, int] = (0, 0)  # (seq, drops) of the batch in flight at drops

    def budget(self) -> int:
        """Payload bytes a batch may have now."""
        limit = self.batch_bytes
        packet = self.packet_limit()
        if packet is not None:
            limit = min(limit, packet - self.overhead)
        if self.learned is not None:
            limit = min(limit, self.learned)
        return max(FLOOR_BYTES, limit)

    def packet_limit(self) -> int | None:
        """The largest whole packet the broker takes, if it said so or the config does."""
        known = [x for x in (self.configured, self.announced) if x is not None]
        return min(known) if known else None

    def fits(self, payload_bytes: int, topic_bytes: int) -> bool:
        """Whether a message (birth, status, death) is small enough to publish at all."""
        packet = self.packet_limit()
        overhead = publish_overhead(topic_bytes)
        return packet is None or payload_bytes + overhead <= packet

    def accepted(self, size: int) -> None:
        """The broker acknowledged a payload of `size` bytes."""
        if size > self.largest_ok:
            self.largest_ok = size
        self._suspect = (0, 0)

    def refused(self, size: int) -> bool:
        """The broker refused a payload of `size` bytes; True if that lowered the budget.

        False when it cannot be the size (a larger payload went through before) or when the
        budget is already below it: the refusal has another reason.
        """
        if size <= self.largest_ok or size <= FLOOR_BYTES:
            return False
        before = self.budget()
        if size > before:
            return False  # cut to the budget already: not this budget's fault
        target = max(self.largest_ok, size // 2)  # known good, else halve: log2 steps at most
        self.learned = target if self.learned is None else min(self.learned, target)
        return self.budget() < before

    def dropped(self, seq: int, size: int) -> bool:
        """The connection dropped (no reason given) right after batch `seq` of `size` bytes
        was published; True if the drops now count as a refusal and lowered the budget."""
        last, drops = self._suspect
        drops = drops + 1 if last == seq else 1
        self._suspect = (seq, drops)
        if drops < SUSPECT_DROPS:
            return False
        self._suspect = (0, 0)
        return self.refused(size)
