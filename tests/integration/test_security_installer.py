"""The installer's machine: what a tampered SD card or a careless argument must not make it do.

Each command runs as its own process (`python -m lifeline ...`), as an installer runs it; the
host files it must not touch live under the test's temporary directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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
