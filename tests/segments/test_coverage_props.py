"""Coverage over random journals against a brute-force reference, second by second."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pumpwatch.segments.coverage import coverage_from_events
from pumpwatch.timeunits import US_PER_S as S

# PUMPWATCH_SOAK=long explores many more journals
EXAMPLES = 3000 if os.environ.get("PUMPWATCH_SOAK") == "long" else 200
SYMBOL_BASE = {"AUSDT": "A", "A-PERP": "A", "BUSDT": "B"}
CONNS = ("c1", "c2", "c3")


@st.composite
def journals(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(0, 25))
    ts = 0
    events = []
    for _ in range(n):
        ts += draw(st.integers(0, 4))
        kind = draw(
            st.sampled_from(
                [
                    "start",
                    "stop",
                    "alive",
                    "gap_start",
                    "connected",
                    "subscribed",
                    "subscribed",
                    "unsubscribed",
                    "disconnected",
                    "disconnected",
                ]
            )
        )
        e: dict[str, Any] = {"ts": ts * S, "event": kind, "conn": None}
        if kind in ("connected", "subscribed", "unsubscribed", "disconnected"):
            e["conn"] = draw(st.sampled_from(CONNS))
        if kind in ("subscribed", "unsubscribed"):
            symbols = draw(
                st.lists(st.sampled_from(sorted(SYMBOL_BASE)), min_size=1, max_size=3, unique=True)
            )
            e["symbols"] = symbols
            e["bases"] = [SYMBOL_BASE[s] for s in symbols]
        events.append(e)
    return events


def reference_listening(events: list[dict[str, Any]], t: int, base: str | None, grace: int, now: int) -> bool:
    """Listening during [t, t+1) seconds, recomputed from scratch for this second."""
    prefix = [e for e in events if e["ts"] <= t * S]
    rest = events[len(prefix) :]
    if not prefix:
        return False
    conns: dict[str, dict[str, str]] = {}
    for e in prefix:
        kind, conn = e["event"], e["conn"]
        if kind in ("start", "stop"):
            conns = {}
        elif kind == "connected":
            conns[conn] = {}
        elif kind == "subscribed":
            conns.setdefault(conn, {}).update(zip(e["symbols"], e["bases"], strict=True))
        elif kind == "unsubscribed" and conn in conns:
            for sym in e["symbols"]:
                conns[conn].pop(sym, None)
        elif kind == "disconnected":
            conns.pop(conn, None)
    if not any((base in subs.values()) if base else subs for subs in conns.values()):
        return False
    if rest:
        # a `start` right after means the process died: its connections ended with the prefix
        return rest[0]["event"] != "start"
    return t * S < min(prefix[-1]["ts"] + grace * S, now * S)


def reference_gaps(events: list[dict[str, Any]], start: int, end: int, **kw: Any) -> list[tuple[int, int]]:
    gaps: list[tuple[int, int]] = []
    for t in range(start, end):
        if not reference_listening(events, t, **kw):
            if gaps and gaps[-1][1] == t * S:
                gaps[-1] = (gaps[-1][0], (t + 1) * S)
            else:
                gaps.append((t * S, (t + 1) * S))
    return gaps


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    events=journals(),
    start=st.integers(0, 60),
    length=st.integers(1, 60),
    base=st.sampled_from([None, "A", "B", "C"]),
    heartbeat=st.integers(1, 4),
    now=st.integers(0, 150),
)
def test_coverage_matches_the_brute_force_reference(
    events: list[dict[str, Any]], start: int, length: int, base: str | None, heartbeat: int, now: int
) -> None:
    end = start + length
    c = coverage_from_events(events, start * S, end * S, base=base, heartbeat_s=heartbeat, now_us=now * S)
    known = any(e["ts"] <= end * S for e in events)
    assert c.known == known
    expected = reference_gaps(events, start, end, base=base, grace=3 * heartbeat, now=now)
    if not known:
        expected = [(start * S, end * S)]
    assert c.gaps == expected
    assert c.listening_us == length * S - sum(b - a for a, b in expected)
    assert c.complete == (not expected)


@settings(max_examples=EXAMPLES // 2, deadline=None)
@given(events=journals(), start=st.integers(0, 60), length=st.integers(1, 60))
def test_stream_coverage_is_the_union_of_its_bases(
    events: list[dict[str, Any]], start: int, length: int
) -> None:
    """Every symbol here has base A or B, so the stream listens exactly when A or B does."""
    end = (start + length) * S
    kw: dict[str, Any] = {"now_us": 10**9 * S}
    whole = coverage_from_events(events, start * S, end, **kw)
    a = coverage_from_events(events, start * S, end, base="A", **kw)
    b = coverage_from_events(events, start * S, end, base="B", **kw)
    assert whole.listening_us >= max(a.listening_us, b.listening_us)
    covered = set()
    for c in (a, b):
        for t in range(start, start + length):
            if not any(g0 <= t * S < g1 for g0, g1 in c.gaps):
                covered.add(t)
    whole_covered = {
        t for t in range(start, start + length) if not any(g0 <= t * S < g1 for g0, g1 in whole.gaps)
    }
    assert whole_covered == covered
