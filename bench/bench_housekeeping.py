"""The archive inside `record`: supervisor RSS, the housekeeping child's RSS and CPU, idle and
per sealed stream-hour, and the delay from a seal to its archive file.

Runs the real `pumpwatch record` (supervisor, one worker per exchange, the housekeeping child)
against the local exchanges of every available stream, trades for a while, measures, then
forces a seal of every stream by stopping each worker (it flushes and seals; the supervisor
restarts it) and waits until every sealed hour is archived, row for row. Without a remote store
the housekeeper is on demand (issue 12 §4): the benchmark checks that no housekeeping process
exists at rest, samples the one started for the seals while it lives, and checks it exits.

    python bench/bench_housekeeping.py [--trade-s 10] [--idle-s 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers.e2e import Market, Recorder, available_streams, poll, wait_on_disk
from helpers.housekeeping_e2e import (
    archive_agrees,
    cpu_s,
    housekeeper,
    rss_mb,
    sealed,
    stop_worker,
)

from pumpwatch.streams import split_stream


async def run(tmp: Path, trade_s: float, idle_s: float) -> None:
    streams = available_streams()
    data = tmp / "data"
    async with Market(streams) as market:
        rec = Recorder(market.write_config(tmp), tmp)
        await rec.start_listening(market, data, streams)
        assert rec.proc is not None
        await market.trade_for(trade_s, per_tick=10)
        await wait_on_disk(market, data)
        print(f"supervisor RSS {rss_mb(rec.proc.pid):.1f} MB")
        await asyncio.sleep(idle_s)
        hk = housekeeper(rec.proc.pid)
        state = "none (on demand: nothing to archive)" if hk is None else f"{rss_mb(hk.pid):.1f} MB"
        print(f"after {idle_s:g} s idle: housekeeping process {state}")
        seen: dict[int, dict[str, float]] = {}
        watcher = asyncio.create_task(_watch(rec.proc.pid, seen))
        for ex in sorted({split_stream(s)[0] for s in streams}):
            stop_worker(rec.proc.pid, ex)
        await poll(lambda: len(sealed(data, streams)) >= len(streams), 120, "not sealed")
        files = sealed(data, streams)
        t_seal = max(f.mtime_us for f in files) / 1e6
        await poll(
            lambda: all(archive_agrees(data, f.stream, f.start_us)[0] for f in files),
            120,
            "not archived",
            0.2,
        )
        waited = time.time() - t_seal
        t_archived = time.monotonic()
        await poll(lambda: housekeeper(rec.proc.pid) is None, 120, "the housekeeper stayed up", 0.1)
        gone_s = time.monotonic() - t_archived
        watcher.cancel()
        cpu = sum(v["cpu_s"] for v in seen.values())
        peak = max((v["rss_mb"] for v in seen.values()), default=0.0)
        print(
            f"{len(files)} sealed stream-hours archived {waited:.1f} s after the last seal by "
            f"{len(seen)} housekeeping process(es): CPU {cpu:.2f} s (imports included; "
            f"{cpu / len(files) * 1000:.0f} ms per stream-hour), peak RSS {peak:.1f} MB; "
            f"exited {gone_s:.1f} s after the last archive file"
        )
        print(f"after: supervisor RSS {rss_mb(rec.proc.pid):.1f} MB, housekeeping process: none")
        await rec.terminate()


async def _watch(pid: int, seen: dict[int, dict[str, float]]) -> None:
    """Sample each housekeeping child while it lives (CPU at the last look, peak RSS)."""
    while True:
        hk = housekeeper(pid)
        if hk is not None:
            with contextlib.suppress(psutil.Error):
                got = seen.setdefault(hk.pid, {"rss_mb": 0.0, "cpu_s": 0.0})
                got["rss_mb"] = max(got["rss_mb"], rss_mb(hk.pid))
                got["cpu_s"] = cpu_s(hk.pid)
        await asyncio.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trade-s", type=float, default=10.0)
    parser.add_argument("--idle-s", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp), args.trade_s, args.idle_s))


if __name__ == "__main__":
    main()
