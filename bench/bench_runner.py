"""The connection runner's cost: hot path per frame vs decode alone, and end-to-end trades/s.

    .venv/bin/python bench/bench_runner.py [--trades 100000] [--e2e-trades 30000] [--repeat 5]
                                           [--streams binance_spot,okx_futures,...]

Part 1, hot path (no sockets): the same frame corpus (the stream's own sim ``encode_trades``)
goes through ``adapter.decode`` alone and through what the runner does per received frame in
``Connection._read`` — take the receive time, ``FrameIngest.process`` (stats, decode,
de-duplicate, ``on_trades``). CPU time, interleaved, best of `repeat`; the ratio is
runner / decode measured in the same run.

Part 2, end to end over loopback, in one process: a local ``SimExchange`` publishes trades in
paced batches (at most `WINDOW_TRADES` in flight) to (a) a ``StreamRunner`` and (b) a bare
websockets client that only decodes (the floor: server + transport + decode, no runner).
Both sides share the process, so the figures include the server's encoding and sending.
Prints trades/s (wall), CPU µs per trade and the runner / bare CPU ratio, median of `repeat`
alternating runs. Streams that need a token or a welcome (KuCoin) are skipped in part 2: the
bare client does not do those.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence

from websockets.asyncio.client import connect

from pumpwatch.recorder.adapter import Adapter, Control, Instrument
from pumpwatch.recorder.adapters import get_adapter
from pumpwatch.recorder.sim.cluster import sim_protocol_for
from pumpwatch.recorder.sim.instruments import sim_instrument
from pumpwatch.recorder.sim.server import SimExchange
from pumpwatch.recorder.stream.continuity import IdContinuity
from pumpwatch.recorder.stream.dedupe import Deduper
from pumpwatch.recorder.stream.ingest import FrameIngest
from pumpwatch.recorder.stream.runner import StreamRunner
from pumpwatch.recorder.stream.stats import RunnerStats
from pumpwatch.segments.schema import TradeRow
from pumpwatch.streams import parse_streams
from pumpwatch.timeunits import US_PER_MS, US_PER_S

DEFAULT_STREAMS = "binance_spot,binance_futures,okx_futures,bybit_spot,gate_futures,kucoin_futures"
BASES = ("BTC", "ETH", "SOL", "XRP", "DOGE", "0G", "ARB", "SUI", "WIF", *(f"C{i}" for i in range(11)))
WINDOW_TRADES = 2_000  # trades published but not yet received, at most (keeps queues short)
BATCH_TRADES = 100  # trades per publish() call


def instruments_of(stream: str) -> dict[str, Instrument]:
    return {inst.symbol: inst for inst in (sim_instrument(stream, b) for b in BASES)}


def build_rows(instruments: Sequence[Instrument], n: int, first_id: int, seed: int = 7) -> list[TradeRow]:
    """`n` trades in per-symbol bursts, exchange times just before now (decoders check them)."""
    rng = random.Random(seed + first_id)
    t_us = (time.time_ns() // 1000 - 60 * US_PER_S) // US_PER_MS * US_PER_MS  # ns -> µs, whole ms
    price = {inst.symbol: 10 ** rng.uniform(-3, 4) for inst in instruments}
    rows: list[TradeRow] = []
    next_id = dict.fromkeys(price, first_id)  # ids count up per symbol, as the real ones do
    while len(rows) < n:
        inst = rng.choice(instruments)
        for _ in range(min(rng.randint(1, 8), n - len(rows))):
            t_us += US_PER_MS * rng.randint(0, 1)
            price[inst.symbol] *= 1 + rng.uniform(-0.001, 0.001)
            p = float(f"{price[inst.symbol]:.6g}")
            qty = (
                rng.randint(1, 500) * inst.multiplier
                if inst.multiplier != 1.0
                else rng.randint(1, 9999) / 100
            )
            side = "buy" if rng.random() < 0.5 else "sell"
            next_id[inst.symbol] = trade_id = next_id[inst.symbol] + 1
            rows.append((t_us, 0, inst.symbol, inst.base, inst.quote, p, qty, side, str(trade_id)))
    return rows


def cpu_best(repeat: int, fns: Sequence[Callable[[], int]]) -> list[float]:
    """Fastest process CPU time of each of `fns`, alternating within each round, GC off."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            gc.collect()
            gc.disable()
            try:
                start = time.process_time()
                fn()
                best[i] = min(best[i], time.process_time() - start)
            finally:
                gc.enable()
    return best


# -- part 1: hot path -----------------------------------------------------------------------------


def bench_hot_path(stream: str, n: int, repeat: int) -> dict[str, float]:
    adapter = get_adapter(stream)
    instruments = instruments_of(stream)
    rows = build_rows(list(instruments.values()), n, 1_000_000)
    frames = sim_protocol_for(stream).encode_trades(rows, instruments)
    recv_us = time.time_ns() // 1000
    decode = adapter.decode
    got: list[TradeRow] = []

    def decode_only() -> int:
        for frame in frames:
            decode(frame, recv_us, instruments)
        return len(frames)

    def runner_path() -> int:
        got.clear()
        stats = RunnerStats()
        ingest = FrameIngest(adapter, stats, Deduper(adapter.dedupe_key), instruments, got.extend)
        process, clock = ingest.process, time.time_ns
        for frame in frames:
            process(frame, clock() // 1000)  # as Connection._read does per frame
        return stats.trades

    def runner_ids_path() -> int:
        got.clear()
        stats = RunnerStats()
        ids = IdContinuity(2 * US_PER_S)
        ingest = FrameIngest(adapter, stats, Deduper(adapter.dedupe_key), instruments, got.extend, ids=ids)
        process, clock = ingest.process, time.time_ns
        for frame in frames:
            process(frame, clock() // 1000)
        if ids.holes_seen:
            raise SystemExit(f"{stream}: {ids.holes_seen} id holes in a contiguous corpus")
        return stats.trades

    t_decode, t_runner, t_ids = cpu_best(repeat, [decode_only, runner_path, runner_ids_path])
    if runner_path() != len(rows) or len(got) != len(rows):
        raise SystemExit(f"{stream}: the runner path delivered {len(got)} of {len(rows)} trades")
    return {
        "frames": len(frames),
        "trades": len(rows),
        "decode_ns_frame": t_decode / len(frames) * 1e9,
        "runner_ns_frame": t_runner / len(frames) * 1e9,
        "ids_ns_frame": t_ids / len(frames) * 1e9,
        "ids_ns_trade": (t_ids - t_runner) / len(rows) * 1e9,
        "ratio": t_runner / t_decode,
        "ids_ratio": t_ids / t_runner,
    }


# -- part 2: end to end ---------------------------------------------------------------------------


async def publish_paced(ex: SimExchange, rows: list[TradeRow], received: Callable[[], int]) -> None:
    """Publish `rows` in batches, keeping at most WINDOW_TRADES unreceived; wait for the rest."""
    for i in range(0, len(rows), BATCH_TRADES):
        while i - received() > WINDOW_TRADES:
            await asyncio.sleep(0)
        ex.publish(rows[i : i + BATCH_TRADES])
        await asyncio.sleep(0)
    deadline = time.monotonic() + 60
    while received() < len(rows):
        if time.monotonic() > deadline:
            raise SystemExit(f"{ex.protocol.stream}: received {received()} of {len(rows)} trades")
        await asyncio.sleep(0.001)


async def until(cond: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def run_runner(
    ex: SimExchange,
    adapter: Adapter,
    rows: list[TradeRow],
    redundancy: int = 1,
    memory: list[int] | None = None,
) -> tuple[float, float]:
    """`rows` through a `StreamRunner`; with `memory`, the bytes Python allocated for the run
    (tracemalloc, current at the end minus before the runner started) are appended to it."""
    count = [0]

    def on_trades(batch: list[TradeRow]) -> None:
        count[0] += len(batch)

    base_mem = tracemalloc.get_traced_memory()[0] if memory is not None else 0
    runner = StreamRunner(
        adapter,
        ws_url=ex.ws_url,
        rest_url=ex.rest_url,
        instruments=ex.instruments,
        on_trades=on_trades,
        redundancy=redundancy,
    )
    task = asyncio.create_task(runner.run())
    want = len(ex.instruments)
    await until(
        lambda: runner.stats.subscribed_symbols == want and runner.stats.connected == redundancy,
        "runner subscribed",
    )
    await until(lambda: sum(len(s.subscribed) for s in ex.sessions()) == want * redundancy, "all acked")
    wall, cpu = time.perf_counter(), time.process_time()
    await publish_paced(ex, rows, lambda: count[0])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if memory is not None:
        memory.append(tracemalloc.get_traced_memory()[0] - base_mem)
    await runner.stop()
    await task
    return wall, cpu


async def bench_redundancy(stream: str, n: int, repeat: int) -> dict[str, float]:
    """The same trades through a runner with one and with two standing connections per shard:
    CPU per trade (median of `repeat` alternating runs) and memory (one traced run each)."""
    adapter = get_adapter(stream)
    instruments = instruments_of(stream)
    cpu: dict[int, list[float]] = {1: [], 2: []}
    mem: dict[int, list[int]] = {1: [], 2: []}
    async with SimExchange(sim_protocol_for(stream), list(instruments.values())) as ex:
        for r in range(repeat):
            for red in (1, 2):
                rows = build_rows(list(instruments.values()), n, 10_000_000 * (2 * r + red))
                gc.collect()
                _, c = await run_runner(ex, adapter, rows, red)
                cpu[red].append(c / n * US_PER_S)
        for red in (1, 2):
            rows = build_rows(list(instruments.values()), n, 90_000_000 + red * 1_000_000)
            gc.collect()
            tracemalloc.start()
            try:
                await run_runner(ex, adapter, rows, red, mem[red])
            finally:
                tracemalloc.stop()
    return {
        "cpu1": statistics.median(cpu[1]),
        "cpu2": statistics.median(cpu[2]),
        "mem1": mem[1][0] / 1e6,
        "mem2": mem[2][0] / 1e6,
    }


async def run_bare(ex: SimExchange, adapter: Adapter, rows: list[TradeRow]) -> tuple[float, float]:
    """A plain websockets client: subscribe, then decode every frame and count the trades."""
    instruments = ex.instruments
    target = adapter.connect_target(ex.ws_url, None, "bare")
    ws = await connect(
        target.url,
        additional_headers=dict(target.headers) or None,
        ping_interval=None,
        compression=None,
        proxy=None,
        max_queue=1024,
    )
    symbols = sorted(instruments)
    for i in range(0, len(symbols), adapter.max_symbols_per_request):
        for frame in adapter.subscribe(symbols[i : i + adapter.max_symbols_per_request], str(i + 1)):
            await ws.send(frame)
    await until(lambda: any(len(s.subscribed) == len(symbols) for s in ex.sessions()), "bare subscribed")
    count = [0]
    decode, clock = adapter.decode, time.time_ns

    async def reader() -> None:
        async for frame in ws:
            out = decode(frame, clock() // 1000, instruments)
            if not isinstance(out, Control):
                count[0] += len(out)

    task = asyncio.create_task(reader())
    wall, cpu = time.perf_counter(), time.process_time()
    await publish_paced(ex, rows, lambda: count[0])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await ws.close()
    await task
    return wall, cpu


async def bench_end_to_end(stream: str, n: int, repeat: int) -> dict[str, float] | str:
    adapter = get_adapter(stream)
    if adapter.connect_request is not None or adapter.connect_target("ws://x", b"{}", "0").wait_welcome:
        return "skipped: token/welcome stream (the bare client does not do those)"
    instruments = instruments_of(stream)
    results: dict[str, list[tuple[float, float]]] = {"bare": [], "runner": []}
    async with SimExchange(sim_protocol_for(stream), list(instruments.values())) as ex:
        for r in range(repeat):
            for side, fn in (("bare", run_bare), ("runner", run_runner)):
                rows = build_rows(
                    list(instruments.values()), n, 10_000_000 * (2 * r + (side == "runner") + 1)
                )
                gc.collect()
                results[side].append(await fn(ex, adapter, rows))
    out: dict[str, float] = {}
    for side, runs in results.items():
        out[f"{side}_trades_s"] = statistics.median(n / wall for wall, _ in runs)
        out[f"{side}_cpu_us"] = statistics.median(cpu / n * US_PER_S for _, cpu in runs)
    out["cpu_ratio"] = out["runner_cpu_us"] / out["bare_cpu_us"]
    out["rate_ratio"] = out["runner_trades_s"] / out["bare_trades_s"]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=100_000, help="trades in the hot-path corpus")
    parser.add_argument("--e2e-trades", type=int, default=30_000, help="trades per end-to-end run")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (best CPU / median e2e)")
    parser.add_argument("--streams", default=DEFAULT_STREAMS, help="comma list of stream ids")
    parser.add_argument(
        "--redundancy", action="store_true", help="after the hot path, redundancy 2 vs 1 instead of part 2"
    )
    args = parser.parse_args(argv)
    streams = parse_streams(args.streams)
    print(f"python {sys.version.split()[0]}; {len(BASES)} symbols per stream")
    print(
        f"\nhot path, {args.trades} trades, CPU best of {args.repeat}"
        " (runner = receive time + FrameIngest: stats, decode, de-duplicate, on_trades)"
    )
    print(
        f"{'stream':16} {'frames':>8} {'decode ns/frame':>16} {'runner ns/frame':>16} {'runner/decode':>14}"
        f" {'+ids ns/frame':>14} {'ids ns/trade':>13} {'+ids/runner':>12}"
    )
    for stream in streams:
        h = bench_hot_path(stream, args.trades, args.repeat)
        print(
            f"{stream:16} {h['frames']:>8.0f} {h['decode_ns_frame']:>16,.0f} "
            f"{h['runner_ns_frame']:>16,.0f} {h['ratio']:>14.2f} {h['ids_ns_frame']:>14,.0f} "
            f"{h['ids_ns_trade']:>13,.0f} {h['ids_ratio']:>12.2f}"
        )
    if args.redundancy:
        print(f"\nredundancy 2 vs 1, {args.e2e_trades} trades per run, CPU median of {args.repeat}")
        print("(CPU includes the local server, which sends every trade twice with redundancy 2;")
        print(" memory: Python allocations held at the end of one traced run, server included)")
        print(
            f"{'stream':16} {'CPU us/tr r1':>13} {'CPU us/tr r2':>13} {'r2/r1':>7} {'MB r1':>7} {'MB r2':>7}"
        )
        for stream in streams:
            x = asyncio.run(bench_redundancy(stream, args.e2e_trades, args.repeat))
            print(
                f"{stream:16} {x['cpu1']:>13.2f} {x['cpu2']:>13.2f} {x['cpu2'] / x['cpu1']:>7.2f} "
                f"{x['mem1']:>7.1f} {x['mem2']:>7.1f}"
            )
        return 0
    print(f"\nend to end over loopback, {args.e2e_trades} trades per run, median of {args.repeat}")
    print("(one process: the local server's encoding and sending are in every figure)")
    print(
        f"{'stream':16} {'bare trades/s':>14} {'runner trades/s':>16} {'bare CPU us/tr':>15} "
        f"{'runner CPU us/tr':>17} {'CPU runner/bare':>16} {'rate runner/bare':>17}"
    )
    for stream in streams:
        e = asyncio.run(bench_end_to_end(stream, args.e2e_trades, args.repeat))
        if isinstance(e, str):
            print(f"{stream:16} {e}")
            continue
        print(
            f"{stream:16} {e['bare_trades_s']:>14,.0f} {e['runner_trades_s']:>16,.0f} "
            f"{e['bare_cpu_us']:>15.2f} {e['runner_cpu_us']:>17.2f} {e['cpu_ratio']:>16.2f} "
            f"{e['rate_ratio']:>17.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
