"""A private Mosquitto broker on loopback with Lifeline's shipped configuration (demo and tests)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on `host` that is free right now."""
    with socket.socket() as s:
        s.bind((host, 0))
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


def shipped_conf() -> Path:
    """The broker configuration Lifeline ships (config/mosquitto/lifeline.conf)."""
    return Path(str(files("lifeline.config") / "mosquitto" / "lifeline.conf"))


def mosquitto_binary() -> str:
    """Path of the mosquitto executable, or raise FileNotFoundError saying how to get it."""
    exe = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if exe is None:
        raise FileNotFoundError(
            "mosquitto is not installed: run scripts/setup.sh (apt-get install mosquitto)"
        )
    return exe


@dataclass
class PrivateBroker:
    """A Mosquitto process listening on host:port with its persistence in `workdir`."""

    workdir: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    extra_conf: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """mqtt:// URL of this broker."""
        return f"mqtt://{self.host}:{self.port}"

    def _write_conf(self) -> Path:
        local = [
            f"listener {self.port} {self.host}",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "log_dest stderr",
        ]
        if os.geteuid() == 0:
            local.append("user root")  # else it drops to 'mosquitto', who cannot write workdir
        conf = self.workdir / "mosquitto.conf"
        base = shipped_conf().read_text(encoding="utf-8")
        conf.write_text(base + "\n" + "\n".join(local) + "\n" + self.extra_conf + "\n")
        return conf

    def start(self) -> None:
        """Start (or restart) the broker, keeping its persistence directory."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self._write_conf()
        with open(self.workdir / "mosquitto.log", "ab") as log:
            self.proc = subprocess.Popen(
                [mosquitto_binary(), "-c", str(conf)], stdout=log, stderr=log
            )
        wait_for_port(self.host, self.port)

    def stop(self) -> None:
        """Stop the broker with SIGTERM so it writes its persistence file."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
