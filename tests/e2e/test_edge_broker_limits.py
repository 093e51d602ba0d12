"""The reproduced case of issue 13 item 6, with the gateway as a process: the broker comes back
from an outage with a 16 KiB message size limit while the gateway holds a backlog cut into
batches of up to 128 KiB. On main no telemetry ever resumed (or, with message_size_limit, the
batches were acknowledged and dropped), and the gateway reconnected in a loop, a birth each time.
"""

from __future__ import annotations

import itertools
import signal
import time
from pathlib import Path

import pytest

from lifeline.edge.buffer import views
from lifeline.wire import Birth, DataBatch, Status
from tests.e2e.test_edge_gateway import (
    Subscriber,
    gateway_config,
    manholes,
    polled,
    simulator,
    start_gateway,
    wait_for,
)
from tests.services import start_mosquitto

pytestmark = [pytest.mark.e2e]

LIMIT = 16384


def test_backlog_drains_through_a_broker_with_a_small_message_size_limit(
    tmp_path: Path, topic_root: str
) -> None:
    with start_mosquitto() as broker, simulator(tmp_path, manholes(5)) as eps:
        sub = Subscriber(broker.url, topic_root)
        config = gateway_config(
            tmp_path, broker.url, topic_root, eps["servers"][0]["port"], polled(5, 0.05)
        )
        config.write_text(config.read_text().replace("batch_records: 500", "batch_records: 2000"))
        proc = start_gateway(config, tmp_path / "gateway.log")
        buffer = tmp_path / "buffer.sqlite"
        try:
            wait_for(lambda: len(sub.data()) >= 3, 20, "live data")
            broker.stop()
            time.sleep(4)  # the outage: a backlog of ~4 000 readings in large batches
            broker.extra_conf = f"message_size_limit {LIMIT}"
            broker.start()

            def drained() -> bool:
                stats = views.buffer_stats(buffer)
                return stats.backlog_readings == 0 and stats.frozen_batches == 0

            wait_for(drained, 40, "the backlog to drain through the limited broker")
            wait_for(
                lambda: any(isinstance(m, Status) for m in list(sub.messages)[-50:]),
                15,
                "a status message",
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(15)
            sub.close()
    assert code == 0
    status = [m for m in sub.messages if isinstance(m, Status)][-1]
    # One connect (and birth) at start, one after the outage, one or two per halving while it
    # learns the limit (about 70 KB down to 16 KiB: 3 halvings): not the loop of main.
    births = {m.sent_ms for m in sub.messages if isinstance(m, Birth)}
    assert status.counters["connects"] <= 8
    assert len(births) <= status.counters["connects"] + 1  # (+1: a connect after that status)
    # Learned by halving from refusals: below twice the limit (what it cuts fits under it).
    assert 0 < status.counters["batch_budget_bytes"] < 2 * LIMIT
    # Every reading arrived, once: no series has a hole (polled every 50 ms) and none came twice.
    data = sub.data()
    received = {(r.device, r.point, r.ts_ms) for b in data.values() for r in b.records}
    assert sum(len(b.records) for b in data.values()) == len(received)  # none twice
    series: dict[tuple[str, str], list[int]] = {}
    for device, point, ts in sorted(received):
        series.setdefault((device, point), []).append(ts)
    for name, stamps in series.items():
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert max(gaps) < 1000, f"{name} lost readings (a hole of {max(gaps)} ms)"
    db = views.buffer_stats(buffer)
    assert db.backlog_readings == db.frozen_readings == 0
    log = (tmp_path / "gateway.log").read_text()
    assert "batches are cut to" in log
    assert "Traceback" not in log
    assert all(isinstance(m, DataBatch) for m in data.values())
