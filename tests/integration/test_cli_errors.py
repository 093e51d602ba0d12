"""Every `lifeline` command meets a missing folder, an unwritable file and a busy port with one
clear error line and an exit status, never a traceback.

The commands run as the installed entry point does (`python -m lifeline`), so the one place that
turns OS and library errors into a line (lifeline.cli.main) is what is tested. "Unwritable" is a
folder standing where a file is to be read or written: that refuses root too. "Busy" is a
loopback port held by something else, which accepts a connection and closes it at once: a
server cannot bind it, a client finds no peer of its kind there.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
import yaml

from lifeline.cli import app

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Rig:
    root: Path  # a scratch folder
    missing: Path  # a folder that does not exist
    blocker: Path  # a folder where a file is expected
    busy: int  # a loopback port something else holds

    def config(self, name: str, **changes: object) -> Path:
        """A valid gateway config whose broker and device sit on the busy port."""
        data: dict[str, object] = {
            "gateway": "gw-err",
            "site": "test",
            "mqtt": {"url": f"mqtt://127.0.0.1:{self.busy}"},
            "buffer": {"path": str(self.root / "buf.sqlite")},
            "buses": [
                {
                    "type": "tcp",
                    "name": "lan",
                    "host": "127.0.0.1",
                    "port": self.busy,
                    "devices": [{"id": "sl-1", "unit": 1, "profile": "streetlight"}],
                }
            ],
            **changes,
        }
        path = self.root / name
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path


Case = Callable[[Rig], list[str]]
FAULTS = ("missing folder", "unwritable file", "busy port")

SCAN_JSON = {
    "target": {"type": "tcp", "host": "127.0.0.1", "port": 502},
    "devices": [
        {
            "unit": 1,
            "baudrate": None,
            "parity": None,
            "profile": "streetlight",
            "family": "streetlight",
            "vendor": "v",
            "model": "m",
            "firmware": "1.2",
            "values": {},
            "error": "",
        }
    ],
}
FACTS = ["--gateway", "gw-err", "--site", "test", "--broker", "mqtt://127.0.0.1:1883"]


def _scan_file(r: Rig) -> str:
    path = r.root / "scan.json"
    path.write_text(json.dumps(SCAN_JSON), encoding="utf-8")
    return str(path)


def _db(r: Rig, where: Path) -> list[str]:
    return ["--db", f"sqlite:///{where}"]


def _pg(r: Rig) -> list[str]:
    return ["--db", f"postgresql://postgres@127.0.0.1:{r.busy}/postgres"]


# command -> (missing folder, unwritable file, busy port); None where the fault cannot reach
# the command, with the reason in the comment.
CASES: dict[str, tuple[Case | None, Case | None, Case | None]] = {
    # demo creates its own state folder, and takes a free port when its own is busy
    "demo": (None, lambda r: ["demo", "--state-dir", str(r.root / "a-file")], None),
    "edge scan": (
        lambda r: ["edge", "scan", "--port", str(r.missing / "ttyUSB0")],
        lambda r: ["edge", "scan", "--port", str(r.blocker)],
        lambda r: ["edge", "scan", "--host", "127.0.0.1", "--tcp-port", str(r.busy)],
    ),
    "edge commission": (
        lambda r: ["edge", "commission", "--scan-json", str(r.missing / "s.json"), *FACTS],
        lambda r: [
            "edge",
            "commission",
            "--scan-json",
            _scan_file(r),
            *FACTS,
            "-o",
            str(r.blocker),
        ],
        lambda r: ["edge", "commission", "--host", "127.0.0.1", "--tcp-port", str(r.busy), *FACTS],
    ),
    # flash writes onto a mounted card: no network
    "edge flash": (
        lambda r: ["edge", "flash", str(r.missing), "-c", str(r.config("f.yaml"))],
        lambda r: ["edge", "flash", str(r.root), "-c", str(r.blocker)],
        None,
    ),
    "edge check": (
        lambda r: ["edge", "check", "-c", str(r.missing / "gw.yaml")],
        lambda r: ["edge", "check", "-c", str(r.blocker)],
        lambda r: ["edge", "check", "-c", str(r.config("c.yaml")), "--broker-timeout", "1"],
    ),
    # the crew commands read a buffer file: no network
    "edge alarms": (
        lambda r: ["edge", "alarms", "--db", str(r.missing / "b.sqlite")],
        lambda r: ["edge", "alarms", "--db", str(r.blocker)],
        None,
    ),
    "edge ack": (
        lambda r: ["edge", "ack", "gw:1", "--by", "x", "--db", str(r.missing / "b.sqlite")],
        lambda r: ["edge", "ack", "gw:1", "--by", "x", "--db", str(r.blocker)],
        None,
    ),
    "edge status": (
        lambda r: ["edge", "status", "--db", str(r.missing / "b.sqlite")],
        lambda r: ["edge", "status", "--db", str(r.blocker)],
        None,
    ),
    "edge tail": (
        lambda r: ["edge", "tail", "--db", str(r.missing / "b.sqlite")],
        lambda r: ["edge", "tail", "--db", str(r.blocker)],
        None,
    ),
    "edge write": (
        lambda r: ["edge", "write", "sl-1", "dimming", "50", "-y", "-c", str(r.missing / "g")],
        lambda r: ["edge", "write", "sl-1", "dimming", "50", "-y", "-c", str(r.blocker)],
        lambda r: ["edge", "write", "sl-1", "dimming", "50", "-y", "-c", str(r.config("w.yaml"))],
    ),
    # a gateway creates its buffer's folder, and retries a busy broker or device port (edge
    # status shows it)
    "edge run": (
        None,
        lambda r: ["edge", "run", "-c", str(r.config("r2.yaml", buffer={"path": str(r.blocker)}))],
        None,
    ),
    "edge validate": (
        lambda r: ["edge", "validate", "-c", str(r.missing / "gw.yaml")],
        lambda r: ["edge", "validate", "-c", str(r.blocker)],
        None,
    ),
    "collector run": (
        lambda r: ["collector", "run", *_db(r, r.missing / "c.db"), "--http", "127.0.0.1:0"],
        lambda r: ["collector", "run", *_db(r, r.blocker), "--http", "127.0.0.1:0"],
        lambda r: [
            "collector",
            "run",
            *_db(r, r.root / "run.db"),
            "--http",
            f"127.0.0.1:{r.busy}",
            "--mqtt",
            f"mqtt://127.0.0.1:{r.busy}",
        ],
    ),
    "collector migrate": (
        lambda r: ["collector", "migrate", *_db(r, r.missing / "c.db")],
        lambda r: ["collector", "migrate", *_db(r, r.blocker)],
        lambda r: ["collector", "migrate", *_pg(r)],
    ),
    "collector assets import": (
        lambda r: ["collector", "assets", "import", str(r.missing / "a.csv")],
        lambda r: ["collector", "assets", "import", str(r.blocker)],
        lambda r: ["collector", "assets", "import", str(_assets()), *_pg(r)],
    ),
    "collector keys create": (
        lambda r: [
            "collector",
            "keys",
            "create",
            "--role",
            "admin",
            "--name",
            "x",
            *_db(r, r.missing / "c.db"),
        ],
        lambda r: [
            "collector",
            "keys",
            "create",
            "--role",
            "admin",
            "--name",
            "x",
            *_db(r, r.blocker),
        ],
        lambda r: ["collector", "keys", "create", "--role", "admin", "--name", "x", *_pg(r)],
    ),
    "collector keys list": (
        lambda r: ["collector", "keys", "list", *_db(r, r.missing / "c.db")],
        lambda r: ["collector", "keys", "list", *_db(r, r.blocker)],
        lambda r: ["collector", "keys", "list", *_pg(r)],
    ),
    "collector keys revoke": (
        lambda r: ["collector", "keys", "revoke", "1", *_db(r, r.missing / "c.db")],
        lambda r: ["collector", "keys", "revoke", "1", *_db(r, r.blocker)],
        lambda r: ["collector", "keys", "revoke", "1", *_pg(r)],
    ),
    "collector departments list": (
        lambda r: ["collector", "departments", "list", *_db(r, r.missing / "c.db")],
        lambda r: ["collector", "departments", "list", *_db(r, r.blocker)],
        lambda r: ["collector", "departments", "list", *_pg(r)],
    ),
    "collector departments add": (
        lambda r: ["collector", "departments", "add", "gas", "燃气", *_db(r, r.missing / "c.db")],
        lambda r: ["collector", "departments", "add", "gas", "燃气", *_db(r, r.blocker)],
        lambda r: ["collector", "departments", "add", "gas", "燃气", *_pg(r)],
    ),
    "collector departments rename": (
        lambda r: ["collector", "departments", "rename", "gas", "燃", *_db(r, r.missing / "c.db")],
        lambda r: ["collector", "departments", "rename", "gas", "燃", *_db(r, r.blocker)],
        lambda r: ["collector", "departments", "rename", "gas", "燃", *_pg(r)],
    ),
    "collector departments remove": (
        lambda r: ["collector", "departments", "remove", "gas", *_db(r, r.missing / "c.db")],
        lambda r: ["collector", "departments", "remove", "gas", *_db(r, r.blocker)],
        lambda r: ["collector", "departments", "remove", "gas", *_pg(r)],
    ),
    "sim run": (
        lambda r: ["sim", "run", "-s", str(r.missing / "sc.yaml")],
        lambda r: [
            "sim",
            "run",
            "-s",
            "demo",
            "--endpoints-file",
            str(r.blocker),
            "--duration",
            "5",
        ],
        lambda r: ["sim", "run", "-s", "demo", "--control-port", str(r.busy), "--duration", "5"],
    ),
    "sim trigger": (
        lambda r: ["sim", "trigger", "d", "open", "--endpoints-file", str(r.missing / "e.json")],
        lambda r: ["sim", "trigger", "d", "open", "--endpoints-file", str(r.blocker)],
        lambda r: ["sim", "trigger", "d", "open", "--control", f"127.0.0.1:{r.busy}"],
    ),
    "sim set": (
        lambda r: ["sim", "set", "d", "p", "1", "--endpoints-file", str(r.missing / "e.json")],
        lambda r: ["sim", "set", "d", "p", "1", "--endpoints-file", str(r.blocker)],
        lambda r: ["sim", "set", "d", "p", "1", "--control", f"127.0.0.1:{r.busy}"],
    ),
    "sim fault": (
        lambda r: ["sim", "fault", "d", "busy", "--endpoints-file", str(r.missing / "e.json")],
        lambda r: ["sim", "fault", "d", "busy", "--endpoints-file", str(r.blocker)],
        lambda r: ["sim", "fault", "d", "busy", "--control", f"127.0.0.1:{r.busy}"],
    ),
}


def _assets() -> Path:
    return Path(__file__).parents[2] / "config" / "assets" / "example.csv"


def _commands() -> list[str]:
    """Every command of `lifeline`, as `edge scan`, `collector keys create`, ..."""
    found: list[str] = []

    def walk(cmd: object, path: list[str]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs is None:
            found.append(" ".join(path))
            return
        for name, sub in subs.items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return sorted(found)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port held by a listener that closes every connection at once."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1]
    stop.set()
    thread.join(5)
    srv.close()


def test_every_command_is_in_the_table() -> None:
    assert sorted(CASES) == _commands()


def test_every_command_meets_a_missing_folder_an_unwritable_file_and_a_busy_port_with_one_line(
    tmp_path: Path, busy_port: int
) -> None:
    rig = Rig(tmp_path, tmp_path / "no-such-folder", tmp_path / "in-the-way", busy_port)
    rig.blocker.mkdir()
    (tmp_path / "a-file").write_text("not a folder\n")
    runs = [
        (f"{name} / {fault}", args)
        for name, cases in CASES.items()
        for fault, case in zip(FAULTS, cases, strict=True)
        if case is not None
        for args in [case(rig)]
    ]

    def run(args: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [sys.executable, "-m", "lifeline", *args],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tmp_path,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:  # still running: it did not fail at all
            return subprocess.CompletedProcess(args, -1, str(exc.output), str(exc.stderr))

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, [args for _, args in runs]))
    bad = []
    for (what, args), r in zip(runs, results, strict=True):
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        usage = r.returncode == 2 and "Usage:" in r.stderr
        if (
            "Traceback" in r.stderr + r.stdout
            or r.returncode not in (1, 2)
            or not (len(errors) == 1 or usage)
        ):
            bad.append(f"{what}: exit {r.returncode}, {args}\n{r.stderr[-1500:]}")
    assert not bad, "\n\n".join(bad)


@pytest.mark.parametrize("where", ["no-such-folder/e.json", "in-the-way"])
def test_sim_run_names_the_endpoints_file_it_was_given(tmp_path: Path, where: str) -> None:
    # The endpoints file is written through a temporary file beside it: an error used to name
    # that one (`No such file or directory: .../e.json.tmp`), a file the user never gave.
    (tmp_path / "in-the-way").mkdir()
    target = tmp_path / where
    args = ["sim", "run", "-s", "demo", "--endpoints-file", str(target), "--duration", "5"]
    r = subprocess.run(
        [sys.executable, "-m", "lifeline", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr
    assert errors[0].startswith(f"error: cannot write the endpoints file {target}: "), errors
    assert ".tmp" not in r.stderr
