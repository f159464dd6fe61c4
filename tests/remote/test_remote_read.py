"""Reading the archive in the shared store: pyarrow (`remote_dataset`) and DuckDB (through an
fsspec filesystem registered with it; the httpfs extension would be a download) agree row for
row with the local segments the archive was made from."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pytest
from helpers.remote_store import BUCKET, S3Server, archive_store, is_loopback, write_segments

from pumpwatch.segments import dataset, remote_dataset
from pumpwatch.segments.remote import RemoteSettings
from pumpwatch.segments.upload import Uploader

s3fs = pytest.importorskip("s3fs")

URL = f"s3://{BUCKET}/research"
COLUMNS = [
    *("exchange", "market", "date", "time", "recv_time", "symbol", "base", "quote"),
    *("price", "qty", "side", "trade_id", "source"),
]
STRINGS = ("date", "symbol", "base", "quote", "side", "source")  # dictionary or date in some readers
ORDER = [
    ("exchange", "ascending"),
    ("market", "ascending"),
    ("time", "ascending"),
    ("recv_time", "ascending"),
]


def _rows(table: pa.Table) -> list[tuple[object, ...]]:
    """The rows as tuples in one order, with strings plain whatever encoding a reader chose."""
    cols = {c: table.column(c).cast(pa.string()) if c in STRINGS else table.column(c) for c in COLUMNS}
    ordered = pa.table(cols).sort_by(ORDER)
    return list(zip(*(ordered.column(c).to_pylist() for c in COLUMNS), strict=True))


@pytest.fixture
def uploaded(tmp_path: Path, s3_server: S3Server) -> dict[str, Path]:
    """Two recorders' stores (different rows), archived and uploaded."""
    dirs = {"rec-a": tmp_path / "a", "rec-b": tmp_path / "b"}
    for n, (rid, d) in enumerate(dirs.items()):
        write_segments(d, hours=2, rows_per_hour=500 + 100 * n)
        archive_store(d)
        up = Uploader(d, RemoteSettings(url=URL, endpoint_url=s3_server.endpoint_url, recorder_id=rid))
        assert up.run_once().backlog_files == 0
        up.stop()
    return dirs


def test_pyarrow_reads_the_remote_archive_row_for_row(uploaded: dict[str, Path], s3_server: S3Server) -> None:
    ds = remote_dataset(URL, endpoint_url=s3_server.endpoint_url)
    assert {"recorder", "exchange", "market", "date"} <= set(ds.schema.names)
    for rid, d in uploaded.items():
        remote = ds.to_table(filter=pads.field("recorder") == rid)
        local = dataset(d).to_table()
        assert remote.num_rows == local.num_rows > 0
        assert _rows(remote) == _rows(local)
    only_a = remote_dataset(URL, endpoint_url=s3_server.endpoint_url, recorders=["rec-a"]).to_table()
    assert set(only_a.column("recorder").to_pylist()) == {"rec-a"}


def test_duckdb_reads_the_remote_archive_through_fsspec(
    uploaded: dict[str, Path], s3_server: S3Server
) -> None:
    host = s3_server.endpoint_url.split("//", 1)[1].rsplit(":", 1)[0]
    assert is_loopback(host)
    fs = s3fs.S3FileSystem(
        key="testing",
        secret="testing",
        endpoint_url=s3_server.endpoint_url,
        client_kwargs={"region_name": "us-east-1"},
    )
    con = duckdb.connect()
    con.register_filesystem(fs)
    got = con.sql(
        f"SELECT * FROM read_parquet('{URL}/recorder=*/archive/**/*.parquet', hive_partitioning = true, "
        "hive_types_autocast = false)"
    ).arrow()
    got = got.read_all() if hasattr(got, "read_all") else got
    for rid, d in uploaded.items():
        mine = got.filter(pc.equal(got.column("recorder"), rid))
        local = dataset(d).to_table()
        assert mine.num_rows == local.num_rows > 0
        assert _rows(mine) == _rows(local)
    per_stream = con.sql(
        "SELECT recorder, exchange, market, count(*) AS n FROM "
        f"read_parquet('{URL}/recorder=*/archive/**/*.parquet', hive_partitioning = true) "
        "GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert per_stream == [
        ("rec-a", "binance", "spot", 1000),
        ("rec-a", "okx", "futures", 1000),
        ("rec-b", "binance", "spot", 1200),
        ("rec-b", "okx", "futures", 1200),
    ]
