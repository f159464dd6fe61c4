"""Latency of the automatic trigger: notice published -> metadata.json on disk.

    .venv/bin/python bench/bench_trigger.py [--notices 20] [--poll 1.0] [--after 2.0]

A synthetic store (real SegmentWriter files) covers the run; a local Upbit-shaped server
publishes one fresh KRW listing notice every `--gap` seconds; the real watcher (poller, firing
rule, scheduler, extractor and detector) runs against it. For each notice the time from
publication to its listing's metadata.json (and to refined/pump_analysis.json) is measured
and set against the bound poll interval + after + 2 s. `extract.after` is shrunk (2 s by
default instead of 20 s) so the run takes about a minute; `storage.flush_interval` (1 s) and
`upbit.settle` (0.5 s) keep their defaults, so the extraction is due at T + after + 1.5 s.
The API's times have second precision, so T (first_listed_at) is the publication time
rounded down to the second.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pumpwatch.recorder.sim.market import MarketSpec, write_store
from pumpwatch.recorder.sim.upbit import UpbitSim, backlog
from pumpwatch.recorder.upbit.service import ListingWatcher
from pumpwatch.settings import Settings

S = 1_000_000
STREAMS = ("binance_spot", "binance_futures", "okx_futures", "gate_spot")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(args: argparse.Namespace, data_dir: Path) -> int:
    symbols = [f"BX{i}" for i in range(args.notices)]
    now_us = int(time.time() * S)
    span_s = args.notices * args.gap + 60
    spec = MarketSpec(
        seed=1,
        start_us=now_us - 30 * S,
        duration_s=span_s,
        trades_per_s=args.rate,
        bases=tuple(symbols),
        streams=STREAMS,
    )
    t0 = time.perf_counter()
    written = write_store(data_dir, spec)
    print(
        f"store: {written['trades']:,} trades on {len(STREAMS)} streams in {time.perf_counter() - t0:.1f} s"
    )

    settings = Settings(data_dir=str(data_dir))
    settings.upbit.poll_interval_s = args.poll
    settings.extract.after_s = args.after
    settings.repair.at_extract = False  # the default REST URLs are the real exchanges
    bound_s = args.poll + args.after + 2.0
    sim = UpbitSim(notices=backlog(now_us))
    published: dict[str, float] = {}
    on_disk: dict[str, float] = {}
    refined: dict[str, float] = {}
    listings = data_dir / "listings"
    async with sim:
        settings.upbit.hosts = [sim.url]
        watcher = ListingWatcher(settings)
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.run(stop))
        while not watcher.state.bootstrapped:
            await asyncio.sleep(0.01)

        async def watch_disk() -> None:
            while len(refined) < len(symbols):
                for sym in published:
                    if sym in refined:
                        continue
                    for d in listings.glob(f"{sym}_*") if listings.exists() else ():
                        if sym not in on_disk and (d / "metadata.json").exists():
                            on_disk[sym] = time.time()
                        if (d / "refined" / "pump_analysis.json").exists():
                            refined[sym] = time.time()
                await asyncio.sleep(0.01)

        disk_task = asyncio.create_task(watch_disk())
        for sym in symbols:
            published[sym] = time.time()
            sim.add_notice(f"벤치코인({sym}) 신규 거래지원 안내 (KRW, BTC, USDT 마켓)")
            await asyncio.sleep(args.gap)
        await asyncio.wait_for(disk_task, timeout=args.after + 60)
        stop.set()
        await task
        await asyncio.sleep(0.1)  # let the server see the client's keep-alive close before it shuts down

    lat = [on_disk[s] - published[s] for s in symbols]
    lat_refined = [refined[s] - published[s] for s in symbols]
    delays = [f.detection_delay_s for f in watcher.firings]
    up = settings.upbit
    print(
        f"notices: {len(symbols)}  poll {args.poll:g} s (±{up.jitter:.0%})  after {args.after:g} s "
        f"(shrunk from 20 s)  flush {settings.storage.flush_interval_s:g} s  settle {up.settle_s:g} s"
    )
    print(f"{'':28}{'min':>8}{'median':>8}{'p90':>8}{'max':>8}")
    for name, values in (
        ("detection delay after T (s)", delays),
        ("publish -> metadata.json (s)", lat),
        ("publish -> refined/ (s)", lat_refined),
    ):
        cols = (min(values), statistics.median(values), pct(values, 0.9), max(values))
        print(f"{name:28}" + "".join(f"{v:8.2f}" for v in cols))
    print(f"bound poll + after + 2 s = {bound_s:.2f} s; max/bound = {max(lat) / bound_s:.2f}")
    ok = max(lat) <= bound_s and len(watcher.firings) == len(symbols)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notices", type=int, default=20)
    parser.add_argument("--poll", type=float, default=1.0, help="upbit.poll_interval in seconds")
    parser.add_argument("--after", type=float, default=2.0, help="extract.after in seconds")
    parser.add_argument("--gap", type=float, default=1.5, help="seconds between published notices")
    parser.add_argument("--rate", type=float, default=30.0, help="synthetic trades per second per stream")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="pw-bench-trigger-") as tmp:
        return asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
