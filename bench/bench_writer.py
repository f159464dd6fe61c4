"""Segment writer benchmark: CPU per trade and bytes per trade, next to baselines of the same run.

    .venv/bin/python bench/bench_writer.py [--trades 1000000] [--symbols 200] [--rate 400] [--repeat 3]

Measures, on one self-contained synthetic market (many symbols with Zipf activity, random-walk
prices on each symbol's tick, heavy-tailed sizes on its lot, sequential numeric trade ids as
strings, bursty arrivals, lognormal receive lag):

- `SegmentWriter.append` of TradeRow tuples (20 per call, like one frame) + flush + close (the
  recorder's path) and `append_batch` of one Arrow batch (the synthetic generator's path), in
  trades per CPU second of the whole process (caller, writer thread and any Arrow threads);
  the issue's target is 2 M trades/s per core;
- the same-run baseline: a raw pyarrow IPC file write of the same batch (plain strings, zstd 3,
  no threads, no fsync), also in CPU time; the three are interleaved and repeated, and the
  median of the repeats is reported (CPU time of the process, so other load on the machine
  inflates it less than wall time, but not to zero);
- where the CPU of the tuple path goes: converting the tuples to Arrow, compressing the
  result (symbol-grouped batches, zstd), and for scale ``zip(*rows)`` alone; the sum of the
  first two is a ceiling for the tuple path with this conversion and zstd level;
- bytes per trade on disk: sealed segments, and the open file of a live-shaped feed (one
  batch per second of market time) before it is sealed, with NDJSON baselines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import zstandard

from pumpwatch.segments import SegmentWriter
from pumpwatch.segments.schema import ROW_SCHEMA, TradeRow

T0_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def synthetic_market(n: int, n_symbols: int, rate_per_s: float, seed: int = 1) -> pa.RecordBatch:
    """A realistic trade tape of one stream as a `ROW_SCHEMA` batch, in receive order."""
    rng = np.random.default_rng(seed)
    activity = 1.0 / np.arange(1, n_symbols + 1) ** 1.1
    sym = rng.choice(n_symbols, n, p=activity / activity.sum())
    # bursty arrivals: exponential gaps whose rate wanders (trades cluster)
    burst = np.repeat(rng.lognormal(0.0, 1.0, n // 1000 + 1), 1000)[:n]
    gaps_us = rng.exponential(1e6 / rate_per_s / burst * burst.mean())
    time_us = T0_US + np.cumsum(gaps_us).astype(np.int64)
    recv_us = time_us + rng.lognormal(np.log(15_000), 0.6, n).astype(np.int64)
    order = np.argsort(recv_us, kind="stable")
    sym, time_us, recv_us = sym[order], time_us[order], recv_us[order]

    p0 = 10 ** rng.uniform(-4, 4.5, n_symbols)
    price_dec = np.clip(4 - np.floor(np.log10(p0)).astype(int), 0, 10)  # ~5 significant digits
    qty_dec = np.clip(np.floor(np.log10(p0)).astype(int) + 1, 0, 8)
    price = np.empty(n)
    qty = np.empty(n)
    trade_id = np.empty(n, dtype=object)
    for s in range(n_symbols):
        idx = np.flatnonzero(sym == s)
        if not len(idx):
            continue
        tick = 10.0 ** -price_dec[s]
        walk = np.cumsum(rng.choice([-1, 0, 0, 0, 1], len(idx)) * rng.geometric(0.6, len(idx)))
        price[idx] = np.round(np.maximum(p0[s] + walk * tick, tick), price_dec[s])
        notional = rng.pareto(1.3, len(idx)) * 50 + 5  # quote units, heavy-tailed
        qty[idx] = np.maximum(np.round(notional / p0[s], qty_dec[s]), 10.0 ** -qty_dec[s])
        first = int(rng.integers(10**8, 5 * 10**9))
        trade_id[idx] = [str(first + k) for k in range(len(idx))]
    symbols = np.array([f"S{s:03d}COIN" for s in range(n_symbols)])
    side = np.where(rng.random(n) < 0.52, "buy", "sell")
    return pa.record_batch(
        [
            pa.array(time_us, pa.int64()).cast(ROW_SCHEMA.field("time").type),
            pa.array(recv_us, pa.int64()).cast(ROW_SCHEMA.field("recv_time").type),
            pa.array(np.char.add(symbols[sym], "USDT")),
            pa.array(symbols[sym]),
            pa.array(np.full(n, "USDT")),
            pa.array(price),
            pa.array(qty),
            pa.array(side),
            pa.array(trade_id, pa.string()),
        ],
        schema=ROW_SCHEMA,
    )


def as_rows(batch: pa.RecordBatch) -> list[TradeRow]:
    """The batch as TradeRow tuples with integer µs times (what parsers emit)."""
    cols = [c.cast(pa.int64()) if i < 2 else c for i, c in enumerate(batch.columns)]
    return list(zip(*(c.to_pylist() for c in cols), strict=True))


def cpu_s(fn: Callable[[], object]) -> float:
    """CPU seconds of the whole process (every thread) spent in one call."""
    c0 = time.process_time()
    fn()
    return time.process_time() - c0


def dir_bytes(path: Path, pattern: str = "*.arrow") -> int:
    return sum(f.stat().st_size for f in path.rglob(pattern))


def grouped_batches(rows: list[TradeRow]) -> list[pa.RecordBatch]:
    """The rows as the writer stores them under load: 65,536-row batches grouped by symbol."""
    from pumpwatch.segments.convert import Converter

    table = pa.Table.from_batches(list(Converter("binance_spot").batches([rows])))
    table = table.unify_dictionaries().combine_chunks()
    symbol = ROW_SCHEMA.get_field_index("symbol")
    return [b.take(pc.sort_indices(b.column(symbol).indices)) for b in table.to_batches(65536)]


def run(n: int, n_symbols: int, rate: float, frame_rows: int, repeat: int) -> dict[str, float]:
    from pumpwatch.segments.convert import Converter
    from pumpwatch.segments.schema import SEGMENT_SCHEMA

    batch = synthetic_market(n, n_symbols, rate)
    rows = as_rows(batch)
    frames = [rows[i : i + frame_rows] for i in range(0, n, frame_rows)]
    grouped = grouped_batches(rows)
    out: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="bench_writer_"))
    try:

        def write_rows(d: Path = work / "rows") -> None:
            shutil.rmtree(d, ignore_errors=True)
            with SegmentWriter(d, "binance_spot") as w:
                for f in frames:
                    w.append(f)

        def write_batch(d: Path = work / "batch") -> None:
            shutil.rmtree(d, ignore_errors=True)
            with SegmentWriter(d, "binance_spot") as w:
                w.append_batch(batch)

        def raw_ipc(path: Path = work / "raw.arrow") -> None:
            opts = ipc.IpcWriteOptions(compression=pa.Codec("zstd", 3), use_threads=False)
            with ipc.new_file(str(path), ROW_SCHEMA, options=opts) as wr:
                for off in range(0, n, 65536):
                    wr.write_batch(batch.slice(off, 65536))

        def zip_rows() -> None:
            list(zip(*rows, strict=True))

        def convert() -> None:
            for _ in Converter("binance_spot").batches(frames):
                pass

        def compress() -> None:
            opts = ipc.IpcWriteOptions(
                compression=pa.Codec("zstd", 3), emit_dictionary_deltas=True, use_threads=False
            )
            sink = pa.BufferOutputStream()
            with ipc.new_file(sink, SEGMENT_SCHEMA, options=opts) as wr:
                for b in grouped:
                    wr.write_batch(b)

        timings: dict[str, list[float]] = {}
        for _ in range(repeat):  # interleaved, so that a burst of other load hits all alike
            for key, fn in [("rows", write_rows), ("batch", write_batch), ("raw_ipc", raw_ipc),
                            ("zip", zip_rows), ("convert", convert), ("compress", compress)]:  # fmt: skip
                timings.setdefault(key, []).append(cpu_s(fn))
        for key, values in timings.items():
            out[key + "_cpu_s"] = float(np.median(values))
            out[key + "_cpu_s_best"] = min(values)

        def write_live(d: Path = work / "live") -> None:
            # one flush per second of receive time: the batch shape of a live stream
            recv = batch.column(1).cast(pa.int64()).to_numpy()
            cuts = np.flatnonzero(np.diff(recv // 1_000_000)) + 1
            with SegmentWriter(d, "binance_spot", flush_interval_s=3600) as w:
                for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, n], strict=True):
                    w.append(rows[lo:hi])
                    w.flush()
                hours = recv // 3_600_000_000
                out["live_open_rows"] = int(np.count_nonzero(hours == hours[-1]))
                out["live_open_bytes"] = dir_bytes(d, "_*.arrow")  # the last hour, not yet sealed

        out["live_cpu_s"] = cpu_s(write_live)
        nd = b"\n".join(orjson.dumps(r) for r in rows)
        out["orjson_bytes"] = len(nd)
        out["orjson_zstd_bytes"] = len(zstandard.ZstdCompressor(level=3).compress(nd))
        out["rows_bytes"] = dir_bytes(work / "rows")
        out["batch_bytes"] = dir_bytes(work / "batch")
        out["live_bytes"] = dir_bytes(work / "live")
        out["raw_ipc_bytes"] = (work / "raw.arrow").stat().st_size
    finally:
        shutil.rmtree(work)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trades", type=int, default=1_000_000)
    ap.add_argument("--symbols", type=int, default=200)
    ap.add_argument("--rate", type=float, default=400.0, help="trades per second of market time")
    ap.add_argument("--frame-rows", type=int, default=20, help="rows per append() call (one frame)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repeats (median reported)")
    args = ap.parse_args()
    n = args.trades
    r = run(n, args.symbols, args.rate, args.frame_rows, args.repeat)
    per_cpu = lambda key: n / r[key + "_cpu_s"] / 1e6  # noqa: E731
    ns = lambda key: r[key + "_cpu_s"] / n * 1e9  # noqa: E731
    print(f"{n:,} trades, {args.symbols} symbols, {args.rate:g} trades/s, {args.frame_rows} rows per "
          f"append, {os.cpu_count()} CPUs, median of {args.repeat} interleaved runs")  # fmt: skip
    print("throughput, M trades per CPU second (whole process)   [target 2.0]  vs raw IPC write")
    for key, label in [("rows", "append(rows) + flush + seal"), ("batch", "append_batch + flush + seal")]:
        ratio = r[key + "_cpu_s"] / r["raw_ipc_cpu_s"]
        print(f"  {label:44s} {per_cpu(key):6.2f}   (best {n / r[key + '_cpu_s_best'] / 1e6:.2f})"
              f"   {ratio:.2f}x the CPU")  # fmt: skip
    print(f"  {'baseline: raw pyarrow IPC write, zstd 3':44s} {per_cpu('raw_ipc'):6.2f}")
    live_mtps = n / r["live_cpu_s"] / 1e6
    print(f"  {'live shape (fsync per 1 s of data), once':44s} {live_mtps:6.2f}")
    print("where the tuple path's CPU goes, ns per trade")
    for key, label in [
        ("convert", "tuples -> Arrow (struct conversion, dictionaries)"),
        ("compress", "zstd 3 IPC write of the grouped batches"),
        ("rows", "the whole append(rows) path"),
        ("zip", "for scale: zip(*rows) alone, GC on"),
    ]:
        print(f"  {label:52s} {ns(key):6.0f}")
    floor_ns = ns("convert") + ns("compress")
    print(f"  ceiling of the tuple path (conversion + compression only): {1e3 / floor_ns:.2f} M trades/s")
    print("bytes per trade on disk   [target <= 16]")
    rows_open = r["live_open_rows"]
    for label, value in [
        ("sealed segments (append rows)", r["rows_bytes"] / n),
        ("sealed segments (append_batch)", r["batch_bytes"] / n),
        ("sealed + open (flush per second)", r["live_bytes"] / n),
        ("open file before sealing (per second)", r["live_open_bytes"] / rows_open),
        ("baseline raw IPC, plain strings", r["raw_ipc_bytes"] / n),
        ("baseline NDJSON + zstd 3", r["orjson_zstd_bytes"] / n),
        ("baseline NDJSON", r["orjson_bytes"] / n),
    ]:
        print(f"  {label:40s} {value:6.2f}")
    out_dir = Path(__file__).parent / "out"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "bench_writer.json").write_text(json.dumps({"args": vars(args), **r}, indent=1))


if __name__ == "__main__":
    main()
