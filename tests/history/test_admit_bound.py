"""A long repair must not push the live de-duplicator's recent keys out (review of issue 10,
finding 4).

The worker passes its live de-duplicator's `filter` as `admit`. It keeps at most 100,000 keys
per symbol and evicts the earliest-arrived first: those are the trades just received live. A
repair of 120,000 trades handed to it in batches of 50,000 evicted them from the second batch
on, so a second copy of a just-received trade (the other connection of `redundancy: 2`, a
rotation's overlap) passed and was stored twice. Only the rows near the span's end go through
`admit` now (`repair.ADMIT_WINDOW_US`, `ADMIT_MAX_ROWS`); the rest rely on the store's own
de-duplication. Against the local Binance futures server.
"""

from __future__ import annotations

import asyncio

from helpers.history import START_US, Journal, Store, fast_budget, instrument, make_trades, spec_for, venue

from pumpwatch.recorder.adapters import get_adapter
from pumpwatch.recorder.history.repair import ADMIT_MAX_ROWS, RepairResult, repair
from pumpwatch.recorder.stream.dedupe import MAX_KEYS, Deduper

GAP = 120_000
LIVE = 300


def test_a_long_repair_keeps_the_live_keys_of_the_deduplicator() -> None:
    stream = "binance_futures"
    trades = make_trades(instrument(stream), GAP + LIVE, start_us=START_US, step_us=(0, 500, 1000))
    gap, live = trades[:GAP], trades[GAP:]
    dedupe = Deduper(get_adapter(stream).dedupe_key)
    assert dedupe.filter(live) == live  # received live after the connection came back

    async def go() -> tuple[RepairResult, Store]:
        async with venue(stream, trades) as ex:
            spec = spec_for(stream, ex.url)
            store = Store()
            result = await repair(
                ex.client, spec, fast_budget(spec), stream, ex.inst.symbol, gap[0][0], gap[-1][0],
                instruments={ex.inst.symbol: ex.inst}, write=store.write, journal=Journal(),
                admit=dedupe.filter, first_id=1000, last_id=1000 + GAP - 1,
            )  # fmt: skip
            return result, store

    result, store = asyncio.run(asyncio.wait_for(go(), 120))
    assert result.complete and result.written == GAP and store.ids() == list(range(1000, 1000 + GAP))
    # the other connection's copies of the live trades: all known still, none stored twice
    assert dedupe.filter(live) == []
    # the repair's newest trades are remembered (a late push of them is dropped) ...
    assert dedupe.filter(gap[-100:]) == []
    # ... and the de-duplicator holds no more than the bound lets through
    assert dedupe.keys_held(gap[0][2]) <= LIVE + ADMIT_MAX_ROWS < MAX_KEYS
