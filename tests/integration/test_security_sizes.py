"""Sizes an attacker controls: refused payloads kept bounded, paged and expired; asset files.

Dead letters go through the store as ingest writes them (on SQLite and PostgreSQL) and are
read through the API; the asset cap through `lifeline collector assets import`.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from lifeline.collector.models import Rejected, Role
from lifeline.collector.store import open_store
from tests.integration.test_api_http import now_ms, running_api

pytestmark = [pytest.mark.integration, pytest.mark.proof]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_dead_letters_keep_a_bounded_prefix_with_size_and_hash_and_expire(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Issue 17: one gateway grew the database by 317 MB in 4 s with refused payloads, and one
    request for them took the collector to 1.4 GB."""
    url = (
        request.getfixturevalue("pg_url") if backend == "postgres" else f"sqlite:///{tmp_path}/d.db"
    )
    big = bytes(range(256)) * 1024  # 256 KiB, the wire's largest payload
    store = open_store(url)
    try:
        store.migrate()
        t0 = now_ms()
        store.write([Rejected("lifeline/v1/s/gw/data", big, "not msgpack", t0 - 40 * 86_400_000)],
                    t0)  # fmt: skip
        for i in range(5):
            store.write([Rejected("lifeline/v1/s/gw/data", big + bytes([i]), "bad", t0 + i)], t0)
        (newest,) = store.dead_letters(1)
        assert newest.size == len(big) + 1
        assert newest.sha256 == hashlib.sha256(big + bytes([4])).hexdigest()
        assert newest.payload == big[:4096]
        assert store.prune_dead_letters(t0 - 30 * 86_400_000) == 1  # the 40-day-old one
        assert store.count_dead_letters() == 5
    finally:
        store.close()
    with running_api(url) as api:
        seen, cursor, pages = [], None, 0
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = api.client.get("/api/v1/dead-letters", params=params, headers=api.h()).json()
            seen += page["items"]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert page["count"] == 5
        r = api.client.get("/api/v1/dead-letters", params={"limit": 501}, headers=api.h(Role.ADMIN))
        assert r.status_code == 422
    assert pages == 3
    assert [d["size"] for d in seen] == [len(big) + 1] * 5
    assert all(d["truncated"] and len(d["payload_b64"]) == 5464 for d in seen)  # 4 KiB in base64


def test_an_asset_file_over_the_cap_is_refused_at_once(tmp_path: Path) -> None:
    """Issue 17: a 40 MB CSV took 1.8 GB and 19 s to import."""
    big = tmp_path / "assets.csv"
    row = "3101040111{:06d},燃气阀门井,城市燃气公司,310104001002,121.4,31.2,\n"
    with big.open("w") as f:
        f.write("code,name,owner,grid,lon,lat,devices\n")
        for i in range(140_000):  # ~9 MB
            f.write(row.format(i))
    run = subprocess.run(
        [sys.executable, "-m", "lifeline", "collector", "assets", "import", str(big),
         "--db", f"sqlite:///{tmp_path}/a.db"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 1
    assert "an asset file is at most 8388608" in run.stderr
    assert "Traceback" not in run.stderr
