"""The harness hands out working services: a QoS 1 broker and a fresh database."""

import threading
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.services import Postgres

pytestmark = pytest.mark.integration


def test_broker_delivers_qos1_under_test_root(mqtt_url: str, topic_root: str) -> None:
    url = urlparse(mqtt_url)
    got = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, msg: got.set() if msg.payload == b"ping" else None
    client.connect(url.hostname or "127.0.0.1", url.port or 1883)
    client.loop_start()
    try:
        client.subscribe(f"{topic_root}/#", qos=1)[0]
        client.publish(f"{topic_root}/probe", b"ping", qos=1).wait_for_publish(5)
        assert got.wait(5)
    finally:
        client.loop_stop()
        client.disconnect()


def test_database_is_fresh_and_writable(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE t (x int)")


def test_private_postgres_starts_even_as_root() -> None:
    server = Postgres()
    server.start()
    try:
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()
