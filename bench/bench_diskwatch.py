"""Cost of the free-disk floor check (`DiskWatch.check`, one ``statvfs``) per writer flush.

    .venv/bin/python bench/bench_diskwatch.py [--flushes 2000] [--rows 400]

Prints, from the same run: the check alone (ns per call), and a `SegmentWriter` flushing
`--rows` trades at a time with and without ``on_flush=watch.check`` (µs per flush, CPU time of
the process), so the check's share of a flush is a ratio measured side by side.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pumpwatch.segments.diskwatch import DiskWatch
from pumpwatch.segments.writer import SegmentWriter


def _rows(n: int, k0: int) -> list[tuple]:
    now = time.time_ns() // 1000
    return [
        (now + i, now + i + 500, "AAAUSDT", "AAA", "USDT", 1.0 + (k0 + i) % 97, 0.5, "buy", str(k0 + i))
        for i in range(n)
    ]


def _flushes(root: Path, n: int, rows: int, watch: DiskWatch | None) -> float:
    """CPU µs per append + flush of `rows` trades."""
    w = SegmentWriter(root, "okx_spot", fsync=False, on_flush=watch.check if watch else None)
    batches = [_rows(rows, i * rows) for i in range(n)]
    t0 = time.process_time()
    for b in batches:
        w.append(b)
        w.flush()
    cpu = time.process_time() - t0
    w.close()
    return cpu / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flushes", type=int, default=2000)
    ap.add_argument("--rows", type=int, default=400)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        watch = DiskWatch(root, min_free_bytes=1)  # enabled, never under the floor: the check only
        calls = 200_000
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            watch.check()
        check_ns = (time.perf_counter_ns() - t0) / calls
        plain, checked = [], []
        for i in range(args.repeat):
            plain.append(_flushes(root / f"p{i}", args.flushes, args.rows, None))
            checked.append(_flushes(root / f"c{i}", args.flushes, args.rows, watch))
    plain.sort()
    checked.sort()
    mid = args.repeat // 2
    print(f"DiskWatch.check (one statvfs): {check_ns:.0f} ns per call (wall, {calls} calls)")
    print(f"append + flush of {args.rows} trades, no fsync, median of {args.repeat}:")
    print(f"  without the check: {plain[mid]:.1f} µs CPU per flush")
    print(f"  with the check:    {checked[mid]:.1f} µs CPU per flush")
    print(f"  check / flush:     {check_ns / 1000 / plain[mid] * 100:.2f} % (check alone over a flush)")


if __name__ == "__main__":
    main()
