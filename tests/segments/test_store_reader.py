"""read_trades equals a filter over everything written, for sealed and open segments."""

from __future__ import annotations

import random
import threading

import pyarrow as pa
import pytest
from helpers.store import T0_US, float_bits, table_rows
from hypothesis import given, settings
from hypothesis import strategies as st

from pumpwatch.segments import SegmentWriter, iter_batches, read_trades
from pumpwatch.segments import reader as reader_mod
from pumpwatch.segments.reader import OUT_SCHEMA
from pumpwatch.timeunits import US_PER_HOUR as HOUR_US

STREAMS = ("binance_spot", "okx_futures", "gate_spot")
BASES = ("BTC", "ETH", "0G", "PEPE")
SPAN_US = 3 * HOUR_US


def _random_rows(rng: random.Random, n: int) -> list:
    rows = []
    recv = T0_US
    for i in range(n):
        recv += rng.randrange(0, 2 * SPAN_US // n)
        lag = rng.randrange(-2_000_000, 120_000_000)  # exchange clock ahead or the feed behind
        base = rng.choice(BASES)
        tid = None if rng.random() < 0.1 else str(i)
        rows.append((recv - lag, recv, f"{base}USDT", base, "USDT", rng.uniform(1, 2), rng.random(),
                     rng.choice(("buy", "sell")), tid))  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Three streams over three hours; the last hour of one stream still open."""
    data_dir = tmp_path_factory.mktemp("store")
    rng = random.Random(7)
    written = {}
    open_writer = None
    for stream in STREAMS:
        rows = _random_rows(rng, 4000)
        written[stream] = rows
        w = SegmentWriter(data_dir, stream, flush_rows=97, flush_interval_s=60)
        for i in range(0, len(rows), 50):
            w.append(rows[i : i + 50])
        if stream == "okx_futures":
            w.flush()
            open_writer = w
        else:
            w.close()
    yield data_dir, written
    assert open_writer is not None
    open_writer.close()


def _expected(written, start_us, end_us, streams=None, base=None):
    out = []
    for stream in sorted(written, key=lambda s: tuple(s.split("_"))):
        if streams is not None and stream not in streams:
            continue
        rows = [r for r in written[stream] if start_us <= r[0] <= end_us and (base is None or r[3] == base)]
        rows.sort(key=lambda r: (r[0], r[1]))
        ex, market = stream.split("_")
        out += [(ex, market, *r) for r in rows]
    return out


def _got(table: pa.Table):
    ex, market = table.column("exchange").to_pylist(), table.column("market").to_pylist()
    return [(e, m, *r) for e, m, r in zip(ex, market, table_rows(table), strict=True)]


@settings(max_examples=60, deadline=None)
@given(
    start=st.integers(-HOUR_US // 2, SPAN_US + HOUR_US // 2),
    length=st.integers(0, HOUR_US) | st.integers(0, 60_000_000),
    base=st.none() | st.sampled_from([*BASES, "NOPE"]),
    streams=st.none() | st.sets(st.sampled_from(STREAMS), min_size=1).map(sorted),
)
def test_window_equals_a_filter_over_everything(store, start, length, base, streams) -> None:
    data_dir, written = store
    s, e = T0_US + start, T0_US + start + length
    table = read_trades(data_dir, s, e, streams=streams, base=base)
    assert table.schema.equals(OUT_SCHEMA)
    assert float_bits(_got(table)) == float_bits(_expected(written, s, e, streams, base))


def test_whole_store_and_empty_answers(store) -> None:
    data_dir, written = store
    everything = read_trades(data_dir, T0_US - HOUR_US, T0_US + 3 * SPAN_US)
    assert everything.num_rows == sum(len(r) for r in written.values())
    assert read_trades(data_dir, T0_US + 10 * SPAN_US, T0_US + 11 * SPAN_US).num_rows == 0
    assert read_trades(data_dir, T0_US + 5, T0_US + 4).num_rows == 0  # end before start
    empty = read_trades(data_dir / "nothing", T0_US, T0_US + HOUR_US)
    assert empty.num_rows == 0 and empty.schema.equals(OUT_SCHEMA)


def test_only_batches_meeting_the_window_are_decoded(store, monkeypatch) -> None:
    data_dir, written = store
    decoded = []
    real = reader_mod._filter

    def spy(batch, *args):
        decoded.append(batch.num_rows)
        return real(batch, *args)

    monkeypatch.setattr(reader_mod, "_filter", spy)
    mid = written["gate_spot"][2000][0]
    rows = [b for _, b in iter_batches(data_dir, mid, mid + 1_000_000, streams=["gate_spot"])]
    assert sum(b.num_rows for b in rows) == len(_expected(written, mid, mid + 1_000_000, ["gate_spot"]))
    assert 0 < len(decoded) <= 4  # of ~42 batches of 97 rows, only those around the window


def test_reads_open_files_while_a_writer_writes(tmp_path) -> None:
    rows = [(T0_US + i * 10, T0_US + i * 10, "AUSDT", "A", "USDT", float(i), 1.0, "buy", str(i))
            for i in range(60_000)]  # fmt: skip
    w = SegmentWriter(tmp_path, "bybit_spot", flush_interval_s=0.002, flush_rows=512, fsync=False)
    stop = threading.Event()

    def feed():
        for i in range(0, len(rows), 100):
            w.append(rows[i : i + 100])
        stop.set()

    durable_before = []
    reads = []
    t = threading.Thread(target=feed)
    t.start()
    while not stop.is_set() or len(reads) < 3:
        durable_before.append(w.rows_written)
        reads.append(read_trades(tmp_path, T0_US, T0_US + HOUR_US).column("trade_id").to_pylist())
    t.join()
    w.close()
    assert len(reads) >= 3
    for durable, ids in zip(durable_before, reads, strict=True):
        # a consistent prefix: everything durable when the read began, nothing invented
        assert len(ids) >= durable
        assert ids == [str(i) for i in range(len(ids))]
    assert read_trades(tmp_path, T0_US, T0_US + HOUR_US).num_rows == len(rows)


def test_slack_finds_trades_whose_exchange_time_is_in_another_hour(tmp_path) -> None:
    # received at 01:00:30, exchange time 00:59:50: the row lives in the 01:00 file
    row = (
        T0_US + HOUR_US - 10_000_000,
        T0_US + HOUR_US + 30_000_000,
        "AUSDT",
        "A",
        "USDT",
        1.0,
        1.0,
        "buy",
        "1",
    )
    with SegmentWriter(tmp_path, "kucoin_futures") as w:
        w.append([row])
    window = (T0_US + HOUR_US - 20_000_000, T0_US + HOUR_US - 1)
    assert read_trades(tmp_path, *window).num_rows == 1
    assert read_trades(tmp_path, *window, slack_s=0).num_rows == 0  # the file is not even opened
