"""Bybit answers a subscribe request with one reply; a refusal names the refused topics, and no
document says whether the others were subscribed. The runner asks for the unnamed ones again, one
per request, so a chunk is never silently unsubscribed: against a local Bybit that subscribes
none of a partly refused request, and one that subscribes the rest (it then answers the repeat
"already subscribed", an ack), every unnamed symbol's trades are recorded, exactly once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from pumpwatch.recorder.adapters import get_adapter
from pumpwatch.recorder.sim.bybit import sim_protocol
from pumpwatch.recorder.sim.market import instruments_for
from pumpwatch.recorder.sim.server import SimExchange
from pumpwatch.recorder.stream.runner import StreamRunner
from pumpwatch.segments.schema import TradeRow


async def _until(cond: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("market", ["spot", "futures"])
@pytest.mark.parametrize("subscribes_rest", [False, True])
def test_unnamed_topics_of_a_partly_refused_request_are_recorded(market: str, subscribes_rest: bool) -> None:
    stream = f"bybit_{market}"
    insts = instruments_for([stream], ["AAA", "BAD", "CCC", "DDD", "EEE"])[stream]
    bad = next(i.symbol for i in insts if i.base == "BAD")
    good = sorted(i.symbol for i in insts if i.base != "BAD")

    async def main() -> tuple[list[TradeRow], StreamRunner, list[tuple[str, Any]], SimExchange]:
        rows: list[TradeRow] = []
        events: list[tuple[str, Any]] = []
        journal = type(
            "J",
            (),
            {
                "__getattr__": lambda self, name: lambda *a, **k: events.append((name, (*a, k))),
            },
        )()
        proto = sim_protocol(market, refusal_subscribes_rest=subscribes_rest)
        async with SimExchange(proto, insts) as ex:
            ex.reject([bad])
            runner = StreamRunner(
                get_adapter(stream),
                ws_url=ex.ws_url,
                rest_url=ex.rest_url,
                instruments={i.symbol: i for i in insts},
                on_trades=rows.extend,
                journal=journal,
                backoff_initial_s=0.02,
                backoff_max_s=0.1,
                health_interval_s=0.1,
            )
            task = asyncio.create_task(runner.run())
            try:
                await _until(lambda: runner.stats.subscribed_symbols == 4, 10.0, "the four good symbols")
                await _until(lambda: bad in runner.stats.not_recorded, 5.0, "the refusal reported")
                # every good symbol is subscribed at the server, not only in the runner's books
                assert sorted(s for sess in ex.sessions() for s in sess.subscribed) == good
                now_us = time.time_ns() // 1000
                published = [
                    (now_us + k, 0, sym, sym[:3], "USDT", 1.0 + k, 2.0, "buy", f"{k}")
                    for k, sym in enumerate(good)
                ]
                ex.publish(published)
                await _until(lambda: len(rows) >= len(good), 5.0, "a trade of each good symbol")
                await asyncio.sleep(0.2)
            finally:
                await runner.stop()
                await task
            return rows, runner, events, ex

    rows, runner, events, _ex = asyncio.run(main())
    assert sorted(r[2] for r in rows) == good  # each exactly once
    assert runner.stats.rejected == {bad: runner.stats.rejected[bad]} and bad in runner.stats.rejected[bad]
    reason = runner.stats.not_recorded[bad]  # refused, asked again later: says when
    assert list(runner.stats.not_recorded) == [bad]
    assert reason.startswith(f"rejected: {runner.stats.rejected[bad]} (next retry ")
    journaled = [a for name, a in events if name == "rejected"]
    assert [a[1] for a in journaled] == [[bad]]  # journaled once, only the named topic
    subscribed = sorted(s for name, a in events if name == "subscribed" for s in a[1])
    assert subscribed == good  # each acked once: by its own request or its "already subscribed"
    snapshots = [a for name, a in events if name == "record" and a[0] == "not_recorded"]
    assert snapshots and snapshots[-1][1] == {"symbols": {bad: reason}}
