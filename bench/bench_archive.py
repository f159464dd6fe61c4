"""Benchmark: the Parquet archive. What writing it costs per sealed hour, and what it buys DuckDB.

    .venv/bin/python bench/bench_archive.py                  # a 7-day, ~5 M-trade store (~2 min)
    .venv/bin/python bench/bench_archive.py --trades 100e6   # the 100 M-trade store of bench_extract.py

1. Write cost: the archive of every sealed hour of a 7-day, 12-stream store is built from
   scratch (`archive_pending`), CPU of the whole process measured, against reading the same
   segments through the segment reader (what any rebuild must do first) in the same run; then
   one busy sealed hour (one stream at `--busy-rate` trades/s) alone. Bytes per trade of the
   archive against the segments.
2. Query: one coin's per-second OHLCV on every stream, with DuckDB: over the archive
   (``read_parquet(... hive_partitioning=true)``, all 7 days and one hour of them) and, for the
   ratio, over the segments through ``pumpwatch.segments.dataset()``; row groups read from
   DuckDB's profile.

The stores are built once through the real SegmentWriter with the seeded generator and cached
(bench_extract.py's week spec, so ``--trades 100e6`` reuses its ``bench/out/store7d``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_extract import BASE_START_US, DAY_S, SYMBOL, build

from pumpwatch.timeunits import US_PER_HOUR, US_PER_S

S = US_PER_S
OHLCV = """
    SELECT exchange, market, date_trunc('second', time) AS second,
           arg_min(price, time) AS open, max(price) AS high, min(price) AS low,
           arg_max(price, time) AS close, sum(qty) AS volume, count(*) AS trades
    FROM {source}
    WHERE base = '{coin}' {extra}
    GROUP BY ALL
"""


def cpu_s() -> float:
    """User + system CPU of this process (every thread) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def week_spec(trades: float, days: float) -> Any:
    from pumpwatch.recorder.sim.market import MarketSpec, PumpSpec

    duration_s = days * DAY_S
    trigger_us = BASE_START_US + round((duration_s - 3 * 3600) * S)
    pump = PumpSpec(SYMBOL, trigger_us + 3 * S, 12.0, 3.0, lag_s={"okx_futures": 1.5, "gate_spot": 0.7})
    rate = trades / duration_s / 12
    return MarketSpec(seed=7, start_us=BASE_START_US, duration_s=duration_s, trades_per_s=rate,
                      pumps=(pump,), chunk_s=600.0)  # fmt: skip


def busy_spec(rate: float) -> Any:
    from pumpwatch.recorder.sim.market import MarketSpec

    return MarketSpec(seed=11, start_us=BASE_START_US, duration_s=3600.0 - 1.0, trades_per_s=rate,
                      streams=("binance_spot",), chunk_s=300.0)  # fmt: skip


def measure_write(store: Path, now_us: int) -> dict[str, float]:
    import shutil

    import numpy as np

    from pumpwatch.segments import list_segments
    from pumpwatch.segments.archive import archive_pending, archive_root
    from pumpwatch.segments.reader import read_segment

    shutil.rmtree(archive_root(store), ignore_errors=True)
    sealed = [f for f in list_segments(store) if f.sealed]
    everything = (int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max))
    c0, w0 = cpu_s(), time.perf_counter()
    rows = sum(b.num_rows for f in sealed for b in read_segment(f, *everything))
    read_cpu = cpu_s() - c0
    c0, w0 = cpu_s(), time.perf_counter()
    report = archive_pending(store, now_us=now_us, retention_s=None)
    cpu, wall = cpu_s() - c0, time.perf_counter() - w0
    assert report.trades == rows, (report.trades, rows)
    c0 = cpu_s()
    again = archive_pending(store, now_us=now_us, retention_s=None)
    idle_cpu = cpu_s() - c0
    assert again.hours_built == 0
    return {
        "hours": report.hours_built,
        "trades": report.trades,
        "cpu_s": cpu,
        "wall_s": wall,
        "read_cpu_s": read_cpu,
        "segment_bytes": report.segment_bytes,
        "archive_bytes": report.archive_bytes,
        "idle_cpu_s": idle_cpu,
    }


def duckdb_ohlcv(source: str, extra: str, runs: int, con: Any) -> tuple[float, int]:
    query = OHLCV.format(source=source, coin=SYMBOL, extra=extra)
    times, n = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        n = len(con.sql(query).fetchall())
        times.append(time.perf_counter() - started)
    return statistics.median(times), n


def row_groups(con: Any, source: str, extra: str) -> tuple[int, int, int]:
    con.sql("PRAGMA enable_profiling = 'json'")
    con.sql("PRAGMA profiling_output = ''")
    plan = json.loads(
        con.sql("EXPLAIN ANALYZE " + OHLCV.format(source=source, coin=SYMBOL, extra=extra)).fetchall()[0][1]
    )
    con.sql("PRAGMA disable_profiling")

    def find(node: dict[str, Any]) -> dict[str, Any] | None:
        if node.get("name") == "READ_PARQUET":
            return node
        for child in node.get("children", []) + node.get("operator", []):
            got = find(child)
            if got is not None:
                return got
        return None

    scan = find(plan) or {}
    files = int(scan.get("extra_info", {}).get("Total Files Read", 0))
    return files, int(scan.get("row_groups_scanned", 0)), int(scan.get("total_row_groups_to_scan", 0))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--trades", type=float, default=5e6, help="trades in the 7-day store (100e6: the big one)"
    )
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--store", type=Path, default=None, help="default: bench/out/store7d[-<N>M]")
    parser.add_argument(
        "--busy-rate", type=float, default=400.0, help="trades/s of the busy hour's one stream"
    )
    parser.add_argument("--flush-every", type=float, default=60.0, help="receive-time s per record batch")
    parser.add_argument("--runs", type=int, default=3)
    opts = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pumpwatch.recorder.sim.market").setLevel(logging.INFO)
    import duckdb

    store = opts.store or Path(
        "bench/out/store7d" if opts.trades == 100e6 else f"bench/out/store7d-{opts.trades / 1e6:g}M"
    )
    busy = Path(f"bench/out/busy-hour-{opts.busy_rate:g}")
    build(store, week_spec(opts.trades, opts.days), opts.flush_every)
    build(busy, busy_spec(opts.busy_rate), opts.flush_every)
    end_us = BASE_START_US + round(opts.days * DAY_S * S) + US_PER_HOUR

    week = measure_write(store, end_us)
    hour = measure_write(busy, end_us)
    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; duckdb {duckdb.__version__}")
    print("\n1. archive write cost (archive_pending from scratch; CPU of the whole process)")
    print(f"{'':34} {'hours':>6} {'trades':>12} {'CPU s':>7} {'ms/hour':>8} {'ns/trade':>9} "
          f"{'vs read':>8} {'B/trade seg':>12} {'B/trade pq':>11} {'pq/seg':>7}")  # fmt: skip
    for label, r in (("7-day store, 12 streams", week), (f"one busy hour ({opts.busy_rate:g}/s)", hour)):
        print(
            f"{label:34} {r['hours']:6.0f} {r['trades']:12,.0f} {r['cpu_s']:7.2f} "
            f"{1000 * r['cpu_s'] / r['hours']:8.1f} {1e9 * r['cpu_s'] / r['trades']:9.0f} "
            f"{r['cpu_s'] / r['read_cpu_s']:7.2f}x {r['segment_bytes'] / r['trades']:12.2f} "
            f"{r['archive_bytes'] / r['trades']:11.2f} {r['archive_bytes'] / r['segment_bytes']:7.2f}"
        )
    print("   'vs read': archive CPU / CPU of only reading the same segments with the reader, same run")
    print(f"   nothing pending: archive_pending over the {week['hours']:.0f} archived hours took "
          f"{1000 * week['idle_cpu_s']:.1f} ms CPU")  # fmt: skip

    con = duckdb.connect()
    con.sql("SET TimeZone = 'UTC'")
    archive = f"read_parquet('{store}/archive/**/*.parquet', hive_partitioning = true)"
    from pumpwatch.segments import dataset

    con.register("segments", dataset(store))
    last = BASE_START_US + round((opts.days * DAY_S - 4 * 3600) * S)
    t0 = time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(last // S))
    t1 = time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime((last + US_PER_HOUR) // S))
    day = t0[:10]
    hour_filter = f"AND date = '{day}' AND time BETWEEN '{t0}' AND '{t1}'"
    cases = [
        (f"archive, all {opts.days:g} days", archive, ""),
        ("segments via dataset(), all days", "segments", ""),
        ("archive, one hour", archive, hour_filter),
        ("segments via dataset(), one hour", "segments", hour_filter),
    ]
    print(
        f"\n2. DuckDB: per-second OHLCV of {SYMBOL} on every stream (median of {opts.runs}, after a warm-up)"
    )
    print(f"{'':34} {'wall s':>8} {'bars':>9} {'files':>6} {'row groups read':>16}")
    results = {}
    for label, source, extra in cases:
        con.sql(OHLCV.format(source=source, coin=SYMBOL, extra=extra)).fetchall()  # warm the page cache
        wall, bars = duckdb_ohlcv(source, extra, opts.runs, con)
        results[label] = wall
        groups = ""
        if source == archive:
            files, read, total = row_groups(con, source, extra)
            groups = f"{files:6d} {read:7d} of {total:6d}"
        print(f"{label:34} {wall:8.3f} {bars:9,d} {groups}")
    whole = results["segments via dataset(), all days"] / results[f"archive, all {opts.days:g} days"]
    one = results["segments via dataset(), one hour"] / results["archive, one hour"]
    print(f"   time over the segments / over the archive: {whole:.1f}x all days, {one:.1f}x one hour")


if __name__ == "__main__":
    main()
