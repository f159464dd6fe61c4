"""A page the adapter shortened is still a full page (review of issue 10, finding 1).

Gate futures ``is_internal`` prints and Bybit block trades (``drop_block_trades: true``) are
left out of the rows, as live. Whether the history is exhausted (by time: the window is done;
latest-only: the answer holds everything) is decided on the answer's own count
(`HistoryPage.n_raw`): one dropped print on a full page must not end the paging and get the
span journaled `repaired` while trades are missing. Against the local exchange servers, whose
history flags chosen stored trades as internal / block (`HistoryService.flag_off_market`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson
import pytest
from helpers.history import START_US, Journal, Store, fast_budget, instrument, make_trades, spec_for, venue

from pumpwatch.recorder.history.gate import parse_futures_trades
from pumpwatch.recorder.history.repair import RepairResult, repair
from pumpwatch.recorder.history.spec import HistoryPage
from pumpwatch.segments.schema import TradeRow
from pumpwatch.timeunits import US_PER_MINUTE


def _run(
    stream: str,
    trades: list[TradeRow],
    start_us: int,
    end_us: int,
    flagged: set[str],
    options: Mapping[str, Any] | None = None,
) -> tuple[RepairResult, Store, Journal, int]:
    async def go() -> tuple[RepairResult, Store, Journal, int]:
        async with venue(stream, trades) as ex:
            ex.sim.history.flag_off_market(flagged)
            spec = spec_for(stream, ex.url, options)
            store, journal = Store(), Journal()
            result = await repair(
                ex.client, spec, fast_budget(spec), stream, ex.inst.symbol, start_us, end_us,
                instruments={ex.inst.symbol: ex.inst}, write=store.write, journal=journal,
                retry_delay_s=0.01,
            )  # fmt: skip
            return result, store, journal, len(ex.log)

    return asyncio.run(asyncio.wait_for(go(), 60))


def test_gate_futures_internal_print_on_a_full_page_does_not_end_the_window() -> None:
    """1,500 trades in one hour window, one of the newest 1,000 an internal print: the first page
    (1,000 answered, 999 kept) is full, so the second page is fetched and every market trade is
    stored; the reviewer's case ended after one call with 501 trades missing and `repaired`."""
    stream = "gate_futures"
    trades = make_trades(instrument(stream), 1500, start_us=START_US, step_us=(1000,))
    internal = trades[1490][8]
    assert internal is not None
    result, store, journal, calls = _run(stream, trades, trades[0][0], trades[-1][0], {internal})
    want = sorted(int(t[8] or 0) for t in trades if t[8] != internal)
    assert store.ids() == want  # the internal print is not stored, every market trade is
    assert result.complete and result.written == 1499
    assert calls >= 2
    assert [e["trades"] for e in journal.of("repaired")] == [1499]


def test_gate_futures_window_that_is_all_internal_on_its_first_page() -> None:
    """A full page of which nothing is kept (1,000 internal prints) still pages on."""
    stream = "gate_futures"
    trades = make_trades(instrument(stream), 1200, start_us=START_US, step_us=(1000,))
    flagged = {str(t[8]) for t in trades[200:]}
    result, store, _journal, _calls = _run(stream, trades, trades[0][0], trades[-1][0], flagged)
    assert store.ids() == [int(t[8] or 0) for t in trades[:200]]
    assert result.complete


def test_bybit_block_trade_in_a_full_answer_is_not_everything() -> None:
    """``drop_block_trades: true``: the latest 60 spot trades hold one block trade; 59 rows are
    left, but the answer was full, so the part of the gap older than it stays `no_history`."""
    stream = "bybit_spot"
    trades = make_trades(instrument(stream), 500, start_us=START_US, step_us=(1000,))
    block = trades[-5][8]
    assert block is not None
    start_us, end_us = trades[100][0], trades[-1][0]
    result, store, journal, calls = _run(
        stream, trades, start_us, end_us, {block}, options={"drop_block_trades": True}
    )
    oldest = trades[-60][0]
    assert calls == 1
    assert len(store.rows) == 59 and block not in {r[8] for r in store.rows}
    assert result.unrepaired == ((start_us, oldest, "no_history"),)
    assert result.repaired == ((oldest + 1, end_us),)
    assert journal.of("unrepaired")[0]["reason"] == "no_history"


def test_bybit_short_answer_with_a_block_trade_is_everything() -> None:
    """Fewer than 60 trades in all (one a block trade): the answer holds every trade there is."""
    stream = "bybit_spot"
    trades = make_trades(instrument(stream), 40, start_us=START_US, step_us=(1000,))
    block = trades[10][8]
    assert block is not None
    start_us = START_US - US_PER_MINUTE
    result, store, _journal, _calls = _run(
        stream, trades, start_us, trades[-1][0], {block}, options={"drop_block_trades": True}
    )
    assert result.complete and len(store.rows) == 39


def test_every_parser_counts_the_answer_not_the_rows() -> None:
    inst = instrument("gate_futures")
    ms = START_US // 1000
    body = orjson.dumps(
        [
            {"id": 2, "contract": inst.symbol, "size": "1", "price": "1.5", "create_time_ms": ms + 1,
             "is_internal": True},
            {"id": 1, "contract": inst.symbol, "size": "-1", "price": "1.5", "create_time_ms": ms},
        ]
    )  # fmt: skip
    page = parse_futures_trades(body, START_US + 10_000_000, inst)
    assert len(page.rows) == 1 and page.n_raw == 2


STREAMS = [
    f"{exchange}_{market}"
    for exchange in ("binance", "okx", "gate", "bybit", "kucoin", "phemex")
    for market in ("spot", "futures")
]


@pytest.mark.parametrize("stream", STREAMS)
def test_each_parser_counts_the_answer(stream: str) -> None:
    """Every exchange's parser sets `n_raw` to the trades its answer held (here, with nothing
    dropped, as many as the rows), against the local server's real answer."""
    trades = make_trades(instrument(stream), 50, start_us=START_US, micro=stream == "binance_spot")

    async def go() -> HistoryPage:
        async with venue(stream, trades) as ex:
            spec = spec_for(stream, ex.url)
            sym = ex.inst.symbol
            if spec.kind == "latest":
                assert spec.request_latest is not None
                request = spec.request_latest(sym, spec.limit)
            elif spec.kind == "by_time":
                assert spec.request_time is not None
                request = spec.request_time(sym, trades[0][0], trades[-1][0], 1, spec.limit)
            else:
                assert spec.request_ids is not None
                request = spec.request_ids(sym, 1000 if spec.direction == "forward" else 1050, spec.limit)
            answer = await ex.client.request(request.method, request.url, headers=dict(request.headers))
            assert answer.status_code == 200, answer.text
            return spec.parse(answer.content, START_US + 60_000_000, ex.inst)

    page = asyncio.run(asyncio.wait_for(go(), 30))
    assert page.n_raw == len(page.rows) == 50
