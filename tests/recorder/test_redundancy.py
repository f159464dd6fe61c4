"""StreamRunner with ``redundancy=2`` against a real local exchange: two standing connections
per shard; dropping either, over and over, while trades flow loses and repeats nothing, opens
no gap and reports nothing for repair. PUMPWATCH_SOAK=long drops 60 times instead of 10."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from typing import Any

from pumpwatch.recorder.adapters import get_adapter
from pumpwatch.recorder.sim.cluster import sim_protocol_for
from pumpwatch.recorder.sim.instruments import sim_instrument
from pumpwatch.recorder.sim.server import SimExchange
from pumpwatch.recorder.stream.continuity import Missing
from pumpwatch.recorder.stream.runner import StreamRunner
from pumpwatch.segments.schema import TradeRow

STREAM = "binance_spot"
ROUNDS = 60 if os.environ.get("PUMPWATCH_SOAK") == "long" else 10


class Journal:
    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self.events.append((name, args))


async def until(cond: Any, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        await asyncio.sleep(0.01)


def test_dropping_either_connection_loses_and_repeats_nothing() -> None:
    async def main() -> None:
        insts = [sim_instrument(STREAM, b) for b in ("AAA", "BBB")]
        ids = dict.fromkeys((i.symbol for i in insts), 0)
        published: list[TradeRow] = []

        def publish(sim: SimExchange, n: int) -> None:
            rows = []
            for k in range(n):
                inst = insts[k % len(insts)]
                ids[inst.symbol] += 1
                t_us = time.time_ns() // 1000
                rows.append(
                    (t_us, t_us, inst.symbol, inst.base, inst.quote, 2.5, 1.0, "buy", str(ids[inst.symbol]))
                )
            sim.publish(rows)
            published.extend(rows)

        async with SimExchange(sim_protocol_for(STREAM), insts) as sim:
            got: list[TradeRow] = []
            missing: list[Missing] = []
            journal = Journal()
            runner = StreamRunner(
                get_adapter(STREAM),
                ws_url=sim.ws_url,
                rest_url=sim.rest_url,
                instruments={i.symbol: i for i in insts},
                on_trades=got.extend,
                journal=journal,
                backoff_initial_s=0.05,
                backoff_max_s=0.2,
                redundancy=2,
                contiguous_ids=True,
                id_grace_s=0.3,
                on_missing=missing.append,
            )
            task = asyncio.create_task(runner.run())

            def both_up() -> bool:
                sessions = sim.sessions()
                return len(sessions) == 2 and all(len(s.subscribed) == 2 for s in sessions)

            await until(both_up, "two subscribed connections")
            for _ in range(ROUNDS):
                publish(sim, 20)
                await asyncio.sleep(0.02)
                # The oldest connection goes: the two replicas take turns.
                oldest = min(sim.sessions(), key=lambda s: int(s.conn_id))
                sim.drop(oldest.conn_id)
                publish(sim, 20)
                await asyncio.sleep(0.02)
                await until(both_up, "both connections back")
            publish(sim, 20)
            await until(lambda: len(got) >= len(published), f"{len(got)} of {len(published)} trades")
            await asyncio.sleep(0.5)  # past the id grace: any hole would be reported now
            await runner.stop()
            await task

        keys = Counter((r[2], r[8]) for r in got)
        assert not {k: n for k, n in keys.items() if n > 1}, "a trade was delivered twice"
        assert set(keys) == {(r[2], r[8]) for r in published}
        kinds = [name for name, _ in journal.events]
        assert "gap_start" not in kinds
        assert kinds.count("disconnected") >= ROUNDS
        conns = {args[0] for name, args in journal.events if name == "connected"}
        assert any(c.startswith("0-") for c in conns) and any(c.startswith("0r1-") for c in conns), conns
        assert missing == [], "a redundant connection's death needs no repair"
        assert runner.stats.id_holes == 0
        assert runner.stats.duplicates >= len(published) // 2  # the second copies were merged away

    asyncio.run(asyncio.wait_for(main(), 120))
