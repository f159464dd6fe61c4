"""The archive and the segments never hide each other's rows (review findings 2-4).

- An archive file that cannot be read no longer hides the segments still on disk, and the
  segments it stood in for are damage (so coverage says so).
- A segment damaged after it was archived does not wipe its good copy from the archive: the
  rebuild keeps the old file's rows and the reader serves them, before and after retention.
- A sealed file cut short is damaged from its last readable batch on, not for its whole hour.

Real segments written by the store's writers, a real archive, real damage on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from helpers.store import T0_US, make_rows

from pumpwatch.segments import SegmentWriter, list_segments, read_trades
from pumpwatch.segments.archive import archive_path, archive_pending
from pumpwatch.segments.compact import write_compacted
from pumpwatch.segments.damage import unreadable_spans
from pumpwatch.segments.ipcscan import scan_segment
from pumpwatch.segments.paths import segment_path
from pumpwatch.segments.reader import damage_in_window
from pumpwatch.timeunits import US_PER_HOUR

STREAM = "binance_spot"
S = 1_000_000
HOUR_END = T0_US + US_PER_HOUR - 1


def _segment_batch(rows: list) -> pa.RecordBatch:
    from pumpwatch.segments.convert import Converter

    (batch,) = list(Converter(STREAM).batches([rows]))
    return batch


def sealed_file(data_dir: Path, per_batch: list[list], start_us: int = T0_US) -> Path:
    """A sealed segment with one record batch per item of `per_batch`."""
    rows = [r for b in per_batch for r in b]
    path = segment_path(data_dir, STREAM, start_us, sealed=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = _segment_batch(rows)
    parts, off = [], 0
    for b in per_batch:
        parts.append(batch.slice(off, len(b)))
        off += len(b)
    _r, _b, fd = write_compacted(parts, path, max_rows=len(per_batch[0]))
    os.close(fd)
    return path


def flip_batch(path: Path, ordinal: int) -> None:
    """16 bytes of one batch's body replaced (its checksum fails), the file's mtime moves on."""
    raw = bytearray(path.read_bytes())
    chunk = scan_segment(pa.py_buffer(bytes(raw))).batches[ordinal]
    mid = (chunk.body_start + chunk.end) // 2
    for i in range(mid, mid + 16):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def archive_rows(data_dir: Path, hour_us: int = T0_US) -> int:
    return pq.read_table(archive_path(data_dir, STREAM, hour_us)).num_rows


# --- finding 2: an unreadable archive file ---------------------------------------------------


def test_an_unreadable_archive_file_hides_no_segment_and_its_gone_segments_are_damage(tmp_path: Path) -> None:
    first = sealed_file(
        tmp_path, [make_rows(100, start_us=T0_US + k * 60 * S, step_us=S // 4) for k in range(3)]
    )
    archive_pending(tmp_path, retention_s=None)
    assert archive_rows(tmp_path) == 300
    # a restart in the middle of the hour: a second segment, 50 rows, written after archiving
    with SegmentWriter(tmp_path, STREAM) as w:
        w.append(make_rows(50, start_us=T0_US + 30 * 60 * S, step_us=S))
    later = [f.path for f in list_segments(tmp_path, [STREAM]) if f.path != first]
    assert len(later) == 1
    first.unlink()  # the free-disk floor evicted the archived segment
    archive_path(tmp_path, STREAM, T0_US).write_bytes(b"PAR1 garbage PAR1")
    got = read_trades(tmp_path, T0_US, HOUR_END, streams=[STREAM])
    assert got.num_rows == 50  # the live segment is read, not hidden by the broken archive
    # what is lost is said: the evicted segment's span (its HHMMSS to the end of its hour)
    damage = damage_in_window(tmp_path, T0_US, HOUR_END, streams=[STREAM])
    assert [(d.time_min_us, d.time_max_us) for d in damage] == [(T0_US, HOUR_END)]
    assert "unreadable" in damage[0].reason
    assert unreadable_spans(tmp_path, T0_US, HOUR_END, streams=[STREAM]) == {STREAM: [(T0_US, HOUR_END + 1)]}


def test_a_readable_archive_still_stands_in_for_its_gone_segments(tmp_path: Path) -> None:
    first = sealed_file(
        tmp_path, [make_rows(100, start_us=T0_US + k * 60 * S, step_us=S // 4) for k in range(3)]
    )
    archive_pending(tmp_path, retention_s=None)
    first.unlink()
    assert read_trades(tmp_path, T0_US, HOUR_END, streams=[STREAM]).num_rows == 300
    assert damage_in_window(tmp_path, T0_US, HOUR_END, streams=[STREAM]) == []


# --- finding 3: a segment damaged after it was archived ----------------------------------------


def test_a_segment_damaged_after_archiving_keeps_its_rows_in_the_archive(tmp_path: Path) -> None:
    per_batch = [make_rows(100, start_us=T0_US + k * 60 * S, step_us=S // 4) for k in range(6)]
    path = sealed_file(tmp_path, per_batch)
    archive_pending(tmp_path, retention_s=None)
    before = read_trades(tmp_path, T0_US, HOUR_END, streams=[STREAM])
    assert before.num_rows == archive_rows(tmp_path) == 600
    flip_batch(path, 2)
    stamp = path.stat()
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 5 * 10**9))  # the damage's own write
    report = archive_pending(tmp_path, retention_s=None)
    assert report.hours_built == 1 and report.hours_merged == 1
    assert archive_rows(tmp_path) == 600  # nothing the archive held is dropped
    assert archive_pending(tmp_path, retention_s=None).hours_built == 0  # and it settles
    # the segment is still there: its damaged batch's rows come from the archive file
    assert read_trades(tmp_path, T0_US, HOUR_END, streams=[STREAM]).equals(before)
    assert damage_in_window(tmp_path, T0_US, HOUR_END, streams=[STREAM]) == []
    # retention (the archive holds every row of the segment) deletes it: still all 600
    path.unlink()
    assert read_trades(tmp_path, T0_US, HOUR_END, streams=[STREAM]).equals(before)


def test_a_segment_damaged_before_it_was_archived_stays_damage(tmp_path: Path) -> None:
    """The archive built from a damaged segment lacks the same rows: nothing to serve, the damage
    is reported as it is."""
    per_batch = [make_rows(100, start_us=T0_US + k * 60 * S, step_us=S // 4) for k in range(6)]
    path = sealed_file(tmp_path, per_batch)
    flip_batch(path, 2)
    archive_pending(tmp_path, retention_s=None)
    assert archive_rows(tmp_path) == 500
    assert read_trades(tmp_path, T0_US, HOUR_END, streams=[STREAM]).num_rows == 500
    damage = damage_in_window(tmp_path, T0_US, HOUR_END, streams=[STREAM])
    assert [(d.time_min_us, d.time_max_us) for d in damage] == [(per_batch[2][0][0], per_batch[2][-1][0])]
    # a copy of the store (new mtimes: the manifest's fingerprint no longer matches) changes nothing
    stamp = path.stat()
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 7 * 10**9))
    assert read_trades(tmp_path, T0_US, HOUR_END, streams=[STREAM]).num_rows == 500
    assert damage_in_window(tmp_path, T0_US, HOUR_END, streams=[STREAM]) == damage
    assert archive_pending(tmp_path, retention_s=None).hours_merged == 1
    assert archive_rows(tmp_path) == 500  # nothing doubled by the union either
    assert damage_in_window(tmp_path, T0_US, HOUR_END, streams=[STREAM]) == damage


# --- finding 4: a sealed file cut short ---------------------------------------------------------


def test_a_sealed_file_cut_short_is_damaged_from_its_last_readable_batch_only(tmp_path: Path) -> None:
    per_batch = [make_rows(100, start_us=T0_US + k * 60 * S, step_us=S // 4) for k in range(6)]
    path = sealed_file(tmp_path, per_batch)
    raw = path.read_bytes()
    cut = scan_segment(pa.py_buffer(raw)).batches[4].start + 9  # batches 4 and 5 lost, framing broken
    path.write_bytes(raw[:cut])
    # a window inside batches 0..2, read in full, is complete
    early = (T0_US, per_batch[2][-1][0])
    assert read_trades(tmp_path, *early, streams=[STREAM]).num_rows == 300
    assert unreadable_spans(tmp_path, *early, streams=[STREAM]) == {}
    assert all(d.time_min_us > early[1] for d in damage_in_window(tmp_path, *early, streams=[STREAM]))
    # the lost part is damage from the last readable batch on, to the end of the hour
    late = (per_batch[4][0][0], per_batch[5][-1][0])
    spans = unreadable_spans(tmp_path, *late, streams=[STREAM])
    assert spans == {STREAM: [(late[0], late[1] + 1)]}
    (d,) = damage_in_window(tmp_path, T0_US, HOUR_END, streams=[STREAM])
    assert per_batch[3][-1][0] <= d.time_min_us <= per_batch[4][0][0]
    assert d.time_max_us == HOUR_END


def test_an_unreadable_archive_file_to_merge_with_is_left_and_blocks_nothing(tmp_path: Path) -> None:
    per_batch = [make_rows(100, start_us=T0_US + k * 60 * S, step_us=S // 4) for k in range(3)]
    path = sealed_file(tmp_path, per_batch)
    archive_pending(tmp_path, retention_s=None)
    flip_batch(path, 1)
    stamp = path.stat()
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 5 * 10**9))
    broken = archive_path(tmp_path, STREAM, T0_US)
    broken.write_bytes(b"PAR1 not really PAR1")
    sealed_file(tmp_path, [make_rows(50, start_us=T0_US + US_PER_HOUR + S)], start_us=T0_US + US_PER_HOUR)
    report = archive_pending(tmp_path, retention_s=None)  # no exception: the next hour is archived
    assert (report.hours_held, report.hours_built) == (1, 1)
    assert broken.read_bytes() == b"PAR1 not really PAR1"
    assert archive_rows(tmp_path, T0_US + US_PER_HOUR) == 50
    assert "1 unreadable file(s) left as they are" in report.summary(tmp_path)
