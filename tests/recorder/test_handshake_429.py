"""A WebSocket handshake answered 429 or 418 (Binance's rate limit and IP ban) waits at least
its ``Retry-After`` (or, without one, far longer than a backoff) and holds every new connection
of the stream meanwhile; measured at the local server's handshake times."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest

from pumpwatch.recorder.adapters import get_adapter
from pumpwatch.recorder.sim.binance import sim_protocol
from pumpwatch.recorder.sim.market import instruments_for
from pumpwatch.recorder.sim.server import SimExchange
from pumpwatch.recorder.stream.connection import ConnectFailed, retry_after_s
from pumpwatch.recorder.stream.runner import StreamRunner

STREAM = "binance_spot"


async def _until(cond: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def _run(
    ex: SimExchange, n_symbols: int, per_conn: int, **kwargs: Any
) -> tuple[StreamRunner, list[float]]:
    insts = instruments_for([STREAM], [f"C{i}" for i in range(n_symbols)])[STREAM]
    adapter = dataclasses.replace(get_adapter(STREAM), max_symbols_per_connection=per_conn)
    runner = StreamRunner(
        adapter,
        ws_url=ex.ws_url,
        rest_url=ex.rest_url,
        instruments={i.symbol: i for i in insts},
        on_trades=lambda rows: None,
        backoff_initial_s=0.02,
        backoff_max_s=0.1,  # an ordinary failure waits at most this
        **kwargs,
    )
    task = asyncio.create_task(runner.run())
    try:
        await _until(lambda: runner.stats.subscribed_symbols == n_symbols, 15.0, "every symbol subscribed")
    finally:
        await runner.stop()
        await task
    return runner, list(ex.handshake_times_s)


@pytest.mark.parametrize("status", [429, 418])
def test_retry_after_is_honoured(status: int) -> None:
    async def main() -> list[float]:
        insts = instruments_for([STREAM], ["C0"])[STREAM]
        async with SimExchange(sim_protocol("spot"), insts) as ex:
            ex.refuse_connections(1, status=status, retry_after="1.5")
            _, times = await _run(ex, 1, 10)
            return times

    times = asyncio.run(main())
    assert len(times) == 2  # one refused handshake, then one that waited
    assert times[1] - times[0] >= 1.5  # not the 0.1 s backoff of an ordinary failure


def test_without_retry_after_it_waits_far_longer_than_a_backoff() -> None:
    async def main() -> list[float]:
        insts = instruments_for([STREAM], ["C0"])[STREAM]
        async with SimExchange(sim_protocol("spot"), insts) as ex:
            ex.refuse_connections(1, status=418)
            _, times = await _run(ex, 1, 10, rate_limit_wait_s={429: 0.8, 418: 1.2})
            return times

    times = asyncio.run(main())
    assert len(times) == 2 and times[1] - times[0] >= 1.2


def test_the_whole_stream_holds_its_new_connections() -> None:
    # Two connections' handshakes refused with 429 at once: no slot knocks again before the wait.
    async def main() -> list[float]:
        insts = instruments_for([STREAM], ["C0", "C1", "C2"])[STREAM]
        async with SimExchange(sim_protocol("spot"), insts) as ex:
            ex.refuse_connections(2, status=429, retry_after="1")
            _, times = await _run(ex, 3, 1)
            return times

    times = asyncio.run(main())
    # three slots open at once: two refused, one accepted; then the two retries, after the wait
    assert len(times) == 5
    assert all(t - times[0] >= 1.0 for t in times[3:])


def test_retry_after_forms() -> None:
    assert retry_after_s("120") == 120.0
    assert retry_after_s(" 2.5 ") == 2.5
    assert retry_after_s("-3") == 0.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None
    # an HTTP date, 30 s after "now"
    assert retry_after_s("Sun, 06 Nov 1994 08:49:37 GMT", now_s=784111747.0) == pytest.approx(30.0)
    exc = ConnectFailed("x", status=429, retry_after_s=3.0)
    assert exc.rate_limited and not ConnectFailed("y", status=503).rate_limited
