"""Connection-event journal: line format, helpers, torn/garbage lines, concurrent appenders."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from pumpwatch.errors import UsageError
from pumpwatch.segments.journal import (
    EventJournal,
    encode_event,
    journal_path,
    read_events,
    rewrite_journal,
    scan_events,
)

STREAM = "okx_futures"


def _clock(*values: int):
    it = iter(values)
    return lambda: next(it)


def test_record_writes_one_json_object_per_line(tmp_path: Path) -> None:
    j = EventJournal(tmp_path, STREAM, clock_us=_clock(111))
    j.record("connected", conn="c1", url="wss://x")
    j.record("alive", ts_us=222)
    j.close()
    raw = journal_path(tmp_path, STREAM).read_bytes()
    assert raw == (
        b'{"ts":111,"event":"connected","conn":"c1","url":"wss://x"}\n'
        b'{"ts":222,"event":"alive","conn":null}\n'
    )
    assert journal_path(tmp_path, STREAM) == tmp_path / "journal" / "okx_futures.ndjson"


def test_helpers_write_the_documented_fields(tmp_path: Path) -> None:
    ts = iter(range(1, 100))
    with EventJournal(tmp_path, STREAM, clock_us=lambda: next(ts)) as j:
        j.start()
        j.connected("c1", "wss://ws.okx.com/ws/v5/business")
        j.subscribed("c1", ["0G-USDT-SWAP", "BTC-USDT-SWAP"], ["0G", "BTC"])
        j.rejected("c1", ["NOPE-USDT-SWAP"], "60018 doesn't exist")
        j.unsubscribed("c1", ["BTC-USDT-SWAP"])
        j.unsubscribed("c1", ["0G-USDT-SWAP"], ["0G"])
        j.alive()
        j.gap_start("worker died")
        j.gap_end()
        j.disconnected("c1", "1006 abnormal closure")
        j.stop()
    events = read_events(tmp_path, STREAM)
    pid = os.getpid()
    assert events == [
        {"ts": 1, "event": "start", "conn": None, "pid": pid},
        {"ts": 2, "event": "connected", "conn": "c1", "url": "wss://ws.okx.com/ws/v5/business"},
        {
            "ts": 3,
            "event": "subscribed",
            "conn": "c1",
            "symbols": ["0G-USDT-SWAP", "BTC-USDT-SWAP"],
            "bases": ["0G", "BTC"],
        },
        {
            "ts": 4,
            "event": "rejected",
            "conn": "c1",
            "symbols": ["NOPE-USDT-SWAP"],
            "reason": "60018 doesn't exist",
        },
        {"ts": 5, "event": "unsubscribed", "conn": "c1", "symbols": ["BTC-USDT-SWAP"]},
        {"ts": 6, "event": "unsubscribed", "conn": "c1", "symbols": ["0G-USDT-SWAP"], "bases": ["0G"]},
        {"ts": 7, "event": "alive", "conn": None},
        {"ts": 8, "event": "gap_start", "conn": None, "reason": "worker died"},
        {"ts": 9, "event": "gap_end", "conn": None},
        {"ts": 10, "event": "disconnected", "conn": "c1", "reason": "1006 abnormal closure"},
        {"ts": 11, "event": "stop", "conn": None, "pid": pid},
    ]


def test_default_timestamp_is_wall_clock_microseconds(tmp_path: Path) -> None:
    import time

    before = time.time_ns() // 1000
    EventJournal(tmp_path, STREAM).alive()
    after = time.time_ns() // 1000
    (event,) = read_events(tmp_path, STREAM)
    assert before <= event["ts"] <= after


def test_bad_event_names_and_fields_are_refused(tmp_path: Path) -> None:
    j = EventJournal(tmp_path, STREAM)
    with pytest.raises(ValueError, match="unknown journal event"):
        j.record("conected")
    with pytest.raises(ValueError, match="may not be named"):
        j.record("alive", ts=5)
    with pytest.raises(UsageError):
        EventJournal(tmp_path, "okx_swap")
    assert not journal_path(tmp_path, STREAM).exists()


def test_torn_and_garbage_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    path = journal_path(tmp_path, STREAM)
    path.parent.mkdir(parents=True)
    path.write_bytes(
        b'{"ts":1,"event":"start","conn":null}\n'
        b"not json at all\n"
        b'["a","list"]\n'
        b'{"ts":"2","event":"alive","conn":null}\n'  # ts must be an integer
        b'{"ts":3,"event":"alive","conn":7}\n'  # conn must be a string or null
        b"\n"
        b'{"ts":4,"event":"alive","conn":null}\n'
        b'{"ts":5,"event":"conn'  # a crash mid-write
    )
    events, skipped = scan_events(tmp_path, STREAM)
    assert [e["ts"] for e in events] == [1, 4]
    assert skipped == 5
    assert read_events(tmp_path, STREAM) == events


def test_append_after_a_torn_tail_starts_a_fresh_line(tmp_path: Path) -> None:
    path = journal_path(tmp_path, STREAM)
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"ts":1,"event":"alive","conn":null}\n{"ts":2,"ev')
    EventJournal(tmp_path, STREAM, clock_us=_clock(3)).alive()
    events, skipped = scan_events(tmp_path, STREAM)
    assert [e["ts"] for e in events] == [1, 3]
    assert skipped == 1


def test_time_filter_is_inclusive(tmp_path: Path) -> None:
    j = EventJournal(tmp_path, STREAM)
    for ts in (10, 20, 30, 40):
        j.record("alive", ts_us=ts)
    assert [e["ts"] for e in read_events(tmp_path, STREAM, 20, 30)] == [20, 30]
    assert [e["ts"] for e in read_events(tmp_path, STREAM, start_us=25)] == [30, 40]
    assert [e["ts"] for e in read_events(tmp_path, STREAM, end_us=10)] == [10]
    assert read_events(tmp_path, "bybit_spot") == []


_APPENDER = textwrap.dedent(
    """
    import sys
    from pumpwatch.segments.journal import EventJournal
    data_dir, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    j = EventJournal(data_dir, "okx_futures")
    pad = "x" * 5000  # long lines: a write this size must still never interleave
    for i in range(n):
        j.record("alive", ts_us=i, tag=tag, i=i, pad=pad)
    """
)


def _spawn_appenders(data_dir: Path, tags: list[str], n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", _APPENDER, str(data_dir), tag, str(n)]) for tag in tags]


def test_several_processes_append_without_interleaving(tmp_path: Path) -> None:
    procs = _spawn_appenders(tmp_path, ["a", "b", "c"], 300)
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    events, skipped = scan_events(tmp_path, STREAM)
    assert skipped == 0
    for tag in "abc":
        assert [e["i"] for e in events if e["tag"] == tag] == list(range(300))


def test_rewrite_while_appending_loses_no_line(tmp_path: Path) -> None:
    """A rewrite renames a new file over the journal; appenders must follow it, not write
    into the replaced inode."""
    EventJournal(tmp_path, STREAM).record("alive", ts_us=0, tag="seed", i=0)
    procs = _spawn_appenders(tmp_path, ["a", "b"], 400)
    rewrites = 0
    while any(p.poll() is None for p in procs):
        rewrite_journal(tmp_path, STREAM, lambda evs: [encode_event(e) for e in evs])
        rewrites += 1
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    rewrite_journal(tmp_path, STREAM, lambda evs: [encode_event(e) for e in evs])
    events, skipped = scan_events(tmp_path, STREAM)
    assert skipped == 0
    assert rewrites >= 1
    for tag in "ab":
        assert [e["i"] for e in events if e["tag"] == tag] == list(range(400))
    leftovers = [p.name for p in (tmp_path / "journal").iterdir()]
    assert leftovers == ["okx_futures.ndjson"]


def test_rewrite_returns_line_counts_and_drops_garbage(tmp_path: Path) -> None:
    path = journal_path(tmp_path, STREAM)
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"ts":1,"event":"alive","conn":null}\ngarbage\n{"ts":2,"event":"alive","conn":null}\n')
    before, after = rewrite_journal(
        tmp_path, STREAM, lambda evs: [encode_event(e) for e in evs if e["ts"] > 1]
    )
    assert (before, after) == (3, 1)
    assert [orjson.loads(line) for line in path.read_bytes().splitlines()] == [
        {"ts": 2, "event": "alive", "conn": None}
    ]
    assert rewrite_journal(tmp_path, "bybit_spot", lambda evs: []) == (0, 0)
    assert not journal_path(tmp_path, "bybit_spot").exists()
