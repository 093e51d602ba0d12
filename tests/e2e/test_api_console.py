"""The command-center console in headless Debian Chromium, against the demo district run as
separate processes (firmware-sim -> gateway -> private broker -> collector with the demo's
assets). Chromium resolves no host but 127.0.0.1, so anything that needs the internet fails.
Screenshots go to each test's tmp_path for people to look at."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from lifeline.broker import free_port
from lifeline.demo import (
    CONFIG,
    DEMO_DISTRICT,
    Child,
    gateway_config,
    http_json,
    spawn,
    start_simulator,
    wait_until,
)
from lifeline.firmware_sim.control import SimControl
from lifeline.screenshot import chromium

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CJK = re.compile(r"[\u3400-\u9fff]")


@dataclass
class District:
    api: str
    key: str
    control: dict[str, Any]

    def get(self, path: str) -> Any:
        return http_json(f"{self.api}{path}", self.key)


@pytest.fixture(scope="module")
def district(mqtt_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[District]:
    """The demo district with its assets, on a topic root of its own; stopped afterwards."""
    tmp = tmp_path_factory.mktemp("district")
    logs = tmp / "logs"
    logs.mkdir()
    root = f"t-console-{tmp.name}/lifeline"
    children: list[Child] = []
    try:
        endpoints = start_simulator("demo", tmp, logs, children)
        conf = gateway_config(endpoints, mqtt_url, tmp / "edge.sqlite")
        conf["mqtt"]["root"] = root
        gw_file = tmp / "gateway.yaml"
        gw_file.write_text(yaml.safe_dump(conf, allow_unicode=True))
        port = free_port()
        api = f"http://127.0.0.1:{port}"
        key_file = tmp / "admin.key"
        children.append(
            spawn(
                "collector",
                ["collector", "run", "--mqtt", mqtt_url, "--root", root,
                 "--db", f"sqlite:///{tmp}/c.db", "--http", f"127.0.0.1:{port}",
                 "--client-id", f"console-{tmp.name}", "--bootstrap-key-file", str(key_file),
                 "--assets", str(CONFIG / "assets" / "demo.yaml"), "--district", DEMO_DISTRICT],
                logs,
            )
        )  # fmt: skip
        wait_until("collector API", lambda: http_json(f"{api}/readyz"), 60, children)
        key = key_file.read_text().strip()
        children.append(spawn("gateway", ["edge", "run", "--config", str(gw_file)], logs))
        wait_until(
            "every demo device online",
            lambda: (
                (devs := http_json(f"{api}/api/v1/devices", key))
                and len(devs) == 13
                and all(d["status"] == "online" for d in devs)
            ),
            90,
            children,
        )
        yield District(api, key, endpoints["control"])
    finally:
        for child in reversed(children):
            child.stop()


def set_value(district: District, device: str, point: str, value: float) -> None:
    async def write() -> None:
        async with SimControl(district.control["host"], district.control["port"]) as sim:
            await sim.set_value(device, point, value)

    asyncio.run(write())


def wait(browser: Any, what: str, check: Any, timeout: float = 30) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.05).until(check, what)


def css(browser: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    found: list[Any] = browser.find_elements(By.CSS_SELECTOR, selector)
    return found


def click(browser: Any, selector: str) -> None:
    """Click the element `selector` finds now: the desks redraw their rows on every event, so
    an element found earlier may be gone (stale) by the time it is clicked."""
    wait(browser, f"a clickable {selector}", lambda b: css(b, selector))
    browser.execute_script(
        "document.querySelector(arguments[0]).dispatchEvent("
        "new MouseEvent('click', {bubbles: true, cancelable: true, view: window}))",
        selector,
    )


def stat(browser: Any, name: str) -> str:
    """The figure of one statistics tile (the strip is redrawn as figures change)."""
    value: str = browser.execute_script(
        "const v = document.querySelector(`#stats [data-stat='${arguments[0]}'] .v`);"
        " return v ? v.textContent : '';",
        name,
    )
    return value


def open_console(browser: Any, district: District) -> None:
    browser.get(f"{district.api}/console#key={district.key}")
    wait(browser, "the live stream", lambda b: css(b, "#conn.on"))
    wait(browser, "the map's markers", lambda b: css(b, "path.mk[data-colour]"))


def expected_places(district: District) -> set[str]:
    """What the map must show: every asset with coordinates, and every device with its own
    install location that watches no located asset."""
    assets = {a["code"]: a for a in district.get("/api/v1/assets")}
    places = {f"asset:{code}" for code, a in assets.items() if a["lon"] is not None}
    for d in district.get("/api/v1/devices"):
        located = d["asset"] in assets and assets[d["asset"]]["lon"] is not None
        if not located and d["location"]:
            places.add(f"device:{d['gateway']}/{d['device']}")
    return places


def test_map_alarm_desk_ack_and_dispatch_through_the_buttons(
    district: District, tmp_path: Path
) -> None:
    with chromium(1920, 1080) as browser:
        open_console(browser, district)
        assert "#key=" not in browser.current_url  # the key leaves the address bar
        shown = {m.get_attribute("data-place") for m in css(browser, "path.mk")}
        assert shown == expected_places(district)
        assert len(shown) >= 12
        # The 单元网格 registry's polygons, one per grid.
        grids = district.get("/api/v1/grids")["features"]
        assert grids, "the demo's routing table names config/grids/330106.geojson"
        assert len(css(browser, "path.grid-cell")) == len(grids)
        # A marker's popup: the asset's name, address, latest values with units.
        cover = next(a for a in district.get("/api/v1/assets") if "mh-e01" in a["devices"])
        click(browser, f'path.mk[data-place="asset:{cover["code"]}"]')
        popup = wait(
            browser,
            "the popup's latest values",
            lambda b: (
                "deg"
                in (
                    text := b.execute_script(
                        "const p = document.querySelector('.leaflet-popup .popup');"
                        " return p ? p.textContent : '';"
                    )
                )
                and text
            ),
        )
        assert cover["name"] in popup
        assert cover["address"] in popup
        # Nothing of it is cut off by the map's edge.
        wait(
            browser,
            "the whole popup inside the map",
            lambda b: b.execute_script(
                "const p = document.querySelector('.leaflet-popup');"
                " const m = document.querySelector('#map').getBoundingClientRect();"
                " const r = p && p.getBoundingClientRect();"
                " return !!r && r.top >= m.top && r.bottom <= m.bottom"
                " && r.left >= m.left && r.right <= m.right;"
            ),
            5,
        )
        browser.save_screenshot(str(tmp_path / "1-map.png"))
        click(browser, ".leaflet-popup-close-button")
        # Assets carry their datum: GCJ-02 (高德) degrees move ~0.5 km onto a CGCS2000 map,
        # CGCS2000 ones stay put.
        moved = browser.execute_script(
            "return [toMap(120.1402, 30.2771, 'GCJ-02'), toMap(120.1402, 30.2771, 'CGCS2000')]"
        )
        assert moved[1] == [30.2771, 120.1402]
        assert 0.002 < abs(moved[0][0] - 30.2771) + abs(moved[0][1] - 120.1402) < 0.01

        # A gas leak in firmware-sim: marker red and alarm row within 3 s of the collector.
        marker = 'path.mk[data-devices~="gw-demo/gas-w01"]'
        assert css(browser, marker)[0].get_attribute("data-colour") == "green"
        set_value(district, "gas-w01", "gas_concentration", 60.0)
        critical = wait(
            browser,
            "the 一级 alarm at the collector",
            lambda _: [
                a
                for a in district.get("/api/v1/alarms?device=gas-w01&state=active")["items"]
                if a["severity"] == 1
            ],
            90,
        )[0]
        at_collector = time.monotonic()
        row_css = f'#alarms tr[data-alarm-id="{critical["alarm_id"]}"]'
        wait(browser, "the alarm row", lambda b: css(b, row_css), 3)
        wait(
            browser,
            "the red marker",
            lambda b: css(b, marker)[0].get_attribute("data-colour") == "red",
            max(0.1, 3 - (time.monotonic() - at_collector)),
        )
        row = browser.execute_script(
            "const r = document.querySelector(arguments[0]);"
            " return [r.className, r.dataset.state, r.textContent];",
            row_css,
        )
        assert "fresh" in row[0]  # a new 一级 alarm is highlighted
        assert row[1] == "active_unacked"
        assert "%LEL" in row[2]  # its value with the unit
        assert "gas_concentration" in row[2]
        browser.save_screenshot(str(tmp_path / "2-leak.png"))

        # Filters: 一级 only, then streetlights only, then all again.
        rows = (
            "return [...document.querySelectorAll('#alarms tbody tr')].map(r => r.dataset.severity)"
        )
        browser.execute_script(
            "const s = document.querySelector('#f-severity'); s.value = '1';"
            " s.dispatchEvent(new Event('change'));"
        )
        assert set(browser.execute_script(rows)) == {"1"}
        browser.execute_script(
            "const s = document.querySelector('#f-severity'); s.value = '';"
            " s.dispatchEvent(new Event('change'));"
            " const f = document.querySelector('#f-family'); f.value = 'streetlight';"
            " f.dispatchEvent(new Event('change'));"
        )
        devices = browser.execute_script(
            "return [...document.querySelectorAll('#alarms tbody tr')].map(r => r.dataset.device)"
        )
        assert all(d.startswith("sl-") for d in devices), devices  # the demo's streetlights
        browser.execute_script(
            "const f = document.querySelector('#f-family'); f.value = '';"
            " f.dispatchEvent(new Event('change'));"
        )
        assert "1" in browser.execute_script(rows)
        # The sound can be muted, and stays muted on the next visit.
        click(browser, "#mute")
        assert browser.execute_script("return localStorage.getItem('lifeline.muted')") == "1"
        assert "关" in css(browser, "#mute")[0].text
        click(browser, "#mute")

        # The trend of the leaking detector: its alarming point, limits drawn, newest window.
        click(browser, row_css)
        # (the cover's chart from the marker click before is replaced, not added to)
        wait(
            browser, "the trend", lambda b: css(b, '#trend[data-point="gas_concentration"] canvas')
        )
        assert len(css(browser, "#trend .uplot")) == 1
        box = css(browser, "#trend")[0]
        assert {"20", "50"} <= set(box.get_attribute("data-limits").split(","))
        assert int(box.get_attribute("data-events")) >= 1
        assert "gas_concentration (%LEL)" in css(browser, "#trend-title")[0].text

        # Acknowledge with a note through the button and the dialog.
        click(browser, f"{row_css} button.ack")
        wait(browser, "the ack dialog", lambda b: css(b, "#ack-dialog[open]"))
        note = "现场已通知燃气抢修"
        css(browser, "#ack-note")[0].send_keys(note)
        click(browser, "#ack-send")
        wait(
            browser,
            "the acknowledged row",
            lambda b: css(b, f'{row_css}[data-state="active_acked"]'),
        )
        acked = district.get(f"/api/v1/alarms/{critical['alarm_id']}")
        assert acked["ack_note"] == note
        assert acked["ack_by"] == district.get("/api/v1/me")["name"]

        # Dispatch the open cover's case (立案) through the case desk's buttons.
        case_no = wait(
            browser,
            "a case waiting for 派遣",
            lambda _: [
                c["case_no"]
                for c in district.get(f"/api/v1/cases?state={quote('立案')}")["items"]
                if "dispatch" in c["actions"]
            ],
            90,
        )[0]
        click(browser, f'#cases tr[data-case-no="{case_no}"] button.detail')
        wait(browser, "the case detail", lambda b: css(b, '#case-dialog[data-state="立案"]'))
        # alarm snapshot, phase table (立案 running) and audit trail
        assert len(css(browser, "#case-body table")) == 3
        assert css(browser, "#case-body table.phases tbody tr")
        click(browser, '#case-buttons button[data-action="dispatch"]')
        wait(browser, "the dispatched case", lambda b: css(b, '#case-dialog[data-state="派遣"]'))
        case = district.get(f"/api/v1/cases/{case_no}")
        assert case["state"] == "派遣"
        assert case["audit"][-1]["action"] == "dispatch"
        # An action the API refuses shows its reason in words: 回退, then 派遣 with no
        # department (required after a 回退).
        click(browser, '#case-buttons button[data-action="return"]')
        wait(browser, "the returned case", lambda b: css(b, '#case-dialog[data-state="立案"]'))
        css(browser, "#case-dept")[0].clear()
        click(browser, '#case-buttons button[data-action="dispatch"]')
        error = wait(browser, "the refusal", lambda b: css(b, "#case-error:not([hidden])"))[0]
        assert "参数不符合要求" in error.text or "当前状态下不允许" in error.text, error.text
        browser.save_screenshot(str(tmp_path / "3-case.png"))
        click(browser, "#case-close")

        # The statistics strip follows: today's 立案 and the alarms of the last hour.
        wait(
            browser,
            "today's cases counted",
            lambda b: stat(b, "st_opened") not in ("", "0"),
            15,
        )
        assert stat(browser, "st_online").endswith("%")
        # ... counted by 综合评价 (GET /api/v1/stats), the figures of the monthly report, not by
        # the browser over a page of cases.
        midnight = browser.execute_script("const d = new Date(); d.setHours(0, 0, 0, 0); return +d")

        def as_reported(b: Any) -> bool:
            now_ms = int(time.time() * 1000) + 1
            total = district.get(f"/api/v1/stats?from={midnight}&to={now_ms}")["total"]
            shown = (stat(b, "st_opened"), stat(b, "st_closed"))
            return shown == (str(total["registered"]), str(total["closed"]))

        wait(browser, "the strip showing today's 综合评价 figures", as_reported, 15)
        assert stat(browser, "st_ontime_dept")
        # English covers every label of the page (the data stays as the city wrote it).
        click(browser, "#lang")
        texts = browser.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent)",
            "[data-i18n], th, #stats .k, select option[value='']",
        )
        assert [t for t in texts if CJK.search(t)] == [], texts
        states = browser.execute_script(
            "return [...document.querySelectorAll('#alarms tbody tr td:nth-child(5)')]"
            ".map((td) => td.textContent)"
        )
        assert states
        assert [s for s in states if CJK.search(s)] == []
        # ... and the case detail: headings, facts, stages, states, actions and buttons.
        click(browser, f'#cases tr[data-case-no="{case_no}"] button.detail')
        wait(browser, "the case detail", lambda b: css(b, "#case-dialog[open] table.phases"))
        words = browser.execute_script(
            "return [...document.querySelectorAll('#case-dialog h4, #case-dialog th,"
            " #case-dialog dt, #case-buttons button, #case-actions label,"
            " #case-dialog table.phases td:first-child, #case-dialog table:last-child"
            " td:nth-child(3)')].map((e) => e.textContent)"
        )
        assert [w for w in words if CJK.search(w)] == [], words
        browser.save_screenshot(str(tmp_path / "4-english.png"))


def test_nothing_is_cut_off_at_1366_px(district: District, tmp_path: Path) -> None:
    """At 1 400 px the ack button and the deadline column were cut off."""
    with chromium(1366, 768) as browser:
        open_console(browser, district)
        wait(browser, "alarm and case rows", lambda b: css(b, "#alarms tbody tr button.ack")
             and css(b, "#cases tbody tr"), 120)  # fmt: skip
        for lang in ("zh", "en"):
            if lang == "en":
                click(browser, "#lang")
            browser.save_screenshot(str(tmp_path / f"console-1366-{lang}.png"))
            bad = cut_off(browser)
            assert bad == [], (lang, bad)
        # A shift's worth of alarms keeps the page bounded: 300 kept, 150 rows drawn.
        sizes = browser.execute_script(
            """
            for (let i = 0; i < 2000; i++) {
              upsertAlarm({alarm_id: 'soak:' + i, gateway: 'gw-demo', device: 'sl-e01',
                point: 'lamp_current', severity: 4, state: i % 2 ? 'normal' : 'active_unacked',
                ts_ms: Date.now(), value: 0.1, message: 'soak'});
            }
            renderAlarms();
            return [state.alarms.size, document.querySelectorAll('#alarms tbody tr').length];
            """
        )
        assert sizes == [300, 150]


def cut_off(browser: Any) -> list[str]:
    """Every control, deadline, state or heading that sticks out of its section or the window,
    or whose text is clipped."""
    bad: list[str] = browser.execute_script(
        """
        const bad = [];
        if (document.documentElement.scrollWidth > innerWidth) bad.push('page');
        for (const sel of ['#alarms button', '#cases button', '#cases td.left', 'header > *',
                           '#stats .tile', 'th', '#alarms td:nth-child(5)',
                           '#cases td:nth-child(5)', '#alarms td:first-child .badge']) {
          for (const e of document.querySelectorAll(sel)) {
            const r = e.getBoundingClientRect();
            const box = (e.closest('section') || document.body).getBoundingClientRect();
            if (r.right > Math.min(innerWidth, box.right) + 0.5 || r.left < box.left - 0.5)
              bad.push(sel + ': ' + e.textContent);
            if (e.scrollWidth > e.clientWidth + 1) bad.push(sel + ' clipped: ' + e.textContent);
          }
        }
        return bad;
        """
    )
    return bad


def test_docs_render_with_no_network(district: District, tmp_path: Path) -> None:
    """/docs loaded Swagger UI from a CDN: blank without the internet."""
    with chromium(1366, 768) as browser:
        browser.get(f"{district.api}/docs")
        ops = wait(browser, "Swagger UI's operations", lambda b: css(b, ".opblock-summary-path"))
        paths = {o.get_attribute("data-path") or o.text for o in ops}
        assert "/api/v1/alarms" in paths
        assert "/api/v1/readings" in paths
        browser.save_screenshot(str(tmp_path / "docs.png"))
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []


# The smallest valid PNG (1 × 1, transparent): what a tile server answers here.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


@contextmanager
def tile_server() -> Iterator[tuple[str, list[str]]]:
    """A tile server on a free loopback port answering every /{z}/{x}/{y}.png; yields its URL
    template and the paths asked for."""
    asked: list[str] = []

    class Tiles(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Tiles)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/{{z}}/{{x}}/{{y}}.png", asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_configured_tile_server_is_the_base_layer_in_its_datum(
    tmp_path: Path, mqtt_url: str
) -> None:
    """A deployment's tile URL and datum from the collector's config file: the page may load
    its tiles (CSP), and assets are drawn converted into the tiles' datum (GCJ-02 here)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    children: list[Child] = []
    with tile_server() as (url, asked):
        conf = tmp_path / "collector.yaml"
        conf.write_text(yaml.safe_dump({"tiles_url": url, "tiles_datum": "GCJ-02"}))
        try:
            children.append(
                spawn(
                    "collector",
                    ["collector", "run", "--config", str(conf), "--mqtt", mqtt_url,
                     "--root", f"t-tiles-{tmp_path.name}/lifeline", "--db",
                     f"sqlite:///{tmp_path}/c.db", "--http", f"127.0.0.1:{port}",
                     "--client-id", f"tiles-{tmp_path.name}", "--bootstrap-key-file",
                     str(tmp_path / "admin.key"), "--assets",
                     str(CONFIG / "assets" / "demo.yaml")],
                    logs,
                )
            )  # fmt: skip
            wait_until("collector API", lambda: http_json(f"{api}/readyz"), 60, children)
            key = (tmp_path / "admin.key").read_text().strip()
            district = District(api, key, {})
            with chromium(1366, 768) as browser:
                open_console(browser, district)
                wait(browser, "tiles drawn", lambda b: css(b, "img.leaflet-tile-loaded"))
                assert asked
                assert all(re.fullmatch(r"/\d+/\d+/\d+\.png", p) for p in asked), asked
                # The cover at 120.1402, 30.2771 (CGCS2000) sits ~0.5 km off on a GCJ-02 map.
                at = browser.execute_script(
                    "const m = [...state.markers.values()].find("
                    " (e) => e.place.asset && e.place.asset.code === '3301060111000101');"
                    " const p = m.marker.getLatLng(); return [p.lat, p.lng];"
                )
                assert 0.002 < abs(at[0] - 30.2771) + abs(at[1] - 120.1402) < 0.01, at
                # No gateway has reported yet: every place is grey, not "normal".
                colours = {m.get_attribute("data-colour") for m in css(browser, "path.mk")}
                assert colours == {"grey"}
                browser.save_screenshot(str(tmp_path / "tiles.png"))
                errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
                assert errors == []
        finally:
            for child in reversed(children):
                child.stop()


def test_a_key_link_asks_before_replacing_the_stored_key(district: District) -> None:
    """A #key= link once replaced the stored key silently: a link can carry anybody's key."""
    from selenium.webdriver.support import expected_conditions

    stored = "return localStorage.getItem('lifeline.key')"
    with chromium(1366, 768) as browser:
        open_console(browser, district)
        assert browser.execute_script(stored) == district.key
        other = "llk_somebody-elses-key"
        # Refused in the open page (only the fragment changes), accepted on a fresh load.
        for accept in (False, True):
            if accept:
                browser.get("about:blank")
            browser.get(f"{district.api}/console#key={other}")
            alert = wait(browser, "the question", expected_conditions.alert_is_present(), 10)
            assert "API 密钥" in alert.text
            if accept:
                alert.accept()
            else:
                alert.dismiss()
            wait(browser, "the page", lambda b: b.execute_script("return !!state"))
            assert "#key=" not in browser.current_url
            assert browser.execute_script(stored) == (other if accept else district.key)
        # The same key again asks nothing.
        browser.get(f"{district.api}/console#key={other}")
        wait(browser, "the page", lambda b: b.execute_script("return !!state"))
        assert browser.execute_script(stored) == other
