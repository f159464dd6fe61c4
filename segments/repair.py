"""Write trades repaired from an exchange's REST history into the store (issue 10).

Repaired rows never go through the live `SegmentWriter`: its files are by *receive* hour and
hold what one connection received, in order. `write_repaired` instead

1. takes the stream's repair lock (an exclusive ``flock`` on
   ``segments/exchange=<e>/market=<m>/.repair.lock``; a hidden name, so dataset readers never
   see it), so two repairers, in one process or several, never both write the same trade;
2. reads what the store already holds for the offered symbols over the offered rows' time
   span (live files, sealed and open, and earlier repair files) and drops every offered row
   already there. A row's key is ``(symbol, trade_id)`` where the trade id is not null; else
   ``(symbol, time, price, qty, side)`` (floats compared bit for bit), counted: an id-less key
   offered `m` times and stored `k` times is written ``max(0, m - k)`` times (two genuine
   fills may share it);
3. groups the remaining rows by the UTC hour of their **trade** time and writes each group as
   one new sealed segment ``<HHMMSS>.rest<N>.arrow`` in that hour's date directory (``HHMMSS``:
   the group's first trade second; ``N``: the first free number), source ``"rest"``, sorted by
   (base, time), in record batches of up to 65,536 rows carrying the same time-bound and
   checksum metadata as live batches (``checksum.py``). Each file is written under a hidden
   temporary name (holding an exclusive ``flock``, so `recover` leaves it alone), fsynced,
   renamed, and its directory fsynced.

The reader picks files by the hour in their name (widened by its slack) and batches by their
trade-time bounds, so every window read finds repair files; they are otherwise ordinary sealed
segments for listing, retention and status.

What is not seen: rows still waiting in a live writer's queue (not yet flushed). A caller that
repairs a span reaching up to "now" should flush the live writer first or stop the span
before the writer's last durable batch.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from pumpwatch.atomic import fsync_dir
from pumpwatch.errors import StoreError
from pumpwatch.segments.checksum import ChecksumFileWriter
from pumpwatch.segments.compact import batch_metadata
from pumpwatch.segments.convert import Converter
from pumpwatch.segments.hourfile import make_dirs
from pumpwatch.segments.paths import repair_name, segment_dir, segment_root
from pumpwatch.segments.reader import iter_batches
from pumpwatch.segments.schema import (
    DICT_COLUMNS,
    ROW_SCHEMA,
    SEGMENT_SCHEMA,
    SOURCE_REST,
    TRADE_FIELDS,
    TRADE_SCHEMA,
    TradeRow,
    constant_dictionary,
)
from pumpwatch.streams import split_stream
from pumpwatch.timeunits import US_PER_HOUR

log = logging.getLogger(__name__)

REPAIR_LOCK = ".repair.lock"
TEMP_SUFFIX = ".repairing"
MAX_BATCH_ROWS = 65536
COMPRESSION_LEVEL = 3

_ID_KEY = ["symbol", "trade_id"]
_SOURCE_POS = TRADE_SCHEMA.get_field_index("source")
_RECV_POS = TRADE_SCHEMA.get_field_index("recv_time")

Rows: TypeAlias = Sequence[TradeRow] | pa.Table | pa.RecordBatch


@dataclass(frozen=True, slots=True)
class RepairWrite:
    """What one `write_repaired` call did."""

    stream: str
    offered: int  # rows given
    written: int  # rows new to the store, now written
    duplicates: int  # rows dropped: already stored, or repeated within the offer
    files: tuple[Path, ...]  # the new repair files, one per UTC trade hour


def repair_lock_path(data_dir: str | os.PathLike[str], stream: str) -> Path:
    """``<data_dir>/segments/exchange=<e>/market=<m>/.repair.lock``."""
    exchange, market = split_stream(stream)
    return segment_root(data_dir) / f"exchange={exchange}" / f"market={market}" / REPAIR_LOCK


@contextmanager
def repair_lock(data_dir: str | os.PathLike[str], stream: str) -> Iterator[None]:
    """Hold the stream's exclusive repair lock (blocks while another repairer holds it)."""
    path = repair_lock_path(data_dir, stream)
    try:
        make_dirs(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot open the repair lock {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_repaired(
    data_dir: str | os.PathLike[str],
    stream: str,
    rows: Rows,
    *,
    recv_us: int | None = None,
    fsync: bool = True,
) -> RepairWrite:
    """Store the trades of `rows` that the store does not hold yet, as source ``"rest"``.

    `rows`: `TradeRow` tuples, or a table/batch with the columns of `TRADE_SCHEMA` (``source``
    optional and ignored). `recv_us`, when given, replaces every row's ``recv_time`` (when the
    REST response was received); otherwise the rows' own is kept. A row that cannot be stored
    (a null where none is allowed, a wrong type) raises `StoreError` before anything is written.
    """
    split_stream(stream)  # only a known stream id ever becomes a path
    offer = _offer_table(stream, rows, recv_us)
    if offer.num_rows == 0:
        return RepairWrite(stream, 0, 0, 0, ())
    with repair_lock(data_dir, stream):
        stored = _stored_keys(data_dir, stream, offer)
        keep = _new_rows(offer, stored)
        fresh = offer.take(pa.array(keep, pa.int64()))
        files = tuple(_write_hour(data_dir, stream, part, fsync=fsync) for part in _by_hour(fresh))
    result = RepairWrite(stream, offer.num_rows, fresh.num_rows, offer.num_rows - fresh.num_rows, files)
    log.info(
        "%s: repair wrote %d of %d offered rows (%d already stored) in %d files",
        stream,
        result.written,
        result.offered,
        result.duplicates,
        len(files),
    )
    return result


def _offer_table(stream: str, rows: Rows, recv_us: int | None) -> pa.Table:
    """The offered rows as a table of `TRADE_SCHEMA` (plain strings), source ``"rest"``."""
    converter = Converter(stream)
    if isinstance(rows, pa.Table | pa.RecordBatch):
        names = tuple(rows.schema.names)
        if names not in (TRADE_FIELDS, tuple(TRADE_SCHEMA.names)):
            raise StoreError(f"{stream}: repair columns {list(names)} are not {TRADE_SCHEMA.names}")
        if names != TRADE_FIELDS:
            rows = rows.select(list(TRADE_FIELDS))
        items: list[Sequence[TradeRow] | pa.RecordBatch] = (
            list(rows.to_batches()) if isinstance(rows, pa.Table) else [rows]
        )
    else:
        items = [rows]
    batches = list(converter.batches(items))
    if converter.bad is not None:
        raise converter.bad
    table = pa.Table.from_batches(batches, schema=SEGMENT_SCHEMA).cast(TRADE_SCHEMA).combine_chunks()
    n = table.num_rows
    rest = constant_dictionary(SOURCE_REST, n).cast(pa.string())
    table = table.set_column(_SOURCE_POS, TRADE_SCHEMA.field("source"), rest)
    if recv_us is not None:
        recv = pa.array(np.full(n, recv_us, np.int64)).view(TRADE_SCHEMA.field("recv_time").type)
        table = table.set_column(_RECV_POS, TRADE_SCHEMA.field("recv_time"), recv)
    return table


def _stored_keys(data_dir: str | os.PathLike[str], stream: str, offer: pa.Table) -> pa.Table:
    """Key columns of the stored rows of the offered symbols over the offered time span."""
    times = offer.column("time").cast(pa.int64())
    start_us, end_us = pc.min(times).as_py(), pc.max(times).as_py()
    symbols = pc.unique(offer.column("symbol"))
    bases = pc.unique(offer.column("base")).to_pylist()
    base = bases[0] if len(bases) == 1 else None
    names = ["symbol", "time", "price", "qty", "side", "trade_id"]
    parts = []
    for _stream, batch in iter_batches(data_dir, start_us, end_us, streams=[stream], base=base):
        mine = batch.filter(pc.is_in(batch.column("symbol"), value_set=symbols))
        if mine.num_rows:
            parts.append(mine.select(names))
    schema = pa.schema([ROW_SCHEMA.field(n) for n in names])
    return pa.Table.from_batches(parts, schema=schema)


def _new_rows(offer: pa.Table, stored: pa.Table) -> np.ndarray:
    """Positions (ascending) of the offered rows that are not stored yet."""
    position = pa.array(np.arange(offer.num_rows, dtype=np.int64))
    has_id = offer.column("trade_id").is_valid()
    keep: list[np.ndarray] = []

    with_id = offer.select(_ID_KEY).append_column("_pos", position).filter(has_id)
    if with_id.num_rows:
        stored_ids = stored.select(_ID_KEY).filter(stored.column("trade_id").is_valid())
        new = with_id.join(stored_ids, keys=_ID_KEY, join_type="left anti", use_threads=False)
        first = new.group_by(_ID_KEY, use_threads=False).aggregate([("_pos", "min")])  # repeats in the offer
        keep.append(first.column("_pos_min").to_numpy())

    without = np.flatnonzero(~np.asarray(has_id.to_numpy(zero_copy_only=False), dtype=bool))
    if len(without):
        anon = stored.filter(pc.invert(stored.column("trade_id").is_valid()))
        remaining = Counter(_anon_keys(anon))
        offered = _anon_keys(offer.take(pa.array(without)))
        fresh = []
        for pos, key in zip(without.tolist(), offered, strict=True):
            if remaining[key] > 0:
                remaining[key] -= 1  # this copy is the stored one
            else:
                fresh.append(pos)
        keep.append(np.array(fresh, dtype=np.int64))

    return np.sort(np.concatenate(keep)) if keep else np.empty(0, np.int64)


def _anon_keys(table: pa.Table) -> list[tuple[str, int, int, int, str]]:
    """(symbol, time, price bits, qty bits, side): floats by bit pattern, so equal is exact."""
    numbers = [table.column(n).combine_chunks().to_numpy(zero_copy_only=False).view("i8").tolist()
               for n in ("time", "price", "qty")]  # fmt: skip
    symbols, sides = table.column("symbol").to_pylist(), table.column("side").to_pylist()
    return list(zip(symbols, *numbers, sides, strict=True))


def _by_hour(table: pa.Table) -> Iterator[pa.Table]:
    """The rows of each UTC trade hour, sorted by (base, time), hours in order."""
    if table.num_rows == 0:
        return
    table = table.take(pc.sort_indices(table, [("base", "ascending"), ("time", "ascending")]))
    hours = table.column("time").cast(pa.int64()).to_numpy() // US_PER_HOUR
    for hour in np.unique(hours):
        yield table.filter(pa.array(hours == hour))


def _write_hour(data_dir: str | os.PathLike[str], stream: str, part: pa.Table, *, fsync: bool) -> Path:
    """Write one trade hour's rows as a new sealed repair segment; its path."""
    batch = _segment_batch(part)
    start_us = int(pc.min(part.column("time").cast(pa.int64())).as_py())
    directory = segment_dir(data_dir, stream, _day(start_us))
    try:
        make_dirs(directory)
        n = 1
        while (directory / repair_name(start_us, n)).exists():  # under the lock: no race
            n += 1
        final = directory / repair_name(start_us, n)
        tmp = directory / f".{final.name}{TEMP_SUFFIX}"
        tmp.unlink(missing_ok=True)  # left by a repairer that died (we hold the lock)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)  # read: see checksum.py
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _write_ipc(tmp, fd, batch)
            if fsync:
                os.fsync(fd)
            os.rename(tmp, final)
            if fsync:
                fsync_dir(directory)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
    except OSError as exc:
        raise StoreError(
            f"{stream}: cannot write a repair segment in {directory}: {exc.strerror or exc}"
        ) from None
    log.info("%s: wrote repair segment %s (%d rows)", stream, final, batch.num_rows)
    return final


def _day(ts_us: int) -> str:
    return str(np.datetime64(ts_us, "us").astype("datetime64[D]"))


def _segment_batch(part: pa.Table) -> pa.RecordBatch:
    """`part` as one batch of `SEGMENT_SCHEMA`: one dictionary per column for the whole file."""
    part = part.combine_chunks()
    cols = []
    for field in SEGMENT_SCHEMA:
        col = (
            part.column(field.name).chunk(0)
            if part.num_rows
            else pa.array([], TRADE_SCHEMA.field(field.name).type)
        )
        cols.append(pc.dictionary_encode(col).cast(field.type) if field.name in DICT_COLUMNS else col)
    return pa.RecordBatch.from_arrays(cols, schema=SEGMENT_SCHEMA)


def _write_ipc(path: Path, fd: int, batch: pa.RecordBatch) -> None:
    """Write `batch` to `path` (open as `fd`) in record batches with time bounds and checksums."""
    options = ipc.IpcWriteOptions(
        compression=pa.Codec("zstd", COMPRESSION_LEVEL), emit_dictionary_deltas=True, use_threads=False
    )
    writer = ChecksumFileWriter(path, fd, SEGMENT_SCHEMA, options)
    for off in range(0, batch.num_rows, MAX_BATCH_ROWS):
        piece = batch.slice(off, MAX_BATCH_ROWS)
        writer.write_batch(piece, batch_metadata(piece))
    writer.close()
