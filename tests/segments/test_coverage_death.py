"""The supervisor's mark of a worker's death in coverage (review of issue 11): it ends the dead
run at its last sign of life, never stretches it (a crash loop's marks used to extend the
listening of a worker dead at 11 s to 100 s), and a following ``crashed`` bound still refines
it up to what the run got on disk."""

from __future__ import annotations

from typing import Any

from pumpwatch.segments.coverage import coverage_from_events, state_events
from pumpwatch.timeunits import US_PER_S as S


def _run(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"ts": 0, "event": "start"},
        {"ts": 1 * S, "event": "connected", "conn": "c1"},
        {"ts": 2 * S, "event": "subscribed", "conn": "c1", "symbols": ["BTCUSDT"], "bases": ["BTC"]},
        {"ts": 10 * S, "event": "alive"},
        *extra,
    ]


def _death(ts_s: int, code: int) -> dict[str, Any]:
    return {
        "ts": ts_s * S,
        "event": "gap_start",
        "reason": f"worker exited with code {code}",
        "exit_code": code,
    }


def test_a_crash_loop_of_death_marks_never_stretches_the_dead_run() -> None:
    events = _run(_death(12, -9), _death(20, 4), _death(40, 4), _death(80, 4))
    for evs in (events, state_events(events)):
        cov = coverage_from_events(evs, 0, 100 * S, now_us=100 * S)
        assert cov.gaps == [(0, 2 * S), (10 * S, 100 * S)]


def test_a_crashed_bound_after_the_mark_extends_to_what_reached_the_disk() -> None:
    crashed = {"ts": 21 * S, "event": "crashed", "durable_us": 10 * S + 900_000, "pid": 7}
    events = _run(_death(12, -9), crashed, {"ts": 22 * S, "event": "start"})
    for evs in (events, state_events(events)):
        cov = coverage_from_events(evs, 0, 30 * S, now_us=30 * S)
        assert cov.gaps == [(0, 2 * S), (10 * S + 900_000, 30 * S)]


def test_informational_gap_marks_never_move_the_clock() -> None:
    # the runner's own gap_start (all connections down) and the old marks without exit code
    events = _run(*({"ts": t * S, "event": "gap_start", "reason": "x"} for t in (12, 20, 40, 80)))
    cov = coverage_from_events(events, 0, 100 * S, heartbeat_s=10.0, now_us=100 * S)
    assert cov.gaps == [(0, 2 * S), (40 * S, 100 * S)]  # the last alive + 3 heartbeats, not 80 + 30
