"""The rate limit every client frame of a connection goes through (subscribes, pings, replies)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    """At most `rate_per_s` sends in any window of `capacity / rate_per_s` seconds (sliding log).

    Exchanges count every client frame, pings included (Binance spot: 5 per second, a breach
    disconnects and repeated breaches ban the IP), so every send of a connection goes through one.
    """

    def __init__(self, rate_per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be positive, got {rate_per_s}")
        self.capacity = max(1, int(rate_per_s))
        self.window_s = self.capacity / rate_per_s
        self._clock = clock
        self._sent: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait until one more frame may be sent, and count it."""
        async with self._lock:
            now = self._clock()
            if len(self._sent) >= self.capacity:
                wait_s = self._sent[0] + self.window_s - now
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                    now = self._clock()
                self._sent.popleft()
            self._sent.append(now)
