"""Walk the messages of a segment without decoding record batches.

A segment is an Arrow IPC file: 8 bytes of magic (``ARROW1\\0\\0``), then an IPC stream
(schema, dictionaries, record batches), then at sealing an end-of-stream marker, the footer
and the magic again. A file still being written, or torn by a crash, is that stream cut
anywhere. `scan_segment` reads the stream message by message (zero-copy on a memory map),
stops at the first incomplete or undecodable message, and reports each complete record batch
with its byte range and its custom metadata, read straight from the message's flatbuffer so
that a reader can skip a batch without decompressing it. It also reports where each batch's
checksum digits sit and which bytes the checksum covers (``checksum.py``).

Format: https://arrow.apache.org/docs/format/Columnar.html#ipc-file-format
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.ipc as ipc

from pumpwatch.segments.schema import BATCH_CRC, BATCH_CRC_SHARED

FILE_MAGIC = b"ARROW1\x00\x00"
EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # continuation marker + zero length


@dataclass(slots=True)
class Chunk:
    """One complete message: where it is in the file and, for a batch, its custom metadata."""

    kind: str  # "schema" | "dictionary" | "record batch"
    start: int  # file offset of the message's continuation marker
    end: int  # file offset just after its body
    meta: dict[str, str] = field(default_factory=dict)
    # record batches only: the file offsets of the checksums' digits (-1: none), and where the
    # messages written with this batch begin (after the previous record batch, or the file magic
    # for the first: the schema and dictionary messages it brought)
    crc_at: int = -1
    shared_crc_at: int = -1  # the digits of the checksum of the schema and dictionary messages
    unit_start: int = 0
    shared: int = 0  # schema and dictionary messages in [unit_start, start): later batches need them
    body_start: int = -1  # file offset of the message body (-1: none)


@dataclass(slots=True)
class Scan:
    """What `scan_segment` found: complete messages and where the valid prefix ends."""

    chunks: list[Chunk]
    valid_end: int  # file offset after the last complete message
    clean_eos: bool  # the stream ended with an end-of-stream marker (a sealed file)
    error: str | None  # why scanning stopped early, if it did

    @property
    def batches(self) -> list[Chunk]:
        return [c for c in self.chunks if c.kind == "record batch"]


def _custom_metadata(meta: memoryview, offsets: dict[str, int] | None = None) -> dict[str, str]:
    """Decode ``Message.custom_metadata`` (field 4) of an IPC Message flatbuffer; with
    `offsets`, also record where each value's characters start (offset in `meta`)."""
    u32, u16 = struct.Struct("<I").unpack_from, struct.Struct("<H").unpack_from
    root = u32(meta, 0)[0]
    vtable = root - struct.unpack_from("<i", meta, root)[0]
    vt_len = u16(meta, vtable)[0]
    if vt_len < 4 + 2 * 5:
        return {}
    slot = u16(meta, vtable + 4 + 2 * 4)[0]
    if slot == 0:
        return {}
    vec = root + slot + u32(meta, root + slot)[0]
    out: dict[str, str] = {}
    for i in range(u32(meta, vec)[0]):
        elem = vec + 4 + 4 * i
        kv = elem + u32(meta, elem)[0]
        kv_vt = kv - struct.unpack_from("<i", meta, kv)[0]
        kv_vt_len = u16(meta, kv_vt)[0]
        strings = []
        for f in (0, 1):
            off = u16(meta, kv_vt + 4 + 2 * f)[0] if kv_vt_len >= 6 + 2 * f else 0
            if off == 0:
                strings.append("")
                continue
            s = kv + off + u32(meta, kv + off)[0]
            n = u32(meta, s)[0]
            if s + 4 + n > len(meta):
                raise IndexError("string out of the metadata")
            strings.append(bytes(meta[s + 4 : s + 4 + n]).decode())
            if f == 1 and offsets is not None:
                offsets[strings[0]] = s + 4
        out[strings[0]] = strings[1]
    return out


def scan_segment(buf: pa.Buffer) -> Scan:
    """Scan a whole segment held in `buf` (typically a memory map); never raises on bad data."""
    if buf.size < len(FILE_MAGIC) or bytes(buf[: len(FILE_MAGIC)]) != FILE_MAGIC:
        return Scan([], 0, False, "no Arrow file magic")
    return scan_messages(buf, len(FILE_MAGIC))


def scan_messages(buf: pa.Buffer, offset: int, *, from_schema: bool = True) -> Scan:
    """Scan the IPC messages in `buf` from `offset` (`scan_segment` after the magic; the writer
    over what it just wrote, which starts with a schema only for a file's first batch)."""
    base = buf.address
    reader = ipc.MessageReader.open_stream(pa.BufferReader(buf.slice(offset)))
    chunks: list[Chunk] = []
    valid_end = offset
    error: str | None = None
    clean = False
    unit_start, shared = valid_end, 0
    while True:
        try:
            msg = reader.read_next_message()
        except StopIteration:
            clean = _eos_at(buf, valid_end)
            break
        except (pa.ArrowException, OSError, ValueError) as exc:
            error = str(exc).splitlines()[0]
            break
        start = msg.metadata.address - base - 8
        end = msg.metadata.address - base + msg.metadata.size
        body_start = -1
        if msg.body is not None and msg.body.size:
            body_start = msg.body.address - base
            end = body_start + msg.body.size
        if start != valid_end or end > buf.size:  # not where the next message must be: garbage
            error = "message out of place"
            break
        kind = msg.type
        meta: dict[str, str] = {}
        if kind == "record batch":
            offsets: dict[str, int] = {}
            try:
                meta = _custom_metadata(memoryview(msg.metadata), offsets)
            except (struct.error, UnicodeDecodeError, IndexError):
                error = "unreadable batch metadata"
                break
            at, shared_at = offsets.get(BATCH_CRC), offsets.get(BATCH_CRC_SHARED)
            crc_at = -1 if at is None else msg.metadata.address - base + at
            shared_crc_at = -1 if shared_at is None else msg.metadata.address - base + shared_at
            chunks.append(
                Chunk(kind, start, end, meta, crc_at, shared_crc_at, unit_start, shared, body_start)
            )
            unit_start, shared = end, 0
        else:
            if from_schema and not chunks and kind != "schema":
                error = "stream does not start with a schema"
                break
            chunks.append(Chunk(kind, start, end, meta, body_start=body_start))
            shared += 1
        valid_end = end
    if from_schema and chunks and chunks[0].kind != "schema":
        return Scan([], offset, False, error or "no schema")
    return Scan(chunks, valid_end, clean, error)


def _eos_at(buf: pa.Buffer, offset: int) -> bool:
    return bytes(buf[offset : offset + 8]) == EOS or bytes(buf[offset : offset + 4]) == b"\x00\x00\x00\x00"


def stream_of(buf: pa.Buffer, chunks: list[Chunk]) -> pa.Buffer:
    """An IPC stream (schema, the chosen messages, end-of-stream) cut out of a scanned file."""
    sink = pa.BufferOutputStream()
    for c in chunks:
        sink.write(buf.slice(c.start, c.end - c.start))
    sink.write(EOS)
    return sink.getvalue()
