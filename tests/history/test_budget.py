"""The per-exchange rate budget: pacing, reserve, 429/418 backoff with escalation, deadlines;
and against a real local server: rate-limit answers slow a repair and never drop a page."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest

from history.conftest import START_US, Journal, Store, fast_budget, instrument, spec_for
from history.fake_exchange import FakeExchange, Fault, make_trades
from pumpwatch.recorder.history.budget import RateBudget, retry_after_s
from pumpwatch.recorder.history.repair import make_client, repair
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


def test_reserve_caps_the_burst_and_refill_paces() -> None:
    ft = FakeTime()
    budget = _budget(ft)
    assert budget.capacity == 50.0 and budget.refill_per_s == 5.0

    async def go() -> None:
        for _ in range(5):
            assert await budget.acquire(10)
        assert ft.slept == []  # 50 = the usable half of 100
        assert await budget.acquire(10)
        assert ft.slept == [pytest.approx(2.0)]  # 10 weight at 5 per second

    asyncio.run(go())
    assert budget.spent == 60


def test_deadline_refuses_without_taking() -> None:
    ft = FakeTime()
    budget = _budget(ft)

    async def go() -> None:
        assert await budget.acquire(50)
        assert not await budget.acquire(10, deadline=ft.now + 1.0)  # needs 2 s
        assert ft.slept == [] and budget.spent == 50
        assert await budget.acquire(10, deadline=ft.now + 3.0)

    asyncio.run(go())


def test_heavier_than_the_bucket_waits_for_a_full_bucket() -> None:
    ft = FakeTime()
    budget = _budget(ft)

    async def go() -> None:
        assert await budget.acquire(10)
        assert await budget.acquire(500)  # clamped to the 50 the bucket holds
        assert sum(ft.slept) == pytest.approx(2.0)

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


# -- against a local server -------------------------------------------------------------------


async def _run(
    stream: str, faults: list[Fault], **kwargs: Any
) -> tuple[Any, Store, Journal, float, RateBudget]:
    inst = instrument(stream)
    trades = make_trades(inst, 2500, start_us=START_US, micro=stream == "binance_spot")
    async with FakeExchange(stream, inst, trades) as ex, make_client() as client:
        ex.faults.extend(faults)
        spec = spec_for(stream, ex.url)
        budget = kwargs.pop("budget", None) or fast_budget(spec)
        store, journal = Store(), Journal()
        t0 = time.monotonic()
        result = await repair(
            client, spec, budget, stream, inst.symbol, trades[0][0], trades[-1][0],
            instruments={inst.symbol: inst}, write=store.write, journal=journal,
            first_id=1000, last_id=3499, **kwargs,
        )  # fmt: skip
        return result, store, journal, time.monotonic() - t0, budget


def test_429_with_retry_after_slows_and_never_drops() -> None:
    faults = [Fault(429, headers={"Retry-After": "0.3"}), Fault(429, headers={"Retry-After": "0.3"})]
    result, store, journal, elapsed, budget = asyncio.run(_run("binance_spot", faults))
    assert store.ids() == list(range(1000, 3500)) and result.complete
    assert result.rate_limited == 2 and budget.penalties == 2
    assert elapsed >= 0.6
    assert journal.of("unrepaired") == []


def test_consecutive_429s_without_retry_after_escalate() -> None:
    faults = [Fault(429, b'{"code":"50011","msg":"Too Many Requests","data":[]}') for _ in range(4)]
    result, store, _journal, elapsed, _budget = asyncio.run(_run("okx_spot", faults))
    assert result.complete and len(store.rows) == 2500
    assert elapsed >= 0.05 + 0.1 + 0.2 + 0.4


def test_418_ban_backs_off_longer() -> None:
    faults = [Fault(418, b'{"code":-1003,"msg":"Way too many requests; IP banned."}', {"Retry-After": "0"})]
    result, store, _journal, elapsed, _budget = asyncio.run(_run("binance_futures", faults))
    assert result.complete and len(store.rows) == 2500
    assert elapsed >= 0.3  # the ban floor of the test budget, although Retry-After said 0


def test_bybit_403_is_a_ban() -> None:
    stream = "bybit_futures"
    inst = instrument(stream)
    trades = make_trades(inst, 100, start_us=START_US)

    async def go() -> tuple[Any, float]:
        async with FakeExchange(stream, inst, trades) as ex, make_client() as client:
            ex.faults.append(Fault(403, b"access too frequent"))
            spec = spec_for(stream, ex.url)
            t0 = time.monotonic()
            result = await repair(
                client, spec, fast_budget(spec), stream, inst.symbol, trades[0][0], trades[-1][0],
                instruments={inst.symbol: inst}, write=Store().write, journal=Journal(),
            )  # fmt: skip
            return result, time.monotonic() - t0

    result, elapsed = asyncio.run(go())
    assert result.complete and result.rate_limited == 1 and elapsed >= 0.3


def test_deadline_turns_endless_429s_into_rate_limited() -> None:
    faults = [Fault(429, headers={"Retry-After": "5"}) for _ in range(50)]
    result, store, journal, elapsed, _budget = asyncio.run(_run("okx_futures", faults, deadline_s=0.5))
    assert elapsed < 2.0 and store.rows == []
    assert [m[2] for m in result.unrepaired] == ["rate_limited"]
    assert journal.of("unrepaired")[0]["reason"] == "rate_limited"


def test_two_streams_share_one_paced_budget() -> None:
    """OKX spot and SWAP repairs at once on one budget of 10 calls/s (burst 10): each needs a
    locate, 10 full pages and the empty page that proves the start was reached; 24 calls take
    at least 1.4 s, and both repairs are whole."""
    spot_inst, swap_inst = instrument("okx_spot"), instrument("okx_futures")
    spot_trades = make_trades(spot_inst, 1000, start_us=START_US)
    swap_trades = make_trades(swap_inst, 1000, start_us=START_US)
    rule = dataclasses.replace(spec_for("okx_spot", "http://x").rate, weight_per_window=20, window_s=1.0)
    budget = RateBudget(rule)

    async def one(ex: FakeExchange, client: Any, trades: list[Any]) -> Any:
        spec = spec_for(ex.stream, ex.url)
        store = Store()
        result = await repair(
            client, spec, budget, ex.stream, ex.inst.symbol, trades[0][0], trades[-1][0],
            instruments={ex.inst.symbol: ex.inst}, write=store.write, journal=Journal(),
        )  # fmt: skip
        return result, store

    async def go() -> tuple[list[Any], float]:
        async with (
            FakeExchange("okx_spot", spot_inst, spot_trades) as a,
            FakeExchange("okx_futures", swap_inst, swap_trades) as b,
            make_client() as client,
        ):
            t0 = time.monotonic()
            results = await asyncio.gather(one(a, client, spot_trades), one(b, client, swap_trades))
            return list(results), time.monotonic() - t0

    results, elapsed = asyncio.run(go())
    for result, store in results:
        assert result.complete and len(store.rows) == 1000
    assert budget.spent == 24
    assert elapsed >= 1.35
