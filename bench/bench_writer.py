"""Segment writer benchmark: throughput and bytes per trade, next to baselines of the same run.

    .venv/bin/python bench/bench_writer.py [--trades 1000000] [--symbols 200] [--rate 400]

Measures, on one self-contained synthetic market (many symbols with Zipf activity, random-walk
prices on each symbol's tick, heavy-tailed sizes on its lot, sequential numeric trade ids as
strings, bursty arrivals, lognormal receive lag):

- `SegmentWriter.append` of TradeRow tuples + flush + close (the recorder's path), and
  `append_batch` of one Arrow batch (the synthetic generator's path), in trades per second of
  wall time and per CPU second of the whole process (caller and writer thread together);
- bytes per trade on disk, with large batches and with one batch per second of market time
  (what a live stream writes at `--rate` trades/s);
- baselines measured in the same run: the naive conversion (``zip(*rows)`` + one ``pa.array``
  per column), a raw pyarrow IPC file write of the same batch (plain strings, zstd 3, no
  threads, no fsync), and ``orjson.dumps`` of the rows as NDJSON (raw and zstd-compressed).
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
import pyarrow.ipc as ipc
import zstandard
from pumpwatch.segments import SegmentWriter
from pumpwatch.segments.schema import TRADE_SCHEMA, TradeRow

T0_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def synthetic_market(n: int, n_symbols: int, rate_per_s: float, seed: int = 1) -> pa.RecordBatch:
    """A realistic trade tape of one stream as a `TRADE_SCHEMA` batch, in receive order."""
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
            pa.array(time_us, pa.int64()).cast(TRADE_SCHEMA.field("time").type),
            pa.array(recv_us, pa.int64()).cast(TRADE_SCHEMA.field("recv_time").type),
            pa.array(np.char.add(symbols[sym], "USDT")),
            pa.array(symbols[sym]),
            pa.array(np.full(n, "USDT")),
            pa.array(price),
            pa.array(qty),
            pa.array(side),
            pa.array(trade_id, pa.string()),
        ],
        schema=TRADE_SCHEMA,
    )


def as_rows(batch: pa.RecordBatch) -> list[TradeRow]:
    """The batch as TradeRow tuples with integer µs times (what parsers emit)."""
    cols = [c.cast(pa.int64()) if i < 2 else c for i, c in enumerate(batch.columns)]
    return list(zip(*(c.to_pylist() for c in cols), strict=True))


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*.arrow"))


def run(n: int, n_symbols: int, rate: float, frame_rows: int) -> dict[str, float]:
    batch = synthetic_market(n, n_symbols, rate)
    rows = as_rows(batch)
    frames = [rows[i : i + frame_rows] for i in range(0, n, frame_rows)]
    out: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="bench_writer_"))
    try:

        def write_rows(d: Path = work / "rows") -> None:
            with SegmentWriter(d, "binance_spot") as w:
                for f in frames:
                    w.append(f)

        def write_batch(d: Path = work / "batch") -> None:
            with SegmentWriter(d, "binance_spot") as w:
                w.append_batch(batch)

        def write_live(d: Path = work / "live") -> None:
            # one flush per second of receive time: the batch shape of a live stream
            recv = batch.column(1).cast(pa.int64()).to_numpy()
            cuts = np.flatnonzero(np.diff(recv // 1_000_000)) + 1
            with SegmentWriter(d, "binance_spot", flush_interval_s=3600) as w:
                for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, n], strict=True):
                    w.append(rows[lo:hi])
                    w.flush()
                out["live_open_bytes"] = dir_bytes(d)

        def naive_convert() -> None:
            cols = list(zip(*rows, strict=True))
            pa.record_batch([pa.array(c, f.type) for c, f in zip(cols, TRADE_SCHEMA, strict=True)],
                            schema=TRADE_SCHEMA)  # fmt: skip

        def struct_convert() -> None:
            from pumpwatch.segments.convert import Converter

            for _ in Converter("binance_spot").batches(frames):
                pass

        def raw_ipc(path: Path = work / "raw.arrow") -> None:
            opts = ipc.IpcWriteOptions(compression=pa.Codec("zstd", 3), use_threads=False)
            with ipc.new_file(str(path), TRADE_SCHEMA, options=opts) as wr:
                for off in range(0, n, 65536):
                    wr.write_batch(batch.slice(off, 65536))

        def orjson_dump() -> None:
            out["orjson_bytes"] = len(b"\n".join(orjson.dumps(r) for r in rows))

        out["rows_wall_s"], out["rows_cpu_s"] = timed(write_rows)
        out["batch_wall_s"], out["batch_cpu_s"] = timed(write_batch)
        out["live_wall_s"], out["live_cpu_s"] = timed(write_live)
        out["naive_convert_s"], _ = timed(naive_convert)
        out["struct_convert_s"], _ = timed(struct_convert)
        out["raw_ipc_s"], _ = timed(raw_ipc)
        out["orjson_s"], _ = timed(orjson_dump)
        nd = b"\n".join(orjson.dumps(r) for r in rows)
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
    args = ap.parse_args()
    n = args.trades
    r = run(n, args.symbols, args.rate, args.frame_rows)
    mtps = lambda s: n / s / 1e6  # noqa: E731
    print(f"{n:,} trades, {args.symbols} symbols, {args.rate:g} trades/s, {os.cpu_count()} CPUs")
    print("throughput (M trades/s)                  wall    per CPU-s")
    for key, label in [
        ("rows", "append(rows) + flush + seal"),
        ("batch", "append_batch + flush + seal"),
        ("live", "live shape (flush per 1 s of data)"),
    ]:
        print(f"  {label:36s} {mtps(r[key + '_wall_s']):6.2f}   {mtps(r[key + '_cpu_s']):6.2f}")
    print(f"  baseline raw pyarrow IPC write       {mtps(r['raw_ipc_s']):6.2f}")
    print(f"  baseline orjson.dumps per row        {mtps(r['orjson_s']):6.2f}")
    speedup = r["naive_convert_s"] / r["struct_convert_s"]
    print(f"  conversion only: struct array {mtps(r['struct_convert_s']):.2f}, "
          f"zip(*rows) + pa.array per column {mtps(r['naive_convert_s']):.2f} -> {speedup:.2f}x")  # fmt: skip
    print("ratios (CPU time of the writer path / time of the baseline)")
    print(f"  append(rows) vs raw IPC write        {r['rows_cpu_s'] / r['raw_ipc_s']:.2f}x")
    print(f"  append(rows) vs orjson.dumps         {r['rows_cpu_s'] / r['orjson_s']:.2f}x")
    print(f"  append_batch vs raw IPC write        {r['batch_cpu_s'] / r['raw_ipc_s']:.2f}x")
    print("bytes per trade on disk")
    for key, label in [
        ("rows_bytes", "sealed segments (append rows)"),
        ("live_bytes", "sealed segments (flush per second)"),
        ("live_open_bytes", "open file before sealing (per sec)"),
        ("raw_ipc_bytes", "baseline raw IPC, plain strings"),
        ("orjson_zstd_bytes", "baseline NDJSON + zstd 3"),
        ("orjson_bytes", "baseline NDJSON"),
    ]:
        print(f"  {label:34s} {r[key] / n:6.2f}")
    out_dir = Path(__file__).parent / "out"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "bench_writer.json").write_text(json.dumps({"args": vars(args), **r}, indent=1))


if __name__ == "__main__":
    main()
