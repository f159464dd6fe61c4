"""store_status over a store built file by file: counts, ages, coverage, connection state."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from pumpwatch.segments.frames import FrameWriter
from pumpwatch.segments.journal import EventJournal
from pumpwatch.segments.schema import TRADE_SCHEMA
from pumpwatch.segments.status import count_segment, store_status

from pumpwatch.errors import StoreError

S = 1_000_000
NOW_US = int(datetime(2026, 3, 10, 12, 30, tzinfo=UTC).timestamp()) * S
WRITE_OPTS = ipc.IpcWriteOptions(compression="zstd")


def batch(first_time_us: int, n: int) -> pa.RecordBatch:
    times = [first_time_us + i * 1000 for i in range(n)]
    return pa.record_batch(
        [
            pa.array(times, pa.timestamp("us", tz="UTC")),
            pa.array([t + 500 for t in times], pa.timestamp("us", tz="UTC")),
            pa.array(["0GUSDT"] * n),
            pa.array(["0G"] * n),
            pa.array(["USDT"] * n),
            pa.array([3.1] * n, pa.float64()),
            pa.array([2.0] * n, pa.float64()),
            pa.array(["buy"] * n),
            pa.array([str(i) for i in range(n)]),
        ],
        schema=TRADE_SCHEMA,
    )


def seg_path(data_dir: Path, stream: str, when: str, *, open_: bool = False) -> Path:
    exchange, market = stream.split("_")
    t = datetime.fromisoformat(when)
    name = f"{'_' if open_ else ''}{t:%H%M%S}.arrow"
    path = data_dir / "segments" / f"exchange={exchange}" / f"market={market}" / f"date={t:%Y-%m-%d}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_sealed(path: Path, batches: list[pa.RecordBatch], mtime_us: int) -> None:
    with ipc.new_file(str(path), TRADE_SCHEMA, options=WRITE_OPTS) as w:
        for b in batches:
            w.write_batch(b)
    os.utime(path, ns=(mtime_us * 1000, mtime_us * 1000))


def write_open(path: Path, batches: list[pa.RecordBatch], mtime_us: int, torn: bytes = b"") -> None:
    """An unsealed segment: file magic, then an IPC stream cut after its last batch (+ a torn one)."""
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, TRADE_SCHEMA, options=WRITE_OPTS) as w:
        for b in batches:
            w.write_batch(b)
    stream = sink.getvalue().to_pybytes()[:-8]  # no end-of-stream marker yet
    path.write_bytes(b"ARROW1\x00\x00" + stream + torn)
    os.utime(path, ns=(mtime_us * 1000, mtime_us * 1000))


def hour_us(when: str) -> int:
    return int(datetime.fromisoformat(when).replace(tzinfo=UTC).timestamp()) * S


@pytest.fixture
def store(tmp_path: Path) -> Path:
    h10, h11, h12 = (
        hour_us("2026-03-10T10:00:00"),
        hour_us("2026-03-10T11:00:00"),
        hour_us("2026-03-10T12:00:00"),
    )
    write_sealed(
        seg_path(tmp_path, "binance_spot", "2026-03-10T10:00:00"), [batch(h10, 5), batch(h10 + S, 7)], h11
    )
    write_sealed(seg_path(tmp_path, "binance_spot", "2026-03-10T11:00:00"), [batch(h11, 4)], h12)
    torn = batch(h12 + 20 * S, 3)
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, TRADE_SCHEMA, options=WRITE_OPTS) as w:
        w.write_batch(torn)
    write_open(
        seg_path(tmp_path, "binance_spot", "2026-03-10T12:00:00", open_=True),
        [batch(h12, 6), batch(h12 + 9 * S, 2)],
        NOW_US - 3 * S,
        torn=sink.getvalue().to_pybytes()[-60:-20],  # a batch cut mid-body by a crash
    )
    # okx_spot: one empty sealed file (opened, no trade yet) after a file with trades
    write_sealed(
        seg_path(tmp_path, "okx_spot", "2026-03-09T23:00:00"),
        [batch(h10 - 11 * 3600 * S, 2)],
        h10 - 10 * 3600 * S,
    )
    write_sealed(seg_path(tmp_path, "okx_spot", "2026-03-10T00:00:00"), [], h10 - 9 * 3600 * S)

    j = EventJournal(tmp_path, "binance_spot")
    j.record("start", ts_us=NOW_US - 2 * 3600 * S)
    j.record("subscribed", conn="c1", ts_us=NOW_US - 2 * 3600 * S + 5 * S, symbols=["0GUSDT"], bases=["0G"])
    j.record("disconnected", conn="c1", ts_us=NOW_US - 3600 * S, reason="reset")
    j.record("subscribed", conn="c2", ts_us=NOW_US - 3600 * S + 2 * S, symbols=["0GUSDT"], bases=["0G"])
    j.record("alive", ts_us=NOW_US - 5 * S)
    k = EventJournal(tmp_path, "okx_spot")  # subscribed, but silent for 60 s: not connected now
    k.record("start", ts_us=NOW_US - 3600 * S)
    k.record("subscribed", conn="c1", ts_us=NOW_US - 3600 * S, symbols=["0G-USDT"], bases=["0G"])
    k.record("alive", ts_us=NOW_US - 60 * S)
    with FrameWriter(tmp_path, "binance_spot") as fw:
        fw.append(NOW_US - S, '{"e":"trade"}')
    return tmp_path


def test_count_segment_sealed_open_and_damaged(store: Path, tmp_path: Path) -> None:
    h11, h12 = hour_us("2026-03-10T11:00:00"), hour_us("2026-03-10T12:00:00")
    sealed = seg_path(store, "binance_spot", "2026-03-10T11:00:00")
    assert count_segment(sealed, sealed=True).rows == 4
    assert count_segment(sealed, sealed=True).last_trade_us == h11 + 3000
    opened = seg_path(store, "binance_spot", "2026-03-10T12:00:00", open_=True)
    c = count_segment(opened, sealed=False)
    assert (c.rows, c.last_trade_us, c.readable) == (8, h12 + 9 * S + 1000, True)
    junk = tmp_path / "junk.arrow"
    junk.write_bytes(b"not arrow at all")
    assert count_segment(junk, sealed=True) == type(c)(0, None, readable=False)


def test_store_status_per_stream(store: Path) -> None:
    h12 = hour_us("2026-03-10T12:00:00")
    status = store_status(
        store,
        now_us=NOW_US,
        retention_s=604800.0,
        frames_retention_s=259200.0,
        min_free_disk_mb=2048,
        free_bytes=lambda p: 123_456_789,
    )
    b = status["streams"]["binance_spot"]
    seg_files = sorted((store / "segments" / "exchange=binance").rglob("*.arrow"))
    assert b["hours_on_disk"] == 3
    assert (b["files_sealed"], b["files_open"], b["files_unreadable"]) == (2, 1, 0)
    assert b["trades"] == 5 + 7 + 4 + 6 + 2
    assert b["bytes"] == sum(p.stat().st_size for p in seg_files)
    assert b["last_write_us"] == NOW_US - 3 * S
    assert b["last_write_age_s"] == 3.0
    assert b["last_trade_us"] == h12 + 9 * S + 1000
    assert b["last_trade_age_s"] == (NOW_US - (h12 + 9 * S + 1000)) / S
    assert b["connected_now"] is True
    assert b["connections_now"] == 1
    assert b["last_event_us"] == NOW_US - 5 * S
    assert b["coverage_known_24h"] is True
    assert b["gaps_24h"] == [
        [NOW_US - 24 * 3600 * S, NOW_US - 2 * 3600 * S + 5 * S],
        [NOW_US - 3600 * S, NOW_US - 3600 * S + 2 * S],
    ]
    assert b["gap_s_24h"] == 22 * 3600 + 5 + 2
    assert b["frames_files"] == 1
    assert b["frames_bytes"] == next((store / "frames").rglob("*.zst")).stat().st_size
    assert b["first_hour_us"] == hour_us("2026-03-10T10:00:00")

    o = status["streams"]["okx_spot"]
    assert (o["hours_on_disk"], o["files_sealed"], o["trades"]) == (2, 2, 2)
    # the newest file holds no trade: the newest trade comes from the file before
    assert o["last_trade_us"] == hour_us("2026-03-09T23:00:00") + 1000
    assert (o["connected_now"], o["connections_now"]) == (False, 0)
    assert o["gaps_24h"][-1] == [NOW_US - 60 * S + 30 * S, NOW_US]  # 3 heartbeats after the last sign

    e = status["streams"]["gate_futures"]
    assert (e["hours_on_disk"], e["files_sealed"], e["files_open"], e["trades"], e["bytes"]) == (
        0,
        0,
        0,
        0,
        0,
    )
    assert (e["last_write_us"], e["last_trade_us"], e["last_trade_age_s"]) == (None, None, None)
    assert (e["connected_now"], e["coverage_known_24h"], e["gaps_24h"]) == (
        False,
        False,
        [[NOW_US - 86400 * S, NOW_US]],
    )
    assert set(status["streams"]) == {
        "binance_spot",
        "binance_futures",
        "bybit_spot",
        "bybit_futures",
        "okx_spot",
        "okx_futures",
        "kucoin_spot",
        "kucoin_futures",
        "gate_spot",
        "gate_futures",
        "phemex_spot",
        "phemex_futures",
    }
    all_files = [p for p in store.rglob("*") if p.is_file()]
    assert status["disk"] == {
        "used_bytes": sum(p.stat().st_size for p in all_files),
        "free_bytes": 123_456_789,
        "segments_bytes": sum(p.stat().st_size for p in (store / "segments").rglob("*.arrow")),
        "frames_bytes": b["frames_bytes"],
    }
    assert status["trades"] == 24 + 2
    assert (status["retention_s"], status["frames_retention_s"], status["min_free_disk_mb"]) == (
        604800.0,
        259200.0,
        2048,
    )
    assert status["now_us"] == NOW_US


def test_damaged_segment_is_counted_not_fatal(store: Path) -> None:
    seg_path(store, "bybit_spot", "2026-03-10T09:00:00").write_bytes(b"\x00" * 100)
    status = store_status(store, now_us=NOW_US, free_bytes=lambda p: 0)
    s = status["streams"]["bybit_spot"]
    assert (s["files_sealed"], s["files_unreadable"], s["trades"], s["bytes"]) == (1, 1, 0, 100)


def test_missing_data_dir_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        store_status(tmp_path / "nope")
