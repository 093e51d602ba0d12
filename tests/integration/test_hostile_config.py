"""Hostile config files: every one gets a clear error naming the file, exit 1/2, no traceback.

Truncated YAML, wrong types, binary garbage, a billion-laughs alias bomb, a huge file, an
empty file and a list instead of a mapping, fed to the gateway (`edge validate`, `edge run`)
and to the collector (`collector run --config`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lifeline.collector.cli import app as collector_app
from lifeline.edge.cli import app as edge_app

pytestmark = [pytest.mark.integration, pytest.mark.proof]


def _bomb() -> str:
    """Billion laughs: nine levels of nine aliases (9^9 strings if anything expands it)."""
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for name in "bcdefghi":
        text += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]\n"
        prev = name
    return text


HOSTILE: dict[str, bytes] = {
    "truncated": b'gateway: gw-1\nsite: s1\nbuses:\n  - type: tcp\n    host: "127.0',
    "wrong-types": b"gateway: 12\nsite: [1, 2]\nbuses: yes\nmqtt: {inflight: lots}\n",
    "garbage": bytes(range(256)) * 8 + os.urandom(1024),
    "bomb": _bomb().encode(),
    "bomb-in-fields": (_bomb() + "gateway: *i\nsite: *i\nbuses: *i\nmqtt: *i\n").encode(),
    "huge": b"gateway: gw-1\nsite: s1\n# " + b"x" * (3 * 1024 * 1024) + b"\n",
    "empty": b"",
    "a-list": b"- 1\n- 2\n",
    "nul-bytes": b"gateway: gw\x00-1\nsite: s1\n",
    # A location that is no place: NaN, infinity, a terminal escape for an address, a datum
    # nobody uses, and an alarm ladder upside down.
    "no-place": (
        b"gateway: gw-1\nsite: s1\nlocation: {lon: .nan, lat: 1e999, datum: Tokyo, "
        b'address: "\\e[2J\\e[31mpwned"}\nbuses:\n  - type: tcp\n    host: h\n    devices:\n'
        b"      - {id: d, unit: 1, profile: gas_detector, baselines: {x: .inf}, alarms: "
        b"{gas_concentration: [{type: hi, limit: 20, severity: 1}, "
        b"{type: hihi, limit: 50, severity: 4}]}}\n"
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_gateway_rejects_hostile_config_clearly(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(HOSTILE[name])
    runner = CliRunner()
    for argv, code in ((["validate", "--config", str(path)], 1), (["run", "-c", str(path)], 2)):
        result = runner.invoke(edge_app, argv)
        assert result.exit_code == code, (argv, result.output)
        assert isinstance(result.exception, SystemExit), result.exception
        assert "Traceback" not in result.output
        assert str(path) in result.output
        assert "invalid gateway config" in result.output


@pytest.mark.parametrize("name", sorted(set(HOSTILE) - {"empty"}))
def test_collector_rejects_hostile_config_clearly(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(HOSTILE[name])
    result = CliRunner().invoke(collector_app, ["run", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert "--config" in result.output
