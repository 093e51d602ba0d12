"""Real services for the test suite: private Mosquitto and PostgreSQL servers on loopback."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from lifeline.broker import PrivateBroker, free_port, wait_for_port

__all__ = [
    "Postgres",
    "faketime_env",
    "free_port",
    "fresh_database",
    "pg_reachable",
    "start_mosquitto",
    "wait_for_port",
    "wait_until",
]


@contextlib.contextmanager
def start_mosquitto(extra_conf: str = "") -> Iterator[PrivateBroker]:
    """Run a private broker with the shipped configuration for the duration of the block."""
    broker = PrivateBroker(Path(tempfile.mkdtemp(prefix="lifeline-mqtt-")), extra_conf=extra_conf)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(broker.workdir, ignore_errors=True)


def faketime_env(offset_file: Path) -> dict[str, str]:
    """Environment that runs a process under libfaketime, its wall-clock offset read from
    `offset_file` (e.g. `-1h`, `+0`; re-read every second).

    Only the wall clock moves (FAKETIME_DONT_FAKE_MONOTONIC): what an NTP step or a missing RTC
    does to a real cabinet. Debian's multi-threaded build, as the gateway connects to the broker
    from a worker thread. Raises RuntimeError saying how to install it when it is missing.
    """
    libs = sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))
    if not libs:
        raise RuntimeError(
            "libfaketime is missing: run scripts/setup.sh --tests (installs faketime)"
        )
    return {
        "LD_PRELOAD": str(libs[0]),
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_CACHE_DURATION": "1",
    }


def _pg_bindir() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not candidates:
        raise RuntimeError(
            "PostgreSQL binaries not found: run scripts/setup.sh (installs postgresql)"
        )
    return Path(candidates[-1]).parent


def _pg_user() -> str | None:
    """The account to run a private server as when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and no 'postgres' or 'nobody' account to run PostgreSQL as")


@dataclass
class Postgres:
    """A private PostgreSQL server (initdb + pg_ctl) on a free loopback port, trust auth."""

    port: int = field(default_factory=free_port)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lifeline-pg-")))

    @property
    def url(self) -> str:
        """Admin URL (database postgres)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        user = _pg_user()
        cmd = list(args) if user is None else ["runuser", "-u", user, "--", *args]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self) -> None:
        """initdb on first start, then start the server and wait until it accepts connections."""
        bindir = _pg_bindir()
        data = self.workdir / "data"
        user = _pg_user()
        if user is not None:
            self.workdir.chmod(0o755)
            shutil.chown(self.workdir, user)
        if not data.exists():
            self._run(
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            )
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.workdir} -c fsync=off"
        self._run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            opts,
            "-l",
            str(self.workdir / "log"),
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (mode fast or immediate)."""
        self._run(
            str(_pg_bindir() / "pg_ctl"), "-D", str(self.workdir / "data"), "-m", mode, "-w", "stop"
        )


def pg_reachable(url: str) -> bool:
    """True if a PostgreSQL server answers at url."""
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """Create a uniquely named database on the server at admin_url; drop it afterwards."""
    name = f"lifeline_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def wait_until(cond: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll `cond` every 50 ms until it returns something truthy, and return that.

    Raises AssertionError after `timeout` seconds: the test failed, it did not hang.
    """
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)
    return value
