"""The seeded synthetic market: determinism, shapes the exchanges really have, pumps, live mode."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest

from pumpwatch.recorder.sim.instruments import SIM_MULTIPLIER, sim_instrument
from pumpwatch.recorder.sim.market import LiveMarket, MarketSpec, PumpSpec, generate, instruments_for
from pumpwatch.recorder.sim.market_model import RESOLUTION_US, base_params
from pumpwatch.segments.schema import TRADE_SCHEMA
from pumpwatch.streams import STREAMS
from pumpwatch.timeunits import US_PER_MS, US_PER_S

START = 1_767_225_600 * US_PER_S  # 2026-01-01T00:00:00Z
BASES = ("BTC", "ETH", "0G", "PEPE", "SUI")


def collect(spec: MarketSpec) -> dict[str, pa.Table]:
    parts: dict[str, list[pa.RecordBatch]] = defaultdict(list)
    for stream, batch in generate(spec):
        parts[stream].append(batch)
    return {s: pa.Table.from_batches(b, schema=TRADE_SCHEMA) for s, b in parts.items()}


@pytest.fixture(scope="module")
def market() -> dict[str, pa.Table]:
    return collect(
        MarketSpec(seed=11, start_us=START, duration_s=300, trades_per_s=30, bases=BASES, chunk_s=45)
    )


def test_deterministic_for_a_seed_and_different_across_seeds() -> None:
    spec = MarketSpec(seed=5, start_us=START, duration_s=60, trades_per_s=10, bases=BASES, chunk_s=20)
    first = list(generate(spec))
    second = list(generate(spec))
    assert [s for s, _ in first] == [s for s, _ in second]
    assert all(a.equals(b) for (_, a), (_, b) in zip(first, second, strict=True))
    other = list(generate(MarketSpec(seed=6, start_us=START, duration_s=60, trades_per_s=10, bases=BASES)))
    assert not pa.Table.from_batches([b for _, b in other]).equals(
        pa.Table.from_batches([b for _, b in first])
    )


def test_schema_order_window_and_volume(market: dict[str, pa.Table]) -> None:
    assert sorted(market) == sorted(STREAMS)
    total = 0
    for stream, tab in market.items():
        assert tab.schema.equals(TRADE_SCHEMA)
        t = tab.column("time").cast(pa.int64()).to_numpy()
        r = tab.column("recv_time").cast(pa.int64()).to_numpy()
        assert np.all(np.diff(t) >= 0), stream
        assert t.min() >= START and t.max() < START + 300 * US_PER_S
        assert np.all(r > t)  # received after it happened …
        assert np.all(r - t < 2 * US_PER_S)  # … within a realistic lag
        assert np.all(np.diff(r) >= 0)  # frames of one stream arrive in order
        assert set(tab.column("side").to_pylist()) == {"buy", "sell"}
        assert set(tab.column("quote").to_pylist()) == {"USDT"}
        assert set(tab.column("base").to_pylist()) <= set(BASES)
        total += tab.num_rows
    expected = 30 * 300 * 12
    assert 0.8 * expected < total < 1.2 * expected


def test_times_on_each_venues_clock_resolution(market: dict[str, pa.Table]) -> None:
    for stream, tab in market.items():
        t = tab.column("time").cast(pa.int64()).to_numpy()
        res = RESOLUTION_US[stream]
        assert np.all(t % res == 0), stream
        if res == 1:
            assert np.any(t % US_PER_MS != 0), stream  # really sub-millisecond


def test_symbols_match_the_simulated_instruments(market: dict[str, pa.Table]) -> None:
    for stream, tab in market.items():
        pairs = set(zip(tab.column("base").to_pylist(), tab.column("symbol").to_pylist(), strict=True))
        for base, symbol in pairs:
            assert sim_instrument(stream, base).symbol == symbol
    assert "XBTUSDTM" in set(market["kucoin_futures"].column("symbol").to_pylist())
    assert "sBTCUSDT" in set(market["phemex_spot"].column("symbol").to_pylist())


def test_futures_quantities_are_whole_contracts(market: dict[str, pa.Table]) -> None:
    for exchange, mult in SIM_MULTIPLIER.items():
        qty = market[f"{exchange}_futures"].column("qty").to_numpy()
        contracts = qty / mult
        assert np.all(np.abs(contracts - np.rint(contracts)) < 1e-6), exchange
        assert np.all(np.rint(contracts) >= 1)
        assert len(np.unique(np.rint(contracts))) > 10  # sizes vary


def test_prices_on_ticks_and_quantities_heavy_tailed(market: dict[str, pa.Table]) -> None:
    params = {b.name: b for b in base_params(BASES, 11, 0.06)}
    for stream, tab in market.items():
        bases = tab.column("base").to_pylist()
        prices = tab.column("price").to_numpy()
        ticks = np.array([params[b].tick for b in bases])
        steps = prices / ticks
        assert np.all(np.abs(steps - np.rint(steps)) < 1e-6), stream
        notional = prices * tab.column("qty").to_numpy()
        assert np.max(notional) > 30 * np.median(notional), stream  # heavy right tail


def test_same_base_trades_at_nearly_the_same_price_everywhere(market: dict[str, pa.Table]) -> None:
    for base in ("BTC", "0G"):
        medians = []
        for tab in market.values():
            sel = tab.filter(pa.compute.equal(tab.column("base"), base))
            t = sel.column("time").cast(pa.int64()).to_numpy()
            in_minute = (t >= START + 120 * US_PER_S) & (t < START + 180 * US_PER_S)
            medians.append(float(np.median(sel.column("price").to_numpy()[in_minute])))
        assert max(medians) / min(medians) - 1 < 0.003, (base, medians)


def test_trade_ids_are_sequential_per_symbol_and_phemex_has_none(market: dict[str, pa.Table]) -> None:
    for stream, tab in market.items():
        ids = tab.column("trade_id").to_pylist()
        if stream.startswith("phemex"):
            assert set(ids) == {None}
            continue
        by_symbol: dict[str, list[int]] = defaultdict(list)
        for sym, tid in zip(tab.column("symbol").to_pylist(), ids, strict=True):
            by_symbol[sym].append(int(tid))
        for sym, seq in by_symbol.items():
            assert seq == list(range(seq[0], seq[0] + len(seq))), (stream, sym)


def test_pump_rises_on_chosen_streams_with_lag_and_volume_spike() -> None:
    at = START + 60 * US_PER_S
    pump = PumpSpec(
        "0G", at, 12.0, 4.0, streams=("binance_spot", "gate_futures"), lag_s={"gate_futures": 2.0}
    )
    tabs = collect(
        MarketSpec(seed=3, start_us=START, duration_s=90, trades_per_s=20, bases=BASES, pumps=(pump,))
    )

    def series(stream: str) -> tuple[np.ndarray, np.ndarray]:
        tab = tabs[stream].filter(pa.compute.equal(tabs[stream].column("base"), "0G"))
        return tab.column("time").cast(pa.int64()).to_numpy(), tab.column("price").to_numpy()

    for stream, start in (("binance_spot", at), ("gate_futures", at + 2 * US_PER_S)):
        t, p = series(stream)
        before = np.median(p[(t > start - 10 * US_PER_S) & (t <= start)])
        after = np.median(p[(t > start + 5 * US_PER_S) & (t < start + 15 * US_PER_S)])
        assert after / before - 1 == pytest.approx(0.12, abs=0.01), stream
        during = np.sum((t > start) & (t <= start + 4 * US_PER_S))
        normal = np.sum((t > start - 40 * US_PER_S) & (t <= start - 20 * US_PER_S)) / 5  # per 4 s
        assert during > 5 * max(normal, 1), stream
        # Nothing moves before the stream's own start.
        assert np.median(p[(t > start - 1 * US_PER_S) & (t <= start)]) / before - 1 < 0.005
    t, p = series("okx_spot")  # not chosen: no rise
    before = np.median(p[(t > at - 10 * US_PER_S) & (t <= at)])
    after = np.median(p[(t > at + 5 * US_PER_S) & (t < at + 15 * US_PER_S)])
    assert abs(after / before - 1) < 0.01


def test_live_market_intervals_determinism_and_rows() -> None:
    insts = instruments_for(("okx_futures", "phemex_spot"), ("BTC", "0G"))

    def run() -> list[dict]:
        live = LiveMarket(insts, seed=9, trades_per_s=50.0)
        assert live.advance(START) == {"okx_futures": [], "phemex_spot": []}
        return [live.advance(START + k * 100_000) for k in range(1, 31)]

    steps = run()
    assert steps == run()
    count = 0
    for k, step in enumerate(steps, start=1):
        lo, hi = START + (k - 1) * 100_000, START + k * 100_000
        for stream, rows in step.items():
            times = [r[0] for r in rows]
            assert times == sorted(times)
            assert all(lo < t <= hi for t in times)
            for time_us, recv_us, symbol, base, quote, price, qty, side, tid in rows:
                assert recv_us == time_us
                assert symbol == sim_instrument(stream, base).symbol
                assert quote == "USDT" and side in ("buy", "sell")
                assert isinstance(price, float) and price > 0 and isinstance(qty, float) and qty > 0
                assert (tid is None) == (stream == "phemex_spot")
                if stream == "okx_futures":
                    assert math.isclose(qty / 0.01, round(qty / 0.01), abs_tol=1e-6)
            count += len(rows)
    assert 0.6 * 50 * 3 * 2 < count < 1.6 * 50 * 3 * 2  # 3 s of two streams at ~50/s


def test_live_market_pump() -> None:
    insts = instruments_for(("bybit_spot",), ("0G",))
    live = LiveMarket(
        insts, seed=1, trades_per_s=5.0, pumps=[PumpSpec("0G", START + 2 * US_PER_S, 20.0, 1.0)]
    )
    live.advance(START)
    rows = []
    for k in range(1, 51):
        rows += live.advance(START + k * 100_000)["bybit_spot"]
    before = [r[5] for r in rows if r[0] <= START + 2 * US_PER_S]
    after = [r[5] for r in rows if r[0] > START + 3 * US_PER_S]
    assert np.median(after) / np.median(before) - 1 == pytest.approx(0.20, abs=0.02)
    assert sum(1 for r in rows if START + 2 * US_PER_S < r[0] <= START + 3 * US_PER_S) >= 20
