"""Property tests of the detector: it equals a brute-force reading of the rule, and keeps its
invariants (constant prices, boundary-straddling rises, merging, determinism, scale)."""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from pumpwatch.detector import analyse
from pumpwatch.settings import PumpSettings
from pumpwatch.timeunits import US_PER_S as S

T0 = 1_760_000_000 * S
TRIGGER = T0 + 3 * S
PERIOD = (T0, T0 + 6 * S)


def pump_analysis(
    trades: Any, trigger_us: int, pump: PumpSettings | None = None, **kw: Any
) -> dict[str, Any]:
    """The pump_analysis.json object `analyse` builds."""
    return analyse(trades, trigger_us, pump, **kw).pump_analysis


def table(stream: str, times: list[int], prices: list[float], qtys: list[float]) -> pa.Table:
    exchange, market = stream.split("_")
    n = len(times)
    return pa.table(
        {
            "exchange": [exchange] * n,
            "market": [market] * n,
            "time": pa.array(times, pa.timestamp("us", tz="UTC")),
            "base": ["XYZ"] * n,
            "price": pa.array(prices, pa.float64()),
            "qty": pa.array(qtys, pa.float64()),
            "side": ["buy"] * n,
            "trade_id": [str(i) for i in range(n)],
        }
    )


def brute_force(
    times: list[int], prices: list[float], qtys: list[float], window_us: int, threshold: float, ratio: float
) -> list[tuple[int, int]]:
    """The rule read literally: O(n²), every window, then merge overlapping intervals."""
    order = sorted(range(len(times)), key=lambda i: times[i])
    t = [times[i] for i in order]
    p = [prices[i] for i in order]
    q = [qtys[i] for i in order]
    pre = sum(q[i] for i in range(len(t)) if PERIOD[0] <= t[i] < TRIGGER)
    baseline = pre * window_us / (TRIGGER - PERIOD[0]) if pre > 0 else None
    intervals = []
    for j in range(len(t)):
        members = [i for i in range(j + 1) if t[j] - t[i] <= window_us]
        low = min(members, key=lambda i: (p[i], i))
        rise = (p[j] / p[low] - 1.0) * 100.0
        vol = sum(q[i] for i in members)
        if rise >= threshold and (baseline is None or vol >= ratio * baseline):
            intervals.append((t[low], t[j]))
    merged: list[tuple[int, int]] = []
    for a, b in intervals:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


trades_strategy = st.lists(
    st.tuples(
        st.integers(0, 6 * S),
        st.sampled_from([100.0, 101.0, 102.5, 103.0, 104.0, 97.0, 110.0]),
        st.integers(1, 30).map(float),  # whole quantities: window sums are exact
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(trades_strategy, st.sampled_from([0.2, 0.5, 1.0, 2.0]), st.sampled_from([1.0, 3.0, 5.0]),
       st.sampled_from([0.0, 1.0, 2.0, 4.0]))  # fmt: skip
def test_equals_brute_force(trades: list, window_s: float, threshold: float, ratio: float) -> None:
    times = [T0 + t for t, _, _ in trades]
    prices = [p for _, p, _ in trades]
    qtys = [q for _, _, q in trades]
    result = pump_analysis(
        table("okx_spot", times, prices, qtys),
        TRIGGER,
        PumpSettings(window_s=window_s, threshold_percent=threshold, min_volume_ratio=ratio),
        period_us=PERIOD,
    )
    got = [(e["start_time_us"], e["end_time_us"]) for e in result["pump_events"]]
    assert got == brute_force(times, prices, qtys, round(window_s * S), threshold, ratio)
    for a, b in zip(result["pump_events"], result["pump_events"][1:], strict=False):
        assert a["end_time_us"] < b["start_time_us"]  # merged: events never overlap


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6 * S), st.integers(1, 1000).map(float)), min_size=1, max_size=80),
       st.floats(1e-6, 1e6, allow_nan=False))  # fmt: skip
def test_constant_price_never_pumps(trades: list, price: float) -> None:
    times = [T0 + t for t, _ in trades]
    tab = table("gate_futures", times, [price] * len(times), [q for _, q in trades])
    for threshold in (0.0001, 3.0):
        assert (
            pump_analysis(tab, TRIGGER, PumpSettings(threshold_percent=threshold), period_us=PERIOD)[
                "pump_events"
            ]
            == []
        )


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 5), st.integers(1, 499_999), st.integers(1, 499_999), st.floats(3.0, 50.0))
def test_rise_straddling_a_second_boundary_is_found(
    second: int, before_us: int, after_us: int, rise: float
) -> None:
    boundary = T0 + second * S
    t_low, t_high = boundary - before_us, boundary + after_us  # less than 1 s apart
    times = [T0 + k * 250_000 for k in range(24) if T0 + k * 250_000 < t_low] + [t_low, t_high]
    prices = [100.0] * (len(times) - 1) + [100.0 * (1 + rise / 100.0) * 1.0000001]
    qtys = [1.0] * (len(times) - 1) + [1000.0]
    events = pump_analysis(table("bybit_futures", times, prices, qtys), TRIGGER, period_us=PERIOD)[
        "pump_events"
    ]
    assert len(events) == 1
    assert events[0]["start_time_us"] <= t_low
    assert events[0]["end_time_us"] == t_high
    assert events[0]["price_change_percent"] >= rise


@settings(max_examples=60, deadline=None)
@given(trades_strategy, st.randoms(use_true_random=False), st.integers(-20, 20))
def test_deterministic_order_independent_and_scale_invariant(trades: list, rnd, exponent: int) -> None:
    by_time = {T0 + t: (p, q) for t, p, q in trades}  # distinct times: input order cannot matter
    times = sorted(by_time)
    prices = [by_time[t][0] for t in times]
    qtys = [by_time[t][1] for t in times]
    tab = table("kucoin_futures", times, prices, qtys)
    first = orjson.dumps(pump_analysis(tab, TRIGGER, period_us=PERIOD))
    assert orjson.dumps(pump_analysis(tab, TRIGGER, period_us=PERIOD)) == first
    order = list(range(len(times)))
    rnd.shuffle(order)
    shuffled = tab.take(pa.array(order))
    assert (
        orjson.dumps(pump_analysis(shuffled, TRIGGER, period_us=PERIOD)) == first
    )  # trade ids move with rows
    factor = 2.0**exponent  # a power of two scales floats exactly
    scaled = pump_analysis(
        table("kucoin_futures", times, [p * factor for p in prices], qtys), TRIGGER, period_us=PERIOD
    )
    base = orjson.loads(first)
    assert [_shape(e) for e in scaled["pump_events"]] == [_shape(e) for e in base["pump_events"]]
    for e_scaled, e_base in zip(scaled["pump_events"], base["pump_events"], strict=True):
        assert e_scaled["start_price"] == e_base["start_price"] * factor


def _shape(event: dict) -> tuple:
    keys = ("start_time_us", "end_time_us", "trades_count", "price_change_percent", "volume_spike_ratio")
    return tuple(event[k] for k in keys)
