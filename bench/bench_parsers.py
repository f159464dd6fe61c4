"""Parser throughput of every stream, against bare ``orjson.loads`` of the same frames.

    .venv/bin/python bench/bench_parsers.py [--trades 200000] [--repeat 5] [--streams binance,okx_spot]

For each stream whose adapter and simulated protocol exist, builds a realistic frame corpus
(bursts of trades over the sim instruments, encoded by the stream's own sim ``encode_trades``),
then times ``adapter.decode`` over the corpus and ``orjson.loads`` over the same frames in the
same run (best of `repeat`). Prints trades/s and the ratio decode/orjson per stream.
Then the reference corpus of issue 9: `--trades` Binance USDⓈ-M ``@aggTrade`` combined-stream
frames over 200 symbols (one trade per frame), decoded and normalized.
Targets: >= 600k trades/s for binance_spot, >= 640k frames/s on the aggTrade corpus (2x the
~320k/s measured for cryptofeed 2.4.1's handler on such frames), ratio <= 2.5 for every stream.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.adapters import get_adapter
from pumpwatch.recorder.sim.instruments import sim_instrument
from pumpwatch.segments.schema import TradeRow
from pumpwatch.streams import STREAMS, parse_streams, split_stream

BASES = (
    "BTC",
    "ETH",
    "SOL",
    "XRP",
    "DOGE",
    "0G",
    "1000PEPE",
    "ARB",
    "SUI",
    "WIF",
    *(f"C{i}" for i in range(40)),
)
TARGET_SPOT_TRADES_S = 600_000
TARGET_RATIO = 2.5
TARGET_AGGTRADE_FRAMES_S = 640_000


def build_rows(instruments: Sequence[Instrument], n: int, seed: int = 7) -> tuple[list[TradeRow], int]:
    """`n` trades in bursts per symbol (as exchanges batch them), and a receive time after them."""
    rng = random.Random(seed)
    price = {inst.symbol: 10 ** rng.uniform(-4, 5) for inst in instruments}
    t_us = 1_767_323_045_000_000
    rows: list[TradeRow] = []
    trade_id = 4_000_000_000
    while len(rows) < n:
        inst = rng.choice(instruments)
        for _ in range(min(rng.randint(1, 20), n - len(rows))):
            t_us += rng.randint(0, 3) * 1000  # ms steps: every stream can carry them exactly
            price[inst.symbol] *= 1 + rng.uniform(-0.001, 0.001)
            p = float(f"{price[inst.symbol]:.6g}")
            if inst.multiplier != 1.0:
                qty = rng.randint(1, 5000) * inst.multiplier
            elif inst.qty_scale:
                qty = rng.randint(1, 10**6) / 10**inst.qty_scale
            else:
                qty = float(f"{rng.uniform(0.001, 1000):.4g}")
            trade_id += 1
            side = "buy" if rng.random() < 0.5 else "sell"
            rows.append((t_us, 0, inst.symbol, inst.base, inst.quote, p, qty, side, str(trade_id)))
    return rows, t_us + 5_000


def interleaved_best(repeat: int, fns: Sequence[Callable[[], int]]) -> list[tuple[float, int]]:
    """Fastest CPU time (and result) of each of `fns` over `repeat` rounds, GC off while timing.

    CPU time of this process, not wall time: on a shared machine the time spent descheduled
    is not ours. The functions also alternate within each round, so a burst of load (cache
    and frequency effects) hits both sides of a ratio rather than one.
    """
    best = [(float("inf"), 0) for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            gc.collect()
            gc.disable()
            try:
                start = time.process_time()
                result = fn()
                elapsed = time.process_time() - start
            finally:
                gc.enable()
            if elapsed < best[i][0]:
                best[i] = (elapsed, result)
    return best


def bench_stream(stream: str, n: int, repeat: int, bases: Sequence[str] = BASES) -> dict[str, float] | str:
    """Measure one stream; a string result explains why it was skipped."""
    exchange, market = split_stream(stream)
    try:
        adapter = get_adapter(stream)
        sim = importlib.import_module(f"pumpwatch.recorder.sim.{exchange}").sim_protocol(market)
    except ModuleNotFoundError as exc:
        return f"skipped: {exc.name} is not written yet"
    instruments = {inst.symbol: inst for inst in (sim_instrument(stream, b) for b in bases)}
    rows, recv_us = build_rows(list(instruments.values()), n)
    frames = sim.encode_trades(rows, instruments)
    decode, loads = adapter.decode, orjson.loads

    def run_loads() -> int:
        for frame in frames:
            loads(frame)
        return len(frames)

    def run_decode() -> int:
        for frame in frames:
            decode(frame, recv_us, instruments)
        return len(frames)

    (t_loads, _), (t_decode, _) = interleaved_best(repeat, [run_loads, run_decode])
    # Counted apart from the timed loop, which holds nothing but the calls (as run_loads).
    trades = 0
    for frame in frames:
        out = decode(frame, recv_us, instruments)
        trades += len(out) if isinstance(out, list) else 0
    if trades != len(rows):
        return f"FAILED: decoded {trades} trades of {len(rows)}"
    return {
        "frames": len(frames),
        "trades": trades,
        "trades_per_s": trades / t_decode,
        "frames_per_s": len(frames) / t_decode,
        "loads_frames_per_s": len(frames) / t_loads,
        "ratio": t_decode / t_loads,
    }


def _cryptofeed_handler(instruments: dict[str, Instrument]) -> tuple[str, Callable[[str], None]] | None:
    """cryptofeed's BinanceFutures message handler with a no-op trade callback, if installed.

    The feed is built without its constructor (which fetches the symbol list over the
    network): only what `message_handler` and `_trade` read is set.
    """
    try:
        from cryptofeed.defines import TRADES
        from cryptofeed.exchanges.binance_futures import BinanceFutures
    except ImportError:
        return None
    feed: Any = object.__new__(BinanceFutures)
    feed.requires_authentication = False
    feed.ignore_invalid_instruments = False
    feed.exchange_symbol_mapping = {s: f"{i.base}-{i.quote}-PERP" for s, i in instruments.items()}

    async def on_trade(_trade: object, _receipt: float) -> None:
        return None

    feed.callbacks = {TRADES: [on_trade]}
    handler = feed.message_handler

    def handle(frame: str) -> None:
        coro = handler(frame, None, 0.0)
        try:  # noqa: SIM105 -- in the timed loop: cheaper than contextlib.suppress, fair to cryptofeed
            coro.send(None)  # nothing in the handler awaits real I/O: it finishes in one step
        except StopIteration:
            pass

    return importlib.metadata.version("cryptofeed"), handle


def bench_aggtrade_corpus(n: int, repeat: int) -> dict[str, Any]:
    """The issue-9 reference corpus: `n` @aggTrade combined-stream frames over 200 symbols."""
    stream = "binance_futures"
    adapter = get_adapter(stream)
    sim = importlib.import_module("pumpwatch.recorder.sim.binance").sim_protocol("futures")
    instruments = {inst.symbol: inst for inst in (sim_instrument(stream, f"S{i}") for i in range(200))}
    rows, recv_us = build_rows(list(instruments.values()), n)
    frames = [f if isinstance(f, str) else f.decode() for f in sim.encode_trades(rows, instruments)]
    decode, loads = adapter.decode, orjson.loads

    def run_loads() -> int:
        for frame in frames:
            loads(frame)
        return len(frames)

    def run_decode() -> int:
        for frame in frames:
            decode(frame, recv_us, instruments)
        return len(frames)

    runs: list[Callable[[], int]] = [run_loads, run_decode]
    cryptofeed = _cryptofeed_handler(instruments)
    if cryptofeed is not None:
        handle = cryptofeed[1]

        def run_cryptofeed() -> int:
            for frame in frames:
                handle(frame)
            return len(frames)

        runs.append(run_cryptofeed)
    times = [t for t, _ in interleaved_best(repeat, runs)]
    result: dict[str, Any] = {
        "frames": len(frames),
        "frames_per_s": len(frames) / times[1],
        "loads_frames_per_s": len(frames) / times[0],
        "ratio": times[1] / times[0],
    }
    if cryptofeed is not None:
        result["cryptofeed_version"] = cryptofeed[0]
        result["cryptofeed_frames_per_s"] = len(frames) / times[2]
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit status 1 if a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=200_000, help="trades per stream corpus")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (best wins)")
    parser.add_argument("--streams", default="all", help="comma list of stream ids or exchanges")
    args = parser.parse_args(argv)
    streams = parse_streams(args.streams) if args.streams != "all" else STREAMS
    print(f"python {sys.version.split()[0]}, orjson {orjson.__version__}, {args.trades} trades per stream")
    print(
        f"{'stream':16} {'frames':>8} {'trades/s':>12} {'loads frames/s':>15} {'decode/loads':>13}  verdict"
    )
    missed = False
    for stream in streams:
        result = bench_stream(stream, args.trades, args.repeat)
        if isinstance(result, str):
            print(f"{stream:16} {result}")
            missed |= result.startswith("FAILED")
            continue
        ok = result["ratio"] <= TARGET_RATIO
        if stream == "binance_spot":
            ok &= result["trades_per_s"] >= TARGET_SPOT_TRADES_S
        missed |= not ok
        print(
            f"{stream:16} {result['frames']:>8.0f} {result['trades_per_s']:>12,.0f} "
            f"{result['loads_frames_per_s']:>15,.0f} {result['ratio']:>13.2f}  {'ok' if ok else 'MISSED'}"
        )
    agg = bench_aggtrade_corpus(args.trades, args.repeat)
    ok = agg["frames_per_s"] >= TARGET_AGGTRADE_FRAMES_S
    missed |= not ok
    print(
        f"aggTrade corpus: {agg['frames']:.0f} binance_futures @aggTrade frames over 200 symbols: "
        f"{agg['frames_per_s']:,.0f} frames/s decoded and normalized ({'ok' if ok else 'MISSED'}), "
        f"orjson.loads {agg['loads_frames_per_s']:,.0f} frames/s (decode/loads {agg['ratio']:.2f})"
    )
    if "cryptofeed_frames_per_s" in agg:
        print(
            f"  cryptofeed {agg['cryptofeed_version']} BinanceFutures handler on the same frames: "
            f"{agg['cryptofeed_frames_per_s']:,.0f} frames/s; ours is "
            f"{agg['frames_per_s'] / agg['cryptofeed_frames_per_s']:.2f}x"
        )
    else:
        print("  (cryptofeed is not installed here: `pip install cryptofeed==2.4.1` adds it side by side)")
    targets = (
        f"binance_spot >= {TARGET_SPOT_TRADES_S:,} trades/s; aggTrade corpus >= "
        f"{TARGET_AGGTRADE_FRAMES_S:,} frames/s; decode/loads <= {TARGET_RATIO} everywhere"
    )
    print(f"targets: {targets}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
