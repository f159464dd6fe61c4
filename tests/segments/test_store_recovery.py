"""Crash recovery: torn files at every byte offset, a real kill -9, damaged and live files."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pyarrow.ipc as ipc
import pytest
from helpers.store import T0_US, make_rows, table_rows

from pumpwatch.segments import SegmentWriter, list_segments, read_trades, recover
from pumpwatch.segments.recovery import recover_report
from pumpwatch.timeunits import US_PER_HOUR as HOUR_US

STREAM = "binance_spot"


def _batches_file(tmp: Path) -> tuple[bytes, list[int], list[list]]:
    """An open segment of 3 batches (the last with a new symbol: a dictionary delta), and the
    file size after each flush, i.e. where each complete batch ends."""
    batches = [
        make_rows(4),
        make_rows(3, start_us=T0_US + 10_000),
        make_rows(2, start_us=T0_US + 20_000, symbols=("NEWCOIN",)),
    ]
    w = SegmentWriter(tmp, STREAM, fsync=False)
    ends = []
    for rows in batches:
        w.append(rows)
        w.flush()
        path = w.current_path
        assert path is not None
        ends.append(path.stat().st_size)
    data = path.read_bytes()
    w.close()
    return data, ends, batches


def test_recover_keeps_exactly_the_complete_batches_at_every_cut(tmp_path) -> None:
    data, ends, batches = _batches_file(tmp_path / "src")
    assert len(set(ends)) == 3 and ends[-1] == len(data)
    shm = Path("/dev/shm")
    work = Path(tempfile.mkdtemp(dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path))
    try:
        open_path = work / "segments/exchange=binance/market=spot/date=2026-01-01/_000000.arrow"
        sealed_path = open_path.with_name("000000.arrow")
        open_path.parent.mkdir(parents=True)
        for cut in range(len(data) + 1):
            open_path.write_bytes(data[:cut])
            report = recover_report(work)
            complete = sum(1 for end in ends if end <= cut)
            assert not open_path.exists(), cut
            if complete == 0:
                assert report.sealed == [] and report.removed == [open_path], cut
                assert not sealed_path.exists()
                continue
            assert report.sealed == [sealed_path], cut
            reader = ipc.open_file(sealed_path)  # a valid sealed file: footer and all
            expected = [r for rows in batches[:complete] for r in rows]
            assert reader.num_record_batches == 1, cut  # compacted like a normal seal
            got = table_rows(reader.read_all())
            symbols = list(dict.fromkeys(r[2] for r in expected))  # grouped, first seen first
            assert got == [r for sym in symbols for r in expected if r[2] == sym], cut
            meta = reader.get_batch_with_custom_metadata(0).custom_metadata
            assert meta[b"pumpwatch.rows"] == str(len(expected)).encode()
            assert (report.batches_kept, report.rows_kept) == (complete, len(expected))
            sealed_path.unlink()
    finally:
        shutil.rmtree(work)


CHILD = textwrap.dedent(
    """
    import sys
    from pumpwatch.segments import SegmentWriter
    T0, N = int(sys.argv[2]), 0
    w = SegmentWriter(sys.argv[1], "okx_spot", flush_interval_s=0.02, flush_rows=700)
    def row(i):
        t = T0 + i * 997
        return (t, t + 3, "AUSDT", "A", "USDT", 1.0 + i, 2.0, "buy", str(i))
    while True:
        for _ in range(20):  # appended but not flushed: the writer thread writes on its own
            w.append([row(N + k) for k in range(50)])
            N += 50
        w.flush()
        print(N, flush=True)  # every row below N is durable
    """
)


@pytest.mark.parametrize("kill_after_lines", [3, 12])
def test_kill_9_loses_nothing_that_was_flushed(tmp_path, kill_after_lines) -> None:
    start = T0_US + HOUR_US - 5_000_000  # crosses an hour: one sealed file and one open
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), str(start)], stdout=subprocess.PIPE, text=True
    )
    durable = 0
    try:
        assert proc.stdout is not None
        for _ in range(kill_after_lines):
            line = proc.stdout.readline()
            assert line, "the child died"
            durable = int(line)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    before = list_segments(tmp_path)
    assert any(not s.sealed for s in before)
    sealed = recover(tmp_path)
    assert sealed and all(p.exists() for p in sealed)
    after = list_segments(tmp_path)
    assert after and all(s.sealed for s in after)
    for seg in after:
        ipc.open_file(seg.path).read_all()  # every file readable with its footer
    got = table_rows(read_trades(tmp_path, T0_US, T0_US + 3 * HOUR_US))
    ids = [int(r[8]) for r in got]
    assert ids == list(range(len(ids)))  # no gap, no duplicate, nothing invented
    assert len(ids) >= durable
    for r in got:
        i = int(r[8])
        assert r == (start + i * 997, start + i * 997 + 3, "AUSDT", "A", "USDT", 1.0 + i, 2.0, "buy", str(i))
    assert recover(tmp_path) == []  # idempotent


def _open_file(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / "segments/exchange=gate/market=spot/date=2026-01-01" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def test_damaged_and_empty_files_never_crash_recovery(tmp_path, caplog) -> None:
    garbage = _open_file(tmp_path, "_010000.arrow", b"not an arrow file at all" * 10)
    zeros = _open_file(tmp_path, "_020000.arrow", b"\0" * 4096)  # a crash after the size grew
    empty = _open_file(tmp_path, "_030000.arrow", b"")
    report = recover_report(tmp_path)
    assert report.sealed == []
    assert sorted(report.removed) == sorted([zeros, empty])
    (moved,) = report.quarantined
    assert moved == tmp_path / "quarantine/gate_spot/date=2026-01-01__010000.arrow"
    assert moved.read_bytes() == b"not an arrow file at all" * 10
    assert report.bytes_dropped == 240
    assert not garbage.exists()
    # in its place, an empty sealed file that records the hour as damaged (review of issue 11)
    (record,) = list_segments(tmp_path)
    assert report.records == [record.path] and record.sealed
    assert report.damaged == {record.path: [[None, None, record.start_us, record.hour_end_us - 1, None]]}
    assert read_trades(tmp_path, record.start_us, record.hour_end_us).num_rows == 0
    assert "damaged" in caplog.text


def test_a_live_writer_file_is_left_alone(tmp_path) -> None:
    with SegmentWriter(tmp_path, "gate_spot") as w:
        w.append(make_rows(5))
        w.flush()
        report = recover_report(tmp_path)
        assert report.skipped_live == [w.current_path] and report.sealed == []
    assert [s.sealed for s in list_segments(tmp_path)] == [True]


def test_an_interrupted_recovery_is_finished(tmp_path) -> None:
    with SegmentWriter(tmp_path, "gate_spot") as w:
        w.append(make_rows(5))
    (seg,) = list_segments(tmp_path)
    leftover = seg.path.with_name("_" + seg.path.name)
    shutil.copy(seg.path, leftover)  # died after the rename, before removing the source
    report = recover_report(tmp_path)
    assert report.removed == [leftover] and report.sealed == []
    assert read_trades(tmp_path, T0_US, T0_US + HOUR_US).num_rows == 5


def test_a_half_written_seal_is_discarded_and_the_source_recovered(tmp_path) -> None:
    w = SegmentWriter(tmp_path, "gate_spot")
    w.append(make_rows(5))
    w.flush()
    path = w.current_path
    assert path is not None
    data = path.read_bytes()
    w.close()
    (seg,) = list_segments(tmp_path)
    seg.path.unlink()
    path.write_bytes(data)  # as if the process died while compacting at the seal
    tmp = path.with_name(".000000.arrow.sealing")
    tmp.write_bytes(data[:100])
    report = recover_report(tmp_path)
    assert report.removed == [tmp] and report.sealed == [path.with_name("000000.arrow")]
    assert not tmp.exists()
    assert table_rows(read_trades(tmp_path, T0_US, T0_US + HOUR_US)) == make_rows(5)
