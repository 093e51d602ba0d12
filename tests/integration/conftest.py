"""Integration fixtures: a TimescaleDB engine (PGlite in Node, tests/tsdb), an MQTT publisher."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from lifeline.collector.ingest import parse_mqtt_url

TSDB_DIR = Path(__file__).resolve().parents[1] / "tsdb"
TSDB_START_TIMEOUT_S = 60.0
_READY = re.compile(r"^READY port=(\d+)", re.MULTILINE)


def _tsdb_command() -> list[str]:
    """`node tests/tsdb/server.mjs 0`, or fail the test saying how to install what is missing."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "node is not installed, so the TimescaleDB test engine (tests/tsdb) cannot run:"
            " run scripts/setup.sh --tests",
            pytrace=False,
        )
    if not (TSDB_DIR / "node_modules" / "@electric-sql" / "pglite" / "package.json").is_file():
        pytest.fail(
            f"{TSDB_DIR}/node_modules is missing (PGlite + TimescaleDB):"
            " run scripts/setup.sh --tests",
            pytrace=False,
        )
    # Port 0: the server binds a free loopback port itself and reports it (no race).
    # --exit-on-stdin-eof: it stops when our end of its stdin closes, so even a killed
    # pytest leaves no 500 MB node process behind.
    return [node, str(TSDB_DIR / "server.mjs"), "0", "--exit-on-stdin-eof"]


@pytest.fixture(scope="session")
def tsdb_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DSN of a private TimescaleDB engine (PGlite in Node) on loopback, for the whole session.

    It is ONE database and ONE PostgreSQL session shared by every connection: use
    `tsdb_fresh_url` in a test, not this URL directly.
    """
    cmd = _tsdb_command()
    log_path = tmp_path_factory.mktemp("tsdb") / "server.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            cmd,
            cwd=TSDB_DIR,
            stdin=subprocess.PIPE,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + TSDB_START_TIMEOUT_S
        while not (ready := _READY.search(log_path.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"the TimescaleDB test engine did not start (exit code {proc.poll()});"
                    f" its output:\n{log_path.read_text()}\n"
                    "if modules are missing, run scripts/setup.sh --tests",
                    pytrace=False,
                )
            time.sleep(0.05)
        yield f"postgresql://postgres@127.0.0.1:{ready.group(1)}/postgres?sslmode=disable"
        if proc.poll() is not None:
            pytest.fail(f"the TimescaleDB test engine died:\n{log_path.read_text()}", pytrace=False)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()


@pytest.fixture
def tsdb_fresh_url(tsdb_url: str) -> Iterator[str]:
    """The TimescaleDB engine with an empty schema of its own in front of the search path.

    PGlite has a single database (CREATE DATABASE succeeds but cannot be connected to) and
    ignores startup options, but every connection shares its one session: a session-level
    `SET search_path` here is therefore what every connection of the test sees. The schema,
    with its hypertables, chunks, continuous aggregates and policy jobs, is dropped afterwards.
    """
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(tsdb_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path = {schema}, public")  # timescaledb lives in public
    try:
        yield tsdb_url
    finally:
        with psycopg.connect(tsdb_url, autocommit=True) as conn:
            conn.execute("SET search_path = public")
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def publisher(mqtt_url: str) -> Iterator[mqtt.Client]:
    """A connected MQTT client (network loop running) for publishing test messages."""
    host, port = parse_mqtt_url(mqtt_url)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, f"pub-{uuid.uuid4().hex[:8]}")
    c.max_inflight_messages_set(1000)
    c.connect(host, port)
    c.loop_start()
    yield c
    c.disconnect()
    c.loop_stop()
