"""Spark reads the archive of the shared store (behind the `spark` marker: it needs Java 17+
and ``pip install pyspark``; skipped when either is missing).

Spark reaches S3 through Hadoop's ``s3a`` connector, which the pyspark wheel does not ship
(``hadoop-aws`` and its AWS SDK are Maven downloads: ``spark.jars.packages``). Where the connector
is on Spark's class path, the test reads ``s3a://`` from the local S3 server directly; otherwise
it reads a byte-for-byte copy of the bucket's archive objects (same keys, same hive layout), so
what is tested is Spark's reading of the layout and the files, and says which path it took."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from helpers.remote_store import BUCKET, S3Server
from helpers.remote_world import GAPS, archive_and_upload, record

from pumpwatch.segments import remote_dataset

pytestmark = pytest.mark.spark
pytest.importorskip("pyspark", reason="pyspark is not installed (pip install pyspark; needs Java 17+)")
if shutil.which("java") is None:
    pytest.skip("no java on PATH (Spark needs Java 17+)", allow_module_level=True)

URL = f"s3://{BUCKET}/spark"


def _has_s3a(spark: object) -> bool:
    try:
        spark._jvm.java.lang.Class.forName("org.apache.hadoop.fs.s3a.S3AFileSystem")  # type: ignore[attr-defined]
    except Exception:
        return False
    return True


def test_spark_reads_the_remote_archive(
    tmp_path: Path, s3_server: S3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    for rid in GAPS:
        record(tmp_path / rid, rid)
        archive_and_upload(tmp_path / rid, URL, s3_server.endpoint_url, rid)
    expected = remote_dataset(URL, endpoint_url=s3_server.endpoint_url).to_table()

    spark = (
        SparkSession.builder.master("local[1]")
        .appName("pumpwatch-archive")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")  # partitions as strings
        .config("spark.hadoop.fs.s3a.endpoint", s3_server.endpoint_url)
        .config("spark.hadoop.fs.s3a.path.style.access", "true")
        .config("spark.hadoop.fs.s3a.access.key", "testing")
        .config("spark.hadoop.fs.s3a.secret.key", "testing")
        .config("spark.hadoop.fs.s3a.connection.ssl.enabled", "false")
        .getOrCreate()
    )
    try:
        if _has_s3a(spark):
            root, how = f"s3a://{BUCKET}/spark", "s3a"
        else:
            local = tmp_path / "bucket"
            pafs.copy_files(f"{BUCKET}/spark", str(local), source_filesystem=s3_server.filesystem(),
                            destination_filesystem=pafs.LocalFileSystem())  # fmt: skip
            root, how = str(local), "a copy of the bucket (no s3a connector on the class path)"
        frames = [
            spark.read.parquet(f"{root}/recorder={rid}/archive").withColumn("recorder", F.lit(rid))
            for rid in GAPS
        ]
        df = frames[0].unionByName(frames[1])
        counts = {
            (r["recorder"], r["exchange"], r["market"]): r["count"]
            for r in df.groupBy("recorder", "exchange", "market").count().collect()
        }
        rows = sorted(
            (r["recorder"], r["t"], r["trade_id"], r["price"], r["qty"])
            for r in df.select(
                "recorder", F.unix_micros("time").alias("t"), "trade_id", "price", "qty"
            ).collect()
        )
    finally:
        spark.stop()
    want_counts: dict[tuple[str, str, str], int] = {}
    for rec, ex, mk in zip(
        *(expected.column(c).to_pylist() for c in ("recorder", "exchange", "market")), strict=True
    ):
        want_counts[(rec, ex, mk)] = want_counts.get((rec, ex, mk), 0) + 1
    assert counts == want_counts and sum(counts.values()) > 0
    columns = [expected.column(c).to_pylist() for c in ("recorder", "time", "trade_id", "price", "qty")]
    columns[1] = expected.column("time").cast(pa.int64()).to_pylist()
    want = sorted(zip(*columns, strict=True))
    assert rows == want
    with capsys.disabled():
        print(f"\nspark read {sum(counts.values())} rows via {how}")
