"""Secrets: written 0600, never logged, never in --json output.

The secrets are an MQTT password (gateway: flashed onto its card; collector: from the
environment) and the collector's bootstrap admin API key. Every command that touches them runs
as a separate process, and its whole output and log is searched for them.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.proof]

GW_PASSWORD = "gw-Sekr1t-8fQ2-never-print"
COLLECTOR_PASSWORD = "col-Sekr1t-Lm4x-never-print"


def lifeline(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m lifeline ARGS` to completion, capturing both streams."""
    return subprocess.run(
        [sys.executable, "-m", "lifeline", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_flashed_gateway_password_is_0600_and_in_no_output(tmp_path: Path) -> None:
    conf = {
        "gateway": "gw-a",
        "site": "s1",
        "mqtt": {"url": f"mqtt://127.0.0.1:{free_port()}"},  # nobody listens: check fails
        "buffer": {"path": str(tmp_path / "buffer.sqlite")},
        "buses": [{"type": "tcp", "host": "127.0.0.1", "port": free_port(),
                   "devices": [{"id": "mh-1", "unit": 1, "profile": "manhole_cover"}]}],
    }  # fmt: skip
    (tmp_path / "gw.yaml").write_text(yaml.safe_dump(conf))
    (tmp_path / "pw.txt").write_text(GW_PASSWORD + "\n")
    # A unit without the shipped one's sandbox: the buffer is in the test's temporary folder.
    (tmp_path / "unit.service").write_text("[Service]\nExecStart=/bin/true\n")
    card = tmp_path / "card"
    card.mkdir()
    flashed = card / "etc" / "lifeline" / "gateway.yaml"
    runs = [
        lifeline("edge", "flash", str(card), "--config", str(tmp_path / "gw.yaml"),
                 "--username", "gw-a", "--password-file", str(tmp_path / "pw.txt"),
                 "--unit-file", str(tmp_path / "unit.service"), "--json"),
        lifeline("edge", "validate", "--config", str(flashed)),
        lifeline("edge", "check", "--config", str(flashed), "--json", "--broker-timeout", "1"),
        lifeline("edge", "status", "--config", str(flashed), "--json"),
    ]  # fmt: skip
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[1].returncode == 0, runs[1].stderr
    assert GW_PASSWORD in flashed.read_text()  # the gateway needs it ...
    holders = [p for p in card.rglob("*") if p.is_file() and GW_PASSWORD in p.read_text()]
    assert holders == [flashed]
    assert stat.S_IMODE(flashed.stat().st_mode) == 0o600  # ... and only root may read it
    for run in runs:
        assert GW_PASSWORD not in run.stdout + run.stderr, run.args


def test_collector_key_file_is_0600_and_no_secret_reaches_its_log(
    tmp_path: Path, mqtt_url: str, topic_root: str
) -> None:
    key_file = tmp_path / "admin.key"
    port = free_port()
    env = {**os.environ, "LIFELINE_MQTT_PASSWORD": COLLECTOR_PASSWORD}
    args = ["collector", "run", "--mqtt", mqtt_url, "--db", f"sqlite:///{tmp_path}/c.db"]
    args += ["--root", topic_root, "--http", f"127.0.0.1:{port}", "--client-id", f"c-{port}"]
    args += ["--mqtt-username", "lifeline-collector", "--bootstrap-key-file", str(key_file)]
    log = tmp_path / "collector.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lifeline", *args, "--verbose"],
            stdout=out,
            stderr=out,
            env=env,
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        token = key_file.read_text().strip()
        authed = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/gateways",
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
    helped = lifeline("collector", "run", "--help", env=env)
    assert token
    assert authed.status_code == 200  # the file holds a working admin key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    text = log.read_text(errors="replace") + helped.stdout + helped.stderr
    assert COLLECTOR_PASSWORD not in text
    assert token not in text
