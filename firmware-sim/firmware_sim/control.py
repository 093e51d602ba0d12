"""Client for a running simulation's control port (JSON lines over TCP)."""

from __future__ import annotations

import asyncio
import json
from types import TracebackType
from typing import Any, Self

from lifeline.drivers.values import Value

__all__ = ["ControlError", "SimControl"]


class ControlError(RuntimeError):
    """The simulation refused a control request, or could not be reached."""


class SimControl:
    """Talks to `Simulation`'s control port: `async with SimControl(host, port) as c: ...`."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Self:
        try:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            where = f"{self.host}:{self.port}"
            raise ControlError(f"cannot reach firmware-sim at {where}: {exc}") from None
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()

    async def call(self, cmd: str, **fields: Any) -> Any:
        """Send one request and return its result; ControlError if it was refused."""
        if self._reader is None or self._writer is None:
            raise ControlError("not connected: use `async with SimControl(...)`")
        self._writer.write(json.dumps({"cmd": cmd, **fields}).encode() + b"\n")
        await self._writer.drain()
        line = await self._reader.readline()
        if not line:
            raise ControlError("firmware-sim closed the control connection")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise ControlError(str(reply.get("error")))
        return reply.get("result")

    async def trigger(self, device: str, event: str, args: dict[str, Any] | None = None) -> None:
        """Apply an event to a device (see the device family's events)."""
        await self.call("trigger", device=device, event=event, args=args or {})

    async def set_value(self, device: str, point: str, value: Value) -> None:
        """Pin a device's point to a value."""
        await self.call("set", device=device, point=point, value=value)

    async def release(self, device: str, point: str | None = None) -> None:
        """Unpin one point (or all points) of a device."""
        await self.call("release", device=device, point=point)

    async def fault(self, device: str, kind: str, **args: Any) -> None:
        """Inject a fault into a device; kind "none" clears it."""
        await self.call("fault", device=device, kind=kind, args=args)

    async def values(self, device: str) -> dict[str, Value]:
        """The device's current engineering values."""
        result: dict[str, Value] = await self.call("values", device=device)
        return result

    async def endpoints(self) -> dict[str, Any]:
        """Where the simulation's servers listen."""
        result: dict[str, Any] = await self.call("endpoints")
        return result
