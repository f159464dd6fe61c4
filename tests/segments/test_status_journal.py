"""store_status figures from hand-written journals: connection state, gaps of the last 24 h from
the stream's first event, and parse errors / reconnects from the worker's ``stats`` events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pumpwatch.segments.coverage import Replay, coverage_from_events, state_events
from pumpwatch.segments.journal import encode_event, journal_path, parse_journal, parse_journal_fast
from pumpwatch.segments.status import counter_increase, store_status
from pumpwatch.timeunits import US_PER_S as S

HOUR = 3600 * S
DAY = 24 * HOUR
NOW = 1_773_145_800 * S  # 2026-03-10T12:30:00Z
ZERO = {"frames": 0, "trades": 0, "parse_errors": 0, "reconnects": 0, "duplicates": 0}


def ev(ts: int, event: str, conn: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"ts": ts, "event": event, "conn": conn, **fields}


def stats(ts: int, parse_errors: int, reconnects: int = 0, **more: int) -> dict[str, Any]:
    counters = {**ZERO, "frames": 10 * parse_errors, "parse_errors": parse_errors, "reconnects": reconnects}
    return ev(ts, "stats", None, **{**counters, **more})


def write_journal(data_dir: Path, stream: str, events: list[dict[str, Any]], tail: bytes = b"") -> None:
    path = journal_path(data_dir, stream)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(encode_event(e) for e in events) + tail)


def status_of(data_dir: Path, stream: str) -> dict[str, Any]:
    return dict(store_status(data_dir, now_us=NOW, free_bytes=lambda p: 0)["streams"][stream])


# ---- counters from stats events ----------------------------------------------------------


def test_increase_within_one_run_starts_from_the_last_value_before_the_window() -> None:
    events = [
        ev(NOW - 30 * HOUR, "start"),
        stats(NOW - 25 * HOUR, 40, 2),
        stats(NOW - 24 * HOUR - S, 50, 3),  # the base: last value before the window
        stats(NOW - 10 * HOUR, 57, 3),
        stats(NOW - 60 * S, 61, 5, duplicates=9),
    ]
    assert counter_increase(events, NOW - DAY, NOW) == {
        "frames": 110,
        "trades": 0,
        "parse_errors": 11,
        "reconnects": 2,
        "duplicates": 9,
    }


def test_a_start_resets_the_counters_and_each_run_adds_its_own_increase() -> None:
    events = [
        ev(NOW - 30 * HOUR, "start"),
        stats(NOW - 25 * HOUR, 100, 7),
        stats(NOW - 5 * HOUR, 130, 9),  # +30 parse errors, +2 reconnects in the window
        ev(NOW - 5 * HOUR + 10 * S, "stop"),
        ev(NOW - 4 * HOUR, "start"),  # a new process: its counters begin at zero
        stats(NOW - 3 * HOUR, 4, 1),
        stats(NOW - 2 * HOUR, 6, 1),
        ev(NOW - HOUR, "start"),  # crashed (no stop) and restarted: zero again
        stats(NOW - 30 * 60 * S, 2, 0),
    ]
    got = counter_increase(events, NOW - DAY, NOW)
    assert got is not None
    assert (got["parse_errors"], got["reconnects"]) == (30 + 6 + 2, 2 + 1 + 0)


def test_a_run_started_inside_the_window_counts_from_zero() -> None:
    events = [ev(NOW - 2 * HOUR, "start"), stats(NOW - HOUR, 12, 4)]
    assert counter_increase(events, NOW - DAY, NOW) == {
        **ZERO,
        "frames": 120,
        "parse_errors": 12,
        "reconnects": 4,
    }


def test_no_stats_in_the_window_is_unknown_not_zero() -> None:
    assert counter_increase([], NOW - DAY, NOW) is None
    old = [ev(NOW - 30 * HOUR, "start"), stats(NOW - 25 * HOUR, 3)]
    assert counter_increase(old, NOW - DAY, NOW) is None
    quiet = [*old, stats(NOW - HOUR, 3)]
    assert counter_increase(quiet, NOW - DAY, NOW) == ZERO


def test_pruned_run_start_takes_the_first_value_as_base_and_a_drop_counts_in_full() -> None:
    events = [
        stats(NOW - 10 * HOUR, 500, 20),  # the run's start was pruned away: base, adds nothing
        stats(NOW - 9 * HOUR, 510, 21),
        stats(NOW - 8 * HOUR, 4, 1),  # smaller without a start line: a reset, counts in full
        stats(NOW - 7 * HOUR, 5, 1),
    ]
    got = counter_increase(events, NOW - DAY, NOW)
    assert got is not None
    assert (got["parse_errors"], got["reconnects"]) == (10 + 4 + 1, 1 + 1 + 0)


def test_events_after_the_window_and_malformed_values_are_ignored() -> None:
    events = [
        ev(NOW - 2 * HOUR, "start"),
        stats(NOW - HOUR, 3, 1),
        ev(NOW - 50 * 60 * S, "stats", parse_errors="7", reconnects=True, frames=None),  # not counters
        stats(NOW - 40 * 60 * S, 5, 1),
        stats(NOW + 60 * S, 900, 90),  # after the window's end
    ]
    got = counter_increase(events, NOW - DAY, NOW)
    assert got is not None
    assert (got["parse_errors"], got["reconnects"]) == (5, 1)


def test_store_status_reports_counters_from_the_journal(tmp_path: Path) -> None:
    write_journal(
        tmp_path,
        "kucoin_spot",
        [
            ev(NOW - 3 * HOUR, "start", pid=11),
            ev(NOW - 3 * HOUR + S, "subscribed", "k1", symbols=["0G-USDT"], bases=["0G"]),
            stats(NOW - 2 * HOUR, 3, 1, trades=100, duplicates=2),
            stats(NOW - 60 * S, 8, 2, trades=250, duplicates=2),
        ],
    )
    k = status_of(tmp_path, "kucoin_spot")
    assert k["counters_24h"] == {
        "frames": 80,
        "trades": 250,
        "parse_errors": 8,
        "reconnects": 2,
        "duplicates": 2,
    }
    assert (k["journal_events"], k["last_event_us"], k["connected_now"]) == (4, NOW - 60 * S, False)
    # no stats event in 24 h: unknown
    write_journal(tmp_path, "kucoin_futures", [ev(NOW - 3 * HOUR, "start")])
    assert status_of(tmp_path, "kucoin_futures")["counters_24h"] is None


# ---- gaps of the last 24 h ------------------------------------------------------------------


def test_a_store_a_minute_old_has_no_gap_before_its_first_event(tmp_path: Path) -> None:
    write_journal(
        tmp_path,
        "bybit_spot",
        [
            ev(NOW - 60 * S, "start"),
            ev(NOW - 59 * S, "connected", "b1", url="wss://x"),
            ev(NOW - 58 * S, "subscribed", "b1", symbols=["0GUSDT"], bases=["0G"]),
            ev(NOW - 5 * S, "alive"),
        ],
    )
    b = status_of(tmp_path, "bybit_spot")
    assert b["recorded"] == "journal"
    assert (b["first_event_us"], b["gaps_window_start_us"]) == (NOW - 60 * S, NOW - 60 * S)
    assert b["gaps_24h"] == [[NOW - 60 * S, NOW - 58 * S]]  # started, not yet subscribed
    assert (b["gap_s_24h"], b["coverage_known_24h"]) == (2.0, True)
    assert (b["connected_now"], b["connections_now"]) == (True, 1)


def test_gaps_of_an_old_stream_start_24_hours_ago(tmp_path: Path) -> None:
    write_journal(
        tmp_path,
        "binance_spot",
        [
            ev(NOW - 3 * DAY, "start"),
            ev(NOW - 3 * DAY + S, "subscribed", "c1", symbols=["0GUSDT"], bases=["0G"]),
            ev(NOW - 2 * HOUR, "disconnected", "c1", reason="reset"),
            ev(NOW - 2 * HOUR + 3 * S, "subscribed", "c2", symbols=["0GUSDT"], bases=["0G"]),
            ev(NOW - 10 * S, "alive"),
        ],
        tail=b'{"ts": 17731458',  # torn by a crash mid-write
    )
    b = status_of(tmp_path, "binance_spot")
    assert b["gaps_window_start_us"] == NOW - DAY
    assert b["gaps_24h"] == [[NOW - 2 * HOUR, NOW - 2 * HOUR + 3 * S]]
    assert (b["gap_s_24h"], b["journal_unreadable_lines"], b["connected_now"]) == (3.0, 1, True)


def test_silent_journal_is_not_connected_and_its_tail_is_a_gap(tmp_path: Path) -> None:
    write_journal(
        tmp_path,
        "okx_spot",
        [
            ev(NOW - HOUR, "start"),
            ev(NOW - HOUR, "subscribed", "c1", symbols=["0G-USDT"], bases=["0G"]),
            ev(NOW - 60 * S, "alive"),
        ],
    )
    o = status_of(tmp_path, "okx_spot")
    assert (o["connected_now"], o["connections_now"]) == (False, 0)
    assert o["gaps_24h"] == [[NOW - 30 * S, NOW]]  # listening ends 3 heartbeats after the last sign


@pytest.mark.parametrize("with_segments", [False, True])
def test_no_journal_is_never_recorded_not_a_24_hour_gap(tmp_path: Path, with_segments: bool) -> None:
    if with_segments:
        seg = tmp_path / "segments/exchange=gate/market=futures/date=2026-03-10/120000.arrow"
        seg.parent.mkdir(parents=True)
        seg.write_bytes(b"\0" * 10)
    else:
        (tmp_path / "journal").mkdir()
        journal_path(tmp_path, "gate_futures").write_bytes(b"garbage\n")  # no readable event
    g = status_of(tmp_path, "gate_futures")
    assert g["recorded"] == ("store only" if with_segments else "never")
    assert (g["gaps_24h"], g["gap_s_24h"], g["gaps_window_start_us"], g["coverage_known_24h"]) == (
        None,
        None,
        None,
        False,
    )
    assert (g["connected_now"], g["last_event_us"], g["first_event_us"], g["counters_24h"]) == (
        False,
        None,
        None,
        None,
    )
    assert g["journal_unreadable_lines"] == (0 if with_segments else 1)


# ---- the fast journal path equals the slow one ----------------------------------------------

_KINDS = ("start", "stop", "alive", "stats", "connected", "subscribed", "unsubscribed", "disconnected",
          "rejected", "gap_start", "died")  # fmt: skip


@st.composite
def journals(draw: st.DrawFn) -> list[dict[str, Any]]:
    events = []
    ts = NOW - HOUR
    for _ in range(draw(st.integers(0, 40))):
        ts += draw(st.integers(-5 * S, 20 * S))  # clock steps back now and then
        kind = draw(st.sampled_from(_KINDS))
        conn = draw(st.sampled_from(["a", "b"])) if kind in _KINDS[4:9] else None
        fields: dict[str, Any] = {}
        if kind in ("subscribed", "unsubscribed"):
            fields = {"symbols": ["0GUSDT"], "bases": ["0G"]}
        if kind == "died":  # the supervisor's death mark
            kind, fields = "gap_start", {"exit_code": -9}
        events.append(ev(ts, kind, conn, **fields))
    return events


@settings(max_examples=300, deadline=None)
@given(journals(), st.integers(0, 90 * 60))
def test_state_events_give_the_same_coverage_and_state(events: list[dict[str, Any]], at_s: int) -> None:
    now = NOW - HOUR + at_s * S
    reduced = state_events(events)
    for lo in (NOW - 2 * HOUR, NOW - HOUR):
        assert coverage_from_events(reduced, lo, now, now_us=now) == coverage_from_events(
            events, lo, now, now_us=now
        )
    full, fast = Replay(), Replay()
    for e in events:
        full.feed(e)
    for e in reduced:
        fast.feed(e)
    assert (fast.conns, fast.last_ts, fast.intervals) == (full.conns, full.last_ts, full.intervals)


_ODD_LINES = [
    b"",
    b"  ",
    b"garbage",
    b"[1]",
    b"1, 2",
    b'{"ts": true, "event": "x"}',
    b'{"ts": 1}',
    b'{"ts": 1, "event": "a", "conn": 5}',
    b'{"ts": 1, "event": "a"}, {"ts": 2, "event": "b"}',
    b'{"ts": 3, "event": "alive", "conn": null}',
    b'{"ts": 4, "event": "s"',
]
_GOOD_LINES = st.builds(
    lambda e: encode_event(e).rstrip(b"\n"), st.builds(stats, st.integers(0, 2**40), st.integers(0, 99))
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_GOOD_LINES, st.sampled_from(_ODD_LINES)), max_size=8), st.booleans())
def test_parse_journal_fast_equals_parse_journal(lines: list[bytes], final_newline: bool) -> None:
    data = b"\n".join(lines) + (b"\n" if final_newline else b"")
    assert parse_journal_fast(data) == parse_journal(data)
