"""A REST row and the live WebSocket push of the same trade normalize to the same TradeRow.

For every stream, the same trades are encoded as the local simulator's WebSocket frames
(decoded by the current adapter) and as the exchange's REST history answer (served by the
stream's `SimExchange` history endpoint, fetched and parsed by `repair`); the rows must be
equal except recv_time.
"""

from __future__ import annotations

import asyncio

import pytest
from helpers.history import (
    NOW_US,
    START_US,
    Journal,
    Store,
    fast_budget,
    instrument,
    make_trades,
    spec_for,
    venue,
)

from pumpwatch.recorder.adapters import get_adapter
from pumpwatch.recorder.history.repair import repair
from pumpwatch.recorder.sim.cluster import sim_protocol_for
from pumpwatch.segments.schema import TradeRow
from pumpwatch.streams import STREAMS

MICRO = {"binance_spot", "gate_spot"}  # streams whose live times carry sub-millisecond digits


def _live_rows(stream: str, trades: list[TradeRow]) -> list[TradeRow]:
    inst = instrument(stream)
    adapter = get_adapter(stream)
    frames = sim_protocol_for(stream).encode_trades(trades, {inst.symbol: inst})
    rows: list[TradeRow] = []
    for frame in frames:
        decoded = adapter.decode(frame, NOW_US, {inst.symbol: inst})
        assert isinstance(decoded, list)
        rows.extend(decoded)
    return rows


def _strip(rows: list[TradeRow]) -> list[tuple[object, ...]]:
    return sorted((r[0], *r[2:]) for r in rows)


@pytest.mark.parametrize("stream", STREAMS)
def test_rest_row_equals_live_row(stream: str) -> None:
    inst = instrument(stream)
    trades = make_trades(inst, 150, start_us=START_US, micro=stream in MICRO)
    if stream.startswith(("bybit_spot",)):
        trades = trades[-60:]  # the endpoint's whole answer
    if stream.startswith("kucoin"):
        trades = trades[-100:]

    async def run() -> Store:
        async with venue(stream, trades) as ex:
            spec = spec_for(stream, ex.url)
            store, journal = Store(), Journal()
            start, end = trades[0][0], trades[-1][0]
            result = await repair(
                ex.client, spec, fast_budget(spec), stream, inst.symbol, start, end,
                instruments={inst.symbol: inst}, write=store.write, journal=journal,
            )  # fmt: skip
            assert result.fetched == len(store.rows)
            return store

    store = asyncio.run(asyncio.wait_for(run(), 30))
    live = _live_rows(stream, trades)
    assert len(live) == len(trades)
    assert _strip(store.rows) == _strip(live)
