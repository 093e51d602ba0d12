"""Serial line rates: which are standard, and what to say about one that is not."""

import difflib

# The standard UART rates RS-485 devices are set to (Modbus over Serial Line V1.02 §2.5.1
# requires 9600 and 19200, 9600 the default). Anything else is most likely a typo (96000,
# 9601), which no device on the bus would answer.
STANDARD_BAUDRATES = (
    300, 600, 1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200, 230400, 460800, 921600
)  # fmt: skip
MIN_BAUDRATE, MAX_BAUDRATE = 300, 921600  # beyond these no RS-485 adapter runs: refused


def baudrate_problem(baudrate: int) -> str:
    """'' for a standard serial line rate, else one line saying why it is suspect.

    Takes the rate in baud; the line names the nearest-looking standard rate (a likely typo)
    and lists the standard ones. Callers refuse rates outside MIN_BAUDRATE..MAX_BAUDRATE and
    warn about the rest.
    """
    if baudrate in STANDARD_BAUDRATES:
        return ""
    rates = [str(b) for b in STANDARD_BAUDRATES]
    close = difflib.get_close_matches(str(baudrate), rates, n=1, cutoff=0.7)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{baudrate} is not a standard baud rate{hint}; standard: {', '.join(rates)}"
