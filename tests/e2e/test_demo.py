"""`lifeline demo` brings up the district on embedded defaults and prints a URL that answers."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lifeline.demo import http_json

pytestmark = pytest.mark.e2e


def test_demo_prints_an_api_url_that_serves_readings(tmp_path: Path) -> None:
    # Started as scripts/demo.sh starts it for a new user: by the venv's path, from a shell
    # whose PATH does not hold the venv (scripts/test.sh puts it there, a user's shell does not).
    venv_bin = Path(sys.executable).parent.resolve()
    user_path = os.pathsep.join(
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and Path(d).resolve() != venv_bin
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lifeline",
            "demo",
            "--http-port",
            "0",
            "--duration",
            "60",
            "--state-dir",
            str(tmp_path / "demo"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PATH": user_path},
    )
    try:
        assert proc.stdout is not None
        url = trigger = None
        for line in proc.stdout:  # the banner comes once the first reading is stored
            found = re.search(r"HTTP API\s+(http://\S+)", line)
            if found:
                url = found.group(1)
            if line.startswith("Trigger a gas leak:"):
                trigger = line.partition(":")[2].strip()
                break
        assert url is not None, "the demo never printed its API URL"
        key = (tmp_path / "demo" / "admin.key").read_text().strip()
        readings = http_json(url, key)
        assert readings, f"{url} did not answer with readings"
        assert {r["device"] for r in readings} == {"mh-e01"}
        # The trigger line works as printed, typed into a shell whose PATH has no venv (a new
        # user's, after scripts/demo.sh): it used to say `lifeline ...`, command not found.
        assert trigger is not None, "the demo never printed how to trigger a gas leak"
        done = subprocess.run(
            ["/bin/sh", "-c", trigger],
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, (trigger, done.stderr)
        assert done.stdout.strip() == "triggered leak on gas-e01", done.stdout
    finally:
        proc.terminate()
        assert proc.wait(30) == 0  # Ctrl-C/SIGTERM is a clean stop
