"""Coverage weighs ``unrepaired`` spans that lie outside the connection-state gaps (issue 10):
a push skipped right after a reconnect whose repair then fails is journaled ``unrepaired``
from before the gap to the first trade after it; the listing must say incomplete with that
exact span, for the symbols it names only."""

from __future__ import annotations

from typing import Any

from pumpwatch.segments.coverage import completeness_from_events
from pumpwatch.segments.journal import EventJournal, read_events


def _journal(
    tmp_path: Any, *, repaired_later: bool = False, second_symbol: bool = False
) -> list[dict[str, Any]]:
    j = EventJournal(tmp_path, "binance_spot")
    syms = ["AUSDT", "AUSDC"] if second_symbol else ["AUSDT"]
    bases = ["A"] * len(syms)
    j.record("start", ts_us=1_000)
    j.record("subscribed", conn="c1", ts_us=1_010, symbols=syms, bases=bases)
    j.record("disconnected", conn="c1", ts_us=1_100, reason="connection lost", last_rx_us=1_095)
    j.record("subscribed", conn="c2", ts_us=1_120, symbols=syms, bases=bases)
    # the last trade before the drop at 1_090, the first after the resume at 1_300 (its id says
    # pushes right after the resume were skipped); the repair of the whole span failed
    j.record(
        "unrepaired",
        ts_us=1_400,
        symbol="AUSDT",
        base="A",
        start_us=1_090,
        end_us=1_300,
        reason="exchange_error",
    )
    if repaired_later:
        j.record(
            "repaired",
            ts_us=1_450,
            symbol="AUSDT",
            base="A",
            start_us=1_090,
            end_us=1_300,
            via="historicalTrades",
            trades=4,
        )
    j.record("stop", ts_us=2_000)
    return read_events(tmp_path, "binance_spot")


def test_a_failed_repair_past_the_resume_is_missing_with_its_exact_span(tmp_path: Any) -> None:
    comp = completeness_from_events(_journal(tmp_path), 1_010, 2_000, base="A", now_us=3_000)
    assert comp.state == "incomplete"
    assert [(m.start_us, m.end_us, m.reason, m.symbols) for m in comp.missing] == [
        (1_090, 1_300, "exchange_error", ("AUSDT",))
    ]
    assert comp.listening.gaps == [(1_095, 1_120)]  # the connection state alone


def test_the_same_span_repaired_later_is_repaired(tmp_path: Any) -> None:
    comp = completeness_from_events(
        _journal(tmp_path, repaired_later=True), 1_010, 2_000, base="A", now_us=3_000
    )
    assert comp.state == "repaired"
    assert not comp.missing
    assert [(r.start_us, r.end_us) for r in comp.repaired] == [(1_090, 1_300)]


def test_outside_the_gap_only_the_named_symbol_is_missing(tmp_path: Any) -> None:
    comp = completeness_from_events(
        _journal(tmp_path, second_symbol=True), 1_010, 2_000, base="A", now_us=3_000
    )
    assert comp.state == "incomplete"
    got = [(m.start_us, m.end_us, m.symbols) for m in comp.missing]
    # inside the connection gap both symbols miss; around it only the one the repair names
    assert got == [
        (1_090, 1_095, ("AUSDT",)),
        (1_095, 1_120, ("AUSDC", "AUSDT")),
        (1_120, 1_300, ("AUSDT",)),
    ]


def test_an_unrepaired_span_inside_a_gap_reads_as_before(tmp_path: Any) -> None:
    j = EventJournal(tmp_path, "okx_spot")
    j.record("start", ts_us=1_000)
    j.record("subscribed", conn="c1", ts_us=1_010, symbols=["A-USDT"], bases=["A"])
    j.record("disconnected", conn="c1", ts_us=1_100, reason="1006")
    j.record("subscribed", conn="c2", ts_us=1_200, symbols=["A-USDT"], bases=["A"])
    j.record(
        "unrepaired",
        ts_us=1_300,
        symbol="A-USDT",
        base="A",
        start_us=1_120,
        end_us=1_150,
        reason="rate_limited",
    )
    j.record("stop", ts_us=2_000)
    comp = completeness_from_events(read_events(tmp_path, "okx_spot"), 1_010, 2_000, base="A", now_us=3_000)
    assert [(m.start_us, m.end_us, m.reason) for m in comp.missing] == [
        (1_100, 1_120, "not_attempted"),
        (1_120, 1_151, "rate_limited"),
        (1_151, 1_200, "not_attempted"),
    ]
