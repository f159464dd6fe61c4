"""Completeness under outages: `pumpwatch record` against all the local exchanges while random
connection drops, stalls and (on id-keyed streams) skipped pushes hit them (issue 10, Measure).

    .venv/bin/python bench/bench_completeness.py [--seconds 120] [--fault-every-s 4]
                                                 [--trades-per-s 30] [--bases 3]

A `SimCluster` (every stream, the synthetic market) runs in this process and keeps every trade
it generates in its REST history; `record` runs as a subprocess with the live repair on. After
the run, per stream: the share of the generated trades present on disk from the live
connections alone ("before repair") and with the REST-repaired ones ("after"), duplicates, the
REST calls the recorder made, the spans journaled unrepaired, and the time from a gap's end
to its `repaired` event (median and max), all from this run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pumpwatch.recorder.sim.cluster import SimCluster
from pumpwatch.segments.coverage import Replay
from pumpwatch.segments.journal import read_events
from pumpwatch.segments.paths import list_segments
from pumpwatch.segments.reader import read_segment
from pumpwatch.streams import STREAMS, split_stream

ID_KEYED = {"binance_spot", "binance_futures", "okx_spot", "okx_futures"}


def now_us() -> int:
    return time.time_ns() // 1000


def key(stream: str, symbol: str, t_us: int, price: float, qty: float, side: str, tid: str | None) -> Any:
    if split_stream(stream)[0] == "phemex":
        return (symbol, t_us, price, qty, side)
    return (symbol, tid)


def disk_keys(data: Path, stream: str) -> tuple[Counter[Any], set[Any]]:
    """Keys of every stored trade (counted) and of those received live."""
    allk: Counter[Any] = Counter()
    ws: set[Any] = set()
    for seg in list_segments(data, [stream]):
        for batch in read_segment(seg, -(2**62), 2**62):
            cols = batch.to_pydict()
            times = batch.column("time").cast("int64").to_pylist()
            for i, t in enumerate(times):
                k = key(
                    stream,
                    cols["symbol"][i],
                    t,
                    cols["price"][i],
                    cols["qty"][i],
                    cols["side"][i],
                    cols["trade_id"][i],
                )
                allk[k] += 1
                if cols["source"][i] != "rest":
                    ws.add(k)
    return allk, ws


def listening(data: Path, stream: str) -> bool:
    replay = Replay()
    for event in read_events(data, stream):
        replay.feed(event)
    return replay.listening()


async def main_async(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    bases = [f"B{i}" for i in range(args.bases)]
    with tempfile.TemporaryDirectory(prefix="pw-complete-") as tmp_s:
        tmp = Path(tmp_s)
        data = tmp / "data"
        async with SimCluster(STREAMS, bases, trades_per_s=args.trades_per_s, seed=args.seed) as cluster:
            symbols = cluster.write_symbols(tmp / "symbols.yaml")
            config = cluster.write_config(
                tmp / "config.yaml",
                {
                    "data_dir": str(data),
                    "storage": {"flush_interval": "200ms"},
                    "recorder": {
                        "symbols_file": str(symbols),
                        "backoff_initial": "100ms",
                        "backoff_max": "1s",
                        "heartbeat": "1s",
                        "status_interval": "10s",
                    },
                    "repair": {"id_grace": "500ms"},
                    "symbols": {"refresh": 0},
                    "upbit": {"enabled": False},
                    "metrics": {"enabled": False},
                },
            )
            log = (tmp / "record.out").open("wb")
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pumpwatch", "record", "--config", str(config),
                stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
            deadline = time.monotonic() + 60
            while not all(listening(data, s) for s in STREAMS):
                if time.monotonic() > deadline:
                    raise SystemExit("the recorder did not listen on every stream within 60 s")
                await asyncio.sleep(0.2)
            t0 = now_us()
            faults: Counter[str] = Counter()
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                await asyncio.sleep(rng.uniform(0.5, 1.5) * args.fault_every_s)
                stream = rng.choice(STREAMS)
                ex = cluster.exchanges[stream]
                what = rng.choice(["drop", "stall", "skip"] if stream in ID_KEYED else ["drop", "stall"])
                if what == "drop":
                    ex.drop_all()
                elif what == "stall":
                    ex.stall(rng.uniform(0.5, 3.0))
                else:
                    ex.skip_pushes(rng.randint(1, 5))
                faults[what] += 1
            t1 = now_us()
            await asyncio.sleep(args.settle_s)  # the last repairs (settle time, budgets)
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 60)
            print(
                f"{len(STREAMS)} streams x {len(bases)} bases, {args.trades_per_s} trades/s per stream, "
                f"{args.seconds:.0f} s, faults {dict(faults)}"
            )
            head = (
                f"{'stream':16} {'generated':>9} {'before %':>9} {'after %':>8} {'dupes':>6} "
                f"{'REST calls':>10} {'unrepaired':>10} {'gap->repaired s (median/max)':>29}"
            )
            print(head)
            for stream in STREAMS:
                ex = cluster.exchanges[stream]
                gen = {
                    key(stream, r[2], r[0], r[5], r[6], r[7], r[8])
                    for inst in cluster.instruments[stream]
                    for r in ex.history.store.time_range(inst.symbol, t0, t1)
                }
                allk, ws = disk_keys(data, stream)
                dupes = sum(n - 1 for n in allk.values() if n > 1)
                before = len(gen & ws) / len(gen) * 100 if gen else 100.0
                after = len(gen & allk.keys()) / len(gen) * 100 if gen else 100.0
                events = read_events(data, stream)
                lat = [
                    (e["ts"] - e["end_us"]) / 1e6
                    for e in events
                    if e["event"] == "repaired" and e["trades"] > 0
                ]
                unrep = sum(1 for e in events if e["event"] == "unrepaired")
                lat_s = f"{statistics.median(lat):.2f} / {max(lat):.2f}" if lat else "-"
                print(
                    f"{stream:16} {len(gen):>9} {before:>9.2f} {after:>8.2f} {dupes:>6} "
                    f"{ex.history.stats.requests:>10} {unrep:>10} {lat_s:>29}"
                )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="how long faults are injected")
    parser.add_argument("--fault-every-s", type=float, default=4.0, help="mean seconds between faults")
    parser.add_argument("--trades-per-s", type=float, default=30.0, help="per stream")
    parser.add_argument("--bases", type=int, default=3)
    parser.add_argument("--settle-s", type=float, default=15.0, help="wait for the last repairs")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
