"""The trade record of DESIGN §4, defined once for every stream.

In memory a trade travels as a plain tuple in `TRADE_FIELDS` order (a `TradeRow`): creating a
tuple costs a fraction of a dataclass, and parsers emit hundreds of thousands per second. On
disk and in Arrow it is `TRADE_SCHEMA`. Exchange and market are not columns of a segment: they
are hive partitions of its path.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "1"

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

TRADE_SCHEMA = pa.schema(
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
    metadata={b"pumpwatch.schema_version": SCHEMA_VERSION.encode()},
)

SIDES = ("buy", "sell")

# On disk the four low-cardinality string columns are dictionary-encoded (one dictionary per
# file, grown with IPC dictionary deltas): measured on the bench market this takes a segment
# from ~30 to ~19 bytes per trade and makes writing faster. Readers see them as strings.
DICT_COLUMNS: tuple[str, ...] = ("symbol", "base", "quote", "side")
DICT_TYPE = pa.dictionary(pa.int32(), pa.string())

SEGMENT_SCHEMA = pa.schema(
    [pa.field(f.name, DICT_TYPE, nullable=f.nullable) if f.name in DICT_COLUMNS else f for f in TRADE_SCHEMA],
    metadata=TRADE_SCHEMA.metadata,
)

# Custom metadata of every record batch of a segment: the batch's time bounds (µs, inclusive)
# and row count, so a reader can skip a batch without decompressing it.
BATCH_TIME_MIN = "pumpwatch.time_min_us"
BATCH_TIME_MAX = "pumpwatch.time_max_us"
BATCH_RECV_MIN = "pumpwatch.recv_min_us"
BATCH_RECV_MAX = "pumpwatch.recv_max_us"
BATCH_ROWS = "pumpwatch.rows"
