"""A bug in the collector's background threads (the event pump, webhook deliveries) stops the
thread visibly: one critical log line and a reason in /readyz, instead of a log that silently
stops growing. Database errors stay per-pass and retried (test_collector_store_faults.py)."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lifeline.collector.api import create_app
from lifeline.collector.event_log import EventPump, Notifier
from lifeline.collector.keys import digest, display_prefix, new_token
from lifeline.collector.models import Role
from lifeline.collector.runtime import CollectorConfig, Runtime
from lifeline.collector.store.sqlite import SqliteStore
from lifeline.collector.webhooks import Deliverer, WebhookConfig
from tests.services import wait_until

pytestmark = pytest.mark.integration


class BuggyStore(SqliteStore):
    """A real SQLite store whose event log and webhook passes hit a bug."""

    def pump_events(self, now_ms: int, limit: int = 500) -> int:
        raise KeyError("a bug in the pump")

    def fan_out_deliveries(self, now_ms: int, limit: int = 500) -> int:
        raise KeyError("a bug in the fan-out")


@pytest.fixture
def buggy(tmp_path: Path) -> Iterator[BuggyStore]:
    store = BuggyStore(str(tmp_path / "c.db"))
    store.migrate()
    yield store
    store.close()


def test_a_bug_stops_the_pump_and_the_deliverer_and_each_says_why(buggy: BuggyStore) -> None:
    pump = EventPump(buggy, Notifier(), interval_s=0.02)
    hooks = Deliverer(buggy, Notifier(), WebhookConfig(poll_s=0.02))
    pump.start()
    hooks.start()
    try:
        assert (
            wait_until(lambda: pump.crashed) == "event pump stopped: KeyError: 'a bug in the pump'"
        )
        assert wait_until(lambda: hooks.crashed) == (
            "webhook deliveries stopped: KeyError: 'a bug in the fan-out'"
        )
        assert pump.failures == 0  # not counted (nor retried) as a database failure
    finally:
        pump.stop()
        hooks.stop()


def test_readyz_names_a_stopped_background_thread(tmp_path: Path, buggy: BuggyStore) -> None:
    runtime = Runtime(CollectorConfig(db_url=f"sqlite:///{tmp_path}/r.db", ingest=None))
    token = new_token()
    runtime.store.create_api_key("v", Role.VIEWER.value, digest(token), display_prefix(token), 0)
    runtime.event_pump.store = buggy
    runtime.start()
    try:
        with TestClient(create_app(runtime.config, runtime)) as client:
            runtime.event_pump.kick()
            wait_until(lambda: runtime.event_pump.crashed)
            ready = client.get("/readyz", headers={"X-API-Key": token})
            assert ready.status_code == 503
            assert "event pump stopped: KeyError: 'a bug in the pump'" in ready.json()["reasons"]
            assert client.get("/readyz").json() == {"status": "not ready"}
    finally:
        runtime.close()
