"""Live throughput of one recorder worker: a local exchange pushes trades at increasing rates.

    .venv/bin/python bench/bench_live.py [--stream bybit_spot] [--step-s 5] [--rates 5000,10000,...]

A `SimExchange` (the stream's real wire format) runs in this process; one worker process
(``python -m pumpwatch.recorder.worker``, exactly what `record` starts) records it. Each step
publishes `rate` trades/s for `step_s` seconds, then waits until every trade the server sent
is readable from the segments. A step is *sustained* when the publisher reached ≥ 95% of the
rate, nothing is missing, and the backlog drained within `drain_s`. Printed per step: achieved
rate, worker CPU (% of one core), CPU per 1 k trades/s, drain time. The summary gives the
highest sustained rate against the 50 k/s target and the CPU at 5 k/s, all measured in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.sim.instruments import sim_instrument
from pumpwatch.recorder.sim.server import SimExchange
from pumpwatch.recorder.symbols import write_symbols
from pumpwatch.segments.paths import list_segments
from pumpwatch.segments.reader import read_segment
from pumpwatch.segments.schema import TradeRow
from pumpwatch.streams import split_stream

TARGET_RATE = 50_000
TICK_S = 0.01


def bases(n: int) -> list[str]:
    """`n` made-up base assets: B000, B001, ..."""
    return [f"B{i:03d}" for i in range(n)]


def make_sim(stream: str, n_symbols: int) -> tuple[SimExchange, list[Instrument]]:
    exchange, market = split_stream(stream)
    protocol = importlib.import_module(f"pumpwatch.recorder.sim.{exchange}").sim_protocol(market)
    insts = [sim_instrument(stream, b) for b in bases(n_symbols)]
    return SimExchange(protocol, insts, idle_timeout_s=None), insts


def write_config(
    tmp: Path, sims: dict[str, SimExchange], insts: dict[str, list[Instrument]], *, status_s: float = 5.0
) -> Path:
    """Symbols and config files pointing every stream at its local server."""
    symbols = tmp / "symbols.yaml"
    write_symbols(symbols, insts)
    cfg = {
        "data_dir": str(tmp / "data"),
        "recorder": {
            "streams": list(sims),
            "symbols_file": str(symbols),
            "status_interval": f"{status_s}s",
            "backoff_initial": "100ms",
            "backoff_max": "1s",
        },
        "symbols": {"refresh": 0},
        "upbit": {"enabled": False},
        "metrics": {"enabled": False},
        "logging": {"level": "WARNING", "file": False},
        "streams": {s: {"ws_url": sim.ws_url, "rest_url": sim.rest_url} for s, sim in sims.items()},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Publisher:
    """Trades with unique ids, grouped by symbol within a tick (exchanges batch them so)."""

    def __init__(self, sim: SimExchange, insts: list[Instrument]) -> None:
        self.sim = sim
        self.insts = insts
        self.ids = itertools.count(1)
        self.published = 0

    def tick(self, n: int) -> None:
        now_us = time.time_ns() // 1000
        per = max(1, n // len(self.insts))
        rows: list[TradeRow] = []
        for inst in self.insts:
            for _ in range(per):
                k = next(self.ids)
                qty = inst.multiplier * (1 + k % 5) if inst.multiplier != 1.0 else 0.001 * (1 + k % 5)
                rows.append((now_us, now_us, inst.symbol, inst.base, "USDT", 10.0 + (k % 50) * 0.01, qty,
                             "buy" if k % 2 else "sell", str(k)))  # fmt: skip
        self.sim.publish(rows)
        self.published += len(rows)

    async def run(self, rate: float, seconds: float) -> float:
        """Publish at `rate` trades/s for `seconds`; returns the achieved rate."""
        start = time.monotonic()
        sent0 = self.published
        owed = 0.0
        while (elapsed := time.monotonic() - start) < seconds:
            owed = rate * elapsed - (self.published - sent0)
            if owed >= len(self.insts):
                self.tick(int(owed))
            await asyncio.sleep(TICK_S)
        return (self.published - sent0) / (time.monotonic() - start)


def rows_on_disk(data_dir: Path, streams: list[str]) -> int:
    return sum(b.num_rows for s in list_segments(data_dir, streams) for b in read_segment(s, 0, 2**62))


async def wait_sent_written(
    sim: SimExchange, data_dir: Path, stream: str, drain_s: float
) -> tuple[bool, float]:
    """Wait until the rows on disk reach what the server sent; (all there, seconds waited)."""
    t0 = time.monotonic()
    while True:
        sent = len(sim.sent_rows())
        have = await asyncio.to_thread(rows_on_disk, data_dir, [stream])
        if have >= sent:
            return have == sent, time.monotonic() - t0
        if time.monotonic() - t0 > drain_s:
            return False, time.monotonic() - t0
        await asyncio.sleep(0.2)


async def bench(args: argparse.Namespace) -> int:
    stream = args.stream
    tmp = Path(tempfile.mkdtemp(prefix="pw-bench-live-"))
    sim, insts = make_sim(stream, args.symbols)
    await sim.start()
    config = write_config(tmp, {stream: sim}, {stream: insts})
    exchange = split_stream(stream)[0]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pumpwatch.recorder.worker", "--exchange", exchange, "--streams", stream,
        "--config", str(config),
    )  # fmt: skip
    worker = psutil.Process(proc.pid)
    me = psutil.Process(os.getpid())
    deadline = time.monotonic() + 30
    while not any(len(s.subscribed) == len(insts) for s in sim.sessions()):
        if time.monotonic() > deadline:
            raise SystemExit("worker did not subscribe within 30 s")
        await asyncio.sleep(0.05)
    pub = Publisher(sim, insts)
    print(f"stream {stream}, {len(insts)} symbols, {args.step_s:.0f} s per step, data in {tmp}")
    print(f"{'target/s':>9} {'achieved/s':>10} {'worker CPU%':>11} {'CPU%/1k/s':>9} {'bench CPU%':>10} "
          f"{'drain s':>7}  result")  # fmt: skip
    best = 0.0
    cpu_at_5k: float | None = None
    for rate in args.rates:
        worker.cpu_percent(None)
        me.cpu_percent(None)
        achieved = await pub.run(rate, args.step_s)
        w_cpu = worker.cpu_percent(None)
        b_cpu = me.cpu_percent(None)
        complete, drain = await wait_sent_written(sim, tmp / "data", stream, args.drain_s)
        reached = achieved >= 0.95 * rate
        ok = complete and reached and drain <= args.drain_s
        verdict = "sustained" if ok else ("missing rows" if not complete else "publisher-bound")
        if not reached:
            verdict = "publisher-bound (this process could not push faster)"
        per_k = w_cpu / (achieved / 1000)
        cols = f"{rate:>9,} {achieved:>10,.0f} {w_cpu:>11.0f} {per_k:>9.2f} {b_cpu:>10.0f}"
        print(f"{cols} {drain:>7.1f}  {verdict}")
        if rate == 5000:
            cpu_at_5k = w_cpu
        if ok:
            best = max(best, achieved)
        elif complete is False:
            break
    proc.terminate()
    rc = await proc.wait()
    await sim.close()
    total = await asyncio.to_thread(rows_on_disk, tmp / "data", [stream])
    sent = len(sim.sent_rows())
    print(f"worker exit code {rc}; rows on disk {total:,} of {sent:,} sent ({total - sent:+,})")
    print(f"highest sustained rate: {best:,.0f} trades/s = {best / TARGET_RATE:.2f} x the 50k/s target")
    if cpu_at_5k is not None:
        print(f"worker CPU at 5k trades/s: {cpu_at_5k:.0f}% of one core")
    return 0 if total >= sent else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stream", default="bybit_spot")
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--step-s", type=float, default=5.0)
    parser.add_argument("--drain-s", type=float, default=10.0)
    parser.add_argument(
        "--rates",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[5000, 10000, 20000, 35000, 50000, 75000, 100000],
    )
    raise SystemExit(asyncio.run(bench(parser.parse_args())))


if __name__ == "__main__":
    main()
