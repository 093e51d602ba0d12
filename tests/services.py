"""Real services for the test suite: private Mosquitto and PostgreSQL servers on loopback."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import psycopg


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    """Block until something accepts TCP connections on host:port, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.05)


def shipped_mosquitto_conf() -> Path:
    """The broker configuration Lifeline ships (config/mosquitto/lifeline.conf)."""
    return Path(str(files("lifeline.config") / "mosquitto" / "lifeline.conf"))


@dataclass
class Mosquitto:
    """A private Mosquitto broker on a free loopback port, with the shipped configuration."""

    extra_conf: str = ""
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lifeline-mqtt-")))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """mqtt:// URL of this broker."""
        return f"mqtt://{self.host}:{self.port}"

    def _write_conf(self) -> Path:
        base = shipped_mosquitto_conf().read_text(encoding="utf-8")
        local = [
            f"listener {self.port} {self.host}",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "log_dest stderr",
        ]
        if os.geteuid() == 0:
            local.append("user root")  # else it drops to 'mosquitto', who cannot write workdir
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(base + "\n" + "\n".join(local) + "\n" + self.extra_conf + "\n")
        return conf

    def start(self) -> None:
        """Start (or restart) the broker, keeping its persistence directory."""
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        log = open(self.workdir / "mosquitto.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen([exe, "-c", str(self._write_conf())], stdout=log, stderr=log)
        log.close()
        wait_for_port(self.host, self.port)

    def stop(self) -> None:
        """Stop the broker (SIGTERM, so it saves its persistence file)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@contextlib.contextmanager
def start_mosquitto(extra_conf: str = "") -> Iterator[Mosquitto]:
    """Run a private broker for the duration of the block."""
    broker = Mosquitto(extra_conf=extra_conf)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(broker.workdir, ignore_errors=True)


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
