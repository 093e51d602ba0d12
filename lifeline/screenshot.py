"""The README's console screenshot: a headless Debian Chromium pointed at a running demo.

`python -m lifeline.screenshot` (scripts/screenshot.sh) runs the demo district for as long as the
scenario needs to raise its first alarms and open cases, then saves docs/img/console.png at
1 920 × 1 080. Selenium (a dev dependency) drives /usr/bin/chromium through chromedriver.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lifeline.broker import free_port
from lifeline.demo import http_json

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
OUT = Path(__file__).resolve().parents[1] / "docs" / "img" / "console.png"


@contextmanager
def chromium(width: int, height: int) -> Iterator[Any]:
    """A headless Chromium window of `width` × `height` CSS pixels, with no network but
    loopback; raises SystemExit with a one-line message if Chromium or chromedriver is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        raise SystemExit(f"{', '.join(missing)} not found: run scripts/setup.sh --tests")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="lifeline-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
        # Anything but loopback fails, so a page that needs the internet shows it.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.set_window_size(width, height)
        # --window-size counts the window; make the page's viewport the asked size.
        inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
        driver.set_window_size(2 * width - inner[0], 2 * height - inner[1])
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def main() -> int:
    """Run the demo, wait for cases, write the screenshot; the exit code says if it worked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--wait", type=float, default=150, help="seconds to wait for cases")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="lifeline-shot-"))
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "lifeline", "demo", "--http-port", str(port),
         "--state-dir", str(state), "--duration", str(args.wait + 120)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}"
    try:
        key_file = state / "admin.key"
        deadline = time.monotonic() + args.wait
        key = ""
        while time.monotonic() < deadline and demo.poll() is None:
            key = key_file.read_text().strip() if key_file.exists() else ""
            cases = http_json(f"{api}/api/v1/cases?open_only=true", key) if key else None
            if cases and len(cases["items"]) >= 2:
                break
            time.sleep(2)
        if not key:
            print(f"the demo did not start: see {state}/logs", file=sys.stderr)
            return 1
        with chromium(1920, 1080) as browser:
            browser.get(f"{api}/console#key={key}")
            time.sleep(8)  # the map, the lists and the statistics load
            browser.find_element("css selector", "#alarms tbody tr").click()
            time.sleep(3)  # the trend of the newest, most severe alarm
            args.out.parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(args.out))
        print(f"wrote {args.out}")
        return 0
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
