"""The pump rule over an extracted window: pure (no I/O, no clock) and deterministic.

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

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from pumpwatch.detector.sliding import range_argmin, window_starts, window_sums
from pumpwatch.segments.slices import stream_slices
from pumpwatch.settings import PumpSettings
from pumpwatch.streams import STREAMS
from pumpwatch.timeunits import US_PER_S


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


def window_us_of(pump: PumpSettings) -> int:
    """The sliding window length in µs (at least 1)."""
    return max(round(pump.window_s * US_PER_S), 1)


def collection_period(streams: list[StreamTrades], trigger_us: int) -> tuple[int, int]:
    """The default collection period: the span of the trades and the trigger."""
    times = [s.time_us for s in streams if len(s.time_us)]
    lo = min((int(t[0]) for t in times), default=trigger_us)
    hi = max((int(t[-1]) for t in times), default=trigger_us)
    return (min(lo, trigger_us), max(hi, trigger_us))


def stream_events(
    st: StreamTrades, trigger_us: int, period_start_us: int, pump: PumpSettings
) -> StreamResult:
    """Apply the rule (module doc) to one stream's trades."""
    window_us = window_us_of(pump)
    threshold, ratio = pump.threshold_percent, pump.min_volume_ratio
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
