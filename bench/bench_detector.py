"""Benchmark: the pump detector on a 40-second window of ~200 k trades on 12 streams.

    .venv/bin/python bench/bench_detector.py [--trades 200000] [--runs 5]

Prints the median time of `analyse()` next to a trivial numpy pass over the same arrays (a
running max and a cumulative sum per stream: the floor of touching the data once), their
ratio, and the time of writing the refined files with and without the chart. Target: detect
<= 0.5 s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from pumpwatch.detector.analysis import analyse
from pumpwatch.detector.refined import write_refined
from pumpwatch.detector.rule import split_streams
from pumpwatch.recorder.sim.market import MarketSpec, PumpSpec, generate
from pumpwatch.timeunits import US_PER_S as S

TRIGGER_US = 1_767_225_600 * S + 20 * S


def window_table(trades: int) -> pa.Table:
    """About `trades` trades (bursts make the count random: generate, rescale once)."""
    first = _window_table(trades)
    return _window_table(round(trades * trades / max(first.num_rows, 1)))


def _window_table(trades: int) -> pa.Table:
    """~`trades` trades of one base in [T-20 s, T+20 s] on all streams, pumping at T+2 s."""
    pump = PumpSpec("0G", TRIGGER_US + 2 * S, 12.0, 3.0, lag_s={"okx_futures": 1.5}, volume_multiplier=3.0)
    spec = MarketSpec(seed=3, start_us=TRIGGER_US - 20 * S, duration_s=40.0, trades_per_s=trades / 40 / 12,
                      bases=("0G",), pumps=(pump,), chunk_s=10.0)  # fmt: skip
    parts = []
    for stream, batch in generate(spec):
        exchange, market = stream.split("_")
        t = pa.Table.from_batches([batch])
        t = t.add_column(0, "market", pa.array([market] * t.num_rows))
        parts.append(t.add_column(0, "exchange", pa.array([exchange] * t.num_rows)))
    return pa.concat_tables(parts).combine_chunks()


def median_s(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trades", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    opts = parser.parse_args()
    table = window_table(opts.trades)
    period = (TRIGGER_US - 20 * S, TRIGGER_US + 20 * S)

    arrays = split_streams(table)

    def trivial() -> None:
        for st in arrays:
            np.maximum.accumulate(st.price)
            np.cumsum(st.qty)

    t_split = median_s(lambda: split_streams(table), opts.runs)
    t_detect = median_s(lambda: analyse(table, TRIGGER_US, period_us=period), opts.runs)
    t_trivial = median_s(trivial, opts.runs)
    analysis = analyse(table, TRIGGER_US, period_us=period)
    summary = analysis.pump_analysis["summary"]
    with tempfile.TemporaryDirectory() as tmp:
        t_files = median_s(lambda: write_refined(Path(tmp), analysis, chart=False), opts.runs)
        t_chart = median_s(lambda: write_refined(Path(tmp), analysis, chart=True), max(1, opts.runs // 2))
    n_events = len(analysis.pump_analysis["pump_events"])
    print(f"{table.num_rows:,} trades on {len(analysis.streams)} streams in 40 s; {n_events} pump events, "
          f"max {summary['max_price_change']:.2f}%")  # fmt: skip
    print(f"analyse()                       {t_detect * 1000:8.1f} ms   (target <= 500 ms)")
    print(f"trivial numpy pass (split once) {t_trivial * 1000:8.1f} ms   ratio {t_detect / t_trivial:.1f}x")
    print(f"  of which splitting by stream  {t_split * 1000:8.1f} ms")
    print(f"write refined/ without chart    {t_files * 1000:8.1f} ms")
    print(f"write refined/ with chart       {t_chart * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
