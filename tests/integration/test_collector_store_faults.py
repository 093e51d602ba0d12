"""Database faults at the collector, on a real PostgreSQL: a value the database refuses is
dead-lettered with the database's reason and the lane moves on; a lost database is retried
for ever, /readyz and the API say so at once, and nothing is lost when it comes back."""

import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from fastapi.testclient import TestClient

from lifeline.collector.api import create_app
from lifeline.collector.ingest import Ingest, IngestConfig
from lifeline.collector.keys import digest, display_prefix, new_token
from lifeline.collector.models import Accepted, Role
from lifeline.collector.runtime import CollectorConfig, Runtime
from lifeline.collector.store import Store, StoreDataError, StoreUnavailable, open_store
from lifeline.wire import (
    AlarmBatch,
    AlarmEvent,
    AlarmState,
    DataBatch,
    Kind,
    Record,
    Severity,
    TopicParts,
    encode,
    topic,
)
from tests.services import Postgres, fresh_database, wait_until

pytestmark = pytest.mark.integration

T0 = 1_795_000_000_000  # inside the partitions the PostgreSQL store creates ahead


def data(gw: str, seq: int, value: float = 1.0, n: int = 3) -> DataBatch:
    recs = tuple(Record("dev", f"p{i}", T0 + seq * 1000 + i, value) for i in range(n))
    return DataBatch(gw, "s", seq, T0, recs, epoch="e1")


def alarm(gw: str, seq: int, message: str) -> AlarmBatch:
    ev = AlarmEvent(f"{gw}:e1:{seq}", "gas-1", "gas", "hi", Severity.HIGH,
                    AlarmState.ACTIVE_UNACKED, T0 + seq, 30.0, 20, message)  # fmt: skip
    return AlarmBatch(gw, "s", seq, T0 + seq, (ev,), epoch="e1")


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[tuple[Store, str]]:
    store = open_store(pg_url)
    store.migrate()
    yield store, pg_url
    store.close()


def test_a_nul_in_a_string_is_a_data_error_not_an_outage(pg_store: tuple[Store, str]) -> None:
    # The wire refuses NUL at decode; a message that reaches the store by another path (a bug)
    # must still be told apart from a lost connection, and commit nothing.
    store, _ = pg_store
    bad = DataBatch("gw", "s", 1, T0, (Record("gas-1", "kind", T0, "C\0H4"),), epoch="e1")
    good = data("gw", 2)
    with pytest.raises(StoreDataError, match="0x00"):
        store.write([Accepted(TopicParts("s", "gw", Kind.DATA), m) for m in (good, bad)], T0)
    assert store.count_readings() == 0
    assert store.write([Accepted(TopicParts("s", "gw", Kind.DATA), good)], T0).readings == 3


def refuse(url: str) -> None:
    """Make the test database refuse two kinds of value that pass the wire's decoding: a
    reading of 666 (a CHECK constraint) and an alarm whose message is 'poison' (a trigger)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE readings ADD CONSTRAINT no_666 CHECK (value_num IS DISTINCT FROM 666)"
        )
        conn.execute(
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.message = 'poison' THEN RAISE EXCEPTION 'alarm refused by policy'; END IF;"
            " RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON alarm_events"
            " FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
        )


def test_values_the_database_refuses_are_dead_lettered_and_the_lane_moves_on(
    pg_store: tuple[Store, str], mqtt_url: str, topic_root: str, publisher: mqtt.Client
) -> None:
    store, url = pg_store
    refuse(url)
    client_id = f"c-{uuid.uuid4().hex[:8]}"
    # A long batch wait puts every message in one commit: the poison has company to spare.
    cfg = IngestConfig(mqtt_url=mqtt_url, root=topic_root, client_id=client_id,
                       batch_wait_s=0.5, retry_s=0.05)  # fmt: skip
    ing = Ingest(store, cfg)
    ing.start()
    try:
        assert ing.wait_ready(10)
        t_data = topic("site", "gw-p", Kind.DATA, root=topic_root)
        t_alarm = topic("site", "gw-p", Kind.ALARM, root=topic_root)
        msgs: list[tuple[str, DataBatch | AlarmBatch]] = [
            (t_data, data("gw-p", seq, 666.0 if seq == 7 else 1.0)) for seq in range(1, 21)
        ]
        msgs.insert(3, (t_alarm, alarm("gw-p", 21, "poison")))
        msgs.insert(12, (t_alarm, alarm("gw-p", 22, "gas high")))
        for t, m in msgs:
            publisher.publish(t, encode(m), qos=1).wait_for_publish(10)
        wait_until(lambda: ing.stats.received == len(msgs))
        assert store.count_readings() == 19 * 3
        letters = {d.reason: d for d in store.dead_letters()}
        assert len(letters) == 2
        check = next(r for r in letters if "no_666" in r)
        trigger = next(r for r in letters if "alarm refused by policy" in r)
        assert "refused it 3 times" in check
        assert "SQLSTATE 23514" in check
        assert "SQLSTATE P0001" in trigger
        assert letters[check].payload == encode(data("gw-p", 7, 666.0))  # the bytes received
        assert [a.alarm_id for a in store.alarms()] == ["gw-p:e1:22"]
        assert ing.stats.poisoned == 2
        # Everything was acknowledged: nothing is redelivered to the next run.
    finally:
        ing.stop()
    again = Ingest(store, cfg)
    again.start()
    try:
        assert again.wait_ready(10)
        publisher.publish(t_data, encode(data("gw-p", 23)), qos=1).wait_for_publish(10)
        wait_until(lambda: again.stats.received >= 1)
        assert (again.stats.received, again.stats.poisoned) == (1, 0)
    finally:
        again.stop()


@pytest.fixture
def private_pg() -> Iterator[Postgres]:
    """A PostgreSQL server of our own, so the test may stop it."""
    server = Postgres()
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(server.workdir, ignore_errors=True)


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


def test_a_lost_database_is_retried_for_ever_and_readyz_and_the_api_say_so_at_once(
    private_pg: Postgres, mqtt_url: str, topic_root: str, publisher: mqtt.Client
) -> None:
    with fresh_database(private_pg.url) as url:
        ingest = IngestConfig(mqtt_url=mqtt_url, root=topic_root,
                              client_id=f"c-{uuid.uuid4().hex[:8]}", retry_s=0.2)  # fmt: skip
        runtime = Runtime(replace(CollectorConfig(db_url=url, ingest=ingest), events_poll_s=0.1))
        token = new_token()
        prefix = display_prefix(token)
        runtime.store.create_api_key("v", Role.VIEWER.value, digest(token), prefix, T0)
        key = {"X-API-Key": token}
        runtime.start()
        t = topic("site", "gw-o", Kind.DATA, root=topic_root)
        try:
            with TestClient(create_app(runtime.config, runtime)) as client:
                assert runtime.ingest is not None
                assert runtime.ingest.wait_ready(10)
                # A monitor polls with its key: seen valid, it still gets the reasons when the
                # database that would check it is down.
                wait_until(lambda: client.get("/readyz", headers=key).status_code == 200)
                private_pg.stop("immediate")
                publisher.publish(t, encode(data("gw-o", 1)), qos=1).wait_for_publish(10)
                wait_until(lambda: runtime.ingest is not None and runtime.ingest.stats.store_errors)
                ready, took = timed(lambda: client.get("/readyz", headers=key))
                assert ready.status_code == 503
                assert took < 5, f"/readyz took {took:.1f} s with the database down"
                reasons = ready.json()["reasons"]
                assert any(r.startswith("database: PostgreSQL unreachable") for r in reasons)
                assert any("database commits failing (retrying)" in r for r in reasons)
                api, took = timed(lambda: client.get("/api/v1/alarms", headers=key))
                assert api.status_code == 503, api.text
                assert api.headers["content-type"] == "application/problem+json"
                assert "PostgreSQL" in api.json()["detail"]
                assert took < 5, f"an API call took {took:.1f} s with the database down"
                time.sleep(1)  # several failed retries while it is down
                private_pg.start()
                wait_until(lambda: client.get("/readyz").status_code == 200, timeout=60)
                assert runtime.store.count_readings() == 3
                assert runtime.ingest.stats.poisoned == 0
                assert client.get("/api/v1/alarms", headers=key).status_code == 200
        finally:
            runtime.close()
        with pytest.raises(StoreUnavailable):
            open_store(f"postgresql://postgres@127.0.0.1:{private_pg.port + 1}/x")
