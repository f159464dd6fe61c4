"""Sealing a file made of large batches: content exact, rows grouped by symbol in every batch,
each symbol's trades in the order they were appended (the path that skips the rewrite)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
from helpers.store import T0_US, float_bits, make_rows, table_rows

from pumpwatch.segments.paths import list_segments
from pumpwatch.segments.writer import SegmentWriter


def _runs(values: list[str]) -> int:
    return sum(1 for i, v in enumerate(values) if i == 0 or v != values[i - 1])


def test_large_batches_are_sealed_grouped_and_exact(tmp_path: Path) -> None:
    rows = make_rows(30_000, start_us=T0_US, step_us=100, symbols=("BTC", "ETH", "0G", "ZRO", "XRP"))
    with SegmentWriter(tmp_path, "okx_spot", flush_rows=10_000, fsync=False) as writer:
        for i in range(0, len(rows), 10_000):  # three flushes of 10,000 rows (above the 8,192 mark)
            writer.append(rows[i : i + 10_000])
            writer.flush()
    (seg,) = list_segments(tmp_path, ["okx_spot"])
    assert seg.sealed
    with pa.memory_map(str(seg.path)) as source:
        reader = ipc.open_file(source)
        batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
    got = []
    for batch in batches:
        symbols = batch.column("symbol").cast(pa.string()).to_pylist()
        assert _runs(symbols) == len(set(symbols)), "rows of one symbol are contiguous in a batch"
        got += table_rows(pa.Table.from_batches([batch]))
    assert sorted(float_bits(got)) == sorted(float_bits(rows))  # nothing lost, nothing invented
    for symbol in {r[2] for r in rows}:  # per symbol, the appended order survives
        assert [r for r in got if r[2] == symbol] == [r for r in rows if r[2] == symbol]


def test_each_rows_source_survives_both_ways_of_sealing(tmp_path: Path) -> None:
    from pumpwatch.segments.reader import read_trades
    from pumpwatch.segments.schema import TRADE_SCHEMA

    rows = make_rows(20_000, start_us=T0_US, step_us=100, symbols=("BTC", "ETH", "0G"))
    sources = ["rest" if i % 5 == 0 else "ws" for i in range(len(rows))]  # e.g. a reparse keeping rows
    table = pa.Table.from_pylist(
        [dict(zip(TRADE_SCHEMA.names, (*r, s), strict=True)) for r, s in zip(rows, sources, strict=True)],
        schema=TRADE_SCHEMA,
    )
    for stream, piece in (
        ("okx_spot", 10_000),
        ("gate_spot", 500),
    ):  # grouped as written / rewritten at sealing
        with SegmentWriter(tmp_path, stream, flush_rows=piece, fsync=False) as writer:
            for off in range(0, len(rows), piece):
                writer.append_batch(table.slice(off, piece))
                writer.flush()
        got = read_trades(tmp_path, T0_US, T0_US + 3_600_000_000, streams=[stream])
        by_row = dict(zip(table_rows(got), got.column("source").to_pylist(), strict=True))
        assert by_row == dict(zip(rows, sources, strict=True))
