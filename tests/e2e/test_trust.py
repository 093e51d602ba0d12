"""Nothing silently lost (issue 13): the field events that used to lose data or alarms quietly.

Each test runs the real programs as separate processes (firmware-sim, gateway, collector, a
private Mosquitto and PostgreSQL: the district harness of test_proof_district.py) through one
such event, and checks what the command center ends up knowing.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.test_proof_district import District, buffer_epoch, district, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def scalar(d: District, sql: str, *args: object) -> Any:
    """The first column of the first row of a query on the district's database."""
    with psycopg.connect(d.db_url) as conn:
        row = conn.execute(sql, args).fetchone()
    assert row is not None
    return row[0]


def epoch_or_none(buffer: Path) -> str | None:
    """The buffer's epoch, or None while the gateway is still creating the buffer."""
    try:
        return buffer_epoch(buffer)
    except (sqlite3.OperationalError, LookupError):
        return None


def quiet_gas_detector(d: District) -> str:
    """A gas detector the scenario's timeline leaves alone."""
    touched = {e["device"] for e in d.scenario["timeline"]}
    server = d.scenario["servers"][0]
    return str(
        next(
            x["id"]
            for x in server["devices"]
            if x["profile"] == "gas_detector" and x["id"] not in touched
        )
    )


def test_a_gateway_that_lost_its_buffer_is_heard_again_at_once(tmp_path: Path) -> None:
    """A new SD card (or a deleted, corrupt buffer) numbers batches from 1 again: its readings and
    its next gas alarm must be stored, not taken for duplicates of the old buffer's batches."""
    with district(tmp_path, gateways=1, devices=8, seed=13, duration_s=10) as d:
        d.add_collector(f"collector-{uuid.uuid4().hex[:6]}")
        gw = d.add_gateway("gw-1", d.scenario["servers"][0])
        buffer = d.buffers["gw-1"]
        count_keys = "SELECT count(*) FROM batch_keys WHERE gateway_id = 'gw-1'"
        wait_for("30 batches stored", lambda: scalar(d, count_keys) >= 30, 60)
        old_epoch = buffer_epoch(buffer)
        assert gw.term() == 0
        for suffix in ("", "-wal", "-shm"):
            Path(f"{buffer}{suffix}").unlink(missing_ok=True)
        restarted = time.time()
        gw.start()
        wait_for("the new buffer", buffer.exists, 30)
        wait_for("a new epoch", lambda: epoch_or_none(buffer) not in (None, old_epoch), 30)
        gas = quiet_gas_detector(d)
        leak = {"peak": 60, "ramp_s": 2, "hold_s": 60, "decay_s": 2}
        d.sim_call("trigger", device=gas, event="leak", args=leak)

        since = int(restarted * 1000)
        readings = (
            "SELECT count(*) FROM readings WHERE gateway_id = 'gw-1' AND ts >= to_timestamp(%s)"
        )
        wait_for("readings of the new buffer", lambda: scalar(d, readings, since / 1000) > 0, 30)
        raised = (
            "SELECT count(*) FROM alarm_events WHERE device = %s AND alarm_type = 'hi'"
            " AND state = 'active_unacked' AND alarm_id LIKE %s"
        )
        pattern = f"gw-1:{buffer_epoch(buffer)}:%"
        wait_for("the leak alarm", lambda: scalar(d, raised, gas, pattern) >= 1, 30)
        case = "SELECT count(*) FROM cases WHERE device = %s AND problem = 'gas_leak'"
        wait_for("a gas-leak case", lambda: scalar(d, case, gas) == 1, 30)
        epochs = "SELECT count(*) FROM gateway_epochs WHERE gateway_id = 'gw-1'"
        assert scalar(d, epochs) == 2
        noted = "SELECT reason FROM status_log WHERE ident = 'gw-1' AND status = 'epoch'"
        assert f"new buffer epoch {buffer_epoch(buffer)}" in scalar(d, noted)
        assert "started a new buffer epoch" in d.collectors[0].text()
