"""Which parts of a window the store cannot read: damaged sealed segments, per stream.

A sealed segment ends with an end-of-stream marker and its footer; `ipcscan.scan_segment`
stops at the first message it cannot frame and the reader keeps what precedes it (logging
"damaged after byte …"). The rows after that point are lost to every reader, and nothing but
this scan can tell, because their times are inside the lost bytes. The damaged span of such a
file is therefore bounded by what is known about its rows:

- it starts at the largest exchange time of the last readable record batch (its custom
  metadata, read without decompressing), or at the file's HHMMSS when no batch is readable;
- it ends at the end of the file's UTC hour (a file holds the rows received in that hour).

An open ``_`` file cut short is not damage (it is still being written, or a crash tore its
tail, which recovery salvages); only sealed files count. Pure reading: nothing is written.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from pumpwatch.errors import StoreError
from pumpwatch.segments.ipcscan import scan_segment
from pumpwatch.segments.paths import HourlyFile, list_segments
from pumpwatch.segments.schema import BATCH_TIME_MAX
from pumpwatch.timeunits import US_PER_S

log = logging.getLogger(__name__)

DEFAULT_SLACK_S = 300.0  # the reader's choice of files (segments.reader.DEFAULT_SLACK_S)


@dataclass(frozen=True)
class DamagedSpan:
    """``[start_us, end_us)`` of one sealed file's rows that cannot be read, and why."""

    start_us: int
    end_us: int  # exclusive
    path: str
    offset: int  # the file offset where the readable prefix ends
    error: str


def file_damage(seg: HourlyFile) -> DamagedSpan | None:
    """The damaged span of one sealed segment file, or None when it reads to its end."""
    if not seg.sealed:
        return None
    try:
        with pa.memory_map(str(seg.path)) as mm:
            buf = mm.read_buffer()
    except FileNotFoundError:
        return None  # pruned since it was listed
    except OSError as exc:
        raise StoreError(f"cannot read segment {seg.path}: {exc}") from None
    scan = scan_segment(buf)
    if scan.error is None:
        return None
    start_us = seg.start_us
    for chunk in reversed(scan.batches):
        hi = chunk.meta.get(BATCH_TIME_MAX)
        if hi is not None:
            start_us = min(int(hi), seg.hour_end_us)
            break
    return DamagedSpan(start_us, seg.hour_end_us, str(seg.path), scan.valid_end, scan.error)


def damaged_spans(
    data_dir: str | os.PathLike[str],
    start_us: int,
    end_us: int,
    *,
    streams: Sequence[str] | None = None,
    slack_s: float = DEFAULT_SLACK_S,
) -> dict[str, list[DamagedSpan]]:
    """Per stream, the damaged spans of the sealed files the reader would open for the closed
    window ``[start_us, end_us]`` (the same choice of files, `slack_s` wide), clipped to
    ``[start_us, end_us + 1)``; streams with no damage are left out."""
    out: dict[str, list[DamagedSpan]] = {}
    if end_us < start_us:
        return out
    slack_us = int(slack_s * US_PER_S)
    for seg in list_segments(data_dir, streams, start_us=start_us - slack_us, end_us=end_us + slack_us):
        if seg.start_us - slack_us > end_us or seg.hour_end_us + slack_us <= start_us:
            continue
        damage = file_damage(seg)
        if damage is None:
            continue
        a, b = max(damage.start_us, start_us), min(damage.end_us, end_us + 1)
        if a < b:
            out.setdefault(seg.stream, []).append(DamagedSpan(a, b, damage.path, damage.offset, damage.error))
    return out


def unreadable_spans(
    data_dir: str | os.PathLike[str],
    start_us: int,
    end_us: int,
    *,
    streams: Sequence[str] | None = None,
) -> dict[str, list[tuple[int, int]]]:
    """Per stream, every half-open trade-time span of the closed window ``[start_us, end_us]``
    whose trades the store cannot give back: sealed files cut short (`damaged_spans` above) and
    record batches whose checksum fails or that recovery left out
    (`pumpwatch.segments.reader.damaged_spans`). Streams with none are left out."""
    from pumpwatch.segments.reader import damaged_spans as checksum_spans

    per: dict[str, list[tuple[int, int]]] = {}
    for stream, files in damaged_spans(data_dir, start_us, end_us, streams=streams).items():
        per.setdefault(stream, []).extend((d.start_us, d.end_us) for d in files)
    for stream, inclusive in checksum_spans(data_dir, start_us, end_us, streams=streams).items():
        for lo, hi in inclusive:
            a, b = max(lo, start_us), min(hi + 1, end_us + 1)
            if a < b:
                per.setdefault(stream, []).append((a, b))
    out: dict[str, list[tuple[int, int]]] = {}
    for stream, spans in per.items():
        merged: list[tuple[int, int]] = []
        for a, b in sorted(spans):
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        out[stream] = merged
    return out
