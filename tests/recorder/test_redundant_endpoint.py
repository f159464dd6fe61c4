"""`recorder.redundancy: 2` through two endpoints (issue 10): the second connection of each
shard goes to the exchange's other documented WebSocket endpoint. Here the two endpoints are two
local servers of the same exchange (both on 127.0.0.1) publishing the same trades; dropping
either side's connection over and over loses and repeats nothing. Nothing connects outside
loopback: the documented URLs are only looked up, never opened."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from pumpwatch.recorder.adapters import get_adapter
from pumpwatch.recorder.sim.cluster import sim_protocol_for
from pumpwatch.recorder.sim.instruments import sim_instrument
from pumpwatch.recorder.sim.server import SimExchange
from pumpwatch.recorder.stream.continuity import Missing
from pumpwatch.recorder.stream.endpoints import redundant_ws_url_for
from pumpwatch.recorder.stream.runner import StreamRunner
from pumpwatch.segments.schema import TradeRow

STREAM = "binance_spot"
ROUNDS = 8


def test_the_documented_second_endpoints() -> None:
    assert redundant_ws_url_for("binance_spot", "wss://stream.binance.com:9443") == (
        "wss://data-stream.binance.vision"
    )
    assert redundant_ws_url_for("binance_spot", "wss://stream.binance.com:443/") == (
        "wss://data-stream.binance.vision"
    )
    for stream in ("okx_spot", "okx_futures"):
        assert redundant_ws_url_for(stream, "wss://ws.okx.com:8443/ws/v5/business") == (
            "wss://wsaws.okx.com:8443/ws/v5/business"
        )
        assert redundant_ws_url_for(stream, "wss://wsaws.okx.com:8443/ws/v5/public") == (
            "wss://ws.okx.com:8443/ws/v5/public"
        )
    # no second endpoint documented: both connections share the configured one
    for stream, url in (
        ("binance_futures", "wss://fstream.binance.com/market"),
        ("bybit_spot", "wss://stream.bybit.com/v5/public/spot"),
        ("gate_spot", "wss://api.gateio.ws/ws/v4/"),
        ("kucoin_spot", "wss://ws-api-spot.kucoin.com"),
        ("phemex_futures", "wss://ws.phemex.com"),
    ):
        assert redundant_ws_url_for(stream, url) is None, stream
    # a configured URL that is not a documented one (a local server, a relay) is never left
    assert redundant_ws_url_for("binance_spot", "ws://127.0.0.1:9443") is None
    assert redundant_ws_url_for("okx_spot", "ws://127.0.0.1:8443/ws/v5/business") is None
    assert redundant_ws_url_for("no_such_stream", "wss://stream.binance.com:9443") is None


def _runner(ws_url: str, **kwargs: Any) -> StreamRunner:
    inst = sim_instrument(STREAM, "AAA")
    return StreamRunner(
        get_adapter(STREAM),
        ws_url=ws_url,
        rest_url="http://127.0.0.1:1",
        instruments={inst.symbol: inst},
        on_trades=lambda rows: None,
        redundancy=2,
        **kwargs,
    )


def test_the_runner_picks_the_second_endpoint_only_for_a_documented_url() -> None:
    # constructing a runner connects nowhere: only its choice of endpoint is looked at
    assert _runner("wss://stream.binance.com:9443").redundant_ws_url == "wss://data-stream.binance.vision"
    assert _runner("ws://127.0.0.1:5555").redundant_ws_url == "ws://127.0.0.1:5555"
    given = _runner("ws://127.0.0.1:5555", redundant_ws_url="ws://127.0.0.1:6666")
    assert given.redundant_ws_url == "ws://127.0.0.1:6666"


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


def test_two_endpoints_drop_either_over_and_over_zero_loss_zero_duplicates() -> None:
    async def main() -> None:
        insts = [sim_instrument(STREAM, b) for b in ("AAA", "BBB")]
        ids = dict.fromkeys((i.symbol for i in insts), 0)
        published: list[TradeRow] = []

        def publish(sims: list[SimExchange], n: int) -> None:
            rows = []
            for k in range(n):
                inst = insts[k % len(insts)]
                ids[inst.symbol] += 1
                t_us = time.time_ns() // 1000
                rows.append(
                    (t_us, t_us, inst.symbol, inst.base, inst.quote, 2.5, 1.0, "buy", str(ids[inst.symbol]))
                )
            for sim in sims:  # the exchange's two endpoints push the same trades
                sim.publish(rows)
            published.extend(rows)

        async with (
            SimExchange(sim_protocol_for(STREAM), insts) as main_ep,
            SimExchange(sim_protocol_for(STREAM), insts) as second_ep,
        ):
            sims = [main_ep, second_ep]
            got: list[TradeRow] = []
            missing: list[Missing] = []
            journal = Journal()
            runner = StreamRunner(
                get_adapter(STREAM),
                ws_url=main_ep.ws_url,
                redundant_ws_url=second_ep.ws_url,
                rest_url=main_ep.rest_url,
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
                return all(
                    len(s.sessions()) == 1 and all(len(x.subscribed) == 2 for x in s.sessions()) for s in sims
                )

            await until(both_up, "one subscribed connection on each endpoint")
            for n in range(ROUNDS):
                publish(sims, 20)
                await asyncio.sleep(0.02)
                victim = sims[n % 2]  # the endpoints take turns losing their connection
                victim.drop(victim.sessions()[0].conn_id)
                publish(sims, 20)
                await asyncio.sleep(0.02)
                await until(both_up, "both connections back")
            publish(sims, 20)
            await until(lambda: len(got) >= len(published), f"{len(got)} of {len(published)} trades")
            await asyncio.sleep(0.5)  # past the id grace: any hole would be reported now
            await runner.stop()
            await task

        keys = Counter((r[2], r[8]) for r in got)
        assert not {k: n for k, n in keys.items() if n > 1}, "a trade was delivered twice"
        assert set(keys) == {(r[2], r[8]) for r in published}
        kinds = [name for name, _ in journal.events]
        assert "gap_start" not in kinds
        urls = {args[0]: args[1] for name, args in journal.events if name == "connected"}
        main_port, second_port = (s.ws_url.rsplit(":", 1)[1] for s in sims)
        firsts = [u for c, u in urls.items() if c.startswith("0-")]
        seconds = [u for c, u in urls.items() if c.startswith("0r1-")]
        assert firsts and all(f":{main_port}/" in u for u in firsts), firsts
        assert seconds and all(f":{second_port}/" in u for u in seconds), seconds
        assert missing == [], "a redundant connection's death needs no repair"
        assert runner.stats.id_holes == 0

    asyncio.run(asyncio.wait_for(main(), 120))
