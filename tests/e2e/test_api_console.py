"""The live console in headless Chromium: a gas leak in firmware-sim appears as an alarm row."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from firmware_sim.control import SimControl
from lifeline.broker import free_port
from lifeline.demo import Child, gateway_config, http_json, spawn, start_simulator, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser() -> Iterator[object]:
    """Headless Debian Chromium driven by selenium; fails (never skips) if either is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: run scripts/setup.sh --tests (installs them)")
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
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_a_gas_leak_appears_in_the_live_console(
    browser: object, tmp_path: Path, mqtt_url: str, topic_root: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

    assert isinstance(browser, WebDriver)
    logs = tmp_path / "logs"
    logs.mkdir()
    children: list[Child] = []
    try:
        endpoints = start_simulator("demo", tmp_path, logs, children)
        conf = gateway_config(endpoints, mqtt_url, tmp_path / "edge.sqlite")
        conf["mqtt"]["root"] = topic_root
        gw_file = tmp_path / "gateway.yaml"
        gw_file.write_text(yaml.safe_dump(conf, allow_unicode=True))
        port = free_port()
        api = f"http://127.0.0.1:{port}"
        key_file = tmp_path / "admin.key"
        children.append(
            spawn(
                "collector",
                ["collector", "run", "--mqtt", mqtt_url, "--root", topic_root,
                 "--db", f"sqlite:///{tmp_path}/c.db", "--http", f"127.0.0.1:{port}",
                 "--client-id", f"console-{tmp_path.name}", "--bootstrap-key-file", str(key_file)],
                logs,
            )
        )  # fmt: skip
        wait_until("collector API", lambda: http_json(f"{api}/readyz"), 60, children)
        key = key_file.read_text().strip()
        children.append(spawn("gateway", ["edge", "run", "--config", str(gw_file)], logs))
        wait_until(
            "gas-e01 online",
            lambda: any(
                d["device"] == "gas-e01" and d["status"] == "online"
                for d in http_json(f"{api}/api/v1/devices", key) or []
            ),
            60,
            children,
        )

        browser.get(f"{api}/console#key={key}")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.find_element(By.ID, "conn").get_attribute("class") == "conn on")
        assert "#key=" not in browser.current_url  # the key leaves the address bar
        rows = browser.find_elements(By.CSS_SELECTOR, '#alarms tr[data-device="gas-e01"]')
        assert rows == []

        control = endpoints["control"]

        async def leak() -> None:
            async with SimControl(control["host"], control["port"]) as sim:
                await sim.set_value("gas-e01", "gas_concentration", 60.0)

        asyncio.run(leak())
        row = wait.until(
            lambda d: d.find_elements(By.CSS_SELECTOR, '#alarms tr[data-device="gas-e01"]')
        )[0]
        assert row.get_attribute("data-state") == "active_unacked"
        assert "gas_concentration" in row.text
        # The case the leak opened shows up too, and the labels switch to English.
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#cases tbody tr"))
        browser.find_element(By.ID, "lang").click()
        assert browser.find_element(By.CSS_SELECTOR, "#alarms-section h2").text == "Live alarms"
    finally:
        for child in reversed(children):
            child.stop()
