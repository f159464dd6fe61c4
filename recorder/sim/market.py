"""Seeded synthetic market: the trades twelve exchange streams would print, deterministic for a
seed (the model is described in `market_model.py`).

Two entry points:

- bulk: `generate(spec)` yields ``(stream, RecordBatch)`` pairs of `TRADE_SCHEMA` in time order,
  interval by interval, and `write_store(data_dir, spec)` writes them through the real
  `SegmentWriter`. Used by tests and the extract benchmark (100 M trades in minutes).
- live: `LiveMarket(...).advance(now_us)` returns the trades since the previous call as
  `TradeRow` tuples; the local exchange servers and the demo use it.

Symbols per stream come from `sim_instrument(stream, base)`, so a base has the same exchange
symbols and contract sizes as on the simulated exchanges.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.sim.instruments import sim_instrument
from pumpwatch.recorder.sim.market_model import Columns, MarketModel, PumpSpec
from pumpwatch.segments.schema import TIME_TYPE, TRADE_SCHEMA, TradeRow
from pumpwatch.streams import STREAMS
from pumpwatch.timeunits import US_PER_S

__all__ = [
    "DEFAULT_BASES",
    "LiveMarket",
    "MarketSpec",
    "PumpSpec",
    "generate",
    "instruments_for",
    "write_store",
]

log = logging.getLogger(__name__)

DEFAULT_BASES: tuple[str, ...] = (
    "BTC", "ETH", "SOL", "XRP", "DOGE", "ADA", "AVAX", "LINK", "DOT", "TRX", "TON", "NEAR", "APT", "ARB",
    "OP", "SUI", "SEI", "TIA", "INJ", "WLD", "PEPE", "WIF", "BONK", "JUP", "PYTH", "ENA", "ONDO", "STRK",
    "ZRO", "EIGEN", "0G", "MOVE", "ME", "KAITO", "IP", "BERA", "LAYER", "HYPE", "VIRTUAL", "AIXBT",
)  # fmt: skip


def instruments_for(streams: Sequence[str], bases: Sequence[str]) -> dict[str, list[Instrument]]:
    """The simulated instruments of `bases` on each of `streams`."""
    return {s: [sim_instrument(s, b) for b in bases] for s in streams}


@dataclass(frozen=True)
class MarketSpec:
    """What `generate` produces: `duration_s` of trades from `start_us` on `streams`, about
    `trades_per_s` per stream on average (busier venues more, quieter ones less), spread over
    `bases` with Zipf-like popularity, cut into `chunk_s` intervals."""

    seed: int
    start_us: int
    duration_s: float
    trades_per_s: float = 20.0
    bases: tuple[str, ...] = DEFAULT_BASES
    streams: tuple[str, ...] = STREAMS
    pumps: tuple[PumpSpec, ...] = ()
    chunk_s: float = 60.0
    volatility_per_day: float = 0.06

    def model(self) -> MarketModel:
        return MarketModel(
            instruments_for(self.streams, self.bases),
            seed=self.seed,
            trades_per_s=self.trades_per_s,
            pumps=self.pumps,
            volatility_per_day=self.volatility_per_day,
            start_us=self.start_us,
        )


def _to_batch(cols: Columns, instruments: Sequence[Instrument], stream: str) -> pa.RecordBatch:
    idx = pa.array(cols.inst.astype(np.int32))
    symbols = pa.array([i.symbol for i in instruments], pa.string()).take(idx)
    bases = pa.array([i.base for i in instruments], pa.string()).take(idx)
    quotes = pa.array([i.quote for i in instruments], pa.string()).take(idx)
    sides = pa.array(["sell", "buy"], pa.string()).take(pa.array(cols.buy.astype(np.int8)))
    if stream.startswith("phemex_"):
        trade_id = pa.nulls(len(cols), pa.string())
    else:
        trade_id = pc.cast(pa.array(cols.trade_id), pa.string())
    return pa.RecordBatch.from_arrays(
        [
            pa.array(cols.time_us, TIME_TYPE),
            pa.array(cols.recv_us, TIME_TYPE),
            symbols,
            bases,
            quotes,
            pa.array(cols.price, pa.float64()),
            pa.array(cols.qty, pa.float64()),
            sides,
            trade_id,
            pa.array(["ws"], pa.string()).take(pa.array(np.zeros(len(cols), np.int8))),  # live rows
        ],
        schema=TRADE_SCHEMA,
    )


def generate(spec: MarketSpec) -> Iterator[tuple[str, pa.RecordBatch]]:
    """Yield ``(stream, batch)`` for each `spec.chunk_s` interval and stream, in time order
    within each batch; the same spec always yields the same batches. Empty batches are skipped."""
    model = spec.model()
    instruments = {st.stream: st.instruments for st in model.streams}
    chunk_us = max(round(spec.chunk_s * US_PER_S), 1)
    end_us = spec.start_us + round(spec.duration_s * US_PER_S)
    # The interval is (t0, t1]; start one µs early so a trade at exactly start_us can occur.
    t0 = spec.start_us - 1
    while t0 < end_us - 1:
        t1 = min(t0 + chunk_us, end_us - 1)
        for stream, cols in model.simulate(t0, t1).items():
            if len(cols):
                yield stream, _to_batch(cols, instruments[stream], stream)
        t0 = t1


def write_store(
    data_dir: str | Path,
    spec: MarketSpec,
    *,
    flush_every_s: float = 1.0,
    compression_level: int = 3,
    fsync: bool = False,
    progress_every_s: float = 0.0,
) -> dict[str, Any]:
    """Write `generate(spec)` through the real `SegmentWriter`, one append per stream per
    `flush_every_s` of receive time (so batches look like a recorder's per-second flushes;
    larger values build big stores faster). Synthetic data needs no fsync unless asked.

    Returns ``{"trades": total, "per_stream": {stream: n}, "seconds": wall}``.
    `progress_every_s` > 0 logs progress at that wall-clock interval.
    """
    from pumpwatch.segments.writer import SegmentWriter

    data_dir = Path(data_dir)
    writers: dict[str, Any] = {}
    per_stream = dict.fromkeys(spec.streams, 0)
    started = last_log = time.monotonic()
    flush_us = max(round(flush_every_s * US_PER_S), 1)
    try:
        for stream, batch in generate(spec):
            writer = writers.get(stream)
            if writer is None:
                writer = SegmentWriter(
                    data_dir,
                    stream,
                    compression_level=compression_level,
                    flush_rows=1 << 30,
                    flush_interval_s=3600.0,
                    fsync=fsync,
                    clock_us=lambda: 0,  # synthetic hours rotate by receive time, never by wall clock
                )
                writers[stream] = writer
            recv = batch.column(1).cast(pa.int64()).to_numpy()
            bucket = recv // flush_us
            cuts = np.flatnonzero(np.diff(bucket)) + 1
            for lo, hi in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(recv)]]), strict=True):
                writer.append_batch(batch.slice(int(lo), int(hi - lo)))
                writer.flush()
            per_stream[stream] += batch.num_rows
            now = time.monotonic()
            if progress_every_s > 0 and now - last_log >= progress_every_s:
                last_log = now
                log.info("synth store: %d trades written in %.0f s", sum(per_stream.values()), now - started)
    finally:
        for writer in writers.values():
            writer.close()
    return {
        "trades": sum(per_stream.values()),
        "per_stream": per_stream,
        "seconds": time.monotonic() - started,
    }


class LiveMarket:
    """The seeded market advanced in real time: `advance(now_us)` returns each stream's trades
    with time in ``(previous now, now]`` as `TradeRow` tuples (recv_us = time_us: the receiving
    side stamps its own). The first call only sets the clock unless `start_us` was given.
    The same seed, instruments and sequence of `advance` calls give the same trades."""

    def __init__(
        self,
        instruments_by_stream: Mapping[str, Sequence[Instrument]],
        *,
        seed: int,
        trades_per_s: float,
        pumps: Sequence[PumpSpec] = (),
        start_us: int | None = None,
    ) -> None:
        self._instruments = {s: list(v) for s, v in instruments_by_stream.items()}
        self._seed = seed
        self._trades_per_s = trades_per_s
        self._pumps = tuple(pumps)
        self._model: MarketModel | None = None
        self._now_us: int | None = None
        if start_us is not None:
            self._start(start_us)

    def _start(self, now_us: int) -> None:
        self._model = MarketModel(
            self._instruments,
            seed=self._seed,
            trades_per_s=self._trades_per_s,
            pumps=self._pumps,
            start_us=now_us,
        )
        self._now_us = now_us

    @property
    def now_us(self) -> int | None:
        """The time of the last `advance` (None before the first)."""
        return self._now_us

    def advance(self, now_us: int) -> dict[str, list[TradeRow]]:
        """Trades per stream with time in ``(previous now, now_us]``, oldest first."""
        if self._model is None or self._now_us is None:
            self._start(now_us)
            return {s: [] for s in self._instruments}
        out: dict[str, list[TradeRow]] = {s: [] for s in self._instruments}
        if now_us <= self._now_us:
            return out
        by_stream = self._model.simulate(self._now_us, now_us)
        self._now_us = now_us
        for st in self._model.streams:
            cols = by_stream.get(st.stream)
            if cols is None or not len(cols):
                continue
            insts = st.instruments
            ids: list[str | None] = (
                [str(i) for i in cols.trade_id.tolist()] if st.has_ids else [None] * len(cols)
            )
            out[st.stream] = [
                (t, t, insts[k].symbol, insts[k].base, insts[k].quote, p, q, "buy" if b else "sell", tid)
                for t, k, p, q, b, tid in zip(
                    cols.time_us.tolist(),
                    cols.inst.tolist(),
                    cols.price.tolist(),
                    cols.qty.tolist(),
                    cols.buy.tolist(),
                    ids,
                    strict=True,
                )
            ]
        return out
