"""A full disk at the edge (issue 13 item 7), on a real filesystem that fills up.

The gateway process runs in a mount namespace of its own (`unshare --mount`) with its buffer on a
4 MiB tmpfs: the very ENOSPC an SD card gives, without touching the machine's filesystems (the
mount vanishes with the process). The test writes into that tmpfs through /proc/<pid>/root and
runs the crew CLI inside the namespace with `nsenter` (SQLite resolves symbolic links itself,
/proc/<pid>/root included, and would look outside). Reproduced on main: "database or disk is
full" killed the pollers, the flusher, housekeeping and the uplink; the process stayed alive
doing nothing, the gas alarm was never raised, and SIGTERM exited 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lifeline.wire import AlarmBatch, Status
from tests.e2e.test_edge_gateway import (
    Subscriber,
    gateway_config,
    set_sim_value,
    simulator,
    wait_for,
)

pytestmark = [pytest.mark.e2e]

TMPFS = "4m"


def gateway_on_tmpfs(config: Path, mount: Path, log: Path) -> subprocess.Popen[bytes]:
    """`lifeline edge run` with `mount` a fresh tmpfs seen by this process only."""
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs in a private mount namespace needs root")
    argv = [
        sys.executable,
        "-c",
        "from lifeline.edge.cli import app; app()",
        "run",
        "--config",
        str(config),
    ]
    script = f'mount -t tmpfs -o size={TMPFS} tmpfs "$1" && shift && exec "$@"'
    wrapped = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
    with open(log, "ab") as err:
        return subprocess.Popen(
            [*wrapped, str(mount), *argv], stdout=subprocess.DEVNULL, stderr=err
        )


def crew(pid: int, buffer: Path, *command: str) -> Any:
    """`lifeline edge <command> --db <buffer> --json` in the mount namespace of process `pid`."""
    argv = [sys.executable, "-c", "from lifeline.edge.cli import app; app()", *command]
    argv += ["--db", str(buffer), "--json"]
    done = subprocess.run(
        ["nsenter", "--mount", "--target", str(pid), "--", *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout, done.stderr
    return json.loads(done.stdout)


def test_a_full_disk_evicts_telemetry_keeps_alarms_and_polling_and_stops_cleanly(
    tmp_path: Path, topic_root: str
) -> None:
    from tests.services import start_mosquitto

    mount = tmp_path / "mnt"
    mount.mkdir()
    devices = [{"id": "gas-01", "unit": 1, "profile": "gas_detector", "interval_s": 0.1}]
    devices += [
        {"id": f"mh-{i}", "unit": 1 + i, "profile": "manhole_cover", "interval_s": 0.05}
        for i in range(1, 5)
    ]
    sim_devices = [{"id": d["id"], "unit": d["unit"], "profile": d["profile"]} for d in devices]
    with start_mosquitto() as broker, simulator(tmp_path, sim_devices) as eps:
        sub = Subscriber(broker.url, topic_root)
        broker.stop()  # the 4G link is down: everything piles up in the buffer
        port = eps["servers"][0]["port"]
        config = gateway_config(tmp_path, broker.url, topic_root, port, devices)
        text = config.read_text().replace(str(tmp_path / "buffer.sqlite"), str(mount / "b.sqlite"))
        config.write_text(text)
        log = tmp_path / "gateway.log"
        proc = gateway_on_tmpfs(config, mount, log)
        inside = Path(f"/proc/{proc.pid}/root") / mount.relative_to("/")
        buffer = mount / "b.sqlite"  # as the gateway (and crew() through nsenter) sees it

        def evicted() -> int:
            return int(crew(proc.pid, buffer, "status")["buffer"]["evicted_readings"])

        try:
            wait_for((inside / "b.sqlite").exists, 20, "the buffer on the tmpfs")
            # Leave the buffer some 600 KiB: the disk fills within seconds, not minutes.
            st = os.statvfs(inside)
            ballast = inside / "ballast"
            with open(ballast, "wb") as f:
                os.posix_fallocate(f.fileno(), 0, st.f_bavail * st.f_frsize - 600 * 1024)

            def free() -> int:
                st = os.statvfs(inside)
                return st.f_bavail * st.f_frsize

            wait_for(lambda: free() < 64 * 1024, 60, "the disk to fill up")
            time.sleep(1)
            set_sim_value(eps, "gas-01", "gas_concentration", 30.0)
            wait_for(
                lambda: any(a["type"] == "hi" for a in crew(proc.pid, buffer, "alarms")),
                15,
                "the gas alarm on a full disk",
            )
            full = crew(proc.pid, buffer, "status")
            assert full["buffer"]["disk_full_since"] is not None
            assert any("disk under the buffer is full" in p for p in full["problems"])
            # Still polling: readings keep coming in (and the oldest keep going out).
            before = evicted()
            wait_for(lambda: evicted() > before, 15, "more evictions")

            broker.start()  # the link is back: the alarm first, the full disk in the status
            wait_for(
                lambda: any(
                    isinstance(m, AlarmBatch) and any(e.alarm_type == "hi" for e in m.events)
                    for m in list(sub.messages)
                ),
                30,
                "the alarm at the broker",
            )
            wait_for(
                lambda: any(
                    isinstance(m, Status) and m.counters.get("disk_full") == 1
                    for m in list(sub.messages)
                ),
                30,
                "a status message saying the disk is full",
            )

            ballast.unlink()  # the operator frees space
            wait_for(lambda: "has room again" in log.read_text(), 15, "the end of the full disk")
            wait_for(
                lambda: crew(proc.pid, buffer, "status")["buffer"]["disk_full_since"] is None,
                10,
                "edge status to show the disk has room",
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(20)
            sub.close()
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert text.count("disk full under the buffer") == 1, text[-3000:]
    assert text.count("has room again (") == 1
    assert "Traceback" not in text


def test_a_buffer_on_a_disk_full_from_the_start_is_refused_clearly(tmp_path: Path) -> None:
    """No room even to create the buffer: exit 1 with the reason, no traceback."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    devices = [{"id": "gas-01", "unit": 1, "profile": "gas_detector"}]
    config = gateway_config(tmp_path, "mqtt://127.0.0.1:1", "t/lifeline", 1, devices)
    config.write_text(
        config.read_text().replace(str(tmp_path / "buffer.sqlite"), str(mount / "b.sqlite"))
    )
    argv = [
        sys.executable,
        "-c",
        "from lifeline.edge.cli import app; app()",
        "run",
        "--config",
        str(config),
    ]
    fill = f'fallocate -l {TMPFS} "$1/ballast" 2>/dev/null; head -c 4194304 /dev/zero > "$1/z"'
    script = f'mount -t tmpfs -o size={TMPFS} tmpfs "$1" && ({fill}; true) && shift && exec "$@"'
    done = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            str(mount),
            *argv,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "its buffer " in done.stderr
    assert "cannot be used" in done.stderr
    assert "database or disk is full" in done.stderr
    assert "Traceback" not in done.stderr
