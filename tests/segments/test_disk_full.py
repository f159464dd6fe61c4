"""A full disk while trades flow (issue 11): on a real small file system (tmpfs, mounted for the
test; skipped where mounting is not permitted) the disk fills and frees while the writers
write. Every trade is on disk or inside a journaled ``dropped`` span with exact bounds,
writing resumes without a restart, and the log stays bounded."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.store import table_rows

from pumpwatch.recorder.pending_windows import pending_windows
from pumpwatch.segments import SegmentWriter
from pumpwatch.segments.diskfault import Backoff, is_disk_full
from pumpwatch.segments.diskwatch import DiskWatch, free_bytes
from pumpwatch.segments.frames import FrameWriter, frame_path, iter_frames
from pumpwatch.segments.journal import read_events
from pumpwatch.segments.paths import list_segments, segment_path
from pumpwatch.segments.reader import read_segment
from pumpwatch.segments.recovery import recover
from pumpwatch.segments.schema import TradeRow

STREAM = "okx_spot"
CYCLES = 5 if os.environ.get("PUMPWATCH_SOAK") == "long" else 1  # fill-and-free cycles
HOUR_US = 3_600_000_000


def mount_tmpfs(path: Path, size_mb: int) -> bool:
    """Mount a tmpfs of `size_mb` at `path`; False where that is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB file system of its own (the test skips where it cannot mount one)."""
    yield from _mounted(tmp_path / "fs", 8)


@pytest.fixture
def small_fs_16(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB file system of its own."""
    yield from _mounted(tmp_path / "fs", 16)


def _mounted(root: Path, size_mb: int) -> Iterator[Path]:
    if not mount_tmpfs(root, size_mb):
        pytest.skip("cannot mount a tmpfs here (not root, or no mount permission)")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], capture_output=True, timeout=10)


def fill_disk(root: Path) -> Path:
    """Write a ballast file until the file system is full; returns it."""
    ballast = root / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o644)
    chunk = b"\xa5" * 65536
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                chunk = chunk[: len(chunk) // 2]
                if len(chunk) < 512:
                    break
    finally:
        os.close(fd)
    return ballast


class Feed:
    """Trades with unique ids and receive times from the wall clock."""

    def __init__(self) -> None:
        self.sent: list[TradeRow] = []

    def rows(self, n: int) -> list[TradeRow]:
        now = time.time_ns() // 1000
        out: list[TradeRow] = []
        for i in range(n):
            k = len(self.sent) + i
            base = ("AAA", "BBB", "CCC")[k % 3]
            out.append(
                (now - 2000 + i, now + i, f"{base}USDT", base, "USDT", 1.0 + k % 101, 0.5, "buy", str(k))
            )
        self.sent.extend(out)
        return out


def stored_rows(data_dir: Path) -> list[TradeRow]:
    rows: list[TradeRow] = []
    for seg in list_segments(data_dir, [STREAM]):
        for batch in read_segment(seg, -(2**62), 2**62):
            rows.extend(table_rows(batch))
    return rows


def dropped_events(data_dir: Path) -> list[dict]:
    return [e for e in read_events(data_dir, STREAM) if e["event"] == "dropped"]


def assert_each_trade_stored_or_in_a_gap(data_dir: Path, sent: list[TradeRow]) -> tuple[int, int]:
    """Every sent trade is on disk exactly once or inside a ``dropped`` span (exact bounds and
    counts); returns (stored, dropped)."""
    stored = stored_rows(data_dir)
    ids = [r[8] for r in stored]
    assert len(ids) == len(set(ids)), "a trade is stored twice"
    on_disk = set(ids)
    missing = [r for r in sent if r[8] not in on_disk]
    events = dropped_events(data_dir)
    assert sum(e["rows"] for e in events) == len(missing)
    for r in missing:
        assert any(e["first_recv_us"] <= r[1] <= e["last_recv_us"] for e in events), r
        assert any(e["first_time_us"] <= r[0] <= e["last_time_us"] for e in events), r
    for e in events:  # exact: each bound is a dropped row's own time
        inside = [r for r in missing if e["first_recv_us"] <= r[1] <= e["last_recv_us"]]
        assert min(r[1] for r in inside) == e["first_recv_us"]
        assert max(r[1] for r in inside) == e["last_recv_us"]
    assert len(stored) + len(missing) == len(sent)
    return len(stored), len(missing)


def test_disk_errors_are_told_apart() -> None:
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError("IOError: [Errno 28] No space left on device"))
    assert not is_disk_full(OSError(errno.ENOENT, "gone"))


@pytest.mark.soak
def test_writer_fills_the_disk_keeps_rows_and_resumes(small_fs: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="pumpwatch")
    feed = Feed()
    w = SegmentWriter(
        small_fs,
        STREAM,
        flush_interval_s=0.05,
        max_backlog_bytes=400_000,
        retry=Backoff(0.02, 0.1),
        close_timeout_s=2.0,
    )

    def pump(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            w.append(feed.rows(100))  # ~10 k trades/s
            time.sleep(0.01)

    pump(0.5)
    w.flush()
    assert w.disk_fault is None
    for _ in range(CYCLES):
        ballast = fill_disk(small_fs)
        pump(1.5)
        assert w.disk_fault is not None  # it saw the full disk ...
        assert w.rows_lost > 0  # ... and the memory bound made it drop the oldest rows
        ballast.unlink()
        pump(0.5)
        deadline = time.monotonic() + 10
        while w.disk_fault is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        w.flush()  # resumed by itself: no restart, no error
        assert w.disk_fault is None
    w.close()
    assert not [s for s in list_segments(small_fs, [STREAM]) if not s.sealed], "every file sealed"
    stored, dropped = assert_each_trade_stored_or_in_a_gap(small_fs, feed.sent)
    assert dropped == w.rows_lost > 0 and stored > 0
    tail = {r[8] for r in stored_rows(small_fs)}
    assert all(r[8] in tail for r in feed.sent[-3000:]), "rows after the disk freed are all stored"
    writer_lines = [r for r in caplog.records if r.name.startswith("pumpwatch.segments")]
    # per fill-and-free cycle: entering the state, the first drop, the loss journaled, leaving it
    assert sum(r.levelno >= logging.WARNING for r in writer_lines) <= 5 * CYCLES + 1, [
        r.getMessage() for r in writer_lines
    ]
    assert all(r.exc_info is None for r in writer_lines), "no traceback"


def test_close_while_the_disk_is_full_is_bounded_and_journals_the_loss(small_fs: Path) -> None:
    feed = Feed()
    w = SegmentWriter(small_fs, STREAM, flush_interval_s=0.05, retry=Backoff(0.02, 0.1))
    w.append(feed.rows(500))
    w.flush()
    fill_disk(small_fs)
    for _ in range(20):
        w.append(feed.rows(200))
        time.sleep(0.01)
    t0 = time.monotonic()
    w.close(timeout_s=0.5)
    assert time.monotonic() - t0 < 3.0
    assert w.rows_lost > 0
    with contextlib.suppress(FileNotFoundError):
        (small_fs / "ballast").unlink()
    recover(small_fs, [STREAM])  # what close could not seal on a full disk is a valid prefix
    assert_each_trade_stored_or_in_a_gap(small_fs, feed.sent)


def test_frame_journal_is_bounded_and_resumes(small_fs: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="pumpwatch")
    w = FrameWriter(small_fs, STREAM, flush_interval_s=0.05, max_backlog_bytes=200_000)
    sent: list[tuple[int, str]] = []

    def pump(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            now = time.time_ns() // 1000
            for i in range(50):
                frame = f'{{"n":{len(sent)},"pad":"{os.urandom(24).hex()}"}}'
                sent.append((now + i, frame))
                w.append(now + i, frame)
            time.sleep(0.005)

    pump(0.3)
    w.flush()
    ballast = fill_disk(small_fs)
    pump(1.0)
    assert w.frames_lost > 0
    ballast.unlink()
    pump(0.3)
    w.close()
    on_disk = {f for _, f in iter_frames(small_fs, STREAM)}
    missing = [(r, f) for r, f in sent if f not in on_disk]
    events = [e for e in dropped_events(small_fs) if e["what"] == "frames"]
    assert sum(e["rows"] for e in events) == len(missing) == w.frames_lost
    assert all(any(e["first_recv_us"] <= r <= e["last_recv_us"] for e in events) for r, _ in missing)
    assert all(f in on_disk for _, f in sent[-2000:]), "frames after the disk freed are all written"
    lines = [
        r for r in caplog.records if r.name.startswith("pumpwatch.segments") and r.levelno >= logging.WARNING
    ]
    assert len(lines) <= 5, [r.getMessage() for r in lines]


def test_continuous_eviction_keeps_the_floor_while_writing(small_fs_16: Path) -> None:
    root = small_fs_16
    hour0 = (time.time_ns() // 1000 // HOUR_US - 30) * HOUR_US  # a day and more ago
    old_segments = [segment_path(root, "binance_spot", hour0 + h * HOUR_US, sealed=True) for h in range(7)]
    old_frames = [frame_path(root, "binance_spot", hour0 + h * HOUR_US) for h in range(4)]
    for path in old_segments + old_frames:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(2**20))
    windows = [(hour0 + h * HOUR_US + 1800 * 10**6, hour0 + h * HOUR_US + 1840 * 10**6) for h in (3, 4)]
    floor = 4 * 2**20
    watch = DiskWatch(root, min_free_bytes=floor, protected_spans=lambda: windows, interval_s=0.2).start()
    feed = Feed()
    w = SegmentWriter(root, STREAM, flush_interval_s=0.05, on_flush=watch.check)
    lowest = free_bytes(root)
    ballast = root / "other-app.bin"
    try:
        with ballast.open("wb") as other:  # another program fills the disk: 7 MB in ~3 s
            for _ in range(28):
                w.append(feed.rows(200))
                other.write(os.urandom(256 * 1024))
                other.flush()
                watch.check()
                lowest = min(lowest, free_bytes(root))
                time.sleep(0.1)
        w.flush()
    finally:
        w.close()
        watch.stop()
    assert w.disk_fault is None and w.rows_lost == 0
    assert lowest >= floor - 2**20, "free disk never fell more than one ballast chunk under the floor"
    assert free_bytes(root) >= floor
    assert not any(p.exists() for p in old_frames[:-1]), "frames go first"
    assert old_frames[-1].exists(), "the newest frame file of a stream (the open one) is kept"
    evicted = [p for p in old_segments if not p.exists()]
    evictable = old_segments[:3] + old_segments[5:6]  # 3 and 4 hold windows, 6 is the newest
    assert evicted == evictable[: len(evicted)] and evicted, "then the oldest segments"
    assert old_segments[3].exists() and old_segments[4].exists(), "a pending extraction's window is kept"
    assert old_segments[-1].exists(), "the newest file of a stream is kept"
    assert len(stored_rows(root)) == len(feed.sent)


def test_pending_extraction_windows_are_read_from_the_trigger_state(tmp_path: Path) -> None:
    (tmp_path / "upbit").mkdir()
    (tmp_path / "upbit" / "pending.json").write_bytes(
        b'[{"symbol":"ABC","trigger_us":1000000000,"due_us":1030000000,"source":{},"attempts":0}]'
    )
    assert pending_windows(tmp_path, 20.0, 20.0) == [(980_000_000, 1_020_000_000)]
    (tmp_path / "upbit" / "pending.json").write_bytes(b"not json")
    assert pending_windows(tmp_path, 20.0, 20.0) == []


def test_sealing_at_the_hour_on_a_full_disk_loses_and_duplicates_nothing(small_fs: Path) -> None:
    hour = (time.time_ns() // 1000 // HOUR_US - 2) * HOUR_US
    clock = [hour + 1800 * 10**6]
    w = SegmentWriter(
        small_fs, STREAM, flush_interval_s=0.05, retry=Backoff(0.02, 0.1), clock_us=lambda: clock[0]
    )

    def rows(start_us: int, n: int, k0: int) -> list[TradeRow]:
        return [
            (start_us + i, start_us + i, "AAAUSDT", "AAA", "USDT", 1.0 + i % 7, 0.5, "buy", str(k0 + i))
            for i in range(n)
        ]

    sent = rows(hour + 1000, 3000, 0)
    for k in range(0, 3000, 100):
        w.append(sent[k : k + 100])
        w.flush()  # 30 small batches: sealing would compact (a second copy of the file)
    ballast = fill_disk(small_fs)
    later = rows(hour + HOUR_US + 1000, 500, 10_000)  # the next hour: rotation seals the first file
    sent += later
    w.append(later)
    time.sleep(0.5)
    assert w.disk_fault is not None
    ballast.unlink()
    clock[0] = hour + HOUR_US + 60 * 10**6
    deadline = time.monotonic() + 10
    while w.disk_fault is not None and time.monotonic() < deadline:  # it retries on its own
        time.sleep(0.02)
    w.flush()
    w.close()
    assert w.rows_lost == 0
    assert not [s for s in list_segments(small_fs, [STREAM]) if not s.sealed]
    stored, dropped = assert_each_trade_stored_or_in_a_gap(small_fs, sent)
    assert (stored, dropped) == (3500, 0)


def test_status_counts_dropped_rows_as_gaps(tmp_path: Path) -> None:
    from pumpwatch.segments.journal import EventJournal
    from pumpwatch.segments.status import journal_status

    now = time.time_ns() // 1000
    with EventJournal(tmp_path, STREAM) as j:
        j.record("start", ts_us=now - 60_000_000, pid=1)
        j.record("connected", conn="c", ts_us=now - 59_000_000, url="ws://x")
        j.record("subscribed", conn="c", ts_us=now - 59_000_000, symbols=["AUSDT"], bases=["A"])
        j.record(
            "dropped",
            ts_us=now - 10_000_000,
            what="rows",
            reason="disk full",
            rows=7,
            first_recv_us=now - 30_000_000,
            last_recv_us=now - 20_000_000,
            first_time_us=now - 30_000_100,
            last_time_us=now - 20_000_100,
        )
        j.record("alive", ts_us=now - 1_000_000)
    out = journal_status(tmp_path, STREAM, now, 10.0, True)
    assert out["rows_dropped_24h"] == 7
    assert out["gaps_24h"][-1] == [now - 30_000_000, now - 20_000_000 + 1]  # after the first second


def test_a_stopped_writer_raises_a_fresh_error_each_time(tmp_path: Path, monkeypatch) -> None:
    # the 386 MB of stderr: one stored exception re-raised, its traceback growing
    from pumpwatch.errors import StoreError

    def broken(self: SegmentWriter, closing: bool) -> None:
        raise RuntimeError("a bug in the writer thread")

    monkeypatch.setattr(SegmentWriter, "_cycle", broken)
    w = SegmentWriter(tmp_path, STREAM, flush_interval_s=0.02)
    w.append(Feed().rows(1))
    deadline = time.monotonic() + 5
    while w.failed is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.failed is not None
    seen = []
    for _ in range(200):
        w.append(Feed().rows(1))  # dropped and journaled, never raising into the feed
        try:
            w.flush()
        except StoreError as exc:
            seen.append(exc)
    assert len(seen) == 200 and len({id(e) for e in seen}) == 200
    depth = [len(__import__("traceback").extract_tb(e.__traceback__)) for e in seen]
    assert max(depth) == min(depth) and all(e.__context__ is None for e in seen)
    with contextlib.suppress(StoreError):
        w.close()
    assert w.rows_lost == 201


def test_a_disk_freed_only_in_part_drains_the_backlog_piece_by_piece(small_fs: Path) -> None:
    # review of issue 11: the retry wrote the whole backlog and fsynced once, and probed for
    # 1 MB first: with less room than that, nothing was ever written until the bound dropped it
    feed = Feed()
    w = SegmentWriter(
        small_fs,
        STREAM,
        flush_interval_s=0.05,
        flush_rows=2000,
        max_backlog_bytes=64 * 2**20,
        retry=Backoff(0.02, 0.1),
        reserve=False,
    )
    w.append(feed.rows(100))
    w.flush()
    ballast = fill_disk(small_fs)
    for _ in range(60):
        w.append(feed.rows(1000))  # ~4 MB of Arrow rows wait in memory
        time.sleep(0.005)
    assert wait_until(lambda: w.disk_fault is not None)
    waiting = w.queue_rows
    written = w.rows_written
    os.truncate(ballast, max(0, ballast.stat().st_size - 400 * 1024))  # room for a part only
    assert wait_until(lambda: w.rows_written >= written + 5000, 10.0), (w.rows_written, written, waiting)
    assert w.rows_lost == 0
    ballast.unlink()
    assert wait_until(lambda: w.queue_rows == 0, 20.0)
    w.close()
    recover(small_fs, [STREAM])
    assert assert_each_trade_stored_or_in_a_gap(small_fs, feed.sent) == (len(feed.sent), 0)


def wait_until(cond, timeout_s: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(cond())
