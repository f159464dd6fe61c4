"""One REST rate budget per exchange: a token bucket of request weights, and backoff on 429/418.

Every history call of an exchange (both of its streams, every symbol being repaired) waits
here first, so repairing many symbols at once spends the exchange's budget at a steady pace
instead of bursting into a ban. The bucket holds ``weight_per_window × (1 − reserve)`` and
refills continuously over the window: repairs never use the whole budget. An answer 429
blocks the whole bucket for its ``Retry-After`` (or an escalating default when it is missing
or shorter: consecutive 429s double the wait); a ban status (Binance 418) blocks for at least
`ban_floor_s`, doubled per consecutive ban. A caller waits for budget, it is never refused,
unless it gave a deadline that the wait would pass.

Waiters are served in arrival order (one lock), so a repair of a busy symbol cannot starve
another. The clock and the sleep are injectable for tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from pumpwatch.recorder.history.spec import RateRule

DEFAULT_429_S = 1.0  # wait after a 429 without Retry-After, doubled per consecutive 429
BAN_FLOOR_S = 120.0  # Binance's first IP ban lasts 2 minutes; bans escalate up to 3 days
MAX_BACKOFF_S = 3_600.0


class RateBudget:
    """The shared REST budget of one exchange (see the module docstring)."""

    def __init__(
        self,
        rule: RateRule,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        default_429_s: float = DEFAULT_429_S,
        ban_floor_s: float = BAN_FLOOR_S,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        if not 0.0 <= rule.reserve < 1.0 or rule.weight_per_window <= 0 or rule.window_s <= 0:
            raise ValueError(f"bad rate rule {rule!r}")
        self.rule = rule
        self.capacity = rule.weight_per_window * (1.0 - rule.reserve)
        self.refill_per_s = self.capacity / rule.window_s
        self.clock = clock
        self._sleep = sleep
        self._default_429_s = default_429_s
        self._ban_floor_s = ban_floor_s
        self._max_backoff_s = max_backoff_s
        self._tokens = self.capacity
        self._stamp = clock()
        self._blocked_until = 0.0
        self._strikes = 0  # consecutive rate-limit answers
        self._lock = asyncio.Lock()
        self.spent = 0.0  # weight granted so far (figures for tests and benchmarks)
        self.penalties = 0  # rate-limit answers seen

    def _refill(self, now: float) -> None:
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.refill_per_s)
        self._stamp = now

    async def acquire(self, weight: float, *, deadline: float | None = None) -> bool:
        """Take `weight` from the bucket, waiting as long as needed; False only when waiting
        would pass `deadline` (a `clock()` value), in which case nothing is taken."""
        need = min(float(weight), self.capacity)  # a call heavier than the bucket waits for a full one
        if deadline is None:
            await self._lock.acquire()
        else:
            try:
                await asyncio.wait_for(self._lock.acquire(), max(0.0, deadline - self.clock()))
            except TimeoutError:
                return False
        try:
            while True:
                now = self.clock()
                self._refill(now)
                wait = max(self._blocked_until - now, (need - self._tokens) / self.refill_per_s, 0.0)
                if wait <= 0.0:
                    self._tokens -= need
                    self.spent += need
                    return True
                if deadline is not None and now + wait > deadline:
                    return False
                await self._sleep(wait)
        finally:
            self._lock.release()

    def penalize(self, status: int, retry_after_s: float | None) -> float:
        """A rate-limit answer: block the whole budget; returns the seconds blocked from now."""
        self._strikes += 1
        self.penalties += 1
        escalation = 2.0 ** min(self._strikes - 1, 20)
        if status in self.rule.ban_statuses:
            delay = max(retry_after_s or 0.0, self._ban_floor_s * escalation)
        else:
            delay = max(retry_after_s or 0.0, self._default_429_s * escalation)
        delay = min(delay, max(self._max_backoff_s, retry_after_s or 0.0))
        now = self.clock()
        self._refill(now)
        self._tokens = 0.0  # what we thought was left was wrong
        self._blocked_until = max(self._blocked_until, now + delay)
        return delay

    def succeeded(self) -> None:
        """An answer that was not a rate-limit one: the escalation starts over."""
        self._strikes = 0

    @property
    def blocked_for_s(self) -> float:
        """Seconds until the budget is unblocked (0 when it is not blocked)."""
        return max(0.0, self._blocked_until - self.clock())


def retry_after_s(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (the exchanges send delta-seconds); None otherwise."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # an HTTP-date: none of the exchanges sends one; the default backoff applies
    return seconds if 0.0 <= seconds < 10 * 86_400 else None
