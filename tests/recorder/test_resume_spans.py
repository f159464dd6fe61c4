"""The spans the runner hands to repair around a quiet resume (issue 10): a symbol that trades
nothing within the id grace after resubscribing is repaired up to its resume time, and its first
trade afterwards settles the gap again, so ids skipped right after the resume are repaired too.
Real runner against a local server, delays shrunk."""

from __future__ import annotations

import asyncio
import time

import pytest
from helpers.json_exchange import Harness, make_adapter, make_protocol

from pumpwatch.recorder.stream.continuity import Missing
from pumpwatch.recorder.stream.runner import REFETCH_IDS
from pumpwatch.segments.schema import TradeRow

GRACE_S = 0.2


def _trade(n: int, symbol: str = "AAAUSDT") -> TradeRow:
    t_us = time.time_ns() // 1000
    return (t_us, 0, symbol, symbol[:-4], "USDT", 1.0 + n / 1000, 1.0, "buy", str(n))


@pytest.mark.parametrize("jump", [3, REFETCH_IDS + 50])
def test_first_trade_after_a_quiet_resume_settles_the_ids_after_it(jump: int) -> None:
    spans: list[Missing] = []

    async def main() -> None:
        async with Harness(
            make_adapter(),
            make_protocol(),
            ["AAA"],
            on_missing=spans.append,
            contiguous_ids=True,
            id_grace_s=GRACE_S,
        ) as h:
            await h.subscribed()
            h.sim.publish([_trade(10)])
            await h.until(lambda: len(h.received) == 1)
            h.sim.drop_all()
            await h.until(lambda: h.runner.stats.reconnects == 1)
            await h.subscribed()
            await h.until(lambda: len(spans) == 1, timeout_s=5.0)  # quiet: handed out
            quiet = spans[0]
            assert (quiet.first_id, quiet.last_id) == (11, None)
            resumed_us = quiet.end_us
            await asyncio.sleep(0.05)
            nxt = _trade(10 + jump)  # ids 11 .. 10 + jump - 1 never arrived
            h.sim.publish([nxt])
            await h.until(lambda: len(spans) == 2, timeout_s=5.0)
            settle = spans[1]
            assert settle.last_id == 10 + jump - 1 and settle.end_us >= nxt[0]
            if jump - 1 <= REFETCH_IDS:
                assert settle.first_id == 11  # by id, from the last id before the gap
            else:  # only what follows the quiet repair, located by time
                assert settle.first_id is None and settle.start_us == resumed_us

    asyncio.run(asyncio.wait_for(main(), 60))
