"""store_status over stores built file by file: counts, trades of the last hour, ages, disk use
and the projection at full retention. Journal-derived figures: test_status_journal.py."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from pumpwatch.errors import StoreError
from pumpwatch.segments.compact import batch_metadata
from pumpwatch.segments.frames import FrameWriter, frame_path
from pumpwatch.segments.journal import EventJournal
from pumpwatch.segments.schema import ROW_SCHEMA as TRADE_SCHEMA  # version 1 files (no source)
from pumpwatch.segments.status import count_segment, recorded_us, store_status
from pumpwatch.timeunits import US_PER_S as S

MIN = 60 * S
NOW_US = int(datetime(2026, 3, 10, 12, 30, tzinfo=UTC).timestamp()) * S
WRITE_OPTS = ipc.IpcWriteOptions(compression="zstd")


def batch(first_time_us: int, n: int, step_us: int = 1000) -> pa.RecordBatch:
    """`n` trades from `first_time_us`, `step_us` apart, each received 500 µs after its time."""
    times = [first_time_us + i * step_us for i in range(n)]
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


def _write(w: ipc.RecordBatchStreamWriter, batches: list[pa.RecordBatch], meta: bool) -> None:
    for b in batches:
        w.write_batch(b, custom_metadata=batch_metadata(b) if meta else None)


def write_sealed(path: Path, batches: list[pa.RecordBatch], mtime_us: int, *, meta: bool = False) -> None:
    with ipc.new_file(str(path), TRADE_SCHEMA, options=WRITE_OPTS) as w:
        _write(w, batches, meta)
    os.utime(path, ns=(mtime_us * 1000, mtime_us * 1000))


def write_open(
    path: Path, batches: list[pa.RecordBatch], mtime_us: int, torn: bytes = b"", *, meta: bool = False
) -> None:
    """An unsealed segment: file magic, then an IPC stream cut after its last batch (+ a torn one)."""
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, TRADE_SCHEMA, options=WRITE_OPTS) as w:
        _write(w, batches, meta)
    stream = sink.getvalue().to_pybytes()[:-8]  # no end-of-stream marker yet
    path.write_bytes(b"ARROW1\x00\x00" + stream + torn)
    os.utime(path, ns=(mtime_us * 1000, mtime_us * 1000))


def at_us(when: str) -> int:
    return int(datetime.fromisoformat(when).replace(tzinfo=UTC).timestamp()) * S


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Batches without metadata (every one is decoded); binance_spot connected, okx_spot not."""
    h10, h11, h12 = at_us("2026-03-10T10:00:00"), at_us("2026-03-10T11:00:00"), at_us("2026-03-10T12:00:00")
    write_sealed(
        seg_path(tmp_path, "binance_spot", "2026-03-10T10:00:00"), [batch(h10, 5), batch(h10 + S, 7)], h11
    )
    write_sealed(seg_path(tmp_path, "binance_spot", "2026-03-10T11:00:00"), [batch(h11, 4)], h12)
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, TRADE_SCHEMA, options=WRITE_OPTS) as w:
        w.write_batch(batch(h12 + 20 * S, 3))
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
    h11, h12 = at_us("2026-03-10T11:00:00"), at_us("2026-03-10T12:00:00")
    sealed = seg_path(store, "binance_spot", "2026-03-10T11:00:00")
    assert count_segment(sealed, sealed=True) == type(count_segment(sealed, sealed=True))(
        rows=4, last_trade_us=h11 + 3000, recent_rows=0, readable=True, decoded_batches=1
    )
    opened = seg_path(store, "binance_spot", "2026-03-10T12:00:00", open_=True)
    c = count_segment(opened, sealed=False, recv_window=(h12 + 1, NOW_US))
    # 6 rows at h12 (+500 µs recv: in the window) and 2 at h12 + 9 s; the torn batch is not there
    assert (c.rows, c.last_trade_us, c.recent_rows, c.readable) == (8, h12 + 9 * S + 1000, 8, True)
    c = count_segment(opened, sealed=False, recv_window=(h12 + 3500, h12 + 9 * S + 500))
    assert c.recent_rows == 3 + 1  # recv h12+3500 .. h12+5500, and h12+9 s+500 (bounds inclusive)
    junk = tmp_path / "junk.arrow"
    junk.write_bytes(b"not arrow at all")
    assert count_segment(junk, sealed=True) == type(c)(0, None, readable=False)
    just_opened = tmp_path / "_000000.arrow"
    just_opened.write_bytes(b"")  # created, nothing written yet: empty, not damaged
    assert count_segment(just_opened, sealed=False) == type(c)(0, None, readable=True)


def test_count_segment_decodes_only_batches_that_straddle_the_window(tmp_path: Path) -> None:
    h11, h12 = at_us("2026-03-10T11:00:00"), at_us("2026-03-10T12:00:00")
    window = (NOW_US - 3600 * S, NOW_US)  # [11:30, 12:30]
    sealed = seg_path(tmp_path, "gate_spot", "2026-03-10T11:00:00")
    write_sealed(
        sealed,
        [
            batch(h11, 5, S),  # received 11:00:00-11:00:04: before the window
            batch(NOW_US - 3600 * S - 2 * S, 5, S),  # 11:29:58-11:30:02: three received inside
            batch(h11 + 45 * MIN, 4, S),  # wholly inside
        ],
        h12,
        meta=True,
    )
    c = count_segment(sealed, sealed=True, recv_window=window)
    assert c == type(c)(
        rows=14, last_trade_us=h11 + 45 * MIN + 3 * S, recent_rows=3 + 4, readable=True, decoded_batches=1
    )
    assert count_segment(sealed, sealed=True).decoded_batches == 0  # no window: metadata is enough
    opened = seg_path(tmp_path, "gate_spot", "2026-03-10T12:00:00", open_=True)
    write_open(
        opened,
        [batch(h12, 6), batch(NOW_US - 2000, 4)],  # the second is received 1.5 ms before .. 1.5 ms after now
        NOW_US,
        meta=True,
    )
    c = count_segment(opened, sealed=False, recv_window=window)
    assert c == type(c)(
        rows=10, last_trade_us=NOW_US + 1000, recent_rows=6 + 2, readable=True, decoded_batches=1
    )


def test_store_status_per_stream(store: Path) -> None:
    h12 = at_us("2026-03-10T12:00:00")
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
    assert b["recorded_s"] == 2.5 * 3600
    assert (b["files_sealed"], b["files_open"], b["files_unreadable"]) == (2, 1, 0)
    assert b["batches_decoded"] == 5  # no batch metadata in these files
    assert b["trades"] == 5 + 7 + 4 + 6 + 2
    assert b["trades_last_hour"] == 6 + 2  # received from 11:30 on: the open file's
    assert b["bytes"] == sum(p.stat().st_size for p in seg_files)
    assert b["last_write_us"] == NOW_US - 3 * S
    assert b["last_write_age_s"] == 3.0
    assert b["last_trade_us"] == h12 + 9 * S + 1000
    assert b["last_trade_age_s"] == (NOW_US - (h12 + 9 * S + 1000)) / S
    assert b["frames_files"] == 1
    assert b["frames_bytes"] == next((store / "frames").rglob("*.zst")).stat().st_size
    assert b["first_hour_us"] == at_us("2026-03-10T10:00:00")

    o = status["streams"]["okx_spot"]
    assert (o["hours_on_disk"], o["files_sealed"], o["trades"], o["trades_last_hour"]) == (2, 2, 2, 0)
    # the newest file holds no trade: the newest trade comes from the file before
    assert o["last_trade_us"] == at_us("2026-03-09T23:00:00") + 1000

    e = status["streams"]["gate_futures"]
    assert (e["hours_on_disk"], e["files_sealed"], e["files_open"], e["trades"], e["bytes"]) == (
        0,
        0,
        0,
        0,
        0,
    )
    assert (e["last_write_us"], e["last_trade_us"], e["last_trade_age_s"], e["bytes_per_day"]) == (
        None,
        None,
        None,
        None,
    )
    assert len(status["streams"]) == 12
    all_files = [p for p in store.rglob("*") if p.is_file()]
    assert status["disk"] == {
        "used_bytes": sum(p.stat().st_size for p in all_files),
        "free_bytes": 123_456_789,
        "segments_bytes": sum(p.stat().st_size for p in (store / "segments").rglob("*.arrow")),
        "frames_bytes": b["frames_bytes"],
        "floor_bytes": 2048 * 2**20,
        "below_floor": True,
    }
    assert (status["trades"], status["trades_last_hour"]) == (24 + 2, 8)
    assert (status["retention_s"], status["frames_retention_s"], status["min_free_disk_mb"]) == (
        604800.0,
        259200.0,
        2048,
    )
    assert status["now_us"] == NOW_US


def test_files_that_cannot_hold_last_hour_trades_are_not_searched(tmp_path: Path) -> None:
    """A file holds the rows received in its own hour: an old file is never asked for the last
    hour, even if (against the layout) it held such a row."""
    misfiled = batch(NOW_US - 10 * MIN, 3)
    write_sealed(seg_path(tmp_path, "gate_spot", "2026-03-10T09:00:00"), [misfiled], NOW_US, meta=True)
    s = store_status(tmp_path, now_us=NOW_US, free_bytes=lambda p: 0)["streams"]["gate_spot"]
    assert (s["trades"], s["trades_last_hour"], s["batches_decoded"]) == (3, 0, 0)


def test_damaged_segment_is_counted_not_fatal(store: Path) -> None:
    seg_path(store, "bybit_spot", "2026-03-10T09:00:00").write_bytes(b"\x00" * 100)
    status = store_status(store, now_us=NOW_US, free_bytes=lambda p: 0)
    s = status["streams"]["bybit_spot"]
    assert (s["files_sealed"], s["files_unreadable"], s["trades"], s["bytes"]) == (1, 1, 0, 100)


def _blank(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)


def test_disk_against_retention_and_projection(tmp_path: Path) -> None:
    now = at_us("2026-03-10T12:15:00")
    # segments from 10:30 to now: 30 + 60 + 15 minutes recorded, 2,500 bytes
    _blank(seg_path(tmp_path, "gate_spot", "2026-03-10T10:30:00"), 1000)
    _blank(seg_path(tmp_path, "gate_spot", "2026-03-10T11:00:00"), 1000)
    _blank(seg_path(tmp_path, "gate_spot", "2026-03-10T12:00:00", open_=True), 500)
    # frames from 11:00: 75 minutes, 8,192 bytes
    _blank(frame_path(tmp_path, "gate_spot", at_us("2026-03-10T11:00:00")), 4096)
    _blank(frame_path(tmp_path, "gate_spot", at_us("2026-03-10T12:00:00")), 4096)
    status = store_status(
        tmp_path,
        now_us=now,
        retention_s=7 * 86400.0,
        frames_retention_s=3 * 86400.0,
        min_free_disk_mb=8,
        free_bytes=lambda p: 10_000_000,
    )
    g = status["streams"]["gate_spot"]
    assert (g["recorded_s"], g["frames_recorded_s"]) == (105 * 60, 75 * 60)
    assert (g["bytes_per_day"], g["frames_bytes_per_day"]) == (
        34285.7,
        157286.4,
    )  # 2500*1440/105, 8192*1440/75
    assert status["retention"] == {
        "retention_s": 7 * 86400.0,
        "frames_retention_s": 3 * 86400.0,
        "segments_span_s": 105 * 60,
        "frames_span_s": 75 * 60,
        "segments_bytes_per_day": 34285.7,
        "frames_bytes_per_day": 157286.4,
        "segments_projected_bytes": 240_000,  # 2500 * 7 days / 105 min
        "frames_projected_bytes": 471_859,  # 8192 * 3 days / 75 min
        "projected_bytes": 711_859,
        "free_at_full_retention_bytes": 10_000_000 - (711_859 - 10_692),
        "fits_above_floor": True,  # 9,298,833 >= 8 MiB
    }
    assert (status["disk"]["floor_bytes"], status["disk"]["below_floor"]) == (8 * 2**20, False)
    tight = store_status(
        tmp_path,
        now_us=now,
        retention_s=7 * 86400.0,
        frames_retention_s=3 * 86400.0,
        min_free_disk_mb=9,
        free_bytes=lambda p: 10_000_000,
    )
    assert tight["retention"]["fits_above_floor"] is False  # 9,298,833 < 9 MiB
    bare = store_status(tmp_path, now_us=now, free_bytes=lambda p: 1)  # no settings given
    assert (bare["retention"]["projected_bytes"], bare["retention"]["fits_above_floor"]) == (None, None)
    assert (bare["disk"]["floor_bytes"], bare["disk"]["below_floor"]) == (None, None)


def test_recorded_us_counts_each_hour_once_and_stops_at_now(tmp_path: Path) -> None:
    now = at_us("2026-03-10T12:15:00")
    for when in ("2026-03-10T10:20:00", "2026-03-10T10:40:00", "2026-03-10T12:00:00"):
        _blank(seg_path(tmp_path, "okx_spot", when), 1)
    from pumpwatch.segments.retention import segment_files

    files = segment_files(tmp_path)
    assert recorded_us(files, now) == 40 * MIN + 15 * MIN  # a restart at 10:40 adds nothing
    assert recorded_us(files, at_us("2026-03-10T11:59:00")) == 40 * MIN  # a file from after now: 0
    assert recorded_us([], now) == 0


def test_missing_data_dir_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        store_status(tmp_path / "nope")
    (tmp_path / "a_file").write_bytes(b"")
    with pytest.raises(StoreError, match="is not a directory"):
        store_status(tmp_path / "a_file")
