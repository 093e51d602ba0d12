"""Opening a serial port that refuses its settings is a LinkDown, never a stray termios.error."""

import asyncio
import os

import pytest

from lifeline.drivers.errors import LinkDown
from lifeline.drivers.link import ModbusSerialLink

pytestmark = pytest.mark.integration


def test_reopening_a_pty_with_even_parity_fails_only_as_link_down() -> None:
    master, slave = os.openpty()
    path = os.ttyname(slave)

    async def reopen_three_times() -> list[str]:
        outcomes = []
        for _ in range(3):
            link = ModbusSerialLink(path, 9600, parity="E")
            try:
                await link._connect()
            except LinkDown as exc:
                outcomes.append(f"down: {exc}")
            else:
                outcomes.append("open")
                link._disconnect()
        return outcomes

    try:
        outcomes = asyncio.run(reopen_three_times())
    finally:
        os.close(master)
        os.close(slave)
    # Linux ptys accept parity E once and refuse it with EINVAL afterwards.
    assert outcomes[0] == "open"
    assert all(o == "open" or path in o for o in outcomes[1:])
