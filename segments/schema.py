"""The trade record of DESIGN §4, defined once for every stream.

In memory a trade travels as a plain tuple in `TRADE_FIELDS` order (a `TradeRow`): creating a
tuple costs a fraction of a dataclass, and parsers emit hundreds of thousands per second. On
disk and in Arrow it is `TRADE_SCHEMA`: the tuple's columns (`ROW_SCHEMA`) plus `source`, which
says where a row came from (``"ws"``: received live; ``"rest"``: repaired from the exchange's
REST history, see ``repair.py``). A live row does not carry its source: the segment writer
stamps ``"ws"`` on every batch it writes. Exchange and market are not columns of a segment:
they are hive partitions of its path.

Version 1 segments (written before `source` existed) have the other nine columns only; every
reader shows their rows with source ``"ws"`` (`with_source`).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = "2"
SCHEMA_VERSION_KEY = b"pumpwatch.schema_version"

# (time_us, recv_us, symbol, base, quote, price, qty, side, trade_id)
TradeRow = tuple[int, int, str, str, str, float, float, str, str | None]

TRADE_FIELDS: tuple[str, ...] = (
    "time",
    "recv_time",
    "symbol",
    "base",
    "quote",
    "price",
    "qty",
    "side",
    "trade_id",
)

TIME_TYPE = pa.timestamp("us", tz="UTC")

# A TradeRow's columns: what parsers produce and the live writer is given.
ROW_SCHEMA = pa.schema(
    [
        pa.field("time", TIME_TYPE, nullable=False),  # the exchange's trade time
        pa.field("recv_time", TIME_TYPE, nullable=False),  # when this process received the frame
        pa.field("symbol", pa.string(), nullable=False),  # the exchange's own symbol
        pa.field("base", pa.string(), nullable=False),  # upper-case base as Upbit names it
        pa.field("quote", pa.string(), nullable=False),
        pa.field("price", pa.float64(), nullable=False),  # quote units
        pa.field("qty", pa.float64(), nullable=False),  # base units, contract multiplier applied
        pa.field("side", pa.string(), nullable=False),  # taker side: "buy" | "sell"
        pa.field("trade_id", pa.string(), nullable=True),  # null where the exchange has none
    ],
)

SOURCE_LIVE = "ws"  # received on the live connection
SOURCE_REST = "rest"  # repaired from the exchange's REST trade history
SOURCES = (SOURCE_LIVE, SOURCE_REST)

TRADE_SCHEMA = pa.schema(
    [*ROW_SCHEMA, pa.field("source", pa.string(), nullable=False)],
    metadata={SCHEMA_VERSION_KEY: SCHEMA_VERSION.encode()},
)

SIDES = ("buy", "sell")

# On disk the low-cardinality string columns are dictionary-encoded (one dictionary per file,
# grown with IPC dictionary deltas): measured on the bench market this takes a segment from ~30
# to ~19 bytes per trade and makes writing faster. Readers see them as strings. `source` is
# almost always one value per file: a run of zero indices, which zstd reduces to nothing.
DICT_COLUMNS: tuple[str, ...] = ("symbol", "base", "quote", "side", "source")
DICT_TYPE = pa.dictionary(pa.int32(), pa.string())


def _on_disk(schema: pa.Schema) -> pa.Schema:
    return pa.schema(
        [pa.field(f.name, DICT_TYPE, nullable=f.nullable) if f.name in DICT_COLUMNS else f for f in schema],
        metadata=schema.metadata,
    )


SEGMENT_SCHEMA = _on_disk(TRADE_SCHEMA)
# What schema version 1 wrote: recovery salvages such files, readers add source "ws".
SEGMENT_SCHEMA_V1 = _on_disk(ROW_SCHEMA.with_metadata({SCHEMA_VERSION_KEY: b"1"}))

# Custom metadata of every record batch of a segment: the batch's time bounds (µs, inclusive)
# and row count, so a reader can skip a batch without decompressing it.
BATCH_TIME_MIN = "pumpwatch.time_min_us"
BATCH_TIME_MAX = "pumpwatch.time_max_us"
BATCH_RECV_MIN = "pumpwatch.recv_min_us"
BATCH_RECV_MAX = "pumpwatch.recv_max_us"
BATCH_ROWS = "pumpwatch.rows"
# The batch's checksums, CRC-32 (zlib's) as 8 lower-case hex digits (``checksum.py``): of its
# own IPC message (header with both checksums' digits read as their placeholders, and its body as
# stored), and of the schema and dictionary messages written just before it. Absent in segments
# written before checksums existed: those batches read unverified.
BATCH_CRC = "pumpwatch.crc32"
BATCH_CRC_SHARED = "pumpwatch.crc32_shared"
CRC_PLACEHOLDER = "........"  # what the writer puts first; never a valid checksum
CRC_SHARED_PLACEHOLDER = "::::::::"  # the same for `BATCH_CRC_SHARED`

# Schema (file) metadata of a sealed segment whose unsealed file held batches that failed their
# checksum (recovery, or sealing with compaction): a JSON list of the dropped batches,
# ``[[time_min_us, time_max_us, recv_min_us, recv_max_us, rows], ...]`` (null where unknown).
# Readers report them as damaged spans; the original bytes are kept under ``quarantine/``.
SEGMENT_DAMAGED = b"pumpwatch.damaged"


_ZERO_INDICES = pa.array(np.zeros(1 << 16, np.int32))
_VALUES: dict[str, pa.Array] = {}


def constant_dictionary(value: str, n: int) -> pa.DictionaryArray:
    """`n` times `value` as a `DICT_TYPE` array: one dictionary entry and zero indices.

    Costs next to nothing for up to 65,536 rows (a slice of one shared buffer of zeros), which
    is how the writer stamps ``source`` on every live batch.
    """
    values = _VALUES.get(value)
    if values is None:
        values = _VALUES[value] = pa.array([value], pa.string())
    indices = _ZERO_INDICES.slice(0, n) if n <= len(_ZERO_INDICES) else pa.array(np.zeros(n, np.int32))
    return pa.DictionaryArray.from_arrays(indices, values, safe=False)


def with_source(batch: pa.RecordBatch, source: str = SOURCE_LIVE) -> pa.RecordBatch:
    """A batch of the nine `ROW_SCHEMA` columns (a version 1 segment's, or a row batch) with a
    constant `source` column appended: dictionary-encoded when the batch's ``symbol`` is."""
    column = constant_dictionary(source, batch.num_rows)
    field = pa.field("source", DICT_TYPE, nullable=False)
    if not pa.types.is_dictionary(batch.schema.field("symbol").type):
        column, field = column.cast(pa.string()), TRADE_SCHEMA.field("source")
    return pa.RecordBatch.from_arrays([*batch.columns, column], schema=batch.schema.append(field))


def to_trade_table(table: pa.Table) -> pa.Table:
    """A segment's rows (version 1 or 2, dictionary or plain strings) as `TRADE_SCHEMA`, plain strings."""
    if table.num_columns == len(ROW_SCHEMA):
        if table.num_rows == 0:
            return TRADE_SCHEMA.empty_table()
        table = pa.Table.from_batches([with_source(b) for b in table.to_batches() if b.num_rows])
    return table.cast(TRADE_SCHEMA)
