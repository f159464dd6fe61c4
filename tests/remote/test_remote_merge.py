"""Two recorders of one stream in the shared store: the merged read returns each trade once,
and the coverage is the union of their listening (each recorder's journal replayed alone)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from helpers.remote_store import BUCKET, S3Server
from helpers.remote_world import (
    END_US,
    GAPS,
    STREAM,
    all_rows,
    archive_and_upload,
    delete_archive_hours,
    record,
)
from helpers.store import T0_US

from pumpwatch.segments.remote_read import (
    NOT_ARCHIVED,
    index_store,
    merge_recorders,
    read_remote_trades,
    read_window,
    remote_completeness,
    unarchived_hours,
)
from pumpwatch.segments.schema import TRADE_SCHEMA

URL = f"s3://{BUCKET}/shared"


def _key(row: dict[str, object] | tuple[object, ...]) -> tuple[object, ...]:
    if isinstance(row, dict):
        return (row["time"], row["symbol"], row["price"], row["qty"], row["side"], row["trade_id"])
    return (row[0], row[2], row[5], row[6], row[7], row[8])


@pytest.fixture
def two_recorders(tmp_path: Path, s3_server: S3Server) -> dict[str, Path]:
    dirs = {}
    for rid in GAPS:
        d = tmp_path / rid
        record(d, rid)
        archive_and_upload(d, URL, s3_server.endpoint_url, rid)
        dirs[rid] = d
    return dirs


def test_each_trade_once_and_coverage_is_the_union(
    two_recorders: dict[str, Path], s3_server: S3Server
) -> None:
    got = read_remote_trades(URL, T0_US, END_US, endpoint_url=s3_server.endpoint_url, streams=[STREAM])
    expected = Counter(_key(r) for r in all_rows())
    assert Counter(_key(r) for r in _plain(got).to_pylist()) == expected  # every trade, exactly once
    assert got.num_rows == sum(expected.values())
    times = got.column("time").cast(pa.int64()).to_pylist()
    assert times == sorted(times)

    index = index_store(URL, [STREAM], T0_US, END_US, endpoint_url=s3_server.endpoint_url)
    window = read_window(index, T0_US, END_US, streams=[STREAM])
    # the first copy received wins: rec-a everywhere but in its own gap
    lo, hi = GAPS["rec-a"]
    in_gap_a = sum(1 for r in all_rows() if lo <= r[0] < hi)
    assert window.kept_by_recorder[STREAM] == {"rec-a": got.num_rows - in_gap_a, "rec-b": in_gap_a}
    lag = got.column("recv_time").cast(pa.int64()).to_numpy() - got.column("time").cast(pa.int64()).to_numpy()
    assert Counter(lag.tolist()) == {500: got.num_rows - in_gap_a, 900: in_gap_a}

    end = END_US - 1
    both = remote_completeness(index, STREAM, T0_US, end, base="0G", now_us=END_US + 3600_000_000)
    assert both.state == "complete" and both.gaps == [] and both.listening.known
    assert both.listening.listening_us == end - T0_US
    for rid, (g_lo, g_hi) in GAPS.items():
        alone = index_store(URL, [STREAM], T0_US, end, endpoint_url=s3_server.endpoint_url, recorders=[rid])
        one = remote_completeness(alone, STREAM, T0_US, end, base="0G", now_us=END_US + 3600_000_000)
        assert one.state == "incomplete" and one.gaps == [(g_lo, g_hi)], rid
        rows = read_remote_trades(URL, T0_US, END_US, endpoint_url=s3_server.endpoint_url, recorders=[rid])
        assert rows.num_rows == sum(1 for r in all_rows() if not g_lo <= r[0] < g_hi)


def test_an_hour_one_recorder_has_not_archived_is_that_recorders_gap(
    two_recorders: dict[str, Path], s3_server: S3Server
) -> None:
    fs = s3_server.filesystem()
    delete_archive_hours(fs, URL, "rec-b", STREAM, ["2026-01-01T00"])
    index = index_store(URL, [STREAM], T0_US, END_US - 1, endpoint_url=s3_server.endpoint_url)
    assert unarchived_hours(index, STREAM, T0_US, END_US - 1) == []
    comp = remote_completeness(index, STREAM, T0_US, END_US - 1, base="0G", now_us=END_US + 3600_000_000)
    # rec-a's own gap is in hour 0, which rec-b's archive no longer holds: missing there
    assert comp.state == "incomplete" and comp.gaps == [GAPS["rec-a"]]
    assert [m.reason for m in comp.missing] == ["not_attempted"]

    delete_archive_hours(fs, URL, "rec-a", STREAM, ["2026-01-01T00"])
    index = index_store(URL, [STREAM], T0_US, END_US - 1, endpoint_url=s3_server.endpoint_url)
    hour0 = T0_US, T0_US + 3600_000_000
    assert unarchived_hours(index, STREAM, T0_US, END_US - 1) == [T0_US]
    comp = remote_completeness(index, STREAM, T0_US, END_US - 1, base="0G", now_us=END_US + 3600_000_000)
    assert comp.gaps == [hour0] and [(m.start_us, m.end_us, m.reason) for m in comp.missing] == [
        (*hour0, NOT_ARCHIVED)
    ]


def _plain(table: pa.Table) -> pa.Table:
    """Times as epoch µs integers, as `make_rows` gives them."""
    for name in ("time", "recv_time"):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, table.column(name).cast(pa.int64()))
    return table


def _table(rows: list[tuple[object, ...]]) -> pa.Table:
    names = TRADE_SCHEMA.names
    cols = list(zip(*rows, strict=True))
    arrays = [
        pa.array(c, pa.int64() if n in ("time", "recv_time") else TRADE_SCHEMA.field(n).type)
        for n, c in zip(names, cols, strict=True)
    ]
    return pa.table(dict(zip(names, arrays, strict=True))).cast(TRADE_SCHEMA)


def test_merge_key_without_trade_ids_takes_the_larger_count() -> None:
    def row(t: int, recv: int, tid: str | None, qty: float = 1.0) -> tuple[object, ...]:
        return (t, recv, "XUSDT", "X", "USDT", 1.5, qty, "buy", tid, "ws")

    a = _table([row(1, 10, None), row(1, 11, None), row(2, 12, "7"), row(3, 13, None, 2.0)])
    b = _table(
        [row(1, 9, None), row(2, 8, "7"), row(3, 14, None, 2.0), row(3, 15, None, 2.0), row(4, 16, None)]
    )
    merged = merge_recorders({"a": a, "b": b})
    got = Counter((r["time"], r["trade_id"], r["qty"], r["recv_time"]) for r in _plain(merged).to_pylist())
    assert got == Counter(
        {
            (1, None, 1.0, 10): 1,  # two genuine fills with one key: a has both, b one -> a's two
            (1, None, 1.0, 11): 1,
            (2, "7", 1.0, 8): 1,  # an id: the copy received first (b)
            (3, None, 2.0, 14): 1,  # b holds this key twice
            (3, None, 2.0, 15): 1,
            (4, None, 1.0, 16): 1,  # only b
        }
    )
    assert merge_recorders({"a": a}).equals(a)


# the de-duplication of `merge_recorders` in SQL, as docs/remote.md shows it for DuckDB: number
# each recorder's copies of a key, keep each (key, copy number) once -> max over recorders
MERGED_SQL = """
WITH keyed AS (
  SELECT *, row_number() OVER (
      PARTITION BY recorder, exchange, market, symbol, trade_id,
                   if(trade_id IS NULL, time, NULL), if(trade_id IS NULL, price, NULL),
                   if(trade_id IS NULL, qty, NULL), if(trade_id IS NULL, side, NULL)
      ORDER BY recv_time) AS copy
  FROM read_parquet('{url}/recorder=*/archive/**/*.parquet', hive_partitioning = true)
)
SELECT * EXCLUDE (copy) FROM keyed
QUALIFY row_number() OVER (
    PARTITION BY exchange, market, symbol, trade_id,
                 if(trade_id IS NULL, time, NULL), if(trade_id IS NULL, price, NULL),
                 if(trade_id IS NULL, qty, NULL), if(trade_id IS NULL, side, NULL), copy
    ORDER BY recv_time, recorder) = 1
"""


def test_duckdb_sql_merge_agrees_with_the_merged_reader(
    two_recorders: dict[str, Path], s3_server: S3Server
) -> None:
    duckdb = pytest.importorskip("duckdb")
    s3fs = pytest.importorskip("s3fs")
    fs = s3fs.S3FileSystem(
        key="testing",
        secret="testing",
        endpoint_url=s3_server.endpoint_url,
        client_kwargs={"region_name": "us-east-1"},
    )
    con = duckdb.connect()
    con.register_filesystem(fs)
    got = con.sql(MERGED_SQL.format(url=URL)).arrow()
    got = got.read_all() if hasattr(got, "read_all") else got
    mine = read_remote_trades(URL, T0_US, END_US, endpoint_url=s3_server.endpoint_url)
    assert got.num_rows == mine.num_rows == len(all_rows())
    assert Counter(_key(r) for r in _plain(got).to_pylist()) == Counter(
        _key(r) for r in _plain(mine).to_pylist()
    )
