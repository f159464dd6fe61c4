"""The refined objects derived from an `Analysis` (pure): per-exchange pump trades and the
cross-stream comparison."""

from __future__ import annotations

from typing import Any

import numpy as np

from pumpwatch.detector.analysis import Analysis, trades_json
from pumpwatch.detector.rule import StreamResult
from pumpwatch.streams import STREAMS, split_stream
from pumpwatch.timeunits import US_PER_MS


def exchange_pumps(analysis: Analysis) -> dict[str, dict[str, Any]]:
    """``{exchange: <exchange>_pumps.json object}`` for each exchange with at least one event:
    every trade inside each of its events, oldest first."""
    out: dict[str, dict[str, Any]] = {}
    for res in analysis.streams:
        exchange, market = split_stream(res.trades.stream)
        for ev in res.events:
            st = res.trades
            doc = out.setdefault(
                exchange, {"exchange": exchange, "symbol": analysis.pump_analysis["symbol"], "events": []}
            )
            doc["events"].append(
                {
                    "market_type": market,
                    "start_time": int(st.time_us[ev.start]) // US_PER_MS,
                    "end_time": int(st.time_us[ev.end]) // US_PER_MS,
                    "start_time_us": int(st.time_us[ev.start]),
                    "end_time_us": int(st.time_us[ev.end]),
                    "price_change_percent": round(ev.change_percent, 6),
                    "trades": trades_json(st, ev.start, ev.end),
                }
            )
    for doc in out.values():
        doc["events"].sort(key=lambda e: (e["start_time_us"], e["market_type"]))
    return out


def _stream_summary(res: StreamResult, trigger_us: int) -> dict[str, Any]:
    st = res.trades
    t, p, q = st.time_us, st.price, st.qty
    exchange, market = split_stream(st.stream)
    before = t <= trigger_us
    after = t > trigger_us
    ref_price = float(p[before][-1]) if before.any() else (float(p[0]) if len(p) else None)
    max_after = float(p[after].max()) if after.any() else None
    first_ev = min(res.events, key=lambda e: int(t[e.start])) if res.events else None
    return {
        "exchange": exchange,
        "market_type": market,
        "trades": len(t),
        "volume": round(float(q.sum()), 10),
        "volume_before_trigger": round(float(q[t < trigger_us].sum()), 10),
        "volume_after_trigger": round(float(q[t >= trigger_us].sum()), 10),
        "baseline_window_volume": None if res.baseline is None else round(res.baseline, 10),
        "price_at_trigger": ref_price,
        "max_price_after_trigger": max_after,
        "change_after_trigger_percent": (
            round((max_after / ref_price - 1.0) * 100.0, 6) if max_after is not None and ref_price else None
        ),
        "max_rise_percent": round(res.max_rise_percent, 6),
        "pumped": bool(res.events),
        "events": len(res.events),
        "first_pump_time": int(t[first_ev.start]) // US_PER_MS if first_ev else None,
        "first_pump_time_us": int(t[first_ev.start]) if first_ev else None,
        "max_pump_change_percent": (
            round(max(e.change_percent for e in res.events), 6) if res.events else None
        ),
        "lag_ms": None,
    }


def exchange_comparison(analysis: Analysis) -> dict[str, Any]:
    """The exchange_comparison.json object: per stream its trades, volume (base units, before
    and after the trigger), price move after the trigger, largest sliding-window rise, first
    pump time and its lag behind the first stream to pump."""
    streams = {res.trades.stream: _stream_summary(res, analysis.trigger_us) for res in analysis.streams}
    pumped = [
        (s["first_pump_time_us"], name) for name, s in streams.items() if s["first_pump_time_us"] is not None
    ]
    pumped.sort(key=lambda pair: (pair[0], STREAMS.index(pair[1])))
    first_us = pumped[0][0] if pumped else None
    for s in streams.values():
        if first_us is not None and s["first_pump_time_us"] is not None:
            s["lag_ms"] = round((s["first_pump_time_us"] - first_us) / US_PER_MS, 3)
    order = [name for _, name in pumped]
    return {
        "symbol": analysis.pump_analysis["symbol"],
        "trigger_time": analysis.trigger_us // US_PER_MS,
        "first_pump_stream": order[0] if order else None,
        "pump_order": order,
        "streams": streams,
        "parameters": analysis.params,
    }


def price_percent_series(res: StreamResult) -> tuple[np.ndarray, np.ndarray]:
    """(time_us, price as % from the stream's first trade in the window) for the chart."""
    p = res.trades.price
    if len(p) == 0:
        return res.trades.time_us, p
    return res.trades.time_us, (p / p[0] - 1.0) * 100.0
