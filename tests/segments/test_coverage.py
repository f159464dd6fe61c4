"""Coverage from the connection journal: the documented rules, one scenario each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pumpwatch.errors import UsageError
from pumpwatch.segments.coverage import Coverage, coverage, coverage_from_events
from pumpwatch.segments.journal import EventJournal
from pumpwatch.timeunits import US_PER_S as S

FAR = 10**6 * S  # "now" long after every scenario


def ev(ts_s: float, event: str, conn: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"ts": int(ts_s * S), "event": event, "conn": conn, **fields}


def sub(ts_s: float, conn: str, *pairs: str) -> dict[str, Any]:
    """A `subscribed` event for symbol/base pairs written as "SYMBOL:BASE"."""
    symbols = [p.split(":")[0] for p in pairs]
    bases = [p.split(":")[1] for p in pairs]
    return ev(ts_s, "subscribed", conn, symbols=symbols, bases=bases)


def cov(events: list[dict[str, Any]], start_s: float, end_s: float, **kw: Any) -> Coverage:
    kw.setdefault("now_us", FAR)
    return coverage_from_events(events, int(start_s * S), int(end_s * S), **kw)


def gaps_s(c: Coverage) -> list[tuple[float, float]]:
    return [(a / S, b / S) for a, b in c.gaps]


def test_listening_between_subscribed_and_disconnected() -> None:
    events = [
        ev(0, "start"),
        ev(1, "connected", "c1", url="u"),
        sub(2, "c1", "AUSDT:A"),
        ev(5, "disconnected", "c1", reason="x"),
        ev(6, "stop"),
    ]
    c = cov(events, 0, 10)
    assert c == Coverage(complete=False, gaps=[(0, 2 * S), (5 * S, 10 * S)], listening_us=3 * S, known=True)
    assert cov(events, 2, 5) == Coverage(complete=True, gaps=[], listening_us=3 * S, known=True)


def test_connected_alone_is_not_listening() -> None:
    events = [ev(0, "start"), ev(1, "connected", "c1", url="u"), ev(9, "alive")]
    assert gaps_s(cov(events, 0, 5)) == [(0, 5)]


def test_a_dropped_connection_is_a_gap_for_its_bases_only() -> None:
    events = [
        ev(0, "start"),
        sub(1, "c1", "AUSDT:A", "BUSDT:B"),
        sub(1, "c2", "CUSDT:C"),
        ev(4, "disconnected", "c1", reason="reset"),
        sub(6, "c3", "AUSDT:A", "BUSDT:B"),
        ev(20, "stop"),
    ]
    assert gaps_s(cov(events, 2, 10, base="A")) == [(4, 6)]
    assert gaps_s(cov(events, 2, 10, base="b")) == [(4, 6)]  # bases compare upper-case
    assert cov(events, 2, 10, base="C").complete
    assert cov(events, 2, 10).complete  # the stream as a whole kept listening (c2)
    c = cov(events, 2, 10, base="ZZZ")
    assert c == Coverage(complete=False, gaps=[(2 * S, 10 * S)], listening_us=0, known=True)


def test_make_before_break_rotation_leaves_no_gap() -> None:
    events = [
        ev(0, "start"),
        sub(1, "c1", "AUSDT:A"),
        ev(50, "connected", "c2", url="u"),
        sub(51, "c2", "AUSDT:A"),
        ev(52, "disconnected", "c1", reason="rotation"),
        # a rotation where the new ack and the old close carry the same timestamp
        sub(80, "c3", "AUSDT:A"),
        ev(80, "disconnected", "c2", reason="rotation"),
        ev(100, "stop"),
    ]
    assert cov(events, 1, 100, base="A") == Coverage(complete=True, gaps=[], listening_us=99 * S, known=True)


def test_break_before_make_rotation_is_a_gap() -> None:
    events = [
        ev(0, "start"),
        sub(1, "c1", "AUSDT:A"),
        ev(10, "disconnected", "c1", reason="rotation"),
        sub(10.5, "c2", "AUSDT:A"),
        ev(20, "stop"),
    ]
    assert gaps_s(cov(events, 1, 20, base="A")) == [(10, 10.5)]


def test_unsubscribe_removes_bases_from_the_connection() -> None:
    events = [
        ev(0, "start"),
        sub(1, "c1", "AUSDT:A", "BUSDT:B"),
        ev(3, "unsubscribed", "c1", symbols=["AUSDT"]),
        ev(5, "unsubscribed", "c1", symbols=["BUSDT"]),
        ev(9, "stop"),
    ]
    assert gaps_s(cov(events, 0, 9, base="A")) == [(0, 1), (3, 9)]
    assert gaps_s(cov(events, 0, 9, base="B")) == [(0, 1), (5, 9)]
    assert gaps_s(cov(events, 0, 9)) == [(0, 1), (5, 9)]  # no subscription left: not listening


def test_bases_not_parallel_to_symbols_still_count() -> None:
    events = [
        ev(0, "start"),
        ev(1, "subscribed", "c1", symbols=["AUSDT", "A-PERP", "BUSDT"], bases=["A", "B"]),
        ev(4, "unsubscribed", "c1", symbols=["AUSDT", "A-PERP"], bases=["A"]),
        ev(6, "unsubscribed", "c1", symbols=["BUSDT"]),
        ev(9, "stop"),
    ]
    assert gaps_s(cov(events, 0, 9, base="A")) == [(0, 1), (4, 9)]
    assert gaps_s(cov(events, 0, 9, base="B")) == [(0, 1), (6, 9)]


def test_stop_ends_every_connection() -> None:
    events = [ev(0, "start"), sub(1, "c1", "AUSDT:A"), sub(1, "c2", "BUSDT:B"), ev(5, "stop")]
    assert gaps_s(cov(events, 0, 10)) == [(0, 1), (5, 10)]


def test_crash_ends_connections_at_the_last_event_before_the_next_start() -> None:
    events = [
        ev(0, "start"),
        sub(1, "c1", "AUSDT:A"),
        ev(10, "alive"),
        ev(20, "alive"),  # the process dies some time after this heartbeat
        ev(95, "start"),
        sub(97, "c1", "AUSDT:A"),  # connection ids repeat across processes
        ev(120, "stop"),
    ]
    assert gaps_s(cov(events, 0, 120, base="A")) == [(0, 1), (20, 97)]


def test_start_after_a_clean_stop_changes_nothing() -> None:
    events = [ev(0, "start"), sub(1, "c1", "AUSDT:A"), ev(5, "stop"), ev(30, "alive"), ev(40, "start")]
    assert gaps_s(cov(events, 0, 50)) == [(0, 1), (5, 50)]


def test_open_tail_counts_for_three_heartbeats_and_never_past_now() -> None:
    events = [ev(0, "start"), sub(1, "c1", "AUSDT:A"), ev(10, "alive")]
    # a live recorder: the window closed 1 s ago, the last heartbeat is 9 s old
    assert cov(events, 5, 18, now_us=19 * S).complete
    # no sign of life for more than 3 heartbeats: only 30 s past the last event count
    assert gaps_s(cov(events, 5, 100, now_us=200 * S)) == [(40, 100)]
    assert gaps_s(cov(events, 5, 100, now_us=200 * S, heartbeat_s=5)) == [(25, 100)]
    # the future is not covered
    assert gaps_s(cov(events, 5, 30, now_us=20 * S)) == [(20, 30)]


def test_gap_marks_are_informational() -> None:
    events = [
        ev(0, "start"),
        sub(1, "c1", "AUSDT:A"),
        ev(2, "gap_start", reason="runner says so"),
        ev(3, "gap_end"),
        ev(4, "gap_start", reason="dangling"),
        ev(9, "stop"),
    ]
    assert cov(events, 1, 9).complete


def test_unknown_when_the_journal_says_nothing_about_the_window() -> None:
    assert cov([], 0, 10) == Coverage(complete=False, gaps=[(0, 10 * S)], listening_us=0, known=False)
    later = [ev(100, "start"), sub(101, "c1", "AUSDT:A")]
    assert cov(later, 0, 10) == Coverage(complete=False, gaps=[(0, 10 * S)], listening_us=0, known=False)
    # an event inside the window makes it known (the span before it is a gap)
    c = cov(later, 90, 110, now_us=110 * S)
    assert (c.known, gaps_s(c), c.listening_us) == (True, [(90, 101)], 9 * S)


def test_timestamps_running_backwards_are_clamped() -> None:
    events = [
        ev(0, "start"),
        sub(10, "c1", "AUSDT:A"),
        ev(8, "disconnected", "c1", reason="x"),
        ev(20, "stop"),
    ]
    # the disconnect is taken at 10 s (the time before it), so no span runs backwards
    assert gaps_s(cov(events, 0, 20)) == [(0, 20)]
    assert cov(events, 0, 20).listening_us == 0


def test_window_must_not_end_before_it_starts() -> None:
    with pytest.raises(UsageError):
        cov([], 10, 5)
    assert cov([ev(0, "start"), sub(0, "c", "A:A")], 5, 5) == Coverage(True, [], 0, True)


def test_coverage_reads_the_journal_file(tmp_path: Path) -> None:
    j = EventJournal(tmp_path, "bybit_spot")
    j.record("start", ts_us=0)
    j.record("subscribed", conn="c1", ts_us=2 * S, symbols=["0GUSDT"], bases=["0G"])
    j.record("disconnected", conn="c1", ts_us=7 * S, reason="x")
    j.record("subscribed", conn="c2", ts_us=8 * S, symbols=["0GUSDT"], bases=["0G"])
    j.record("stop", ts_us=12 * S)
    # a crash-restart after the window still matters; garbage lines are ignored
    with open(tmp_path / "journal" / "bybit_spot.ndjson", "ab") as fh:
        fh.write(b"garbage\n")
    c = coverage(tmp_path, "bybit_spot", 0, 10 * S, base="0G", now_us=FAR)
    assert c == Coverage(complete=False, gaps=[(0, 2 * S), (7 * S, 8 * S)], listening_us=7 * S, known=True)
    assert coverage(tmp_path, "okx_spot", 0, 10 * S, now_us=FAR).known is False
