"""The live de-duplicator's memory at a realistic subscription list: keys kept per symbol.

    .venv/bin/python bench/bench_dedupe_memory.py [--symbols 1000] [--trades 300]

Every symbol of one stream trades `trades` times a minute apart (quiet symbols: the 10 s time
window holds at most one key, the count floor rules). Python allocations measured with
tracemalloc for each retention: the old fixed 256 keys per symbol on every stream, Phemex's
`keep_trades_for(200)` (its replay after a subscribe) and the floor of a stream whose exchange
replays nothing (`keep_trades_for(0)`). Prints MB per `symbols` symbols and the ratio to 256.
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc

from pumpwatch.recorder.stream.dedupe import Deduper, keep_trades_for


def measure(keep_trades: int, symbols: int, trades: int) -> tuple[float, int]:
    gc.collect()
    tracemalloc.start()
    d = Deduper(lambda row: (row[2], row[8]), keep_trades=keep_trades)
    for s in range(symbols):
        symbol = f"S{s:05d}USDT"
        for i in range(trades):
            d.filter([(i * 60_000_000, 0, symbol, "S", "USDT", 1.0, 1.0, "buy", str(10_000_000 + i))])
    current, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return current / 1e6, d.keys_held()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--trades", type=int, default=300)
    args = parser.parse_args()
    base_mb, _ = measure(256, args.symbols, args.trades)
    for label, keep in (
        ("fixed 256 (before)", 256),
        ("phemex (replay 200)", keep_trades_for(200)),
        ("no replay (floor)", keep_trades_for(0)),
    ):
        mb, keys = measure(keep, args.symbols, args.trades)
        print(
            f"{label:22s} keep {keep:4d}: {mb:6.1f} MB for {args.symbols} symbols, {keys} keys, "
            f"{mb / base_mb:.2f}x of 256"
        )


if __name__ == "__main__":
    main()
