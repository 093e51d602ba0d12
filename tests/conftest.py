"""Session fixtures: a real MQTT broker and a real PostgreSQL server for every test that asks."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator

import pytest

from tests.services import Postgres, fresh_database, pg_reachable, start_mosquitto

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def mqtt_url() -> Iterator[str]:
    """A broker URL: $LIFELINE_TEST_MQTT_URL, else a private Mosquitto with the shipped config."""
    external = os.environ.get("LIFELINE_TEST_MQTT_URL")
    if external:
        yield external
        return
    with start_mosquitto() as broker:
        yield broker.url


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """Admin URL of a PostgreSQL server: $LIFELINE_TEST_DB_URL, the local one, or a private one."""
    external = os.environ.get("LIFELINE_TEST_DB_URL")
    if external:
        yield external
        return
    if pg_reachable(DEFAULT_PG):
        yield DEFAULT_PG
        return
    server = Postgres()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A freshly created PostgreSQL database, dropped after the test."""
    with fresh_database(pg_admin_url) as url:
        yield url


@pytest.fixture
def topic_root(request: pytest.FixtureRequest) -> str:
    """A topic root no other test uses, so tests never see each other's messages."""
    digest = hashlib.sha1(request.node.nodeid.encode(), usedforsecurity=False).hexdigest()[:10]
    return f"t-{digest}-{os.getpid()}/lifeline"
