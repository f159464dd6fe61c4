"""Dask (`dask.dataframe.read_parquet` on a `distributed` LocalCluster) reads the remote archive
and agrees row for row with the local segments it was made from."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from helpers.remote_store import BUCKET, S3Server, archive_store, is_loopback, write_segments

from pumpwatch.segments import dataset
from pumpwatch.segments.remote import RemoteSettings
from pumpwatch.segments.upload import Uploader

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
pytest.importorskip("s3fs")

URL = f"s3://{BUCKET}/dask"
LISTING = "0G_20260101T003000Z"
COLUMNS = [
    "recorder",
    "exchange",
    "market",
    "time",
    "recv_time",
    "symbol",
    "base",
    "price",
    "qty",
    "side",
    "trade_id",
]


@pytest.mark.slow
# dask's own parquet reader calls reset_index(inplace=True), deprecated in pandas 3
@pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index")
def test_dask_local_cluster_reads_the_remote_archive(tmp_path: Path, s3_server: S3Server) -> None:
    local = {}
    for n, rid in enumerate(("rec-a", "rec-b")):
        d = tmp_path / rid
        write_segments(d, hours=2, rows_per_hour=300 + 100 * n)
        archive_store(d)
        local[rid] = dataset(d).to_table()
        _listing(d / "listings" / LISTING, local[rid])  # a recorder's part: Parquet too
        up = Uploader(d, RemoteSettings(url=URL, endpoint_url=s3_server.endpoint_url, recorder_id=rid))
        assert up.run_once().backlog_files == 0
        up.stop()
    # the shared listing directory beside the recorders (detector/shared_listing.py)
    shared = tmp_path / "shared"
    _listing(shared, local["rec-a"])
    fs = s3_server.filesystem()
    for f in sorted(p for p in shared.rglob("*") if p.is_file()):
        with fs.open_output_stream(f"{BUCKET}/dask/listings/{LISTING}/{f.relative_to(shared)}") as out:
            out.write(f.read_bytes())
    assert is_loopback(s3_server.host)
    storage = {"key": "testing", "secret": "testing", "endpoint_url": s3_server.endpoint_url,
               "client_kwargs": {"region_name": "us-east-1"}}  # fmt: skip
    # processes=False: scheduler and worker in this process over the in-process transport (no
    # sockets); no dashboard
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        # only the archive files (the listing directories hold Parquet files too), as
        # docs/remote.md shows
        ddf = dd.read_parquet(
            f"{URL}/recorder=*/archive/**/*.parquet",
            storage_options=storage,
            dataset={"partitioning": "hive"},
        )
        per_stream = ddf.groupby(["recorder", "exchange", "market"]).size().compute()
        df = ddf.compute()
    assert {k: int(v) for k, v in per_stream.items()} == {
        ("rec-a", "binance", "spot"): 600,
        ("rec-a", "okx", "futures"): 600,
        ("rec-b", "binance", "spot"): 800,
        ("rec-b", "okx", "futures"): 800,
    }
    for rid, table in local.items():
        mine = pa.Table.from_pandas(df[df["recorder"].astype(str) == rid], preserve_index=False)
        assert mine.num_rows == table.num_rows
        assert _rows(mine) == _rows(table)


def _listing(d: Path, trades: pa.Table) -> None:
    """A listing directory as the extractor writes it: metadata.json and raw/trades.parquet
    (the window's rows with their exchange and market columns)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    (d / "raw").mkdir(parents=True, exist_ok=True)
    window = trades.slice(0, 50)
    n = window.num_rows
    window = window.drop_columns([c for c in ("exchange", "market", "date") if c in window.column_names])
    window = window.add_column(0, "market", pa.array(["spot"] * n)).add_column(
        0, "exchange", pa.array(["binance"] * n)
    )
    assert pc.sum(pc.equal(window.column("exchange"), "binance")).as_py() == n
    pq.write_table(window, d / "raw" / "trades.parquet")
    (d / "metadata.json").write_bytes(b'{"symbol": "0G", "trades": %d}' % n)


def _rows(table: pa.Table) -> list[tuple[object, ...]]:
    """Rows in one order, with plain strings and µs UTC times whatever each reader chose."""
    time_type = pa.timestamp("us", tz="UTC")
    cols = {}
    for c in COLUMNS[1:]:
        col = table.column(c)
        if pa.types.is_timestamp(col.type):
            col = col.cast(time_type)
        elif not pa.types.is_floating(col.type):
            col = col.cast(pa.string())
        cols[c] = col
    t = pa.table(cols).sort_by([(c, "ascending") for c in ("exchange", "market", "time", "recv_time")])
    return list(zip(*(t.column(c).to_pylist() for c in COLUMNS[1:]), strict=True))
