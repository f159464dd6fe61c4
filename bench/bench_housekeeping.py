"""The archive (and uploader) inside `record`: supervisor RSS, the housekeeping child's RSS and
CPU, idle and per sealed stream-hour, and the delay from a seal to its archive file.

Runs the real `pumpwatch record` (supervisor, one worker per exchange, the housekeeping child)
against the local exchanges of every available stream, trades for a while, measures, then
forces a seal of every stream by stopping each worker (it flushes and seals; the supervisor
restarts it) and waits until every sealed hour is archived, row for row.

    python bench/bench_housekeeping.py [--trade-s 10] [--idle-s 60]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

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
        hk = housekeeper(rec.proc.pid)
        if hk is None:
            print("no housekeeping child (storage.archive off and no remote store)")
            await rec.terminate()
            return
        print(f"housekeeper RSS {rss_mb(hk.pid):.1f} MB, CPU since start {cpu_s(hk.pid):.2f} s (imports)")
        c0 = cpu_s(hk.pid)
        await asyncio.sleep(idle_s)
        c1 = cpu_s(hk.pid)
        print(f"housekeeper idle CPU {c1 - c0:.3f} s per {idle_s:g} s")
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
        c2 = cpu_s(hk.pid)
        print(
            f"{len(files)} sealed stream-hours archived {waited:.1f} s after the last seal; housekeeper CPU "
            f"{c2 - c1:.3f} s ({(c2 - c1) / len(files) * 1000:.1f} ms per stream-hour, idle rounds included)"
        )
        print(f"after: supervisor RSS {rss_mb(rec.proc.pid):.1f} MB, housekeeper RSS {rss_mb(hk.pid):.1f} MB")
        await rec.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trade-s", type=float, default=10.0)
    parser.add_argument("--idle-s", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp), args.trade_s, args.idle_s))


if __name__ == "__main__":
    main()
