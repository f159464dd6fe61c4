"""Real capacity (issue 12 §2, §3): a stream whose exchange limits subscriptions per connection
and connections per client learns both at run time from the refusals (a local Phemex with low
limits and its real refusal shape, the generic ``6001 invalid argument``): every symbol the
server allows is recorded, and the rest are reported as not recorded, with why, in
``stats.not_recorded``, the journal (``rejected`` over_capacity, ``not_recorded``), the log, the
metrics and ``pumpwatch status``."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.adapters import get_adapter
from pumpwatch.recorder.sim.market import instruments_for
from pumpwatch.recorder.sim.phemex import sim_protocol
from pumpwatch.recorder.sim.server import ClientLimit, SimExchange
from pumpwatch.recorder.stream.runner import StreamRunner
from pumpwatch.segments.journal import EventJournal
from pumpwatch.segments.schema import TradeRow
from pumpwatch.segments.status import store_status


async def _until(cond: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class Journal:
    """Collects the runner's journal calls (and writes them to an EventJournal when given)."""

    def __init__(self, real: EventJournal | None = None) -> None:
        self.events: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.real = real

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> None:
            self.events.append((name, args, kwargs))
            if self.real is not None:
                getattr(self.real, name)(*args, **kwargs)

        return call

    def of(self, name: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(a, k) for n, a, k in self.events if n == name]


class Stream:
    """A phemex runner against one local exchange, collecting trades."""

    def __init__(
        self,
        stream: str,
        ex: SimExchange,
        insts: list[Instrument],
        journal: Journal,
        redundancy: int = 1,
        **kwargs: Any,
    ) -> None:
        self.rows: list[TradeRow] = []
        self.ex = ex
        self.insts = insts
        self.journal = journal
        self.runner = StreamRunner(
            get_adapter(stream),
            ws_url=ex.ws_url,
            rest_url=ex.rest_url,
            instruments={i.symbol: i for i in insts},
            on_trades=self.rows.extend,
            journal=journal,
            backoff_initial_s=0.02,
            backoff_max_s=0.1,
            health_interval_s=0.1,
            capacity_retry_s=60.0,  # no second knock within the test
            rate_limit_wait_s={429: 0.3, 418: 0.3},
            redundancy=redundancy,
        )
        for name, value in kwargs.items():  # e.g. capacity_retry_s
            setattr(self.runner, name, value)
        self.task = asyncio.create_task(self.runner.run())

    def server_subscribed(self) -> set[str]:
        return {s for sess in self.ex.sessions() for s in sess.subscribed}

    def publish_all(self) -> list[TradeRow]:
        now_us = time.time_ns() // 1000
        rows = [
            (now_us + k, 0, i.symbol, i.base, "USDT", 1.5, 2.0, "buy", None) for k, i in enumerate(self.insts)
        ]
        self.ex.publish(rows)
        return rows

    async def stop(self) -> None:
        await self.runner.stop()
        await self.task


def _phemex(stream: str, n: int) -> list[Instrument]:
    return instruments_for([stream], [f"C{i:02d}" for i in range(n)])[stream]


def test_learns_per_connection_and_per_client_limits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pumpwatch.recorder.stream")
    stream = "phemex_spot"
    insts = _phemex(stream, 10)

    async def main() -> tuple[Stream, set[str]]:
        limit = ClientLimit(max_connections=2)
        async with SimExchange(sim_protocol("spot", max_subscriptions=3), insts, client_limit=limit) as ex:
            s = Stream(stream, ex, insts, Journal(EventJournal(tmp_path, stream)))
            try:
                # 2 connections x 3 symbols: six recorded, four reported
                await _until(lambda: len(s.server_subscribed()) == 6, 15.0, "six symbols at the server")
                await _until(lambda: len(s.runner.stats.not_recorded) == 4, 5.0, "four reported")
                s.publish_all()
                await _until(lambda: len({r[2] for r in s.rows}) >= 6, 5.0, "a trade of each allowed symbol")
                await asyncio.sleep(0.2)
                allowed = s.server_subscribed()
            finally:
                await s.stop()
            return s, allowed

    s, allowed = asyncio.run(main())
    st = s.runner.stats
    wanted = {i.symbol for i in insts}
    recorded = {r[2] for r in s.rows if r[1] != 0 and r[8] is None}
    assert recorded == allowed and len(allowed) == 6
    assert set(st.not_recorded) == wanted - allowed
    assert all(reason.startswith("over_capacity: ") for reason in st.not_recorded.values())
    assert st.rejected == {}  # nothing was refused for itself
    # journal: what was refused, with an over_capacity reason; the whole map for status
    over = [(a[1], a[2]) for a, _ in s.journal.of("rejected")]
    assert {sym for syms, _ in over for sym in syms} == wanted - allowed
    assert all(reason.startswith("over_capacity") for _, reason in over)
    maps = [k["symbols"] for a, k in s.journal.of("record") if a[0] == "not_recorded"]
    assert maps[-1] == st.not_recorded
    # the log names them within the health interval, not only a counter
    warnings = [r.getMessage() for r in caplog.records if "not recorded" in r.getMessage()]
    assert warnings and "4 of 10 symbols not recorded" in warnings[-1]
    assert any("learned capacity: 3 symbols per connection" in r.getMessage() for r in caplog.records)
    assert any("learned capacity: 2 connections" in r.getMessage() for r in caplog.records)
    # status, from the journal on disk
    status = store_status(tmp_path)["streams"][stream]
    assert status["not_recorded"]["symbols"] == st.not_recorded
    assert status["not_recorded"]["by_reason"] == {"over_capacity": 4}
    # the metric
    metrics = _metrics()
    metrics.update(stream, st, SimpleNamespace(bytes_written=0, queue_rows=0), has_symbols=True)
    from prometheus_client import REGISTRY

    labels = {"stream": stream, "reason": "over_capacity"}
    assert REGISTRY.get_sample_value("pumpwatch_symbols_not_recorded", labels) == 4
    labels["reason"] = "rejected"
    assert REGISTRY.get_sample_value("pumpwatch_symbols_not_recorded", labels) == 0


@functools.cache
def _metrics() -> Any:
    from pumpwatch.recorder.metrics import StreamMetrics

    return StreamMetrics()


def test_a_bad_symbol_does_not_lower_the_learned_capacity() -> None:
    # C01 is refused for itself at position 2 of the first connection: presumed capacity at
    # first (cap 1), it is refused again on a connection of its own, so the cap goes back up.
    stream = "phemex_futures"
    insts = _phemex(stream, 5)
    bad = insts[1].symbol

    async def main() -> Stream:
        async with SimExchange(sim_protocol("futures", max_subscriptions=3), insts) as ex:
            ex.reject([bad])
            s = Stream(stream, ex, insts, Journal())
            try:
                await _until(lambda: bad in s.runner.stats.rejected, 10.0, "the bad symbol rejected")
                await _until(lambda: len(s.server_subscribed()) == 4, 10.0, "the others subscribed")
                await _until(lambda: len(s.runner.stats.not_recorded) == 1, 5.0, "one reported")
            finally:
                await s.stop()
            return s

    s = asyncio.run(main())
    assert s.runner._table.per_slot == 3
    assert list(s.runner.stats.not_recorded) == [bad]
    assert s.runner.stats.not_recorded[bad].startswith("rejected: 6001 invalid argument (next retry ")


def test_spot_and_perpetual_share_the_client_limit() -> None:
    # "5 connections per client" may be per IP: spot and perpetual then share it. Each stream
    # learns what it got; together every allowed symbol is recorded and the rest reported.
    async def main() -> list[Stream]:
        limit = ClientLimit(max_connections=3)
        streams: list[Stream] = []
        sims = []
        for market in ("spot", "futures"):
            stream = f"phemex_{market}"
            insts = _phemex(stream, 6)
            sim = SimExchange(sim_protocol(market, max_subscriptions=2), insts, client_limit=limit)
            await sim.start()
            sims.append(sim)
            streams.append(Stream(stream, sim, insts, Journal()))
        try:
            await _until(
                lambda: sum(len(s.server_subscribed()) for s in streams) == 6, 15.0, "six symbols in all"
            )
            await _until(
                lambda: sum(len(s.runner.stats.not_recorded) for s in streams) == 6, 5.0, "six reported"
            )
            for s in streams:
                s.publish_all()
            await _until(lambda: sum(len({r[2] for r in s.rows}) for s in streams) >= 6, 5.0, "trades")
            await asyncio.sleep(0.2)
            for s in streams:
                s.allowed = s.server_subscribed()  # type: ignore[attr-defined]
        finally:
            for s in streams:
                await s.stop()
            for sim in sims:
                await sim.close()
        return streams

    for s in asyncio.run(main()):
        allowed = s.allowed  # type: ignore[attr-defined]
        wanted = {i.symbol for i in s.insts}
        assert {r[2] for r in s.rows} == allowed
        assert set(s.runner.stats.not_recorded) == wanted - allowed


def test_a_stream_whose_every_frame_fails_to_parse_is_reported() -> None:
    # Frames arrive but none parses (a changed wire format): every subscribed symbol is reported
    # within the health interval, not only the parse-error counter; it clears once trades parse.
    from pumpwatch.recorder.sim.binance import sim_protocol as binance_protocol

    stream = "binance_spot"
    insts = instruments_for([stream], ["AAA", "BBB"])[stream]

    async def main() -> tuple[dict[str, str], dict[str, str], Journal]:
        async with SimExchange(binance_protocol("spot"), insts) as ex:
            s = Stream(stream, ex, insts, Journal())
            s.runner._health.interval_s = 0.3
            try:
                await _until(lambda: s.runner.stats.subscribed_symbols == 2, 10.0, "subscribed")
                flooding = True

                async def flood() -> None:
                    while flooding:
                        ex.send_raw('{"stream":"aaausdt@trade","data":{"e":"trade","p":"not a price"}}')
                        await asyncio.sleep(0.02)

                task = asyncio.create_task(flood())
                await _until(lambda: len(s.runner.stats.not_recorded) == 2, 5.0, "both reported")
                during = dict(s.runner.stats.not_recorded)
                flooding = False
                await task
                while s.runner.stats.not_recorded:
                    s.publish_all()
                    await asyncio.sleep(0.05)
                after = dict(s.runner.stats.not_recorded)
            finally:
                await s.stop()
            return during, after, s.journal

    during, after, journal = asyncio.run(main())
    assert set(during) == {i.symbol for i in insts}
    assert all(r.startswith("unparsable: every frame failed to parse") for r in during.values())
    assert after == {}
    maps = [k["symbols"] for a, k in journal.of("record") if a[0] == "not_recorded"]
    assert maps[0] == during and maps[-1] == {}


def test_local_servers_refuse_past_the_documented_caps() -> None:
    # KuCoin spot: 400 topics per connection, 100 per batch; Binance: 1024 streams per
    # connection. The adapters' figures fit exactly, so a full connection is never refused.
    import orjson

    from pumpwatch.recorder.sim import binance, kucoin
    from pumpwatch.recorder.sim.protocol import SimSession

    for market, per_conn in (("spot", 400), ("futures", None)):
        stream = f"kucoin_{market}"
        adapter = get_adapter(stream)
        insts = instruments_for([stream], [f"K{i:03d}" for i in range(401)])[stream]
        proto = kucoin.sim_protocol(market)
        session = SimSession("1", "/", {}, {i.symbol: i for i in insts})
        symbols = [i.symbol for i in insts]
        assert adapter.max_symbols_per_connection == 400 and adapter.max_symbols_per_request == 100
        for n in range(4):
            (frame,) = adapter.subscribe(symbols[n * 100 : (n + 1) * 100], str(n))
            (ack,) = proto.on_message(session, frame, 0)
            assert orjson.loads(ack)["type"] == "ack"
        (frame,) = adapter.subscribe(symbols[400:], "9")
        (reply,) = proto.on_message(session, frame, 0)
        assert (orjson.loads(reply).get("code") == 509) == (per_conn is not None)

    adapter = get_adapter("binance_futures")
    insts = instruments_for(["binance_futures"], [f"B{i:04d}" for i in range(1025)])["binance_futures"]
    proto = binance.sim_protocol("futures")
    session = SimSession("1", "/market/stream", {}, {i.symbol: i for i in insts})
    symbols = [i.symbol for i in insts]
    assert adapter.max_symbols_per_connection == 1024
    for n in range(0, 1024, 100):
        (frame,) = adapter.subscribe(symbols[n : min(n + 100, 1024)], str(n))
        assert orjson.loads(proto.on_message(session, frame, 0)[0]) == {"result": None, "id": n}
    (frame,) = adapter.subscribe(symbols[1024:], "7")
    assert orjson.loads(proto.on_message(session, frame, 0)[0])["error"]["code"] == 2


@pytest.mark.parametrize(("status", "times"), [(503, 3), (502, 2), (429, 1)])
def test_a_gateway_blip_or_a_single_429_is_no_connection_limit(status: int, times: int) -> None:
    # A 5xx while connections are open is a gateway blip (ordinary backoff), and a 429 once is
    # a rate limit: neither caps the stream's connections; only a 429/403 repeated at the same
    # number of open connections does.
    stream = "phemex_spot"
    insts = _phemex(stream, 6)

    async def main() -> Stream:
        async with SimExchange(sim_protocol("spot", max_subscriptions=2), insts) as ex:
            s = Stream(stream, ex, insts[:4], Journal())
            try:
                await _until(lambda: len(s.server_subscribed()) == 4, 15.0, "four symbols, two connections")
                ex.refuse_connections(times, status)
                s.runner.update_instruments({i.symbol: i for i in insts})  # a third connection
                await _until(lambda: len(s.server_subscribed()) == 6, 10.0, "all six at the server")
                assert ex.refused == times
            finally:
                await s.stop()
            return s

    s = asyncio.run(main())
    assert s.runner._table.max_slots is None


def test_a_learned_connection_cap_is_withdrawn_when_a_knock_is_accepted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The limit was real (two 429s at two open connections) and later rises: the refused
    # connection knocks again after capacity_retry_s, is accepted, and the symbols that were
    # over capacity get connections of their own.
    caplog.set_level(logging.INFO, logger="pumpwatch.recorder.stream")
    stream = "phemex_spot"
    insts = _phemex(stream, 10)

    async def main() -> Stream:
        limit = ClientLimit(max_connections=2)
        async with SimExchange(sim_protocol("spot", max_subscriptions=3), insts, client_limit=limit) as ex:
            s = Stream(stream, ex, insts, Journal(), capacity_retry_s=0.5)
            try:
                await _until(lambda: len(s.server_subscribed()) == 6, 15.0, "six symbols at the server")
                await _until(lambda: s.runner._table.max_slots == 2, 5.0, "the cap learned")
                limit.max_connections = 4
                await _until(lambda: len(s.server_subscribed()) == 10, 15.0, "all ten at the server")
                await _until(lambda: not s.runner.stats.not_recorded, 5.0, "nothing reported")
            finally:
                await s.stop()
            return s

    s = asyncio.run(main())
    assert s.runner._table.max_slots is None
    assert any("connection cap of 2 withdrawn" in r.getMessage() for r in caplog.records)


def test_with_two_redundant_connections_the_cap_counts_groups() -> None:
    # recorder.redundancy 2: each group of symbols holds two connections; a client limit of 4
    # connections is two groups, not four.
    stream = "phemex_spot"
    insts = _phemex(stream, 9)

    async def main() -> Stream:
        limit = ClientLimit(max_connections=4)
        async with SimExchange(sim_protocol("spot", max_subscriptions=3), insts, client_limit=limit) as ex:
            s = Stream(stream, ex, insts, Journal(), redundancy=2)
            try:
                await _until(lambda: s.runner._table.max_slots is not None, 15.0, "a cap learned")
                await _until(lambda: len(s.server_subscribed()) == 6, 15.0, "six symbols at the server")
            finally:
                await s.stop()
            return s

    s = asyncio.run(main())
    assert s.runner._table.max_slots == 2


def test_the_readme_states_the_phemex_capacity_the_adapter_uses() -> None:
    # The stream table must not promise the contested 20 x 5: the adapter learns both limits.
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    (row,) = [line for line in readme.splitlines() if line.startswith("| phemex_spot / phemex_futures |")]
    for stream in ("phemex_spot", "phemex_futures"):
        adapter = get_adapter(stream)
        assert adapter.learn_capacity and adapter.max_connections is None
        assert f"at most {adapter.max_symbols_per_connection} subscriptions per connection" in row
    assert "no fixed connection cap" in row and "≤ 5 connections" not in row
