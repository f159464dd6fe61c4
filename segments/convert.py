"""Turn what the writer was given (lists of `TradeRow` tuples, Arrow batches) into Arrow batches.

Converting Python tuples is the writer's hot spot. Measured alternatives (bench_writer.py):
``zip(*rows)`` then one ``pa.array`` per column costs about twice as much as letting Arrow
read the tuples directly as a struct array and flattening it, which is what `Converter` does.
The low-cardinality strings come out dictionary-encoded (a per-batch dictionary; the
hour file remaps it to its own). Rows are converted in pieces so that the writer thread
releases the GIL between them and the recorder's event loop is never held for long.

A `TradeRow` has no ``source``: every batch converted from rows gets the constant ``"ws"``
(`constant_dictionary`, a shared buffer of zero indices: no per-row work). A columnar batch
may carry its own ``source`` column (values from `SOURCES`); without one it is ``"ws"`` too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from pumpwatch.errors import StoreError
from pumpwatch.segments.schema import (
    DICT_TYPE,
    ROW_SCHEMA,
    SEGMENT_SCHEMA,
    SOURCE_LIVE,
    SOURCES,
    TIME_TYPE,
    TradeRow,
    constant_dictionary,
)

log = logging.getLogger(__name__)

PIECE_ROWS = 16384
# Nullable everywhere so that a None in a row is converted and then reported, not trusted.
# Times convert as int64 and are then viewed as timestamps (zero-copy): Arrow's timestamp
# converter also tries datetime objects on every value, ~5% of the whole conversion.
ROW_TYPE = pa.struct(
    [
        pa.field(
            f.name, pa.int64() if f.type == TIME_TYPE else SEGMENT_SCHEMA.field(f.name).type, nullable=True
        )
        for f in ROW_SCHEMA
    ]
)
_TIME_POS = [i for i, f in enumerate(ROW_SCHEMA) if f.type == TIME_TYPE]
_REQUIRED = [i for i, f in enumerate(ROW_SCHEMA) if not f.nullable]
_CONVERT_ERRORS = (pa.ArrowException, TypeError, ValueError, OverflowError)


class Converter:
    """Converts queued items to batches of `SEGMENT_SCHEMA` (with batch-local dictionaries).

    A row that cannot be stored (wrong arity or type, a null where none is allowed) is left
    out of the batch, and `bad` is set to a `StoreError` describing the first one, which the
    writer raises after writing the good rows.
    """

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.bad: StoreError | None = None
        self.bad_rows = 0

    def batches(self, items: Iterable[Sequence[TradeRow] | pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Yield batches in the order the items were appended."""
        rows: list[TradeRow] = []
        for item in items:
            if isinstance(item, pa.RecordBatch):
                if rows:
                    yield from self._rows(rows)
                    rows = []
                yield self._columnar(item)
            else:
                rows.extend(item)
                if len(rows) >= PIECE_ROWS:
                    yield from self._rows(rows)
                    rows = []
        if rows:
            yield from self._rows(rows)

    def _rows(self, rows: list[TradeRow]) -> Iterator[pa.RecordBatch]:
        for off in range(0, len(rows), PIECE_ROWS):
            piece = rows[off : off + PIECE_ROWS]
            try:
                arr = pa.array(piece, ROW_TYPE)
            except _CONVERT_ERRORS:
                arr = self._salvage(piece)
            if arr.null_count or any(arr.field(i).null_count for i in _REQUIRED):
                arr = self._salvage(piece)
            if len(arr):
                cols = arr.flatten()
                for i in _TIME_POS:
                    cols[i] = cols[i].view(TIME_TYPE)
                cols.append(constant_dictionary(SOURCE_LIVE, len(arr)))
                yield pa.RecordBatch.from_arrays(cols, schema=SEGMENT_SCHEMA)

    def _salvage(self, piece: list[TradeRow]) -> pa.StructArray:
        """Slow path, only after a conversion failed: keep the good rows, report the bad."""
        good = []
        for row in piece:
            try:
                one = pa.array([row], ROW_TYPE)
                if one.null_count or any(one.field(i).null_count for i in _REQUIRED):
                    raise ValueError("null in a required column")
            except _CONVERT_ERRORS as exc:
                self.bad_rows += 1
                if self.bad is None:
                    self.bad = StoreError(f"{self.stream}: a trade row cannot be stored ({exc}): {row!r}")
                continue
            good.append(row)
        dropped = len(piece) - len(good)
        # the writer logs rejections once per state change; per piece only at debug level
        log.debug("%s: %d rows cannot be stored (total %d)", self.stream, dropped, self.bad_rows)
        return pa.array(good, ROW_TYPE)

    def _columnar(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        columns = batch.columns
        if len(columns) == len(ROW_SCHEMA):
            columns = [*columns, constant_dictionary(SOURCE_LIVE, batch.num_rows)]
        cols = []
        for field, col in zip(SEGMENT_SCHEMA, columns, strict=True):
            if not field.nullable and col.null_count:
                raise StoreError(f"{self.stream}: column {field.name} holds nulls")
            if field.type == DICT_TYPE:
                if not pa.types.is_dictionary(col.type):
                    col = pc.dictionary_encode(col)
                if col.type != DICT_TYPE:
                    col = col.cast(DICT_TYPE)
            elif col.type != field.type:
                try:
                    col = col.cast(field.type)
                except _CONVERT_ERRORS as exc:
                    msg = f"{self.stream}: column {field.name} of type {col.type}: {exc}"
                    raise StoreError(msg) from None
            cols.append(col)
        sources = cols[-1].dictionary
        if len(sources) > 1 or (len(sources) == 1 and sources[0].as_py() != SOURCE_LIVE):
            used = set(pc.unique(cols[-1]).dictionary_decode().to_pylist())
            if not used <= set(SOURCES):
                raise StoreError(
                    f"{self.stream}: source values {sorted(used - set(SOURCES))} are not {SOURCES}"
                )
        return pa.RecordBatch.from_arrays(cols, schema=SEGMENT_SCHEMA)
