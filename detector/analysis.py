"""The detector's one entry point, `analyse`: the rule's events (`rule.py`) shaped into the
pump_analysis.json object (DESIGN §8). Pure: no I/O, no clock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pumpwatch.detector.rule import (
    Event,
    StreamResult,
    StreamTrades,
    collection_period,
    split_streams,
    stream_events,
)
from pumpwatch.settings import PumpSettings
from pumpwatch.streams import STREAMS, split_stream
from pumpwatch.timeunits import US_PER_MS


@dataclass
class Analysis:
    """The detector's result: `pump_analysis` is the pump_analysis.json object."""

    pump_analysis: dict[str, Any]
    streams: list[StreamResult]
    trigger_us: int
    period_us: tuple[int, int]
    params: dict[str, float]


def trade_json(st: StreamTrades, i: int) -> dict[str, Any]:
    """One trade as the refined files show it (timestamp in ms, plus the exact µs)."""
    time_us = int(st.time_us[i])
    return {
        "timestamp": time_us // US_PER_MS,
        "timestamp_us": time_us,
        "price": float(st.price[i]),
        "quantity": float(st.qty[i]),
        "side": st.side_at(i),
        "trade_id": st.trade_id_at(i),
    }


def trades_json(st: StreamTrades, start: int, end: int) -> list[dict[str, Any]]:
    """`trade_json` for trades ``start..end`` inclusive, converted column-wise (fast)."""
    n = end - start + 1
    sides = st.side.slice(start, n).to_pylist() if st.side is not None else [None] * n
    ids = st.trade_id.slice(start, n).to_pylist() if st.trade_id is not None else [None] * n
    times = st.time_us[start : end + 1].tolist()
    return [
        {
            "timestamp": t // US_PER_MS,
            "timestamp_us": t,
            "price": p,
            "quantity": q,
            "side": sd,
            "trade_id": tid,
        }
        for t, p, q, sd, tid in zip(
            times,
            st.price[start : end + 1].tolist(),
            st.qty[start : end + 1].tolist(),
            sides,
            ids,
            strict=True,
        )
    ]


def _key_trades(st: StreamTrades, ev: Event) -> list[dict[str, Any]]:
    biggest = ev.start + int(np.argmax(st.qty[ev.start : ev.end + 1]))
    roles: dict[int, list[str]] = {}
    for role, i in (("start", ev.start), ("peak", ev.peak), ("largest", biggest), ("end", ev.end)):
        roles.setdefault(i, []).append(role)
    return [{**trade_json(st, i), "roles": roles[i]} for i in sorted(roles)]


def _r(x: float, digits: int = 6) -> float:
    return round(x, digits)


def event_json(res: StreamResult, ev: Event) -> dict[str, Any]:
    """One entry of ``pump_events``."""
    st = res.trades
    exchange, market = split_stream(ev.stream)
    start_us, end_us = int(st.time_us[ev.start]), int(st.time_us[ev.end])
    return {
        "exchange": exchange,
        "market_type": market,
        "start_time": start_us // US_PER_MS,
        "end_time": end_us // US_PER_MS,
        "price_change_percent": _r(ev.change_percent),
        "volume_spike_ratio": None if ev.spike_ratio is None else _r(ev.spike_ratio),
        "trades_count": ev.end - ev.start + 1,
        "key_trades": _key_trades(st, ev),
        "start_time_us": start_us,
        "end_time_us": end_us,
        "start_price": float(st.price[ev.start]),
        "peak_price": float(st.price[ev.peak]),
        "peak_time": int(st.time_us[ev.peak]) // US_PER_MS,
        "volume": _r(ev.volume, 10),
    }


def analyse(
    trades: pa.Table | Mapping[str, pa.Table],
    trigger_us: int,
    pump: PumpSettings | None = None,
    *,
    symbol: str | None = None,
    period_us: tuple[int, int] | None = None,
) -> Analysis:
    """Run the pump rule (`rule.py`) on every stream of `trades` around `trigger_us`, with the
    thresholds of `pump` (default: `PumpSettings()`, the one place the defaults live).

    `trades` is one table with ``exchange``, ``market``, ``time``, ``price``, ``qty`` (and
    optionally ``side``, ``trade_id``, ``base``) columns, or a mapping of stream id to a table
    with the same columns minus exchange/market. `period_us` is the collection window
    ``(start, end)`` (default: the span of the trades and the trigger); its pre-trigger part
    is the volume baseline. ``.pump_analysis`` is the pump_analysis.json object: all times
    in ms since the epoch, with ``*_us`` companions where precision matters.
    """
    pump = pump if pump is not None else PumpSettings()
    streams = split_streams(trades)
    if period_us is None:
        period_us = collection_period(streams, trigger_us)
    if symbol is None and isinstance(trades, pa.Table) and "base" in trades.column_names and trades.num_rows:
        symbol = str(trades.column("base")[0].as_py())
    results = [stream_events(s, trigger_us, period_us[0], pump) for s in streams]
    ordered = sorted(
        ((res, ev) for res in results for ev in res.events),
        key=lambda pair: (int(pair[0].trades.time_us[pair[1].start]), STREAMS.index(pair[1].stream)),
    )
    events = [event_json(res, ev) for res, ev in ordered]
    first = events[0] if events else None
    summary = {
        "total_exchanges_with_pumps": len({e["exchange"] for e in events}),
        "total_streams_with_pumps": len({(e["exchange"], e["market_type"]) for e in events}),
        "max_price_change": max((e["price_change_percent"] for e in events), default=0.0),
        "first_pump_exchange": first["exchange"] if first else None,
        "first_pump_market_type": first["market_type"] if first else None,
        "pump_duration_ms": (max(e["end_time_us"] for e in events) - first["start_time_us"]) // US_PER_MS
        if first
        else 0,
    }
    params = {
        "window_s": pump.window_s,
        "threshold_percent": pump.threshold_percent,
        "min_volume_ratio": pump.min_volume_ratio,
    }
    pump_analysis = {
        "symbol": symbol,
        "trigger_time": trigger_us // US_PER_MS,
        "collection_period": {"start": period_us[0] // US_PER_MS, "end": period_us[1] // US_PER_MS},
        "pump_events": events,
        "summary": summary,
        "parameters": params,
    }
    return Analysis(pump_analysis, results, trigger_us, period_us, params)
