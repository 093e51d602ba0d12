"""The demo district: firmware-sim, a gateway, a broker and the collector as separate processes."""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from lifeline.broker import PrivateBroker, free_port
from lifeline.collector.keys import KEY_HEADERS
from lifeline.edge.cli_output import local_time

CONFIG = files("lifeline.config")
DEMO_DISTRICT = "330106"  # 杭州市西湖区: the area of the demo's assets, for cases without one


@dataclass
class Child:
    """One program of the district, started as `python -m lifeline ...` with its log in a file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM (programs flush and exit cleanly), SIGKILL if it takes too long."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spawn(name: str, args: list[str], logs: Path) -> Child:
    """Start `lifeline ARGS` in a child process that logs to logs/NAME.log."""
    log = logs / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lifeline", *args], stdout=out, stderr=subprocess.STDOUT
        )
    return Child(name, proc, log)


def wait_until(what: str, check: Any, timeout: float, children: list[Child]) -> Any:
    """Poll `check()` until it returns something truthy; fail early if a child died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children:
            if not child.alive():
                raise RuntimeError(f"{child.name} exited while waiting for {what}: see {child.log}")
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def http_json(url: str, key: str | None = None) -> Any:
    """GET url (with API key `key`, if given) and parse JSON, or None if nothing answers (yet)."""
    request = urllib.request.Request(url, headers={"X-API-Key": key} if key else {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:  # noqa: S310 - our loopback API
            return json.loads(resp.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return None


def start_simulator(
    scenario: str, workdir: Path, logs: Path, children: list[Child]
) -> dict[str, Any]:
    """Start firmware-sim serving `scenario`; return its endpoints (workdir/sim-endpoints.json)."""
    endpoints_file = workdir / "sim-endpoints.json"
    args = ["sim", "run", "--scenario", scenario, "--endpoints-file", str(endpoints_file)]
    children.append(spawn("firmware-sim", args, logs))
    endpoints: dict[str, Any] = wait_until(
        "the simulator's endpoints",
        lambda: endpoints_file.exists() and json.loads(endpoints_file.read_text()),
        30,
        children,
    )
    return endpoints


def gateway_config(endpoints: dict[str, Any], broker_url: str, buffer: Path) -> dict[str, Any]:
    """The shipped demo gateway config, pointed at this run's broker and simulator ports."""
    conf: dict[str, Any] = yaml.safe_load((CONFIG / "examples" / "gateway-demo.yaml").read_text())
    servers = {s["name"]: s for s in endpoints["servers"]}
    conf["mqtt"]["url"] = broker_url
    conf["buffer"]["path"] = str(buffer)
    for bus in conf["buses"]:
        server = servers[bus["name"]]
        bus["host"], bus["port"] = server["host"], server["port"]
    return conf


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# The file that makes a folder the demo's own: only such a folder (or an empty one) is emptied.
MARKER = ".lifeline-demo"


def claim_state_dir(state_dir: Path) -> str:
    """Make `state_dir` an empty folder marked as the demo's; '' if done, else why not.

    Each demo starts from a clean district, so it deletes what a previous demo left, but only
    in a folder holding its MARKER (or an empty one): `--state-dir ~` once deleted a home.
    """
    if state_dir.is_symlink() or (state_dir.exists() and not state_dir.is_dir()):
        return f"--state-dir {state_dir} is not a folder (or is a symlink): name a folder"
    if state_dir.exists():
        marker = state_dir / MARKER
        if (marker.is_symlink() or not marker.is_file()) and any(state_dir.iterdir()):
            return (
                f"--state-dir {state_dir} holds files the demo did not make (no {MARKER} in it), "
                "and the demo empties its folder: name a new or empty folder"
            )
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)
    (state_dir / MARKER).write_text("made by `lifeline demo`: it empties this folder at start\n")
    return ""


def run_demo(state_dir: Path, http_port: int, duration: float | None) -> int:
    """Bring up the district, print where to look, run until Ctrl-C or `duration`; exit code."""
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops the district as cleanly as Ctrl-C
    problem = claim_state_dir(state_dir)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    logs = state_dir / "logs"
    logs.mkdir(parents=True)
    if http_port == 0 or not _port_is_free(http_port):
        if http_port:
            print(f"port {http_port} is taken; using a free one instead")
        http_port = free_port()
    api = f"http://127.0.0.1:{http_port}"
    children: list[Child] = []
    with ExitStack() as stack:
        broker = PrivateBroker(state_dir / "broker")
        broker.start()
        stack.callback(broker.stop)
        stack.callback(_stop_all, children)

        endpoints = start_simulator("demo", state_dir, logs, children)
        gw_file = state_dir / "gateway.yaml"
        gw_conf = gateway_config(endpoints, broker.url, state_dir / "edge-buffer.sqlite")
        gw_file.write_text(yaml.safe_dump(gw_conf, allow_unicode=True, sort_keys=False))

        collector_args = [
            "collector",
            "run",
            "--mqtt",
            broker.url,
            "--http",
            f"127.0.0.1:{http_port}",
            "--db",
            f"sqlite:///{state_dir}/collector.db",
            "--bootstrap-key-file",
            str(state_dir / "admin.key"),
            "--district",
            DEMO_DISTRICT,
        ]
        assets = Path(str(CONFIG / "assets" / "demo.yaml"))
        if assets.exists():
            collector_args += ["--assets", str(assets)]
        children.append(spawn("collector", collector_args, logs))
        wait_until("the collector API", lambda: http_json(f"{api}/readyz"), 60, children)
        key = (state_dir / "admin.key").read_text().strip()
        children.append(spawn("gateway", ["edge", "run", "--config", str(gw_file)], logs))
        first = wait_until(
            "the first reading at the collector",
            lambda: http_json(f"{api}/api/v1/readings?device=mh-e01&limit=1", key),
            60,
            children,
        )
        print(_banner(api, first[0], state_dir, key, command_name()), flush=True)
        return _supervise(children, duration)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _stop_all(children: list[Child]) -> None:
    for child in reversed(children):
        child.stop()


def command_name(search_path: str | None = None) -> str:
    """How a shell in the working folder runs this installation's `lifeline` command.

    `search_path` is a PATH to look in (default: the environment's). Returns the bare name when
    that PATH finds this very installation's script, else the script's path (relative to the
    working folder when it lies below it, e.g. `.venv/bin/lifeline`, shell-quoted), else
    `PYTHON -m lifeline`: scripts/demo.sh runs the venv's script, which no PATH names.
    """
    script = Path(sys.executable).parent / "lifeline"
    found = shutil.which("lifeline", path=search_path)
    if found is not None and script.exists() and Path(found).resolve() == script.resolve():
        return "lifeline"
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m lifeline"
    try:
        shown = script.absolute().relative_to(Path.cwd())
    except ValueError:
        shown = script.absolute()
    return shlex.quote(str(shown))


def _banner(api: str, reading: dict[str, Any], state_dir: Path, key: str, cli: str) -> str:
    return "\n".join(
        [
            "",
            "Lifeline demo district is running: firmware-sim -> gateway gw-demo -> collector.",
            f"  live console    {api}/console#key={key}",
            f"  HTTP API        {api}/api/v1/readings?device=mh-e01&order=desc&limit=20",
            f"  API key         {state_dir}/admin.key (admin; send it as {KEY_HEADERS})",
            f"  API docs        {api}/docs",
            f"  gateways        {api}/api/v1/gateways",
            f"  health          {api}/healthz",
            f"  first reading   {reading['device']}.{reading['point']} = {reading['value']} "
            f"at {local_time(int(reading['ts_ms']))}",
            f"  logs and data   {state_dir}/",
            f"Trigger a gas leak:  {cli} sim trigger --endpoints-file "
            f"{state_dir}/sim-endpoints.json gas-e01 leak",
            "Press Ctrl-C to stop.",
            "",
        ]
    )


def _supervise(children: list[Child], duration: float | None) -> int:
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while deadline is None or time.monotonic() < deadline:
            for child in children:
                if not child.alive():
                    print(f"{child.name} exited unexpectedly: see {child.log}", file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("stopping the district ...")
    return 0
