"""Crash boundaries in the recorder: the bound a restarted worker journals for its crashed
predecessor (`crash_bound`), and one `record` per data directory (`lock_data_dir`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pumpwatch.recorder.supervisor import DataDirBusy, lock_data_dir
from pumpwatch.recorder.worker import crash_bound, newest_durable_us
from pumpwatch.segments.journal import EventJournal
from pumpwatch.segments.writer import SegmentWriter
from pumpwatch.timeunits import US_PER_S as S

STREAM = "binance_spot"
T0 = 1_773_145_800 * S


def _rows(n: int, t_us: int, lag_us: int) -> list[tuple]:
    return [
        (t_us + i * 1000, t_us + i * 1000 + lag_us, "AUSDT", "A", "USDT", 1.0, 1.0, "buy", str(i))
        for i in range(n)
    ]


def _journal(data_dir: Path, *events: tuple[int, str, dict]) -> None:
    clock = iter([ts for ts, _, _ in events])
    j = EventJournal(data_dir, STREAM, clock_us=lambda: next(clock))
    for _, kind, fields in events:
        j.record(kind, **fields)
    j.close()


def _write_open(data_dir: Path, rows: list[tuple]) -> None:
    """Rows flushed as a complete batch into an open `_` segment, as a killed worker leaves it."""
    w = SegmentWriter(data_dir, STREAM, fsync=False)
    w.append(rows)
    w.flush()  # on disk; never closed (no seal), like a kill -9


def test_the_bound_of_a_killed_run_is_its_newest_trade_on_disk(tmp_path: Path) -> None:
    _journal(tmp_path, (T0, "start", {"pid": 7}), (T0 + S, "alive", {}))
    _write_open(tmp_path, _rows(50, T0 + 2 * S, lag_us=3000))
    newest_time = T0 + 2 * S + 49 * 1000
    # the smaller of the newest receive time and the newest exchange time: a later trade
    # (lost) is later on both clocks
    assert newest_durable_us(str(tmp_path), STREAM) == newest_time
    assert crash_bound(str(tmp_path), STREAM) == (newest_time, 7)


def test_an_exchange_clock_ahead_bounds_by_receive_time(tmp_path: Path) -> None:
    _journal(tmp_path, (T0, "start", {"pid": 7}))
    _write_open(tmp_path, _rows(10, T0 + 2 * S, lag_us=-5000))
    assert newest_durable_us(str(tmp_path), STREAM) == T0 + 2 * S + 9 * 1000 - 5000


def test_a_heartbeat_with_an_empty_writer_queue_bounds_a_quiet_stream(tmp_path: Path) -> None:
    _journal(
        tmp_path,
        (T0, "start", {"pid": 7}),
        (T0 + 30 * S, "alive", {"durable_us": T0 + 30 * S}),
        (T0 + 40 * S, "alive", {}),  # trades waiting for the disk: no mark
    )
    _write_open(tmp_path, _rows(5, T0 + S, lag_us=1000))
    assert crash_bound(str(tmp_path), STREAM) == (T0 + 30 * S, 7)


def test_no_bound_after_a_clean_stop_or_without_a_journal(tmp_path: Path) -> None:
    assert crash_bound(str(tmp_path), STREAM) is None
    _journal(tmp_path, (T0, "start", {"pid": 7}), (T0 + S, "stop", {"pid": 7}))
    assert crash_bound(str(tmp_path), STREAM) is None


def test_a_second_recorder_on_one_data_dir_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    import os

    fd = lock_data_dir(str(tmp_path))
    try:
        with pytest.raises(DataDirBusy, match=rf"already being recorded by pid {os.getpid()} "):
            lock_data_dir(str(tmp_path))
    finally:
        os.close(fd)
    os.close(lock_data_dir(str(tmp_path)))  # released with its holder: a restart is never blocked
