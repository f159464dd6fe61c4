"""A checksum per record batch of a segment: written with the batch, checked wherever it is read.

Arrow IPC carries no checksums, and a flipped byte inside a zstd-compressed buffer can decode
to plausible garbage (prices of ``1e-79``). Every record batch therefore carries two CRC-32s
(zlib's; 3 GB/s on the development box, so no dependency is needed) in its custom metadata,
next to its time bounds, each as 8 lower-case hex digits:

- ``pumpwatch.crc32`` (`BATCH_CRC`): the batch's own IPC message, header (with both checksums'
  digits read as their placeholders, ``........`` and ``::::::::``) and body exactly as stored
  (compressed buffers, padding);
- ``pumpwatch.crc32_shared`` (`BATCH_CRC_SHARED`): the messages written just before it that
  later batches need too: the schema (first batch) and the dictionary messages carrying the
  entries it introduced (CRC of no bytes, ``00000000``, when there are none).

So a flipped byte anywhere from the end of the previous batch (or the file magic) to the end of
this one fails a check. A batch whose own checksum fails is damaged alone; when the shared one
fails, this batch and every later one of the file are damaged (decoded with that schema, their
indices may point at those dictionary entries).

Writing: pyarrow computes a batch's body while it writes the message, after the header. The
writer (`ChecksumFileWriter`) therefore writes the header with placeholders as the values
(same length as the digits, so nothing moves), reads back what it just wrote (one ``pread`` of
the compressed bytes) and overwrites the placeholders with the digits (``pwrite``), before the
batch is fsynced. A crash in between leaves a placeholder: that batch was never durable; an
open file's last batch in that state is a torn tail, not damage.

A batch without the keys (a segment written before checksums existed) is `UNCHECKED`: it reads
as before, unverified.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from pumpwatch.atomic import fsync_dir
from pumpwatch.segments.ipcscan import FILE_MAGIC, Chunk, Scan, scan_messages, stream_of
from pumpwatch.segments.paths import parse_hourly_path
from pumpwatch.segments.schema import (
    BATCH_CRC,
    BATCH_CRC_SHARED,
    BATCH_RECV_MAX,
    BATCH_RECV_MIN,
    BATCH_ROWS,
    BATCH_TIME_MAX,
    BATCH_TIME_MIN,
    CRC_PLACEHOLDER,
    CRC_SHARED_PLACEHOLDER,
    SEGMENT_DAMAGED,
)

log = logging.getLogger(__name__)

_PLACEHOLDER = CRC_PLACEHOLDER.encode()
_SHARED_PLACEHOLDER = CRC_SHARED_PLACEHOLDER.encode()
_PREFIX = struct.Struct("<Ii")  # continuation marker, metadata length
_U32, _I32, _U16, _I64 = struct.Struct("<I"), struct.Struct("<i"), struct.Struct("<H"), struct.Struct("<q")
OK, DAMAGED, UNCHECKED = "ok", "damaged", "unchecked"
IN_PROGRESS = "in progress"  # an open file's last batch, not stamped yet (readers decide)
UNSTAMPED = "checksum never written (the writer stopped mid-write)"


class ChecksumFileWriter:
    """An Arrow IPC file writer on `path` whose record batches carry their checksums.

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
        """Write `batch` with `metadata` and its checksums (the bytes reach the OS, unsynced)."""
        start = self._sink.tell()
        meta = {**metadata, BATCH_CRC: CRC_PLACEHOLDER, BATCH_CRC_SHARED: CRC_SHARED_PLACEHOLDER}
        self._writer.write_batch(batch, custom_metadata=meta)
        self._sink.flush()
        end = self._sink.tell()
        unit = os.pread(self._fd, end - start, start)
        (a, crc_a), (b, crc_b) = sorted(_stamps(unit))
        patch = bytearray(unit[a : b + len(_PLACEHOLDER)])  # both digits sit in the one header
        patch[: len(_PLACEHOLDER)] = b"%08x" % crc_a
        patch[b - a :] = b"%08x" % crc_b
        os.pwrite(self._fd, patch, start + a)

    def abandon(self) -> None:
        """Close the buffered stream without a footer (a failed write is being cut back); what
        it still held may reach the file, and the caller truncates to the last good batch."""
        self._sink.close()

    def close(self) -> None:
        """Footer and close (not fsynced)."""
        self._writer.close()
        self._sink.flush()
        self._sink.close()


def _stamps(unit: bytes) -> list[tuple[int, int]]:
    """[(offset of placeholder digits in `unit`, checksum)] for the two checksums of the batch
    that ends `unit`: what one ``write_batch`` wrote (maybe the file magic and the schema, then
    dictionary messages, then the record batch message). Walks the message framing by hand:
    pyarrow's message reader costs more than the checksums themselves on a small batch."""
    offset = len(FILE_MAGIC) if unit[: len(FILE_MAGIC)] == FILE_MAGIC else 0
    pos, start, meta_end = offset, -1, -1
    while pos < len(unit):
        marker, length = _PREFIX.unpack_from(unit, pos)
        if marker != 0xFFFFFFFF:
            raise AssertionError(f"no IPC message at {pos} of what was just written")  # pragma: no cover
        meta = pos + 8
        root = meta + _U32.unpack_from(unit, meta)[0]
        vtable = root - _I32.unpack_from(unit, root)[0]
        slot = _U16.unpack_from(unit, vtable + 10)[0] if _U16.unpack_from(unit, vtable)[0] > 10 else 0
        body = _I64.unpack_from(unit, root + slot)[0] if slot else 0  # Message.bodyLength
        start, meta_end = pos, meta + length
        pos = meta_end + body
    own_at = unit.find(b"\x08\x00\x00\x00" + _PLACEHOLDER, start, meta_end) + 4
    shared_at = unit.find(b"\x08\x00\x00\x00" + _SHARED_PLACEHOLDER, start, meta_end) + 4
    if own_at < 4 or shared_at < 4:
        raise AssertionError("the batch just written has no checksum placeholders")  # pragma: no cover
    view = memoryview(unit)
    chunk = Chunk("record batch", start, len(unit), crc_at=own_at, shared_crc_at=shared_at)
    return [(own_at, _batch_crc(view, chunk)), (shared_at, zlib.crc32(view[offset:start]))]


def _batch_crc(view: memoryview, chunk: Chunk) -> int:
    """CRC-32 of the batch message with both checksums' digits read as their placeholders."""
    crc, pos = 0, chunk.start
    for at, placeholder in sorted(((chunk.crc_at, _PLACEHOLDER), (chunk.shared_crc_at, _SHARED_PLACEHOLDER))):
        crc = zlib.crc32(placeholder, zlib.crc32(view[pos:at], crc))
        pos = at + len(placeholder)
    return zlib.crc32(view[pos : chunk.end], crc)


def _stored(chunk: Chunk, key: str, at: int) -> int | str | None:
    """The checksum stored under `key`: an int, None if absent, or a reason it is unusable."""
    value = chunk.meta.get(key)
    if value is None:
        return None
    if value in (CRC_PLACEHOLDER, CRC_SHARED_PLACEHOLDER):
        return UNSTAMPED
    try:
        if at < 0 or len(value) != len(_PLACEHOLDER):
            raise ValueError
        return int(value, 16)
    except ValueError:
        return "malformed checksum"


def batch_checksum_ok(buf: pa.Buffer, chunk: Chunk) -> tuple[str | None, str | None] | None:
    """(problem with the batch's own message, problem with its shared messages), each None when
    it checks out; None when the batch has no checksums (an older segment)."""
    own = _stored(chunk, BATCH_CRC, chunk.crc_at)
    shared = _stored(chunk, BATCH_CRC_SHARED, chunk.shared_crc_at)
    if own is None and shared is None:
        return None
    view = memoryview(buf)
    problems: list[str | None] = []
    for stored, compute in (
        (own, lambda: _batch_crc(view, chunk) if chunk.shared_crc_at >= 0 else -1),
        (shared, lambda: zlib.crc32(view[chunk.unit_start : chunk.start])),
    ):
        if isinstance(stored, str):
            problems.append(stored)
        elif stored is None:
            problems.append("checksum missing")
        else:
            problems.append(None if compute() == stored else "checksum mismatch")
    return problems[0], problems[1]


@dataclass
class Checks:
    """The outcome of `check_batches` for the batch ordinals it was asked about."""

    status: dict[int, str] = field(default_factory=dict)  # ordinal -> OK | DAMAGED | UNCHECKED
    reasons: dict[int, str] = field(default_factory=dict)  # ordinal -> why, for damaged ones
    poisoned_from: int | None = None  # first ordinal of a damaged unit with schema or dictionaries

    @property
    def damaged(self) -> list[int]:
        return sorted(i for i, s in self.status.items() if s == DAMAGED)

    def usable(self, ordinal: int) -> bool:
        return self.status.get(ordinal) not in (DAMAGED, IN_PROGRESS) and (
            self.poisoned_from is None or ordinal < self.poisoned_from
        )


def check_batches(buf: pa.Buffer, scan: Scan, ordinals: Iterable[int] | None = None) -> Checks:
    """Check the checksums of the record batches `ordinals` (None: all) of a scanned segment.

    A batch whose write unit carried the schema or dictionary messages is checked too even when
    not asked for, since every later batch depends on it; a damaged one marks every later asked
    batch damaged (``"after damaged dictionary or schema messages"``).
    """
    batches = scan.batches
    wanted = set(range(len(batches)) if ordinals is None else ordinals)
    # one writer wrote the whole file: if any batch has checksums, all must (a damaged header
    # must not pass a batch off as one written before checksums existed)
    checksummed = any(BATCH_CRC in b.meta or BATCH_CRC_SHARED in b.meta for b in batches)
    out = Checks()
    for i, chunk in enumerate(batches):
        if out.poisoned_from is not None:
            if i in wanted:
                out.status[i] = DAMAGED
                out.reasons[i] = "after damaged dictionary or schema messages"
            continue
        if i not in wanted and not chunk.shared:
            continue  # nothing later depends on it
        found = batch_checksum_ok(buf, chunk)
        if found is None:
            found = ("checksum missing", "checksum missing") if checksummed else None
        if found is None:
            if i in wanted:
                out.status[i] = UNCHECKED
            continue
        own, shared = found
        if shared is not None and chunk.shared:
            out.poisoned_from = i
        problem = own or shared
        if i in wanted:
            out.status[i] = OK if problem is None else DAMAGED
            if problem is not None:
                where = "dictionary or schema messages" if own is None else "batch"
                out.reasons[i] = UNSTAMPED if problem == UNSTAMPED else f"{problem} ({where})"
    return out


def usable_chunks(scan: Scan, checks: Checks, ordinals: Iterable[int]) -> list[Chunk]:
    """The messages to decode the batches `ordinals` (all usable): those batches, and the schema
    and dictionary messages before the last of them (never those of a later or damaged unit)."""
    keep_batches = set(ordinals)
    batches = scan.batches
    if not keep_batches:
        return scan.chunks[:1]
    cut = max(batches[i].end for i in keep_batches)
    if checks.poisoned_from is not None:
        cut = min(cut, batches[checks.poisoned_from].unit_start)
    out: list[Chunk] = []
    ordinal = 0
    for chunk in scan.chunks:
        if chunk.kind == "record batch":
            if ordinal in keep_batches:
                out.append(chunk)
            ordinal += 1
        elif chunk.start < cut:
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


MAX_RESYNC_TRIES = 4096


def damaged_tail(buf: pa.Buffer, scan: Scan) -> bool:
    """Whether the bytes after an open file's readable prefix are damage rather than a torn
    write: a torn write is the file's last message cut short, so finding an intact, checksummed
    record batch after the point where scanning stopped means bytes in between were damaged.

    Messages start at multiples of 8; each candidate continuation marker is tried (at most
    `MAX_RESYNC_TRIES`). Only called when a scan stopped early, which is rare.
    """
    if scan.error is None:
        return False
    view = memoryview(buf)
    pos, tries = scan.valid_end + 8, 0
    pos += -pos % 8
    marker = b"\xff\xff\xff\xff"
    while tries < MAX_RESYNC_TRIES:
        cand = _find(view, marker, pos)
        if cand < 0:
            return False
        tries += 1
        if cand % 8 == 0:
            for chunk in scan_messages(buf, cand, from_schema=False).chunks:
                if chunk.kind == "record batch":
                    found = batch_checksum_ok(buf, chunk)
                    if found is not None and found[0] is None:
                        return True
                    break
        pos = cand + 4
    return False


def _find(view: memoryview, needle: bytes, start: int) -> int:
    """Absolute offset of `needle` in `view` from `start`, or -1 (searching a megabyte at a time)."""
    step = 1 << 20
    while start < len(view):
        piece = bytes(view[start : start + step + len(needle)])
        i = piece.find(needle)
        if i >= 0:
            return start + i
        start += step
    return -1
