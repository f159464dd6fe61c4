"""Raw frame journal: exact round trip, hourly files, torn tails, restarts, disk errors."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from pumpwatch.segments import frames as frames_mod
from pumpwatch.segments.frames import (
    FrameWriter,
    decode_frame,
    encode_frame,
    iter_frames,
    list_frame_files,
)

STREAM = "binance_futures"
T0 = int(datetime(2026, 3, 1, 9, 59, 58, tzinfo=UTC).timestamp()) * 1_000_000  # 2 s before 10:00
TRADE = '{"e":"aggTrade","E":1772359198001,"s":"0GUSDT","p":"3.1","q":"12","m":true}'


def _stream_dir(data_dir: Path) -> Path:
    return data_dir / "frames" / "exchange=binance" / "market=futures"


def test_round_trip_keeps_text_bytes_and_binary_exactly(tmp_path: Path) -> None:
    frames: list[tuple[int, bytes | str]] = [
        (T0, TRADE),
        (T0 + 1, TRADE.encode()),
        (T0 + 2, b"\x00\xff\x10binary"),
        (T0 + 3, 'line\nbreak "quoted" \\ 한국어 \u2028'),
        (T0 + 4, ""),
        (T0 + 5, b""),
    ]
    with FrameWriter(tmp_path, STREAM) as w:
        for recv_us, frame in frames:
            w.append(recv_us, frame)
    got = list(iter_frames(tmp_path, STREAM))
    assert got == frames
    assert [type(f) for _, f in got] == [str, bytes, bytes, str, str, bytes]


def test_line_format(tmp_path: Path) -> None:
    assert encode_frame(5, "ab") == b'{"r":5,"f":"ab"}\n'
    assert encode_frame(5, b'{"x":1}') == b'{"r":5,"t":"{\\"x\\":1}"}\n'
    assert encode_frame(5, b"\xff\x00") == b'{"r":5,"b":"/wA="}\n'
    assert encode_frame(5, bytearray(b"hi")) == b'{"r":5,"t":"hi"}\n'
    assert decode_frame(b'{"r":5,"b":"/wA="}') == (5, b"\xff\x00")
    assert decode_frame(b'{"r":5,"f":"ab"}') == (5, "ab")
    assert decode_frame(b'{"r":"5","f":"ab"}') is None
    assert decode_frame(b'{"r":5,"b":"***"}') is None
    assert decode_frame(b'{"r":5}') is None
    assert decode_frame(b'{"r":5,"f":"a') is None


def test_files_are_hourly_by_receive_time(tmp_path: Path) -> None:
    with FrameWriter(tmp_path, STREAM) as w:
        for i in range(5):  # 09:59:58 .. 10:00:02
            w.append(T0 + i * 1_000_000, f"frame{i}")
    files = list_frame_files(tmp_path)
    assert [f.path.relative_to(tmp_path).as_posix() for f in files] == [
        "frames/exchange=binance/market=futures/date=2026-03-01/095958.ndjson.zst",
        "frames/exchange=binance/market=futures/date=2026-03-01/100000.ndjson.zst",
    ]
    hour = 3_600_000_000
    assert [(f.stream, f.start_us, f.hour_end_us, f.sealed) for f in files] == [
        (STREAM, T0, T0 + 2_000_000, True),
        (STREAM, T0 + 2_000_000, T0 + 2_000_000 + hour, True),
    ]
    assert [f for _, f in iter_frames(tmp_path, STREAM, T0 + 1_500_000, T0 + 3_000_000)] == [
        "frame2",
        "frame3",
    ]
    assert list(iter_frames(tmp_path, STREAM, T0 + 10 * hour)) == []
    assert list(iter_frames(tmp_path, "okx_spot")) == []


def test_one_zstd_frame_per_flush(tmp_path: Path) -> None:
    w = FrameWriter(tmp_path, STREAM, flush_interval_s=3600)
    w.append(T0, "a")
    w.flush()
    w.append(T0 + 1, "b")
    w.append(T0 + 2, "c")
    w.flush()
    w.flush()  # nothing new: no empty frame
    w.close()
    (f,) = list_frame_files(tmp_path)
    data = f.path.read_bytes()
    assert data.count(zstandard.FRAME_HEADER) == 2
    assert list(iter_frames(tmp_path, STREAM)) == [(T0, "a"), (T0 + 1, "b"), (T0 + 2, "c")]


def test_background_thread_flushes_without_being_asked(tmp_path: Path) -> None:
    w = FrameWriter(tmp_path, STREAM, flush_interval_s=0.05)
    try:
        w.append(T0, "a")
        deadline = time.monotonic() + 10
        while w.queued and time.monotonic() < deadline:
            time.sleep(0.01)
        assert list(iter_frames(tmp_path, STREAM)) == [(T0, "a")]
    finally:
        w.close()


def test_torn_last_zstd_frame_reads_as_the_end(tmp_path: Path) -> None:
    w = FrameWriter(tmp_path, STREAM, flush_interval_s=3600)
    w.append(T0, "first")
    w.flush()
    w.append(T0 + 1, "second" * 50)
    w.close()
    (f,) = list_frame_files(tmp_path)
    data = f.path.read_bytes()
    for cut in (1, 7, 20):
        f.path.write_bytes(data[:-cut])
        assert list(iter_frames(tmp_path, STREAM)) == [(T0, "first")]
    f.path.write_bytes(data + b"\x28\xb5\x2f\xfd garbage after a crash")
    assert [r for r, _ in iter_frames(tmp_path, STREAM)] == [T0, T0 + 1]
    damaged = bytearray(data)
    damaged[-10] ^= 0xFF  # inside the second frame: its checksum no longer matches
    f.path.write_bytes(bytes(damaged))
    assert list(iter_frames(tmp_path, STREAM)) == [(T0, "first")]


def test_restart_in_the_same_hour_opens_a_new_file(tmp_path: Path) -> None:
    with FrameWriter(tmp_path, STREAM) as w:
        w.append(T0 + 2_000_000, "before crash")
    with FrameWriter(tmp_path, STREAM) as w:
        w.append(T0 + 2_000_000, "same second")  # the name 100000 is taken: 100001
        w.append(T0 + 7_000_000, "later")
    with FrameWriter(tmp_path, STREAM) as w:
        w.append(T0 + 9_000_000, "third")
    names = [f.path.name for f in list_frame_files(tmp_path)]
    assert names == ["100000.ndjson.zst", "100001.ndjson.zst", "100007.ndjson.zst"]
    assert [f for _, f in iter_frames(tmp_path, STREAM)] == ["before crash", "same second", "later", "third"]


def test_disk_error_keeps_frames_queued_and_leaves_no_torn_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    w = FrameWriter(tmp_path, STREAM, flush_interval_s=3600)
    w.append(T0, "ok")
    w.flush()
    real_write = os.write
    calls = {"n": 0}

    def failing_write(fd: int, data: bytes | memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            real_write(fd, bytes(data)[:5])  # part of the frame reaches the disk, then ENOSPC
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(frames_mod.os, "write", failing_write)
    w.append(T0 + 1, "during the outage")
    w.flush()
    w.flush()
    assert w.queued == 1
    assert sum("cannot write" in r.message for r in caplog.records) == 1  # once per failure spell
    monkeypatch.setattr(frames_mod.os, "write", real_write)
    w.append(T0 + 2, "after")
    w.close()
    assert w.queued == 0
    assert list(iter_frames(tmp_path, STREAM)) == [
        (T0, "ok"),
        (T0 + 1, "during the outage"),
        (T0 + 2, "after"),
    ]


def test_concurrent_appends_are_written_exactly_once(tmp_path: Path) -> None:
    w = FrameWriter(tmp_path, STREAM, flush_interval_s=0.002)
    per_thread = 5000

    def produce(k: int) -> None:
        for i in range(per_thread):
            w.append(T0 + k * per_thread + i, f"{k}:{i}")

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    got = list(iter_frames(tmp_path, STREAM))
    assert len(got) == 4 * per_thread
    assert sorted(f for _, f in got) == sorted(f"{k}:{i}" for k in range(4) for i in range(per_thread))
    for k in range(4):  # each producer's frames stay in its order
        mine = [int(str(f).split(":")[1]) for _, f in got if str(f).startswith(f"{k}:")]
        assert mine == list(range(per_thread))
    assert w.frames_written == 4 * per_thread


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 7_200_000_000), st.one_of(st.text(max_size=50), st.binary(max_size=50))),
        max_size=30,
    )
)
def test_arbitrary_frames_round_trip(tmp_path_factory: pytest.TempPathFactory, items: list) -> None:
    data_dir = tmp_path_factory.mktemp("frames")
    items = sorted(items, key=lambda x: x[0])
    with FrameWriter(data_dir, "gate_spot", flush_interval_s=3600) as w:
        for recv_us, frame in items:
            w.append(T0 + recv_us, frame)
    assert list(iter_frames(data_dir, "gate_spot")) == [(T0 + r, f) for r, f in items]
