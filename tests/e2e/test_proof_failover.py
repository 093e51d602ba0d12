"""Scale-out and failover: two collectors in one MQTT shared-subscription group.

Both collectors subscribe as `$share/ingest/...` with their own persistent sessions. The test
shows that they split the load, that SIGKILLing one leaves the other ingesting, and measures
what Mosquitto does with the dead member's share: messages already sent to it (in flight,
unacknowledged) and messages Mosquitto keeps routing to its offline persistent session stay
there until that client id reconnects. Restarting the dead member (same client id) drains
them; the books then show zero lost and zero duplicated. docs/RELIABILITY.md records the
measured figures.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_proof_district import (
    District,
    account,
    district,
    finish_and_account,
    report,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.proof]


def ingested(d: District, index: int) -> int:
    """Readings collector `index` committed since it started (its /readyz counters)."""
    keys = sorted(d.tmp.glob("collector-*.key"))  # bootstrapped by whichever started first
    key = {"X-API-Key": keys[0].read_text().strip()}
    body: dict[str, Any] = httpx.get(
        f"http://127.0.0.1:{d.http_ports[index]}/readyz", timeout=2, headers=key
    ).json()
    return int(body["ingest"]["readings"])


def missing_seqs(d: District) -> int:
    """Seqs the gateways assigned (and the broker took) that the database lacks."""
    return sum(b.last_seq - b.unsent_seqs - b.db_seqs for b in account(d.db_url, d.buffers))


def test_shared_subscription_splits_load_and_survives_a_dead_member(tmp_path: Path) -> None:
    seed = int(os.environ.get("LIFELINE_FAILOVER_SEED", "5150"))
    with district(tmp_path, gateways=2, devices=60, seed=seed, duration_s=40) as d:
        a = d.add_collector("collector-a", share_group="ingest")
        b = d.add_collector("collector-b", share_group="ingest")
        for g, server in enumerate(d.scenario["servers"], start=1):
            d.add_gateway(f"gw-{g}", server)
        wait_for("both members to ingest", lambda: ingested(d, 0) and ingested(d, 1), 60)
        time.sleep(5)
        split = (ingested(d, 0), ingested(d, 1))

        b.kill()  # mid-stream: whatever B holds unacknowledged stays in its session
        a_at_kill = ingested(d, 0)
        time.sleep(8)
        a_after = ingested(d, 0)
        assert a.alive()
        assert a_after > a_at_kill, "the surviving member stopped ingesting"
        # Give the survivor time to catch up on everything that is not stranded.
        time.sleep(3)
        stranded = missing_seqs(d)

        b.start()  # same client id: the broker hands back its session and queue
        d.wait_ready(1)
        books = finish_and_account(d)
    problems = [p for bk in books for p in bk.problems()]
    report(
        "failover",
        {
            "seed": seed,
            "split_readings_before_kill": split,
            "survivor_readings_while_other_dead": a_after - a_at_kill,
            "batches_stranded_in_dead_member_session": stranded,
            "books": [vars(bk) for bk in books],
        },
    )
    assert all(n > 0 for n in split), f"the group did not split the load: {split}"
    assert not problems, problems
