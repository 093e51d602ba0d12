"""Commands that change something say what they did in one line, and as JSON with --json.

firmware-sim runs as `lifeline sim run` does for a developer (its own process, a control port);
the control commands run in this process through their typer app, the collector's on a fresh
SQLite database.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from lifeline.collector.cli import app as collector_cli
from lifeline.edge.cli import app as edge_cli
from lifeline.firmware_sim.cli import app as sim_cli
from lifeline.firmware_sim.control import SimControl

pytestmark = pytest.mark.integration

SCENARIOS = Path(__file__).parents[2] / "config" / "scenarios"


@pytest.fixture
def endpoints(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "endpoints.json"
    scenario = str(SCENARIOS / "single-manhole.yaml")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifeline", "sim", "run", "-s", scenario, "--endpoints-file",
         str(path), "--duration", "120"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not path.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "firmware-sim wrote no endpoints file"
            time.sleep(0.05)
        yield path
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


def _values(path: Path, device: str) -> dict[str, Any]:
    ctl = json.loads(path.read_text())["control"]

    async def go() -> dict[str, Any]:
        async with SimControl(ctl["host"], ctl["port"]) as c:
            return dict(await c.values(device))

    return asyncio.run(go())


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the simulation did not change"
        time.sleep(0.05)


def _sim(*args: str) -> str:
    r = CliRunner().invoke(sim_cli, list(args))
    assert r.exit_code == 0, r.output
    return r.stdout


def test_sim_control_commands_say_what_they_did(endpoints: Path) -> None:
    ep = ["--endpoints-file", str(endpoints)]
    # They used to succeed in silence: nothing told a script or a person that anything happened.
    assert _sim("trigger", "mh-001", "open", *ep) == "triggered open on mh-001\n"
    _wait_for(lambda: _values(endpoints, "mh-001")["cover_open"] is True)
    assert json.loads(_sim("trigger", "mh-001", "tilt", "-a", "x=3", *ep, "--json")) == {
        "ok": True,
        "cmd": "trigger",
        "device": "mh-001",
        "event": "tilt",
        "args": {"x": 3},
    }
    assert _sim("trigger", "mh-001", "tilt", "-a", "x=3", "-a", "y=1", *ep) == (
        "triggered tilt on mh-001 (x=3, y=1)\n"
    )
    assert _sim("set", "mh-001", "water_level", "42", *ep) == (
        "pinned mh-001.water_level = 42 until released\n"
    )
    assert _values(endpoints, "mh-001")["water_level"] == 42
    assert json.loads(_sim("set", "mh-001", "water_level", "7", *ep, "--json")) == {
        "ok": True,
        "cmd": "set",
        "device": "mh-001",
        "point": "water_level",
        "value": 7,
    }
    assert _sim("fault", "mh-001", "slow", "-a", "delay_s=0.1", *ep) == (
        "injected slow into mh-001 (delay_s=0.1)\n"
    )
    assert _sim("fault", "mh-001", "none", *ep) == "cleared every fault and quirk of mh-001\n"
    cleared = json.loads(_sim("fault", "mh-001", "busy", "-a", "off=true", *ep, "--json"))
    assert cleared == {
        "ok": True,
        "cmd": "fault",
        "device": "mh-001",
        "kind": "busy",
        "args": {"off": True},
    }
    assert _sim("fault", "mh-001", "busy", "-a", "off=true", *ep) == "cleared busy on mh-001\n"


def test_collector_commands_that_change_something_have_json(tmp_path: Path) -> None:
    db = ["--db", f"sqlite:///{tmp_path}/c.db"]

    def run(*args: str) -> dict[str, Any]:
        r = CliRunner().invoke(collector_cli, [*args, *db, "--json"])
        assert r.exit_code == 0, r.output
        out: dict[str, Any] = json.loads(r.stdout)
        return out

    assert run("migrate")["applied"]
    assert run("migrate") == {"backend": "sqlite", "applied": []}
    key = run("keys", "create", "--role", "viewer", "--name", "值班员")
    assert key["key"].startswith("llk_")
    assert (key["role"], key["name"]) == ("viewer", "值班员")
    assert run("keys", "revoke", str(key["id"])) == {"id": key["id"], "revoked": True}
    assets = Path(__file__).parents[2] / "config" / "assets" / "example.csv"
    imported = run("assets", "import", str(assets))
    assert imported["file"] == str(assets)
    assert imported["imported"] > 0


def test_edge_validate_warns_about_a_non_standard_baud_rate(tmp_path: Path) -> None:
    # It said "ok" to 96000 and 9601: a typo that no device on the bus would answer.
    device = {"id": "sl-1", "unit": 1, "profile": "streetlight"}
    bus = {"type": "rtu", "port": "/dev/ttyUSB0", "baudrate": 96000, "devices": [device]}
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump({"gateway": "gw", "site": "s", "buses": [bus]}))
    r = CliRunner().invoke(edge_cli, ["validate", "-c", str(config)])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"{config}: ok")
    assert r.stderr.startswith(
        f"warning: {config}: buses[0].baudrate: 96000 is not a standard baud rate "
        "(did you mean 9600?); standard: 300, 600, 1200, 2400, 4800, 9600, 14400, 19200"
    )
    bus["baudrate"] = 1_000_000
    config.write_text(yaml.safe_dump({"gateway": "gw", "site": "s", "buses": [bus]}))
    r = CliRunner().invoke(edge_cli, ["validate", "-c", str(config)])
    assert r.exit_code == 1
    assert "1000000 is no serial line rate (300-921600); standard: 300" in r.stderr


def test_flash_refuses_a_buffer_the_installed_service_cannot_keep(tmp_path: Path) -> None:
    # The shipped unit has PrivateTmp=true, ProtectSystem=strict and only /var/lib/lifeline
    # writable: a buffer under /tmp was flashed without a word and lost at every restart.
    card = tmp_path / "card"
    card.mkdir()
    device = {"id": "sl-1", "unit": 1, "profile": "streetlight"}
    bus = {"type": "tcp", "host": "127.0.0.1", "port": 502, "devices": [device]}
    for buffer, refused in [
        ("/tmp/edge.sqlite", "PrivateTmp=true gives it its own /tmp and /var/tmp"),
        ("/home/pi/edge.sqlite", "ProtectHome=true makes the home folders hidden to it"),
        ("/opt/lifeline/edge.sqlite", "ProtectSystem=strict makes everything else read-only"),
        ("/var/lib/lifeline/edge.sqlite", ""),
        ("edge.sqlite", ""),  # relative: in WorkingDirectory=/var/lib/lifeline
        # The writable folder itself was flashed as the buffer's path: a file it cannot be.
        ("/var/lib/lifeline", "/var/lib/lifeline is a folder, and the buffer is a file in one"),
        ("/var/lib/lifeline/", "/var/lib/lifeline is a folder"),
        (".", "/var/lib/lifeline is a folder"),
        ("/var/lib/lifeline/new/", "/var/lib/lifeline/new is a folder"),
        ("/", "/ is a folder, and the buffer is a file in one; it can write only under"),
    ]:
        config = tmp_path / "gw.yaml"
        data = {"gateway": "gw", "site": "s", "buffer": {"path": buffer}, "buses": [bus]}
        config.write_text(yaml.safe_dump(data))
        args = ["flash", str(card), "-c", str(config), "--dry-run", "--anonymous"]
        r = CliRunner().invoke(edge_cli, args)
        if refused:
            assert r.exit_code == 1, (buffer, r.output)
            assert f"lifeline-edge.service cannot keep its buffer at {buffer}: {refused}" in (
                r.stderr
            )
            assert "it can write only under /var/lib/lifeline." in r.stderr
        else:
            assert r.exit_code == 0, (buffer, r.output)


def test_edge_check_and_run_warn_about_a_non_standard_baud_rate(tmp_path: Path) -> None:
    device = {"id": "sl-1", "unit": 1, "profile": "streetlight", "timeout_s": 0.05}
    bus = {"type": "rtu", "port": str(tmp_path / "ttyUSB0"), "baudrate": 9601, "devices": [device]}
    config = tmp_path / "gw.yaml"
    data = {"gateway": "gw", "site": "s", "mqtt": {"url": "mqtt://127.0.0.1:1"}, "buses": [bus]}
    data["buffer"] = {"path": str(tmp_path / "edge.sqlite")}
    config.write_text(yaml.safe_dump(data))
    warning = f"{config}: buses[0].baudrate: 9601 is not a standard baud rate (did you mean 9600?)"
    check = CliRunner().invoke(edge_cli, ["check", "-c", str(config), "--broker-timeout", "0.1"])
    assert check.exit_code == 1  # no such port, no broker
    assert f"warning: {warning}" in check.stderr
    daemon = subprocess.Popen(
        [sys.executable, "-m", "lifeline", "edge", "run", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert daemon.stderr is not None
        lines: list[str] = []
        while not any(warning in line for line in lines):
            line = daemon.stderr.readline()
            assert line, "".join(lines)  # the daemon ended without the warning
            lines.append(line)
        assert "WARNING lifeline.edge" in lines[-1]
    finally:
        daemon.terminate()
        daemon.wait(30)
        if daemon.stderr:
            daemon.stderr.close()


def test_edge_run_stops_cleanly_on_a_sigterm_sent_the_moment_it_starts(tmp_path: Path) -> None:
    # systemd may stop the unit while it is still starting. The handler used to be installed
    # after the imports and the config (~1 s): a SIGTERM then killed the gateway (exit -15)
    # before it could mark its buffer stopped. The signal is sent at once, held blocked in the
    # child until the gateway unblocks it, so it lands at the first moment the gateway can
    # take it, whatever the speed of this machine.
    device = {"id": "sl-1", "unit": 1, "profile": "streetlight"}
    bus = {"type": "tcp", "host": "127.0.0.1", "port": 1, "devices": [device]}
    config = tmp_path / "gw.yaml"
    data = {"gateway": "gw", "site": "s", "mqtt": {"url": "mqtt://127.0.0.1:1"}, "buses": [bus]}
    data["buffer"] = {"path": str(tmp_path / "edge.sqlite")}
    config.write_text(yaml.safe_dump(data))

    for _ in range(3):
        # The child inherits this thread's signal mask across exec.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "lifeline", "edge", "run", "-c", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        daemon.send_signal(signal.SIGTERM)
        try:
            _, err = daemon.communicate(timeout=30)
        finally:
            daemon.kill()
        assert daemon.returncode == 0, err
        assert "gateway gw stopped cleanly" in err
