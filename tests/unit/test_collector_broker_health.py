"""BrokerHealth: what the broker gives ingest, judged with an injected clock."""

import logging
import socket

import pytest

from lifeline.collector.broker_health import BrokerHealth, connect_error

URL = "mqtt://broker:1883"


def test_a_reconnect_without_the_session_is_a_reason_for_the_hold_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = BrokerHealth(URL, session_lost_hold_s=600)
    h.connected_now(session_present=False, now=0)  # the first connect creates the session
    assert h.problems(1) == []
    h.connection_failed("disconnected (Unspecified error)", now=10)
    h.connection_failed("cannot connect", now=11)  # still the same outage: no second line
    assert h.problems(12) == [
        f"broker {URL} unreachable since 1970-01-01 00:00:10 UTC: cannot connect"
    ]
    h.connected_now(session_present=False, now=20)
    (reason,) = h.problems(21)
    assert reason.startswith("broker did not keep the persistent session")
    assert "(1 time(s) since start)" in reason
    assert h.problems(20 + 600) == []
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(": ")[0] for m in messages] == [
        f"broker {URL} unreachable",
        f"broker {URL} reachable again after 10.0 s",
        f"broker {URL} did not keep the persistent session on reconnect",
    ]
    assert caplog.records[-1].levelno == logging.ERROR


def test_qos0_and_refused_subscriptions_and_an_unanswered_probe_are_reasons() -> None:
    h = BrokerHealth(URL)
    h.connected_now(session_present=True, now=0)
    h.subscribed([("a/+", 1), ("b/+", 0), ("c/+", None)])
    assert h.problems(1) == [
        "broker refused the subscriptions c/+",
        "broker granted QoS 0, not 1, for b/+: messages can be lost before they are stored",
    ]
    h.connected_now(session_present=True, now=2)  # a new SUBACK will say again
    h.subscribed([("$share/g/a/+", 1)])
    h.probing("$share/g/a/+")
    assert h.problems(3) == ["shared subscription $share/g/a/+ not confirmed yet (probing)"]
    h.probe_result(False)
    assert "does not deliver on the shared subscription $share/g/a/+" in h.problems(4)[0]
    h.probe_result(True)
    assert h.problems(5) == []


def test_a_broker_that_keeps_no_session_for_an_absent_client_is_a_reason_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = BrokerHealth(URL)
    h.connected_now(session_present=False, now=0)
    h.session_probing()
    why = "a client that reconnected found no session (CONNACK session present 0)"
    h.session_result(why)
    h.session_result(why)  # the next connect's probe says the same: no second line
    (reason,) = h.problems(1)
    assert reason == (
        f"broker does not keep a persistent session for an absent collector: {why}"
        " (messages published while a collector is away would be lost)"
    )
    assert sum("does not keep a persistent session" in r.getMessage() for r in caplog.records) == 1
    h.session_result("")
    assert h.problems(2) == []


def test_an_unreachable_broker_is_logged_once_with_the_reason_the_os_gave(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # It said only "cannot connect": refused, no such host and a bad certificate alike.
    refused = ConnectionRefusedError(111, "Connection refused")
    assert connect_error(refused) == "cannot connect: [Errno 111] Connection refused"
    assert connect_error(socket.gaierror(-2, "Name or service not known")) == (
        "cannot connect: [Errno -2] Name or service not known"
    )
    assert connect_error(TimeoutError()) == "cannot connect: TimeoutError"
    assert connect_error(None) == "cannot connect"
    assert connect_error(ValueError("not an OS error")) == "cannot connect"
    h = BrokerHealth(URL)
    h.connection_failed(connect_error(refused), now=0)
    h.connection_failed(connect_error(refused), now=1)  # the same outage: no second line
    assert [r.getMessage() for r in caplog.records] == [
        f"broker {URL} unreachable: cannot connect: [Errno 111] Connection refused; reconnecting"
    ]
    assert h.problems(2) == [
        f"broker {URL} unreachable since 1970-01-01 00:00:00 UTC: cannot connect: [Errno 111]"
        " Connection refused"
    ]
