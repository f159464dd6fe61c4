"""The Parquet archive: DuckDB, pyarrow and Polars read it and agree row for row with the segments;
filters prune files and row groups; late segments rebuild their hour; nothing archived is lost;
concurrent runs are safe; retention deletes only what has expired."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from helpers.store import make_rows

from pumpwatch.errors import StoreError
from pumpwatch.recorder.sim.market import MarketSpec, PumpSpec, write_store
from pumpwatch.segments import SegmentWriter, archive_dataset, dataset, list_segments, read_trades
from pumpwatch.segments.archive import (
    MANIFEST_NAME,
    SOURCES_KEY,
    archive_path,
    archive_pending,
    archive_root,
    archive_segment,
    list_archive,
    multiset_union,
)
from pumpwatch.segments.repair import write_repaired
from pumpwatch.timeunits import US_PER_DAY as DAY_US
from pumpwatch.timeunits import US_PER_HOUR as HOUR_US
from pumpwatch.timeunits import US_PER_S as S

T0_US = 1_767_657_600 * S - 90 * 60 * S  # 2026-01-05T22:30:00Z: the store spans midnight
SPAN_S = 3 * 3600.0
NOW_US = T0_US + 5 * HOUR_US  # "now" for retention (the store is from 2026)
ROW_GROUP_ROWS = 2048  # small groups, so a small store shows row-group pruning
TRADE_COLUMNS = ["time", "recv_time", "symbol", "base", "quote", "price", "qty", "side", "trade_id", "source"]
COLUMNS = ["exchange", "market", *TRADE_COLUMNS]
CANONICAL = pa.schema(
    [
        ("exchange", pa.string()),
        ("market", pa.string()),
        ("time", pa.int64()),
        ("recv_time", pa.int64()),
        ("symbol", pa.string()),
        ("base", pa.string()),
        ("quote", pa.string()),
        ("price", pa.float64()),
        ("qty", pa.float64()),
        ("side", pa.string()),
        ("trade_id", pa.string()),
        ("source", pa.string()),
    ]
)


def canonical(table: pa.Table) -> pa.Table:
    """`table`'s trade columns in one schema (times as int µs), sorted by every column."""
    cols = []
    for field in CANONICAL:
        col = table.column(field.name)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.int64())
        cols.append(col.cast(field.type))
    out = pa.Table.from_arrays(cols, schema=CANONICAL)
    return out.take(pc.sort_indices(out, [(name, "ascending") for name in CANONICAL.names])).combine_chunks()


def everything(data_dir: Path) -> pa.Table:
    return read_trades(data_dir, 0, 2**62)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-hour, 12-stream store across midnight, archived in small row groups (read only)."""
    data = tmp_path_factory.mktemp("archive") / "data"
    spec = MarketSpec(
        seed=7,
        start_us=T0_US,
        duration_s=SPAN_S,
        trades_per_s=2.0,
        bases=("0G", "BTC", "ETH", "ZRO", "SOL"),
        pumps=(PumpSpec("0G", T0_US + 3600 * S, 8.0, 1.0, streams=("okx_spot",)),),
        chunk_s=600.0,
    )
    write_store(data, spec, flush_every_s=60.0)
    report = archive_pending(data, now_us=NOW_US, row_group_rows=ROW_GROUP_ROWS)
    assert report.hours_built > 0 and report.hours_merged == 0
    return data


def test_every_engine_reads_the_archive_and_agrees_with_the_segments(store: Path) -> None:
    expected = canonical(everything(store))
    assert expected.num_rows > 50_000
    glob = f"{archive_root(store)}/**/*.parquet"

    con = duckdb.connect()
    via_duckdb = con.sql(
        f"SELECT exchange, market, epoch_us(time) AS time, epoch_us(recv_time) AS recv_time, symbol, base, "
        f"quote, price, qty, side, trade_id, source "
        f"FROM read_parquet('{glob}', hive_partitioning=true)"
    ).to_arrow_table()
    via_pyarrow = archive_dataset(store).to_table()
    pl = pytest.importorskip("polars")
    via_polars = pl.scan_parquet(glob, hive_partitioning=True).select(COLUMNS).collect().to_arrow()

    for got in (via_duckdb, via_pyarrow, via_polars):
        assert canonical(got).equals(expected)
    # The pandas route of the README: the same rows.
    df = pq.read_table(archive_root(store)).to_pandas()
    assert len(df) == expected.num_rows and set(df["exchange"].astype(str)) == {
        "binance", "bybit", "okx", "kucoin", "gate", "phemex"
    }  # fmt: skip


def test_each_archive_file_is_sorted_compressed_and_has_statistics(store: Path) -> None:
    files = list_archive(store)
    assert {stream for stream, _h, _p in files} == {s.stream for s in list_segments(store)}
    for stream, hour_us, path in files:
        assert path == archive_path(store, stream, hour_us)
        meta = pq.ParquetFile(path).metadata
        table = pq.read_table(path)
        assert table.schema.names == TRADE_COLUMNS  # the segment's columns; partitions are the path
        keys = [("base", "ascending"), ("time", "ascending"), ("recv_time", "ascending")]
        assert table.take(pc.sort_indices(table, keys)).equals(table)
        assert all(meta.row_group(i).num_rows <= ROW_GROUP_ROWS for i in range(meta.num_row_groups))
        group = meta.row_group(0)
        names = [group.column(i).path_in_schema for i in range(group.num_columns)]
        for name in ("time", "base", "price"):
            chunk = group.column(names.index(name))
            assert chunk.compression == "ZSTD" and chunk.is_stats_set
            assert chunk.statistics.has_min_max
        sources = json.loads(meta.metadata[SOURCES_KEY])
        assert [s[0] for s in sources] == [f.path.name for f in list_segments(store, [stream]) if
                                           f.start_us - f.start_us % HOUR_US == hour_us]  # fmt: skip


def _read_parquet_node(profile: dict) -> dict:
    if (
        profile.get("name") == "READ_PARQUET"
        or profile.get("extra_info", {}).get("Function") == "READ_PARQUET"
    ):
        return profile
    for child in profile.get("children", []) + profile.get("operator", []):
        found = _read_parquet_node(child)
        if found:
            return found
    return {}


def test_duckdb_prunes_files_by_date_and_row_groups_by_base_and_time(store: Path) -> None:
    glob = f"{archive_root(store)}/**/*.parquet"
    con = duckdb.connect()
    con.sql("SET TimeZone = 'UTC'")
    con.sql("PRAGMA enable_profiling = 'json'")
    query = (
        f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning=true) "
        f"WHERE date = '2026-01-05' AND base = '0G' "
        f"AND time BETWEEN '2026-01-05 23:10:00+00' AND '2026-01-05 23:10:10+00'"
    )
    profile = json.loads(con.sql("EXPLAIN ANALYZE " + query).fetchall()[0][1])
    scan = _read_parquet_node(profile)
    all_files = len(list_archive(store))
    day_files = sum(1 for _s, h, _p in list_archive(store) if h < T0_US + 90 * 60 * S)
    assert int(scan["extra_info"]["Total Files Read"]) == day_files < all_files
    # Exactly the row groups whose min/max statistics admit the filter are read: a fraction.
    t0, t1 = T0_US + 40 * 60 * S, T0_US + 40 * 60 * S + 10 * S
    admitted = total = 0
    for _s, _h, path in list_archive(store):
        if path.parent.name != "date=2026-01-05":
            continue
        meta = pq.ParquetFile(path).metadata
        for i in range(meta.num_row_groups):
            stats = {meta.row_group(i).column(c).path_in_schema: meta.row_group(i).column(c).statistics
                     for c in range(meta.num_columns)}  # fmt: skip
            base, when = stats["base"], stats["time"]
            lo, hi = (int(pa.scalar(v, pa.timestamp("us", tz="UTC")).value) for v in (when.min, when.max))
            admitted += base.min <= "0G" <= base.max and lo <= t1 and hi >= t0
            total += 1
    assert scan["total_row_groups_to_scan"] == total
    assert 0 < scan["row_groups_scanned"] == admitted < total / 3
    [(n,)] = con.sql(query).fetchall()
    expected = read_trades(store, "2026-01-05T23:10:00Z", "2026-01-05T23:10:10Z", base="0g")
    assert n == expected.num_rows > 0


def test_pyarrow_prunes_fragments_and_row_groups(store: Path) -> None:
    ds = archive_dataset(store)
    day = pc.field("date") == "2026-01-06"
    assert 0 < len(list(ds.get_fragments(filter=day))) < len(list(ds.get_fragments()))
    t0 = pa.scalar(T0_US + 2 * HOUR_US, pa.timestamp("us", tz="UTC"))
    t1 = pa.scalar(T0_US + 2 * HOUR_US + 10 * S, pa.timestamp("us", tz="UTC"))
    coin = (pc.field("base") == "0G") & (pc.field("time") >= t0) & (pc.field("time") <= t1)
    kept = total = 0
    for fragment in ds.get_fragments(filter=day):
        assert isinstance(fragment, pads.ParquetFileFragment)
        total += fragment.num_row_groups
        kept += len(fragment.split_by_row_group(filter=coin))
    assert 0 < kept < total / 3
    got = ds.to_table(filter=day & coin)
    want = read_trades(store, T0_US + 2 * HOUR_US, T0_US + 2 * HOUR_US + 10 * S, base="0G")
    assert got.num_rows == want.num_rows > 0


def test_nothing_pending_is_cheap_and_builds_nothing(store: Path) -> None:
    before = {p: p.stat().st_mtime_ns for _s, _h, p in list_archive(store)}
    started = time.perf_counter()
    report = archive_pending(store, now_us=NOW_US)
    took = time.perf_counter() - started
    assert report.hours_built == 0 and report.hours_current == len(before) and not report.pruned
    assert {p: p.stat().st_mtime_ns for _s, _h, p in list_archive(store)} == before
    assert took < 1.0


# --- rebuilds ----------------------------------------------------------------------------------


def _small_store(data: Path, stream: str = "binance_spot", n: int = 300) -> list:
    rows = make_rows(n, start_us=T0_US, step_us=5_000_000)  # 25 minutes of trades
    with SegmentWriter(data, stream, clock_us=lambda: 0) as w:
        w.append(rows)
    return rows


def _fresh(n: int, start_us: int, tag: str) -> list:
    """`n` rows no store row repeats (trade ids ``<tag><i>``), one per 7 µs from `start_us`."""
    return [(*r[:8], f"{tag}{i}") for i, r in enumerate(make_rows(n, start_us=start_us, step_us=7))]


def _agrees(data: Path) -> None:
    assert canonical(archive_dataset(data).to_table()).equals(canonical(everything(data)))


def test_a_repair_file_arriving_later_rebuilds_its_hour(tmp_path: Path) -> None:
    _small_store(tmp_path)
    first = archive_pending(tmp_path, now_us=NOW_US)
    assert first.hours_built == 1
    path = archive_path(tmp_path, "binance_spot", T0_US)
    repaired = [(T0_US + 61 * S, T0_US + 4000 * S, "0GUSDT", "0G", "USDT", 1.5, 2.0, "sell", "r1")]
    result = write_repaired(tmp_path, "binance_spot", repaired)
    assert result.written == 1
    again = archive_pending(tmp_path, now_us=NOW_US)
    assert (again.hours_built, again.hours_merged) == (1, 0)
    table = pq.read_table(path)
    assert table.num_rows == 301 and table.filter(pc.field("source") == "rest").num_rows == 1
    _agrees(tmp_path)
    assert archive_pending(tmp_path, now_us=NOW_US).hours_built == 0


def test_a_second_segment_of_the_hour_rebuilds_it(tmp_path: Path) -> None:
    _small_store(tmp_path, n=100)  # 22:30:00 .. 22:38:15
    assert archive_pending(tmp_path, now_us=NOW_US).hours_built == 1
    later = make_rows(20, start_us=T0_US + 20 * 60 * S, step_us=1_000_000)  # a restart at 22:50
    with SegmentWriter(tmp_path, "binance_spot", clock_us=lambda: 0) as w:
        w.append(later)
    names = sorted(f.path.name for f in list_segments(tmp_path))
    assert names == ["223000.arrow", "225000.arrow"]
    assert archive_pending(tmp_path, now_us=NOW_US).hours_built == 1
    assert pq.read_metadata(archive_path(tmp_path, "binance_spot", T0_US)).num_rows == 120
    _agrees(tmp_path)


def test_archive_segment_builds_the_hour_from_all_its_sealed_files(tmp_path: Path) -> None:
    _small_store(tmp_path, n=50)
    write_repaired(tmp_path, "binance_spot", _fresh(3, T0_US + 1, "a"))
    live = next(f.path for f in list_segments(tmp_path) if not f.repair)
    path = archive_segment(tmp_path, live)
    assert path == archive_path(tmp_path, "binance_spot", T0_US)
    assert pq.read_metadata(path).num_rows == 53
    assert archive_pending(tmp_path, now_us=NOW_US).hours_built == 0  # the manifest knows it
    opened = SegmentWriter(tmp_path, "okx_spot", clock_us=lambda: 0)
    opened.append(make_rows(2))
    opened.flush()
    try:
        open_path = next(f.path for f in list_segments(tmp_path, ["okx_spot"]))
        with pytest.raises(StoreError):
            archive_segment(tmp_path, open_path)
        assert archive_pending(tmp_path, now_us=NOW_US).hours_built == 0  # open files wait for sealing
    finally:
        opened.close()
    assert archive_pending(tmp_path, now_us=NOW_US).hours_built == 1


def test_a_segment_gone_from_the_store_is_never_lost_from_the_archive(tmp_path: Path) -> None:
    rows = _small_store(tmp_path, n=100)
    archive_pending(tmp_path, now_us=NOW_US)
    path = archive_path(tmp_path, "binance_spot", T0_US)
    before = canonical(archive_dataset(tmp_path).to_table())
    live = next(f.path for f in list_segments(tmp_path))
    live.unlink()  # the free-disk floor evicted it
    assert archive_pending(tmp_path, now_us=NOW_US).hours_built == 0  # a deletion builds nothing
    # the store's reader now takes that hour from the archive (the segment is gone)
    assert canonical(everything(tmp_path)).equals(before)
    late = [(r[0] + 1, *r[1:8], f"late{i}") for i, r in enumerate(rows[:5])]
    write_repaired(tmp_path, "binance_spot", late)  # and now a repair arrives for that hour
    report = archive_pending(tmp_path, now_us=NOW_US)
    assert (report.hours_built, report.hours_merged) == (1, 1)
    after = canonical(archive_dataset(tmp_path).to_table())
    assert after.num_rows == 105
    late_rows = after.filter(pc.starts_with(after.column("trade_id"), "late"))
    assert late_rows.num_rows == 5
    assert canonical(pa.concat_tables([before, late_rows])).equals(after)
    assert pq.read_metadata(path).num_rows == 105
    # the rebuilt file's manifest still names the vanished segment: the reader keeps using it
    assert canonical(everything(tmp_path)).equals(after)


def test_a_lost_manifest_rebuilds_as_a_union_without_duplicates(tmp_path: Path) -> None:
    _small_store(tmp_path, n=100)
    write_repaired(tmp_path, "binance_spot", _fresh(4, T0_US + 3, "b"))
    archive_pending(tmp_path, now_us=NOW_US)
    manifest = archive_path(tmp_path, "binance_spot", T0_US).parent / MANIFEST_NAME
    manifest.unlink()
    report = archive_pending(tmp_path, now_us=NOW_US)
    assert (report.hours_built, report.hours_merged) == (1, 1)
    _agrees(tmp_path)  # 104 rows, each once (make_rows repeats no row)
    manifest.write_text("{not json")
    assert archive_pending(tmp_path, now_us=NOW_US).hours_merged == 1
    _agrees(tmp_path)


def test_a_crash_before_the_manifest_only_costs_a_rebuild(tmp_path: Path) -> None:
    _small_store(tmp_path, n=60)
    archive_pending(tmp_path, now_us=NOW_US)
    directory = archive_path(tmp_path, "binance_spot", T0_US).parent
    old_manifest = (directory / MANIFEST_NAME).read_bytes()
    write_repaired(tmp_path, "binance_spot", _fresh(2, T0_US + 5, "c"))
    archive_pending(tmp_path, now_us=NOW_US)
    (directory / MANIFEST_NAME).write_bytes(old_manifest)  # the Parquet file was renamed, then a crash
    (directory / ".07.parquet.abc.tmp").write_bytes(b"half a file")  # and a temporary left behind
    report = archive_pending(tmp_path, now_us=NOW_US)
    assert (report.hours_built, report.hours_merged) == (1, 0)
    assert not (directory / ".07.parquet.abc.tmp").exists()
    _agrees(tmp_path)


def test_multiset_union_keeps_the_larger_count_of_each_row() -> None:
    schema = pa.schema([pa.field(n, t) for n, t in zip(TRADE_COLUMNS, CANONICAL.types[2:], strict=True)])
    base = make_rows(4)

    def table(rows: list) -> pa.Table:
        cols = list(zip(*[(*r, "ws") for r in rows], strict=True))
        return pa.Table.from_arrays(
            [pa.array(c, t) for c, t in zip(cols, schema.types, strict=True)], schema=schema
        )

    from pumpwatch.segments.schema import TRADE_SCHEMA

    old = table([base[0], base[0], base[1], base[2]]).cast(TRADE_SCHEMA)
    new = table([base[0], base[2], base[2], base[3]]).cast(TRADE_SCHEMA)
    got = multiset_union(old, new)
    keys = sorted(got.column("trade_id").to_pylist(), key=str)
    assert keys == sorted([base[0][8], base[0][8], base[1][8], base[2][8], base[2][8], base[3][8]], key=str)


# --- concurrency and retention -----------------------------------------------------------------


def _archive_in_child(data: str, out: multiprocessing.Queue) -> None:
    report = archive_pending(data, now_us=NOW_US)
    out.put(report.hours_built)


def test_two_archive_runs_at_once_are_safe(tmp_path: Path) -> None:
    spec = MarketSpec(seed=1, start_us=T0_US, duration_s=2 * 3600.0, trades_per_s=1.0, bases=("0G", "BTC"))
    write_store(tmp_path, spec, flush_every_s=60.0)
    hours = {(f.stream, f.start_us - f.start_us % HOUR_US) for f in list_segments(tmp_path)}
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = ctx.Queue()
    children = [ctx.Process(target=_archive_in_child, args=(str(tmp_path), out)) for _ in range(2)]
    for child in children:
        child.start()
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(archive_pending(tmp_path, now_us=NOW_US).hours_built))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    built = results + [out.get(timeout=5) for _ in children]
    assert sum(built) == len(hours)  # every hour built once, by whichever run got it first
    assert not [p for p in archive_root(tmp_path).rglob("*.tmp")]
    _agrees(tmp_path)


def test_retention_deletes_only_archive_files_older_than_the_archive_retention(tmp_path: Path) -> None:
    _small_store(tmp_path, "okx_spot", n=10)
    archive_pending(tmp_path, now_us=NOW_US)
    kept = archive_path(tmp_path, "okx_spot", T0_US)
    # Archive files 100 days and 80 days older than the store's hour (their segments long gone).
    old_hour, young_hour = T0_US - 100 * DAY_US, T0_US - 80 * DAY_US
    for hour_us in (old_hour, young_hour):
        target = archive_path(tmp_path, "okx_spot", hour_us)
        target.parent.mkdir(parents=True)
        target.write_bytes(kept.read_bytes())
    old, young = archive_path(tmp_path, "okx_spot", old_hour), archive_path(tmp_path, "okx_spot", young_hour)
    report = archive_pending(tmp_path, now_us=NOW_US, retention_s=90 * 86_400)
    assert report.pruned == [old]
    assert not old.exists() and not old.parent.exists()  # its empty date directory too
    assert young.exists() and kept.exists()
    # Past the retention a sealed hour is not archived at all, and its old file is deleted.
    report = archive_pending(tmp_path, now_us=T0_US + 91 * DAY_US, retention_s=90 * 86_400)
    assert report.pruned == [young, kept] and report.hours_expired == 1 and report.hours_built == 0
    assert list_segments(tmp_path)  # segments are not the archive's to delete
    assert archive_pending(tmp_path, now_us=T0_US + 91 * DAY_US, retention_s=None).hours_built == 1


def test_dataset_include_open_adds_the_hour_being_written(tmp_path: Path) -> None:
    _small_store(tmp_path, n=30)
    writer = SegmentWriter(tmp_path, "bybit_spot", clock_us=lambda: 0)
    writer.append(make_rows(7))
    writer.flush()
    try:
        assert dataset(tmp_path).count_rows() == 30
        ds = dataset(tmp_path, include_open=True)
        assert ds.count_rows() == 37
        by_stream = duckdb.sql("SELECT exchange, market, date, count(*) FROM ds GROUP BY ALL ORDER BY ALL")
        assert by_stream.fetchall() == [
            ("binance", "spot", "2026-01-05", 30),
            ("bybit", "spot", "2026-01-01", 7),
        ]
        assert ds.to_table(filter=pc.field("base") == "0G").num_rows == 10 + 2
        rows = canonical(ds.to_table())
        assert rows.equals(canonical(everything(tmp_path)))
    finally:
        writer.close()
    # Sealed now: the same rows, counted once, with or without the option.
    assert dataset(tmp_path).count_rows() == dataset(tmp_path, include_open=True).count_rows() == 37
    assert dataset(tmp_path / "nothing", include_open=True).count_rows() == 0
    assert archive_dataset(tmp_path / "nothing").count_rows() == 0


def test_include_open_counts_a_file_sealed_meanwhile_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pumpwatch.segments as segments

    writer = SegmentWriter(tmp_path, "gate_spot", clock_us=lambda: 0)
    writer.append(make_rows(9))
    writer.flush()
    real = segments._read_open_segments

    def read_then_seal(data_dir: object, schema: pa.Schema) -> list:
        got = real(data_dir, schema)  # type: ignore[arg-type]
        writer.close()  # sealed between reading the open file and listing the sealed ones
        return got

    monkeypatch.setattr(segments, "_read_open_segments", read_then_seal)
    assert segments.dataset(tmp_path, include_open=True).count_rows() == 9
