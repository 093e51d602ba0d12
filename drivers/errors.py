"""The driver error family: every failed field request raises one of these, never returns None."""

from __future__ import annotations

__all__ = ["BadFrame", "DeviceException", "DeviceTimeout", "DriverError", "LinkDown"]

_EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


class DriverError(Exception):
    """A request to a field device failed; says which unit, address and function code."""

    kind = "driver error"

    def __init__(
        self, unit: int, address: int | None, function: int | None, detail: str = ""
    ) -> None:
        self.unit = unit
        self.address = address
        self.function = function
        self.detail = detail
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"unit {self.unit}"
        if self.function is not None:
            where += f" fc {self.function}"
        if self.address is not None:
            where += f" address {self.address}"
        return f"{self.kind} ({where})" + (f": {self.detail}" if self.detail else "")


class DeviceTimeout(DriverError):
    """The device did not answer within the request timeout (nothing arrived)."""

    kind = "timeout"


class DeviceException(DriverError):
    """The device answered with a Modbus exception code."""

    kind = "modbus exception"

    def __init__(
        self, unit: int, address: int | None, function: int | None, code: int, detail: str = ""
    ) -> None:
        self.code = code
        name = _EXCEPTION_NAMES.get(code, "unknown exception")
        text = f"code {code} ({name})" + (f"; {detail}" if detail else "")
        super().__init__(unit, address, function, text)


class BadFrame(DriverError):
    """Bytes arrived but not a valid answer: CRC error, garbage, short or mismatched frame."""

    kind = "bad frame"


class LinkDown(DriverError):
    """The link itself (serial port, TCP connection) is unusable."""

    kind = "link down"
