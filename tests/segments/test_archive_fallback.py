"""Reading falls back to the Parquet archive where segments are gone: the archive keeps 90 days
(and the free-disk floor evicts archived segments before last copies), so `read_trades` and
therefore `pumpwatch extract` read an hour from its archive file when a segment it was built
from is no longer on disk, plus any segment written after it. Real segments, a real archive."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from helpers.remote_store import STREAMS_USED, write_segments
from helpers.store import T0_US, make_rows

from pumpwatch.segments import SegmentWriter
from pumpwatch.segments.archive import archive_pending, list_archive
from pumpwatch.segments.paths import list_segments
from pumpwatch.segments.reader import read_trades
from pumpwatch.timeunits import US_PER_HOUR

END = T0_US + 4 * US_PER_HOUR


def _hour(path: Path) -> int:
    return (int(path.name[:2]) * US_PER_HOUR - T0_US % (24 * US_PER_HOUR)) // US_PER_HOUR


def _sorted(table: pa.Table) -> pa.Table:
    keys = [(c, "ascending") for c in ("exchange", "market", "time", "recv_time", "trade_id")]
    return table.take(pc.sort_indices(table, keys))


def test_hours_whose_segments_are_gone_are_read_from_the_archive(tmp_path: Path) -> None:
    write_segments(tmp_path, hours=3)
    archive_pending(tmp_path, retention_s=None)
    before = read_trades(tmp_path, T0_US, END)
    assert before.num_rows == 2 * 3 * 600
    for f in list_segments(tmp_path):
        if _hour(f.path) < 2:
            f.path.unlink()  # retention or the floor took hours 0 and 1
    after = read_trades(tmp_path, T0_US, END)
    assert _sorted(after).equals(_sorted(before))
    # a narrow window and a base filter read the same rows as the segments did
    lo, hi = T0_US + US_PER_HOUR // 3, T0_US + US_PER_HOUR + US_PER_HOUR // 5
    coin = before.column("base")[0].as_py()
    narrow = read_trades(tmp_path, lo, hi, streams=["okx_futures"], base=coin.lower())
    times = before.column("time").cast(pa.int64())
    mask = pc.and_(pc.greater_equal(times, lo), pc.less_equal(times, hi))
    mask = pc.and_(
        mask, pc.and_(pc.equal(before.column("market"), "futures"), pc.equal(before.column("base"), coin))
    )
    expected = before.filter(mask)
    assert narrow.num_rows > 0
    assert _sorted(narrow).equals(_sorted(expected))


def test_segments_written_after_archiving_are_read_too_and_nothing_twice(tmp_path: Path) -> None:
    write_segments(tmp_path, hours=2)
    archive_pending(tmp_path, retention_s=None)
    # a repair file of hour 0 lands after the archive was built, then the live file is evicted
    stream = STREAMS_USED[0]
    extra = make_rows(50, start_us=T0_US + 777, step_us=1000)
    with SegmentWriter(tmp_path, stream) as w:
        w.append(extra)  # a second file of hour 0 (a restart in the middle of the hour)
    hour0 = sorted(f.path for f in list_segments(tmp_path, [stream]) if _hour(f.path) == 0)
    assert len(hour0) == 2
    full = read_trades(tmp_path, T0_US, END, streams=[stream])
    hour0[0].unlink()  # the archived one goes; the newer one was never archived
    after = read_trades(tmp_path, T0_US, END, streams=[stream])
    assert _sorted(after).equals(_sorted(full))


def test_every_segment_present_means_the_segments_are_read(tmp_path: Path) -> None:
    write_segments(tmp_path, hours=2)
    archive_pending(tmp_path, retention_s=None)
    for _stream, _hour_us, path in list_archive(tmp_path):
        path.write_bytes(b"not parquet")  # would fail loudly if it were read
    assert read_trades(tmp_path, T0_US, END).num_rows == 2 * 2 * 600


def test_an_unreadable_archive_file_is_skipped_with_a_warning(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    write_segments(tmp_path, hours=2)
    archive_pending(tmp_path, retention_s=None)
    for f in list_segments(tmp_path):
        if _hour(f.path) == 0:
            f.path.unlink()
    for _stream, hour_us, path in list_archive(tmp_path):
        if hour_us == T0_US - T0_US % US_PER_HOUR:
            path.write_bytes(b"not parquet")
    table = read_trades(tmp_path, T0_US, END)
    assert table.num_rows == 2 * 600  # hour 1 of both streams; hour 0 is gone everywhere
    assert "cannot read the archive file" in caplog.text
