"""A checksum per record batch of a segment: written with the batch, checked wherever it is read.

Arrow IPC carries no checksums, and a flipped byte inside a zstd-compressed buffer can decode
to plausible garbage (prices of ``1e-79``). Every record batch therefore carries
``pumpwatch.crc32`` in its custom metadata, next to its time bounds: the CRC-32 (zlib's; 3 GB/s
on the development box, so no dependency is needed) of the bytes of its *write unit*, i.e.

- the dictionary messages written with it (the dictionary entries it introduced; later batches
  use them too), and
- its own message: the header (with the checksum's 8 digits read as `CRC_PLACEHOLDER`) and the
  body exactly as stored (compressed buffers, padding included).

So a flipped byte anywhere from the end of the previous batch to the end of this one fails the
check. The unit starts after the previous record batch (or after the schema, for the first).

Writing: pyarrow computes a batch's body while it writes the message, after the header. The
writer (`ChecksumFileWriter`) therefore writes the header with `CRC_PLACEHOLDER` as the value
(same length as the digits, so nothing moves), reads back the unit it just wrote (one ``pread``
of the compressed bytes), and overwrites the placeholder with the digits (one ``pwrite``),
before the batch is fsynced. A crash between the two leaves the placeholder: that batch was
never durable and reads as damaged (recovery: the torn last batch of the file).

Checking (`check_batches`): a batch fails when its digits do not match. A damaged unit that
held dictionary messages also damages every later batch of the file (their indices may point
at the entries it carried), so those count as damaged too. A batch without the key (a segment
written before checksums existed) is `UNCHECKED`: it reads as before, unverified.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from pumpwatch.atomic import fsync_dir
from pumpwatch.segments.ipcscan import FILE_MAGIC, Chunk, Scan, _custom_metadata, stream_of
from pumpwatch.segments.paths import parse_hourly_path
from pumpwatch.segments.schema import (
    BATCH_CRC,
    BATCH_RECV_MAX,
    BATCH_RECV_MIN,
    BATCH_ROWS,
    BATCH_TIME_MAX,
    BATCH_TIME_MIN,
    CRC_PLACEHOLDER,
    SEGMENT_DAMAGED,
)

log = logging.getLogger(__name__)

_PLACEHOLDER = CRC_PLACEHOLDER.encode()
OK, DAMAGED, UNCHECKED = "ok", "damaged", "unchecked"
UNSTAMPED = "checksum never written (the writer stopped mid-write)"


class ChecksumFileWriter:
    """An Arrow IPC file writer on `path` whose record batches carry `BATCH_CRC`.

    `fd` is an open, readable and writable descriptor of `path` (the caller's: it holds the
    file's lock and fsyncs it); the bytes themselves go through a buffered pyarrow sink.
    """

    def __init__(self, path: Path, fd: int, schema: pa.Schema, options: ipc.IpcWriteOptions) -> None:
        self._fd = fd
        self._sink = pa.BufferedOutputStream(pa.OSFile(str(path), "wb"), 1 << 20)
        self._writer = ipc.new_file(self._sink, schema, options=options)

    def tell(self) -> int:
        return int(self._sink.tell())

    def write_batch(self, batch: pa.RecordBatch, metadata: dict[str, str]) -> None:
        """Write `batch` with `metadata` and its checksum (the bytes reach the OS, unsynced)."""
        start = self._sink.tell()
        self._writer.write_batch(batch, custom_metadata={**metadata, BATCH_CRC: CRC_PLACEHOLDER})
        self._sink.flush()
        end = self._sink.tell()
        unit = pa.py_buffer(os.pread(self._fd, end - start, start))
        at, crc = _stamp(unit)
        os.pwrite(self._fd, b"%08x" % crc, start + at)

    def close(self) -> None:
        """Footer and close (not fsynced)."""
        self._writer.close()
        self._sink.flush()
        self._sink.close()


def _stamp(unit: pa.Buffer) -> tuple[int, int]:
    """(offset of the placeholder digits in `unit`, the checksum) of the batch that ends `unit`.

    `unit` is what one ``write_batch`` wrote: maybe the file magic and schema (first batch),
    dictionary messages, then the record batch message.
    """
    offset = len(FILE_MAGIC) if bytes(unit[: len(FILE_MAGIC)]) == FILE_MAGIC else 0
    reader = ipc.MessageReader.open_stream(pa.BufferReader(unit.slice(offset)))
    covered_from, at = 0, -1
    for msg in reader:
        end = msg.metadata.address - unit.address + msg.metadata.size
        if msg.body is not None and msg.body.size:
            end = msg.body.address - unit.address + msg.body.size
        if msg.type == "schema":
            covered_from = end
        elif msg.type == "record batch":
            offsets: dict[str, int] = {}
            _custom_metadata(memoryview(msg.metadata), offsets)
            at = msg.metadata.address - unit.address + offsets[BATCH_CRC]
    if at < 0 or bytes(unit[at : at + len(_PLACEHOLDER)]) != _PLACEHOLDER:
        raise AssertionError("the batch just written has no checksum placeholder")  # pragma: no cover
    return at, zlib.crc32(memoryview(unit)[covered_from:])


def batch_checksum_ok(buf: pa.Buffer, chunk: Chunk) -> bool | None:
    """Whether `chunk`'s unit matches its checksum; None when it has none (an older segment)."""
    value = chunk.meta.get(BATCH_CRC)
    if value is None:
        return None
    if chunk.crc_at < 0 or len(value) != len(_PLACEHOLDER):
        return False
    try:
        want = int(value, 16)
    except ValueError:
        return False  # the placeholder: the writer died before stamping it
    view = memoryview(buf)
    crc = zlib.crc32(view[chunk.unit_start : chunk.crc_at])
    crc = zlib.crc32(_PLACEHOLDER, crc)
    crc = zlib.crc32(view[chunk.crc_at + len(_PLACEHOLDER) : chunk.end], crc)
    return crc == want


@dataclass
class Checks:
    """The outcome of `check_batches` for the batch ordinals it was asked about."""

    status: dict[int, str] = field(default_factory=dict)  # ordinal -> OK | DAMAGED | UNCHECKED
    reasons: dict[int, str] = field(default_factory=dict)  # ordinal -> why, for damaged ones
    poisoned_from: int | None = None  # first ordinal of a damaged unit that carried dictionaries

    @property
    def damaged(self) -> list[int]:
        return sorted(i for i, s in self.status.items() if s == DAMAGED)

    def usable(self, ordinal: int) -> bool:
        return self.status.get(ordinal) != DAMAGED and (
            self.poisoned_from is None or ordinal < self.poisoned_from
        )


def check_batches(buf: pa.Buffer, scan: Scan, ordinals: Iterable[int] | None = None) -> Checks:
    """Check the checksums of the record batches `ordinals` (None: all) of a scanned segment.

    A batch whose write unit carried dictionary messages is checked too even when not asked
    for, since every later batch depends on it; a damaged one marks every later asked batch
    damaged (``"after a damaged dictionary"``).
    """
    batches = scan.batches
    wanted = set(range(len(batches)) if ordinals is None else ordinals)
    out = Checks()
    for i, chunk in enumerate(batches):
        if out.poisoned_from is not None:
            if i in wanted:
                out.status[i] = DAMAGED
                out.reasons[i] = "after a damaged dictionary"
            continue
        if i not in wanted and not chunk.dictionaries:
            continue
        ok = batch_checksum_ok(buf, chunk)
        if ok is False:
            if chunk.dictionaries:
                out.poisoned_from = i
            if i in wanted:
                out.status[i] = DAMAGED
                unstamped = chunk.meta.get(BATCH_CRC) == CRC_PLACEHOLDER
                out.reasons[i] = UNSTAMPED if unstamped else "checksum mismatch"
        elif i in wanted:
            out.status[i] = UNCHECKED if ok is None else OK
    return out


def usable_chunks(scan: Scan, checks: Checks, ordinals: Iterable[int]) -> list[Chunk]:
    """The messages to decode the batches `ordinals` (all usable): the schema and dictionary
    messages before the first poisoned unit, and those batches."""
    keep_batches = set(ordinals)
    cut = None if checks.poisoned_from is None else scan.batches[checks.poisoned_from].unit_start
    out: list[Chunk] = []
    ordinal = 0
    for chunk in scan.chunks:
        if chunk.kind == "record batch":
            if ordinal in keep_batches:
                out.append(chunk)
            ordinal += 1
        elif cut is None or chunk.start < cut:
            out.append(chunk)
    return out


def _int(meta: dict[str, str], key: str) -> int | None:
    try:
        return int(meta[key])
    except (KeyError, ValueError):
        return None


def batch_bounds(chunk: Chunk) -> list[int | None]:
    """``[time_min_us, time_max_us, recv_min_us, recv_max_us, rows]`` of a batch, as its
    metadata says (None where missing); a damaged header may say wrong things."""
    keys = (BATCH_TIME_MIN, BATCH_TIME_MAX, BATCH_RECV_MIN, BATCH_RECV_MAX, BATCH_ROWS)
    return [_int(chunk.meta, k) for k in keys]


def recorded_damage(buf: pa.Buffer, scan: Scan) -> list[list[int | None]]:
    """The batches recovery or sealing dropped for a failed checksum, as the sealed file's
    schema metadata `SEGMENT_DAMAGED` lists them (see `batch_bounds`); [] if none."""
    if not scan.chunks or scan.chunks[0].kind != "schema":
        return []
    head = scan.chunks[0]
    try:
        schema = ipc.read_schema(ipc.read_message(buf.slice(head.start, head.end - head.start)))
    except (pa.ArrowException, OSError, ValueError):
        return []
    raw = (schema.metadata or {}).get(SEGMENT_DAMAGED)
    if raw is None:
        return []
    try:
        items = json.loads(raw)
        return [[None if v is None else int(v) for v in item][:5] for item in items]
    except (ValueError, TypeError):
        return [[None, None, None, None, None]]


def damaged_schema(schema: pa.Schema, dropped: list[list[int | None]]) -> pa.Schema:
    """`schema` with `dropped` (`batch_bounds` lists) recorded as `SEGMENT_DAMAGED`."""
    meta = dict(schema.metadata or {})
    meta[SEGMENT_DAMAGED] = json.dumps(dropped).encode()
    return schema.with_metadata(meta)


def quarantine(path: Path, *, copy: bool = False) -> Path:
    """Move (or copy) a segment file to ``<data_dir>/quarantine/<stream>/<date dir>_<name>``
    (never overwriting: ``.1``, ``.2`` … are appended); its new path."""
    info = parse_hourly_path(path, ".arrow")
    stream = info.stream if info is not None else "unknown"
    data_dir = path.parent.parent.parent.parent.parent  # <data>/segments/exchange=/market=/date=/
    target_dir = data_dir / "quarantine" / stream
    from pumpwatch.segments.hourfile import make_dirs  # hourfile imports this module

    make_dirs(target_dir)
    target = target_dir / f"{path.parent.name}_{path.name}"
    n = 1
    while target.exists():
        target = target_dir / f"{path.parent.name}_{path.name}.{n}"
        n += 1
    if copy:
        shutil.copyfile(path, target)
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    else:
        shutil.move(path, target)
        fsync_dir(path.parent)
    fsync_dir(target_dir)
    return target


@dataclass
class Salvage:
    """The usable part of a scanned segment: what `salvage` found."""

    buf: pa.Buffer
    scan: Scan
    checks: Checks
    keep: list[int]  # ordinals of the batches that passed (or carry no checksum)
    dropped: list[list[int | None]]  # `batch_bounds` of the batches that failed
    kept_rows: int  # rows of the kept batches, from their metadata

    def batches(self) -> Iterable[pa.RecordBatch]:
        """The kept batches, decoded (schema of the file: version 1 or 2)."""
        if not self.keep:
            return iter(())
        return ipc.open_stream(stream_of(self.buf, usable_chunks(self.scan, self.checks, self.keep)))


def salvage(buf: pa.Buffer, scan: Scan) -> Salvage:
    """Check every complete batch of a scanned segment; keep those that pass."""
    checks = check_batches(buf, scan)
    batches = scan.batches
    keep = [i for i in range(len(batches)) if checks.usable(i)]
    dropped = [batch_bounds(batches[i]) for i in range(len(batches)) if not checks.usable(i)]
    kept_rows = sum(_int(batches[i].meta, BATCH_ROWS) or 0 for i in keep)
    return Salvage(buf, scan, checks, keep, dropped, kept_rows)
