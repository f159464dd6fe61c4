"""One REST rate budget per exchange and side: a sliding window of request weights, and
backoff on 429/418.

Every history call of an exchange (both of its streams, every symbol being repaired) waits
here first, so repairing many symbols at once spends the exchange's budget at a steady pace
instead of bursting into a ban. A budget grants at most ``weight_per_window × share`` in any
`window_s` (a log of the grants of the last window: exact for any window an exchange counts
in, rolling or fixed; a token bucket of the same size could grant twice that across one
window, its full burst plus the refill). The exchange's limit is per IP, and three parties
draw on it:

- the worker's live repairs (``1 − RateRule.reserve`` = 50 % on every exchange; one worker
  process records all streams of an exchange, so this is one budget per exchange);
- every extraction-time repair of one process together (`EXTRACTION_SHARE` 25 %: the listing
  trigger's parallel extractions, `pumpwatch extract`; ``specs.extraction_budgets()`` is the
  process's one registry, never a budget per call);
- the rest (25 %): the recorder's other REST calls (instrument lists, tokens) and one more
  process extracting at the same time (a `pumpwatch extract` run beside a recording).

An answer 429 blocks the whole budget for its ``Retry-After`` (or an escalating default when
it is missing or shorter: consecutive 429s double the wait); a ban status (Binance 418)
blocks for at least `ban_floor_s`, doubled per consecutive ban. A caller waits for budget, it
is never refused, unless it gave a deadline that the wait would pass.

Waiters of one event loop are served in arrival order (one lock per loop), so a repair of a
busy symbol cannot starve another. A process-wide budget is used from more than one event
loop (each `asyncio.run` of an extraction has its own): the lock is per loop and the grant log
is guarded by a thread lock, so the limit holds across them. The clock and the sleep are
injectable for tests.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable

from pumpwatch.recorder.history.spec import RateRule

DEFAULT_429_S = 1.0  # wait after a 429 without Retry-After, doubled per consecutive 429
BAN_FLOOR_S = 120.0  # Binance's first IP ban lasts 2 minutes; bans escalate up to 3 days
MAX_BACKOFF_S = 3_600.0
# A grant leaves the window this long after `window_s`: the exchange counts a call when it
# arrives, and a call's latency varies (a new connection, a slow answer before it), so two
# calls granted exactly `window_s` apart can arrive closer together.
LATENCY_MARGIN_S = 0.25
EXTRACTION_SHARE = 0.25  # of the per-IP limit: all extraction-time repairs of one process together


class RateBudget:
    """A REST budget of one exchange (see the module docstring); `share` of the rule's limit,
    by default ``1 − rule.reserve`` (the live repair's)."""

    def __init__(
        self,
        rule: RateRule,
        *,
        share: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        default_429_s: float = DEFAULT_429_S,
        ban_floor_s: float = BAN_FLOOR_S,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        if not 0.0 <= rule.reserve < 1.0 or rule.weight_per_window <= 0 or rule.window_s <= 0:
            raise ValueError(f"bad rate rule {rule!r}")
        self.share = 1.0 - rule.reserve if share is None else share
        if not 0.0 < self.share <= 1.0:
            raise ValueError(f"bad share {share!r} of {rule.key}'s rate limit")
        self.rule = rule
        self.capacity = rule.weight_per_window * self.share  # weight granted in any window_s
        self.window_s = rule.window_s
        self.clock = clock
        self._sleep = sleep
        self._default_429_s = default_429_s
        self._ban_floor_s = ban_floor_s
        self._max_backoff_s = max_backoff_s
        self._grants: deque[tuple[float, float]] = deque()  # (clock, weight) of the last window
        self._used = 0.0  # weight of `_grants`
        self._blocked_until = 0.0
        self._strikes = 0  # consecutive rate-limit answers
        self._state = threading.Lock()  # the grant log, across the threads of event loops
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self.spent = 0.0  # weight granted so far (figures for tests and benchmarks)
        self.penalties = 0  # rate-limit answers seen

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._state:
            lock = self._locks.get(loop)
            if lock is None:
                lock = self._locks[loop] = asyncio.Lock()
            return lock

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s - LATENCY_MARGIN_S
        while self._grants and self._grants[0][0] <= horizon:
            self._used -= self._grants.popleft()[1]
        if not self._grants:
            self._used = 0.0  # no float drift on an idle budget

    def _until_fits(self, need: float, now: float) -> float:
        """Seconds until `need` more fits in the window (0 if it fits now)."""
        excess = self._used + need - self.capacity
        if excess <= 1e-9:
            return 0.0
        for t, weight in self._grants:
            excess -= weight
            if excess <= 1e-9:
                return t + self.window_s + LATENCY_MARGIN_S - now
        return self.window_s + LATENCY_MARGIN_S

    def _try(self, need: float) -> tuple[bool, float, float]:
        """Grant `need` now if it fits: (granted, now, else seconds to wait)."""
        with self._state:
            now = self.clock()
            self._expire(now)
            wait = max(self._blocked_until - now, self._until_fits(need, now), 0.0)
            if wait <= 0.0:
                self._grants.append((now, need))
                self._used += need
                self.spent += need
                return True, now, 0.0
            return False, now, wait

    async def acquire(self, weight: float, *, deadline: float | None = None) -> bool:
        """Take `weight` from the budget, waiting as long as needed; False only when waiting
        would pass `deadline` (a `clock()` value), in which case nothing is taken."""
        need = min(float(weight), self.capacity)  # a call heavier than the window waits for an empty one
        lock = self._lock()
        if deadline is None:
            await lock.acquire()
        else:
            try:
                await asyncio.wait_for(lock.acquire(), max(0.0, deadline - self.clock()))
            except TimeoutError:
                return False
        try:
            while True:
                granted, now, wait = self._try(need)
                if granted:
                    return True
                if deadline is not None and now + wait > deadline:
                    return False
                await self._sleep(wait)
        finally:
            lock.release()

    def penalize(self, status: int, retry_after_s: float | None) -> float:
        """A rate-limit answer: block the whole budget; returns the seconds blocked from now."""
        with self._state:
            self._strikes += 1
            self.penalties += 1
            escalation = 2.0 ** min(self._strikes - 1, 20)
            if status in self.rule.ban_statuses:
                delay = max(retry_after_s or 0.0, self._ban_floor_s * escalation)
            else:
                delay = max(retry_after_s or 0.0, self._default_429_s * escalation)
            delay = min(delay, max(self._max_backoff_s, retry_after_s or 0.0))
            now = self.clock()
            self._blocked_until = max(self._blocked_until, now + delay)
            return delay

    def succeeded(self) -> None:
        """An answer that was not a rate-limit one: the escalation starts over."""
        with self._state:
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
