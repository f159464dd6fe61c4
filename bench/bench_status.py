"""How long `pumpwatch status` takes on a full store: 7 days x 12 streams of hourly segments.

Run: .venv/bin/python bench/bench_status.py [DIR] [--days 7] [--trades-per-s 2]

Builds the store in DIR (default: a temporary directory, removed afterwards; an existing DIR
is reused as it is) ending now:
`days` x 24 sealed hours per stream written by the real `SegmentWriter` (`market.write_store`),
then per stream an open ``_HHMMSS.arrow`` for the current hour written in one-second batches
(what a running recorder leaves), three days of hourly frame files, and a journal per stream
with what a week of recording writes: ``alive`` every 10 s, ``stats`` every 60 s, a daily
restart and a few reconnections a day. Then times `store_status` in process (median of 3)
and ``pumpwatch status --json`` as a subprocess (wall time, interpreter start included), and
prints the file counts beside them.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from pumpwatch.recorder.sim.market import MarketSpec, generate, write_store
from pumpwatch.segments.frames import frame_path
from pumpwatch.segments.journal import journal_path
from pumpwatch.segments.status import store_status
from pumpwatch.streams import STREAMS
from pumpwatch.timeunits import US_PER_S as S

HOUR_US = 3600 * S
DAY_US = 24 * HOUR_US


def build(root: Path, now_us: int, days: int, trades_per_s: float) -> None:
    hour = now_us - now_us % HOUR_US
    start = hour - days * DAY_US
    t = time.perf_counter()
    write_store(
        root,
        MarketSpec(seed=7, start_us=start, duration_s=days * 86400, trades_per_s=trades_per_s),
        flush_every_s=600.0,
    )
    print(f"sealed hours written in {time.perf_counter() - t:.0f} s", flush=True)
    _open_hour(root, hour, now_us, trades_per_s)
    for stream in STREAMS:
        for h in range(72):
            p = frame_path(root, stream, hour - h * HOUR_US)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"\0" * 4096)
        _journal(root, stream, start, now_us)


def _open_hour(root: Path, hour_us: int, now_us: int, trades_per_s: float) -> None:
    """One-second batches from the hour's start to now, left open (never sealed)."""
    from pumpwatch.segments.writer import SegmentWriter

    spec = MarketSpec(seed=8, start_us=hour_us, duration_s=(now_us - hour_us) / S, trades_per_s=trades_per_s)
    writers = {
        s: SegmentWriter(
            root, s, flush_rows=1 << 30, flush_interval_s=3600.0, fsync=False, clock_us=lambda: 0
        )
        for s in STREAMS
    }
    for stream, batch in generate(spec):
        recv = batch.column(1).cast("int64").to_pylist()
        lo = 0
        for i in range(1, len(recv) + 1):
            if i == len(recv) or recv[i] // S != recv[lo] // S:
                writers[stream].append_batch(batch.slice(lo, i - lo))
                writers[stream].flush()
                lo = i
    # not closed: the files stay ``_HHMMSS.arrow``, as under a running recorder


def _journal(root: Path, stream: str, start_us: int, now_us: int) -> None:
    lines: list[dict[str, object]] = []
    counters = dict.fromkeys(("frames", "trades", "parse_errors", "reconnects", "duplicates"), 0)
    ts = start_us
    day = -1
    while ts < now_us:
        if ts // DAY_US != day:  # a daily restart
            day = ts // DAY_US
            if lines:
                lines.append({"ts": ts, "event": "stop", "conn": None, "pid": 1})
            lines.append({"ts": ts + 1, "event": "start", "conn": None, "pid": 2})
            for c in ("a", "b"):
                lines.append({"ts": ts + 2, "event": "connected", "conn": c, "url": "wss://x"})
                lines.append(
                    {"ts": ts + 3, "event": "subscribed", "conn": c, "symbols": ["0GUSDT"], "bases": ["0G"]}
                )
            counters = dict.fromkeys(counters, 0)
        if ts % (8 * HOUR_US) < 10 * S:  # a reconnection every 8 hours
            lines.append({"ts": ts, "event": "disconnected", "conn": "a", "reason": "reset"})
            lines.append({"ts": ts + 5, "event": "subscribed", "conn": "a", "symbols": ["X"], "bases": ["X"]})
            counters["reconnects"] += 1
        lines.append({"ts": ts, "event": "alive", "conn": None})
        if ts % (60 * S) < 10 * S:
            counters["frames"] += 6000
            counters["trades"] += 5000
            counters["parse_errors"] += ts // (60 * S) % 7 == 0
            lines.append({"ts": ts, "event": "stats", "conn": None, **counters})
        ts += 10 * S
    path = journal_path(root, stream)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", nargs="?")
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--trades-per-s", type=float, default=2.0)
    args = ap.parse_args()
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="pw_bench_status_"))
    try:
        if (root / "segments").is_dir():
            print(f"reusing the store in {root} (its open hour is as old as the store)")
        else:
            build(root, time.time_ns() // 1000, args.days, args.trades_per_s)
        segs = sum(1 for _ in (root / "segments").rglob("*.arrow"))
        frames = sum(1 for _ in (root / "frames").rglob("*.zst"))
        jbytes = sum(p.stat().st_size for p in (root / "journal").iterdir())
        print(f"store: {segs} segment files, {frames} frame files, journals {jbytes / 2**20:.1f} MiB")
        times = []
        for _ in range(3):
            t = time.perf_counter()
            status = store_status(root, retention_s=7 * 86400.0, frames_retention_s=3 * 86400.0)
            times.append(time.perf_counter() - t)
        print(f"store_status in process: median {statistics.median(times):.2f} s of {times}")
        print(f"  {status['trades']:,} trades on disk")
        exe = Path(sys.executable).with_name("pumpwatch")
        t = time.perf_counter()
        proc = subprocess.run([str(exe), "status", "--data-dir", str(root)], capture_output=True, text=True)
        print(
            f"pumpwatch status (subprocess, table): {time.perf_counter() - t:.2f} s, exit {proc.returncode}"
        )
        t = time.perf_counter()
        proc = subprocess.run(
            [str(exe), "status", "--json", "--data-dir", str(root)], capture_output=True, text=True
        )
        print(
            f"pumpwatch status --json (subprocess): {time.perf_counter() - t:.2f} s, exit {proc.returncode}"
        )
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    sys.stdout.flush()
    import os

    os._exit(0)  # the open hour's writers are left unsealed on purpose


if __name__ == "__main__":
    main()
