"""Rewrite a finished hour as large, symbol-grouped batches: what a sealed segment holds.

While the hour is open the writer appends one small batch per flush (about a second of
trades), which is what crash safety needs but compresses poorly: measured on the bench market
at 400 trades/s, 35 bytes per trade against 19 for batches of 65,536 rows. At sealing the file
is therefore rewritten once in batches of up to `max_rows` rows, each batch's rows grouped by
symbol (stable: a symbol's trades keep their receive order), which puts each symbol's
sequential trade ids and nearby prices side by side for zstd: 14 bytes per trade, about
2 M trades/s of CPU. Every batch keeps its time bounds in its custom metadata and gets a new
checksum (``checksum.py``); the caller checks the input batches' checksums as it reads them.

Input batches carry cumulative dictionaries (each one extends the previous), so the largest
dictionary seen so far is valid for every earlier batch's indices; the output again only
extends its dictionaries, which the IPC file format allows as deltas.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from pumpwatch.segments.checksum import ChecksumFileWriter
from pumpwatch.segments.schema import (
    BATCH_RECV_MAX,
    BATCH_RECV_MIN,
    BATCH_ROWS,
    BATCH_TIME_MAX,
    BATCH_TIME_MIN,
    DICT_COLUMNS,
    SEGMENT_SCHEMA,
)

_DICT_POS = [SEGMENT_SCHEMA.get_field_index(n) for n in DICT_COLUMNS]
_SYMBOL_POS = SEGMENT_SCHEMA.get_field_index("symbol")

# A symbol-grouped batch of at least this many rows compresses within ~7% of a 65,536-row one
# (bench market, zstd 3: 15.3 bytes/trade at 8,192 rows, 14.4 at 65,536; 31 at one second of
# trades). The writer groups such batches as it writes them, and sealing leaves a file made of
# them as it is instead of rewriting it (see `HourFile.seal`).
COMPACT_MIN_ROWS = 8192


def group_by_symbol(batch: pa.RecordBatch) -> pa.RecordBatch:
    """`batch` with its rows grouped by symbol (dictionary order), each symbol in its row order."""
    return batch.take(pc.sort_indices(batch.column(_SYMBOL_POS).indices))  # a stable sort


def batch_metadata(batch: pa.RecordBatch) -> dict[str, str]:
    """Custom metadata of a segment batch: its time bounds (µs) and row count."""
    times = batch.column(0).to_numpy().view("i8")
    recvs = batch.column(1).to_numpy().view("i8")
    return {
        BATCH_TIME_MIN: str(int(times.min())),
        BATCH_TIME_MAX: str(int(times.max())),
        BATCH_RECV_MIN: str(int(recvs.min())),
        BATCH_RECV_MAX: str(int(recvs.max())),
        BATCH_ROWS: str(batch.num_rows),
    }


def _merge(parts: list[pa.RecordBatch]) -> pa.RecordBatch:
    """One batch from consecutive segment batches, grouped by symbol, on the largest dictionaries."""
    cols: list[pa.Array] = []
    for pos in range(len(SEGMENT_SCHEMA)):
        chunks = [p.column(pos) for p in parts]
        if pos in _DICT_POS:
            dictionary = max((c.dictionary for c in chunks), key=len)
            indices = pa.array(np.concatenate([c.indices.to_numpy() for c in chunks]), pa.int32())
            cols.append(pa.DictionaryArray.from_arrays(indices, dictionary))
        else:
            cols.append(chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks))
    return group_by_symbol(pa.RecordBatch.from_arrays(cols, schema=SEGMENT_SCHEMA))


def write_compacted(
    batches: Iterable[pa.RecordBatch],
    dest: Path,
    *,
    max_rows: int = 65536,
    compression_level: int = 3,
    schema: pa.Schema = SEGMENT_SCHEMA,
) -> tuple[int, int, int]:
    """Write `batches` (segment batches in receive order) to a new file `dest`, fsynced, each
    output batch with its checksum (``checksum.py``).

    Returns (rows, batches, fd): `dest` is created exclusively and `fd` holds its exclusive
    flock (so recovery leaves it alone); the caller closes `fd` once the file is in place.
    `schema` is `SEGMENT_SCHEMA`, maybe with more file metadata (the damage recovery found).
    """
    options = ipc.IpcWriteOptions(
        compression=pa.Codec("zstd", compression_level), emit_dictionary_deltas=True, use_threads=False
    )
    rows = written = 0
    fd = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        writer = ChecksumFileWriter(dest, fd, schema, options)
        parts: list[pa.RecordBatch] = []
        waiting = 0
        for batch in batches:
            while batch.num_rows:
                take = min(batch.num_rows, max_rows - waiting)
                parts.append(batch.slice(0, take))
                batch = batch.slice(take)
                waiting += take
                if waiting == max_rows:
                    out = _merge(parts)
                    writer.write_batch(out, batch_metadata(out))
                    rows, written, parts, waiting = rows + out.num_rows, written + 1, [], 0
        if parts:
            out = _merge(parts)
            writer.write_batch(out, batch_metadata(out))
            rows, written = rows + out.num_rows, written + 1
        writer.close()
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        dest.unlink(missing_ok=True)
        raise
    return rows, written, fd
