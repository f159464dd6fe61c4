"""Benchmark: `pumpwatch report` over 500 listings.

    .venv/bin/python bench/bench_report.py [--listings 500] [--seeds 10] [--keep]

Extracts and detects `--seeds` real listings (synthetic store, the real extractor and
detector, timed), then clones them into `--listings` listing directories with their own
symbols and trigger times an hour apart, alternating Upbit notices and manual triggers (the
files the report reads: metadata.json, refined/*.json, refined/chart.png; raw/ is left out, the
report never reads it). Prints the time of `write_report` in-process for a tenth of them and
for all (its scaling), per listing, next to the time one listing's extract + detect took,
and the whole `pumpwatch report` command as a user runs it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from pumpwatch.atomic import json_bytes
from pumpwatch.detector.refined import run_detector
from pumpwatch.detector.report import write_report
from pumpwatch.extractor import extract
from pumpwatch.recorder.sim.market import MarketSpec, PumpSpec, write_store
from pumpwatch.streams import STREAMS
from pumpwatch.timeunits import US_PER_MS
from pumpwatch.timeunits import US_PER_S as S
from pumpwatch.utctime import format_utc

START = 1_767_258_000 * S  # 2026-01-01T09:00:00Z
GAP_S = 90


def seed_listings(root: Path, n: int) -> tuple[list[Path], float]:
    """`n` real listings, pumps on varying streams (every fourth without a pump); returns
    them and the mean seconds of one extract + detect (chart included)."""
    bases = tuple(f"S{k}" for k in range(n))
    pumps = []
    for k in range(n):
        if k % 4 == 3:
            continue
        streams = tuple(STREAMS[(k + j) % len(STREAMS)] for j in range(2 + k % 5))
        lags = {s: 0.3 * j + 0.1 * k for j, s in enumerate(streams)}
        pumps.append(
            PumpSpec(bases[k], START + (30 + GAP_S * k) * S, 5.0 + k, 2.0, streams=streams, lag_s=lags)
        )
    spec = MarketSpec(seed=5, start_us=START, duration_s=GAP_S * n + 60, trades_per_s=10, bases=bases,
                      pumps=tuple(pumps))  # fmt: skip
    write_store(root, spec, flush_every_s=10.0)
    out = []
    started = time.perf_counter()
    for k in range(n):
        listing = extract(root, bases[k], START + (30 + GAP_S * k) * S)
        run_detector(listing)
        out.append(listing)
    return out, (time.perf_counter() - started) / n


def _shift(obj: Any, delta_us: int) -> Any:
    """Every time field (*_us, *_ms, *time*, start, end; durations excepted) moved by `delta_us`
    (ms fields by its ms)."""
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            timed = "duration" not in key and (
                "time" in key or key in ("start", "end") or key.endswith(("_us", "_ms"))
            )
            if isinstance(value, int) and not isinstance(value, bool) and timed:
                out[key] = value + (delta_us if key.endswith("_us") else delta_us // US_PER_MS)
            else:
                out[key] = _shift(value, delta_us)
        return out
    if isinstance(obj, list):
        return [_shift(v, delta_us) for v in obj]
    return obj


def clone_listings(seeds: list[Path], listings_dir: Path, n: int) -> None:
    """`n` listing directories cloned from `seeds`, each its own symbol, an hour apart."""
    for i in range(n):
        src = seeds[i % len(seeds)]
        meta = orjson.loads((src / "metadata.json").read_bytes())
        trigger_us = START + i * 3600 * S
        delta = trigger_us - int(meta["trigger_time_us"])
        symbol = f"C{i}"
        name = f"{symbol}_{datetime.fromtimestamp(trigger_us // S, UTC).strftime('%Y%m%dT%H%M%SZ')}"
        dst = listings_dir / name
        (dst / "refined").mkdir(parents=True)
        meta = _shift(meta, delta)
        meta["symbol"] = symbol
        meta["trigger_time"] = format_utc(trigger_us)
        if i % 2 == 0:
            title = f"코인{i}({symbol}) 신규 거래지원 안내 (KRW 마켓)"
            meta["source"] = {"type": "upbit", "notice_id": 5000 + i, "title": title,
                              "first_listed_at": format_utc(trigger_us)}  # fmt: skip
        (dst / "metadata.json").write_bytes(json_bytes(meta))
        for part in ("pump_analysis.json", "exchange_comparison.json"):
            doc = _shift(orjson.loads((src / "refined" / part).read_bytes()), delta)
            doc["symbol"] = symbol
            (dst / "refined" / part).write_bytes(json_bytes(doc))
        shutil.copyfile(src / "refined" / "chart.png", dst / "refined" / "chart.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listings", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--keep", action="store_true", help="keep the generated data dir and print it")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        store = tmp / "store"
        seeds, extract_s = seed_listings(store, args.seeds)
        data = tmp / "data"
        clone_listings(seeds, data / "listings", args.listings)
        small = tmp / "small"
        clone_listings(seeds, small / "listings", max(args.listings // 10, 1))

        write_report(small / "listings", small / "report")  # warm-up: imports, matplotlib's font cache
        started = time.perf_counter()
        write_report(small / "listings", small / "report")
        small_s = time.perf_counter() - started
        started = time.perf_counter()
        rep = write_report(data / "listings", data / "report")
        full_s = time.perf_counter() - started
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPWATCH_")}
        started = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "pumpwatch"), "report", "--data-dir", str(data)],
                       check=True, capture_output=True, env=env)  # fmt: skip
        cli_s = time.perf_counter() - started
        n_small = max(args.listings // 10, 1)
        size_mb = sum(p.stat().st_size for p in (data / "report").rglob("*") if p.is_file()) / 1e6
        page_mb = rep.index.stat().st_size / 1e6
        print(f"extract + detect one listing (chart included): {extract_s * 1000:8.0f} ms")
        print(f"report, {n_small:4d} listings (in-process):       {small_s:8.2f} s  "
              f"({small_s / n_small * 1000:.1f} ms/listing)")  # fmt: skip
        print(f"report, {args.listings:4d} listings (in-process):       {full_s:8.2f} s  "
              f"({full_s / args.listings * 1000:.1f} ms/listing)")  # fmt: skip
        print(f"pumpwatch report, {args.listings} listings (command):   {cli_s:8.2f} s")
        print(
            f"scaling {args.listings}/{n_small} listings: x{full_s / small_s:.1f} time "
            f"for x{args.listings / n_small:.0f} listings"
        )
        print(f"report per listing vs extract+detect per listing: {full_s / args.listings / extract_s:.3f}")
        print(
            f"output: index.html {page_mb:.1f} MB, whole report {size_mb:.1f} MB "
            "(charts hard-linked: no new space)"
        )
        if args.keep:
            print(f"kept: {tmp}")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
