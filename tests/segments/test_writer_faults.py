"""The segment writer's faults after the review of issue 11: a bug in its thread, a disk that
frees only part of the room, a failed rename after compaction, a failing `recover` of cut-back
files, and a full disk simulated by injected ENOSPC (runs everywhere, unlike the tmpfs tests
of ``test_disk_full.py``). Every trade is on disk exactly once or inside a journaled
``dropped`` span with exact bounds."""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_disk_full import STREAM, Feed, assert_each_trade_stored_or_in_a_gap, dropped_events, stored_rows

import pumpwatch.segments.checksum as checksum
import pumpwatch.segments.hourfile as hourfile
import pumpwatch.segments.recovery as recovery
from pumpwatch.errors import StoreError
from pumpwatch.segments import SegmentWriter
from pumpwatch.segments.diskfault import Backoff
from pumpwatch.segments.paths import list_segments
from pumpwatch.segments.recovery import recover


class InjectedDisk:
    """A file system that refuses segment writes with ENOSPC: always while `full`, and for any
    batch that would take an open file past `file_limit` bytes (a disk with only that much room
    per retry). The batch's bytes reach the file before the error, as a real short write's do."""

    def __init__(self) -> None:
        self.full = False
        self.file_limit: int | None = None
        self.refused = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        orig = checksum.ChecksumFileWriter.write_batch
        disk = self

        def write_batch(writer: checksum.ChecksumFileWriter, batch, metadata) -> None:
            if disk.full:
                disk.refused += 1
                raise OSError(errno.ENOSPC, "No space left on device")
            orig(writer, batch, metadata)
            if disk.file_limit is not None and writer.tell() > disk.file_limit:
                disk.refused += 1
                raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(checksum.ChecksumFileWriter, "write_batch", write_batch)


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[InjectedDisk]:
    d = InjectedDisk()
    d.install(monkeypatch)
    yield d


def wait_for(cond, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(cond())


def test_injected_full_disk_fills_frees_resumes_without_duplicates(tmp_path: Path, disk, caplog) -> None:
    caplog.set_level(logging.INFO, logger="pumpwatch")
    feed = Feed()
    w = SegmentWriter(
        tmp_path,
        STREAM,
        flush_interval_s=0.05,
        max_backlog_bytes=300_000,
        retry=Backoff(0.02, 0.1),
        reserve=False,
        fsync=False,
    )

    def pump(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            w.append(feed.rows(100))
            time.sleep(0.01)

    pump(0.3)
    w.flush()
    for _ in range(2):
        disk.full = True
        pump(1.0)
        assert w.disk_fault is not None and w.rows_lost > 0
        disk.full = False
        pump(0.3)
        assert wait_for(lambda: w.disk_fault is None)
        w.flush()
    w.close()
    assert disk.refused > 0
    assert not [s for s in list_segments(tmp_path, [STREAM]) if not s.sealed], "every file sealed"
    stored, dropped = assert_each_trade_stored_or_in_a_gap(tmp_path, feed.sent)
    assert dropped == w.rows_lost > 0 and stored > 0
    assert {r[8] for r in feed.sent[-1000:]} <= {r[8] for r in stored_rows(tmp_path)}
    lines = [
        r for r in caplog.records if r.name.startswith("pumpwatch.segments") and r.levelno >= logging.WARNING
    ]
    assert len(lines) <= 5 * 2 + 1 and all(r.exc_info is None for r in lines)


def test_a_disk_with_room_for_part_of_the_backlog_drains_it_piece_by_piece(tmp_path: Path, disk) -> None:
    # review finding 3: the whole backlog was written, then fsynced once; ENOSPC part way cut the
    # file back to before all of it, so each retry failed while the room was under its size
    feed = Feed()
    w = SegmentWriter(
        tmp_path,
        STREAM,
        flush_interval_s=0.05,
        flush_rows=2000,
        max_backlog_bytes=20_000_000,
        retry=Backoff(0.02, 0.05),
        reserve=False,
        fsync=False,
    )
    w.progress_bytes = 64 * 1024
    w.append(feed.rows(100))
    w.flush()
    disk.full = True
    for _ in range(40):
        w.append(feed.rows(1000))
        time.sleep(0.005)
    assert wait_for(lambda: w.disk_fault is not None)
    backlog = w.queue_rows
    assert backlog > 30_000
    disk.full = False
    disk.file_limit = 200_000  # each retry finds room for a fraction of what waits
    assert wait_for(lambda: w.queue_rows == 0, 20.0), f"{w.queue_rows} rows still wait"
    disk.file_limit = None
    w.flush()
    w.close()
    assert w.rows_lost == 0
    recover(tmp_path, [STREAM])
    stored, dropped = assert_each_trade_stored_or_in_a_gap(tmp_path, feed.sent)
    assert (stored, dropped) == (len(feed.sent), 0)


def test_a_bug_in_the_writer_thread_is_reported_and_every_row_accounted(tmp_path: Path, monkeypatch) -> None:
    # review finding 1: a stopped writer used to drop every later trade silently (no journal,
    # queue_rows 0, rows_lost 0)
    feed = Feed()
    w = SegmentWriter(tmp_path, STREAM, flush_interval_s=0.05, reserve=False, fsync=False)
    w.append(feed.rows(300))
    w.flush()
    orig_add = hourfile.HourFile.add

    def add(self: hourfile.HourFile, batch) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(hourfile.HourFile, "add", add)
    w.append(feed.rows(200))
    assert wait_for(lambda: w.failed is not None)
    monkeypatch.setattr(hourfile.HourFile, "add", orig_add)
    for _ in range(5):
        w.append(feed.rows(50))  # never raises into the feed: dropped and journaled
    assert w.failed is not None and "a bug" in w.failed
    assert w.queue_rows == 0 and w.rows_lost == 450
    with pytest.raises(StoreError, match="a bug"):
        w.close()
    recover(tmp_path, [STREAM])  # the open file was closed at its last complete batch
    stored, dropped = assert_each_trade_stored_or_in_a_gap(tmp_path, feed.sent)
    assert (stored, dropped) == (300, 450)
    assert all(e["reason"] for e in dropped_events(tmp_path))


def test_a_failed_final_rename_after_compaction_neither_cuts_nor_duplicates(
    tmp_path: Path, monkeypatch
) -> None:
    # review finding 7: the compacted copy already replaced the open file; cutting it back to
    # the old length cut it mid-batch, and the batches of the next hour were written twice
    hour = (time.time_ns() // 1000 // 3_600_000_000 - 2) * 3_600_000_000
    clock = [hour + 1800 * 10**6]
    w = SegmentWriter(
        tmp_path,
        STREAM,
        flush_interval_s=0.05,
        retry=Backoff(0.02, 0.05),
        clock_us=lambda: clock[0],
        reserve=False,
        fsync=False,
    )

    def rows(start_us: int, n: int, k0: int) -> list:
        return [
            (start_us + i, start_us + i, "AAAUSDT", "AAA", "USDT", 1.0 + i % 7, 0.5, "buy", str(k0 + i))
            for i in range(n)
        ]

    sent = rows(hour + 1000, 3000, 0)
    for k in range(0, 3000, 100):
        w.append(sent[k : k + 100])
        w.flush()  # 30 small batches: sealing compacts
    real_rename = hourfile.os.rename
    failed: list[object] = []

    def rename(src, dst) -> None:
        if not failed and Path(dst).name[0].isdigit() and not Path(src).name.startswith("."):
            failed.append(dst)
            raise OSError(errno.EIO, "Input/output error")
        real_rename(src, dst)

    monkeypatch.setattr(hourfile.os, "rename", rename)
    # one cycle: rows of the open hour (written by the seal), then the next hour's (rotation)
    later = rows(hour + 2_000_000_000, 2000, 5_000) + rows(hour + 3_600_000_000 + 1000, 500, 10_000)
    sent += later
    w.append(later)
    clock[0] = hour + 3_600_000_000 + 60 * 10**6
    assert wait_for(lambda: bool(failed))
    assert wait_for(lambda: w.disk_fault is None and w.queue_rows == 0)
    w.close()
    recover(tmp_path, [STREAM])
    stored, dropped = assert_each_trade_stored_or_in_a_gap(tmp_path, sent)
    assert (stored, dropped) == (5500, 0)


def test_recover_raising_a_raw_oserror_does_not_stop_the_writer(tmp_path: Path, disk, monkeypatch) -> None:
    # review finding 6: `_seal_orphans` caught only StoreError, and ran outside the try of the
    # cycle: a raw OSError from `recover` stopped the writer for good
    def boom(*args, **kwargs):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(recovery, "recover", boom)
    feed = Feed()
    w = SegmentWriter(
        tmp_path, STREAM, flush_interval_s=0.05, retry=Backoff(0.02, 0.05), reserve=False, fsync=False
    )
    w.append(feed.rows(200))
    w.flush()
    disk.full = True
    w.append(feed.rows(200))
    assert wait_for(lambda: w.disk_fault is not None)
    disk.full = False
    assert wait_for(lambda: w.disk_fault is None and w.queue_rows == 0)
    w.append(feed.rows(200))
    w.flush()
    assert w.failed is None
    w.close()
    monkeypatch.undo()
    recover(tmp_path, [STREAM])
    assert assert_each_trade_stored_or_in_a_gap(tmp_path, feed.sent) == (600, 0)
