"""Capped, jittered exponential backoff for reconnects (DESIGN §11), pure and deterministic.

"Full jitter" from the AWS architecture blog: each delay is drawn uniformly from
``[cap/2, cap]`` where ``cap = min(max_s, initial_s * 2**attempt)``. The lower half bound keeps
a reconnect storm from hammering the exchange (Binance allows 300 connection attempts per
5 minutes per IP) while the jitter spreads twelve streams that lost the network at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays for successive failed attempts; `reset()` after a connection proved healthy.

    `rng` returns a float in [0, 1); inject one for deterministic tests.
    """

    def __init__(
        self,
        initial_s: float = 1.0,
        max_s: float = 30.0,
        *,
        factor: float = 2.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if initial_s <= 0 or max_s < initial_s or factor < 1.0:
            raise ValueError(f"bad backoff: initial_s={initial_s} max_s={max_s} factor={factor}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.factor = factor
        self._rng = rng
        self.attempt = 0  # failures since the last reset

    def ceiling_s(self, attempt: int) -> float:
        """The upper bound of the delay after `attempt` previous failures."""
        # Cap the exponent so a long outage cannot overflow the float.
        return min(self.max_s, self.initial_s * self.factor ** min(attempt, 64))

    def next_delay_s(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        ceiling = self.ceiling_s(self.attempt)
        self.attempt += 1
        return ceiling / 2 + self._rng() * ceiling / 2

    def reset(self) -> None:
        """Start again from `initial_s` (the connection stayed healthy long enough)."""
        self.attempt = 0
