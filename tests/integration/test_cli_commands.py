"""`lifeline edge` installer and crew commands against firmware-sim, a real broker and daemon.

The commands run as subprocesses (the way an installer runs them); firmware-sim runs in a
thread of this process. Its pty buses hear only a master at their own line settings, the way
a real UART turns frames at another rate into noise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lifeline.firmware_sim import simulation
from lifeline.firmware_sim.scenario import Scenario

pytestmark = pytest.mark.integration

CLI = (
    "import typer; from lifeline.edge import crew, installer; app = typer.Typer(); "
    "installer.register(app); crew.register(app); app(prog_name='lifeline edge')"
)
UNIT_FILE = "[Unit]\nDescription=Lifeline edge gateway\n[Service]\nExecStart=/bin/true\n"


SCENARIO = {
    "seed": 7,
    "servers": [
        {
            "name": "rs485-main",
            "kind": "serial",
            "baudrate": 9600,
            "parity": "N",
            "devices": [
                {"id": "mh-a", "unit": 1, "profile": "manhole_cover"},
                {"id": "sl-a", "unit": 2, "profile": "streetlight"},
            ],
        },
        {
            "name": "rs485-fast",
            "kind": "serial",
            "baudrate": 19200,
            "parity": "N",
            "devices": [{"id": "gas-a", "unit": 3, "profile": "gas_detector"}],
        },
        {
            "name": "lan",
            "kind": "tcp",
            "devices": [
                {"id": "tilt-a", "unit": 1, "profile": "tilt_sensor"},
                {"id": "sl-b", "unit": 4, "profile": "streetlight"},
            ],
        },
    ],
}


class SimThread:
    """firmware-sim running on its own event loop thread."""

    def __init__(self, scenario: dict[str, Any]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.sim = simulation.Simulation(Scenario.model_validate(scenario), control_port=None)

    def call(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def server(self, name: str) -> dict[str, Any]:
        servers = self.call(lambda: self.sim.endpoints)["servers"]
        return next(s for s in servers if s["name"] == name)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimThread]:
    st = SimThread(SCENARIO)
    st.thread.start()
    asyncio.run_coroutine_threadsafe(st.sim.start(), st.loop).result(10)
    yield st
    asyncio.run_coroutine_threadsafe(st.sim.stop(), st.loop).result(10)
    st.loop.call_soon_threadsafe(st.loop.stop)
    st.thread.join(5)
    st.loop.close()


def edge(
    *args: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `lifeline edge ARGS` in a subprocess (stdin not a terminal, stdout piped)."""
    return subprocess.run(
        [sys.executable, "-c", CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_scan_finds_exactly_the_devices_over_pty_and_tcp(sim: SimThread, tmp_path: Path) -> None:
    main, fast, lan = sim.server("rs485-main"), sim.server("rs485-fast"), sim.server("lan")
    found: dict[str, list[tuple[int, str | None, int | None]]] = {}
    for name, args in {
        "main": ["--port", main["path"], "--baud", "9600,19200", "--parity", "N"],
        "fast": ["--port", fast["path"], "--baud", "9600,19200", "--parity", "N"],
        "lan": ["--host", lan["host"], "--tcp-port", str(lan["port"])],
    }.items():
        r = edge("scan", *args, "--units", "1-4", "--timeout", "0.1", "--json")
        assert r.returncode == 0, r.stderr
        (tmp_path / f"{name}.json").write_text(r.stdout)
        devices = json.loads(r.stdout)["devices"]
        found[name] = [(d["unit"], d["family"], d["baudrate"]) for d in devices]
        assert all(d["firmware"] == "1.2" and d["values"] and not d["error"] for d in devices)
    assert found == {
        "main": [(1, "manhole", 9600), (2, "streetlight", 9600)],
        "fast": [(3, "gas", 19200)],  # silent at the default 9600, found at 19200
        "lan": [(1, "tilt", None), (4, "streetlight", None)],
    }
    table = edge("scan", "--host", lan["host"], "--tcp-port", str(lan["port"]), "--units", "1-2")
    assert table.returncode == 0
    assert "tilt_sensor" in table.stdout
    assert "QC-T460" in table.stdout
    assert "\x1b[" not in table.stdout  # no colours when piped
    empty = edge("scan", "--host", lan["host"], "--tcp-port", str(lan["port"]), "--units", "9")
    assert empty.returncode == 1
    assert "no device answered" in empty.stderr


def test_scan_keeps_what_it_found_when_a_later_line_setting_cannot_be_opened(
    sim: SimThread,
) -> None:
    # Linux ptys refuse parity E with EINVAL once the port was opened at the same rate: the
    # default sweep N,E used to end in "cannot open" and throw away the devices found at N.
    main = sim.server("rs485-main")
    args = ["--port", main["path"], "--baud", "9600", "--units", "1-3", "--timeout", "0.1"]
    r = edge("scan", *args, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [(d["unit"], d["parity"]) for d in out["devices"]] == [(1, "N"), (2, "N")]
    assert [(x["baudrate"], x["parity"]) for x in out["skipped"]] == [(9600, "E")]
    assert main["path"] in out["skipped"][0]["error"]
    assert f"warning: skipped 9600 8E1 on {main['path']}: cannot open" in r.stderr
    table = edge("scan", *args)
    assert table.returncode == 0, table.stderr
    assert "manhole_cover" in table.stdout
    assert "streetlight" in table.stdout
    assert "Traceback" not in table.stderr


def test_commission_flash_check_on_a_temporary_card(
    sim: SimThread, tmp_path: Path, mqtt_url: str, topic_root: str
) -> None:
    main, lan = sim.server("rs485-main"), sim.server("lan")
    scans = []
    for name, args in {
        "main": ["--port", main["path"], "--baud", "9600", "--parity", "N"],
        "lan": ["--host", lan["host"], "--tcp-port", str(lan["port"])],
    }.items():
        r = edge("scan", *args, "--units", "1-4", "--timeout", "0.1", "--json")
        assert r.returncode == 0, r.stderr
        (tmp_path / f"{name}.json").write_text(r.stdout)
        scans += ["--scan-json", str(tmp_path / f"{name}.json")]
    config = tmp_path / "gw.yaml"
    r = edge(
        "commission", *scans,
        "--gateway", "gw-test-01", "--site", "xihu", "--location", "120.1302,30.2745",
        "--address", "文三路 412 号",
        "--grid", "33010600100201", "--asset", "b1-mh-001=3301060111000101",
        "--broker", mqtt_url, "--mqtt-root", topic_root,
        "--buffer-path", str(tmp_path / "edge.sqlite"), "--out", str(config),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    data = yaml.safe_load(config.read_text())
    ids = [d["id"] for bus in data["buses"] for d in bus["devices"]]
    # One scheme: GATEWAY.bBUS-FAMILY-UNIT (it was mh-01 here, mh-b1-01 once a unit repeated).
    assert ids == [
        "gw-test-01.b1-mh-001",
        "gw-test-01.b1-sl-002",
        "gw-test-01.b2-tilt-001",
        "gw-test-01.b2-sl-004",
    ]
    assert data["buses"][0]["devices"][0]["asset"] == "3301060111000101"
    assert data["location"] == {
        "lon": 120.1302,
        "lat": 30.2745,
        "datum": "CGCS2000",
        "address": "文三路 412 号",
    }

    card = tmp_path / "card"
    (card / "etc").mkdir(parents=True)
    (tmp_path / "pw").write_text("not-printed-pw\n")
    (tmp_path / "unit.service").write_text(UNIT_FILE)
    flash = ["flash", str(card), "--config", str(config), "--username", "gw-test-01"]
    flash += [
        "--password-file",
        str(tmp_path / "pw"),
        "--unit-file",
        str(tmp_path / "unit.service"),
    ]
    dry = edge(*flash, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert {f["result"] for f in json.loads(dry.stdout)["files"]} == {"would create"}
    assert not (card / "etc/lifeline/gateway.yaml").exists()

    first = edge(*flash, "--json")
    assert first.returncode == 0, first.stderr
    assert {f["result"] for f in json.loads(first.stdout)["files"]} == {"new"}
    written = card / "etc/lifeline/gateway.yaml"
    assert written.stat().st_mode & 0o777 == 0o600
    assert yaml.safe_load(written.read_text())["mqtt"]["password"] == "not-printed-pw"
    link = card / "etc/systemd/system/multi-user.target.wants/lifeline-edge.service"
    assert os.readlink(link) == "/etc/systemd/system/lifeline-edge.service"
    assert (card / "etc/hostname").read_text() == "lifeline-gw-test-01\n"
    again = edge(*flash, "--json")
    assert again.returncode == 0
    assert {f["result"] for f in json.loads(again.stdout)["files"]} == {"unchanged"}
    assert "not-printed-pw" not in first.stdout + first.stderr + again.stdout + dry.stdout

    check = edge("check", "--config", str(written), "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    results = json.loads(check.stdout)
    assert [c["ok"] for c in results] == [True] * 6  # config, 4 devices, broker
    assert "PUBACK" in results[-1]["detail"]
    assert topic_root in results[-1]["detail"]

    # A card holding another gateway is refused, then overwritten only with --force.
    other = dict(data, gateway="gw-other-99")
    other_cfg = tmp_path / "other.yaml"
    other_cfg.write_text(yaml.safe_dump(other))
    unit = ["--unit-file", str(tmp_path / "unit.service"), "--username", "gw-other-99"]
    unit += ["--password-file", str(tmp_path / "pw")]
    refused = edge("flash", str(card), "--config", str(other_cfg), *unit)
    assert refused.returncode == 1
    assert "already holds gateway 'gw-test-01'" in refused.stderr
    assert yaml.safe_load(written.read_text())["gateway"] == "gw-test-01"
    forced = edge("flash", str(card), "--config", str(other_cfg), *unit, "--force")
    assert forced.returncode == 0, forced.stderr
    assert yaml.safe_load(written.read_text())["gateway"] == "gw-other-99"


def test_check_names_each_failure(sim: SimThread, tmp_path: Path) -> None:
    lan = sim.server("lan")
    config = tmp_path / "gw.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "gateway": "gw-bad",
                "site": "xihu",
                "mqtt": {"url": "mqtt://127.0.0.1:1"},
                "buffer": {"path": str(tmp_path / "b.sqlite")},
                "buses": [
                    {
                        "type": "tcp",
                        "host": lan["host"],
                        "port": lan["port"],
                        "devices": [
                            {"id": "tilt-01", "unit": 1, "profile": "tilt_sensor"},
                            {"id": "mh-09", "unit": 4, "profile": "manhole_cover"},
                        ],
                    }
                ],
            }
        )
    )
    r = edge("check", "--config", str(config), "--broker-timeout", "1")
    assert r.returncode == 1
    lines = {line.split()[1]: line for line in r.stdout.splitlines() if line.startswith("device")}
    assert "pass" in lines["tilt-01"]
    assert "FAIL" in lines["mh-09"]
    assert "streetlight" not in lines["mh-09"]
    assert "is not a LL-JG200" in lines["mh-09"]  # unit 4 is a streetlight
    assert "Connection refused" in r.stdout
    assert "2 check(s) failed" in r.stderr


def _lan_scan(sim: SimThread, tmp_path: Path) -> Path:
    lan = sim.server("lan")
    r = edge(
        "scan", "--host", lan["host"], "--tcp-port", str(lan["port"]), "--units", "1",
        "--timeout", "0.1", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    path = tmp_path / "lan.json"
    path.write_text(r.stdout)
    return path


# An address an installer may really type (lines, quotes, a '#'), and one that tries to be YAML.
HOSTILE_ADDRESS = '文三路 412 号\n"东北角" 机柜 # 2\nmqtt: {url: "mqtt://evil:1883"}\n  - x: \'y\''


def test_commission_writes_the_cabinet_location_and_a_hostile_address_comes_back_intact(
    sim: SimThread, tmp_path: Path
) -> None:
    from lifeline.edge.config import load_config

    scan = _lan_scan(sim, tmp_path)
    config = tmp_path / "gw.yaml"
    site = ["--scan-json", str(scan), "--gateway", "gw-loc", "--site", "xihu"]
    site += ["--broker", "mqtt://127.0.0.1:1883", "--out", str(config)]
    r = edge(
        "commission", *site, "--location", " 120.1302, 30.2745 ,gcj-02", "--address",
        HOSTILE_ADDRESS, "--grid", "33010600100201",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    assert data["location"] == {
        "lon": 120.1302,
        "lat": 30.2745,
        "datum": "GCJ-02",
        "address": HOSTILE_ADDRESS,
    }
    assert data["mqtt"]["url"] == "mqtt://127.0.0.1:1883"
    cfg = load_config(config)  # what the daemon will load
    assert cfg.location is not None
    assert cfg.location.address == HOSTILE_ADDRESS
    printed = edge("commission", *site[:-1], "-", "--location", "120.1302,30.2745")
    assert printed.returncode == 0, printed.stderr
    assert yaml.safe_load(printed.stdout)["location"] == {
        "lon": 120.1302,
        "lat": 30.2745,
        "datum": "CGCS2000",
        "address": "",
    }


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--location", "文三路 412 号"], 2, "expected LON,LAT[,DATUM]"),
        (["--location", "30.2745,120.1302"], 2, "longitude comes first"),
        (["--location", "120.13,30.27,GCJ"], 2, "is not a datum"),
        (["--location", "nan,30"], 2, "finite numbers"),
        (["--address", "文三路 412 号"], 2, "give both"),
        (["--location", "120.13,30.27", "--address", "路\x85口"], 1, "control character U+0085"),
        (["--location", "120.13,30.27", "--address", "路" * 257], 1, "at most 256 characters"),
        # Text from an option must not reach the file as YAML: the grid went into a comment.
        (["--grid", "33010600100201\nstatus_interval_s: 0.5"], 2, "14 digits"),
        (["--grid", "330106001002"], 2, "14 digits"),  # a 社区 code, which the collector refuses
    ],
)
def test_commission_refuses_a_location_it_cannot_keep(
    sim: SimThread, tmp_path: Path, args: list[str], code: int, says: str
) -> None:
    scan = _lan_scan(sim, tmp_path)
    config = tmp_path / "gw.yaml"
    r = edge(
        "commission", "--scan-json", str(scan), "--gateway", "gw-loc", "--site", "xihu",
        "--broker", "mqtt://127.0.0.1:1883", "--out", str(config), *args,
    )  # fmt: skip
    assert r.returncode == code, r.stdout + r.stderr
    assert says in _unboxed(r.stderr)
    assert "Traceback" not in r.stderr
    assert not config.exists()


class Terminal:
    """A command on a pseudo-terminal, as an installer at a cabinet runs it: the prompts are
    read from the terminal and the answers typed into it."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.master, slave = os.openpty()
        env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}
        self.proc = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
            start_new_session=True,
        )  # fmt: skip
        os.close(slave)
        self.pending = ""

    def expect(self, text: str, timeout: float = 60) -> str:
        """Everything up to and including `text`, once the command wrote it."""
        deadline = time.monotonic() + timeout
        while text not in self.pending:
            left = deadline - time.monotonic()
            assert left > 0, f"waited for {text!r}; the terminal shows {self.pending!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:  # EIO: the command exited and closed the terminal
                data = b""
            assert data, f"the command ended before {text!r}: {self.pending!r}"
            self.pending += data.decode("utf-8", "replace").replace("\r\n", "\n")
        end = self.pending.index(text) + len(text)
        seen, self.pending = self.pending[:end], self.pending[end:]
        return seen

    def answer(self, prompt: str, text: str) -> str:
        seen = self.expect(prompt)
        os.write(self.master, text.encode() + b"\n")
        return seen

    def close(self) -> int:
        """The command's exit status; one still waiting for an answer is killed (-9)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait(10)
        os.close(self.master)
        return code


def test_interactive_commission_asks_again_after_a_typo_and_keeps_the_answers(
    sim: SimThread, tmp_path: Path
) -> None:
    lan = sim.server("lan")
    scan = edge(
        "scan", "--host", lan["host"], "--tcp-port", str(lan["port"]), "--units", "1-4",
        "--timeout", "0.1", "--json",
    )  # fmt: skip
    assert scan.returncode == 0, scan.stderr
    (tmp_path / "lan.json").write_text(scan.stdout)
    config = tmp_path / "gw.yaml"
    args = [sys.executable, "-c", CLI, "commission", "--scan-json", "lan.json", "-o", str(config)]
    term = Terminal(args, tmp_path)
    try:
        # One typo used to abort the whole dialogue, losing every answer before it.
        term.answer("Gateway id: ", "gw 01")
        assert "error: 'gw 01': a gateway id is letters" in term.answer("Gateway id: ", "gw-pty")
        term.answer("Site id: ", "xihu")
        term.answer("MQTT broker URL: ", "http://broker")
        seen = term.answer("MQTT broker URL: ", "mqtt://127.0.0.1:1883")
        assert "must look like mqtt://host:1883 or mqtts://host:8883; try again" in seen
        term.answer("Cabinet location LON,LAT[,DATUM] (empty: none) []: ", "30.2745,120.1302")
        seen = term.answer("Cabinet location LON,LAT[,DATUM] (empty: none) []: ", "120.13,30.27")
        assert "longitude comes first" in seen
        term.answer("Cabinet address []: ", "文三路 412 号")
        term.answer("单元网格 (grid cell) code []: ", "330106001002")  # a 社区 code
        seen = term.answer("单元网格 (grid cell) code []: ", "33010600100201")
        assert "is 14 digits (6 area + 3 街道 + 3 社区 + 2 grid) or 15; try again" in seen
        tilt = "部件标识码 of the asset gw-pty.b1-tilt-001 watches (empty: none) []: "
        term.answer(tilt, "0117")
        assert "16-digit 部件标识码" in term.answer(tilt, "")
        term.answer("gw-pty.b1-sl-004 watches (empty: none) []: ", "3301060118000004")
        assert f"wrote {config}: gateway gw-pty at site xihu" in term.expect("device(s)")
    finally:
        code = term.close()
    assert code == 0
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    assert (data["gateway"], data["site"], data["mqtt"]["url"]) == (
        "gw-pty",
        "xihu",
        "mqtt://127.0.0.1:1883",
    )
    assert data["location"]["address"] == "文三路 412 号"
    assert "# 单元网格 (grid cell): 33010600100201" in config.read_text(encoding="utf-8")
    devices = {d["id"]: d.get("asset") for d in data["buses"][0]["devices"]}
    assert devices == {"gw-pty.b1-tilt-001": None, "gw-pty.b1-sl-004": "3301060118000004"}


def test_commission_ids_are_stable_for_a_scan_and_unique_across_cabinets(
    sim: SimThread, tmp_path: Path
) -> None:
    scan = _lan_scan(sim, tmp_path)

    def ids(gateway: str) -> list[str]:
        r = edge(
            "commission", "--scan-json", str(scan), "--gateway", gateway, "--site", "xihu",
            "--broker", "mqtt://127.0.0.1:1883", "--out", "-",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        return [d["id"] for b in yaml.safe_load(r.stdout)["buses"] for d in b["devices"]]

    first = ids("gw-a")
    assert first == ids("gw-a") == ["gw-a.b1-tilt-001"]
    assert not set(first) & set(ids("gw-b"))


def _unboxed(text: str) -> str:
    """Text of a usage error without the box and line wrapping it is printed in."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", text).split())


def test_text_from_a_scan_file_stays_in_its_comment(sim: SimThread, tmp_path: Path) -> None:
    """The header lists each device's vendor from the scan file: one line, whatever it holds."""
    from lifeline.edge.config import load_config

    scan = _lan_scan(sim, tmp_path)
    doc = json.loads(scan.read_text())
    doc["devices"][0]["vendor"] = "Wuxi\nstatus_interval_s: 0.5\u2028buses: []"
    scan.write_text(json.dumps(doc))
    config = tmp_path / "gw.yaml"
    r = edge(
        "commission", "--scan-json", str(scan), "--gateway", "gw-loc", "--site", "xihu",
        "--broker", "mqtt://127.0.0.1:1883", "--out", str(config),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert load_config(config).status_interval_s == 30  # the default, not the vendor's 0.5


def test_check_captures_each_tilt_points_installed_zero_into_the_config(
    sim: SimThread, tmp_path: Path
) -> None:
    """The inclinometer is mounted 2.4 degrees off level; `check --capture-baselines` records
    that as its zero, and a lean of 4.4 degrees is then 2 from it, not 4.4."""
    from lifeline.edge.config import load_config

    lan = sim.server("lan")
    config = tmp_path / "gw.yaml"
    header = "# Gateway gw-cap, made by hand for this test.\n# Second header line.\n"
    bus = {"type": "tcp", "host": lan["host"], "port": lan["port"]}
    bus["devices"] = [
        {"id": "tilt-01", "unit": 1, "profile": "tilt_sensor", "interval_s": 0.05},
        {"id": "sl-04", "unit": 4, "profile": "streetlight"},  # nothing to capture
    ]
    body = {
        "gateway": "gw-cap",
        "site": "xihu",
        "mqtt": {"url": "mqtt://127.0.0.1:1", "password": "not-printed-pw"},
        "buffer": {"path": str(tmp_path / "b.sqlite")},
        "buses": [bus],
    }
    config.write_text(header + yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    config.chmod(0o600)
    sim.call(lambda: sim.sim.set_value("tilt-a", "angle_x", 2.4))
    sim.call(lambda: sim.sim.set_value("tilt-a", "angle_y", -0.31))
    try:
        r = edge(
            "check", "--config", str(config), "--broker-timeout", "0.5", "--capture-baselines",
            "--reads", "3", "--json",
        )  # fmt: skip
        results = {c["check"]: c for c in json.loads(r.stdout)}
        assert r.returncode == 1  # nothing listens on port 1: the broker check fails ...
        assert results["baselines"]["ok"], results  # ... and the baselines are written anyway
        assert "baseline angle_x=2.4, angle_y=-0.31" in results["device tilt-01 (unit 1)"]["detail"]
        cfg = load_config(config)
        assert [d.baselines for d in cfg.devices()] == [{"angle_x": 2.4, "angle_y": -0.31}, {}]
        assert config.read_text(encoding="utf-8").startswith(header)
        assert config.stat().st_mode & 0o777 == 0o600
        assert cfg.mqtt.password == "not-printed-pw"
        assert "not-printed-pw" not in r.stdout + r.stderr

        # A sensor that reads as far from level as its alarm limit is not mounted as installed.
        sim.call(lambda: sim.sim.set_value("tilt-a", "angle_x", -3.5))
        r = edge("check", "--config", str(config), "--capture-baselines", "--reads", "2")
        assert r.returncode == 1
        assert "angle_x reads -3.5 deg, 3 or more from 0" in r.stdout
        assert load_config(config).devices()[0].baselines["angle_x"] == 2.4  # kept
    finally:
        sim.call(lambda: sim.sim.trigger("tilt-a", "release", {}))


def _wait_for(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_crew_commands_read_the_log_a_running_daemon_writes_with_the_uplink_down(
    sim: SimThread, tmp_path: Path
) -> None:
    lan = sim.server("lan")
    db = tmp_path / "edge.sqlite"
    config = tmp_path / "gw.yaml"
    bus = {"type": "tcp", "host": lan["host"], "port": lan["port"]}
    bus["devices"] = [
        {"id": "tilt-01", "unit": 1, "profile": "tilt_sensor", "interval_s": 0.2},
        {"id": "sl-04", "unit": 4, "profile": "streetlight", "interval_s": 0.2},
    ]
    config.write_text(
        yaml.safe_dump(
            {
                "gateway": "gw-crew",
                "site": "xihu",
                "mqtt": {"url": "mqtt://127.0.0.1:1"},  # nobody listens: the uplink stays down
                "buffer": {"path": str(db)},
                "buses": [bus],
            }
        )
    )
    daemon = subprocess.Popen(
        [sys.executable, "-m", "lifeline", "edge", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _crew_session(sim, config, db)
        _status_sees_a_device_fail_and_the_daemon_stop(sim, config, daemon)
    finally:
        sim.call(lambda: sim.sim.set_fault("sl-b", "none"))
        daemon.terminate()
        daemon.wait(10)


def _alarms(config: Path, *args: str) -> list[dict[str, Any]]:
    r = edge("alarms", "--config", str(config), "--json", *args)
    assert r.returncode == 0, r.stderr
    result: list[dict[str, Any]] = json.loads(r.stdout)
    return result


def _crew_session(sim: SimThread, config: Path, db: Path) -> None:
    _wait_for(db.exists)
    sim.call(lambda: sim.sim.set_value("tilt-a", "vibration", 25.0))
    alarm = _wait_for(lambda: _alarms(config, "--active", "--device", "tilt-01"))[0]
    assert (alarm["point"], alarm["type"], alarm["state"]) == ("vibration", "hi", "active_unacked")
    assert _alarms(config, "--severity", "critical") == []  # 三级 is not 一级
    assert _alarms(config, "--since", "10m", "--device", "sl-04") == []
    # A unit id only one device has names it, as everywhere a device is asked for.
    assert _alarms(config, "--active", "--device", "1")[0]["alarm_id"] == alarm["alarm_id"]
    # A device the gateway does not have is said, not taken for one without alarms (it was
    # exit 0 and an empty list); from the buffer alone, the devices the daemon reported.
    for args in (["alarms", "--config", str(config)], ["tail", "--db", str(db), "--count", "1"]):
        unknown = edge(*args, "--device", "nosuch")
        assert unknown.returncode == 1, unknown
        where = "on gateway gw-crew" if "--config" in args else f"in the buffer {db}"
        assert unknown.stderr == f"error: no device 'nosuch' {where}; its devices: " + (
            "tilt-01, sl-04\n" if "--config" in args else "sl-04, tilt-01\n"
        )

    tail = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CLI,
            "tail",
            "--db",
            str(db),
            "--json",
            "--alarms-only",
            "--since",
            "10m",
            "--count",
            "2",
            "--duration",
            "20",
            "--interval",
            "0.1",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    ack = edge(
        "ack", alarm["alarm_id"], "--by", "crew-7", "--note", "loose bracket", "--db", str(db)
    )
    assert ack.returncode == 0, ack.stderr
    assert "acknowledged by crew-7: now active_acked" in ack.stdout
    out, _ = tail.communicate(timeout=25)
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["alarm_id"], e["state"], e["ack_by"]) for e in events] == [
        (alarm["alarm_id"], "active_unacked", None),
        (alarm["alarm_id"], "active_acked", "crew-7"),
    ]
    again = edge("ack", alarm["alarm_id"], "--by", "crew-7", "--db", str(db))
    assert again.returncode == 1
    assert "nothing to acknowledge" in again.stderr

    status = edge("status", "--config", str(config), "--json")
    assert status.returncode == 1, status.stdout + status.stderr  # the uplink is down
    st = json.loads(status.stdout)
    assert [(d["device"], d["state"], d["open_alarms"]) for d in st["devices"]] == [
        ("tilt-01", "online", 1),
        ("sl-04", "online", 0),
    ]
    assert all(d["last_good_poll"] for d in st["devices"])
    assert st["daemon"]["running"], st["daemon"]
    assert not st["uplink"]["connected"]
    assert "mqtt://127.0.0.1:1 unreachable" in st["uplink"]["last_error"]
    assert st["problems"] == ["the uplink is down"]
    assert st["buffer"]["readings_waiting"] > 0
    assert st["buffer"]["oldest_unsent"] is not None

    readings = edge("tail", "--db", str(db), "--json", "--device", "sl-04", "--count", "3")
    assert readings.returncode == 0, readings.stderr
    rows = [json.loads(line) for line in readings.stdout.splitlines()]
    assert [(r["kind"], r["device"], r["quality"]) for r in rows] == [
        ("reading", "sl-04", "good")
    ] * 3

    write = edge("write", "4", "dimming", "40", "--config", str(config), "--yes")
    assert write.returncode == 0, write.stderr
    assert write.stdout.strip() == "sl-04 dimming = 40 % (read back)"
    assert sim.call(lambda: sim.sim.devices["sl-b"].values()["dimming"]) == 40


def _status(config: Path) -> tuple[int, dict[str, Any]]:
    r = edge("status", "--config", str(config), "--json")
    assert r.returncode in (0, 1), r.stderr
    st: dict[str, Any] = json.loads(r.stdout)
    return r.returncode, st


def _status_sees_a_device_fail_and_the_daemon_stop(
    sim: SimThread, config: Path, daemon: subprocess.Popen[str]
) -> None:
    sim.call(lambda: sim.sim.set_fault("sl-b", "no_answer"))

    def sl04_offline() -> dict[str, Any] | None:
        _, st = _status(config)
        return st if st["devices"][1]["state"] == "offline" else None

    st = _wait_for(sl04_offline, timeout=30)
    tilt, sl04 = st["devices"]
    assert tilt["state"] == "online"
    assert sl04["last_good_poll"] is not None
    assert sl04["last_good_poll"] <= sl04["since"]  # it answered before it went offline
    assert sl04["last_error"]
    assert "device sl-04 is offline" in st["problems"]
    assert st["daemon"]["running"]

    daemon.terminate()
    assert daemon.wait(10) == 0
    code, st = _status(config)
    assert code == 1
    assert not st["daemon"]["running"]
    assert st["daemon"]["detail"] == "stopped"
    assert st["daemon"]["stopped"] is not None
    assert st["devices"][1]["state"] == "offline"  # the daemon's last word
    table = edge("status", "--config", str(config))
    assert table.returncode == 1
    assert "NOT running: stopped" in table.stdout
    assert "sl-04    offline since" in table.stdout
    # ack changes something, so it has --json too (it had none): with the daemon stopped the
    # acknowledgement is only queued, and the object says so.
    comm_loss = next(a for a in _alarms(config, "--active", "--device", "sl-04"))
    assert comm_loss["type"] == "comm_loss"
    args = ["--by", "crew-7", "--wait", "0", "--config", str(config), "--json"]
    queued = edge("ack", comm_loss["alarm_id"], *args)
    assert queued.returncode == 0, queued.stderr
    assert json.loads(queued.stdout) == {
        "alarm_id": comm_loss["alarm_id"],
        "by": "crew-7",
        "note": "",
        "applied": False,
        "state": None,
    }


@pytest.mark.parametrize(
    "args",
    [
        ["scan", "--port", "/dev/null", "--host", "127.0.0.1"],
        ["scan", "--port", "/dev/null", "--units", "0-300"],
        ["scan", "--port", "/dev/null", "--baud", "fast"],
        ["alarms"],
        ["alarms", "--db", "x.sqlite", "--since", "2 weeks"],
        ["ack", "gw:1"],
        ["commission", "--gateway", "g"],
        ["write", "sl-04", "lamp_switch"],
        ["flash"],
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str], tmp_path: Path) -> None:
    r = edge(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Usage:" in r.stderr


def test_write_refuses_without_confirmation_and_read_only_points(
    sim: SimThread, tmp_path: Path
) -> None:
    lan = sim.server("lan")
    config = tmp_path / "gw.yaml"
    bus = {"type": "tcp", "host": lan["host"], "port": lan["port"]}
    bus["devices"] = [{"id": "g.b1-sl-004", "unit": 4, "profile": "streetlight"}]
    config.write_text(yaml.safe_dump({"gateway": "g", "site": "s", "buses": [bus]}))
    unconfirmed = edge("write", "g.b1-sl-004", "lamp_switch", "on", "--config", str(config))
    assert unconfirmed.returncode == 2
    assert "--yes" in unconfirmed.stderr
    read_only = edge("write", "g.b1-sl-004", "voltage", "230", "--config", str(config), "--yes")
    assert read_only.returncode == 2
    assert "lamp_switch, dimming" in read_only.stderr
    # The part after GATEWAY. names the device, as in commission (it was refused, exit 2).
    on = edge("write", "b1-sl-004", "lamp_switch", "on", "--config", str(config), "--yes")
    assert on.returncode == 0, on.stderr
    assert on.stdout.strip() == "g.b1-sl-004 lamp_switch = True (read back)"
    unknown = edge("write", "sl-04", "lamp_switch", "on", "--config", str(config), "--yes")
    assert unknown.returncode == 1
    assert unknown.stderr == "error: no device 'sl-04' on gateway g; its devices: g.b1-sl-004\n"
    dim = edge("write", "4", "dimming", "35", "--config", str(config), "--yes", "--json")
    assert dim.returncode == 0, dim.stderr
    assert json.loads(dim.stdout) == {
        "device": "g.b1-sl-004",
        "unit": 4,
        "point": "dimming",
        "written": 35,
        "read_back": 35,
        "point_unit": "%",
        "ok": True,
    }
    # A value between two steps is refused before anything is written (it used to write 40,
    # then say the read-back was wrong, exit 1).
    half = edge("write", "g.b1-sl-004", "dimming", "40.5", "--config", str(config), "--yes")
    assert half.returncode == 2, half.stderr
    assert "40.5 is between two of the steps it holds" in half.stderr
    assert sim.call(lambda: sim.sim.device("sl-b").values()["dimming"]) == 35
