"""`reparse`: rebuild segments from the frame journal, replacing exactly the range, crash-safely."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from pumpwatch.recorder import reparse as reparse_mod
from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.adapters import get_adapter
from pumpwatch.recorder.reparse import finish_pending, reparse
from pumpwatch.recorder.sim.binance import sim_protocol
from pumpwatch.recorder.sim.instruments import sim_instrument
from pumpwatch.segments.frames import FrameWriter
from pumpwatch.segments.paths import list_segments
from pumpwatch.segments.schema import TradeRow
from pumpwatch.segments.writer import SegmentWriter
from pumpwatch.timeunits import US_PER_HOUR

STREAM = "binance_spot"
H = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
MIN = 60_000_000
INSTS = {i.symbol: i for i in (sim_instrument(STREAM, "ABC"), sim_instrument(STREAM, "XYZ"))}


def _row(i: int, recv_us: int, *, price: float = 10.0) -> TradeRow:
    symbol = "ABCUSDT" if i % 2 else "XYZUSDT"
    return (recv_us - 2000, recv_us, symbol, symbol[:3], "USDT", price + i, 0.5 + i, "buy", str(100 + i))


def _segment(data_dir: Path, opened_us: int, rows: list[TradeRow], *, seal: bool = True) -> None:
    w = SegmentWriter(data_dir, STREAM, flush_interval_s=0.05, clock_us=lambda: opened_us, fsync=False)
    w.append(rows)
    w.flush()
    if seal:
        w.close()


def _frames(data_dir: Path, rows_by_recv: list[TradeRow], *, duplicate_every: int = 0) -> None:
    sim = sim_protocol("spot")
    fw = FrameWriter(data_dir, STREAM, flush_interval_s=0.05)
    for k, row in enumerate(rows_by_recv):
        for frame in sim.encode_trades([row], INSTS):
            fw.append(row[1], frame)
            if duplicate_every and k % duplicate_every == 0:
                fw.append(row[1] + 1, frame)  # the same trade from an overlapping connection
    fw.append(rows_by_recv[0][1] + 3, '{"result":null,"id":"7"}')  # an ack: no trade
    fw.append(rows_by_recv[0][1] + 4, "garbage")
    fw.close()


def _hour_rows(data_dir: Path, hour_us: int) -> tuple[list[str], list[dict[str, object]]]:
    files = [s for s in list_segments(data_dir, [STREAM]) if s.start_us - s.start_us % US_PER_HOUR == hour_us]
    rows: list[dict[str, object]] = []
    for f in files:
        rows += pa.ipc.open_file(f.path).read_all().to_pylist()
    return sorted(f.path.name for f in files), rows


def _build_store(data_dir: Path) -> tuple[list[TradeRow], list[TradeRow], list[TradeRow]]:
    """Hour H: good rows before 00:10, "buggy" rows 00:10-00:20 (wrong prices) split over two files
    (a restart at 00:15), good rows after 00:20. Frames exist for everything in hour H."""
    before = [_row(i, H + MIN + i * 1000) for i in range(4)]
    inside = [_row(i, H + 10 * MIN + (i - 100) * 30_000_000) for i in range(100, 120)]  # 00:10:00 .. 00:19:30
    after = [_row(i, H + 25 * MIN + i * 1000) for i in range(200, 203)]
    buggy = [(*r[:5], -1.0, *r[6:]) for r in inside]
    first_half = [r for r in buggy if r[1] < H + 15 * MIN]
    _segment(data_dir, H, before + first_half)
    _segment(data_dir, H + 15 * MIN, [r for r in buggy if r[1] >= H + 15 * MIN] + after)
    _frames(data_dir, before + inside + after, duplicate_every=3)
    return before, inside, after


def _key(d: dict[str, object]) -> tuple[object, ...]:
    return (d["recv_time"], d["symbol"], d["trade_id"])


def test_reparse_replaces_exactly_the_range_and_merges_the_hour_into_one_file(tmp_path: Path) -> None:
    before, inside, after = _build_store(tmp_path)
    names, _ = _hour_rows(tmp_path, H)
    assert names == ["000100.arrow", "001500.arrow"]
    # The next hour has rows but its frames were pruned: it must stay untouched.
    _segment(tmp_path, H + US_PER_HOUR, [_row(1, H + US_PER_HOUR + MIN)])
    report = reparse(
        tmp_path, STREAM, H + 10 * MIN, H + 20 * MIN, adapter=get_adapter(STREAM), instruments=INSTS
    )
    assert [(h.hour_us, h.status) for h in report.hours] == [(H, "replaced")]
    report = reparse(
        tmp_path,
        STREAM,
        H + 20 * MIN,
        H + US_PER_HOUR + 30 * MIN,
        adapter=get_adapter(STREAM),
        instruments=INSTS,
    )
    assert [(h.hour_us, h.status) for h in report.hours] == [
        (H, "replaced"),
        (H + US_PER_HOUR, "skipped-no-frames"),
    ]
    assert report.trades == len(after)
    assert report.duplicates == 1  # frame k=24 was sent twice
    report = reparse(
        tmp_path, STREAM, H + 10 * MIN, H + 20 * MIN, adapter=get_adapter(STREAM), instruments=INSTS
    )
    assert [(h.hour_us, h.status) for h in report.hours] == [(H, "replaced")]
    assert report.trades == len(inside)  # a second run over the same range gives the same result
    assert report.duplicates == len(range(6, 24, 3))
    assert report.bad_frames == 0  # ack and garbage fell before the range
    names, rows = _hour_rows(tmp_path, H)
    assert names == ["000100.arrow"]
    assert len(rows) == len(before) + len(inside) + len(after)
    assert [r["recv_time"] for r in rows] == sorted(r["recv_time"] for r in rows)
    by_key = {_key(r): r for r in rows}
    for src in before + inside + after:
        got = by_key[(pa.scalar(src[1], pa.timestamp("us", "UTC")).as_py(), src[2], src[8])]
        assert pa.scalar(src[0], pa.timestamp("us", "UTC")).as_py() == got["time"]
        assert (got["base"], got["quote"], got["price"], got["qty"], got["side"]) == (
            src[3],
            src[4],
            src[5],
            src[6],
            src[7],
        )
    _, untouched = _hour_rows(tmp_path, H + US_PER_HOUR)
    assert len(untouched) == 1 and untouched[0]["price"] == 11.0


def test_open_hour_is_never_touched(tmp_path: Path) -> None:
    rows = [_row(i, H + MIN + i) for i in range(3)]
    _segment(tmp_path, H, rows, seal=False)  # still being written: _000100.arrow
    _frames(tmp_path, rows)
    report = reparse(tmp_path, STREAM, H, H + US_PER_HOUR, adapter=get_adapter(STREAM), instruments=INSTS)
    assert [h.status for h in report.hours] == ["skipped-open"]
    assert [s.path.name for s in list_segments(tmp_path, [STREAM])] == ["_000100.arrow"]


def test_interrupted_swap_rolls_forward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before, inside, after = _build_store(tmp_path)

    real_apply = reparse_mod._apply_manifest

    def crash(data_dir: Path, stream: str) -> bool:
        if not reparse_mod._manifest_path(data_dir, stream).exists():
            return real_apply(data_dir, stream)  # the check at the start of a run
        raise KeyboardInterrupt("power cut right after the manifest")

    monkeypatch.setattr(reparse_mod, "_apply_manifest", crash)
    with pytest.raises(KeyboardInterrupt):
        reparse(tmp_path, STREAM, H + 10 * MIN, H + 20 * MIN, adapter=get_adapter(STREAM), instruments=INSTS)
    names, rows = _hour_rows(tmp_path, H)
    assert names == ["000100.arrow", "001500.arrow"]  # nothing replaced yet: old data intact
    assert sorted(r["price"] for r in rows).count(-1.0) == len(inside)
    monkeypatch.undo()
    assert finish_pending(tmp_path, STREAM) is True
    assert finish_pending(tmp_path, STREAM) is False
    names, rows = _hour_rows(tmp_path, H)
    assert names == ["000100.arrow"]
    assert len(rows) == len(before) + len(inside) + len(after)
    assert -1.0 not in {r["price"] for r in rows}


def test_reparse_refuses_an_empty_range(tmp_path: Path) -> None:
    from pumpwatch.errors import UsageError

    with pytest.raises(UsageError):
        reparse(tmp_path, STREAM, H, H, adapter=get_adapter(STREAM), instruments=dict[str, Instrument]())
