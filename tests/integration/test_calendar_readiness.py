"""A working calendar that does not list the coming year's 调休 is reported (review 2, item 2):
one log line, a gauge in /metrics and a warning in /readyz that leaves it ready. The runtime's
clock is given, so the test does not depend on today's date."""

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lifeline.collector.api.app import create_app
from lifeline.collector.models import Role
from lifeline.collector.runtime import CollectorConfig, Runtime
from tests.integration.test_api_http import add_keys

pytestmark = pytest.mark.integration


def clock_at(when: list[datetime]) -> Callable[[], float]:
    return lambda: when[0].timestamp()


def test_a_coming_year_without_its_notice_is_a_warning_not_unready(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    when = [datetime(2026, 10, 1, tzinfo=UTC)]
    config = CollectorConfig(db_url=f"sqlite:///{tmp_path}/cal.db", ingest=None)
    runtime = Runtime(config, clock=clock_at(when))
    try:
        keys = add_keys(runtime)
        key = {"Authorization": f"Bearer {keys[Role.VIEWER]}"}
        with TestClient(create_app(config, runtime)) as client:
            ready = client.get("/readyz", headers=key)
            assert ready.status_code == 200
            assert "warnings" not in ready.json()
            metrics = client.get("/metrics", headers=key).text
            assert "lifeline_calendar_unlisted_years 0" in metrics

            when[0] = datetime(2026, 11, 30, tzinfo=UTC)  # 2027's notice is due, not listed
            with caplog.at_level(logging.WARNING, logger="lifeline.collector.runtime"):
                for _ in range(2):
                    ready = client.get("/readyz", headers=key)
                    assert ready.status_code == 200, ready.text
                    (warning,) = ready.json()["warnings"]
                    assert "2027" in warning
                    assert "调休" in warning
                    metrics = client.get("/metrics", headers=key).text
                    assert "lifeline_calendar_unlisted_years 1" in metrics
            logged = [r for r in caplog.records if "2027" in r.getMessage()]
            assert len(logged) == 1
            assert logged[0].levelno == logging.WARNING
            # The public learns only that it is ready.
            assert client.get("/readyz").json() == {"status": "ready"}
    finally:
        runtime.close()
