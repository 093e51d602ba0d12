"""Rate-limited logging: a burst of one message repeated becomes a few lines and a count."""

import logging
import time
from collections.abc import Callable


class RepeatLimiter(logging.Filter):
    """A logging filter that lets through at most `burst` records of one kind (logger, level
    and message template) per `window_s` seconds, and says how many it held back with the
    first record of that kind after the window.

    Under attack (a thousand connections failing, each with a warning or a traceback) the log
    grew by 200 MB in 25 s; this keeps it to a few lines per kind and minute, and the count.
    `clock` gives monotonic seconds (injectable for tests).
    """

    def __init__(
        self, burst: int = 5, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.burst, self.window_s, self._clock = burst, window_s, clock
        self._kinds: dict[tuple[str, int, str], tuple[float, int, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """True to log `record`; may add the count of held-back ones to its message."""
        kind = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        start, seen, held = self._kinds.get(kind, (now, 0, 0))
        if now - start >= self.window_s:
            if held:
                record.msg = (
                    f"{record.msg} [{held} more like this in {now - start:.0f} s not logged]"
                )
            start, seen, held = now, 0, 0
        seen += 1
        if seen > self.burst:
            held += 1
        if len(self._kinds) >= 10_000 and kind not in self._kinds:
            self._kinds.clear()  # message templates are few; many means formatted-in values
        self._kinds[kind] = (start, seen, held)
        return seen <= self.burst
