"""Pump detection over an extracted window: pure (no I/O, no clock) and deterministic.

Rule (DESIGN §8), per stream, over its trades sorted by time:

- The window of trade j is every trade i of the same stream with ``t_j - window <= t_i <= t_j``
  (a sliding window ending at each trade, so a rise that straddles a second boundary is seen).
- Its rise is ``p_j / min(p_i in the window) - 1``; its volume the sum of base quantities in it.
- Trade j *qualifies* when the rise is at least `threshold_percent` and the volume is at least
  `min_volume_ratio` × the stream's baseline: the average volume per window before the trigger,
  ``pre-trigger volume × window / (trigger - period start)``.
- A stream with no trade before the trigger has no baseline: its volume condition counts as
  met (trading that starts with the listing is itself a spike) and `volume_spike_ratio` is null.
- A qualifying window spans from its minimum-price trade to j. Windows that overlap in time
  merge into one event, from the first window's minimum to the last window's end.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pumpwatch.detector.sliding import range_argmin, window_starts, window_sums
from pumpwatch.streams import STREAMS, split_stream

US_PER_MS = 1000


@dataclass
class StreamTrades:
    """One stream's trades as numpy columns, sorted by time (ties keep their input order)."""

    stream: str
    time_us: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    side: pa.ChunkedArray | None
    trade_id: pa.ChunkedArray | None

    @classmethod
    def from_table(cls, stream: str, table: pa.Table) -> StreamTrades:
        time_us = table.column("time").cast(pa.int64()).to_numpy()
        if not _is_sorted(time_us):
            order = np.argsort(time_us, kind="stable")
            table = table.take(pa.array(order))
            time_us = time_us[order]
        names = table.column_names
        return cls(
            stream,
            time_us,
            table.column("price").to_numpy().astype(np.float64),
            table.column("qty").to_numpy().astype(np.float64),
            table.column("side") if "side" in names else None,
            table.column("trade_id") if "trade_id" in names else None,
        )

    def side_at(self, i: int) -> str | None:
        return None if self.side is None else self.side[i].as_py()

    def trade_id_at(self, i: int) -> str | None:
        return None if self.trade_id is None else self.trade_id[i].as_py()


def _is_sorted(values: np.ndarray) -> bool:
    return bool(len(values) < 2 or np.all(values[1:] >= values[:-1]))


def stream_slices(table: pa.Table) -> dict[str, pa.Table]:
    """``{stream: rows}`` of a table with ``exchange`` and ``market`` columns, each sorted by
    time (then receive time when present), streams in `STREAMS` order.

    Works with Arrow-side sorts and zero-copy slices only: converting a Python or numpy value
    to Arrow makes pyarrow import pandas, which alone costs more than an extraction.
    """
    keys = [("exchange", "ascending"), ("market", "ascending"), ("time", "ascending")]
    if "recv_time" in table.column_names:
        keys.append(("recv_time", "ascending"))
    ordered = table.sort_by(keys)
    out: dict[str, pa.Table] = {}
    if ordered.num_rows == 0:
        return out
    ex_names, ex_idx = _codes(ordered.column("exchange"))
    mk_names, mk_idx = _codes(ordered.column("market"))
    key = ex_idx * (len(mk_names) + 1) + mk_idx
    cuts = [0, *(np.flatnonzero(np.diff(key)) + 1).tolist(), ordered.num_rows]
    found = {
        f"{ex_names[ex_idx[a]]}_{mk_names[mk_idx[a]]}": ordered.slice(a, b - a)
        for a, b in itertools.pairwise(cuts)
    }
    for stream in STREAMS:
        if stream in found:
            out[stream] = found[stream]
    return out


def _codes(column: pa.ChunkedArray) -> tuple[list[str], np.ndarray]:
    """A string column as (distinct values, per-row index into them), via a dictionary."""
    enc = column.combine_chunks()
    if not pa.types.is_dictionary(enc.type):
        enc = enc.dictionary_encode()
    return enc.dictionary.to_pylist(), enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def split_streams(trades: pa.Table | Mapping[str, pa.Table]) -> list[StreamTrades]:
    """Per-stream trades, in the order of `STREAMS`, from one table with ``exchange`` and
    ``market`` columns or a mapping of stream id to table."""
    if isinstance(trades, Mapping):
        parts = {s: trades[s] for s in STREAMS if s in trades and trades[s].num_rows}
    else:
        parts = stream_slices(trades)
    return [StreamTrades.from_table(stream, part) for stream, part in parts.items()]


@dataclass
class Event:
    """One merged pump event of one stream (indices into its `StreamTrades`)."""

    stream: str
    start: int
    end: int
    peak: int
    change_percent: float
    spike_ratio: float | None
    volume: float


@dataclass
class StreamResult:
    """Everything the refined files need about one stream."""

    trades: StreamTrades
    baseline: float | None  # average base volume per window before the trigger
    max_rise_percent: float  # largest sliding-window rise anywhere in the period
    events: list[Event] = field(default_factory=list)


@dataclass
class Analysis:
    """The detector's result: `pump_analysis` is the pump_analysis.json object."""

    pump_analysis: dict[str, Any]
    streams: list[StreamResult]
    trigger_us: int
    period_us: tuple[int, int]
    params: dict[str, float]


def _stream_events(
    st: StreamTrades, trigger_us: int, period_start_us: int, window_us: int, threshold: float, ratio: float
) -> StreamResult:
    t, p, q = st.time_us, st.price, st.qty
    n = len(t)
    if n == 0:
        return StreamResult(st, None, 0.0)
    lo = window_starts(t, window_us)
    argmin = range_argmin(p, lo, np.arange(n, dtype=np.int64))
    rise_percent = (p / p[argmin] - 1.0) * 100.0
    volume = window_sums(q, lo)
    pre = (t >= period_start_us) & (t < trigger_us)
    pre_volume = float(q[pre].sum())
    pre_duration_us = trigger_us - period_start_us
    baseline = pre_volume * window_us / pre_duration_us if pre_volume > 0 and pre_duration_us > 0 else None
    ok = rise_percent >= threshold
    if baseline is not None:
        ok &= volume >= ratio * baseline
    result = StreamResult(st, baseline, float(rise_percent.max()))
    ends = np.flatnonzero(ok)
    if len(ends) == 0:
        return result
    starts = argmin[ends]
    # Window starts are non-decreasing and ends increasing, so a new event begins exactly
    # where a window starts after the previous qualifying window ended.
    new_group = np.concatenate([[True], t[starts[1:]] > t[ends[:-1]]])
    group_first = np.flatnonzero(new_group)
    group_last = np.concatenate([group_first[1:] - 1, [len(ends) - 1]])
    for g0, g1 in zip(group_first.tolist(), group_last.tolist(), strict=True):
        start, end = int(starts[g0]), int(ends[g1])
        peak = start + int(np.argmax(p[start : end + 1]))
        spike = float(volume[ends[g0 : g1 + 1]].max()) / baseline if baseline else None
        result.events.append(
            Event(
                stream=st.stream,
                start=start,
                end=end,
                peak=peak,
                change_percent=(float(p[peak]) / float(p[start]) - 1.0) * 100.0,
                spike_ratio=spike,
                volume=float(q[start : end + 1].sum()),
            )
        )
    return result


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
    *,
    window_s: float = 1.0,
    threshold_percent: float = 3.0,
    min_volume_ratio: float = 2.0,
    symbol: str | None = None,
    period_us: tuple[int, int] | None = None,
) -> Analysis:
    """Run the detection rule (module doc) on every stream; see `detect` for the arguments."""
    streams = split_streams(trades)
    if period_us is None:
        times = [s.time_us for s in streams if len(s.time_us)]
        lo = min((int(t[0]) for t in times), default=trigger_us)
        hi = max((int(t[-1]) for t in times), default=trigger_us)
        period_us = (min(lo, trigger_us), max(hi, trigger_us))
    if symbol is None and isinstance(trades, pa.Table) and "base" in trades.column_names and trades.num_rows:
        symbol = str(trades.column("base")[0].as_py())
    window_us = max(round(window_s * 1_000_000), 1)
    results = [
        _stream_events(s, trigger_us, period_us[0], window_us, threshold_percent, min_volume_ratio)
        for s in streams
    ]
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
        "window_s": window_s,
        "threshold_percent": threshold_percent,
        "min_volume_ratio": min_volume_ratio,
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


def detect(
    trades: pa.Table | Mapping[str, pa.Table],
    trigger_us: int,
    *,
    window_s: float = 1.0,
    threshold_percent: float = 3.0,
    min_volume_ratio: float = 2.0,
    symbol: str | None = None,
    period_us: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The pump_analysis.json object for `trades` around `trigger_us`.

    `trades` is one table with ``exchange``, ``market``, ``time``, ``price``, ``qty`` (and
    optionally ``side``, ``trade_id``, ``base``) columns, or a mapping of stream id to a table
    with the same columns minus exchange/market. `period_us` is the collection window
    ``(start, end)`` (default: the span of the trades and the trigger); its pre-trigger part
    is the volume baseline. All times in the result are ms since the epoch, with ``*_us``
    companions where precision matters.
    """
    return analyse(
        trades,
        trigger_us,
        window_s=window_s,
        threshold_percent=threshold_percent,
        min_volume_ratio=min_volume_ratio,
        symbol=symbol,
        period_us=period_us,
    ).pump_analysis
