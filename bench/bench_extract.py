"""Benchmark: `pumpwatch extract` end to end on a 7-day, 12-stream store vs a 1-hour store.

    .venv/bin/python bench/bench_extract.py                 # builds bench/out/store7d once (minutes)
    .venv/bin/python bench/bench_extract.py --trades 5e6    # a quick, smaller run

The stores are built once with the seeded generator through the real SegmentWriter and cached
(a spec file next to them says what they hold). Each measurement runs the real command as a
subprocess (interpreter start and imports included) and takes the median of `--runs`; peak RSS
is the child's own (wait4). The measuring process stays small (a child builds the stores):
a forked child's peak RSS includes its parent's image before exec.
Targets: 7-day/1-hour ratio <= 1.5, wall <= 1 s, peak RSS <= 300 MB.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pumpwatch.timeunits import US_PER_S as S

DAY_S = 86_400
PUMPWATCH = str(Path(sys.executable).parent / "pumpwatch")
SYMBOL = "0G"
BASE_START_US = 1_767_225_600 * S  # 2026-01-01T00:00:00Z


def build(store: Path, spec: Any, flush_every_s: float) -> None:
    marker = store / "spec.json"
    want = {"spec": repr(spec), "flush_every_s": flush_every_s}
    if marker.exists() and json.loads(marker.read_text()) == want:
        print(f"using cached store {store}")
        return
    if store.exists():
        shutil.rmtree(store)
    store.mkdir(parents=True)
    expected = spec.trades_per_s * spec.duration_s * len(spec.streams)
    print(f"building {store}: {spec.duration_s / 3600:.0f} h, ~{expected / 1e6:.1f} M trades ...", flush=True)
    started = time.monotonic()
    from pumpwatch.recorder.sim.market import write_store

    report = write_store(store, spec, flush_every_s=flush_every_s, progress_every_s=30.0)
    took = time.monotonic() - started
    print(f"  {report['trades']:,} trades in {took:.0f} s ({report['trades'] / took / 1e6:.2f} M trades/s)")
    marker.write_text(json.dumps(want))


def run_once(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one `pumpwatch` child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPWATCH_")}
    started = time.perf_counter()
    proc = subprocess.Popen([PUMPWATCH, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(
            f"pumpwatch {' '.join(args)} failed: {proc.stderr.read().decode() if proc.stderr else ''}"
        )
    return wall, usage.ru_maxrss / 1024.0


def measure(store: Path, trigger_us: int, runs: int, extra: list[str]) -> tuple[float, float]:
    args = ["extract", SYMBOL, str(trigger_us // 1000), "--data-dir", str(store), *extra]
    run_once(args)  # warm the page cache, as on a recorder host that just wrote the data
    results = [run_once(args) for _ in range(runs)]
    return statistics.median(r[0] for r in results), max(r[1] for r in results)


def build_stores(opts: argparse.Namespace, duration_s: float, trigger_us: int) -> None:
    """The 7-day store and the 1-hour store around the same trigger, same trade density."""
    from pumpwatch.recorder.sim.market import MarketSpec, PumpSpec

    per_stream_rate = opts.trades / duration_s / 12
    pump = PumpSpec(SYMBOL, trigger_us + 3 * S, 12.0, 3.0, lag_s={"okx_futures": 1.5, "gate_spot": 0.7})
    week = MarketSpec(seed=7, start_us=BASE_START_US, duration_s=duration_s, trades_per_s=per_stream_rate,
                      pumps=(pump,), chunk_s=600.0)  # fmt: skip
    hour = MarketSpec(seed=7, start_us=trigger_us - 1800 * S, duration_s=3600.0, trades_per_s=per_stream_rate,
                      pumps=(pump,), chunk_s=600.0)  # fmt: skip
    build(opts.store, week, opts.flush_every)
    build(opts.store_1h, hour, opts.flush_every)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, default=Path("bench/out/store7d"))
    parser.add_argument("--store-1h", type=Path, default=Path("bench/out/store1h"))
    parser.add_argument("--trades", type=float, default=100e6, help="trades in the 7-day store")
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument(
        "--flush-every",
        type=float,
        default=60.0,
        help="receive-time seconds per record batch (recorder: 1 s; bigger builds faster)",
    )
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--runs", type=int, default=5)
    opts = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pumpwatch.recorder.sim.market").setLevel(logging.INFO)

    duration_s = opts.days * DAY_S
    trigger_us = BASE_START_US + round((duration_s - 3 * 3600) * S)  # 3 h before the store's end
    if opts.build_only:
        build_stores(opts, duration_s, trigger_us)
        return
    subprocess.run([sys.executable, __file__, "--build-only", *sys.argv[1:]], check=True)

    print(f"\nextract {SYMBOL} at {trigger_us // 1000} ±20 s; median of {opts.runs} runs incl. process start")
    rows = []
    for label, extra in (("extract + detect + chart", []), ("extract + detect, no chart", ["--no-chart"]),
                         ("extract only (--no-detect)", ["--no-detect"])):  # fmt: skip
        wall_week, rss_week = measure(opts.store, trigger_us, opts.runs, extra)
        wall_hour, rss_hour = measure(opts.store_1h, trigger_us, opts.runs, extra)
        rows.append((label, wall_week, wall_hour, rss_week, rss_hour))
    version = run_once(["version"])
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'':30} {'7-day':>8} {'1-hour':>8} {'ratio':>6} {'RSS 7d':>8} {'RSS 1h':>8}")
    for label, ww, wh, rw, rh in rows:
        print(f"{label:30} {ww:7.3f}s {wh:7.3f}s {ww / wh:6.2f} {rw:6.0f}MB {rh:6.0f}MB")
    print(f"{'`pumpwatch version` (floor)':30} {version[0]:7.3f}s {'':8} {'':6} {version[1]:6.0f}MB")
    print("targets: ratio <= 1.5, wall <= 1 s, RSS <= 300 MB")


if __name__ == "__main__":
    main()
