"""By-id paging claims only what the answers prove (issue 10): where the ids of a stream count
up by one, an answer that skips ids, or a history that ends before an id the live stream saw,
leaves the rest of the span `unrepaired` (``exchange_error``) instead of journaling it
`repaired`. Against the local exchanges' REST history, which hold the trades given to them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers.history import START_US, Journal, Store, fast_budget, instrument, make_trades, spec_for, venue

from pumpwatch.recorder.history.pager import EXCHANGE_ERROR
from pumpwatch.recorder.history.repair import RepairResult, repair
from pumpwatch.segments.schema import TradeRow

ID_KEYED = ["binance_spot", "binance_futures", "okx_spot", "okx_futures"]


def _trades(stream: str, count: int) -> list[TradeRow]:
    return make_trades(instrument(stream), count, start_us=START_US, micro=stream == "binance_spot")


def _repair(stream: str, trades: list[TradeRow], start_us: int, end_us: int, **kwargs: Any) -> Any:
    async def body() -> tuple[RepairResult, Store, Journal]:
        async with venue(stream, trades) as ex:
            spec = spec_for(stream, ex.url)
            store, journal = Store(), Journal()
            result = await repair(
                ex.client, spec, fast_budget(spec), stream, ex.inst.symbol, start_us, end_us,
                instruments={ex.inst.symbol: ex.inst}, write=store.write, journal=journal,
                retry_delay_s=0.01, **kwargs,
            )  # fmt: skip
            return result, store, journal

    return asyncio.run(asyncio.wait_for(body(), 60))


def _covers(journal: Journal, t_us: int) -> bool:
    return any(e["start_us"] <= t_us <= e["end_us"] for e in journal.of("repaired"))


@pytest.mark.parametrize("stream", ID_KEYED)
def test_ids_absent_from_the_answer_are_never_claimed(stream: str) -> None:
    """The exchange's history lacks ids 1300..1309 (ids 1000..1999 otherwise): a repair of the
    hole 1200..1500 writes what there is, and no `repaired` span reaches the absent trades."""
    trades = _trades(stream, 1000)
    absent = [t for t in trades if 1300 <= int(t[8] or 0) <= 1309]
    offered = [t for t in trades if t not in absent]
    first, last = 1200, 1500
    after_us, before_us = trades[first - 1000 - 1][0], trades[last - 1000 + 1][0]
    result, store, journal = _repair(stream, offered, after_us, before_us, first_id=first, last_id=last)
    assert not result.complete
    assert [e["reason"] for e in journal.of("unrepaired")] == [
        f"{EXCHANGE_ERROR}: trade ids 1300..1309 not in the answer"
    ]
    for t in absent:
        assert not _covers(journal, t[0]), f"{stream}: id {t[8]} claimed repaired: {journal.of('repaired')}"
    # what was paged before (forward) or after (backward) the missing ids is stored
    paged = set(store.ids())
    if stream.startswith("okx"):  # newest first
        assert set(range(1310, last + 1)) <= paged
    else:
        assert set(range(first, 1300)) <= paged


@pytest.mark.parametrize("stream", ID_KEYED)
def test_history_ending_before_the_known_last_id_is_not_repaired(stream: str) -> None:
    """The live stream saw ids up to 1600, the REST history ends at 1549 (it lags, or lost
    them): ids 1550..1599 are not claimed."""
    trades = _trades(stream, 700)
    offered = [t for t in trades if int(t[8] or 0) < 1550]
    first, last = 1500, 1599
    after_us, before_us = trades[first - 1000 - 1][0], trades[last - 1000 + 1][0]
    result, _store, journal = _repair(stream, offered, after_us, before_us, first_id=first, last_id=last)
    assert not result.complete
    for t in trades:
        if 1550 <= int(t[8] or 0) <= last:
            assert not _covers(journal, t[0]), f"{stream}: id {t[8]} claimed: {journal.of('repaired')}"
