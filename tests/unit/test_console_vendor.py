"""The console's pages and pinned third-party files: what the browser gets needs no internet."""

import hashlib
import json
import re
from pathlib import Path

import pytest

from lifeline.collector.api.routes.console import csp, tile_origin
from lifeline.collector.runtime import ConsoleConfig

pytestmark = pytest.mark.unit

STATIC = Path(__file__).resolve().parents[2] / "collector" / "static"
VENDOR = STATIC / "vendor"
PAGES = ("console.html", "docs.html")


def manifest() -> list[dict[str, object]]:
    packages: list[dict[str, object]] = json.loads((VENDOR / "MANIFEST.json").read_text())[
        "packages"
    ]
    return packages


def test_every_vendored_file_matches_its_pinned_sha256_and_none_is_unlisted() -> None:
    listed = set()
    for package in manifest():
        folder = VENDOR / str(package["folder"])
        assert re.fullmatch(r"\d+\.\d+\.\d+", str(package["version"])), package
        assert str(package["integrity"]).startswith("sha512-"), package
        digests = package["sha256"]
        assert isinstance(digests, dict)
        assert "LICENSE" in digests, f"{package['npm']} travels without its licence"
        for name, digest in digests.items():
            data = (folder / name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == digest, f"{folder.name}/{name} changed"
            listed.add(f"{folder.name}/{name}")
    present = {p.relative_to(VENDOR).as_posix() for p in VENDOR.rglob("*") if p.is_file()} - {
        "MANIFEST.json"
    }
    assert present == listed


def test_the_pages_load_nothing_from_another_host_and_run_no_inline_script() -> None:
    for page in PAGES:
        html = (STATIC / page).read_text(encoding="utf-8")
        assert not re.search(r"(src|href)=\"(https?:)?//", html), page
        for tag in re.findall(r"<script[^>]*>", html):
            assert "src=" in tag, f"{page}: inline script {tag}"
        assert not re.search(r"\son[a-z]+=", html), f"{page}: inline event handler"
        for ref in re.findall(r"(?:src|href)=\"(/console/vendor/[^\"]+)\"", html):
            assert (VENDOR / ref.removeprefix("/console/vendor/")).is_file(), ref


def test_the_policy_forbids_framing_and_inline_script() -> None:
    policy = dict(p.strip().split(" ", 1) for p in csp().split(";"))
    assert policy["frame-ancestors"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["img-src"] == "'self' data:"
    tiles = csp(tile_origin("https://t{s}.tiles.example.cn/vec/{z}/{x}/{y}.png"))
    assert "img-src 'self' data: https://*.tiles.example.cn;" in tiles
    assert tile_origin("http://10.0.0.5:8000/{z}/{x}/{y}.png") == "http://10.0.0.5:8000"


def test_a_tile_url_needs_z_x_y_and_a_datum_tiles_are_drawn_in() -> None:
    assert ConsoleConfig("https://tiles.example.cn/{z}/{x}/{y}.png", "GCJ-02").tiles_datum == (
        "GCJ-02"
    )
    for url, datum in (
        ("ftp://tiles.example.cn/{z}/{x}/{y}.png", "WGS84"),
        ("https://tiles.example.cn/{z}/{x}.png", "WGS84"),
        ("https://tiles.example.cn/{z}/{x}/{y}.png", "BD-09"),
    ):
        with pytest.raises(ValueError, match="console tiles"):
            ConsoleConfig(url, datum)
