"""Paging against the project's local exchange servers (`SimExchange` history endpoints): by id
exactly, by time over the span, latest-only coverage decisions with exact spans, reach, and
error answers (the sim's own error bodies; faults it does not make come from a `FaultProxy`)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
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
    spec_for,
    venue,
)
from helpers.history_faults import Fault, FaultProxy

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.history.repair import RepairResult, make_client, repair
from pumpwatch.recorder.history.spec import HistorySpec
from pumpwatch.segments.schema import TradeRow
from pumpwatch.timeunits import US_PER_DAY, US_PER_HOUR, US_PER_MINUTE


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _repair(
    stream: str,
    trades: list[TradeRow],
    start_us: int,
    end_us: int,
    *,
    tweak: Callable[[HistorySpec], HistorySpec] = lambda spec: spec,
    setup: Callable[[FaultProxy], None] | None = None,
    inst: Instrument | None = None,
    **kwargs: Any,
) -> tuple[RepairResult, Store, Journal, Venue]:
    """Repair `inst` (the sim's own instrument by default) over `trades` held by the sim;
    `setup` queues faults on a proxy in front of it."""
    async with venue(stream, trades, faults=setup is not None) as ex:
        if setup is not None:
            assert ex.proxy is not None
            setup(ex.proxy)
        inst = inst or ex.inst
        spec = tweak(spec_for(stream, ex.url))
        store, journal = Store(), Journal()
        kwargs.setdefault("retry_delay_s", 0.01)
        budget = kwargs.pop("budget", None) or fast_budget(spec)
        result = await repair(
            ex.client, spec, budget, stream, inst.symbol, start_us, end_us,
            instruments={inst.symbol: inst}, write=store.write, journal=journal, **kwargs,
        )  # fmt: skip
        return result, store, journal, ex


# -- by id ------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", ["binance_spot", "binance_futures", "okx_spot", "okx_futures"])
def test_id_hole_is_fetched_exactly(stream: str) -> None:
    trades = make_trades(instrument(stream), 3000, start_us=START_US, micro=stream == "binance_spot")
    first, last = 1234, 3456  # ids 1000..3999
    after_us, before_us = trades[first - 1000 - 1][0], trades[last - 1000 + 1][0]
    result, store, journal, ex = run(
        _repair(stream, trades, after_us, before_us, first_id=first, last_id=last)
    )
    assert store.ids() == list(range(first, last + 1))
    assert result.complete and result.written == last - first + 1
    per_call = 100 if stream.startswith("okx") else 1000
    assert result.calls == len(ex.log)
    assert journal.of("repaired") == [
        {"symbol": trades[0][2], "base": "ABC", "start_us": after_us, "end_us": before_us,
         "trades": last - first + 1, "via": spec_for(stream, "http://x").via},
    ]  # fmt: skip
    assert journal.of("unrepaired") == []
    # never a request past what the hole needs: forward stops at last_id, backward at first_id
    assert len(ex.log) <= -(-(last - first + 1) // per_call) + 1


@pytest.mark.parametrize("stream", ["binance_spot", "binance_futures", "okx_spot", "okx_futures"])
def test_time_gap_located_then_paged_by_id(stream: str) -> None:
    trades = make_trades(instrument(stream), 2500, start_us=START_US, micro=stream == "binance_spot")
    start_us, end_us = trades[400][0] + 1, trades[2222][0]
    result, store, _journal, _ex = run(_repair(stream, trades, start_us, end_us))
    expected = sorted(int(t[8] or 0) for t in trades if start_us <= t[0] <= end_us)
    assert store.ids() == expected
    assert result.repaired == ((start_us, end_us),) and result.complete


def test_binance_locates_across_empty_hours() -> None:
    """The first two 59-minute windows hold no trade; the third locates the first id."""
    stream = "binance_futures"
    trades = make_trades(instrument(stream), 50, start_us=START_US)
    start_us = START_US - 2 * US_PER_HOUR
    result, store, _journal, ex = run(_repair(stream, trades, start_us, trades[-1][0]))
    assert store.ids() == list(range(1000, 1050))
    windows = [r.query for r in ex.log if "startTime" in r.query]
    assert len(windows) == 3
    for q in windows:
        assert int(q["endTime"]) - int(q["startTime"]) < 3_600_000
    assert result.complete


def test_binance_spot_asks_for_microseconds() -> None:
    stream = "binance_spot"
    trades = make_trades(instrument(stream), 20, start_us=START_US, micro=True)
    _result, store, _journal, ex = run(_repair(stream, trades, trades[0][0], trades[-1][0]))
    by_id = [r for r in ex.log if r.path.endswith("historicalTrades")]
    assert by_id and all(r.headers["x-mbx-time-unit"] == "MICROSECOND" for r in by_id)
    assert sorted(r[0] for r in store.rows) == [t[0] for t in trades]


# -- by time ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", ["gate_spot", "gate_futures"])
def test_time_span_is_covered_across_pages(stream: str) -> None:
    trades = make_trades(instrument(stream), 2600, start_us=START_US, micro=stream == "gate_spot")
    start_us, end_us = trades[100][0] + 1, trades[2500][0]
    result, store, journal, ex = run(_repair(stream, trades, start_us, end_us))
    expected = sorted(int(t[8] or 0) for t in trades if start_us <= t[0] <= end_us)
    assert store.ids() == expected
    assert result.complete and len(ex.log) >= 3  # 2400 trades at 1000 per page
    if stream == "gate_futures":
        assert all(r.headers.get("x-gate-size-decimal") == "1" for r in ex.log)
    assert journal.of("repaired")[0]["trades"] == len(expected)


def test_gate_window_halves_past_the_page_cap() -> None:
    """With 100 per page and at most 3 pages a window, 1000 trades need halved windows."""
    stream = "gate_spot"
    trades = make_trades(instrument(stream), 1000, start_us=START_US, step_us=(20_000, 30_000, 40_000))

    def tweak(s: HistorySpec) -> HistorySpec:
        return dataclasses.replace(s, limit=100, max_pages=3)

    result, store, _journal, ex = run(_repair(stream, trades, trades[0][0], trades[-1][0], tweak=tweak))
    assert store.ids() == list(range(1000, 2000))
    assert result.complete
    assert all(int(r.query["page"]) <= 3 for r in ex.log)


# -- latest only ------------------------------------------------------------------------------


def test_latest_covers_a_gap_inside_its_answer() -> None:
    stream = "bybit_spot"
    trades = make_trades(instrument(stream), 500, start_us=START_US, step_us=(1000,))
    start_us, end_us = trades[-50][0], trades[-10][0]  # the last 60 reach back past the start
    result, store, journal, _ex = run(_repair(stream, trades, start_us, end_us))
    assert result.complete and result.repaired == ((start_us, end_us),)
    assert store.ids() == [int(t[8] or 0) for t in trades[-50:-9]]
    assert journal.of("unrepaired") == []


@pytest.mark.parametrize(
    "stream",
    ["bybit_spot", "bybit_futures", "kucoin_spot", "kucoin_futures", "phemex_spot", "phemex_futures"],
)
def test_latest_short_of_the_gap_start_leaves_exact_no_history(stream: str) -> None:
    trades = make_trades(instrument(stream), 1500, start_us=START_US, step_us=(1000,))
    cap = {"bybit_spot": 60, "bybit_futures": 1000, "kucoin_spot": 100, "kucoin_futures": 100}.get(
        stream, 200
    )
    oldest = trades[-cap][0]
    start_us, end_us = trades[0][0], trades[-1][0]
    result, store, journal, _ex = run(_repair(stream, trades, start_us, end_us))
    assert result.unrepaired == ((start_us, oldest, "no_history"),)
    assert result.repaired == ((oldest + 1, end_us),)
    assert len(store.rows) == cap
    [missing] = journal.of("unrepaired")
    assert missing == {
        "symbol": trades[0][2],
        "base": "ABC",
        "start_us": start_us,
        "end_us": oldest,
        "reason": "no_history",
    }
    assert journal.of("repaired")[0]["start_us"] == oldest + 1


def test_latest_answer_newer_than_the_gap_repairs_nothing() -> None:
    stream = "kucoin_spot"
    trades = make_trades(instrument(stream), 500, start_us=START_US, step_us=(1000,))
    result, store, journal, _ex = run(_repair(stream, trades, trades[10][0], trades[20][0]))
    assert result.unrepaired == ((trades[10][0], trades[20][0], "no_history"),)
    assert result.repaired == () and store.rows == [] and journal.of("repaired") == []


def test_latest_short_answer_is_everything_where_documented() -> None:
    """Bybit returns fewer than `limit` trades only when that is all there is: covered."""
    stream = "bybit_futures"
    trades = make_trades(instrument(stream), 30, start_us=START_US)
    result, store, _journal, _ex = run(_repair(stream, trades, START_US - US_PER_MINUTE, trades[-1][0]))
    assert result.complete and len(store.rows) == 30


def test_phemex_short_answer_is_not_taken_as_everything() -> None:
    stream = "phemex_futures"
    trades = make_trades(instrument(stream), 30, start_us=START_US, step_us=(1000,))
    start_us = START_US - US_PER_MINUTE
    result, _store, _journal, _ex = run(_repair(stream, trades, start_us, trades[-1][0]))
    assert result.unrepaired == ((start_us, trades[0][0], "no_history"),)


# -- reach and errors -------------------------------------------------------------------------


def test_beyond_reach_costs_no_call() -> None:
    stream = "okx_spot"
    trades = make_trades(instrument(stream), 10, start_us=START_US)
    old_start, old_end = START_US - 200 * US_PER_DAY, START_US - 100 * US_PER_DAY
    result, _store, journal, ex = run(_repair(stream, trades, old_start, old_end))
    assert result.unrepaired == ((old_start, old_end, "beyond_reach"),) and ex.log == []
    assert journal.of("unrepaired")[0]["reason"] == "beyond_reach"


def test_span_straddling_reach_repairs_the_reachable_part() -> None:
    stream = "okx_spot"
    trades = make_trades(instrument(stream), 300, start_us=START_US)
    old_start = START_US - 95 * US_PER_DAY
    now = START_US + 600_000_000
    result, store, _journal, _ex = run(_repair(stream, trades, old_start, trades[-1][0], now_us=lambda: now))
    reach_start = now - 90 * US_PER_DAY + 3_600_000_000
    assert result.unrepaired == ((old_start, reach_start - 1, "beyond_reach"),)
    assert result.repaired == ((reach_start, trades[-1][0]),)
    assert len(store.rows) == 300


def test_error_body_ends_with_exchange_error() -> None:
    """The sim answers a symbol it does not list with Binance's -1121 body (HTTP 400)."""
    stream = "binance_spot"
    trades = make_trades(instrument(stream), 10, start_us=START_US)
    unknown = instrument(stream, "NOPE")
    result, store, _journal, _ex = run(
        _repair(stream, trades, trades[0][0], trades[-1][0], first_id=1000, last_id=1009, inst=unknown)
    )
    [(lo, hi, reason)] = result.unrepaired
    assert (lo, hi) == (trades[0][0], trades[-1][0]) and reason.startswith("exchange_error: HTTP 400")
    assert "Invalid symbol" in reason and store.rows == []


def test_okx_error_code_in_a_200_answer() -> None:
    """The sim answers an instId it does not list with HTTP 200 and code 51001."""
    stream = "okx_futures"
    trades = make_trades(instrument(stream), 10, start_us=START_US)
    unknown = instrument(stream, "NOPE")
    result, *_ = run(_repair(stream, trades, trades[0][0], trades[-1][0], inst=unknown))
    assert result.unrepaired[0][2].startswith("exchange_error: okx 51001: Instrument ID does not exist")


def test_error_midway_keeps_what_was_paged() -> None:
    """Forward paging fails on its third call: the part paged is repaired, the rest is not."""
    stream = "binance_spot"
    trades = make_trades(instrument(stream), 3000, start_us=START_US, micro=True)

    def setup(ex: FaultProxy) -> None:
        ex.fail_after, ex.fail_with = 2, Fault(400, b'{"code":-1100,"msg":"Illegal characters"}')

    start, end = trades[0][0], trades[-1][0]
    result, store, journal, _ex = run(
        _repair(stream, trades, start, end, first_id=1000, last_id=3999, setup=setup)
    )
    assert store.ids() == list(range(1000, 3000))
    t_last = trades[1999][0]
    assert result.repaired == ((start, t_last - 1),)
    assert result.unrepaired[0][:2] == (t_last, end)
    assert journal.of("repaired")[0]["trades"] == 2000


def test_backward_error_midway_keeps_the_newer_part() -> None:
    stream = "okx_spot"
    trades = make_trades(instrument(stream), 450, start_us=START_US)

    def setup(ex: FaultProxy) -> None:
        ex.fail_after, ex.fail_with = 2, Fault(400, b'{"code":"50000","msg":"Body can not be empty"}')

    start, end = trades[0][0], trades[-1][0]
    result, store, _journal, _ex = run(
        _repair(stream, trades, start, end, first_id=1000, last_id=1449, setup=setup)
    )
    assert store.ids() == list(range(1250, 1450))
    t_oldest = trades[250][0]
    assert result.repaired == ((t_oldest + 1, end),)
    assert result.unrepaired[0][:2] == (start, t_oldest)


def test_server_errors_are_retried() -> None:
    stream = "gate_futures"
    trades = make_trades(instrument(stream), 50, start_us=START_US)

    def setup(ex: FaultProxy) -> None:
        ex.faults.extend([Fault(502, b"bad gateway"), Fault(500, b'{"label":"SERVER_ERROR"}')])

    result, store, _journal, _ex = run(_repair(stream, trades, trades[0][0], trades[-1][0], setup=setup))
    assert result.complete and len(store.rows) == 50


def test_unknown_instrument_is_a_caller_error() -> None:
    stream = "gate_spot"
    spec = spec_for(stream, "http://127.0.0.1:9")

    async def go() -> None:
        async with make_client() as client:
            await repair(
                client,
                spec,
                fast_budget(spec),
                stream,
                "NOPE_USDT",
                1,
                2,
                instruments={},
                write=Store().write,
                journal=Journal(),
            )

    with pytest.raises(ValueError, match="unknown instrument"):
        run(go())


def test_forward_id_hole_straddling_reach_locates_the_reachable_part() -> None:
    """Binance futures keeps a year: the hole's first ids are beyond reach, so paging starts at
    the id located at the reach limit and still stops exactly at last_id."""
    stream = "binance_futures"
    trades = make_trades(instrument(stream), 500, start_us=START_US)
    now = trades[250][0] + 365 * US_PER_DAY - 3_600_000_000  # the reach limit falls on trade 250
    start, end = trades[0][0], trades[400][0]
    result, store, _journal, _ex = run(
        _repair(stream, trades, start, end, first_id=1000, last_id=1400, now_us=lambda: now)
    )
    reach_start = trades[250][0]
    assert result.unrepaired == ((start, reach_start - 1, "beyond_reach"),)
    assert store.ids() == [int(t[8] or 0) for t in trades if t[0] >= reach_start and int(t[8] or 0) <= 1400]


def test_long_repairs_are_written_in_batches() -> None:
    stream = "binance_spot"
    trades = make_trades(instrument(stream), 2500, start_us=START_US, micro=True)
    result, store, journal, _ex = run(
        _repair(stream, trades, trades[0][0], trades[-1][0], first_id=1000, last_id=3499, flush_rows=1000)
    )
    assert store.calls == 3 and result.written == 2500 == journal.of("repaired")[0]["trades"]


def test_rows_already_stored_are_not_counted_as_written() -> None:
    stream = "okx_spot"
    trades = make_trades(instrument(stream), 300, start_us=START_US)
    inst = instrument(stream)

    async def go() -> tuple[RepairResult, Journal]:
        async with venue(stream, trades) as ex:
            spec = spec_for(stream, ex.url)
            store, journal = Store(), Journal()
            store.write(trades[:200], 0)  # the live stream got these
            result = await repair(
                ex.client, spec, fast_budget(spec), stream, inst.symbol, trades[0][0], trades[-1][0],
                instruments={inst.symbol: inst}, write=store.write, journal=journal,
            )  # fmt: skip
            assert len(store.rows) == 300
            return result, journal

    result, journal = run(go())
    assert result.fetched == 300 and result.written == 100
    assert journal.of("repaired")[0]["trades"] == 100


@pytest.mark.parametrize("stream", ["binance_spot", "binance_futures", "okx_futures", "gate_spot"])
def test_trades_older_than_the_live_time_bound_are_repaired(stream: str) -> None:
    """The live decoder refuses a trade more than a day from its receive time; REST rows are
    checked against their own REST time instead, so a 20-day-old gap is repaired whole."""
    old_start = (START_US - 20 * US_PER_DAY) // 1000 * 1000
    trades = make_trades(instrument(stream), 300, start_us=old_start, micro=stream == "binance_spot")
    result, store, _journal, _ex = run(_repair(stream, trades, trades[0][0], trades[-1][0]))
    assert result.complete and store.ids() == list(range(1000, 1300))
    assert sorted(r[0] for r in store.rows) == [t[0] for t in trades]


# -- live and fetched copies of a trade ----------------------------------------------------------


@pytest.mark.parametrize("stream", ["phemex_spot", "bybit_spot", "binance_spot"])
def test_admit_stores_each_trade_once_whichever_copy_comes_first(stream: str) -> None:
    """The worker passes its live de-duplicator as `admit`: fetched trades the connection
    already delivered are not written, and a copy it delivers only after the repair (Phemex's
    snapshot of recent trades after a resubscribe) is then dropped by the live filter."""
    from pumpwatch.recorder.adapters import get_adapter
    from pumpwatch.recorder.stream.dedupe import Deduper

    # sizes as a live decode gives them (Phemex's wire sizes are integers of 1e-8)
    made = make_trades(instrument(stream), 500, start_us=START_US, step_us=(1000,))
    trades = [(*t[:6], round(t[6], 8), *t[7:]) for t in made]
    live = Deduper(get_adapter(stream).dedupe_key)
    assert live.filter(trades[-50:-40]) == trades[-50:-40]  # received before the connection stalled
    start_us, end_us = trades[-50][0], trades[-10][0]
    first_id = last_id = None
    if stream == "binance_spot":  # by id: the hole's ids
        first_id, last_id = int(trades[-50][8] or 0), int(trades[-10][8] or 0)
    result, store, _journal, _ex = run(
        _repair(stream, trades, start_us, end_us, admit=live.filter, first_id=first_id, last_id=last_id)
    )
    assert result.complete
    fetched = trades[-40:-9]
    assert [(r[0], r[5], r[6], r[7]) for r in store.rows] == [(t[0], t[5], t[6], t[7]) for t in fetched]
    assert result.written == len(fetched)
    # the new connection's replay of recent trades: every one of them is stored already
    assert live.filter(trades[-60:-9]) == trades[-60:-50]
    assert live.filter(trades[-9:]) == trades[-9:]  # and what is new still passes
