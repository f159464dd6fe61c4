"""A stall that trips the watchdog (issue 10): the journal's ``disconnected`` carries the last
receive time and coverage ends the connection there, so the stalled span is a gap with the
right bounds even where nothing repairs it (a latest-only stream, repair off). Real runner,
real adapter, its local server's stall fault, a real journal file; delays shrunk."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from pumpwatch.recorder.adapters import get_adapter
from pumpwatch.recorder.sim.cluster import SimCluster
from pumpwatch.recorder.stream.runner import StreamRunner
from pumpwatch.segments.coverage import completeness_from_events, coverage
from pumpwatch.segments.journal import EventJournal, read_events
from pumpwatch.segments.schema import TradeRow

STREAM = "bybit_spot"  # latest-only history
QUIET_S = 0.8
STALL_S = QUIET_S * 3


def _now_us() -> int:
    return time.time_ns() // 1000


def test_a_stall_is_a_gap_from_the_last_receive_to_the_resume(tmp_path: Any) -> None:
    data = tmp_path / "data"
    rows: list[TradeRow] = []

    async def main() -> dict[str, int]:
        adapter = dataclasses.replace(get_adapter(STREAM), ping_interval_s=0.1, quiet_timeout_s=QUIET_S)
        async with SimCluster([STREAM], ["SOL"], trades_per_s=200.0, tick_s=0.02) as cluster:
            ex = cluster.exchanges[STREAM]
            journal = EventJournal(data, STREAM)
            runner = StreamRunner(
                adapter,
                ws_url=ex.ws_url,
                rest_url=ex.rest_url,
                instruments={i.symbol: i for i in cluster.instruments[STREAM]},
                on_trades=rows.extend,
                journal=journal,  # no on_missing: repair off
                backoff_initial_s=0.02,
                backoff_max_s=0.2,
            )
            task = asyncio.create_task(runner.run())
            deadline = time.monotonic() + 10
            while runner.stats.subscribed_symbols < 1 or len(rows) < 20:
                assert time.monotonic() < deadline, "never received trades"
                await asyncio.sleep(0.01)
            t_before = _now_us()
            ex.stall(STALL_S)  # nothing sent, nothing read: the watchdog fires QUIET_S later
            t_stall = _now_us()
            while runner.stats.reconnects < 1:
                assert time.monotonic() < deadline + 10, "the watchdog never fired"
                await asyncio.sleep(0.01)
            while runner.stats.subscribed_symbols < 1:
                await asyncio.sleep(0.01)
            n = len(rows)
            while len(rows) < n + 20:
                await asyncio.sleep(0.01)
            t_end = _now_us()
            await runner.stop()
            await asyncio.wait_for(task, 5)
            return {"before": t_before, "stall": t_stall, "end": t_end}

    t = asyncio.run(asyncio.wait_for(main(), 60))
    events = read_events(data, STREAM)
    disc = [e for e in events if e["event"] == "disconnected" and e["reason"].startswith("silent for")]
    assert len(disc) == 1, events
    d = disc[0]
    # the last receive is before the stall began (pings every 0.1 s keep it fresh up to then) ...
    assert t["before"] - 500_000 <= d["last_rx_us"] <= t["stall"]
    # ... and the event itself a watchdog timeout later
    assert d["ts"] - d["last_rx_us"] >= QUIET_S * 0.9 * 1_000_000
    resumed = [e for e in events if e["event"] == "subscribed" and e["ts"] > d["ts"]]
    assert resumed
    cov = coverage(data, STREAM, t["before"] - 2_000_000, t["end"], base="SOL", now_us=t["end"])
    stalled = [g for g in cov.gaps if g[0] <= t["stall"] < g[1]]
    assert len(stalled) == 1, (cov, [(e["ts"], e["event"], e.get("reason")) for e in events])
    lo, hi = stalled[0]
    assert lo == d["last_rx_us"]  # listened up to the last byte, not up to the watchdog
    assert hi == resumed[0]["ts"]
    # no trade arrived inside the gap (the stalled span was not listened to); a row's receive
    # stamp is taken when its frame is parsed, a little after its bytes arrived
    inside = [r[1] for r in rows if r[3] == "SOL" and lo + 50_000 < r[1] < hi]
    assert not inside, (lo, hi, inside[:3])
    # before the stall fix the journal claimed listening up to the watchdog's event
    assert hi - lo >= d["ts"] - d["last_rx_us"]
    # completeness: nothing repaired it, so the listing is incomplete with exactly that span
    comp = completeness_from_events(events, t["before"] - 2_000_000, t["end"], base="SOL", now_us=t["end"])
    assert comp.state == "incomplete"
    assert (lo, hi) in [(m.start_us, m.end_us) for m in comp.missing]
    assert all(m.reason == "not_attempted" for m in comp.missing)


def test_an_old_disconnected_without_last_rx_ends_at_the_event() -> None:
    conn = "c1"
    events = [
        {"ts": 0, "event": "start", "conn": None},
        {"ts": 10, "event": "connected", "conn": conn, "url": "u"},
        {"ts": 20, "event": "subscribed", "conn": conn, "symbols": ["AUSDT"], "bases": ["A"]},
        {"ts": 100, "event": "disconnected", "conn": conn, "reason": "silent for 60.0 s"},
        {"ts": 200, "event": "stop", "conn": None},
    ]
    from pumpwatch.segments.coverage import coverage_from_events

    assert coverage_from_events(events, 20, 200, base="A", now_us=300).gaps == [(100, 200)]
    events[3] = {**events[3], "last_rx_us": 40}
    assert coverage_from_events(events, 20, 200, base="A", now_us=300).gaps == [(40, 200)]
    # a last receive before the subscription (clock skew) cannot end it before it began
    events[3] = {**events[3], "last_rx_us": 5}
    assert coverage_from_events(events, 20, 200, base="A", now_us=300).gaps == [(20, 200)]


def test_a_second_connection_covers_the_stalled_one_only_from_its_own_ack() -> None:
    events = [
        {"ts": 0, "event": "start", "conn": None},
        {"ts": 10, "event": "subscribed", "conn": "a", "symbols": ["AUSDT"], "bases": ["A"]},
        {"ts": 50, "event": "subscribed", "conn": "b", "symbols": ["AUSDT"], "bases": ["A"]},
        {"ts": 90, "event": "disconnected", "conn": "b", "reason": "closed", "last_rx_us": 60},
        {"ts": 120, "event": "subscribed", "conn": "c", "symbols": ["AUSDT"], "bases": ["A"]},
        {"ts": 150, "event": "disconnected", "conn": "a", "reason": "silent", "last_rx_us": 30},
        {"ts": 200, "event": "stop", "conn": None},
    ]
    from pumpwatch.segments.coverage import coverage_from_events

    # a listened [10, 30), b [50, 60), c [120, 200)
    assert coverage_from_events(events, 10, 200, base="A", now_us=300).gaps == [(30, 50), (60, 120)]
