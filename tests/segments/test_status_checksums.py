"""`pumpwatch status` verifies the checksum of every batch it decodes (review of issue 11): the
bytes are read anyway, and a damaged batch must be counted as damage, not decoded into wrong
figures."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from helpers.store import T0_US, make_rows

from pumpwatch.segments.ipcscan import scan_segment
from pumpwatch.segments.paths import list_segments
from pumpwatch.segments.status import count_segment
from pumpwatch.segments.writer import SegmentWriter

STREAM = "binance_spot"


def test_a_damaged_batch_that_status_would_decode_is_counted_as_damaged(tmp_path: Path) -> None:
    rows = make_rows(4000, step_us=1000)  # one batch receiving over 4 s
    with SegmentWriter(tmp_path, STREAM, fsync=False, reserve=False) as w:
        w.append(rows)
    (seg,) = list_segments(tmp_path, [STREAM])
    window = (T0_US + 2_000_000, T0_US + 10_000_000)  # starts inside the batch: it is decoded
    clean = count_segment(seg.path, sealed=True, recv_window=window)
    assert (clean.decoded_batches, clean.damaged_batches) == (1, 0)
    assert clean.recent_rows == sum(window[0] <= r[1] <= window[1] for r in rows)
    raw = bytearray(seg.path.read_bytes())
    with pa.memory_map(str(seg.path)) as mm:
        (chunk,) = scan_segment(mm.read_buffer()).batches
    raw[chunk.end - 64] ^= 0x10  # inside the batch body
    seg.path.write_bytes(bytes(raw))
    hurt = count_segment(seg.path, sealed=True, recv_window=window)
    assert (hurt.decoded_batches, hurt.damaged_batches, hurt.recent_rows) == (0, 1, 0)
