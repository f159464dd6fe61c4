"""Hourly rotation by receive time, file naming, idle sealing, and the never-drop queue."""

from __future__ import annotations

import logging
import tempfile
import threading

import pyarrow.ipc as ipc
import pytest
from helpers.store import T0_US, make_rows, table_rows
from hypothesis import given, settings
from hypothesis import strategies as st

from pumpwatch.errors import StoreError
from pumpwatch.segments import SegmentWriter, list_segments, read_trades
from pumpwatch.segments.journal import read_events
from pumpwatch.segments.paths import parse_segment_path, segment_path
from pumpwatch.timeunits import US_PER_HOUR as HOUR_US


@settings(max_examples=40, deadline=None)
@given(
    offsets=st.lists(st.integers(0, 4 * HOUR_US), min_size=1, max_size=200),
    chunk=st.integers(1, 40),
    flush_rows=st.integers(1, 100),
)
def test_rotation_neither_loses_nor_duplicates(offsets: list[int], chunk: int, flush_rows: int) -> None:
    offsets.sort()
    rows = [
        (T0_US + o - 1000, T0_US + o, "AUSDT", "A", "USDT", 1.0, 1.0, "buy", str(i))
        for i, o in enumerate(offsets)
    ]
    with tempfile.TemporaryDirectory() as data_dir:
        with SegmentWriter(data_dir, "kucoin_spot", flush_rows=flush_rows, flush_interval_s=60) as w:
            for i in range(0, len(rows), chunk):
                w.append(rows[i : i + chunk])
                if i % (3 * chunk) == 0:
                    w.flush()
        files = list_segments(data_dir)
        seen: list[str] = []
        for seg in files:
            assert seg.sealed
            ids = table_rows(ipc.open_file(seg.path).read_all())
            recv_hours = {r[1] // HOUR_US for r in ids}
            assert recv_hours == {seg.start_us // HOUR_US}, "a file holds exactly one receive hour"
            seen += [r[8] for r in ids]
        assert seen == [str(i) for i in range(len(rows))]  # each row once, in order
        hours = sorted({(T0_US + o) // HOUR_US for o in offsets})
        assert [s.start_us // HOUR_US for s in files] == hours
        first = files[0]
        assert first.start_us == (T0_US + offsets[0]) // 1_000_000 * 1_000_000  # opened mid-hour
        assert all(s.start_us % HOUR_US == 0 for s in files[1:])  # rotations open at HH0000


def test_restart_in_the_same_second_never_overwrites(tmp_path) -> None:
    rows = make_rows(10, start_us=T0_US + 1_800_000_000)
    for _ in range(3):
        with SegmentWriter(tmp_path, "gate_futures") as w:
            w.append(rows)
    names = [s.path.name for s in list_segments(tmp_path)]
    assert names == ["003000.arrow", "003001.arrow", "003002.arrow"]
    assert read_trades(tmp_path, T0_US, T0_US + HOUR_US).num_rows == 30


def test_idle_hour_is_sealed_on_the_wall_clock(tmp_path) -> None:
    now = [T0_US + 10_000_000]
    w = SegmentWriter(tmp_path, "phemex_spot", flush_interval_s=0.01, seal_grace_s=2, clock_us=lambda: now[0])
    try:
        w.append(make_rows(5, start_us=T0_US + 9_000_000))
        w.flush()
        (seg,) = list_segments(tmp_path)
        assert not seg.sealed and seg.path.name == "_000009.arrow"
        now[0] = T0_US + HOUR_US + 1_000_000  # the hour ended, but within the grace
        threading.Event().wait(0.1)
        assert not list_segments(tmp_path)[0].sealed
        now[0] = T0_US + HOUR_US + 2_000_000
        for _ in range(200):
            if w.files_sealed:
                break
            threading.Event().wait(0.01)
        (seg,) = list_segments(tmp_path)
        assert seg.sealed and seg.path.name == "000009.arrow"
        assert w.files_sealed == 1
        w.append(make_rows(2, start_us=T0_US + HOUR_US + 5_000_000))
    finally:
        w.close()
    assert [s.path.name for s in list_segments(tmp_path)] == ["000009.arrow", "010000.arrow"]


def test_rows_received_before_the_open_hour_stay_in_it(tmp_path, caplog) -> None:
    late = make_rows(3, start_us=T0_US + HOUR_US - 10_000_000)
    with SegmentWriter(tmp_path, "bybit_futures") as w:
        w.append(make_rows(3, start_us=T0_US + HOUR_US))
        w.flush()
        with caplog.at_level(logging.WARNING):
            w.append(late)  # a clock step back after the rotation
            w.flush()
    (seg,) = list_segments(tmp_path)
    assert seg.path.name == "010000.arrow"
    assert len(table_rows(ipc.open_file(seg.path).read_all())) == 6
    assert "before this hour" in caplog.text


def test_slow_disk_grows_the_queue_and_drops_nothing(tmp_path, caplog, monkeypatch) -> None:
    from pumpwatch.segments import hourfile

    gate = threading.Event()
    real = hourfile.HourFile.write_pending

    def slow(self):  # the disk stalls until the test releases it
        gate.wait(5)
        real(self)

    monkeypatch.setattr(hourfile.HourFile, "write_pending", slow)
    with caplog.at_level(logging.WARNING):
        w = SegmentWriter(tmp_path, "binance_futures", flush_interval_s=0.01, queue_warn_rows=500)
        rows = make_rows(2000)
        for i in range(0, 2000, 100):
            w.append(rows[i : i + 100])  # never blocks although nothing reaches the disk
        assert w.queue_rows == 2000
        assert caplog.text.count("wait for the disk") == 1  # once per state change
    gate.set()
    w.flush()
    assert w.queue_rows == 0 and w.rows_written == 2000
    w.close()
    assert table_rows(read_trades(tmp_path, T0_US, T0_US + HOUR_US)) == rows


def test_paths_are_parsed_back(tmp_path) -> None:
    p = segment_path(tmp_path, "okx_spot", T0_US + 3_723_000_000, sealed=False)
    assert (
        p.relative_to(tmp_path).as_posix()
        == "segments/exchange=okx/market=spot/date=2026-01-01/_010203.arrow"
    )
    p.parent.mkdir(parents=True)
    p.write_bytes(b"x")
    seg = parse_segment_path(p)
    assert seg is not None
    assert (seg.stream, seg.start_us, seg.hour_end_us, seg.sealed, seg.size_bytes) == (
        "okx_spot", T0_US + 3_723_000_000, T0_US + 2 * HOUR_US, False, 1
    )  # fmt: skip
    for bad in ("256000.arrow", "x.arrow", "_12.arrow", "010203.arrow.tmp", ".010203.arrow.recovering"):
        (p.parent / bad).write_bytes(b"")
    (tmp_path / "segments/exchange=evil/market=spot/date=2026-01-01").mkdir(parents=True)
    (tmp_path / "segments/exchange=evil/market=spot/date=2026-01-01/000000.arrow").write_bytes(b"")
    assert [s.path.name for s in list_segments(tmp_path)] == ["_010203.arrow"]


def test_a_disk_fault_keeps_rows_then_journals_what_close_cannot_write(tmp_path) -> None:
    # issue 11: a disk fault no longer stops the writer; `flush` says so, `append` still takes
    # rows, and `close` gives up after its bound, journaling what it dropped
    (tmp_path / "segments").write_text("not a directory")  # nothing can be created below it
    w = SegmentWriter(tmp_path, "okx_spot", close_timeout_s=0.3)
    w.append(make_rows(3))
    with pytest.raises(StoreError, match="cannot create segment"):
        w.flush()
    w.append(make_rows(1))
    w.close()
    assert w.rows_lost == 4
    (event,) = [e for e in read_events(tmp_path, "okx_spot") if e["event"] == "dropped"]
    assert event["rows"] == 4
