"""Shared helpers of the segment store tests (writer, reader, recovery, rotation)."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import pyarrow as pa

from pumpwatch.segments.schema import TRADE_FIELDS, TradeRow

T0_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def make_rows(n: int, *, start_us: int = T0_US, step_us: int = 1000, lag_us: int = 500,
              symbols: Sequence[str] = ("BTC", "ETH", "0G")) -> list[TradeRow]:  # fmt: skip
    """Deterministic rows; row i has trade_id str(i) (None every 7th) and recv = time + lag."""
    rows: list[TradeRow] = []
    for i in range(n):
        base = symbols[i % len(symbols)]
        t = start_us + i * step_us
        rows.append(
            (t, t + lag_us, f"{base}USDT", base, "USDT", 100.0 + i * 0.25, 0.001 * (i % 97 + 1),
             "buy" if i % 3 else "sell", None if i % 7 == 0 else str(i))
        )  # fmt: skip
    return rows


def table_rows(table: pa.Table) -> list[TradeRow]:
    """The trade columns of a table read back, as TradeRow tuples with integer µs times."""
    cols = [table.column(name) for name in TRADE_FIELDS]
    times = [c.cast(pa.int64()).to_pylist() if i < 2 else c.to_pylist() for i, c in enumerate(cols)]
    return list(zip(*times, strict=True))


def float_bits(rows: Sequence[TradeRow]) -> list[tuple[object, ...]]:
    """Rows with floats replaced by their exact bit patterns (NaN and -0.0 compare exactly)."""
    return [tuple(struct.pack("<d", v) if isinstance(v, float) else v for v in row) for row in rows]


def _total_key(row: tuple[object, ...]) -> tuple[object, ...]:
    return tuple((0, b"") if v is None else (1, v) for v in row)


def assert_same_trades(got: Sequence[TradeRow], written: Sequence[TradeRow]) -> None:
    """`got` (read back) holds exactly the rows written, sorted by (time, recv_time), and each
    symbol's rows keep their written order (sealed batches group rows by symbol, so only ties
    between different symbols may be ordered differently from the write order)."""
    assert len(got) == len(written)
    g, w = float_bits(got), float_bits(written)
    assert sorted(g, key=_total_key) == sorted(w, key=_total_key)
    assert [(r[0], r[1]) for r in got] == sorted((r[0], r[1]) for r in written)
    stable = float_bits(sorted(written, key=lambda r: (r[0], r[1])))
    for symbol in {r[2] for r in written}:
        assert [r for r in g if r[2] == symbol] == [r for r in stable if r[2] == symbol]
