"""`pumpwatch reparse`: rebuild a stream's segments for a time range from the raw frame journal.

A parser bug costs nothing because every raw frame is kept (DESIGN §6). For each UTC hour that
meets ``[start, end)`` (receive time, which is what decides a row's segment):

1. the hour's sealed segment files are read; their rows received outside ``[start, end)`` are
   kept as they are;
2. the frames received inside ``[start, end)`` are decoded again with the stream's current
   adapter and subscription list, de-duplicated exactly like the live runner does (overlapping
   connections during a rotation, replayed snapshots), and take the place of the old rows of
   that span;
3. the hour's rows, sorted by receive time, are written to ONE new sealed segment that replaces
   the hour's files.

Replacement is crash safe by roll-forward: the new file is written (by the ordinary
`SegmentWriter`, so the on-disk format is the store's own) and sealed under
``<data_dir>/reparse/<stream>/stage/`` (outside ``segments/``, so neither readers nor crash recovery
see it); then an intent manifest (the staged file, its target ``<HH0000>.arrow`` and the old
files to remove) is written atomically; then the staged file is renamed over the target (one
atomic ``rename``) and the other old files of that hour are deleted; then the manifest goes.
If the process dies in between, the next `reparse` (or `finish_pending`) completes the manifest
before doing anything else, so the hour never ends up with both old and new rows for long, and
never with neither. A reader racing the swap may see the old files or the new one, and for the
few milliseconds between the rename and the deletes a restart-split hour's second file twice.

Repair files (``HHMMSS.rest<N>.arrow``: rows from REST history, not from frames) are not
rebuilt and are left as they are.

Hours with an open ``_`` segment (the live recorder's current hour, or a crash not yet
recovered) are skipped, as are hours whose frames are missing while old rows exist (frames are
kept 3 days, segments 7): an empty reparse must never wipe recorded trades.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from pumpwatch.atomic import fsync_dir, write_file_atomic
from pumpwatch.errors import ParseError, StoreError, UsageError
from pumpwatch.recorder.adapter import Adapter, Instruments
from pumpwatch.recorder.stream.dedupe import Deduper
from pumpwatch.segments.frames import iter_frames
from pumpwatch.segments.paths import hour_start_us, list_segments, segment_path
from pumpwatch.segments.schema import (
    ROW_SCHEMA,
    SOURCE_LIVE,
    TRADE_FIELDS,
    TRADE_SCHEMA,
    TradeRow,
    constant_dictionary,
    to_trade_table,
)
from pumpwatch.streams import split_stream
from pumpwatch.timeunits import US_PER_HOUR

log = logging.getLogger(__name__)

REPARSE_DIR = "reparse"


@dataclass
class HourResult:
    """What happened to one hour."""

    hour_us: int
    status: str  # "replaced", "skipped-open", "skipped-no-frames", "empty"
    rows_before: int = 0
    rows_after: int = 0
    frames: int = 0


@dataclass
class ReparseReport:
    """Counts of one reparse run."""

    stream: str
    hours: list[HourResult] = field(default_factory=list)
    frames: int = 0
    trades: int = 0
    duplicates: int = 0
    bad_frames: int = 0
    rolled_forward: int = 0


def _staging_dir(data_dir: str | os.PathLike[str], stream: str) -> Path:
    split_stream(stream)
    return Path(data_dir) / REPARSE_DIR / stream


def _manifest_path(data_dir: str | os.PathLike[str], stream: str) -> Path:
    return _staging_dir(data_dir, stream) / "manifest.json"


def finish_pending(data_dir: str | os.PathLike[str], stream: str) -> bool:
    """Complete a swap an interrupted reparse left behind; True if there was one."""
    if not _apply_manifest(data_dir, stream):
        return False
    log.warning("%s: completed the swap an interrupted reparse left behind", stream)
    return True


def _apply_manifest(data_dir: str | os.PathLike[str], stream: str) -> bool:
    manifest = _manifest_path(data_dir, stream)
    if not manifest.exists():
        return False
    doc = orjson.loads(manifest.read_bytes())
    staged, target = Path(doc["staged"]), Path(doc["target"])
    if staged.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
        fsync_dir(target.parent)
    for old in doc["remove"]:
        Path(old).unlink(missing_ok=True)
    manifest.unlink()
    return True


def rows_to_table(rows: list[TradeRow]) -> pa.Table:
    """Trade rows (TRADE_FIELDS order) as a table of TRADE_SCHEMA."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in TRADE_FIELDS]
    arrays = [
        pa.array(col, type=fld.type)
        if not pa.types.is_timestamp(fld.type)
        else pa.array(col, pa.int64()).cast(fld.type)
        for col, fld in zip(columns, ROW_SCHEMA, strict=True)
    ]
    arrays.append(constant_dictionary(SOURCE_LIVE, len(rows)).cast(pa.string()))
    return pa.Table.from_arrays(arrays, schema=TRADE_SCHEMA)


def _read_segments(paths: Iterable[Path]) -> pa.Table:
    tables = []
    for path in paths:
        try:
            with pa.memory_map(str(path)) as source:
                tables.append(to_trade_table(pa.ipc.open_file(source).read_all()))
        except (OSError, pa.ArrowInvalid) as exc:
            raise StoreError(f"cannot read segment {path}: {exc}") from None
    return pa.concat_tables(tables) if tables else TRADE_SCHEMA.empty_table()


def _write_staged(data_dir: str | os.PathLike[str], stream: str, hour_us: int, table: pa.Table) -> Path:
    """Write `table` as one sealed segment of `hour_us` under the staging root; its path."""
    from pumpwatch.segments.writer import SegmentWriter

    stage_root = _staging_dir(data_dir, stream) / "stage"
    for leftover in list_segments(stage_root, [stream]):  # from an attempt that died before its manifest
        leftover.path.unlink(missing_ok=True)
    with SegmentWriter(stage_root, stream, clock_us=lambda: hour_us) as writer:
        writer.append_batch(table)
    staged = [s for s in list_segments(stage_root, [stream]) if s.sealed]
    if len(staged) != 1 or hour_start_us(staged[0].start_us) != hour_us:
        raise StoreError(f"reparse: expected one staged segment for hour {hour_us}, got {staged}")
    return staged[0].path


def _decode_span(
    adapter: Adapter,
    instruments: Instruments,
    frames: Iterable[tuple[int, bytes | str]],
    deduper: Deduper,
    report: ReparseReport,
) -> tuple[list[TradeRow], int]:
    rows: list[TradeRow] = []
    count = 0
    for recv_us, frame in frames:
        count += 1
        try:
            result = adapter.decode(frame, recv_us, instruments)
        except ParseError:
            report.bad_frames += 1
            continue
        if isinstance(result, list) and result:
            kept = deduper.filter(result)
            report.duplicates += len(result) - len(kept)
            rows.extend(kept)
    return rows, count


def reparse(
    data_dir: str | os.PathLike[str],
    stream: str,
    start_us: int,
    end_us: int,
    *,
    adapter: Adapter,
    instruments: Instruments,
) -> ReparseReport:
    """Rebuild `stream`'s rows received in ``[start_us, end_us)`` from the frame journal."""
    if end_us <= start_us:
        raise UsageError("reparse: the end must be after the start")
    report = ReparseReport(stream=stream)
    report.rolled_forward = int(finish_pending(data_dir, stream))
    _staging_dir(data_dir, stream).mkdir(parents=True, exist_ok=True)
    deduper = Deduper(adapter.dedupe_key)
    for hour_us in range(hour_start_us(start_us), end_us, US_PER_HOUR):
        hour_end_us = hour_us + US_PER_HOUR
        files = [
            s
            for s in list_segments(data_dir, [stream], start_us=hour_us, end_us=hour_end_us - 1)
            if hour_start_us(s.start_us) == hour_us and not s.repair
        ]
        if any(not f.sealed for f in files):
            log.warning(
                "%s: hour %d has an open segment; skipped (reparse sealed hours only)", stream, hour_us
            )
            report.hours.append(HourResult(hour_us, "skipped-open"))
            continue
        old = _read_segments(f.path for f in files)
        lo, hi = max(start_us, hour_us), min(end_us, hour_end_us)
        recv = pc.cast(old.column("recv_time"), pa.int64())
        inside = pc.and_(pc.greater_equal(recv, lo), pc.less(recv, hi))
        frames = ((r, f) for r, f in iter_frames(data_dir, stream, lo, hi) if r < hi)
        rows, nframes = _decode_span(adapter, instruments, frames, deduper, report)
        report.frames += nframes
        old_inside = pc.sum(pc.cast(inside, pa.int64())).as_py() or 0
        if nframes == 0:
            status = "skipped-no-frames" if old_inside else "empty"
            report.hours.append(HourResult(hour_us, status, old.num_rows, old.num_rows))
            if old_inside:
                log.warning(
                    "%s: no frames for hour %d but %d rows on disk; kept as is", stream, hour_us, old_inside
                )
            continue
        new = pa.concat_tables([old.filter(pc.invert(inside)), rows_to_table(rows)])
        new = new.take(pc.sort_indices(new, sort_keys=[("recv_time", "ascending"), ("time", "ascending")]))
        _swap_hour(data_dir, stream, hour_us, [f.path for f in files], new)
        report.trades += len(rows)
        report.hours.append(HourResult(hour_us, "replaced", old.num_rows, new.num_rows, nframes))
        log.info(
            "%s: hour %d rebuilt: %d rows -> %d (%d frames)",
            stream,
            hour_us,
            old.num_rows,
            new.num_rows,
            nframes,
        )
    return report


def _swap_hour(
    data_dir: str | os.PathLike[str], stream: str, hour_us: int, old: list[Path], table: pa.Table
) -> None:
    staged = _write_staged(data_dir, stream, hour_us, table)
    target = min(old, key=lambda p: p.name) if old else segment_path(data_dir, stream, hour_us, sealed=True)
    target = target.with_name(min(target.name, staged.name))
    manifest: dict[str, Any] = {
        "staged": str(staged),
        "target": str(target),
        "remove": [str(p) for p in old if p != target],
    }
    write_file_atomic(_manifest_path(data_dir, stream), orjson.dumps(manifest))
    _apply_manifest(data_dir, stream)
