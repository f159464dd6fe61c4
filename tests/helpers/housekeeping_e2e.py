"""Helpers of the `record` + archive (+ upload) end-to-end tests: the processes of a running
`record`, a seal forced by stopping one worker (it flushes and seals its hours; the supervisor
restarts it), and row-for-row comparison of an archive file with its segments."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from pumpwatch.segments.archive import archive_path
from pumpwatch.segments.paths import HourlyFile, hour_start_us, list_segments
from pumpwatch.segments.reader import read_segment
from pumpwatch.segments.schema import TRADE_SCHEMA

KEYS = ["base", "time", "recv_time", "symbol", "trade_id"]


def children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def child_with(pid: int, *needles: str) -> psutil.Process | None:
    """The descendant of `pid` whose command line holds every needle."""
    for p in children(pid):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if all(n in cmd for n in needles):
            return p
    return None


def worker(pid: int, exchange: str) -> psutil.Process | None:
    return child_with(pid, "pumpwatch.recorder.worker", f"--exchange {exchange}")


def housekeeper(pid: int) -> psutil.Process | None:
    return child_with(pid, "pumpwatch.recorder.housekeeping")


def stop_worker(pid: int, exchange: str) -> int:
    """SIGTERM one worker of the `record` at `pid` (it seals its open hours); its pid."""
    w = worker(pid, exchange)
    assert w is not None, f"no {exchange} worker under {pid}"
    os.kill(w.pid, signal.SIGTERM)
    return w.pid


def sealed(data_dir: Path, streams: list[str]) -> list[HourlyFile]:
    return [f for f in list_segments(data_dir, streams) if f.sealed]


def hour_rows(files: list[HourlyFile]) -> pa.Table:
    batches = [b for f in files for b in read_segment(f, -(2**62), 2**62)]
    return pa.Table.from_batches(batches, schema=TRADE_SCHEMA)


def _sorted_rows(table: pa.Table) -> list[dict[str, Any]]:
    table = table.select(list(TRADE_SCHEMA.names)).cast(TRADE_SCHEMA)
    return table.sort_by([(k, "ascending") for k in KEYS]).to_pylist()


def archive_agrees(data_dir: Path, stream: str, hour_us: int) -> tuple[bool, str]:
    """Whether the archive file of `stream`'s hour holds exactly the rows of that hour's sealed
    segments (row for row, all columns); a reason when not."""
    path = archive_path(data_dir, stream, hour_us)
    if not path.is_file():
        return False, f"{path} missing"
    files = [f for f in sealed(data_dir, [stream]) if hour_start_us(f.start_us) == hour_start_us(hour_us)]
    want = _sorted_rows(hour_rows(files))
    got = _sorted_rows(pq.read_table(path, schema=TRADE_SCHEMA))
    if got != want:
        return False, f"{path}: {len(got)} rows, segments {len(want)}"
    return True, ""


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)
