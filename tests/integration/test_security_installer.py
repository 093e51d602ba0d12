"""The installer's machine: what a tampered SD card or a careless argument must not make it do.

Each command runs as its own process (`python -m lifeline ...`), as an installer runs it; the
host files it must not touch live under the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lifeline.demo import MARKER, claim_state_dir
from tests.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.proof]

PASSWORD = "gw-Sekr1t-flash-never-print"


def lifeline(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m lifeline ARGS` to completion, capturing both streams."""
    return subprocess.run(
        [sys.executable, "-m", "lifeline", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "400"},  # usage errors on one line, not wrapped in a box
    )


def gateway_yaml(tmp: Path, **mqtt: object) -> Path:
    conf = {
        "gateway": "gw-a",
        "site": "s1",
        "mqtt": {"url": f"mqtt://127.0.0.1:{free_port()}", **mqtt},
        "buffer": {"path": str(tmp / "buffer.sqlite")},
        "buses": [{"type": "tcp", "host": "127.0.0.1", "port": free_port(),
                   "devices": [{"id": "mh-1", "unit": 1, "profile": "manhole_cover"}]}],
    }  # fmt: skip
    path = tmp / "gw.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def flash(tmp: Path, card: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    (tmp / "pw.txt").write_text(PASSWORD + "\n")
    (tmp / "unit.service").write_text("[Service]\nExecStart=/bin/true\n")
    return lifeline("edge", "flash", str(card), "--config", str(gateway_yaml(tmp)),
                    "--username", "gw-a", "--password-file", str(tmp / "pw.txt"),
                    "--unit-file", str(tmp / "unit.service"), *extra)  # fmt: skip


@pytest.mark.parametrize(
    "link",
    [
        "etc",  # the whole /etc of the card is the host's
        "etc/lifeline/gateway.yaml",  # the config file is a host file
        "etc/systemd/system",  # the unit would land in the host's own unit directory
        "etc/hostname",
    ],
)
def test_flash_refuses_a_card_whose_paths_lead_off_it(tmp_path: Path, link: str) -> None:
    """Issue 17: a symlink on the card made flash overwrite a host file and report success."""
    host = tmp_path / "host"
    (host / "lifeline").mkdir(parents=True)
    (host / "systemd" / "system").mkdir(parents=True)
    victim = {
        "etc": host,
        "etc/lifeline/gateway.yaml": host / "passwd",
        "etc/systemd/system": host / "systemd" / "system",
        "etc/hostname": host / "hostname",
    }[link]
    for f in ("passwd", "hostname"):
        (host / f).write_text(f"host {f}\n")
    before = {p: p.read_bytes() for p in host.rglob("*") if p.is_file()}
    card = tmp_path / "card"
    (card / link).parent.mkdir(parents=True, exist_ok=True)
    (card / link).symlink_to(victim)
    for extra in ((), ("--dry-run",)):
        run = flash(tmp_path, card, *extra)
        assert run.returncode == 1, run.stdout + run.stderr
        assert f"refusing to flash {card}: {card / link} is a symlink (to {victim})" in run.stderr
        assert "Traceback" not in run.stderr
    after = {p: p.read_bytes() for p in host.rglob("*") if p.is_file()}
    assert after == before
    assert not any(PASSWORD in p.read_text() for p in host.rglob("*") if p.is_file())


def test_flash_writes_through_real_directories_and_verifies(tmp_path: Path) -> None:
    card = tmp_path / "card"
    card.mkdir()
    run = flash(tmp_path, card)
    assert run.returncode == 0, run.stderr
    config = card / "etc/lifeline/gateway.yaml"
    assert not config.is_symlink()
    assert os.stat(config).st_mode & 0o777 == 0o600
    assert os.readlink(card / "etc/systemd/system/multi-user.target.wants/lifeline-edge.service")


def test_flash_refuses_a_gateway_without_credentials_unless_told(tmp_path: Path) -> None:
    """Issue 17: `edge flash` writes secure configs by default."""
    card = tmp_path / "card"
    card.mkdir()
    unit = tmp_path / "unit.service"
    unit.write_text("[Service]\nExecStart=/bin/true\n")
    bare = ["edge", "flash", str(card), "--unit-file", str(unit), "--config"]
    anonymous = lifeline(*bare, str(gateway_yaml(tmp_path)))
    assert anonymous.returncode == 2
    assert "a flashed gateway proves who it is to its broker" in anonymous.stderr
    demo = lifeline(*bare, str(gateway_yaml(tmp_path, username="gw-a", password="x",
                                            allow_anonymous_commands=True)))  # fmt: skip
    assert demo.returncode == 0, demo.stderr  # authenticated: the setting changes nothing
    demo_anon = lifeline(*bare, str(gateway_yaml(tmp_path, allow_anonymous_commands=True)))
    assert demo_anon.returncode == 2
    assert not list((card / "etc/lifeline").glob("*.lifeline-tmp"))
    told = lifeline(*bare, str(gateway_yaml(tmp_path)), "--anonymous")
    assert told.returncode == 0, told.stderr


SCAN = {
    "target": {"type": "tcp", "host": "127.0.0.1", "port": 502},
    "devices": [{"unit": 1, "baudrate": None, "parity": None, "profile": "streetlight",
                 "family": "streetlight", "vendor": "v", "model": "m", "firmware": "1.2",
                 "values": {}, "error": ""}],
}  # fmt: skip
FACTS = ["--gateway", "gw-sec", "--site", "s1"]


def test_credentials_in_a_broker_url_are_refused_and_never_printed(tmp_path: Path) -> None:
    """Issue 17: `--mqtt mqtt://user:pass@host` was silently ignored and logged in clear."""
    secret = "url-Pa55-never-print"
    scan = tmp_path / "scan.json"
    scan.write_text(json.dumps(SCAN))
    config = gateway_yaml(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["mqtt"]["url"] = f"mqtt://gw-a:{secret}@127.0.0.1:1883"
    config.write_text(yaml.safe_dump(data))
    runs = {
        "collector": lifeline("collector", "run", "--mqtt", f"mqtt://col:{secret}@127.0.0.1:1",
                              "--db", f"sqlite:///{tmp_path}/c.db", "--http", "127.0.0.1:0"),
        "commission": lifeline("edge", "commission", "--scan-json", str(scan), *FACTS,
                               "--broker", f"mqtt://gw:{secret}@127.0.0.1:1883", "-o", "-"),
        "validate": lifeline("edge", "validate", "--config", str(config)),
    }  # fmt: skip
    for name, run in runs.items():
        assert run.returncode in (1, 2), (name, run.stdout, run.stderr)
        assert secret not in run.stdout + run.stderr, name
        assert "Traceback" not in run.stderr, name
    assert "--mqtt-username" in runs["collector"].stderr
    assert "edge flash --username" in runs["commission"].stderr
    assert "mqtt.username and mqtt.password" in runs["validate"].stdout + runs["validate"].stderr


def test_a_deeply_nested_scan_file_is_refused_in_one_line(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    run = lifeline("edge", "commission", "--scan-json", str(deep), *FACTS,
                   "--broker", "mqtt://127.0.0.1:1883", "-o", "-")  # fmt: skip
    assert run.returncode == 1
    assert f"error: {deep} nests arrays or objects thousands deep: not scan JSON" in run.stderr
    assert "Recursion" not in run.stderr


def test_demo_empties_only_a_folder_it_made(tmp_path: Path) -> None:
    """Issue 17: `lifeline demo --state-dir DIR` deleted DIR recursively without asking."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work\n")
    run = lifeline("demo", "--state-dir", str(home), "--duration", "1")
    assert run.returncode == 1
    assert "holds files the demo did not make" in run.stderr
    assert (home / "thesis.tex").read_text() == "years of work\n"
    link = tmp_path / "link"
    link.symlink_to(home)
    assert "is not a folder (or is a symlink)" in claim_state_dir(link)
    assert (home / "thesis.tex").exists()
    ours = tmp_path / "demo"
    assert claim_state_dir(ours) == ""  # a new folder: made and marked
    (ours / "collector.db").write_text("old district")
    assert claim_state_dir(ours) == ""  # its own: emptied for a clean district
    assert sorted(p.name for p in ours.iterdir()) == [MARKER]
