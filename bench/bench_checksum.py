"""Cost of the per-batch checksums (segments/checksum.py), measured against the same-run IPC write.

    .venv/bin/python bench/bench_checksum.py [--trades 500000] [--repeat 5]

For batches of 400 rows (one second of a live feed at ~400 trades/s), 8,192 and 65,536 rows
(a loaded writer) of the bench market (bench_writer.py), zstd 3, symbol dictionaries:

- write: a plain pyarrow IPC file writer (buffered sink flushed after every batch, as the live
  writer does) against `ChecksumFileWriter` (the same, plus the read-back, two CRC-32s and
  the ``pwrite`` of their digits), CPU ns per trade, median of interleaved repeats; the difference is the
  checksum's cost, shown also as a share of the writer's whole path at the same batch size,
  measured in the same run: `SegmentWriter.append(rows)` of that many trades then ``flush()``,
  and the seal at the end (conversion, dictionaries, IPC write with checksums, sealing's
  compaction; no fsync, like the two above);
- read: checking every batch (scan + CRC) against decoding the file, ns per trade;
- all told: sealing checks every batch of the open file before compacting it, so the writer's
  checksum share is the write's cost plus that check (``+ check``; the compacted file's own
  checksums add the 65,536-row cost on top, a few ns).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

sys.path.insert(0, str(Path(__file__).parent))
from bench_writer import as_rows, synthetic_market

from pumpwatch.segments import SegmentWriter
from pumpwatch.segments.checksum import ChecksumFileWriter, check_batches
from pumpwatch.segments.compact import batch_metadata, group_by_symbol
from pumpwatch.segments.convert import Converter
from pumpwatch.segments.ipcscan import scan_segment
from pumpwatch.segments.schema import SEGMENT_SCHEMA, TradeRow

OPTIONS = ipc.IpcWriteOptions(compression=pa.Codec("zstd", 3), emit_dictionary_deltas=True, use_threads=False)


def _batches(market: pa.RecordBatch, rows: int) -> list[pa.RecordBatch]:
    (whole,) = list(Converter("binance_spot").batches([market]))
    out = []
    for off in range(0, whole.num_rows, rows):
        part = whole.slice(off, rows)
        out.append(group_by_symbol(part) if rows >= 8192 else part)
    # one file-wide dictionary per column, as the writer keeps: unify via a table
    table = pa.Table.from_batches(out).unify_dictionaries().combine_chunks()
    return table.to_batches(max_chunksize=rows)


def _plain(path: Path, batches: list[pa.RecordBatch]) -> None:
    sink = pa.BufferedOutputStream(pa.OSFile(str(path), "wb"), 1 << 20)
    writer = ipc.new_file(sink, SEGMENT_SCHEMA, options=OPTIONS)
    for b in batches:
        writer.write_batch(b, custom_metadata=batch_metadata(b))
        sink.flush()
    writer.close()
    sink.close()


def _checked(path: Path, batches: list[pa.RecordBatch]) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        writer = ChecksumFileWriter(path, fd, SEGMENT_SCHEMA, OPTIONS)
        for b in batches:
            writer.write_batch(b, batch_metadata(b))
        writer.close()
    finally:
        os.close(fd)


def _writer(d: Path, chunks: list[list[TradeRow]]) -> None:
    shutil.rmtree(d, ignore_errors=True)
    with SegmentWriter(d, "binance_spot", flush_interval_s=3600, flush_rows=1 << 20, fsync=False) as w:
        for rows in chunks:
            w.append(rows)
            w.flush()


def _cpu(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.process_time()
    fn()
    return time.process_time() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trades", type=int, default=500_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    market = synthetic_market(args.trades, 200, 400.0)
    n = market.num_rows
    rows_all = as_rows(market)
    print(f"{n:,} trades, zstd 3, median of {args.repeat} interleaved runs, CPU ns per trade")
    print(f"{'rows/batch':>10} {'plain write':>12} {'checksummed':>12} {'cost':>7} {'of write':>9} "
          f"{'writer':>7} {'of writer':>10} {'check':>7} {'+ check':>8} {'decode':>7}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for rows in (400, 8192, 65536):
            batches = _batches(market, rows)
            chunks = [rows_all[i : i + rows] for i in range(0, n, rows)]
            plain, checked, whole, verify, decode = [], [], [], [], []
            for _ in range(args.repeat):
                whole.append(_cpu(lambda: _writer(d / "writer", chunks)) * 1e9 / n)  # noqa: B023
                plain.append(_cpu(lambda: _plain(d / "plain.arrow", batches)) * 1e9 / n)  # noqa: B023
                checked.append(_cpu(lambda: _checked(d / "checked.arrow", batches)) * 1e9 / n)  # noqa: B023
                buf = pa.memory_map(str(d / "checked.arrow")).read_buffer()
                verify.append(_cpu(lambda: check_batches(buf, scan_segment(buf))) * 1e9 / n)  # noqa: B023
                decode.append(_cpu(lambda: ipc.open_file(buf).read_all()) * 1e9 / n)  # noqa: B023
            buf = pa.memory_map(str(d / "checked.arrow")).read_buffer()
            assert set(check_batches(buf, scan_segment(buf)).status.values()) == {"ok"}
            p, c, w = statistics.median(plain), statistics.median(checked), statistics.median(whole)
            v, r = statistics.median(verify), statistics.median(decode)
            print(f"{rows:>10,} {p:>12.1f} {c:>12.1f} {c - p:>7.1f} {(c - p) / p:>8.1%} "
                  f"{w:>7.1f} {(c - p) / w:>9.1%} {v:>7.1f} {(c - p + v) / w:>7.1%} {r:>7.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
