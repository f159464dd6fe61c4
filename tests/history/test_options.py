"""History follows the stream's adapter options: REST rows must be what the live stream records."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers.history import (
    START_US,
    Journal,
    Store,
    Venue,
    fast_budget,
    instrument,
    make_trades,
    spec_for,
    venue,
)

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.history.repair import repair
from pumpwatch.recorder.history.specs import history_spec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RECV = 1_800_000_000_000_000  # 2027: after every fixture's trades


@pytest.mark.parametrize(
    ("stream", "options"),
    [
        ("binance_futures", {"channel": "trade"}),  # fill ids: only the keyed historicalTrades pages them
        ("binance_spot", {"channel": "aggTrade"}),  # aggregate ids: historicalTrades pages trade ids
        ("okx_spot", {"channel": "trades"}),  # aggregated rows: per-fill history would double-count
        ("okx_futures", {"channel": "trades"}),
    ],
)
def test_configurations_without_matching_history(stream: str, options: dict[str, str]) -> None:
    assert history_spec(stream, "http://127.0.0.1:9", options) is None


def test_default_options_have_history_everywhere() -> None:
    from pumpwatch.streams import STREAMS

    assert all(history_spec(stream, "http://127.0.0.1:9") is not None for stream in STREAMS)


def test_binance_spot_in_milliseconds_asks_without_the_header() -> None:
    stream = "binance_spot"
    inst = instrument(stream)
    trades = make_trades(inst, 30, start_us=START_US, micro=True)

    async def go() -> tuple[Store, Venue]:
        async with venue(stream, trades) as ex:
            spec = spec_for(stream, ex.url, {"time_unit": "MILLISECOND"})
            store = Store()
            await repair(
                ex.client, spec, fast_budget(spec), stream, inst.symbol, START_US, trades[-1][0],
                instruments={inst.symbol: inst}, write=store.write, journal=Journal(),
            )  # fmt: skip
            return store, ex

    store, ex = asyncio.run(go())
    assert all("x-mbx-time-unit" not in r.headers for r in ex.log)
    assert sorted(r[0] for r in store.rows) == [t[0] // 1000 * 1000 for t in trades]


def test_bybit_block_trades_follow_the_live_option() -> None:
    body = (FIXTURES / "bybit/futures_history_recent_trade_block.json").read_bytes()
    inst = Instrument("BTCUSDT", "BTC", "USDT")
    kept = spec_for("bybit_futures", "http://x").parse(body, RECV, inst)
    dropped = spec_for("bybit_futures", "http://x", {"drop_block_trades": True}).parse(body, RECV, inst)
    assert [r[8] for r in kept.rows] == [
        "20f43950-d8dd-5b31-9112-a178eb6023af",
        "8f5d4c1a-0b6e-5e0f-9d3b-2b1f0b7f7a11",
    ]
    assert [r[8] for r in dropped.rows] == ["20f43950-d8dd-5b31-9112-a178eb6023af"]
