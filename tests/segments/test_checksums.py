"""Per-batch checksums: a flipped byte is caught by recovery, the reader, sealing and verify;
nothing damaged is ever returned or sealed; segments without checksums still read."""

from __future__ import annotations

import os
import tempfile
from functools import cache
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from helpers.store import T0_US, assert_same_trades, float_bits, make_rows, table_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pumpwatch.segments import SegmentWriter, list_segments, read_trades
from pumpwatch.segments.checksum import check_batches, recorded_damage
from pumpwatch.segments.compact import batch_metadata, write_compacted
from pumpwatch.segments.ipcscan import scan_segment
from pumpwatch.segments.paths import segment_path
from pumpwatch.segments.reader import damage_in_window, damaged_spans
from pumpwatch.segments.recovery import recover_report
from pumpwatch.segments.schema import BATCH_CRC, CRC_PLACEHOLDER, SEGMENT_SCHEMA
from pumpwatch.segments.verify import verify_store

STREAM = "binance_spot"
S = 1_000_000
ALL = (0, 2**62)


def _flushes() -> list[list]:
    """Five flushes, one second apart; the third brings a new symbol (a dictionary delta)."""
    out = []
    for k in range(5):
        symbols = ("BTC", "ETH", "0G", "NEWCOIN") if k == 2 else ("BTC", "ETH", "0G")
        out.append(make_rows(40, start_us=T0_US + k * S, step_us=1000, symbols=symbols))
    return out


@cache
def _open_file_bytes() -> bytes:
    """The bytes of an open segment (one batch per flush) as a crash would leave it."""
    with tempfile.TemporaryDirectory() as tmp:
        w = SegmentWriter(tmp, STREAM, fsync=False)
        for rows in _flushes():
            w.append(rows)
            w.flush()
        path = w.current_path
        assert path is not None
        data = path.read_bytes()
        w.close()
    return data


def _open_path(data_dir: Path) -> Path:
    return segment_path(data_dir, STREAM, T0_US, sealed=False)


def _crashed(data_dir: Path, data: bytes) -> Path:
    """Put `data` where a crashed writer's open file would be."""
    path = _open_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _flip(data: bytes, offset: int, n: int = 1, mask: int = 0xFF) -> bytes:
    b = bytearray(data)
    for i in range(offset, offset + n):
        b[i] ^= mask
    return bytes(b)


def _body(data: bytes, ordinal: int) -> tuple[int, int]:
    chunk = scan_segment(pa.py_buffer(data)).batches[ordinal]
    return chunk.body_start, chunk.end


def _bounds(rows: list) -> tuple[int, int]:
    return min(r[0] for r in rows), max(r[0] for r in rows)


def _written_bits() -> set:
    return set(float_bits([r for f in _flushes() for r in f]))


def test_every_batch_carries_a_checksum_that_passes(tmp_path: Path) -> None:
    data = _open_file_bytes()
    buf = pa.py_buffer(data)
    scan = scan_segment(buf)
    assert len(scan.batches) == 5
    assert all(len(b.meta[BATCH_CRC]) == 8 and b.meta[BATCH_CRC] != CRC_PLACEHOLDER for b in scan.batches)
    assert set(check_batches(buf, scan).status.values()) == {"ok"}
    assert scan.batches[2].shared > 0  # the new symbol's delta is covered by batch 2
    assert scan.batches[0].unit_start == 8  # the schema is covered by the first batch


def test_the_issue_case_16_bytes_in_a_batch_of_an_open_segment(tmp_path: Path) -> None:
    """Issue 11 §3: 16 flipped bytes inside a record batch of an open segment. Before recovery
    the reader skips that batch and names its span; recovery seals exactly the other batches
    and keeps the original bytes; afterwards the damage is still reported."""
    flushes = _flushes()
    lo, hi = _body(_open_file_bytes(), 1)
    path = _crashed(tmp_path, _flip(_open_file_bytes(), (lo + hi) // 2 - 8, 16))
    good = [r for k, f in enumerate(flushes) if k != 1 for r in f]

    assert_same_trades(table_rows(read_trades(tmp_path, *ALL)), good)
    assert damaged_spans(tmp_path, *ALL) == {STREAM: [_bounds(flushes[1])]}
    (verdict,) = verify_store(tmp_path)
    assert verdict.status == "damaged" and verdict.ok == 4

    report = recover_report(tmp_path)
    assert report.batches_damaged == 1 and report.rows_damaged == 40
    assert report.rows_kept == len(good)
    assert not path.exists()
    (kept,) = report.quarantined
    assert kept.read_bytes() == _flip(_open_file_bytes(), (lo + hi) // 2 - 8, 16)  # bytes kept as found
    assert kept.parent == tmp_path / "quarantine" / STREAM
    (sealed,) = list_segments(tmp_path)
    assert sealed.sealed
    got = table_rows(read_trades(tmp_path, *ALL))
    assert_same_trades(got, good)  # no -5.86e-79 prices: only rows that were written
    assert damaged_spans(tmp_path, *ALL) == {STREAM: [_bounds(flushes[1])]}
    assert damaged_spans(tmp_path, T0_US + 3 * S, T0_US + 4 * S) == {}  # outside the window: none
    (verdict,) = verify_store(tmp_path)
    assert verdict.status == "damaged" and verdict.damage[0].rows == 40
    assert "recovery" in verdict.damage[0].reason


def test_a_damaged_dictionary_damages_every_later_batch(tmp_path: Path) -> None:
    data = _open_file_bytes()
    scan = scan_segment(pa.py_buffer(data))
    delta = next(c for c in scan.chunks if c.kind == "dictionary" and c.start >= scan.batches[2].unit_start)
    _crashed(tmp_path, _flip(data, delta.body_start + 8))
    flushes = _flushes()
    assert_same_trades(table_rows(read_trades(tmp_path, *ALL)), flushes[0] + flushes[1])
    assert damaged_spans(tmp_path, *ALL) == {STREAM: [_bounds(flushes[k]) for k in (2, 3, 4)]}
    report = recover_report(tmp_path)
    assert report.batches_damaged == 3 and report.rows_kept == 80


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_flipped_byte_in_any_batch_body_is_caught(data: st.DataObject) -> None:
    raw = _open_file_bytes()
    scan = scan_segment(pa.py_buffer(raw))
    ordinal = data.draw(st.integers(0, len(scan.batches) - 1), label="batch")
    chunk = scan.batches[ordinal]
    offset = data.draw(st.integers(chunk.body_start, chunk.end - 1), label="offset")
    mask = data.draw(st.integers(1, 255), label="xor")
    damaged = _flip(raw, offset, 1, mask)
    flushes = _flushes()
    dependent = [ordinal]  # a body: only its own batch (a dictionary body: see above)
    good = [r for k, f in enumerate(flushes) if k not in dependent for r in f]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        _crashed(d, damaged)
        # the reader: the damaged batch is skipped, every other row read, and the span named
        assert_same_trades(table_rows(read_trades(d, *ALL)), good)
        assert damaged_spans(d, *ALL) == {STREAM: [_bounds(flushes[k]) for k in dependent]}
        # verify
        (verdict,) = verify_store(d)
        assert verdict.status == "damaged"
        # recovery: never seals a damaged batch's rows
        report = recover_report(d)
        assert report.batches_damaged == len(dependent)
        assert_same_trades(table_rows(read_trades(d, *ALL)), good)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_flipped_byte_anywhere_never_yields_a_row_that_was_not_written(data: st.DataObject) -> None:
    """Headers included (1 or 16 bytes): a flip may end the readable part of an open file (read
    as a torn tail), but nothing read or sealed is ever a row that was not written."""
    raw = _open_file_bytes()
    n = data.draw(st.sampled_from([1, 16]), label="bytes")
    offset = data.draw(st.integers(8, len(raw) - n), label="offset")
    damaged = _flip(raw, offset, n, data.draw(st.integers(1, 255), label="xor"))
    written = _written_bits()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        _crashed(d, damaged)
        assert set(float_bits(table_rows(read_trades(d, *ALL)))) <= written
        recover_report(d)
        assert set(float_bits(table_rows(read_trades(d, *ALL)))) <= written


def _sealed_file(data_dir: Path, per_batch: list[list]) -> Path:
    """A sealed segment with one batch per item of `per_batch` (as compaction writes them)."""
    rows = [r for b in per_batch for r in b]
    path = segment_path(data_dir, STREAM, T0_US, sealed=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = _segment_batch(rows)
    parts, off = [], 0
    for b in per_batch:
        parts.append(batch.slice(off, len(b)))
        off += len(b)
    _r, _b, fd = write_compacted(parts, path, max_rows=len(per_batch[0]))
    os.close(fd)
    return path


def _segment_batch(rows: list) -> pa.RecordBatch:
    from pumpwatch.segments.convert import Converter

    (batch,) = list(Converter(STREAM).batches([rows]))
    return batch


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_damaged_sealed_segment_inside_an_extraction_window(data: st.DataObject) -> None:
    """The extractor's read skips exactly the damaged batch; the damaged-span API names it."""
    per_batch = [make_rows(30, start_us=T0_US + k * S, symbols=("BTC",)) for k in range(6)]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        path = _sealed_file(d, per_batch)
        raw = path.read_bytes()
        chunks = scan_segment(pa.py_buffer(raw)).batches
        ordinal = data.draw(st.integers(0, 5), label="batch")
        offset = data.draw(st.integers(chunks[ordinal].body_start, chunks[ordinal].end - 1), label="offset")
        path.write_bytes(_flip(raw, offset))
        window = (T0_US + S, T0_US + 4 * S + 999_999)  # batches 1..4
        got = table_rows(read_trades(d, *window, streams=[STREAM]))
        want = [r for k in range(1, 5) if k != ordinal for r in per_batch[k]]
        assert_same_trades(got, want)
        spans = damaged_spans(d, *window)
        assert spans == ({STREAM: [_bounds(per_batch[ordinal])]} if 1 <= ordinal <= 4 else {})
        assert [v.status for v in verify_store(d)] == ["damaged"]


def test_extract_skips_damaged_batches(tmp_path: Path) -> None:
    from pumpwatch.extractor.extract import extract

    per_batch = [make_rows(30, start_us=T0_US + k * S, symbols=("0G",)) for k in range(4)]
    path = _sealed_file(tmp_path, per_batch)
    lo, hi = _body(path.read_bytes(), 2)
    path.write_bytes(_flip(path.read_bytes(), lo + (hi - lo) // 3, 16))
    out = extract(tmp_path, "0G", T0_US + 2 * S, before_s=3, after_s=3, streams=[STREAM])
    trades = orjson.loads((out / "raw" / f"{STREAM}.json").read_bytes())
    assert len(trades) == 90
    assert {t["price"] for t in trades} <= {r[5] for b in per_batch for r in b}


def test_segments_without_checksums_still_read(tmp_path: Path) -> None:
    """A segment written before checksums (no `pumpwatch.crc32`): read, verified as unchecked,
    recovered whole."""
    rows = make_rows(50)
    batch = _segment_batch(rows)
    for sealed in (True, False):
        d = tmp_path / str(sealed)
        path = segment_path(d, STREAM, T0_US, sealed=sealed)
        path.parent.mkdir(parents=True)
        options = ipc.IpcWriteOptions(compression="zstd")
        with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, SEGMENT_SCHEMA, options=options) as w:
            for off in (0, 25):
                part = batch.slice(off, 25)
                w.write_batch(part, custom_metadata=batch_metadata(part))
        assert_same_trades(table_rows(read_trades(d, *ALL)), rows)
        assert damaged_spans(d, *ALL) == {}
        (verdict,) = verify_store(d)
        assert (verdict.status, verdict.unchecked, verdict.ok) == ("unchecked", 2, 0)
        if not sealed:
            report = recover_report(d)
            assert report.rows_kept == 50 and report.batches_damaged == 0
            assert_same_trades(table_rows(read_trades(d, *ALL)), rows)
            (verdict,) = verify_store(d)
            assert verdict.status == "ok"  # recovery rewrote it with checksums


def test_an_unstamped_last_batch_is_a_torn_tail_not_damage(tmp_path: Path) -> None:
    """The writer died between writing its last batch and stamping its checksum."""
    raw = _open_file_bytes()
    last = scan_segment(pa.py_buffer(raw)).batches[-1]
    b = bytearray(raw)
    b[last.crc_at : last.crc_at + 8] = CRC_PLACEHOLDER.encode()
    _crashed(tmp_path, bytes(b))
    flushes = _flushes()
    assert_same_trades(table_rows(read_trades(tmp_path, *ALL)), [r for f in flushes[:4] for r in f])
    assert damaged_spans(tmp_path, *ALL) == {}  # an open file's batch being written right now
    report = recover_report(tmp_path)
    assert report.batches_damaged == 0 and report.rows_kept == 160 and not report.quarantined


def test_sealing_never_compacts_damaged_rows(tmp_path: Path) -> None:
    """A batch damaged on disk while its hour is open: sealing (which reads the file back to
    compact it) leaves it out, records it, and keeps the file as it was in quarantine/."""
    flushes = _flushes()
    w = SegmentWriter(tmp_path, STREAM, fsync=False)
    for rows in flushes:
        w.append(rows)
        w.flush()
    path = w.current_path
    assert path is not None
    lo, _hi = _body(path.read_bytes(), 3)
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, bytes(16), lo + 4)
    finally:
        os.close(fd)
    w.close()
    (sealed,) = list_segments(tmp_path)
    assert sealed.sealed
    good = [r for k, f in enumerate(flushes) if k != 3 for r in f]
    assert_same_trades(table_rows(read_trades(tmp_path, *ALL)), good)
    assert damaged_spans(tmp_path, *ALL) == {STREAM: [_bounds(flushes[3])]}
    buf = pa.py_buffer(sealed.path.read_bytes())
    assert [d[4] for d in recorded_damage(buf, scan_segment(buf))] == [40]
    assert len(list((tmp_path / "quarantine" / STREAM).iterdir())) == 1


def test_reads_have_no_side_effects(tmp_path: Path) -> None:
    lo, _hi = _body(_open_file_bytes(), 0)
    path = _crashed(tmp_path, _flip(_open_file_bytes(), lo + 3))
    before = sorted(p for p in tmp_path.rglob("*"))
    read_trades(tmp_path, *ALL)
    damage_in_window(tmp_path, *ALL)
    verify_store(tmp_path)
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert path.read_bytes() == _flip(_open_file_bytes(), lo + 3)


@pytest.mark.parametrize("n", [1, 3])
def test_repair_files_carry_checksums(tmp_path: Path, n: int) -> None:
    from pumpwatch.segments.repair import write_repaired

    result = write_repaired(tmp_path, STREAM, make_rows(n * 10))
    (path,) = result.files
    buf = pa.py_buffer(path.read_bytes())
    assert set(check_batches(buf, scan_segment(buf)).status.values()) == {"ok"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_flipped_byte_anywhere_in_a_sealed_segment_is_caught(data: st.DataObject) -> None:
    """Every byte from the magic to the end of the last batch is covered: verify reports the
    damage, and reads return only rows that were written (the footer is not used by readers)."""
    per_batch = [make_rows(30, start_us=T0_US + k * S, symbols=("BTC", f"S{k}")) for k in range(4)]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        path = _sealed_file(d, per_batch)
        raw = path.read_bytes()
        last_end = scan_segment(pa.py_buffer(raw)).batches[-1].end
        n = data.draw(st.sampled_from([1, 16]), label="bytes")
        offset = data.draw(st.integers(8, last_end - n), label="offset")
        path.write_bytes(_flip(raw, offset, n, data.draw(st.integers(1, 255), label="xor")))
        written = set(float_bits([r for b in per_batch for r in b]))
        got = table_rows(read_trades(d, *ALL))
        assert set(float_bits(got)) <= written
        assert [v.status for v in verify_store(d)] == ["damaged"]
        assert damaged_spans(d, *ALL)  # named, for coverage


@pytest.mark.parametrize("where", ["marker", "length"])
def test_damaged_framing_in_the_middle_is_damage_not_a_torn_tail(tmp_path: Path, where: str) -> None:
    """A flip in a batch's message framing ends the readable prefix of an open file. A crash
    tears only the last write, so intact checksummed batches after that point mean damage:
    reported (from the last good batch to the hour's end) and the file kept in quarantine."""
    raw = _open_file_bytes()
    chunk = scan_segment(pa.py_buffer(raw)).batches[1]
    offset = chunk.unit_start + (0 if where == "marker" else 7)
    path = _crashed(tmp_path, _flip(raw, offset, 1, 0x40))
    flushes = _flushes()
    assert_same_trades(table_rows(read_trades(tmp_path, *ALL)), flushes[0])
    (span,) = damaged_spans(tmp_path, *ALL)[STREAM]
    assert span[0] == max(r[1] for r in flushes[0])  # receive time of the last good batch
    (verdict,) = verify_store(tmp_path)
    assert verdict.status == "damaged"
    report = recover_report(tmp_path)
    assert report.rows_kept == 40 and report.batches_damaged == 1 and len(report.quarantined) == 1
    assert not path.exists()
    assert damaged_spans(tmp_path, *ALL) == {STREAM: [span]}  # still reported from the sealed file


def test_a_torn_tail_is_not_damage(tmp_path: Path) -> None:
    raw = _open_file_bytes()
    last = scan_segment(pa.py_buffer(raw)).batches[-1]
    _crashed(tmp_path, raw[: (last.body_start + last.end) // 2])
    assert damaged_spans(tmp_path, *ALL) == {}
    assert [v.status for v in verify_store(tmp_path)] == ["ok"]
    report = recover_report(tmp_path)
    assert report.batches_damaged == 0 and not report.quarantined and report.rows_kept == 160
