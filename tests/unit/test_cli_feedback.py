"""What the command lines tell a person: the demo banner, an unexpected error."""

import shlex
import sys
from pathlib import Path

import pytest

from lifeline.cli import describe_error
from lifeline.demo import _banner, command_name
from lifeline.edge.cli_output import local_time

pytestmark = pytest.mark.unit


def test_demo_banner_shows_the_first_reading_in_local_time_and_both_key_headers() -> None:
    ts_ms = 1_795_000_000_123
    reading = {"device": "mh-e01", "point": "tilt_x", "value": 0.4, "ts_ms": ts_ms}
    text = _banner("http://127.0.0.1:8080", reading, Path(".lifeline/demo"), "llk_x", "lifeline")
    line = next(x for x in text.splitlines() if "first reading" in x)
    assert line.endswith(f"mh-e01.tilt_x = 0.4 at {local_time(ts_ms)}"), line
    assert str(ts_ms) not in text
    assert "X-API-Key: KEY or Authorization: Bearer KEY" in text


def test_an_unexpected_error_is_described_on_one_line() -> None:
    missing = FileNotFoundError(2, "No such file or directory", "/nodir/c.db")
    assert describe_error(missing) == "No such file or directory: /nodir/c.db"
    moved = OSError(18, "Invalid cross-device link", "/a", None, "/b")
    assert describe_error(moved) == "Invalid cross-device link: /a -> /b"
    assert describe_error(ValueError("first line\n  detail")) == "ValueError: first line"
    assert describe_error(RuntimeError()) == "RuntimeError"


def test_the_demo_names_lifeline_as_a_shell_in_its_folder_can_run_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = Path(sys.executable).parent / "lifeline"
    assert script.exists(), "the tests run from an installation with its `lifeline` script"
    assert command_name(str(script.parent)) == "lifeline"  # PATH finds this one
    monkeypatch.chdir(script.parents[2])  # the folder holding the venv, as scripts/demo.sh
    assert command_name(str(tmp_path)) == shlex.quote(str(script.relative_to(script.parents[2])))
    monkeypatch.chdir(tmp_path)  # elsewhere: the whole path
    assert command_name(str(tmp_path)) == shlex.quote(str(script))
