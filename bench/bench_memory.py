"""Memory of `pumpwatch record` over time: all twelve streams at 1 k trades/s each.

    .venv/bin/python bench/bench_memory.py [--minutes 10] [--rate 1000] [--sample-s 5] [--entry cli|lean]
        [--workers 1] [--streams binance_spot,...] [--remote]

Local exchanges (their real wire formats) for every stream run in this process; `pumpwatch
record` runs as a real subprocess (supervisor + `--workers` worker processes, 0 = one per
exchange, + its housekeeping children), each process's RSS reported under its role. Without a
remote store the housekeeper is on demand (started for sealed hours, gone when idle), so a
short run shows no housekeeping process; `--remote` sets ``remote.url`` to a local S3 server
(moto's server mode on 127.0.0.1, fake credentials), which keeps the housekeeper resident
(uploads, heartbeats).
Every `sample_s` the RSS of the supervisor and each worker is sampled; at the end a least-squares
line over the second half of the run (after warm-up) gives the trend in MB per hour, next to
the peak of the total. Target: steady, total ≤ 200 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import yaml
from bench_live import Publisher, make_sim, rows_on_disk, write_config

STREAMS = [
    f"{ex}_{m}" for ex in ("binance", "bybit", "okx", "gate", "kucoin", "phemex") for m in ("spot", "futures")
]
TARGET_MB = 200.0


class PerSymbolPublisher(Publisher):
    """`Publisher` with ids counting up by one per symbol, as real exchanges number trades (a
    shared counter looks like holes to the runner's per-symbol id check, whose warnings would
    flood the log and cost the worker CPU the real feed does not cost)."""

    def tick(self, n: int) -> None:
        now_us = time.time_ns() // 1000
        per = max(1, n // len(self.insts))
        rows = []
        for inst in self.insts:
            ids = self.per_symbol.setdefault(inst.symbol, itertools.count(1))
            for _ in range(per):
                k = next(ids)
                qty = inst.multiplier * (1 + k % 5) if inst.multiplier != 1.0 else 0.001 * (1 + k % 5)
                rows.append((now_us, now_us, inst.symbol, inst.base, "USDT", 10.0 + (k % 50) * 0.01, qty,
                             "buy" if k % 2 else "sell", str(k)))  # fmt: skip
        self.sim.publish(rows)
        self.published += len(rows)

    per_symbol: dict[str, itertools.count[int]]

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.per_symbol = {}


def _role(cmd: list[str]) -> str:
    """A process's role from its command line: the worker's group, a child's module, else the supervisor."""
    for flag in ("--exchange", "--name"):
        if flag in cmd:
            return "worker-" + cmd[cmd.index(flag) + 1]
    joined = " ".join(cmd)
    for word in ("housekeep", "symbols", "archive", "prune"):
        if word in joined:
            return word
    return "supervisor"


def tree_cpu_s(proc: psutil.Process) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each role of the tree."""
    out: dict[str, float] = {}
    for p in [proc, *proc.children(recursive=True)]:
        try:
            role, t = _role(p.cmdline()), p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        out[role] = out.get(role, 0.0) + t.user + t.system
    return out


def tree_rss_mb(proc: psutil.Process) -> tuple[float, dict[str, float], float]:
    """Total RSS of `proc` and its children, RSS per process (by command role), total PSS.

    RSS counts the shared libraries (libarrow, libpython, numpy...) once per process; PSS
    splits each shared page between the processes mapping it, so its sum is the physical
    memory the tree really holds.
    """
    per: dict[str, float] = {}
    pss = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            cmd = p.cmdline()
            info = p.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        role = _role(cmd)
        per[role] = per.get(role, 0.0) + info.rss / 2**20
        pss += getattr(info, "pss", 0) / 2**20
    return sum(per.values()), per, pss


def start_local_s3() -> tuple[Any, str]:
    """A moto S3 server on 127.0.0.1 with an empty bucket, and fake AWS credentials in this
    process's environment (inherited by `record`): nothing can reach AWS."""
    import os

    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN"):
        os.environ.pop(name, None)
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE="/nonexistent/aws-config",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent/aws-credentials",
    )
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="pumpwatch-bench")
    return server, endpoint


async def bench(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="pw-bench-mem-"))
    sims, insts = {}, {}
    global STREAMS
    STREAMS = args.streams.split(",")
    for stream in STREAMS:
        sims[stream], insts[stream] = make_sim(stream, args.symbols)
        await sims[stream].start()
    config = write_config(tmp, sims, insts, status_s=60.0)
    cfg = yaml.safe_load(config.read_text())
    cfg["recorder"]["workers"] = args.workers
    s3 = start_local_s3() if args.remote else None
    if s3 is not None:
        cfg["remote"] = {"url": "s3://pumpwatch-bench/rec", "endpoint_url": s3[1], "recorder_id": "bench"}
    cfg["logging"] = {"level": "WARNING", "file": True}  # into data/logs, where the id holes are counted
    config.write_text(yaml.safe_dump(cfg))
    # "cli" is what `pumpwatch record` runs; "lean" the supervisor's own entry point (no typer/pydantic)
    entry = ["pumpwatch", "record"] if args.entry == "cli" else ["pumpwatch.recorder.supervisor"]
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", *entry, "--config", str(config))
    root = psutil.Process(proc.pid)
    deadline = time.monotonic() + 60
    while not all(any(s.subscribed for s in sim.sessions()) for sim in sims.values()):
        if time.monotonic() > deadline:
            raise SystemExit("record did not subscribe every stream within 60 s")
        await asyncio.sleep(0.1)
    pubs = [PerSymbolPublisher(sims[s], insts[s]) for s in STREAMS]
    duration_s = args.minutes * 60
    print(f"{len(STREAMS)} streams x {args.rate:,}/s, {args.minutes:g} min, {args.entry}, "
          f"recorder.workers={args.workers}, remote {'on' if s3 else 'off'}; data in {tmp}")  # fmt: skip
    total, per, pss = tree_rss_mb(root)
    roles = " ".join(f"{k}={v:.0f}" for k, v in sorted(per.items()))
    print(f"subscribed, no trade yet: total={total:6.1f} MB (PSS {pss:.1f} MB)  {roles}", flush=True)
    samples: list[tuple[float, float]] = []
    pss_samples: list[float] = []
    per_first: dict[str, float] = {}
    per_peak: dict[str, float] = {}
    t0 = time.monotonic()
    cpu0 = tree_cpu_s(root)
    publishers = [asyncio.create_task(p.run(args.rate, duration_s)) for p in pubs]
    while time.monotonic() - t0 < duration_s:
        await asyncio.sleep(args.sample_s)
        total, per, pss = tree_rss_mb(root)
        elapsed = time.monotonic() - t0
        samples.append((elapsed, total))
        pss_samples.append(pss)
        for role, role_mb in per.items():
            per_first.setdefault(role, role_mb)
            per_peak[role] = max(per_peak.get(role, 0.0), role_mb)
        roles = " ".join(f"{k}={v:.0f}" for k, v in sorted(per.items()))
        print(f"t={elapsed:6.0f}s total={total:6.1f} MB (PSS {pss:6.1f})  {roles}", flush=True)
    rates = await asyncio.gather(*publishers)
    cpu1, wall_s = tree_cpu_s(root), time.monotonic() - t0
    proc.send_signal(signal.SIGTERM)
    rc = await proc.wait()
    for sim in sims.values():
        await sim.close()
    if s3 is not None:
        s3[0].stop()
    sent = sum(len(sim.sent_rows()) for sim in sims.values())
    stored = rows_on_disk(tmp / "data", STREAMS)
    t = np.array([s[0] for s in samples])
    mb = np.array([s[1] for s in samples])
    half = t >= t[-1] / 2
    slope_mb_per_s = float(np.polyfit(t[half], mb[half], 1)[0]) if half.sum() >= 2 else float("nan")
    holes = sum(
        line.count("never arrived")
        for log in (tmp / "data" / "logs").glob("worker-*.log")
        for line in log.read_text(errors="replace").splitlines()
    )
    print(f"id holes logged by the workers: {holes} (0 = nothing lost on the way in)")
    print(f"record exit code {rc}; rows on disk {stored:,} of {sent:,} sent; achieved "
          f"{sum(rates):,.0f} trades/s in total")  # fmt: skip
    print(f"peak total RSS {mb.max():.1f} MB = {mb.max() / TARGET_MB:.2f} x the {TARGET_MB:.0f} MB target; "
          f"mean of the second half {mb[half].mean():.1f} MB")  # fmt: skip
    procs = "; ".join(
        f"{r} {per_first[r]:.0f} / {per.get(r, 0.0):.0f} / {per_peak[r]:.0f}" for r in sorted(per_peak)
    )
    print(f"per process RSS, first sample / last / peak (MB): {procs}")
    cpu = "; ".join(f"{r} {(cpu1[r] - cpu0.get(r, 0.0)) / wall_s * 100:.0f}%" for r in sorted(cpu1))
    print(f"CPU while trading, % of one core: {cpu}")
    print(f"PSS total (shared pages split): peak {max(pss_samples):.1f} MB, last {pss_samples[-1]:.1f} MB")
    per_hour = slope_mb_per_s * 3600
    share = per_hour / max(float(mb[half].mean()), 1e-9) * 100
    print(f"trend over the second half: {per_hour:+.1f} MB/hour ({share:+.1f}% of the level per hour)")
    return 0 if rc == 0 and stored >= sent and holes == 0 else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="trades/s per stream")
    parser.add_argument("--workers", type=int, default=1, help="recorder.workers (0: one per exchange)")
    parser.add_argument("--streams", default=",".join(STREAMS), help="comma list (default: all twelve)")
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument(
        "--entry",
        choices=["cli", "lean"],
        default="cli",
        help="start `pumpwatch record` (cli) or `python -m pumpwatch.recorder.supervisor` (lean)",
    )
    parser.add_argument(
        "--remote", action="store_true", help="remote.url on a local S3 server (resident housekeeper)"
    )
    raise SystemExit(asyncio.run(bench(parser.parse_args())))


if __name__ == "__main__":
    main()
