"""The runner against the real adapters and their local servers (the sim cluster): every
stream subscribes, receives each trade its server sent exactly once, field by field; plus the
keep-alive and planned-close rules of Binance (server pings, serverShutdown), KuCoin (token per
connect, welcome) and OKX (text ping against a 30 s idle rule, shrunk)."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest

from pumpwatch.recorder.adapter import ConnectTarget
from pumpwatch.recorder.adapters import get_adapter
from pumpwatch.recorder.sim.cluster import SimCluster
from pumpwatch.recorder.stream.runner import StreamRunner
from pumpwatch.segments.schema import TradeRow
from pumpwatch.streams import STREAMS

BASES = ["BTC", "0G", "SOL"]


def ident(row: TradeRow) -> tuple[Any, ...]:
    """Identity of a trade across the wire: ids where the exchange has them, else its fields."""
    if row[8] is not None:
        return (row[2], row[8])
    return (row[2], row[0], row[7], row[5], row[6])


class Recorder:
    """A runner of `stream` against `cluster`, collecting trades and journal events."""

    def __init__(self, cluster: SimCluster, stream: str, adapter: Any = None, **kwargs: Any) -> None:
        ex = cluster.exchanges[stream]
        self.exchange = ex
        self.rows: list[TradeRow] = []
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        events = self.events

        def note(name: str) -> Any:
            return lambda *args, **kwargs: events.append((name, args))

        names = (
            "connected",
            "subscribed",
            "rejected",
            "unsubscribed",
            "disconnected",
            "gap_start",
            "gap_end",
        )
        journal = SimpleNamespace(**{name: note(name) for name in names})
        kwargs.setdefault("backoff_initial_s", 0.02)
        kwargs.setdefault("backoff_max_s", 0.2)
        self.runner = StreamRunner(
            adapter or get_adapter(stream),
            ws_url=ex.ws_url,
            rest_url=ex.rest_url,
            instruments={i.symbol: i for i in cluster.instruments[stream]},
            on_trades=self.rows.extend,
            journal=journal,
            **kwargs,
        )
        self.task = asyncio.create_task(self.runner.run())

    async def until(self, cond: Any, timeout_s: float = 8.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.runner.stream}: timed out waiting for {what}; {self.runner.stats}"
                )
            await asyncio.sleep(0.005)

    async def subscribed(self) -> None:
        want = len(self.runner.instruments)
        await self.until(
            lambda: (
                self.runner.stats.subscribed_symbols == want and self.runner.stats.pending_subscriptions == 0
            ),
            what="all subscribed",
        )

    async def stop(self) -> None:
        await self.runner.stop()
        await asyncio.wait_for(self.task, 5.0)

    def check_exactly_once(self) -> None:
        """Every trade the server sent while subscribed arrived once, with the same fields."""
        got = Counter(ident(r) for r in self.rows)
        assert got and max(got.values()) == 1, f"{self.runner.stream}: duplicates"
        by_ident = {ident(r): r for r in self.rows}
        sent = self.exchange.sent_rows()
        assert sent
        for row in sent:
            mine = by_ident.get(ident(row))
            assert mine is not None, f"{self.runner.stream}: sent but not received: {row}"
            assert mine[0] == row[0] and mine[2:5] == row[2:5] and mine[7:] == row[7:]
            assert math.isclose(mine[5], row[5], rel_tol=1e-12)
            assert math.isclose(mine[6], row[6], rel_tol=1e-9)  # contracts x multiplier round trip


def run(coro: Any, timeout_s: float = 60.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


@pytest.mark.parametrize("stream", STREAMS)
def test_every_stream_records_each_sent_trade_exactly_once(stream: str) -> None:
    async def main() -> None:
        async with SimCluster([stream], BASES, trades_per_s=400.0, tick_s=0.02) as cluster:
            rec = Recorder(cluster, stream)
            await rec.subscribed()
            await rec.until(lambda: len(rec.exchange.sent_rows()) >= 40, what="40 trades sent")
            cluster.pause()
            sent = len(rec.exchange.sent_rows())
            await rec.until(
                lambda: len({ident(r) for r in rec.rows}) >= sent, what="all sent trades received"
            )
            await rec.stop()
            rec.check_exactly_once()
            st = rec.runner.stats
            assert st.parse_errors == 0 and st.decode_bugs == 0 and st.reconnects == 0
            assert {r[3] for r in rec.rows} <= set(BASES)
            subscribed = [a for e, a in rec.events if e == "subscribed"]
            assert sorted(s for a in subscribed for s in a[1]) == sorted(
                i.symbol for i in cluster.instruments[stream]
            )

    run(main())


def test_binance_server_pings_and_shutdown_notice_rotate_without_gap() -> None:
    async def main() -> None:
        stream = "binance_spot"
        sim = {"lifetime_s": 0.5, "shutdown_grace_s": 0.3, "server_ping_interval_s": 0.05}
        async with SimCluster([stream], BASES, trades_per_s=300.0, tick_s=0.01, sim_kwargs=sim) as cluster:
            rec = Recorder(cluster, stream)
            await rec.subscribed()
            await rec.until(lambda: rec.runner.stats.rotations >= 3, what="3 rotations")
            cluster.pause()
            await asyncio.sleep(0.1)
            await rec.stop()
            rec.check_exactly_once()
            st = rec.runner.stats
            assert st.reconnects == 0
            assert [e for e, _ in rec.events].count("gap_start") == 0
            reasons = {a[1] for e, a in rec.events if e == "disconnected"}
            assert reasons == {"rotated: server notice", "stopped"}

    run(main())


def test_kucoin_fetches_a_fresh_token_for_every_connect() -> None:
    async def main() -> None:
        stream = "kucoin_futures"
        async with SimCluster([stream], BASES, trades_per_s=200.0, tick_s=0.02) as cluster:
            ex = cluster.exchanges[stream]
            rec = Recorder(cluster, stream)
            await rec.subscribed()
            for n in range(2, 5):
                sent = len(ex.sent_rows())
                await rec.until(lambda sent=sent: len(ex.sent_rows()) > sent + 5, what="trades between drops")
                ex.drop_all()
                await rec.until(lambda n=n: ex.connections == n, what=f"connection {n}")
                await rec.subscribed()
            cluster.pause()
            await asyncio.sleep(0.1)
            await rec.stop()
            assert ex._http.requests == 4  # one bullet-public per connection
            assert ex.refused == 0
            assert rec.runner.stats.reconnects == 3
            rec.check_exactly_once()

    run(main())


def test_okx_text_ping_keeps_an_idle_connection_open() -> None:
    async def main() -> None:
        stream = "okx_spot"
        # 0.3 s pings stay under the adapter's 3 frames/s (pings count) and inside a 0.7 s idle rule.
        adapter = dataclasses.replace(get_adapter(stream), ping_interval_s=0.3, quiet_timeout_s=1.0)
        async with SimCluster(
            [stream], BASES, trades_per_s=10.0, sim_kwargs={"idle_timeout_s": 0.7}
        ) as cluster:
            cluster.pause()  # no trades at all: only the pings keep it open
            ex = cluster.exchanges[stream]
            rec = Recorder(cluster, stream, adapter=adapter)
            await rec.subscribed()
            await asyncio.sleep(1.6)
            assert ex.connections == 1 and rec.runner.stats.reconnects == 0
            assert ex.messages_in >= 5  # subscribe + ~5 pings
            await rec.stop()

    run(main())


def test_okx_without_pings_is_cut_by_the_idle_rule_and_recovers() -> None:
    async def main() -> None:
        stream = "okx_futures"
        adapter = dataclasses.replace(get_adapter(stream), ping_interval_s=60.0, quiet_timeout_s=60.0)
        sim = {"idle_timeout_s": 0.3}
        async with SimCluster([stream], BASES, trades_per_s=10.0, sim_kwargs=sim) as cluster:
            cluster.pause()
            ex = cluster.exchanges[stream]
            rec = Recorder(cluster, stream, adapter=adapter)
            await rec.until(lambda: rec.runner.stats.reconnects >= 1, what="a reconnect after the idle close")
            await rec.stop()
            disconnects = [a for e, a in rec.events if e == "disconnected"]
            assert disconnects[0][1].startswith("closed by server: code 4000")
            assert ex.connections >= 2

    run(main())


def test_okx_two_refused_symbols_in_one_request_are_both_rejected_and_never_journaled_subscribed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # OKX answers every arg of a request on its own: error 60018 per refused instId. The first
    # refusal must not count the second refused symbol (or the unanswered good one) as subscribed.
    async def main() -> None:
        stream = "okx_futures"
        async with SimCluster([stream], ["BTC", "0G", "SOL", "ETH"], trades_per_s=50.0) as cluster:
            cluster.pause()
            symbols = sorted(i.symbol for i in cluster.instruments[stream])
            assert symbols == ["0G-USDT-SWAP", "BTC-USDT-SWAP", "ETH-USDT-SWAP", "SOL-USDT-SWAP"]
            bad = ["0G-USDT-SWAP", "ETH-USDT-SWAP"]
            rec = Recorder(cluster, stream)
            rec.exchange.reject(bad)
            await rec.until(
                lambda: len(rec.runner.stats.rejected) == 2 and rec.runner.stats.pending_subscriptions == 0,
                what="two rejections, nothing pending",
            )
            await asyncio.sleep(0.1)  # a late wrong answer would land here
            st = rec.runner.stats
            assert st.subscribed_symbols == 2 and st.pending_subscriptions == 0
            assert sorted(st.rejected) == bad
            for symbol in bad:
                expected = f"60018: Wrong URL or channel:trades-all,instId:{symbol} doesn't exist."
                assert st.rejected[symbol].startswith(expected)
            subscribed = [a for e, a in rec.events if e == "subscribed"]
            assert sorted(s for a in subscribed for s in a[1]) == ["BTC-USDT-SWAP", "SOL-USDT-SWAP"]
            rejected = [a for e, a in rec.events if e == "rejected"]
            assert sorted(s for a in rejected for s in a[1]) == bad
            # The server agrees: exactly the two good symbols are subscribed on its side.
            (session,) = rec.exchange.sessions()
            assert sorted(session.subscribed) == ["BTC-USDT-SWAP", "SOL-USDT-SWAP"]
            assert st.error_frames == 0 and st.reconnects == 0 and rec.exchange.connections == 1
            await rec.stop()
        assert not [r for r in caplog.records if "error frame" in r.getMessage()]

    run(main())


def test_stop_during_a_retry_wait_returns_promptly_against_a_refused_gate_handshake() -> None:
    # Gate futures refuses an upgrade without X-Gate-Size-Decimal (HTTP 400): every attempt
    # fails and the slot waits its backoff. stop() during that wait must end run() at once,
    # and no connection attempt may follow it.
    async def main() -> None:
        stream = "gate_futures"
        adapter = dataclasses.replace(
            get_adapter(stream), connect_target=lambda ws_url, _body, _cid: ConnectTarget(ws_url)
        )
        async with SimCluster([stream], BASES, trades_per_s=10.0) as cluster:
            cluster.pause()
            ex = cluster.exchanges[stream]
            rec = Recorder(cluster, stream, adapter=adapter, backoff_initial_s=0.3, backoff_max_s=0.3)
            await rec.until(lambda: ex.refused >= 2, what="two refused handshakes")
            await asyncio.sleep(0.03)  # the slot is in its backoff wait now (0.15 .. 0.3 s)
            refused = ex.refused
            await rec.runner.stop()
            done, _ = await asyncio.wait({rec.task}, timeout=1.0)
            if not done:
                for _ in range(50):  # free the loop for the assertion below, then fail
                    rec.task.cancel()
                    await asyncio.sleep(0.01)
            assert rec.task in done, f"run() still running 1 s after stop(); {ex.refused - refused} attempts"
            await asyncio.sleep(0.35)  # longer than a backoff: nothing may try again
            assert ex.refused == refused
            st = rec.runner.stats
            assert st.connected == 0 and st.connect_failures == refused
            assert [e for e, _ in rec.events] == []  # never connected: nothing to journal

    run(main(), timeout_s=20.0)
