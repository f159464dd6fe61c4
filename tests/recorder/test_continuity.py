"""Trade-id continuity (recorder/stream/continuity.py) and the live repair queue
(recorder/history/live.py): holes, filling within the grace, resumes after a gap settled by
the first trade, coalescing per symbol, the disabled and no-history journals."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.history.live import LiveRepair, _merge
from pumpwatch.recorder.stream.continuity import IdContinuity, IdHole, Missing
from pumpwatch.segments.schema import TradeRow

GRACE_US = 1_000_000


def row(tid: int | str | None, t_us: int, symbol: str = "AUSDT") -> TradeRow:
    return (t_us, t_us, symbol, symbol[:-4], "USDT", 1.0, 1.0, "buy", None if tid is None else str(tid))


def test_contiguous_ids_open_no_hole() -> None:
    ids = IdContinuity(GRACE_US)
    assert ids.check([row(n, n * 10) for n in range(1, 100)], 1_000) is None
    assert ids.expire(10**12) == ([], [])
    assert ids.last("AUSDT") == (99, 990)
    assert ids.holes_seen == 0


def test_a_jump_is_a_hole_after_the_grace_with_its_ids_and_times() -> None:
    ids = IdContinuity(GRACE_US)
    ids.check([row(1, 100), row(2, 200)], 1_000)
    ids.check([row(6, 600), row(7, 700)], 2_000)
    assert ids.expire(2_000 + GRACE_US - 1) == ([], [])  # still within the grace
    holes, quiet = ids.expire(2_000 + GRACE_US)
    assert holes == [IdHole("AUSDT", 3, 5, 200, 600, 2_000 + GRACE_US)]
    assert quiet == []
    assert ids.expire(10**12) == ([], [])  # handed out once


def test_late_arrivals_fill_and_split_the_hole() -> None:
    ids = IdContinuity(GRACE_US)
    ids.check([row(1, 100), row(10, 1000)], 0)
    ids.check([row(4, 400)], 10)  # the other connection delivers it late
    ids.check([row(2, 200), row(3, 300)], 20)
    holes, _ = ids.expire(GRACE_US)
    assert [(h.first_missing, h.last_missing, h.after_us, h.before_us) for h in holes] == [(5, 9, 400, 1000)]
    assert ids.ids_filled == 3
    assert ids.last("AUSDT") == (10, 1000)  # a late arrival never moves the last id back


def test_a_hole_filled_completely_is_never_reported() -> None:
    ids = IdContinuity(GRACE_US)
    ids.check([row(1, 100), row(3, 300)], 0)
    ids.check([row(2, 200)], 5)
    assert ids.expire(10**12) == ([], [])


def test_symbols_are_independent_and_non_numeric_ids_are_counted_not_checked() -> None:
    ids = IdContinuity(GRACE_US)
    ids.check([row(1, 1, "AUSDT"), row(50, 2, "BUSDT"), row(2, 3, "AUSDT"), row(51, 4, "BUSDT")], 0)
    ids.check([row("x1", 5), row(None, 6)], 0)
    assert ids.bad_ids == 2
    assert ids.expire(10**12) == ([], [])


def test_resume_settles_with_the_first_trade_and_opens_no_hole() -> None:
    ids = IdContinuity(GRACE_US)
    ids.check([row(1, 100), row(2, 200), row(5, 500)], 0)  # a hole pending when the connection dies
    pending = ids.resume("AUSDT", since_us=600, resumed_us=5_000)
    assert [(h.first_missing, h.last_missing) for h in pending] == [(3, 4)]
    settled = ids.check([row(9, 5_100), row(10, 5_200)], 5_100)
    assert settled is not None and len(settled) == 1
    r = settled[0]
    assert (r.last_id, r.last_us, r.next_id, r.next_us, r.since_us) == (5, 500, 9, 5_100, 600)
    assert ids.expire(10**12) == ([], [])  # the jump 5 -> 9 was the gap, not a hole
    assert ids.last("AUSDT") == (10, 5_200)


def test_a_quiet_resume_is_handed_out_after_the_grace() -> None:
    ids = IdContinuity(GRACE_US)
    ids.prime("AUSDT", 41, 4_100)
    ids.resume("AUSDT", since_us=5_000, resumed_us=9_000)
    holes, quiet = ids.expire(9_000 + GRACE_US)
    assert holes == [] and [(q.symbol, q.last_id, q.resumed_us) for q in quiet] == [("AUSDT", 41, 9_000)]
    assert ids.expire(10**12) == ([], [])  # handed out once


def test_a_quiet_resume_is_still_settled_by_its_first_trade() -> None:
    """Issue 10 (bench seed 10): ids skipped right after a resume that was handed out as quiet
    were never checked; the next trade must settle them against the last id before the gap."""
    ids = IdContinuity(GRACE_US)
    ids.prime("AUSDT", 41, 4_100)
    ids.resume("AUSDT", since_us=5_000, resumed_us=9_000)
    _, quiet = ids.expire(9_000 + GRACE_US)
    assert len(quiet) == 1
    settled = ids.check([row(60, 12_000), row(61, 12_100)], 12_000)
    assert settled is not None
    assert [(r.last_id, r.last_us, r.next_id, r.next_us, r.handed_out) for r in settled] == [
        (41, 4_100, 60, 12_000, True)
    ]
    assert ids.last("AUSDT") == (61, 12_100)
    assert ids.expire(10**12) == ([], [])


def test_a_quiet_resume_lost_again_keeps_the_ids_from_before_the_first_gap() -> None:
    ids = IdContinuity(GRACE_US)
    ids.prime("AUSDT", 41, 4_100)
    ids.resume("AUSDT", since_us=5_000, resumed_us=9_000)
    ids.expire(9_000 + GRACE_US)
    ids.resume("AUSDT", since_us=15_000, resumed_us=16_000)  # lost again, still no trade
    _, quiet = ids.expire(16_000 + GRACE_US)
    assert [(q.since_us, q.last_id, q.resumed_us) for q in quiet] == [(5_000, 41, 16_000)]
    settled = ids.check([row(70, 17_000)], 17_000)
    assert settled is not None and (settled[0].last_id, settled[0].next_id) == (41, 70)


def test_lost_again_before_any_trade_keeps_one_resume_from_the_first_loss() -> None:
    ids = IdContinuity(GRACE_US)
    ids.check([row(7, 700)], 0)
    ids.resume("AUSDT", since_us=1_000, resumed_us=2_000)
    ids.resume("AUSDT", since_us=2_500, resumed_us=3_000)
    settled = ids.check([row(20, 3_100)], 3_100)
    assert settled is not None
    assert (settled[0].since_us, settled[0].last_id, settled[0].next_id) == (1_000, 7, 20)


def test_merge_keeps_ids_only_when_both_spans_have_them() -> None:
    a = Missing("AUSDT", 100, 200, "id_gap", 3, 5)
    b = Missing("AUSDT", 150, 400, "id_gap", 9, 12, not_before_us=7)
    assert _merge(a, b) == Missing("AUSDT", 100, 400, "id_gap", 3, 12, not_before_us=7)
    c = Missing("AUSDT", 50, 300, "reconnect")
    m = _merge(a, c)
    assert (m.start_us, m.end_us, m.first_id, m.last_id, m.cause) == (50, 300, None, None, "id_gap+reconnect")


class Journal:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def record(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))


INSTRUMENTS = {"AUSDT": Instrument("AUSDT", "A", "USDT")}


def test_disabled_repair_journals_unrepaired_disabled_and_whole_spans_repaired() -> None:
    journal = Journal()
    live = LiveRepair(enabled=False)
    live.add_stream("binance_spot", None, INSTRUMENTS, lambda rows, recv: 0, journal)
    live.submit("binance_spot", Missing("AUSDT", 10, 20, "reconnect"))
    live.submit("binance_spot", Missing("AUSDT", 30, 40, "reconnect", whole=True))
    assert journal.events == [
        ("unrepaired", {"symbol": "AUSDT", "base": "A", "start_us": 10, "end_us": 20, "reason": "disabled"}),
        (
            "repaired",
            {"symbol": "AUSDT", "base": "A", "start_us": 30, "end_us": 40, "trades": 0, "via": "trade ids"},
        ),
    ]
    assert live.queue_length() == 0


def test_a_stream_without_history_journals_no_history() -> None:
    journal = Journal()
    live = LiveRepair(enabled=True)
    live.add_stream("okx_spot", None, INSTRUMENTS, lambda rows, recv: 0, journal)
    live.submit("okx_spot", Missing("AUSDT", 10, 20, "id_gap", 4, 5))
    assert journal.events[0][0] == "unrepaired" and journal.events[0][1]["reason"] == "no_history"


def test_the_queue_holds_one_span_per_symbol() -> None:
    from pumpwatch.recorder.history.specs import history_spec

    async def body() -> None:
        spec = history_spec("binance_spot", "http://127.0.0.1:9")
        live = LiveRepair(enabled=True)
        stats = live.add_stream("binance_spot", spec, INSTRUMENTS, lambda rows, recv: 0, Journal())
        for k in range(100):
            live.submit("binance_spot", Missing("AUSDT", k, k + 5, "id_gap", k, k + 1))
        assert live.queue_length() == 1 and stats.queued == 1

    asyncio.run(body())


@pytest.mark.parametrize("grace_us", [-1])
def test_negative_grace_is_refused(grace_us: int) -> None:
    with pytest.raises(ValueError):
        IdContinuity(grace_us)


def test_worker_rescan_finds_gaps_no_repair_answered() -> None:
    """A gap whose repair was cut short (no repaired/unrepaired event) is queued again at start;
    an answered one and an answered id_gap are not."""
    from pumpwatch.recorder.stream.runner import LOST_MARGIN_US
    from pumpwatch.recorder.worker import unanswered_gaps

    s = 1_000_000
    t = 1_800_000_000 * s
    insts = {"AUSDT": Instrument("AUSDT", "A", "USDT"), "BUSDT": Instrument("BUSDT", "B", "USDT")}
    sub = {"symbols": ["AUSDT", "BUSDT"], "bases": ["A", "B"]}
    events: list[dict[str, Any]] = [
        {"ts": t, "event": "start", "conn": None},
        {"ts": t + 1 * s, "event": "subscribed", "conn": "0-1", **sub},
        {"ts": t + 10 * s, "event": "disconnected", "conn": "0-1", "reason": "lost"},
        {"ts": t + 12 * s, "event": "subscribed", "conn": "0-2", **sub},
        {
            "ts": t + 13 * s,
            "event": "repaired",
            "conn": None,
            "symbol": "BUSDT",
            "start_us": t + 5 * s,
            "end_us": t + 12 * s,
            "trades": 3,
            "via": "x",
        },
        {
            "ts": t + 20 * s,
            "event": "id_gap",
            "conn": None,
            "symbol": "AUSDT",
            "base": "A",
            "first_missing": 7,
            "last_missing": 9,
            "after_us": t + 19 * s,
            "before_us": t + 20 * s,
        },
        {"ts": t + 30 * s, "event": "alive", "conn": None},
    ]
    got = unanswered_gaps(events, insts, now_us=t + 31 * s, lookback_us=3600 * s, heartbeat_s=1.0)
    assert got == [
        Missing("AUSDT", t + 10 * s - LOST_MARGIN_US, t + 12 * s, "rescan"),
        Missing("AUSDT", t + 19 * s, t + 20 * s, "rescan", 7, 9),
    ]
    answered = [
        *events,
        {
            "ts": t + 32 * s,
            "event": "unrepaired",
            "conn": None,
            "symbol": "AUSDT",
            "start_us": t,
            "end_us": t + 25 * s,
            "reason": "no_history",
        },
    ]
    assert unanswered_gaps(answered, insts, now_us=t + 33 * s, lookback_us=3600 * s, heartbeat_s=1.0) == []
