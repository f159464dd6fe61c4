"""Segments round-trip exactly, and the research one-liners of docs/store.md work."""

from __future__ import annotations

import tempfile

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pytest
from helpers.store import T0_US, assert_same_trades, make_rows, table_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pumpwatch.segments as segments
from pumpwatch.errors import StoreError
from pumpwatch.segments import SegmentWriter, list_segments, read_trades
from pumpwatch.segments.schema import ROW_SCHEMA, SEGMENT_SCHEMA, TRADE_SCHEMA
from pumpwatch.timeunits import US_PER_HOUR as HOUR_US

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [-0.0, 5e-324, 1.7976931348623157e308]
)
trade_rows = st.lists(
    st.tuples(
        st.integers(T0_US, T0_US + 3 * HOUR_US),
        st.integers(-60_000_000, 240_000_000),  # recv lag: exchange clock may run ahead
        text,
        text,
        text,
        floats,
        floats,
        st.sampled_from(["buy", "sell"]),
        st.none() | text,
    ).map(lambda r: (r[0], r[0] + r[1], *r[2:])),
    min_size=1,
    max_size=300,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=trade_rows, chunk=st.integers(1, 50), flush_rows=st.integers(1, 400))
def test_round_trip_is_exact(rows: list, chunk: int, flush_rows: int) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        rows.sort(key=lambda r: r[1])  # a live feed arrives in receive order
        with SegmentWriter(data_dir, "okx_futures", flush_rows=flush_rows, flush_interval_s=60) as w:
            for i in range(0, len(rows), chunk):
                w.append(rows[i : i + chunk])
        assert w.rows_written == len(rows)
        got = read_trades(data_dir, T0_US - HOUR_US, T0_US + 5 * HOUR_US)
        assert got.column("exchange").to_pylist() == ["okx"] * len(rows)
        assert got.column("market").to_pylist() == ["futures"] * len(rows)
        assert got.column("source").to_pylist() == ["ws"] * len(rows)  # stamped by the live writer
        assert_same_trades(table_rows(got), rows)
        assert all(s.sealed for s in list_segments(data_dir))


def test_files_are_arrow_ipc_files_with_versioned_schema(tmp_path) -> None:
    rows = make_rows(250)
    w = SegmentWriter(tmp_path, "binance_spot", flush_rows=100)
    w.append(rows)
    w.flush()
    (seg,) = list_segments(tmp_path)
    assert seg.path.name == "_000000.arrow" and not seg.sealed
    data = seg.path.read_bytes()
    assert data[:8] == b"ARROW1\x00\x00"
    live = ipc.open_stream(data[8:])  # an open file: an IPC stream after the magic
    assert [b.num_rows for b in live] == [100, 100, 50]  # one batch per flush, receive order
    w.close()

    (seg,) = list_segments(tmp_path)
    assert seg.path.name == "000000.arrow" and seg.sealed
    assert seg.path.parent.as_posix().endswith("exchange=binance/market=spot/date=2026-01-01")
    data = seg.path.read_bytes()
    assert data[:8] == b"ARROW1\x00\x00" and data[-6:] == b"ARROW1"
    reader = ipc.open_file(seg.path)
    assert reader.schema.equals(SEGMENT_SCHEMA, check_metadata=True)
    assert reader.schema.metadata[b"pumpwatch.schema_version"] == b"2"
    assert reader.num_record_batches == 1  # sealing compacts the hour into large batches
    batch, meta = reader.get_batch_with_custom_metadata(0)
    assert meta[b"pumpwatch.time_min_us"] == str(T0_US).encode()
    assert meta[b"pumpwatch.time_max_us"] == str(T0_US + 249 * 1000).encode()
    assert meta[b"pumpwatch.recv_min_us"] == str(T0_US + 500).encode()
    assert meta[b"pumpwatch.recv_max_us"] == str(T0_US + 249 * 1000 + 500).encode()
    assert meta[b"pumpwatch.rows"] == b"250"
    # rows grouped by symbol (first seen first), each symbol in receive order
    got = table_rows(pa.Table.from_batches([batch]))
    assert got == [r for sym in ("BTCUSDT", "ETHUSDT", "0GUSDT") for r in rows if r[2] == sym]
    source = batch.column(batch.schema.get_field_index("source"))
    assert source.type == pa.dictionary(pa.int32(), pa.string())  # stamped by the writer
    assert source.dictionary.to_pylist() == ["ws"] and source.indices.to_pylist() == [0] * 250
    assert seg.size_bytes < batch.nbytes  # zstd-compressed


def test_append_batch_takes_plain_and_dictionary_columns(tmp_path) -> None:
    rows = make_rows(1000)
    plain = pa.Table.from_pylist(  # a parser's columns: no source
        [dict(zip(ROW_SCHEMA.names, r, strict=True)) for r in rows], schema=ROW_SCHEMA
    )
    with_source = pa.Table.from_pylist(
        [dict(zip(TRADE_SCHEMA.names, (*r, "ws"), strict=True)) for r in rows], schema=TRADE_SCHEMA
    )
    with SegmentWriter(tmp_path, "gate_spot") as w:
        w.append_batch(plain.slice(0, 500))
        w.append_batch(with_source.slice(500).to_batches()[0].cast(SEGMENT_SCHEMA))
        w.append(make_rows(3, start_us=T0_US + 10_000_000, symbols=("NEW",)))
    table = read_trades(tmp_path, T0_US, T0_US + HOUR_US)
    assert table_rows(table) == rows + make_rows(3, start_us=T0_US + 10_000_000, symbols=("NEW",))
    assert table.column("source").to_pylist() == ["ws"] * 1003


def test_append_batch_checks_the_source_values(tmp_path) -> None:
    rows = make_rows(4)
    table = pa.Table.from_pylist(
        [
            dict(zip(TRADE_SCHEMA.names, (*r, s), strict=True))
            for r, s in zip(rows, ["ws", "rest", "ws", "x"], strict=True)
        ],
        schema=TRADE_SCHEMA,
    )
    w = SegmentWriter(tmp_path, "gate_spot")
    w.append_batch(table.slice(0, 3))
    w.flush()
    assert read_trades(tmp_path, T0_US, T0_US + HOUR_US).column("source").to_pylist() == ["ws", "rest", "ws"]
    w.append_batch(table)  # a batch that does not fit is left out whole; the writer goes on
    w.flush()
    assert w.rows_rejected == 4 and w.failed is None
    w.append_batch(table.slice(0, 1))
    w.close()
    assert sorted(read_trades(tmp_path, T0_US, T0_US + HOUR_US).column("source").to_pylist()) == [
        "rest",
        *["ws"] * 3,
    ]


def test_append_batch_rejects_other_columns(tmp_path) -> None:
    with SegmentWriter(tmp_path, "gate_spot") as w:
        with pytest.raises(StoreError, match="columns"):
            w.append_batch(pa.table({"time": [1]}))
        wrong = pa.table({n: pa.array([1], pa.int64()) for n in TRADE_SCHEMA.names})
        with pytest.raises(StoreError, match="symbol cannot be stored as int64"):
            w.append_batch(wrong)


def test_a_bad_row_is_left_out_and_the_writer_goes_on(tmp_path) -> None:
    # review of issue 11: one bad row used to stop the stream's recording for good, silently
    rows = make_rows(10)
    more = [(T0_US + 10_000 + i, *r[1:8], f"m{i}") for i, r in enumerate(make_rows(5))]
    bad = (T0_US, T0_US, "XUSDT", None, "USDT", 1.0, 1.0, "buy", "1")
    w = SegmentWriter(tmp_path, "bybit_spot")
    w.append([*rows[:5], bad, *rows[5:]])  # type: ignore[list-item]
    w.flush()
    assert (w.rows_rejected, w.failed, w.queue_rows) == (1, None, 0)
    w.append(more)
    w.flush()
    w.close()
    assert w.rows_lost == 0
    assert sorted(table_rows(read_trades(tmp_path, T0_US, T0_US + HOUR_US))) == sorted(rows + more)


def test_unknown_stream_never_becomes_a_path(tmp_path) -> None:
    with pytest.raises(Exception, match="unknown stream"):
        SegmentWriter(tmp_path, "../../etc_spot")


def test_research_one_liners(tmp_path) -> None:
    with SegmentWriter(tmp_path, "binance_spot") as w:
        w.append(make_rows(300))
    with SegmentWriter(tmp_path, "okx_futures") as w:
        w.append(make_rows(30, symbols=("0G",)))
    open_writer = SegmentWriter(tmp_path, "bybit_spot")
    open_writer.append(make_rows(5))
    open_writer.flush()  # an open `_` file: the dataset skips it
    try:
        # --- the snippets of docs/store.md ---
        ds = segments.dataset(tmp_path)
        table = ds.to_table(filter=(pc.field("base") == "0G") & (pc.field("exchange") == "okx"))
        df = ds.to_table(columns=["exchange", "market", "base", "price"]).to_pandas()
        counts = duckdb.sql(
            "SELECT exchange, market, base, count(*) AS n FROM ds GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        # ---
        assert table.num_rows == 30
        assert set(table.column("date").to_pylist()) == {"2026-01-01"}
        assert len(df) == 330 and sorted(set(df["exchange"])) == ["binance", "okx"]
        assert counts == [
            ("binance", "spot", "0G", 100),
            ("binance", "spot", "BTC", 100),
            ("binance", "spot", "ETH", 100),
            ("okx", "futures", "0G", 30),
        ]
    finally:
        open_writer.close()
    assert segments.dataset(tmp_path).count_rows() == 335
    assert segments.dataset(tmp_path / "nothing").count_rows() == 0


# Version 1 of the schema, as the writer wrote it before `source` existed (the nine row
# columns, four of them dictionary-encoded). Spelled out here, not imported: it is what is on
# users' disks, whatever the code says now.
V1_DICT = pa.dictionary(pa.int32(), pa.string())
V1_SCHEMA = pa.schema(
    [
        pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("recv_time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("symbol", V1_DICT, nullable=False),
        pa.field("base", V1_DICT, nullable=False),
        pa.field("quote", V1_DICT, nullable=False),
        pa.field("price", pa.float64(), nullable=False),
        pa.field("qty", pa.float64(), nullable=False),
        pa.field("side", V1_DICT, nullable=False),
        pa.field("trade_id", pa.string(), nullable=True),
    ],
    metadata={b"pumpwatch.schema_version": b"1"},
)


def v1_batch(rows: list) -> pa.RecordBatch:
    plain = pa.Table.from_pylist(
        [dict(zip(ROW_SCHEMA.names, r, strict=True)) for r in rows], schema=ROW_SCHEMA
    )
    return plain.combine_chunks().to_batches()[0].cast(V1_SCHEMA)


def write_v1(path, rows: list, *, sealed: bool) -> None:
    from pumpwatch.segments.compact import batch_metadata

    batch = v1_batch(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    opts = ipc.IpcWriteOptions(compression="zstd")
    if sealed:
        with ipc.new_file(str(path), V1_SCHEMA, options=opts) as w:
            w.write_batch(batch, custom_metadata=batch_metadata(batch))
        return
    sink = pa.BufferOutputStream()  # a crash left it open: magic, then the stream so far
    with ipc.new_stream(sink, V1_SCHEMA, options=opts) as w:
        w.write_batch(batch, custom_metadata=batch_metadata(batch))
    path.write_bytes(b"ARROW1\x00\x00" + sink.getvalue().to_pybytes()[:-8])


def test_version_1_segments_read_as_ws_everywhere(tmp_path) -> None:
    from pumpwatch.segments.reader import iter_batches, read_segment
    from pumpwatch.segments.recovery import recover
    from pumpwatch.segments.repair import write_repaired
    from pumpwatch.segments.schema import SEGMENT_SCHEMA_V1, to_trade_table
    from pumpwatch.segments.status import store_status

    assert V1_SCHEMA.equals(SEGMENT_SCHEMA_V1, check_metadata=True)
    day = tmp_path / "segments" / "exchange=binance" / "market=spot" / "date=2026-01-01"
    old_sealed = make_rows(50)  # hour 0, sealed by the old writer
    old_open = make_rows(20, start_us=T0_US + HOUR_US, symbols=("OLD",))  # hour 1, left open by a crash
    write_v1(day / "000000.arrow", old_sealed, sealed=True)
    write_v1(day / "_010000.arrow", old_open, sealed=False)
    new = make_rows(30, start_us=T0_US + 2 * HOUR_US, symbols=("NEW",))  # hour 2, the new writer
    with SegmentWriter(tmp_path, "binance_spot", fsync=False) as w:
        w.append(new)
    rest = make_rows(5, start_us=T0_US + 3 * HOUR_US, symbols=("REST",))
    # repair de-duplicates against version 1 rows too
    assert (
        write_repaired(tmp_path, "binance_spot", old_sealed[:10] + old_open[:5] + rest, fsync=False).written
        == 5
    )

    def check(table: pa.Table, n_rest: int = 5) -> None:
        assert table_rows(table) == old_sealed + old_open + new + rest
        assert table.column("source").to_pylist() == ["ws"] * 100 + ["rest"] * n_rest

    check(read_trades(tmp_path, T0_US, T0_US + 4 * HOUR_US))
    batches = [b for _s, b in iter_batches(tmp_path, T0_US, T0_US + 4 * HOUR_US)]
    assert all(b.schema.equals(TRADE_SCHEMA) for b in batches)
    (seg,) = [s for s in list_segments(tmp_path) if s.path.name == "000000.arrow"]
    (only,) = read_segment(seg, T0_US, T0_US + HOUR_US)
    assert only.column("source").to_pylist() == ["ws"] * 50
    with pa.memory_map(str(seg.path)) as source:  # what `reparse` reads a whole hour with
        assert to_trade_table(ipc.open_file(source).read_all()).column("source").to_pylist() == ["ws"] * 50
    assert store_status(tmp_path, now_us=T0_US + 4 * HOUR_US)["trades"] == 105

    # the dataset: a version 1 file has no `source`; pyarrow fills null, read it as "ws"
    ds = segments.dataset(tmp_path)  # (the open file is skipped until recovered)
    sources = ds.to_table(columns={"source": pc.coalesce(pc.field("source"), "ws")}).column("source")
    assert sorted(sources.to_pylist()) == ["rest"] * 5 + ["ws"] * 80
    assert ds.to_table(columns=["source"]).column("source").null_count == 50
    assert duckdb.sql(
        "SELECT coalesce(source, 'ws') AS s, count(*) FROM ds GROUP BY s ORDER BY s"
    ).fetchall() == [
        ("rest", 5),
        ("ws", 80),
    ]

    # recovery seals the old open file in the current schema
    (sealed,) = recover(tmp_path, ["binance_spot"])
    assert sealed.name == "010000.arrow"
    reader = ipc.open_file(sealed)
    assert reader.schema.equals(SEGMENT_SCHEMA, check_metadata=True)
    assert reader.read_all().column("source").to_pylist() == ["ws"] * 20
    check(read_trades(tmp_path, T0_US, T0_US + 4 * HOUR_US))
    assert segments.dataset(tmp_path).count_rows() == 105
