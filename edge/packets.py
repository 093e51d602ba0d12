"""How large a PUBLISH the broker takes, as far as the gateway knows: said, configured or learned.

A broker announces its Maximum Packet Size in the MQTT 5 CONNACK (Mosquitto: `max_packet_size`);
an operator can state it (`mqtt.max_packet_bytes`) for a broker that cannot say it (MQTT 3.1.1,
Mosquitto's `message_size_limit`). What neither says is learned from refusals: an MQTT 5 PUBACK
with an error reason code, the broker's DISCONNECT "Packet too large" (0x95), or, measured with
Mosquitto 2.0, a PUBACK 0x95 that paho rejects as a malformed packet (a protocol-error
disconnect) after an oversized publish; without a reason (MQTT 3.1.1, or a broker that resets
the connection) only the connection dropping right after a batch larger than any the broker took
was published, twice in a row. Pure logic: sizes in, budget out.
"""

from __future__ import annotations

from dataclasses import dataclass

# No batch budget below this: one reading row or alarm event fits with room to spare.
FLOOR_BYTES = 512
# A dropped connection with no reason given is taken for a size refusal only after this many
# drops in a row, each right after a batch larger than any the broker took was published.
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
    _suspect: tuple[int, int] = (0, 0)  # (smallest suspect size, drops) since the last take

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
        if size >= self._suspect[0]:  # it takes that size after all: the drops were not it
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

    def dropped(self, size: int) -> bool:
        """The connection dropped (no reason given) right after a batch of `size` bytes was
        published; True if the drops now count as a refusal and lowered the budget."""
        if size <= self.largest_ok:
            return False  # it took that size before: the network, not the size
        smallest, drops = self._suspect
        smallest = min(smallest, size) if drops else size
        if drops + 1 < SUSPECT_DROPS:
            self._suspect = (smallest, drops + 1)
            return False
        self._suspect = (0, 0)
        return self.refused(smallest)
