"""Repair files: rows from REST history written beside the live segments, each trade once."""

from __future__ import annotations

import multiprocessing
import os
import random
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from helpers.store import T0_US, float_bits, make_rows, table_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pumpwatch.segments as segments
from pumpwatch.errors import StoreError
from pumpwatch.segments import SegmentWriter, list_segments, read_trades
from pumpwatch.segments.paths import parse_segment_path, repair_name
from pumpwatch.segments.reader import iter_batches
from pumpwatch.segments.recovery import recover_report
from pumpwatch.segments.repair import TEMP_SUFFIX, repair_lock_path, write_repaired
from pumpwatch.segments.retention import prune
from pumpwatch.segments.schema import SEGMENT_SCHEMA, TRADE_FIELDS, TRADE_SCHEMA, TradeRow
from pumpwatch.timeunits import US_PER_HOUR as HOUR_US

STREAM = "binance_spot"
REPAIR_NAME = re.compile(r"^\d{6}\.rest[1-9]\d*\.arrow$")


def everything(data_dir: Path, stream: str = STREAM) -> pa.Table:
    return read_trades(data_dir, 0, 2**62, streams=[stream])


def multiset(rows: list[TradeRow]) -> Counter[tuple[object, ...]]:
    return Counter(float_bits(rows))


def key(row: TradeRow) -> tuple[object, ...]:
    """The store's identity of a trade: (symbol, id), or every field but recv_time without one."""
    if row[8] is not None:
        return (row[2], row[8])
    return (row[2], row[0], *float_bits([row])[0][5:8])


def expected_new(stored: list[TradeRow], offered: list[TradeRow]) -> list[TradeRow]:
    """What `write_repaired` must write: the offer minus the store, by key with multiplicity."""
    left = Counter(key(r) for r in stored)
    seen: set[tuple[object, ...]] = set()
    out = []
    for r in offered:
        k = key(r)
        if r[8] is not None:
            if left[k] or k in seen:
                continue
            seen.add(k)
        elif left[k]:
            left[k] -= 1
            continue
        out.append(r)
    return out


def repair_files(data_dir: Path) -> list[Path]:
    return [s.path for s in list_segments(data_dir) if s.repair]


# A realistic tape: ids unique per symbol, or none (Phemex-like) with repeated identical fills.
symbols = st.sampled_from(["0GUSDT", "BTCUSDT", "ETHUSDT"])


@st.composite
def tapes(draw: st.DrawFn, max_size: int = 120) -> list[TradeRow]:
    n = draw(st.integers(1, max_size))
    rows: list[TradeRow] = []
    for i in range(n):
        symbol = draw(symbols)
        t = draw(st.integers(T0_US - 10_000_000, T0_US + 2 * HOUR_US + 10_000_000))
        price = draw(st.sampled_from([1.0, 1.5, 2.25]))
        qty = draw(st.sampled_from([0.5, 1.0]))
        side = draw(st.sampled_from(["buy", "sell"]))
        trade_id = None if draw(st.booleans()) and symbol == "0GUSDT" else str(i)
        rows.append((t, t + 400, symbol, symbol.removesuffix("USDT"), "USDT", price, qty, side, trade_id))
        if trade_id is None and draw(st.integers(0, 4)) == 0:
            rows.append(rows[-1])  # two genuine fills alike in every field
    return rows


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=tapes())
def test_repaired_rows_round_trip_sorted_by_hour_with_batch_metadata(rows: list[TradeRow]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        result = write_repaired(data_dir, STREAM, rows, fsync=False)
        want = expected_new([], rows)
        assert (result.offered, result.written, result.duplicates) == (
            len(rows),
            len(want),
            len(rows) - len(want),
        )
        table = everything(data_dir)
        assert multiset(table_rows(table)) == multiset(want)
        assert set(table.column("source").to_pylist()) == {"rest"}
        hours = sorted({r[0] // HOUR_US for r in want})
        assert len(result.files) == len(hours) and sorted(result.files) == sorted(repair_files(data_dir))
        for path, hour in zip(result.files, hours, strict=True):
            seg = parse_segment_path(path)
            assert seg is not None and seg.repair and seg.sealed and REPAIR_NAME.match(path.name)
            assert seg.start_us // HOUR_US == hour  # in its trade hour's directory, named by it
            reader = ipc.open_file(path)
            assert reader.schema.equals(SEGMENT_SCHEMA, check_metadata=True)
            got: list[TradeRow] = []
            for i in range(reader.num_record_batches):
                batch, meta = reader.get_batch_with_custom_metadata(i)
                part = table_rows(pa.Table.from_batches([batch]))
                times = [r[0] for r in part]
                assert int(meta[b"pumpwatch.time_min_us"]) == min(times)
                assert int(meta[b"pumpwatch.time_max_us"]) == max(times)
                assert int(meta[b"pumpwatch.recv_min_us"]) == min(r[1] for r in part)
                assert int(meta[b"pumpwatch.rows"]) == len(part)
                got += part
            assert {r[0] // HOUR_US for r in got} == {hour}
            assert seg.start_us == min(r[0] for r in got) // 1_000_000 * 1_000_000
            assert [(r[3], r[0]) for r in got] == sorted((r[3], r[0]) for r in got)  # by (base, time)
        assert write_repaired(data_dir, STREAM, rows, fsync=False).written == 0


def test_the_same_repair_twice_writes_nothing_the_second_time(tmp_path: Path) -> None:
    rows = make_rows(500)
    first = write_repaired(tmp_path, STREAM, rows)
    assert (first.offered, first.written, first.duplicates, len(first.files)) == (500, 500, 0, 1)
    second = write_repaired(tmp_path, STREAM, rows)
    assert (second.offered, second.written, second.duplicates, second.files) == (500, 0, 500, ())
    new = make_rows(3, start_us=T0_US + 10, symbols=("NEW",))
    again = write_repaired(tmp_path, STREAM, list(reversed(rows[100:300])) + new)
    assert again.written == 3 and again.duplicates == 200
    assert len(repair_files(tmp_path)) == 2
    assert len(everything(tmp_path)) == 503


def test_rows_already_in_live_segments_sealed_or_open_are_dropped(tmp_path: Path) -> None:
    sealed_rows = make_rows(300, start_us=T0_US, step_us=10_000)  # hour 0, sealed below
    open_rows = make_rows(300, start_us=T0_US + HOUR_US, step_us=10_000)  # hour 1, left open
    open_rows = [(*r[:8], None if r[8] is None else "x" + r[8]) for r in open_rows]
    with SegmentWriter(tmp_path, STREAM, fsync=False) as w:
        w.append(sealed_rows)
    live = SegmentWriter(tmp_path, STREAM, fsync=False)
    try:
        live.append(open_rows)
        live.flush()
        assert [s.sealed for s in list_segments(tmp_path)] == [True, False]
        # REST rows: received later, same trades, plus a few the live feed missed
        missed = [(r[0] + 1, r[1], r[2], r[3], r[4], r[5], r[6], r[7], None if r[8] is None else "m" + r[8])
                  for r in make_rows(40, start_us=T0_US + HOUR_US - 200_000, step_us=10_000)]  # fmt: skip
        rest = [(r[0], T0_US + 3 * HOUR_US, *r[2:]) for r in sealed_rows[250:] + open_rows[:50]] + missed
        random.Random(1).shuffle(rest)
        result = write_repaired(tmp_path, STREAM, rest, fsync=False)
        assert (result.written, result.duplicates) == (40, 100)
        table = read_trades(tmp_path, T0_US, T0_US + 2 * HOUR_US)
        assert multiset(table_rows(table)) == multiset(sealed_rows + open_rows + missed)
        assert Counter(table.column("source").to_pylist()) == {"ws": 600, "rest": 40}
    finally:
        live.close()


def test_id_less_rows_count_their_copies(tmp_path: Path) -> None:
    fill = (T0_US + 5, T0_US + 9, "0GUSDT", "0G", "USDT", 1.5, 2.0, "buy", None)
    other = (T0_US + 5, T0_US + 9, "0GUSDT", "0G", "USDT", 1.5, 2.0, "sell", None)
    with SegmentWriter(tmp_path, "phemex_spot", fsync=False) as w:
        w.append([fill])
    result = write_repaired(tmp_path, "phemex_spot", [fill, fill, fill, other], fsync=False)
    assert (result.written, result.duplicates) == (3, 1)  # one copy was stored; two more fills, and `other`
    assert write_repaired(tmp_path, "phemex_spot", [fill, fill, fill, other], fsync=False).written == 0
    got = table_rows(everything(tmp_path, "phemex_spot"))
    assert Counter(r[7] for r in got) == {"buy": 3, "sell": 1}


def test_other_streams_and_symbols_do_not_count_as_stored(tmp_path: Path) -> None:
    rows = make_rows(30)
    with SegmentWriter(tmp_path, "binance_futures", fsync=False) as w:
        w.append(rows)  # the same ids on another stream
    with SegmentWriter(tmp_path, STREAM, fsync=False) as w:
        w.append([(*r[:2], "ZZZUSDT", "ZZZ", *r[4:]) for r in rows])  # the same ids, another symbol
    assert write_repaired(tmp_path, STREAM, rows, fsync=False).written == 30


@settings(max_examples=25, deadline=None)
@given(
    tape=tapes(max_size=150),
    live_share=st.floats(0, 1),
    offer_share=st.floats(0, 1),
    window=st.tuples(st.integers(-20, 130), st.integers(0, 140)),
    seed=st.integers(0, 2**16),
)
def test_a_window_over_live_and_repair_files_is_the_union_without_duplicates(
    tape: list[TradeRow], live_share: float, offer_share: float, window: tuple[int, int], seed: int
) -> None:
    rng = random.Random(seed)
    live = [r for r in tape if rng.random() < live_share]  # what the connection got
    offered = [(r[0], r[1] + 7, *r[2:]) for r in tape if rng.random() < offer_share]  # what REST returns
    rng.shuffle(offered)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        if live:
            with SegmentWriter(data_dir, STREAM, fsync=False) as w:
                w.append(sorted(live, key=lambda r: r[1]))
        new = expected_new(live, offered)
        assert write_repaired(data_dir, STREAM, offered, fsync=False).written == len(new)
        start_us = T0_US + window[0] * 60_000_000
        end_us = start_us + window[1] * 60_000_000
        got = table_rows(read_trades(data_dir, start_us, end_us))
        union = [r for r in live + new if start_us <= r[0] <= end_us]
        assert multiset(got) == multiset(union)
        assert [r[0] for r in got] == sorted(r[0] for r in got)


def test_rows_across_an_hour_and_a_day_boundary_land_in_each_hours_file(tmp_path: Path) -> None:
    midnight = T0_US + 24 * HOUR_US
    rows = make_rows(10, start_us=midnight - 5 * 1_000_000, step_us=1_000_000)  # 23:59:55 .. 00:00:04
    result = write_repaired(tmp_path, STREAM, rows, fsync=False)
    assert [(p.parent.name, p.name) for p in result.files] == [
        ("date=2026-01-01", "235955.rest1.arrow"),
        ("date=2026-01-02", "000000.rest1.arrow"),
    ]
    before = table_rows(read_trades(tmp_path, midnight - HOUR_US, midnight - 1))
    after = table_rows(read_trades(tmp_path, midnight, midnight + HOUR_US - 1))
    assert before == rows[:5] and after == rows[5:]
    across = table_rows(read_trades(tmp_path, midnight - 2_000_000, midnight + 2_000_000))
    assert across == rows[3:8]
    # with no slack at all the files are still chosen by the hour in their names
    assert table_rows(read_trades(tmp_path, midnight, midnight + 10, slack_s=0)) == [rows[5]]
    # the same second again: the next number, never a clash
    assert write_repaired(tmp_path, STREAM, [(*rows[0][:8], "new")], fsync=False).files[0].name == (
        "235955.rest2.arrow"
    )


def test_recv_us_replaces_the_receive_time_and_tables_are_accepted(tmp_path: Path) -> None:
    rows = make_rows(20)
    table = pa.Table.from_pylist([dict(zip(TRADE_FIELDS, r, strict=True)) for r in rows])
    table = table.cast(pa.schema([TRADE_SCHEMA.field(n) for n in TRADE_FIELDS]))
    write_repaired(tmp_path, STREAM, table.slice(0, 10), recv_us=T0_US + HOUR_US, fsync=False)
    with_source = table.slice(10).append_column("source", pa.array(["ws"] * 10))  # ignored: repaired
    write_repaired(tmp_path, STREAM, with_source.to_batches()[0], fsync=False)
    got = everything(tmp_path)
    assert table_rows(got) == [(r[0], T0_US + HOUR_US, *r[2:]) for r in rows[:10]] + rows[10:]
    assert set(got.column("source").to_pylist()) == {"rest"}


def test_bad_input_raises_and_writes_nothing(tmp_path: Path) -> None:
    good = make_rows(5)
    with pytest.raises(StoreError, match="cannot be stored"):
        write_repaired(tmp_path, STREAM, [*good, (T0_US, T0_US, None, "X", "USDT", 1.0, 1.0, "buy", "1")])
    with pytest.raises(StoreError, match="columns"):
        write_repaired(tmp_path, STREAM, pa.table({"time": [1]}))
    with pytest.raises(Exception, match="unknown stream"):
        write_repaired(tmp_path, "nope_spot", good)
    assert list_segments(tmp_path) == []
    empty = write_repaired(tmp_path, STREAM, [])
    assert (empty.offered, empty.written, empty.files) == (0, 0, ())


def test_repair_files_are_listed_pruned_and_counted_like_sealed_segments(tmp_path: Path) -> None:
    with SegmentWriter(tmp_path, STREAM, fsync=False) as w:
        w.append(make_rows(10))
    write_repaired(tmp_path, STREAM, make_rows(10, start_us=T0_US + 3 * HOUR_US), fsync=False)
    write_repaired(tmp_path, STREAM, make_rows(10, start_us=T0_US + 30 * HOUR_US), fsync=False)
    segs = list_segments(tmp_path)
    assert [(s.path.name, s.repair, s.sealed) for s in segs] == [
        ("000000.arrow", False, True),
        ("030000.rest1.arrow", True, True),
        ("060000.rest1.arrow", True, True),
    ]
    assert list_segments(tmp_path, start_us=T0_US + 3 * HOUR_US, end_us=T0_US + 3 * HOUR_US) == [segs[1]]
    # the dataset (pyarrow discovery: names starting with "_" or "." are skipped) reads them
    ds = segments.dataset(tmp_path)
    assert ds.count_rows() == 30 and sorted(Path(f).name for f in ds.files) == [s.path.name for s in segs]
    assert sorted(ds.to_table(columns=["source"]).column("source").to_pylist()) == ["rest"] * 20 + ["ws"] * 10
    assert repair_lock_path(tmp_path, STREAM).exists()  # hidden: no reader trips over it
    report = prune(
        tmp_path,
        retention_s=24 * 3600,
        min_free_disk_mb=0,
        frames_retention_s=24 * 3600,
        now_us=T0_US + 29 * HOUR_US,
        free_bytes=lambda _p: 1 << 40,
    )
    assert sorted(d.path.name for d in report.deleted) == ["000000.arrow", "030000.rest1.arrow"]
    assert [s.path.name for s in list_segments(tmp_path)] == ["060000.rest1.arrow"]


def test_repair_names_never_match_a_live_or_open_name(tmp_path: Path) -> None:
    directory = tmp_path / "segments" / "exchange=binance" / "market=spot" / "date=2026-01-01"
    directory.mkdir(parents=True)
    for name in ("_000000.rest1.arrow", "000000.rest0.arrow", "000000.rest.arrow", "000000.rest1.parquet"):
        (directory / name).write_bytes(b"x")
        assert parse_segment_path(directory / name) is None
    assert repair_name(T0_US + 3_723_000_000, 2) == "010203.rest2.arrow"
    with pytest.raises(ValueError):
        repair_name(T0_US, 0)


def test_recover_removes_a_dead_repairers_temporary_but_not_a_live_ones(tmp_path: Path) -> None:
    import fcntl

    write_repaired(tmp_path, STREAM, make_rows(3), fsync=False)
    directory = repair_files(tmp_path)[0].parent
    dead = directory / f".000000.rest2.arrow{TEMP_SUFFIX}"
    alive = directory / f".000000.rest3.arrow{TEMP_SUFFIX}"
    dead.write_bytes(b"half")
    alive.write_bytes(b"half")
    fd = os.open(alive, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        report = recover_report(tmp_path, [STREAM])
    finally:
        os.close(fd)
    assert report.removed == [dead] and alive.exists()
    assert len(everything(tmp_path)) == 3


def _repair_worker(data_dir: str, rows: list[TradeRow], barrier: Any, out: Any) -> None:
    barrier.wait()  # both processes start repairing at the same instant
    written = 0
    for off in range(0, len(rows), 70):
        written += write_repaired(data_dir, STREAM, rows[off : off + 70], fsync=False).written
    out.put(written)


def test_concurrent_repairs_from_two_processes_never_duplicate(tmp_path: Path) -> None:
    rows = make_rows(600, step_us=3_000)
    with SegmentWriter(tmp_path, STREAM, fsync=False) as w:
        w.append(rows[::5])  # the live feed got every fifth trade
    a, b = rows[:], rows[100:]
    random.Random(2).shuffle(a)
    random.Random(3).shuffle(b)
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_repair_worker, args=(str(tmp_path), part, barrier, out)) for part in (a, b)]
    for p in procs:
        p.start()
    written = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sum(written) == 600 - 120
    table = everything(tmp_path)
    assert multiset(table_rows(table)) == multiset(rows)
    assert Counter(table.column("source").to_pylist()) == {"ws": 120, "rest": 480}


def test_iter_batches_gives_the_source_column_as_strings(tmp_path: Path) -> None:
    with SegmentWriter(tmp_path, STREAM, fsync=False) as w:
        w.append(make_rows(5))
    write_repaired(tmp_path, STREAM, make_rows(5, start_us=T0_US + 100, symbols=("NEW",)), fsync=False)
    batches = [b for _s, b in iter_batches(tmp_path, T0_US, T0_US + HOUR_US)]
    assert all(b.schema.equals(TRADE_SCHEMA) for b in batches)
    assert sorted(v for b in batches for v in b.column("source").to_pylist()) == ["rest"] * 5 + ["ws"] * 5
