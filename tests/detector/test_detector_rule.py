"""The detection rule on hand-built trades, field by field."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from pumpwatch.detector import analyse
from pumpwatch.detector.sliding import range_argmin, window_starts, window_sums
from pumpwatch.settings import PumpSettings
from pumpwatch.timeunits import US_PER_S as S

T0 = 1_750_000_000_000_000  # a whole second, µs


def pump_analysis(
    trades: Any, trigger_us: int, pump: PumpSettings | None = None, **kw: Any
) -> dict[str, Any]:
    """The pump_analysis.json object `analyse` builds."""
    return analyse(trades, trigger_us, pump, **kw).pump_analysis


def table(rows: list[tuple[str, int, float, float]], *, side: str = "buy") -> pa.Table:
    """rows: (stream, time_us, price, qty)."""
    exchange = [r[0].split("_")[0] for r in rows]
    market = [r[0].split("_")[1] for r in rows]
    return pa.table(
        {
            "exchange": exchange,
            "market": market,
            "time": pa.array([r[1] for r in rows], pa.timestamp("us", tz="UTC")),
            "base": ["ABC"] * len(rows),
            "price": pa.array([r[2] for r in rows], pa.float64()),
            "qty": pa.array([r[3] for r in rows], pa.float64()),
            "side": [side] * len(rows),
            "trade_id": [str(1000 + i) for i in range(len(rows))],
        }
    )


def steady(stream: str, start_us: int, end_us: int, step_us: int, price: float, qty: float = 1.0) -> list:
    return [(stream, t, price, qty) for t in range(start_us, end_us, step_us)]


def test_sliding_primitives_match_brute_force() -> None:
    rng = np.random.default_rng(7)
    t = np.sort(rng.integers(0, 5 * S, 400))
    p = rng.random(400)
    q = rng.random(400)
    lo = window_starts(t, S)
    am = range_argmin(p, lo, np.arange(400))
    vol = window_sums(q, lo)
    for j in range(400):
        members = [i for i in range(j + 1) if t[j] - t[i] <= S]
        assert lo[j] == members[0]
        best = min(members, key=lambda i: (p[i], i))
        assert am[j] == best
        assert vol[j] == pytest.approx(q[members].sum(), rel=1e-12)


def test_constant_price_has_no_event() -> None:
    rows = steady("binance_spot", T0 - 20 * S, T0 + 20 * S, 50_000, 2.5, qty=3.0)
    result = pump_analysis(table(rows), T0)
    assert result["pump_events"] == []
    assert result["summary"] == {
        "total_exchanges_with_pumps": 0,
        "total_streams_with_pumps": 0,
        "max_price_change": 0.0,
        "first_pump_exchange": None,
        "first_pump_market_type": None,
        "pump_duration_ms": 0,
    }
    assert result["symbol"] == "ABC"
    assert result["trigger_time"] == T0 // 1000


def test_rise_straddling_a_second_boundary_is_one_event_with_exact_fields() -> None:
    # 1 trade / 100 ms at 100 before; then 100 -> 104 between T0+0.7 s and T0+1.3 s (across the
    # T0+1 s boundary, so no calendar second holds the whole 4 %), with 10x the quantity.
    rows = steady("okx_futures", T0 - 20 * S, T0 + 700_000, 100_000, 100.0)
    rise = [(T0 + 800_000, 101.0), (T0 + 1_000_000, 102.0), (T0 + 1_200_000, 103.0), (T0 + 1_300_000, 104.0)]
    rows += [("okx_futures", t, p, 10.0) for t, p in rise]
    rows += steady("okx_futures", T0 + 1_400_000, T0 + 20 * S, 100_000, 104.0)
    result = pump_analysis(table(rows), T0, period_us=(T0 - 20 * S, T0 + 20 * S))
    (ev,) = result["pump_events"]
    assert ev["exchange"] == "okx"
    assert ev["market_type"] == "futures"
    # First qualifying window ends at T0+1.2 s (103 vs 100: 3 %); its earliest minimum is the
    # 100.0 trade at T0+0.2 s. The last is the one ending at T0+1.6 s (104 vs the 100.0 at
    # T0+0.6 s); at T0+1.7 s the window minimum is 101 and the rise 2.97 %.
    assert ev["start_time_us"] == T0 + 200_000
    assert ev["start_time"] == (T0 + 200_000) // 1000
    assert ev["end_time_us"] == T0 + 1_600_000
    assert ev["end_time"] == (T0 + 1_600_000) // 1000
    assert ev["price_change_percent"] == pytest.approx(4.0)
    assert ev["start_price"] == 100.0
    assert ev["peak_price"] == 104.0
    assert ev["peak_time"] == (T0 + 1_300_000) // 1000
    assert ev["trades_count"] == 12  # 5 steady (0.2-0.6 s) + 4 rising + 3 steady (1.4-1.6 s)
    # Baseline: 200 pre-trigger trades of qty 1 in 20 s = 10 per 1-s window; the largest
    # qualifying window volume is 44 (e.g. [0.3, 1.3]: four 1s and four 10s).
    assert ev["volume_spike_ratio"] == pytest.approx(4.4)
    assert ev["volume"] == pytest.approx(5 + 40 + 3)
    assert [(k["timestamp_us"], k["roles"]) for k in ev["key_trades"]] == [
        (T0 + 200_000, ["start"]),
        (T0 + 800_000, ["largest"]),
        (T0 + 1_300_000, ["peak"]),
        (T0 + 1_600_000, ["end"]),
    ]
    largest = ev["key_trades"][1]
    assert (largest["price"], largest["quantity"], largest["side"]) == (101.0, 10.0, "buy")
    assert largest["timestamp"] == (T0 + 800_000) // 1000
    assert result["summary"]["first_pump_exchange"] == "okx"
    assert result["summary"]["first_pump_market_type"] == "futures"
    assert result["summary"]["pump_duration_ms"] == 1400
    assert result["summary"]["max_price_change"] == pytest.approx(4.0)
    assert result["collection_period"] == {"start": (T0 - 20 * S) // 1000, "end": (T0 + 20 * S) // 1000}


def test_slow_rise_spread_over_two_seconds_is_not_a_pump() -> None:
    rows = steady("gate_spot", T0 - 20 * S, T0, 100_000, 100.0)
    rows += [
        ("gate_spot", T0 + k * 100_000, 100.0 * (1 + 0.002 * k), 50.0) for k in range(1, 21)
    ]  # 4 % / 2 s
    result = pump_analysis(table(rows), T0)
    assert result["pump_events"] == []


def test_volume_condition() -> None:
    pre = steady("bybit_spot", T0 - 20 * S, T0, 100_000, 10.0)  # baseline 10 per window
    quiet = [*pre, ("bybit_spot", T0 + 500_000, 10.5, 1.0)]  # +5 % but volume ~6 < 2 x 10
    assert pump_analysis(table(quiet), T0, period_us=(T0 - 20 * S, T0 + 20 * S))["pump_events"] == []
    loud = [*pre, ("bybit_spot", T0 + 500000, 10.5, 25.0)]
    (ev,) = pump_analysis(table(loud), T0, period_us=(T0 - 20 * S, T0 + 20 * S))["pump_events"]
    assert ev["volume_spike_ratio"] == pytest.approx((5 + 25.0) / 10.0)  # 5 steady + the big one
    assert (
        pump_analysis(
            table(loud), T0, PumpSettings(min_volume_ratio=3.5), period_us=(T0 - 20 * S, T0 + 20 * S)
        )["pump_events"]
        == []
    )


def test_no_pre_trigger_trades_means_no_baseline() -> None:
    rows = [("phemex_spot", T0 + 100_000, 1.0, 1.0), ("phemex_spot", T0 + 300_000, 1.05, 1.0)]
    (ev,) = pump_analysis(table(rows), T0, period_us=(T0 - 20 * S, T0 + 20 * S))["pump_events"]
    assert ev["volume_spike_ratio"] is None
    assert ev["price_change_percent"] == pytest.approx(5.0)
    assert ev["trades_count"] == 2


def test_overlapping_windows_merge_and_separate_ones_do_not() -> None:
    rows = steady("binance_futures", T0 - 20 * S, T0, 200_000, 50.0)
    # Two 4 % steps 500 ms apart overlap (one event); a third, 5 s later, is a second event.
    rows += [
        ("binance_futures", T0 + 100_000, 52.0, 30.0),
        ("binance_futures", T0 + 600_000, 54.1, 30.0),
        ("binance_futures", T0 + 4_500_000, 54.0, 1.0),
        ("binance_futures", T0 + 5_000_000, 56.2, 30.0),
    ]
    result = pump_analysis(table(rows), T0, period_us=(T0 - 20 * S, T0 + 20 * S))
    first, second = result["pump_events"]
    assert (first["start_time_us"], first["end_time_us"]) == (T0 - 800_000, T0 + 600_000)
    assert first["price_change_percent"] == pytest.approx(8.2)
    assert (second["start_time_us"], second["end_time_us"]) == (T0 + 4_500_000, T0 + 5_000_000)
    assert second["trades_count"] == 2
    assert result["summary"]["pump_duration_ms"] == 5800
    assert result["summary"]["total_streams_with_pumps"] == 1


def test_events_ordered_by_time_across_streams_and_summary() -> None:
    rows = steady("kucoin_spot", T0 - 10 * S, T0 + 1_500_000, 500_000, 1.0)
    rows += [("kucoin_spot", T0 + 2 * S, 1.1, 9.0)]
    rows += steady("binance_spot", T0 - 10 * S, T0 + 500_000, 500_000, 1.0)
    rows += [("binance_spot", T0 + 1 * S, 1.05, 9.0)]
    result = pump_analysis(table(rows), T0)
    assert [(e["exchange"], e["market_type"]) for e in result["pump_events"]] == [
        ("binance", "spot"),
        ("kucoin", "spot"),
    ]
    assert result["summary"]["first_pump_exchange"] == "binance"
    assert result["summary"]["total_exchanges_with_pumps"] == 2
    assert result["summary"]["max_price_change"] == pytest.approx(10.0)


def test_mapping_input_equals_table_input() -> None:
    rows = [*steady("okx_spot", T0 - 5 * S, T0, 100000, 3.0), ("okx_spot", T0 + S // 2, 3.3, 100.0)]
    tab = table(rows)
    by_stream = {"okx_spot": tab.drop_columns(["exchange", "market"])}
    from_table = pump_analysis(tab, T0)
    assert len(from_table["pump_events"]) == 1
    assert pump_analysis(by_stream, T0, symbol="ABC") == from_table
