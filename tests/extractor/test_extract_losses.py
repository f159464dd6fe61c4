"""An extraction never claims trades the store no longer holds, and a refresh never replaces a
listing's trades with fewer because the store lost some (review finding 5).

The free-disk floor deletes last copies (segments not archived yet, archive files whose segments
are gone) without a journal event, so the journal alone would still count those hours as
covered. Real segments, a real journal, files deleted as the floor deletes them."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
from helpers.store import T0_US, make_rows

from pumpwatch.extractor import extract
from pumpwatch.segments import SegmentWriter, list_segments
from pumpwatch.segments.archive import archive_pending, list_archive
from pumpwatch.segments.journal import EventJournal
from pumpwatch.timeunits import US_PER_HOUR
from pumpwatch.timeunits import US_PER_S as S

STREAM = "binance_spot"
T = T0_US + US_PER_HOUR  # 01:00:00, the window 00:50 .. 01:10 spans two hours
WINDOW = dict(before_s=600, after_s=600, streams=[STREAM])


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Trades of 0G and BTC every second from 00:40 to 01:20, the stream listening throughout."""
    data = tmp_path / "data"
    rows = make_rows(2400, start_us=T0_US + 40 * 60 * S, step_us=S, symbols=("0G", "BTC"))
    with SegmentWriter(data, STREAM) as w:
        w.append(rows)
    with EventJournal(data, STREAM) as j:
        j.record("start", ts_us=T0_US, pid=1)
        j.record("connected", conn="c1", ts_us=T0_US + S, url="ws://127.0.0.1")
        j.record(
            "subscribed", conn="c1", ts_us=T0_US + 2 * S, symbols=["0GUSDT", "BTCUSDT"], bases=["0G", "BTC"]
        )
        j.record("stop", ts_us=T0_US + 2 * US_PER_HOUR, pid=1)
    return data


def coverage(listing: Path) -> dict:
    return orjson.loads((listing / "metadata.json").read_bytes())["streams"][STREAM]


def hour1_segment(data: Path) -> Path:
    (seg,) = [f.path for f in list_segments(data, [STREAM]) if f.start_us >= T]
    return seg


def test_an_hour_the_floor_deleted_is_missing_not_covered(data_dir: Path) -> None:
    full = coverage(extract(data_dir, "0G", T, **WINDOW))
    assert full["trades"] == 601 and full["coverage"]["state"] == "complete"  # 0G every 2 s, closed
    shutil.rmtree(data_dir / "listings")
    hour1_segment(data_dir).unlink()  # the floor deleted an unarchived segment: no journal event
    got = coverage(extract(data_dir, "0G", T, **WINDOW))
    assert got["trades"] == 300  # 00:50:00 .. 00:59:58
    cov = got["coverage"]
    assert cov["state"] == "incomplete"
    assert [(m["start_us"], m["end_us"], m["reason"]) for m in cov["missing"]] == [
        (T, T + 600 * S, "deleted")
    ]


def test_an_hour_kept_only_in_the_archive_is_covered(data_dir: Path) -> None:
    archive_pending(data_dir, retention_s=None)
    hour1_segment(data_dir).unlink()  # retention / the floor took the archived segment
    got = coverage(extract(data_dir, "0G", T, **WINDOW))
    assert got["trades"] == 601 and got["coverage"]["state"] == "complete"
    for _stream, _hour, path in list_archive(data_dir):
        if _hour == T:
            path.unlink()  # then the archive file too (the floor's last resort)
    shutil.rmtree(data_dir / "listings")
    got = coverage(extract(data_dir, "0G", T, **WINDOW))
    assert got["trades"] == 300
    assert [m["reason"] for m in got["coverage"]["missing"]] == ["deleted"]


def test_a_refresh_keeps_the_trades_the_store_lost_since(data_dir: Path) -> None:
    listing = extract(data_dir, "0G", T, **WINDOW)
    first = coverage(listing)
    raw = (listing / "raw" / f"{STREAM}.json").read_bytes()
    hour1_segment(data_dir).unlink()
    again = extract(data_dir, "0G", T, **WINDOW)
    assert again == listing
    got = coverage(listing)
    assert got["trades"] == first["trades"] == 601
    assert (listing / "raw" / f"{STREAM}.json").read_bytes() == raw
    cov = got["coverage"]
    assert cov["state"] == "complete" and cov["missing"] == []  # the listing had that span whole
    (restored,) = cov["restored"]
    assert (restored["start_us"], restored["end_us"], restored["trades"]) == (T, T + 600 * S, 301)
    assert (
        restored["from"]
        == orjson.loads((listing / "metadata.json").read_bytes())["re_extracted"]["first_extracted_at"]
    )
    import pyarrow.parquet as pq

    assert pq.read_table(listing / "raw" / "trades.parquet").num_rows == 601


def test_a_refresh_merges_without_doubling_where_the_store_still_has_some(data_dir: Path) -> None:
    """A sealed file cut short: its lost span starts at the last readable row, which the store
    still gives and the listing had: kept once, the raw file unchanged."""
    import os

    import pyarrow as pa

    from pumpwatch.segments.compact import write_compacted
    from pumpwatch.segments.convert import Converter
    from pumpwatch.segments.ipcscan import scan_segment

    seg = hour1_segment(data_dir)
    rows = [r for r in make_rows(2400, start_us=T0_US + 40 * 60 * S, step_us=S, symbols=("0G", "BTC"))]
    rows = [r for r in rows if r[1] >= T]  # hour 1's file holds the rows received from 01:00
    (batch,) = list(Converter(STREAM).batches([rows]))
    sizes = [301, 301, 301, len(rows) - 903]  # batch 0 ends on a 0G trade at 01:05:00
    parts, off = [], 0
    for n in sizes:
        parts.append(batch.slice(off, n))
        off += n
    seg.unlink()
    _r, _b, fd = write_compacted(parts, seg, max_rows=301)
    os.close(fd)
    listing = extract(data_dir, "0G", T, **WINDOW)
    raw = (listing / "raw" / f"{STREAM}.json").read_bytes()
    assert coverage(listing)["trades"] == 601
    data = seg.read_bytes()
    seg.write_bytes(data[: scan_segment(pa.py_buffer(data)).batches[1].start + 9])  # batches 1.. lost
    extract(data_dir, "0G", T, **WINDOW)
    assert (listing / "raw" / f"{STREAM}.json").read_bytes() == raw
    cov = coverage(listing)["coverage"]
    assert cov["state"] == "complete" and [r["start_us"] for r in cov["restored"]] == [T + 300 * S]
    # without the listing to refresh, the same store says what it lacks
    shutil.rmtree(listing)
    fresh = coverage(extract(data_dir, "0G", T, **WINDOW))
    assert fresh["trades"] == 300 + 151
    assert [m["reason"] for m in fresh["coverage"]["missing"]] == ["damaged"]


@pytest.mark.parametrize("damage", ["flipped", "cut_short"])
def test_a_segment_damaged_after_archiving_costs_the_extraction_nothing(data_dir: Path, damage: str) -> None:
    """Review finding 3, end to end: the archive keeps the hour's rows through the rebuild, the
    reader serves them, and the damage the archive makes good is not listed as missing (which
    would send the extraction-time repair after trades the listing already has)."""
    import os

    archive_pending(data_dir, retention_s=None)
    seg = hour1_segment(data_dir)
    data = bytearray(seg.read_bytes())
    if damage == "flipped":
        mid = len(data) // 2
        data[mid : mid + 16] = bytes(b ^ 0xFF for b in data[mid : mid + 16])
    else:
        data = data[: len(data) // 2]
    seg.write_bytes(bytes(data))
    stamp = seg.stat()
    os.utime(seg, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 5 * 10**9))
    assert archive_pending(data_dir, retention_s=None).hours_merged == 1
    got = coverage(extract(data_dir, "0G", T, **WINDOW))
    assert got["trades"] == 601
    assert got["coverage"]["state"] == "complete" and got["coverage"]["missing"] == []
