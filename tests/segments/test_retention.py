"""Retention: age limits, the free-disk floor, protected files, journal lines."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pumpwatch.segments.coverage import coverage_from_events
from pumpwatch.segments.journal import EventJournal, read_events
from pumpwatch.segments.retention import journal_lines_to_keep, prune

MB = 1024 * 1024
# PUMPWATCH_SOAK=long explores many more journals
EXAMPLES = 3000 if os.environ.get("PUMPWATCH_SOAK") == "long" else 150
DAY_S = 86400
NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
NOW_US = int(NOW.timestamp()) * 1_000_000


def us(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 1_000_000


def put(data_dir: Path, tree: str, stream: str, when: str, *, size: int = MB, open_: bool = False) -> Path:
    """A file of `size` bytes in the documented hourly layout (content does not matter here)."""
    exchange, market = stream.split("_")
    t = datetime.fromisoformat(when)
    suffix = ".arrow" if tree == "segments" else ".ndjson.zst"
    name = f"{'_' if open_ else ''}{t:%H%M%S}{suffix}"
    path = data_dir / tree / f"exchange={exchange}" / f"market={market}" / f"date={t:%Y-%m-%d}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def files(data_dir: Path, tree: str) -> list[str]:
    return sorted(p.relative_to(data_dir / tree).as_posix() for p in (data_dir / tree).rglob("*.*"))


class FakeDisk:
    """Free space = capacity - bytes of the files under the data dir (sizes, not blocks)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.calls = 0

    def __call__(self, root: Path) -> int:
        self.calls += 1
        return self.capacity - sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_age_retention_deletes_old_sealed_files_only(tmp_path: Path) -> None:
    old = put(tmp_path, "segments", "binance_spot", "2026-03-02T05:00:00")
    edge_out = put(
        tmp_path, "segments", "binance_spot", "2026-03-03T11:00:00"
    )  # hour ended 12:00 < cutoff 12:30
    put(tmp_path, "segments", "binance_spot", "2026-03-03T12:00:00")  # hour ends 13:00: kept
    put(tmp_path, "segments", "binance_spot", "2026-03-10T12:00:00", open_=True)
    put(tmp_path, "segments", "binance_spot", "2026-03-01T05:00:00", open_=True)  # crash leftover: kept
    put(tmp_path, "segments", "okx_spot", "2026-02-01T00:00:00")  # the stream's newest file: kept
    put(tmp_path, "segments", "bybit_spot", "2026-02-01T00:00:00", size=3 * MB)
    put(tmp_path, "segments", "bybit_spot", "2026-02-01T01:00:00")
    old_frames = put(tmp_path, "frames", "binance_spot", "2026-03-07T11:00:00", size=2 * MB)
    put(tmp_path, "frames", "binance_spot", "2026-03-07T12:00:00")
    put(tmp_path, "frames", "binance_spot", "2026-03-10T12:00:00")
    disk = FakeDisk(10**12)

    report = prune(
        tmp_path,
        retention_s=7 * DAY_S,
        min_free_disk_mb=1,
        frames_retention_s=3 * DAY_S,
        now_us=NOW_US,
        free_bytes=disk,
    )
    assert files(tmp_path, "segments") == [
        "exchange=binance/market=spot/date=2026-03-01/_050000.arrow",
        "exchange=binance/market=spot/date=2026-03-03/120000.arrow",
        "exchange=binance/market=spot/date=2026-03-10/_120000.arrow",
        "exchange=bybit/market=spot/date=2026-02-01/010000.arrow",
        "exchange=okx/market=spot/date=2026-02-01/000000.arrow",
    ]
    assert files(tmp_path, "frames") == [
        "exchange=binance/market=spot/date=2026-03-07/120000.ndjson.zst",
        "exchange=binance/market=spot/date=2026-03-10/120000.ndjson.zst",
    ]
    deleted = [(d.path.name, d.kind, d.stream, d.size_bytes, d.reason) for d in report.deleted]
    assert deleted == [
        ("000000.arrow", "segment", "bybit_spot", 3 * MB, "retention"),
        ("050000.arrow", "segment", "binance_spot", MB, "retention"),
        ("110000.arrow", "segment", "binance_spot", MB, "retention"),
        ("110000.ndjson.zst", "frames", "binance_spot", 2 * MB, "retention"),
    ]
    assert {d.path for d in report.deleted} >= {old, edge_out, old_frames}
    assert (report.count("segment"), report.bytes("segment")) == (3, 5 * MB)
    assert (report.count("frames"), report.bytes("frames")) == (1, 2 * MB)
    assert report.free_bytes_after - report.free_bytes_before == 7 * MB
    assert not report.below_floor
    assert report.dirs_removed == 1  # only date=2026-03-02 became empty
    assert not (tmp_path / "segments/exchange=binance/market=spot/date=2026-03-02").exists()
    assert (tmp_path / "segments/exchange=binance/market=spot/date=2026-03-03").is_dir()
    summary = report.to_dict()
    assert summary["deleted"] == {
        "segment": {"files": 3, "bytes": 5 * MB, "evicted_files": 0},
        "frames": {"files": 1, "bytes": 2 * MB, "evicted_files": 0},
        "archive": {"files": 0, "bytes": 0, "evicted_files": 0},
    }
    assert orjson.loads(orjson.dumps(summary)) == summary


def test_dry_run_reports_the_same_and_deletes_nothing(tmp_path: Path) -> None:
    put(tmp_path, "segments", "gate_spot", "2026-03-01T00:00:00", size=5 * MB)
    put(tmp_path, "segments", "gate_spot", "2026-03-09T00:00:00")
    put(tmp_path, "segments", "gate_spot", "2026-03-10T12:00:00")
    before = files(tmp_path, "segments")
    disk = FakeDisk(100 * MB)
    kw: dict[str, Any] = dict(
        retention_s=7 * DAY_S,
        min_free_disk_mb=99,
        frames_retention_s=3 * DAY_S,
        now_us=NOW_US,
        free_bytes=disk,
    )
    dry = prune(tmp_path, dry_run=True, **kw)
    assert files(tmp_path, "segments") == before
    assert dry.dry_run
    assert dry.free_bytes_before == 93 * MB
    assert dry.free_bytes_after == 99 * MB  # estimated: 93 + 5 (age) + 1 (evicted)
    real = prune(tmp_path, **kw)
    assert [(d.path, d.reason) for d in dry.deleted] == [(d.path, d.reason) for d in real.deleted]
    assert [d.reason for d in real.deleted] == ["retention", "disk"]
    assert files(tmp_path, "segments") == ["exchange=gate/market=spot/date=2026-03-10/120000.arrow"]
    assert real.free_bytes_after == 99 * MB


def test_free_disk_floor_evicts_frames_then_segments_oldest_first(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    put(tmp_path, "segments", "binance_spot", "2026-03-08T00:00:00", size=10 * MB)
    put(tmp_path, "segments", "okx_futures", "2026-03-07T00:00:00", size=10 * MB)  # the oldest segment
    put(tmp_path, "segments", "okx_futures", "2026-03-10T12:00:00", size=10 * MB)
    put(tmp_path, "segments", "binance_spot", "2026-03-10T12:00:00", size=10 * MB)
    put(tmp_path, "frames", "binance_spot", "2026-03-09T00:00:00", size=4 * MB)
    put(tmp_path, "frames", "binance_spot", "2026-03-10T12:00:00", size=4 * MB)
    disk = FakeDisk(80 * MB)  # 48 MB used -> 32 MB free
    caplog.set_level(logging.WARNING, logger="pumpwatch.segments.retention")
    report = prune(
        tmp_path,
        retention_s=7 * DAY_S,
        min_free_disk_mb=45,
        frames_retention_s=3 * DAY_S,
        now_us=NOW_US,
        free_bytes=disk,
    )
    assert [(d.kind, d.stream, d.path.parent.name, d.reason) for d in report.deleted] == [
        ("frames", "binance_spot", "date=2026-03-09", "disk"),
        ("segment", "okx_futures", "date=2026-03-07", "disk"),
    ]
    assert report.free_bytes_before == 32 * MB
    assert report.free_bytes_after == 46 * MB
    assert not report.below_floor
    evictions = [r for r in caplog.records if "evicted" in r.message]
    assert len(evictions) == 2 and all(r.levelno == logging.WARNING for r in evictions)


def test_floor_out_of_reach_evicts_everything_allowed_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    put(tmp_path, "segments", "kucoin_spot", "2026-03-10T10:00:00")
    put(tmp_path, "segments", "kucoin_spot", "2026-03-10T11:00:00")
    newest = put(tmp_path, "segments", "kucoin_spot", "2026-03-10T12:00:00")
    opened = put(tmp_path, "segments", "kucoin_futures", "2026-03-10T12:00:00", open_=True)
    report = prune(
        tmp_path,
        retention_s=7 * DAY_S,
        min_free_disk_mb=10**6,
        frames_retention_s=3 * DAY_S,
        now_us=NOW_US,
        free_bytes=FakeDisk(10 * MB),
    )
    assert report.count("segment", "disk") == 2
    assert report.below_floor
    assert newest.exists() and opened.exists()
    assert any(r.levelno == logging.ERROR and "nothing left to evict" in r.message for r in caplog.records)


def test_a_file_that_cannot_be_deleted_does_not_stop_prune(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = put(tmp_path, "segments", "phemex_spot", "2026-02-01T00:00:00")
    b = put(tmp_path, "segments", "phemex_spot", "2026-02-01T01:00:00")
    put(tmp_path, "segments", "phemex_spot", "2026-03-10T12:00:00")
    real_unlink = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self == a:
            raise PermissionError(13, "Permission denied")
        real_unlink(self, missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    report = prune(
        tmp_path,
        retention_s=7 * DAY_S,
        min_free_disk_mb=1,
        frames_retention_s=3 * DAY_S,
        now_us=NOW_US,
        free_bytes=FakeDisk(10**12),
    )
    assert [d.path for d in report.deleted] == [b]
    assert a.exists() and not b.exists()


def _journal_fixture(data_dir: Path) -> None:
    day = 86_400_000_000
    j = EventJournal(data_dir, "bybit_futures")
    t = NOW_US - 12 * day
    j.record("start", ts_us=t)
    j.record("connected", conn="c1", ts_us=t + 1, url="u")  # c1 lives across the cutoff
    j.record("subscribed", conn="c1", ts_us=t + 2, symbols=["0GUSDT", "XUSDT"], bases=["0G", "X"])
    j.record("subscribed", conn="c2", ts_us=t + 3, symbols=["YUSDT"], bases=["Y"])
    j.record("unsubscribed", conn="c1", ts_us=t + 4, symbols=["XUSDT"])
    j.record("rejected", conn="c1", ts_us=t + 5, symbols=["ZUSDT"], reason="no such symbol")
    j.record("disconnected", conn="c2", ts_us=t + day, reason="closed")
    for k in range(2, 12):
        j.record("alive", ts_us=t + k * day)  # the last two are after the 7-day cutoff


def test_journal_lines_older_than_retention_are_dropped_but_open_connections_kept(tmp_path: Path) -> None:
    _journal_fixture(tmp_path)
    events = read_events(tmp_path, "bybit_futures")
    report = prune(
        tmp_path,
        retention_s=7 * DAY_S,
        min_free_disk_mb=1,
        frames_retention_s=3 * DAY_S,
        now_us=NOW_US,
        free_bytes=FakeDisk(10**12),
    )
    after = read_events(tmp_path, "bybit_futures")
    assert [(e["event"], e["conn"]) for e in after] == [
        ("connected", "c1"),
        ("subscribed", "c1"),
        ("unsubscribed", "c1"),
        ("alive", None),  # the last line before the cutoff
    ] + [("alive", None)] * 7
    assert report.journal_lines_dropped == {"bybit_futures": len(events) - len(after)}
    window = (NOW_US - 5 * 86_400_000_000, NOW_US)
    for base in (None, "0G", "X", "Y"):
        before_cov = coverage_from_events(events, *window, base=base, now_us=NOW_US)
        after_cov = coverage_from_events(after, *window, base=base, now_us=NOW_US)
        assert before_cov == after_cov
    # a second prune has nothing left to drop and leaves the file untouched
    mtime = (tmp_path / "journal" / "bybit_futures.ndjson").stat().st_mtime_ns
    again = prune(
        tmp_path,
        retention_s=7 * DAY_S,
        min_free_disk_mb=1,
        frames_retention_s=3 * DAY_S,
        now_us=NOW_US,
        free_bytes=FakeDisk(10**12),
    )
    assert again.journal_lines_dropped == {}
    assert (tmp_path / "journal" / "bybit_futures.ndjson").stat().st_mtime_ns == mtime


def test_dry_run_counts_journal_lines_without_rewriting(tmp_path: Path) -> None:
    _journal_fixture(tmp_path)
    path = tmp_path / "journal" / "bybit_futures.ndjson"
    raw = path.read_bytes()
    report = prune(
        tmp_path,
        retention_s=7 * DAY_S,
        min_free_disk_mb=1,
        frames_retention_s=3 * DAY_S,
        now_us=NOW_US,
        dry_run=True,
        free_bytes=FakeDisk(10**12),
    )
    assert report.journal_lines_dropped == {"bybit_futures": 17 - 11}
    assert path.read_bytes() == raw


CONNS = ("c1", "c2")
SYMBOLS = {"AUSDT": "A", "BUSDT": "B"}


@st.composite
def journal_events(draw: st.DrawFn) -> list[dict[str, Any]]:
    ts, out = 0, []
    for _ in range(draw(st.integers(0, 20))):
        ts += draw(st.integers(0, 3))
        kind = draw(
            st.sampled_from(
                ["start", "stop", "alive", "connected", "subscribed", "unsubscribed", "disconnected"]
            )
        )
        e: dict[str, Any] = {"ts": ts, "event": kind, "conn": None}
        if kind not in ("start", "stop", "alive"):
            e["conn"] = draw(st.sampled_from(CONNS))
        if kind in ("subscribed", "unsubscribed"):
            e["symbols"] = draw(st.lists(st.sampled_from(sorted(SYMBOLS)), min_size=1, unique=True))
            e["bases"] = [SYMBOLS[s] for s in e["symbols"]]
        out.append(e)
    return out


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    events=journal_events(),
    cutoff=st.integers(0, 40),
    start_after=st.integers(0, 10),
    length=st.integers(0, 20),
    base=st.sampled_from([None, "A", "B"]),
)
def test_dropping_old_lines_never_changes_coverage_after_the_cutoff(
    events: list[dict[str, Any]], cutoff: int, start_after: int, length: int, base: str | None
) -> None:
    kept = journal_lines_to_keep(events, cutoff)
    assert all(e in events for e in kept)
    assert [e for e in events if e["ts"] >= cutoff] == [e for e in kept if e["ts"] >= cutoff]
    start = cutoff + start_after
    for now in (start + length, start + length + 100):
        expected = coverage_from_events(
            events, start, start + length, base=base, heartbeat_s=1e-6, now_us=now
        )
        got = coverage_from_events(kept, start, start + length, base=base, heartbeat_s=1e-6, now_us=now)
        assert got == expected


def test_connection_ids_reused_after_a_restart_keep_only_the_current_life() -> None:
    events = [
        {"ts": 0, "event": "start", "conn": None},
        {"ts": 1, "event": "subscribed", "conn": "c1", "symbols": ["AUSDT"], "bases": ["A"]},
        {"ts": 2, "event": "start", "conn": None},  # crash: c1 above is dead
        {"ts": 3, "event": "subscribed", "conn": "c1", "symbols": ["BUSDT"], "bases": ["B"]},
        {"ts": 4, "event": "alive", "conn": None},
        {"ts": 10, "event": "alive", "conn": None},
    ]
    kept = journal_lines_to_keep(events, cutoff_us=5)
    assert kept == [events[3], events[4], events[5]]
    kw: dict[str, Any] = {"base": "A", "now_us": 12}
    assert coverage_from_events(kept, 6, 10, **kw) == coverage_from_events(events, 6, 10, **kw)


def test_an_event_about_trades_is_not_the_last_sign_of_life_kept() -> None:
    # A repair journaled after the process's last heartbeat (e.g. by an extraction) must not
    # replace that heartbeat as the event that bounds the crash which follows.
    repair = {"symbol": "AUSDT", "base": "A", "start_us": 0, "end_us": 1, "trades": 0, "via": "/x"}
    events = [
        {"ts": 0, "event": "start", "conn": None},
        {"ts": 1, "event": "subscribed", "conn": "c1", "symbols": ["AUSDT"], "bases": ["A"]},
        {"ts": 2, "event": "alive", "conn": None},
        {"ts": 3, "event": "repaired", "conn": None, **repair},
        {"ts": 10, "event": "start", "conn": None},
    ]
    kept = journal_lines_to_keep(events, cutoff_us=5)
    assert kept == [events[1], events[2], events[4]]
    kw: dict[str, Any] = {"base": "A", "now_us": 12, "heartbeat_s": 1e-6}
    assert coverage_from_events(kept, 6, 10, **kw) == coverage_from_events(events, 6, 10, **kw)
