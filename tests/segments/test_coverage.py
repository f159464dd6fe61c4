"""Coverage from the connection journal: the documented rules, one scenario each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pumpwatch.errors import UsageError
from pumpwatch.segments.coverage import (
    Completeness,
    Coverage,
    MissingSpan,
    RepairedSpan,
    RepairTally,
    completeness,
    completeness_from_events,
    coverage,
    coverage_from_events,
    recorded_symbols,
    repair_tally,
)
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


# -- completeness (issue 10) --------------------------------------------------------------------


def rep(
    ts_s: float, symbol: str, a_s: float, b_s: float, base: str = "A", trades: int = 0, via: str = "/h"
) -> dict[str, Any]:
    return ev(ts_s, "repaired", symbol=symbol, base=base, start_us=int(a_s * S), end_us=int(b_s * S),
              trades=trades, via=via)  # fmt: skip


def unrep(ts_s: float, symbol: str, a_s: float, b_s: float, reason: str, base: str = "A") -> dict[str, Any]:
    return ev(ts_s, "unrepaired", symbol=symbol, base=base, start_us=int(a_s * S), end_us=int(b_s * S),
              reason=reason)  # fmt: skip


def idgap(ts_s: float, symbol: str, after_s: float, before_s: float, base: str = "A") -> dict[str, Any]:
    return ev(ts_s, "id_gap", symbol=symbol, base=base, first_missing="5", last_missing="9",
              after_us=int(after_s * S), before_us=int(before_s * S))  # fmt: skip


def comp(
    events: list[dict[str, Any]], start_s: float, end_s: float, base: str = "A", **kw: Any
) -> Completeness:
    kw.setdefault("now_us", FAR)
    return completeness_from_events(events, int(start_s * S), int(end_s * S), base=base, **kw)


def us(*spans: tuple[float, float]) -> list[tuple[int, int]]:
    return [(int(a * S), int(b * S)) for a, b in spans]


# a stream listening to A (two symbols) and B, dropped from 10 s to 20 s
DROP = [
    ev(0, "start"),
    sub(1, "c1", "AUSDT:A", "A-PERP:A", "BUSDT:B"),
    ev(10, "disconnected", "c1", reason="1006"),
    sub(20, "c2", "AUSDT:A", "A-PERP:A", "BUSDT:B"),
    ev(60, "alive"),
    ev(61, "stop"),
]


def test_no_gap_is_complete() -> None:
    c = comp(DROP, 20, 50)
    assert (c.state, c.gaps, c.repaired, c.missing) == ("complete", [], [], [])
    assert c.symbols == ("A-PERP", "AUSDT")


def test_an_unrepaired_gap_is_missing_not_attempted() -> None:
    c = comp(DROP, 5, 30)
    assert c.state == "incomplete"
    assert c.gaps == us((10, 20))
    assert c.missing == [MissingSpan(10 * S, 20 * S, "not_attempted", ("A-PERP", "AUSDT"))]
    assert c.repaired == []


def test_a_gap_is_repaired_only_when_every_symbol_of_the_base_is() -> None:
    half = [*DROP, rep(70, "AUSDT", 10, 20, trades=5, via="/api/v3/historicalTrades")]
    c = comp(half, 5, 30)
    assert c.state == "incomplete"
    assert c.missing == [MissingSpan(10 * S, 20 * S, "not_attempted", ("A-PERP",))]
    both = [*half, rep(71, "A-PERP", 10, 20, trades=2, via="/fapi/v1/aggTrades")]
    c = comp(both, 5, 30)
    assert c.state == "repaired"
    assert c.missing == []
    assert c.repaired == [RepairedSpan(10 * S, 20 * S, ("/api/v3/historicalTrades", "/fapi/v1/aggTrades"))]
    # another base's repairs do not count, nor does the same symbol named under another base
    assert comp([*DROP, rep(70, "AUSDT", 10, 20, base="B")], 5, 30).state == "incomplete"
    assert comp(both, 5, 30, base="B").state == "incomplete"


def test_partial_repairs_split_the_gap_exactly() -> None:
    events = [
        *DROP,
        rep(70, "AUSDT", 8, 14),
        rep(70, "A-PERP", 12, 16),
        unrep(71, "AUSDT", 14, 30, "no_history"),
        unrep(72, "A-PERP", 16, 17, "rate_limited"),
    ]
    c = comp(events, 5, 30)
    # [10,12) A-PERP not repaired, nothing tried; [12,14] both; after 14 AUSDT failed (no_history),
    # A-PERP repaired up to 16; [16,17] both failed: the latest reason wins; then only AUSDT's
    assert c.repaired == [RepairedSpan(12 * S, 14 * S + 1, ("/h",))]
    assert c.missing == [
        MissingSpan(10 * S, 12 * S, "not_attempted", ("A-PERP",)),
        MissingSpan(14 * S + 1, 16 * S + 1, "no_history", ("AUSDT",)),
        MissingSpan(16 * S + 1, 17 * S + 1, "rate_limited", ("A-PERP", "AUSDT")),
        MissingSpan(17 * S + 1, 20 * S, "no_history", ("A-PERP", "AUSDT")),
        # past the gap, AUSDT's failed span still misses trades (only AUSDT's: issue 10)
        MissingSpan(20 * S, 30 * S, "no_history", ("AUSDT",)),
    ]
    assert c.state == "incomplete"


def test_a_later_repaired_supersedes_an_unrepaired_and_repaired_is_final() -> None:
    failed = [*DROP, unrep(70, "AUSDT", 10, 20, "rate_limited"), unrep(70, "A-PERP", 10, 20, "rate_limited")]
    c = comp(failed, 5, 30)
    assert [(m.reason, m.start_us, m.end_us) for m in c.missing] == [("rate_limited", 10 * S, 20 * S)]
    fixed = [*failed, rep(80, "AUSDT", 10, 20), rep(80, "A-PERP", 10, 20)]
    assert comp(fixed, 5, 30).state == "repaired"
    # a failure reported after a repair (a retry that hit a limit) cannot un-store the trades
    again = [*fixed, unrep(90, "AUSDT", 10, 20, "rate_limited")]
    assert comp(again, 5, 30) == comp(fixed, 5, 30)


def test_id_gaps_are_gaps_while_listening() -> None:
    events = [*DROP, idgap(40, "AUSDT", 30, 32.5), idgap(41, "BUSDT", 35, 36, base="B")]
    c = comp(events, 25, 50)
    assert c.listening.complete
    assert c.id_gaps == [(30 * S, int(32.5 * S) + 1)]  # the closed span [after, before]
    assert c.gaps == c.id_gaps
    assert c.missing == [MissingSpan(30 * S, int(32.5 * S) + 1, "not_attempted", ("A-PERP", "AUSDT"))]
    fixed = [*events, rep(42, "AUSDT", 30, 32.5), rep(42, "A-PERP", 30, 32.5)]
    c = comp(fixed, 25, 50)
    assert (c.state, c.repaired) == ("repaired", [RepairedSpan(30 * S, int(32.5 * S) + 1, ("/h",))])
    # an id hole between two trades of the same µs is one µs wide, not nothing
    same = comp([*DROP, idgap(40, "AUSDT", 33, 33)], 25, 50)
    assert same.gaps == [(33 * S, 33 * S + 1)]
    # the union with the not-listening spans is merged
    c = comp([*DROP, idgap(40, "AUSDT", 8, 12), idgap(40, "AUSDT", 19, 22)], 0, 30)
    assert c.gaps == [(0, 1 * S), (8 * S, 22 * S + 1)]


def test_out_of_band_events_are_no_sign_of_life() -> None:
    """A repair journaled long after a crash by the extraction process must not extend the
    crashed process's open connections."""
    crashed = [ev(0, "start"), sub(1, "c1", "AUSDT:A"), ev(10, "alive")]
    late = [*crashed, rep(500, "AUSDT", 100, 200), unrep(501, "AUSDT", 0, 1, "x"), idgap(502, "AUSDT", 3, 4)]
    assert cov(late, 0, 100, base="A").gaps == cov(crashed, 0, 100, base="A").gaps == us((0, 1), (40, 100))
    # a journal holding nothing but repairs says nothing about listening
    only = [rep(500, "AUSDT", 100, 200)]
    assert cov(only, 100, 150, base="A").known is False


def test_a_window_before_recording_repaired_throughout_is_repaired() -> None:
    later = [ev(1000, "start"), sub(1001, "c1", "AUSDT:A")]
    c = comp(later, 100, 140)
    assert (c.state, c.listening.known) == ("incomplete", False)
    assert c.missing == [MissingSpan(100 * S, 140 * S + 1, "not_attempted", ("AUSDT",))]  # from the journal
    # the window's last µs counts: a repair must reach the window end itself
    c = comp([*later, rep(1100, "AUSDT", 100, 140 - 1e-6)], 100, 140)
    assert c.missing == [MissingSpan(140 * S, 140 * S + 1, "not_attempted", ("AUSDT",))]
    c = comp([*later, rep(1100, "AUSDT", 90, 150, via="/api/v3/aggTrades")], 100, 140)
    assert (c.state, c.repaired) == ("repaired", [RepairedSpan(100 * S, 140 * S + 1, ("/api/v3/aggTrades",))])
    assert c.clip(c.repaired[0].end_us) == 140 * S
    # no journal at all: the symbols come from the repairs themselves
    c = comp([rep(1100, "AUSDT", 90, 150)], 100, 140)
    assert (c.state, c.symbols) == ("repaired", ("AUSDT",))
    # nothing names any symbol: nothing can be repaired
    c = comp([], 100, 140)
    assert c.missing == [MissingSpan(100 * S, 140 * S + 1, "not_attempted", ())]


def test_recorded_symbols_follow_the_window() -> None:
    events = [
        ev(0, "start"),
        sub(1, "c1", "AUSDT:A"),
        ev(10, "unsubscribed", "c1", symbols=["AUSDT"]),
        sub(20, "c1", "AUSDC:A"),
        ev(30, "stop"),
    ]
    assert recorded_symbols(events, "A", 2 * S, 5 * S) == ("AUSDT",)
    assert recorded_symbols(events, "a", 12 * S, 25 * S) == ("AUSDC",)
    assert recorded_symbols(events, "A", 5 * S, 25 * S) == ("AUSDC", "AUSDT")
    # after the stop nothing is subscribed: every symbol ever acked for the base
    assert recorded_symbols(events, "A", 40 * S, 50 * S) == ("AUSDC", "AUSDT")
    assert recorded_symbols(events, "B", 0, 50 * S) == ()


def test_malformed_span_events_are_ignored() -> None:
    bad = [
        ev(70, "repaired", symbol="AUSDT", base="A", start_us=20 * S, end_us=10 * S, trades=0, via="/h"),
        ev(70, "repaired", symbol=None, base="A", start_us=10 * S, end_us=20 * S),
        ev(70, "repaired", symbol="AUSDT", base="A", start_us="10", end_us=20 * S),
        ev(70, "id_gap", symbol="AUSDT", base=None, after_us=30 * S, before_us=31 * S),
    ]
    assert comp([*DROP, *bad], 5, 40) == comp(DROP, 5, 40)


def test_completeness_reads_the_journal_file(tmp_path: Path) -> None:
    j = EventJournal(tmp_path, "okx_spot")
    j.record("start", ts_us=0)
    j.record("subscribed", conn="c1", ts_us=1 * S, symbols=["A-USDT"], bases=["A"])
    j.record("id_gap", ts_us=5 * S, symbol="A-USDT", base="A", first_missing="7", last_missing="8",
             after_us=2 * S, before_us=3 * S)  # fmt: skip
    j.record("repaired", ts_us=6 * S, symbol="A-USDT", base="A", start_us=2 * S, end_us=3 * S, trades=2,
             via="/api/v5/market/history-trades")  # fmt: skip
    j.record("stop", ts_us=12 * S)
    c = completeness(tmp_path, "okx_spot", 1 * S, 10 * S, base="A", now_us=FAR)
    assert (c.state, c.gaps, c.symbols) == ("repaired", [(2 * S, 3 * S + 1)], ("A-USDT",))


def test_repair_tally_counts_holes_repairs_and_what_is_still_missing() -> None:
    events = [
        *DROP,
        idgap(30, "AUSDT", 25, 26),
        idgap(30, "AUSDT", 500, 501),  # outside the window
        rep(40, "AUSDT", 10, 20, trades=7),
        rep(41, "BUSDT", 10, 20, base="B", trades=3),
        unrep(42, "A-PERP", 10, 20, "rate_limited"),  # nothing repaired A-PERP: still missing
        unrep(39, "AUSDT", 12, 15, "rate_limited"),  # AUSDT's repair covers it
        unrep(43, "BUSDT", 15, 21, "no_history"),  # one second past BUSDT's repair
    ]
    assert repair_tally(events, 0, 60 * S) == RepairTally(id_gaps=1, repaired=2, rest_trades=10, unrepaired=2)
    assert repair_tally(DROP, 0, 60 * S) == RepairTally()


def test_status_shows_repairs_in_one_line_per_stream(tmp_path: Path) -> None:
    from pumpwatch.cli.store_cmds import format_status_table
    from pumpwatch.segments.status import store_status

    now = 100 * S
    j = EventJournal(tmp_path, "okx_futures")
    for e in [*DROP, idgap(30, "A-USDT-SWAP", 25, 26), rep(40, "A-USDT-SWAP", 10, 20, trades=37),
              unrep(42, "A-USDT-SWAP", 50, 55, "exchange_error: 50011")]:  # fmt: skip
        fields = {k: v for k, v in e.items() if k not in ("ts", "event", "conn")}
        j.record(e["event"], conn=e["conn"], ts_us=e["ts"], **fields)
    j.close()
    status = store_status(tmp_path, now_us=now, free_bytes=lambda p: 0)
    assert status["streams"]["okx_futures"]["repairs_24h"] == {
        "id_gaps": 1, "repaired": 1, "rest_trades": 37, "unrepaired": 1,
    }  # fmt: skip
    assert status["streams"]["okx_spot"]["repairs_24h"] is None  # never recorded
    lines = format_status_table(status).splitlines()
    assert (
        "okx_futures: 1 id gap(s), 1 span(s) repaired (37 trades from REST), 1 still missing (24 h)" in lines
    )
    assert not [line for line in lines if line.startswith("binance_spot:")]


def test_rows_dropped_on_a_full_disk_are_a_gap_until_repaired() -> None:
    # the writer journals `dropped` with the exact trade-time bounds of the rows it could not keep
    dropped = ev(45, "dropped", what="rows", rows=7, reason="disk full", first_time_us=int(30 * S),
                 last_time_us=int(32 * S), first_recv_us=int(30 * S), last_recv_us=int(32 * S))  # fmt: skip
    frames = ev(45, "dropped", what="frames", rows=9, reason="disk full", first_time_us=int(40 * S),
                last_time_us=int(41 * S), first_recv_us=int(40 * S), last_recv_us=int(41 * S))  # fmt: skip
    c = comp([*DROP, dropped, frames], 25, 50)
    assert c.state == "incomplete"
    assert c.gaps == [(30 * S, 32 * S + 1)]  # frames lost on a full disk are not trades lost
    repaired = [*DROP, dropped, rep(70, "AUSDT", 30, 32), rep(70, "A-PERP", 30, 32)]
    assert comp(repaired, 25, 50).state == "repaired"


def test_listening_since_is_the_unclipped_start_of_the_first_span_in_the_window() -> None:
    events = [
        ev(0, "start"),
        sub(1, "c1", "AUSDT:A"),
        ev(4, "disconnected", "c1", reason="reset"),
        sub(6, "c2", "AUSDT:A"),
        sub(8, "c2", "BUSDT:B"),  # B subscribed late (a listing notice): listening from 8
        ev(20, "stop"),
    ]
    assert cov(events, 2, 10, base="A").listening_since == 1 * S  # before the window
    assert cov(events, 5, 10, base="A").listening_since == 6 * S  # after the gap
    assert cov(events, 2, 10, base="B").listening_since == 8 * S
    assert cov(events, 2, 7, base="B").listening_since is None  # not listening in the window
    assert cov(events, 30, 40, base="A").listening_since is None
    # not part of equality: a pruned journal may only know a later start of the same span
    assert cov(events, 2, 3, base="A") == Coverage(True, [], 1 * S, True, listening_since=2 * S)
