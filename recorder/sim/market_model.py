"""The engine behind `pumpwatch.recorder.sim.market`: one seeded market model shared by the bulk generator
and the live market the local exchange servers use.

The model is vectorised with numpy and advances in intervals ``(t0, t1]``:

- **Prices.** Each base has one "fair" log-price on a 1-second lattice (a Gaussian random walk
  with a per-base daily volatility), linearly interpolated at trade times. Every stream prices
  off the same fair path, so the same base trades at nearly the same price on all twelve
  streams; futures add a tiny constant basis, every trade a little microstructure noise, and
  prices are rounded to the base's tick.
- **Arrivals.** A Poisson process per (stream, base) whose intensity is modulated in 5-second
  slots by a burst multiplier with mean 1 and a heavy right tail. The multiplier is a hash of
  (seed, base, slot), shared by all streams, so activity bursts are correlated across venues
  and do not depend on how time is cut into intervals.
- **Sizes.** Lognormal notional with an occasional Pareto kicker; converted to base units and
  rounded to a lot, or to whole contracts × multiplier on contract-sized futures, so a
  simulated exchange can encode exact contract counts.
- **Pumps** raise the price on chosen streams over `duration_s` (and keep it there) and add a
  burst of mostly-buy, larger trades.
- **Times** are on each stream's real clock resolution (ms on most venues, µs where the venue
  sends µs or ns), **trade ids** are sequential per symbol, Phemex has none.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.streams import STREAMS, split_stream
from pumpwatch.timeunits import US_PER_DAY, US_PER_MS, US_PER_S

SLOT_US = 5 * US_PER_S  # burst-multiplier slot length

# Clock resolution of each stream's trade time, in µs (research/exchanges.md cheat sheet).
RESOLUTION_US: dict[str, int] = {
    "binance_spot": 1,  # timeUnit=MICROSECOND
    "binance_futures": US_PER_MS,
    "bybit_spot": US_PER_MS,
    "bybit_futures": US_PER_MS,
    "okx_spot": US_PER_MS,
    "okx_futures": US_PER_MS,
    "kucoin_spot": 1,  # ns on the wire
    "kucoin_futures": 1,
    "gate_spot": 1,  # create_time_ms with a fraction
    "gate_futures": US_PER_MS,
    "phemex_spot": 1,  # ns on the wire
    "phemex_futures": 1,
}

# Relative activity of each venue (mean 1 over the twelve streams) and its typical receive lag.
_ACTIVITY = {"binance": 1.6, "bybit": 1.2, "okx": 1.1, "gate": 0.9, "kucoin": 0.7, "phemex": 0.5}
_ACTIVITY_MEAN = sum(_ACTIVITY.values()) / len(_ACTIVITY)
_LAG_US = {
    "binance": 4_000,
    "bybit": 9_000,
    "okx": 12_000,
    "gate": 25_000,
    "kucoin": 18_000,
    "phemex": 30_000,
}

# Rough start prices for well-known bases; others get a seeded log-uniform price.
_KNOWN_PRICES = {"BTC": 65_000.0, "ETH": 3_200.0, "SOL": 150.0, "BNB": 580.0, "XRP": 0.55, "DOGE": 0.15}


def _name_hash(name: str) -> int:
    return zlib.crc32(name.encode())


def splitmix64(x: np.ndarray) -> np.ndarray:
    """A fast, well-mixed 64-bit hash (uint64 in, uint64 out), wrapping arithmetic."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step) + 1e-9))


@dataclass(frozen=True)
class BaseParams:
    """Static, seeded properties of one base asset."""

    name: str
    key: int  # hash of the name, mixes into the burst hash
    start_price: float
    vol_per_s: float  # standard deviation of the fair log-price per second
    tick: float
    lot: float  # base-unit lot on venues without contracts
    weight: float  # share of a stream's trades (Zipf over the base list)


def base_params(bases: Sequence[str], seed: int, volatility_per_day: float) -> list[BaseParams]:
    """Seeded parameters for `bases`; the same (seed, name) always gives the same asset."""
    raw_weights = [1.0 / (i + 1) ** 0.9 for i in range(len(bases))]
    total = sum(raw_weights)
    out = []
    for i, name in enumerate(bases):
        rng = np.random.default_rng([seed & 0xFFFFFFFF, _name_hash(name)])
        price = _KNOWN_PRICES.get(name) or float(10 ** rng.uniform(-2.5, 2.5))
        vol = volatility_per_day * float(rng.uniform(0.6, 1.8)) / math.sqrt(US_PER_DAY / US_PER_S)
        tick = max(10.0 ** (math.floor(math.log10(price)) - 4), 1e-8)
        lot = min(max(10.0 ** math.floor(math.log10(0.1 / price)), 1e-6), 1000.0)
        out.append(BaseParams(name, _name_hash(name), price, vol, tick, lot, raw_weights[i] / total))
    return out


@dataclass(frozen=True)
class PumpSpec:
    """A pump of `base`: the price rises by `rise_percent` over `duration_s` starting at
    ``at_us + lag`` on each chosen stream (None = all streams that list the base), with trades
    arriving `volume_multiplier` times faster (at least 5/s) and larger while it rises.
    `lag_s` is one lag for all streams or a per-stream mapping (missing streams: 0)."""

    base: str
    at_us: int
    rise_percent: float
    duration_s: float
    streams: tuple[str, ...] | None = None
    lag_s: float | Mapping[str, float] = 0.0
    volume_multiplier: float = 15.0

    def applies_to(self, stream: str) -> bool:
        return self.streams is None or stream in self.streams

    def start_us(self, stream: str) -> int:
        lag = self.lag_s.get(stream, 0.0) if isinstance(self.lag_s, Mapping) else self.lag_s
        return self.at_us + round(lag * US_PER_S)


@dataclass
class _StreamState:
    stream: str
    instruments: list[Instrument]
    base_idx: np.ndarray  # global base index of each instrument
    resolution_us: int
    rate_per_s: np.ndarray  # per instrument
    multiplier: np.ndarray
    basis: np.ndarray  # log basis per instrument (futures only)
    next_id: np.ndarray  # next trade id per instrument
    has_ids: bool
    lag_us: int
    last_recv_us: int = 0
    pumps: list[tuple[PumpSpec, int, int]] = field(default_factory=list)  # (spec, instrument, start)


@dataclass
class Columns:
    """Trades of one stream for one interval, in time order (numpy columns)."""

    time_us: np.ndarray
    recv_us: np.ndarray
    inst: np.ndarray  # index into the stream's instrument list
    price: np.ndarray
    qty: np.ndarray
    buy: np.ndarray  # bool
    trade_id: np.ndarray  # int64, -1 = none

    def __len__(self) -> int:
        return len(self.time_us)


class MarketModel:
    """The stateful, seeded model; `simulate(t0_us, t1_us)` produces the trades in ``(t0, t1]``.

    The same seed, instruments and sequence of intervals give the same trades.
    """

    def __init__(
        self,
        instruments_by_stream: Mapping[str, Sequence[Instrument]],
        *,
        seed: int,
        trades_per_s: float,
        pumps: Sequence[PumpSpec] = (),
        volatility_per_day: float = 0.06,
        start_us: int,
    ) -> None:
        bases: list[str] = []
        for stream in STREAMS:
            for inst in instruments_by_stream.get(stream, ()):
                if inst.base not in bases:
                    bases.append(inst.base)
        self.seed = seed
        self.bases = base_params(bases, seed, volatility_per_day)
        index = {b.name: i for i, b in enumerate(self.bases)}
        self.rng = np.random.default_rng([seed & 0xFFFFFFFF, 0x5EED])
        self.pumps = tuple(pumps)
        self.streams: list[_StreamState] = []
        for stream in STREAMS:
            insts = list(instruments_by_stream.get(stream, ()))
            if not insts:
                continue
            self.streams.append(self._stream_state(stream, insts, index, trades_per_s))
        self._grid_origin_s = start_us // US_PER_S
        p0 = np.array([math.log(b.start_price) for b in self.bases])
        self._logp = p0[:, None]  # (bases, grid seconds from origin)
        self._ticks = np.array([b.tick for b in self.bases])
        self._lots = np.array([b.lot for b in self.bases])
        self._vols = np.array([b.vol_per_s for b in self.bases])
        self._keys = np.array([b.key for b in self.bases], dtype=np.uint64)
        for st in self.streams:
            st.last_recv_us = start_us

    def _stream_state(
        self, stream: str, insts: list[Instrument], index: Mapping[str, int], trades_per_s: float
    ) -> _StreamState:
        exchange, market = split_stream(stream)
        base_idx = np.array([index[i.base] for i in insts], dtype=np.int64)
        weights = np.array([self.bases[j].weight for j in base_idx])
        weights = weights / weights.sum()
        rate = trades_per_s * _ACTIVITY[exchange] / _ACTIVITY_MEAN * (1.15 if market == "futures" else 0.85)
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, _name_hash(stream)])
        basis = rng.normal(0.0, 2e-4, len(insts)) if market == "futures" else np.zeros(len(insts))
        pumps = []
        for spec in self.pumps:
            if spec.applies_to(stream):
                for k, inst in enumerate(insts):
                    if inst.base == spec.base:
                        pumps.append((spec, k, spec.start_us(stream)))
        return _StreamState(
            stream=stream,
            instruments=insts,
            base_idx=base_idx,
            resolution_us=RESOLUTION_US[stream],
            rate_per_s=rate * weights,
            multiplier=np.array([i.multiplier for i in insts]),
            basis=basis,
            next_id=rng.integers(10**6, 10**9, len(insts)),
            has_ids=exchange != "phemex",
            lag_us=_LAG_US[exchange],
            pumps=pumps,
        )

    # -- prices ----------------------------------------------------------------------------

    def _extend_grid(self, t1_us: int) -> None:
        need = t1_us // US_PER_S + 2 - self._grid_origin_s
        have = self._logp.shape[1]
        if need > have:
            steps = self.rng.standard_normal((len(self.bases), need - have)) * self._vols[:, None]
            ext = self._logp[:, -1:] + np.cumsum(steps, axis=1)
            self._logp = np.concatenate([self._logp, ext], axis=1)

    def _trim_grid(self, t_us: int) -> None:
        drop = t_us // US_PER_S - self._grid_origin_s
        if drop > 0:
            self._logp = self._logp[:, drop:]
            self._grid_origin_s += drop

    def fair_log_price(self, base_idx: np.ndarray, time_us: np.ndarray) -> np.ndarray:
        """Interpolated fair log-price of global bases at times within the current grid."""
        offset_us = time_us - self._grid_origin_s * US_PER_S
        k = offset_us // US_PER_S
        frac = (offset_us - k * US_PER_S) / US_PER_S
        left = self._logp[base_idx, k]
        right = self._logp[base_idx, k + 1]
        return left + (right - left) * frac

    # -- arrivals --------------------------------------------------------------------------

    def _burst(self, base_idx: np.ndarray, slot: np.ndarray) -> np.ndarray:
        """Mean-1, heavy-tailed activity multiplier per (base, 5-s slot); see module doc."""
        seed = np.uint64(self.seed & 0xFFFFFFFFFFFF)
        h = splitmix64(splitmix64(self._keys[base_idx] ^ seed) ^ slot.astype(np.uint64))
        u = ((h >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)
        return np.minimum(np.log(u) ** 2 / 2.0, 40.0)

    def _times_in(self, lo_us: np.ndarray, hi_us: np.ndarray, counts: np.ndarray, res: int) -> np.ndarray:
        """`counts[i]` uniform times on the resolution grid inside each (lo, hi]."""
        k_lo = lo_us // res + 1
        span = np.maximum(hi_us // res - k_lo + 1, 1)
        rep_lo = np.repeat(k_lo, counts)
        rep_span = np.repeat(span, counts)
        return (rep_lo + (self.rng.random(len(rep_lo)) * rep_span).astype(np.int64)) * res

    def _arrivals(
        self, st: _StreamState, t0_us: int, t1_us: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(time_us, instrument index, is_pump_trade) for one stream, unsorted."""
        res = st.resolution_us
        slots = np.arange(t0_us // SLOT_US, (t1_us - 1) // SLOT_US + 1, dtype=np.int64)
        lo = np.maximum(slots * SLOT_US, t0_us)
        hi = np.minimum((slots + 1) * SLOT_US, t1_us)
        usable = (hi // res - lo // res) > 0  # a piece with no grid point can hold no trade
        n_inst = len(st.instruments)
        mult = self._burst(np.repeat(st.base_idx, len(slots)), np.tile(slots, n_inst)).reshape(n_inst, -1)
        lam = st.rate_per_s[:, None] * mult * ((hi - lo) / US_PER_S)[None, :] * usable[None, :]
        counts = self.rng.poisson(lam)
        flat = counts.ravel()
        times = [self._times_in(np.tile(lo, n_inst), np.tile(hi, n_inst), flat, res)]
        insts = [np.repeat(np.repeat(np.arange(n_inst), len(slots)), flat)]
        pump_flags = [np.zeros(len(times[0]), dtype=bool)]
        for spec, k, start in st.pumps:
            p_lo, p_hi = max(t0_us, start), min(t1_us, start + round(spec.duration_s * US_PER_S))
            if p_hi // res - p_lo // res <= 0:
                continue
            rate = max(spec.volume_multiplier * float(st.rate_per_s[k]), 5.0)
            n = int(self.rng.poisson(rate * (p_hi - p_lo) / US_PER_S))
            times.append(self._times_in(np.array([p_lo]), np.array([p_hi]), np.array([n]), res))
            insts.append(np.full(n, k))
            pump_flags.append(np.ones(n, dtype=bool))
        return np.concatenate(times), np.concatenate(insts), np.concatenate(pump_flags)

    # -- one interval ----------------------------------------------------------------------

    def simulate(self, t0_us: int, t1_us: int) -> dict[str, Columns]:
        """Every stream's trades with time in ``(t0_us, t1_us]``, each in time order."""
        if t1_us <= t0_us:
            return {}
        self._extend_grid(t1_us)
        out = {st.stream: self._simulate_stream(st, t0_us, t1_us) for st in self.streams}
        self._trim_grid(t1_us)
        return out

    def _simulate_stream(self, st: _StreamState, t0_us: int, t1_us: int) -> Columns:
        time_us, inst, pump = self._arrivals(st, t0_us, t1_us)
        order = np.argsort(time_us, kind="stable")
        time_us, inst, pump = time_us[order], inst[order], pump[order]
        n = len(time_us)
        gbase = st.base_idx[inst]
        logp = self.fair_log_price(gbase, time_us) + st.basis[inst]
        logp += self.rng.normal(0.0, 1.5e-4, n)
        rising = np.zeros(n, dtype=bool)
        for spec, k, start in st.pumps:
            dur_us = max(round(spec.duration_s * US_PER_S), 1)
            on = (inst == k) & (time_us > start)
            ramp = np.clip((time_us[on] - start) / dur_us, 0.0, 1.0)
            logp[on] += np.log1p(spec.rise_percent / 100.0 * ramp)
            rising[on] = ramp < 1.0
        tick = self._ticks[gbase]
        price = np.maximum(np.rint(np.exp(logp) / tick), 1.0) * tick
        # Momentum: takers lean with the fair path, and pile in on a pump.
        k_grid = (time_us - self._grid_origin_s * US_PER_S) // US_PER_S
        up = self._logp[gbase, k_grid + 1] > self._logp[gbase, k_grid]
        p_buy = np.where(up, 0.56, 0.44)
        p_buy = np.where(rising, 0.85, p_buy)
        buy = self.rng.random(n) < p_buy
        notional = np.exp(self.rng.normal(math.log(120.0), 1.4, n))
        kicker = self.rng.random(n) < 0.03
        notional[kicker] *= 1.0 + self.rng.pareto(1.6, int(kicker.sum())) * 5.0
        notional[pump] *= 3.0
        qty = notional / price
        mult = st.multiplier[inst]
        step = np.where(mult != 1.0, mult, self._lots[gbase])
        qty = np.maximum(np.rint(qty / step), 1.0) * step
        price = _round_to_steps(price, tick)
        qty = _round_to_steps(qty, step)
        trade_id = self._trade_ids(st, inst)
        recv_us = (
            np.maximum.accumulate(
                np.maximum(
                    time_us + st.lag_us + (self.rng.lognormal(math.log(3000.0), 0.8, n)).astype(np.int64),
                    st.last_recv_us,
                )
            )
            if n
            else time_us.copy()
        )
        if n:
            st.last_recv_us = int(recv_us[-1])
        return Columns(time_us, recv_us, inst, price, qty, buy, trade_id)

    def _trade_ids(self, st: _StreamState, inst: np.ndarray) -> np.ndarray:
        if not st.has_ids:
            return np.full(len(inst), -1, dtype=np.int64)
        counts = np.bincount(inst, minlength=len(st.instruments))
        order = np.argsort(inst, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.empty(len(inst), dtype=np.int64)
        rank[order] = np.arange(len(inst)) - np.repeat(starts, counts)
        ids = st.next_id[inst] + rank
        st.next_id += counts
        return ids


def _round_to_steps(values: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Round to the decimals of each step so the float prints as the short decimal it is."""
    out = values.copy()
    for step in np.unique(steps):
        sel = steps == step
        out[sel] = np.round(values[sel], _decimals(float(step)))
    return out
