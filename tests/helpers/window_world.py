"""A small recorded world for the extraction-time repair tests: local exchanges on 127.0.0.1
with a trade tape each, and a store holding what a recorder would have received of it.

Timeline (µs, relative to the wall clock when the module is imported): the trigger `T` is a
minute ago, the window ``[T - 20 s, T + 20 s]``, the recorder was disconnected over
``[GAP_LO, GAP_HI)`` = ``[T - 10 s, T + 5 s)``. Each stream's tape has one trade per
`STEP_US` (times with µs parts) of the coin `BASE` and of an unrelated `OTHER`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.adapters import get_adapter
from pumpwatch.recorder.sim.cluster import sim_protocol_for
from pumpwatch.recorder.sim.instruments import sim_instrument
from pumpwatch.recorder.sim.server import SimExchange
from pumpwatch.recorder.symbols import write_symbols
from pumpwatch.segments import SegmentWriter, read_trades
from pumpwatch.segments.journal import EventJournal
from pumpwatch.segments.schema import TradeRow
from pumpwatch.settings import Settings

S = 1_000_000
NOW_US = time.time_ns() // 1000
T_US = (NOW_US - 60 * S) // 1000 * 1000
START_US, END_US = T_US - 20 * S, T_US + 20 * S
GAP_LO, GAP_HI = T_US - 10 * S, T_US + 5 * S
STEP_US = 100_123
BASE, OTHER = "ABC", "XYZ"
BY_ID_OR_TIME = ("binance_spot", "binance_futures", "okx_spot", "okx_futures", "gate_spot", "gate_futures")
LATEST_ONLY = (
    "bybit_spot",
    "bybit_futures",
    "kucoin_spot",
    "kucoin_futures",
    "phemex_spot",
    "phemex_futures",
)


def tape(stream: str, base: str, lo_us: int, hi_us: int, first_id: int = 7_000_000) -> list[TradeRow]:
    """Trades of `base` from `lo_us` to `hi_us`, ids contiguous (none on Phemex)."""
    inst = sim_instrument(stream, base)
    out: list[TradeRow] = []
    t, k = lo_us + 417, 0
    while t <= hi_us:
        price = round(100 + (k % 89) * 0.01, 2)
        if inst.multiplier != 1.0:
            qty = round((1 + k % 7) * inst.multiplier, 10)
        else:
            qty = round(0.001 * (1 + k % 13), 3)
        tid = None if stream.startswith("phemex") else str(first_id + k)
        out.append((t, t, inst.symbol, inst.base, inst.quote, price, qty, "buy" if k % 3 else "sell", tid))
        t, k = t + STEP_US, k + 1
    return out


def as_received(stream: str, rows: Sequence[TradeRow]) -> list[TradeRow]:
    """What the recorder's adapter makes of the exchange's WebSocket frames for `rows`."""
    instruments = {r[2]: sim_instrument(stream, r[3]) for r in rows}
    decode = get_adapter(stream).decode
    out: list[TradeRow] = []
    for frame in sim_protocol_for(stream).encode_trades(rows, instruments):
        decoded = decode(frame, NOW_US, instruments)
        assert isinstance(decoded, list), decoded
        out.extend(decoded)
    return out


class World:
    """The exchanges of `streams`, their tapes, and settings pointing at them."""

    def __init__(self, root: Path, streams: Sequence[str], *, end_us: int = T_US + 30 * S) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.streams = tuple(streams)
        self.end_us = end_us
        self.exchanges: dict[str, SimExchange] = {}
        self.tapes: dict[str, list[TradeRow]] = {}
        self.settings = Settings(data_dir=str(self.data_dir))
        self.settings.recorder.symbols_file = str(root / "symbols.yaml")

    def instrument(self, stream: str, base: str = BASE) -> Instrument:
        return sim_instrument(stream, base)

    async def start(self) -> None:
        for stream in self.streams:
            insts = [sim_instrument(stream, b) for b in (BASE, OTHER)]
            ex = SimExchange(sim_protocol_for(stream), insts)
            await ex.start()
            self.exchanges[stream] = ex
            self.tapes[stream] = tape(stream, BASE, T_US - 30 * S, self.end_us)
            ex.publish(self.tapes[stream])
            ex.publish(tape(stream, OTHER, T_US - 30 * S, self.end_us, first_id=1))
            self.settings.streams[stream].rest_url = ex.rest_url
        self.settings.recorder.streams = list(self.streams)
        for stream in set(self.settings.streams) - set(self.streams):
            self.settings.streams[stream].enabled = False

    async def close(self) -> None:
        for ex in self.exchanges.values():
            await ex.close()

    def write_symbols(self, streams: Sequence[str] | None = None) -> None:
        """The subscription list: both coins on `streams` (default: all of the world's)."""
        chosen = self.streams if streams is None else streams
        write_symbols(
            self.settings.recorder.symbols_file,
            {s: [sim_instrument(s, BASE), sim_instrument(s, OTHER)] for s in chosen},
            policy="all",
        )

    def record_with_gap(self) -> None:
        """Store every trade received outside the gap and journal the disconnection."""
        for stream in self.streams:
            inst = self.instrument(stream)
            kept = [r for r in self.tapes[stream] if not GAP_LO <= r[0] < GAP_HI]
            with SegmentWriter(self.data_dir, stream, fsync=False) as writer:
                writer.append(as_received(stream, kept))
            with EventJournal(self.data_dir, stream) as j:
                j.record("start", ts_us=T_US - 40 * S, pid=1)
                for conn, at in (("c1", T_US - 40 * S), ("c2", GAP_HI)):
                    j.record("connected", conn=conn, ts_us=at, url="ws://127.0.0.1")
                    j.record("subscribed", conn=conn, ts_us=at, symbols=[inst.symbol], bases=[BASE])
                    if conn == "c1":
                        j.record("disconnected", conn=conn, ts_us=GAP_LO, reason="1006")
                j.record("stop", ts_us=max(self.end_us, END_US) + S, pid=1)

    def window_tape(self, stream: str, lo_us: int = START_US, hi_us: int = END_US) -> list[TradeRow]:
        return [r for r in self.tapes[stream] if lo_us <= r[0] <= hi_us]

    def stored(self, stream: str) -> Any:
        return read_trades(self.data_dir, START_US, END_US, streams=[stream], base=BASE)

    def requests(self) -> int:
        return sum(ex.history.stats.requests for ex in self.exchanges.values())


@contextlib.asynccontextmanager
async def world(root: Path, streams: Sequence[str], **kwargs: Any) -> AsyncIterator[World]:
    w = World(root, streams, **kwargs)
    try:
        await w.start()
        yield w
    finally:
        await w.close()
