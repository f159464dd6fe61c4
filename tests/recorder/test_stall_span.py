"""A stall long enough to trip the watchdog (issue 10, the bench author's "a long stall loses
trades before the journal shows a gap"): the trades the exchange published while the
connection was silent are lost with it. The span reported for repair must start at the last
trade or byte received before the stall, not when the watchdog fired; the ``disconnected``
event is journaled only when it fired. Real runner against a local server, delays shrunk.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from helpers.json_exchange import Harness, make_adapter, make_protocol

from pumpwatch.recorder.stream.continuity import Missing
from pumpwatch.segments.schema import TradeRow

QUIET_S = 0.6


def _trade(n: int, symbol: str = "AAAUSDT") -> TradeRow:
    t_us = time.time_ns() // 1000
    return (t_us, 0, symbol, symbol[:-4], "USDT", 1.0 + n / 1000, 1.0, "buy", str(n))


@pytest.mark.parametrize("contiguous_ids", [False, True])
def test_the_span_lost_to_a_stall_starts_before_its_first_lost_trade(contiguous_ids: bool) -> None:
    spans: list[Missing] = []

    async def main() -> None:
        adapter = make_adapter(quiet_timeout_s=QUIET_S, ping_interval_s=0.1)
        async with Harness(
            adapter,
            make_protocol(),
            ["AAA"],
            on_missing=spans.append,
            contiguous_ids=contiguous_ids,
            id_grace_s=0.2,
        ) as h:
            await h.subscribed()
            before = _trade(1)
            h.sim.publish([before])
            await h.until(lambda: len(h.received) == 1)
            h.sim.stall(QUIET_S * 3)  # nothing sent, nothing read: the watchdog fires
            lost: list[TradeRow] = []
            for n in range(2, 6):  # queued behind the stall, lost with the connection
                await asyncio.sleep(0.05)
                lost.append(_trade(n))
                h.sim.publish([lost[-1]])
            await h.until(lambda: h.runner.stats.reconnects == 1, timeout_s=5.0)
            await h.subscribed()
            await asyncio.sleep(0.1)
            h.sim.publish([_trade(6)])
            await h.until(lambda: any(r[8] == "6" for r in h.received))
            await h.until(lambda: bool(spans), timeout_s=5.0)
            disc: dict[str, Any] = next(f for e, f in h.journal.events if e == "disconnected")
            assert disc["reason"].startswith("silent for ")
            assert [r[8] for r in h.received] == ["1", "6"]
            span = spans[0]
            # The journal's disconnect comes a watchdog timeout after the stall began ...
            first_lost_mono = time.monotonic() - (time.time_ns() // 1000 - lost[0][0]) / 1e6
            assert disc["t"] - first_lost_mono >= QUIET_S * 0.8
            # ... but the span handed to repair starts at the last trade received before it.
            assert span.start_us <= before[0] <= lost[0][0]
            assert span.end_us >= lost[-1][0]
            if contiguous_ids:
                assert (span.first_id, span.last_id) == (2, 5)

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_trade_sent_while_not_listening_but_stamped_after_the_resume_is_inside_the_span() -> None:
    """An exchange's clock may run ahead of ours: a trade sent during a disconnect can carry an
    exchange time after the moment we listen again. The span handed to repair by time must
    still contain it (it reaches RESUMED_MARGIN_US past the resume)."""
    spans: list[Missing] = []

    async def main() -> None:
        async with Harness(make_adapter(), make_protocol(), ["AAA"], on_missing=spans.append) as h:
            await h.subscribed()
            h.sim.publish([_trade(1)])
            await h.until(lambda: len(h.received) == 1)
            h.sim.drop_all()
            skewed = _trade(2)
            skewed = (skewed[0] + 300_000, *skewed[1:])  # stamped 0.3 s ahead of our clock
            h.sim.publish([skewed])  # no connection listens: lost live
            await h.until(lambda: h.runner.stats.reconnects == 1, timeout_s=5.0)
            await h.subscribed()
            await h.until(lambda: bool(spans), timeout_s=5.0)
            assert [r[8] for r in h.received] == ["1"]
            span = spans[0]
            assert span.start_us <= skewed[0] <= span.end_us

    asyncio.run(asyncio.wait_for(main(), 60))
