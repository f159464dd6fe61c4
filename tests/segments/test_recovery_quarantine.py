"""Recovery that moves a whole ``_`` file to quarantine leaves a record of the damage (review of
issue 11): a flipped byte in the schema message used to make the hour vanish from every damage
report (readers, ``verify``), so coverage could claim it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.store import T0_US, make_rows

from pumpwatch.segments.paths import list_segments
from pumpwatch.segments.reader import damaged_spans, read_trades
from pumpwatch.segments.recovery import recover_report
from pumpwatch.segments.verify import verify_store
from pumpwatch.segments.writer import SegmentWriter

STREAM = "binance_spot"
HOUR_END = T0_US + 3_600_000_000


def _crashed_file(tmp_path: Path) -> Path:
    """A segment as a crash leaves it: ``_HHMMSS.arrow``, complete batches, no lock."""
    with SegmentWriter(tmp_path, STREAM, fsync=False, reserve=False) as w:
        for k in range(3):
            w.append(make_rows(50, start_us=T0_US + k * 10_000_000))
            w.flush()
    (seg,) = list_segments(tmp_path, [STREAM])
    open_name = seg.path.with_name("_" + seg.path.name)
    os.rename(seg.path, open_name)
    return open_name


@pytest.mark.parametrize("offset", [12, 9, 4])  # schema metadata length, its framing, the magic
def test_a_quarantined_file_leaves_a_damage_record_for_its_hour(tmp_path: Path, offset: int) -> None:
    path = _crashed_file(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))
    report = recover_report(tmp_path)
    assert report.quarantined and not path.exists()
    assert damaged_spans(tmp_path, T0_US, HOUR_END - 1) == {STREAM: [(T0_US, HOUR_END - 1)]}
    verdicts = verify_store(tmp_path)
    assert [v.status for v in verdicts] == ["damaged"]
    assert read_trades(tmp_path, T0_US, HOUR_END - 1).num_rows == 0
    again = recover_report(tmp_path)  # the record is a sealed file: nothing left to recover
    assert not again.sealed and not again.quarantined


def test_a_torn_first_write_is_removed_without_a_record(tmp_path: Path) -> None:
    path = _crashed_file(tmp_path)
    path.write_bytes(path.read_bytes()[:20])  # died in its first write: a prefix of magic + schema
    report = recover_report(tmp_path)
    assert report.removed == [path] and not report.quarantined
    assert list_segments(tmp_path, [STREAM]) == []
    assert damaged_spans(tmp_path, T0_US, HOUR_END - 1) == {}
