"""Benchmark: research over the shared store. Dask (`distributed` LocalCluster) against DuckDB on
one coin's per-second OHLCV across all twelve streams, read straight from the S3 archive.

    .venv/bin/python bench/bench_remote.py                     # 1 day, ~10 M trades (~5 min)
    .venv/bin/python bench/bench_remote.py --trades 100e6 --days 7   # the 100 M-trade bench store

Steps: the store is built with bench_extract.py's generator and week spec (seeded, cached under
``bench/out/remote-<N>M``), archived with `archive_pending`, uploaded by the real `Uploader` to
a moto S3 server on 127.0.0.1 started here (in memory: the network path is loopback, so the
figures are the engines' own costs of S3 reads, listing and Parquet decoding, not a WAN's).
Then the same query, `--runs` times each (median):

- DuckDB: ``read_parquet('s3://…/*/archive/**/*.parquet', hive_partitioning = true)`` through an
  fsspec (s3fs) filesystem registered with the connection; one process.
- Dask: ``dd.read_parquet(…, filters=[("base", "==", coin)])`` on a LocalCluster of
  `--workers` processes; per-partition partial aggregates (first/last by time, high, low,
  volume, count per exchange, market, second), combined after ``compute()``.
- The merged reader (`segments.remote_read.read_remote_trades`, each trade once across
  recorders) over the pump hour, for scale.

The two results are compared row for row (prices and counts exact, volume to 1e-9 relative).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_archive import week_spec
from bench_extract import BASE_START_US, DAY_S, SYMBOL, build

from pumpwatch.timeunits import US_PER_S

BUCKET = "pumpwatch-bench"
URL = f"s3://{BUCKET}/research"
UTC_US = "datetime64[us, UTC]"
# bench_archive.py's query, with ties on the trade time broken by price (lowest opens, highest
# closes) so that two engines give one answer
OHLCV = """
    SELECT exchange, market, date_trunc('second', time) AS second,
           arg_min(price, (time, price)) AS open, max(price) AS high, min(price) AS low,
           arg_max(price, (time, price)) AS close, sum(qty) AS volume, count(*) AS trades
    FROM {source}
    WHERE base = '{coin}' {extra}
    GROUP BY ALL
"""


def start_s3() -> tuple[Any, str]:
    """moto's S3 server in a process of its own on 127.0.0.1 (so this process's CPU time is the
    uploader's and the engines' alone); (process, endpoint)."""
    import socket
    import subprocess
    import urllib.request

    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )  # fmt: skip
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise SystemExit("moto_server did not start") from None
            time.sleep(0.2)
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    return server, endpoint


def upload(store: Path, endpoint: str) -> dict[str, float]:
    from pumpwatch.segments.archive import archive_pending
    from pumpwatch.segments.remote import RemoteSettings
    from pumpwatch.segments.upload import Uploader

    t0 = time.monotonic()
    archive_pending(store, retention_s=None)
    t1 = time.monotonic()
    import shutil

    shutil.rmtree(store / "remote", ignore_errors=True)  # the upload manifest: this S3 server is new
    remote = RemoteSettings(url=URL, endpoint_url=endpoint, recorder_id="bench", max_files_per_round=10_000)
    cpu0 = time.process_time()
    up = Uploader(store, remote)
    files = 0
    while True:
        result = up.run_once()
        if result.error:
            raise SystemExit(f"upload failed: {result.error}")
        files += len(result.uploaded)
        if result.backlog_files == 0:
            break
    up.stop()
    archive_bytes = sum(p.stat().st_size for p in (store / "archive").rglob("*.parquet"))
    hours = sum(1 for _ in (store / "archive").rglob("*.parquet"))
    return {
        "archive_s": t1 - t0,
        "upload_s": time.monotonic() - t1,
        "upload_cpu_s": time.process_time() - cpu0,
        "files": files,
        "hours": hours,
        "archive_bytes": archive_bytes,
    }


def s3fs_filesystem(endpoint: str) -> Any:
    import s3fs

    return s3fs.S3FileSystem(endpoint_url=endpoint, client_kwargs={"region_name": "us-east-1"})


def duckdb_query(endpoint: str) -> Any:
    import duckdb

    con = duckdb.connect()
    con.register_filesystem(s3fs_filesystem(endpoint))
    source = f"read_parquet('{URL}/recorder=*/archive/**/*.parquet', hive_partitioning = true)"
    sql = OHLCV.format(source=source, coin=SYMBOL, extra="")
    return con.sql(sql + " ORDER BY ALL").df()


def _partial(df: Any) -> Any:
    """Per (exchange, market, second): first/last price by time, high, low, volume, count."""
    import pandas as pd

    if df.empty:
        return pd.DataFrame(
            {
                "exchange": pd.Series(dtype=object), "market": pd.Series(dtype=object),
                "second": pd.Series(dtype=UTC_US), "t_first": pd.Series(dtype=UTC_US),
                "open": pd.Series(dtype=float), "t_last": pd.Series(dtype=UTC_US),
                "close": pd.Series(dtype=float), "high": pd.Series(dtype=float),
                "low": pd.Series(dtype=float),
                "volume": pd.Series(dtype=float), "trades": pd.Series(dtype="int64"),
            }
        )  # fmt: skip
    df = df.assign(exchange=df["exchange"].astype(str), market=df["market"].astype(str))
    df = df.assign(second=df["time"].dt.floor("s")).sort_values(["time", "price"], kind="stable")
    g = df.groupby(["exchange", "market", "second"], sort=False, observed=True)
    out = g.agg(
        t_first=("time", "first"), open=("price", "first"), t_last=("time", "last"), close=("price", "last"),
        high=("price", "max"), low=("price", "min"), volume=("qty", "sum"), trades=("price", "size"),
    )  # fmt: skip
    return out.reset_index()


def _combine(parts: Any) -> Any:
    parts = parts.sort_values(["t_first", "open"], kind="stable")
    g = parts.groupby(["exchange", "market", "second"], sort=True)
    first = g.agg(open=("open", "first"))
    last = (
        parts.sort_values(["t_last"], kind="stable")
        .groupby(["exchange", "market", "second"])
        .agg(close=("close", "last"))
    )
    rest = g.agg(high=("high", "max"), low=("low", "min"), volume=("volume", "sum"), trades=("trades", "sum"))
    out = first.join(last).join(rest).reset_index()
    return out[["exchange", "market", "second", "open", "high", "low", "close", "volume", "trades"]]


def dask_query(client: Any, endpoint: str) -> Any:
    import dask.dataframe as dd

    ddf = dd.read_parquet(
        f"{URL}/recorder=*/archive/**/*.parquet",  # the archive only (listings hold Parquet too)
        columns=["exchange", "market", "time", "price", "qty", "base"],
        filters=[("base", "==", SYMBOL)],
        dataset={"partitioning": "hive"},
        storage_options={"endpoint_url": endpoint, "client_kwargs": {"region_name": "us-east-1"}},
    )
    parts = ddf.map_partitions(_partial, meta=_partial(ddf._meta)).compute()
    return _combine(parts)


def compare(a: Any, b: Any) -> str:
    import numpy as np

    a = a.assign(exchange=a["exchange"].astype(str), market=a["market"].astype(str))
    a = a.sort_values(["exchange", "market", "second"]).reset_index(drop=True)
    b = b.sort_values(["exchange", "market", "second"]).reset_index(drop=True)
    if len(a) != len(b):
        return f"DIFFER: {len(a)} vs {len(b)} rows"
    sec_a = a["second"].dt.tz_localize(None) if a["second"].dt.tz is not None else a["second"]
    sec_b = b["second"].dt.tz_localize(None) if b["second"].dt.tz is not None else b["second"]
    same = (
        (a["exchange"] == b["exchange"]).all()
        and (a["market"] == b["market"]).all()
        and (sec_a.astype("datetime64[us]").values == sec_b.astype("datetime64[us]").values).all()
        and all((a[c].to_numpy() == b[c].to_numpy()).all() for c in ("open", "high", "low", "close"))
        and (a["trades"].to_numpy() == b["trades"].to_numpy()).all()
        and np.allclose(a["volume"].to_numpy(), b["volume"].to_numpy(), rtol=1e-9, atol=0)
    )
    if same:
        return f"identical, {len(a):,} rows"
    bad = {
        c: int((a[c].to_numpy() != b[c].to_numpy()).sum()) for c in ("open", "high", "low", "close", "trades")
    }
    return f"DIFFER in {bad}"


def timed(fn: Any, runs: int) -> tuple[float, Any]:
    results = []
    out = None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        results.append(time.perf_counter() - t)
    return statistics.median(results), out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trades", type=float, default=10e6, help="trades in the store (all 12 streams)")
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="Dask LocalCluster worker processes")
    parser.add_argument("--flush-every", type=float, default=60.0, help="receive-time s per record batch")
    parser.add_argument("--upload-only", action="store_true", help="stop after the upload figures")
    opts = parser.parse_args()
    store = Path(f"bench/out/remote-{opts.trades / 1e6:g}M-{opts.days:g}d")
    build(store, week_spec(opts.trades, opts.days), opts.flush_every)
    server, endpoint = start_s3()
    try:
        up = upload(store, endpoint)
        print(
            f"archive {up['archive_s']:.1f} s, upload of {up['files']:.0f} objects to the local S3 "
            f"server {up['upload_s']:.1f} s"
        )
        per_hour_ms = up["upload_cpu_s"] / up["hours"] * 1e3
        print(
            f"upload cost per sealed stream-hour: {per_hour_ms:.1f} ms CPU (uploader process), "
            f"{up['archive_bytes'] / up['hours'] / 2**20:.2f} MiB; "
            f"{up['archive_bytes'] / 2**20 / up['upload_s']:.0f} MiB/s over loopback"
        )
        if opts.upload_only:
            return
        from distributed import Client, LocalCluster

        duck_s, duck = timed(lambda: duckdb_query(endpoint), opts.runs)
        print(f"{'DuckDB (fsspec/s3fs):':38s} {duck_s:6.2f} s  ({len(duck):,} OHLCV rows)")
        with (
            LocalCluster(n_workers=opts.workers, threads_per_worker=1, processes=True) as cluster,
            Client(cluster) as client,
        ):
            dask_s, dask_out = timed(lambda: dask_query(client, endpoint), opts.runs)
        label = f"Dask LocalCluster ({opts.workers} workers):"
        print(f"{label:38s} {dask_s:6.2f} s  ({len(dask_out):,} OHLCV rows)")
        print(f"Dask / DuckDB: {dask_s / duck_s:.1f}x;  results: {compare(duck, dask_out)}")
        from pumpwatch.segments.remote_read import read_remote_trades

        hour_end = BASE_START_US + round(opts.days * DAY_S * US_PER_S)
        t = time.perf_counter()
        merged = read_remote_trades(
            URL, hour_end - 3600 * US_PER_S, hour_end, endpoint_url=endpoint, base=SYMBOL
        )
        print(
            f"merged reader (each trade once), {SYMBOL}'s last hour on 12 streams: "
            f"{time.perf_counter() - t:.2f} s, {merged.num_rows:,} trades"
        )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
