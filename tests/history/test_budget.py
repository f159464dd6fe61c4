"""The per-exchange rate budget: pacing, reserve, 429/418 backoff with escalation, deadlines;
and against the local exchange servers (`SimExchange`: `throttle()`, their own rate limits and
Binance's 418 ban): rate-limit answers slow a repair and never drop a page."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest
from helpers.history import (
    START_US,
    Journal,
    Store,
    Venue,
    fast_budget,
    instrument,
    make_trades,
    sim_limit,
    spec_for,
    venue,
)
from helpers.history_faults import Fault

from pumpwatch.recorder.history.budget import (
    EXTRACTION_SHARE,
    LATENCY_MARGIN_S,
    RateBudget,
    retry_after_s,
)
from pumpwatch.recorder.history.repair import repair
from pumpwatch.recorder.history.spec import RateRule
from pumpwatch.recorder.history.specs import Budgets

RULE = RateRule(key="x", weight_per_window=100, window_s=10.0, reserve=0.5, ban_statuses=(418,))


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _budget(ft: FakeTime, rule: RateRule = RULE, **kw: Any) -> RateBudget:
    return RateBudget(rule, clock=ft.clock, sleep=ft.sleep, **kw)


def test_reserve_caps_what_any_window_grants() -> None:
    ft = FakeTime()
    budget = _budget(ft)
    assert budget.capacity == 50.0 and budget.window_s == 10.0

    async def go() -> None:
        for _ in range(5):
            assert await budget.acquire(10)
        assert ft.slept == []  # 50 = the usable half of 100
        ft.now += 4.0
        assert await budget.acquire(10)
        # until the first grant leaves the 10 s window (and the margin for network latency)
        assert ft.slept == [pytest.approx(6.0 + LATENCY_MARGIN_S)]
        for _ in range(4):
            assert await budget.acquire(10)
        assert sum(ft.slept) == pytest.approx(6.0 + LATENCY_MARGIN_S)  # the other four left with it

    asyncio.run(go())
    assert budget.spent == 100


def test_no_window_ever_holds_more_than_the_share() -> None:
    """Uneven weights at uneven times: every 10 s window (rolling, so also every fixed one)
    holds at most 50; a token bucket of 50 refilling 5/s would let 100 through one window."""
    ft = FakeTime()
    budget = _budget(ft)
    grants: list[tuple[float, int]] = []

    async def go() -> None:
        for i in range(60):
            weight = (7, 13, 1, 25)[i % 4]
            assert await budget.acquire(weight)
            grants.append((ft.now, weight))
            ft.now += (0.0, 0.3, 2.1)[i % 3]

    asyncio.run(go())
    for t0, _ in grants:
        assert sum(w for t, w in grants if t0 <= t < t0 + 10.0) <= 50


def test_extraction_share_is_a_quarter() -> None:
    budget = RateBudget(RULE, share=EXTRACTION_SHARE)
    assert budget.capacity == 25.0
    with pytest.raises(ValueError):
        RateBudget(RULE, share=0.0)


def test_deadline_refuses_without_taking() -> None:
    ft = FakeTime()
    budget = _budget(ft)

    async def go() -> None:
        assert await budget.acquire(50)
        assert not await budget.acquire(10, deadline=ft.now + 1.0)  # needs 10.25 s
        assert ft.slept == [] and budget.spent == 50
        assert await budget.acquire(10, deadline=ft.now + 11.0)

    asyncio.run(go())


def test_heavier_than_the_window_waits_for_an_empty_one() -> None:
    ft = FakeTime()
    budget = _budget(ft)

    async def go() -> None:
        assert await budget.acquire(10)
        assert await budget.acquire(500)  # clamped to the 50 a window holds
        assert sum(ft.slept) == pytest.approx(10.0 + LATENCY_MARGIN_S)

    asyncio.run(go())


def test_429_honours_retry_after_and_consecutive_ones_escalate() -> None:
    ft = FakeTime()
    budget = _budget(ft, default_429_s=1.0)
    assert budget.penalize(429, 7.0) == 7.0  # Retry-After wins over the 1 s default
    assert budget.penalize(429, None) == 2.0  # second in a row: doubled
    assert budget.penalize(429, None) == 4.0
    assert budget.blocked_for_s == pytest.approx(7.0)  # the longest block stands
    budget.succeeded()
    assert budget.penalize(429, None) == 1.0  # a success starts over


def test_ban_backs_off_much_longer() -> None:
    ft = FakeTime()
    budget = _budget(ft, default_429_s=1.0, ban_floor_s=120.0)
    assert budget.penalize(418, 30.0) == 120.0
    assert budget.penalize(418, None) == 240.0
    assert budget.penalize(418, 900.0) == 900.0  # a longer Retry-After is honoured

    async def go() -> None:
        assert await budget.acquire(1)

    asyncio.run(go())
    assert sum(ft.slept) == pytest.approx(900.0)


def test_waiters_are_served_in_arrival_order() -> None:
    ft = FakeTime()
    budget = _budget(ft)
    order: list[int] = []

    async def take(i: int) -> None:
        await budget.acquire(30)
        order.append(i)

    async def go() -> None:
        await asyncio.gather(*(take(i) for i in range(5)))

    asyncio.run(go())
    assert order == [0, 1, 2, 3, 4]


def test_retry_after_header() -> None:
    assert retry_after_s("12") == 12.0
    assert retry_after_s(" 0.5 ") == 0.5
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert retry_after_s(None) is None
    assert retry_after_s("-3") is None


def test_one_budget_per_exchange() -> None:
    budgets = Budgets()
    spot, futures = spec_for("binance_spot", "http://a"), spec_for("binance_futures", "http://b")
    assert budgets.for_spec(spot) is budgets.for_spec(futures)
    assert budgets.for_spec(spec_for("okx_spot", "http://c")) is not budgets.for_spec(spot)


# -- against the local exchange servers ----------------------------------------------------


async def _run(
    stream: str,
    *,
    throttle: int = 0,
    retry_after_s: float = 1.0,
    faults: list[Fault] | None = None,
    limits: dict[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[Any, Store, Journal, float, RateBudget]:
    """Repair ids 1000..3499 of 2500 trades; the sim refuses the first `throttle` calls with its
    rate-limit answer (``Retry-After: retry_after_s``); `faults` go through a proxy in front."""
    inst = instrument(stream)
    trades = make_trades(inst, 2500, start_us=START_US, micro=stream == "binance_spot")
    async with venue(stream, trades, limits=limits, faults=faults is not None) as ex:
        ex.sim.history.throttle_retry_after_s = retry_after_s
        ex.sim.throttle(throttle)
        if faults is not None:
            assert ex.proxy is not None
            ex.proxy.faults.extend(faults)
        spec = spec_for(stream, ex.url)
        budget = kwargs.pop("budget", None) or fast_budget(spec)
        store, journal = Store(), Journal()
        t0 = time.monotonic()
        result = await repair(
            ex.client, spec, budget, stream, inst.symbol, trades[0][0], trades[-1][0],
            instruments={inst.symbol: inst}, write=store.write, journal=journal,
            first_id=1000, last_id=3499, **kwargs,
        )  # fmt: skip
        if faults is None:  # every refusal the repair met was the sim's
            assert ex.sim.history.stats.limited == result.rate_limited
        return result, store, journal, time.monotonic() - t0, budget


def test_429_with_retry_after_slows_and_never_drops() -> None:
    result, store, journal, elapsed, budget = asyncio.run(_run("binance_spot", throttle=2))
    assert store.ids() == list(range(1000, 3500)) and result.complete
    assert result.rate_limited == 2 and budget.penalties == 2
    assert elapsed >= 0.6  # two Retry-After: 1 (the sim's least)
    assert journal.of("unrepaired") == []


def test_consecutive_429s_without_retry_after_escalate() -> None:
    """The sim always sends Retry-After; OKX 429s without it come from the fault proxy."""
    faults = [Fault(429, b'{"code":"50011","msg":"Too Many Requests","data":[]}') for _ in range(4)]
    result, store, _journal, elapsed, _budget = asyncio.run(_run("okx_spot", faults=faults))
    assert result.complete and len(store.rows) == 2500
    assert elapsed >= 0.05 + 0.1 + 0.2 + 0.4


def test_418_ban_backs_off_longer() -> None:
    """The sim's Binance futures budget, shrunk to two aggTrades calls a second and a ban on the
    first refused call: the third page is answered 418 and waits at least the ban floor."""
    ban = dataclasses.replace(sim_limit("binance_futures"), limit=40, window_s=1.0, ban_after=0, ban_s=0.2)
    result, store, _journal, elapsed, _budget = asyncio.run(_run("binance_futures", limits={"ip": ban}))
    assert result.complete and len(store.rows) == 2500
    assert result.rate_limited >= 1
    assert elapsed >= 0.3  # the ban floor of the test budget


def test_bybit_403_is_a_ban() -> None:
    stream = "bybit_futures"
    inst = instrument(stream)
    trades = make_trades(inst, 100, start_us=START_US)

    async def go() -> tuple[Any, float]:
        async with venue(stream, trades) as ex:
            ex.sim.throttle(1)  # Bybit's refusal: HTTP 403 "access too frequent"
            spec = spec_for(stream, ex.url)
            t0 = time.monotonic()
            result = await repair(
                ex.client, spec, fast_budget(spec), stream, inst.symbol, trades[0][0], trades[-1][0],
                instruments={inst.symbol: inst}, write=Store().write, journal=Journal(),
            )  # fmt: skip
            assert ex.sim.history.stats.limited == 1
            return result, time.monotonic() - t0

    result, elapsed = asyncio.run(go())
    assert result.complete and result.rate_limited == 1 and elapsed >= 0.3


def test_deadline_turns_endless_429s_into_rate_limited() -> None:
    result, store, journal, elapsed, _budget = asyncio.run(
        _run("okx_futures", throttle=50, retry_after_s=5.0, deadline_s=0.5)
    )
    assert elapsed < 2.0 and store.rows == []
    assert [m[2] for m in result.unrepaired] == ["rate_limited"]
    assert journal.of("unrepaired")[0]["reason"] == "rate_limited"


def test_two_streams_share_one_paced_budget() -> None:
    """OKX spot and SWAP repairs at once on one budget of 10 calls in any second: each needs a
    locate, 10 full pages and the empty page that proves the start was reached; 24 calls take
    at least 2 s, and both repairs are whole."""
    spot_inst, swap_inst = instrument("okx_spot"), instrument("okx_futures")
    spot_trades = make_trades(spot_inst, 1000, start_us=START_US)
    swap_trades = make_trades(swap_inst, 1000, start_us=START_US)
    rule = dataclasses.replace(spec_for("okx_spot", "http://x").rate, weight_per_window=20, window_s=1.0)
    budget = RateBudget(rule)

    async def one(ex: Venue, trades: list[Any]) -> Any:
        spec = spec_for(ex.stream, ex.url)
        store = Store()
        result = await repair(
            ex.client, spec, budget, ex.stream, ex.inst.symbol, trades[0][0], trades[-1][0],
            instruments={ex.inst.symbol: ex.inst}, write=store.write, journal=Journal(),
        )  # fmt: skip
        return result, store

    async def go() -> tuple[list[Any], float]:
        async with venue("okx_spot", spot_trades) as a, venue("okx_futures", swap_trades) as b:
            t0 = time.monotonic()
            results = await asyncio.gather(one(a, spot_trades), one(b, swap_trades))
            return list(results), time.monotonic() - t0

    results, elapsed = asyncio.run(go())
    for result, store in results:
        assert result.complete and len(store.rows) == 1000
    assert budget.spent == 24
    assert elapsed >= 1.95
