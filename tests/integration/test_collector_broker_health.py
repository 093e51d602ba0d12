"""Honest health against a real Mosquitto: /readyz-level reasons when the broker grants QoS 0,
loses the persistent session, or does not deliver on the shared subscription; one log line
when the broker goes away and one when it is back."""

import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lifeline.broker import PrivateBroker
from lifeline.collector.ingest import Ingest, IngestConfig
from lifeline.collector.keys import digest, display_prefix, new_token
from lifeline.collector.store import Store, open_store
from tests.services import start_mosquitto, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path}/h.db")
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def broker() -> Iterator[PrivateBroker]:
    """A broker of our own, so the test may stop it and lose its persistence."""
    b = PrivateBroker(Path(tempfile.mkdtemp(prefix="lifeline-health-")))
    b.start()
    try:
        yield b
    finally:
        b.stop()
        shutil.rmtree(b.workdir, ignore_errors=True)


def ingest(store: Store, url: str, **kw: Any) -> Ingest:
    cfg = IngestConfig(mqtt_url=url, client_id=f"c-{uuid.uuid4().hex[:8]}", **kw)
    ing = Ingest(store, cfg)
    ing.start()
    return ing


def test_a_broker_granting_qos0_is_a_reason_not_to_be_ready(store: Store) -> None:
    with start_mosquitto("max_qos 0") as b:
        ing = ingest(store, b.url)
        try:
            reasons = wait_until(lambda: [p for p in ing.problems() if "granted QoS 0" in p])
        finally:
            ing.stop()
    assert "broker granted QoS 0, not 1, for lifeline/v1/+/+/data" in reasons[0]


def test_a_connack_without_qos1_is_a_reason_not_to_be_ready(store: Store) -> None:
    """MQTT 5: the broker says it in its CONNACK (Maximum QoS 0), before any SUBACK."""
    with start_mosquitto("max_qos 0") as b:
        ing = ingest(store, b.url)
        try:
            reasons = wait_until(lambda: [p for p in ing.problems() if "CONNACK" in p])
        finally:
            ing.stop()
    assert reasons[0].startswith("broker CONNACK says Maximum QoS 0: QoS 1 is not offered")


def test_a_lost_session_is_logged_counted_and_shown(
    store: Store, broker: PrivateBroker, caplog: pytest.LogCaptureFixture
) -> None:
    ing = ingest(store, broker.url)
    try:
        assert ing.wait_ready(10)
        assert ing.problems() == []
        # The broker restarts without its persistence file: our session is gone.
        broker.stop()
        wait_until(lambda: not ing.health.connected)
        (broker.workdir / "mosquitto.db").unlink()
        broker.start()
        reasons = wait_until(lambda: [p for p in ing.problems() if "persistent session" in p])
        assert "messages published while it was away may be lost" in reasons[0]
        assert ing.health.sessions_lost == 1
        assert ing.wait_ready(10)
    finally:
        ing.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "lifeline.collector.broker_health"]
    assert sum("unreachable" in m for m in lines) == 1
    assert sum("reachable again" in m for m in lines) == 1
    assert sum("did not keep the persistent session" in m for m in lines) == 1


def test_a_broker_down_at_start_is_one_log_line_and_a_reason(
    store: Store, broker: PrivateBroker, caplog: pytest.LogCaptureFixture
) -> None:
    broker.stop()
    ing = ingest(store, broker.url)
    try:
        wait_until(lambda: any("unreachable since" in p for p in ing.problems()))
        time.sleep(2.5)  # several reconnection attempts
        broker.start()
        assert ing.wait_ready(15)
        wait_until(lambda: ing.problems() == [])
    finally:
        ing.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "lifeline.collector.broker_health"]
    assert [m.split(": ")[0].split(" after ")[0] for m in lines] == [
        f"broker {broker.url} unreachable",
        f"broker {broker.url} reachable again",
    ]
    # The OS's reason, from the attempt paho made in its own thread (it passes no error).
    assert "unreachable: cannot connect: [Errno 111] Connection refused;" in lines[0]


def test_a_shared_subscription_is_probed(store: Store, broker: PrivateBroker) -> None:
    ing = ingest(store, broker.url, share_group="ingest")
    try:
        assert ing.wait_ready(10)
        wait_until(lambda: ing.health.share == "honoured")
        assert ing.problems() == []
    finally:
        ing.stop()


def test_a_shared_subscription_whose_messages_never_arrive_is_a_reason(store: Store) -> None:
    # The broker accepts the shared subscription but never delivers on it (here its ACL lets
    # the collector read, not publish, the probe topic): the probe never comes back.
    acl = Path(tempfile.mkdtemp(prefix="lifeline-acl-")) / "acl"
    acl.write_text("topic read lifeline/v1/lifeline-probe/#\ntopic readwrite lifeline/v1/+/+/data\n"
                   "topic read lifeline/#\n")  # fmt: skip
    try:
        with start_mosquitto(f"acl_file {acl}") as b:
            ing = ingest(store, b.url, share_group="ingest", probe_tries=4, probe_interval_s=0.2)
            try:
                assert ing.wait_ready(10)
                reasons = wait_until(lambda: [p for p in ing.problems() if "does not deliver" in p])
            finally:
                ing.stop()
    finally:
        shutil.rmtree(acl.parent, ignore_errors=True)
    assert "broker does not deliver on the shared subscription $share/ingest/" in reasons[0]


@pytest.fixture(autouse=True)
def _info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)


def test_readyz_refuses_ready_while_the_broker_grants_qos0(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from lifeline.collector.api import create_app
    from lifeline.collector.runtime import CollectorConfig, Runtime

    with start_mosquitto("max_qos 0") as b:
        cfg = IngestConfig(mqtt_url=b.url, client_id=f"c-{uuid.uuid4().hex[:8]}")
        runtime = Runtime(CollectorConfig(db_url=f"sqlite:///{tmp_path}/r.db", ingest=cfg))
        token = new_token()
        runtime.store.create_api_key("v", "viewer", digest(token), display_prefix(token), 0)
        runtime.start()
        try:
            with TestClient(create_app(runtime.config, runtime)) as client:
                assert runtime.ingest is not None
                assert runtime.ingest.wait_ready(10)
                ready = client.get("/readyz", headers={"X-API-Key": token})  # reasons: a key
        finally:
            runtime.close()
    assert ready.status_code == 503
    assert any("QoS 0" in r for r in ready.json()["reasons"])
