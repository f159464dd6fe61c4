"""Coverage over random journals against a brute-force reference, second by second."""

from __future__ import annotations

import itertools
import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pumpwatch.segments.coverage import (
    Completeness,
    completeness_from_events,
    coverage_from_events,
    merge_spans,
)
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
                    "died",  # the supervisor's death mark: gap_start with the exit code
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
        if kind == "died":
            e = {"ts": ts * S, "event": "gap_start", "conn": None, "exit_code": -9}
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
    """Listening during [t, t+1) seconds, recomputed from scratch for this second. A
    ``gap_start`` is no sign of life (ignored) unless it is a death mark, which ends the run's
    connections at the event before it."""
    events = [e for e in events if e["event"] != "gap_start" or "exit_code" in e]
    prefix = [e for e in events if e["ts"] <= t * S]
    rest = events[len(prefix) :]
    if not prefix:
        return False
    conns: dict[str, dict[str, str]] = {}
    for e in prefix:
        kind, conn = e["event"], e["conn"]
        if kind in ("start", "stop", "gap_start"):
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
        return rest[0]["event"] not in ("start", "gap_start")
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
    known = any(e["ts"] <= end * S for e in events if e["event"] != "gap_start" or "exit_code" in e)
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


# -- completeness (issue 10) --------------------------------------------------------------------

BASE_SYMBOLS = {"A": ("A-PERP", "AUSDT"), "B": ("BUSDT",)}
REASONS = ("no_history", "beyond_reach", "rate_limited", "exchange_error: 500")


@st.composite
def span_events(draw: st.DrawFn) -> dict[str, Any]:
    """An id_gap, repaired or unrepaired event over whole seconds (closed spans)."""
    kind = draw(st.sampled_from(["id_gap", "repaired", "unrepaired"]))
    base = draw(st.sampled_from(sorted(BASE_SYMBOLS)))
    symbol = draw(st.sampled_from(BASE_SYMBOLS[base]))
    a = draw(st.integers(0, 120))
    b = a + draw(st.integers(0, 40))
    e: dict[str, Any] = {"ts": draw(st.integers(0, 150)) * S, "event": kind, "conn": None}
    e.update(symbol=symbol, base=base)
    if kind == "id_gap":
        e.update(first_missing="1", last_missing="2", after_us=a * S, before_us=b * S)
    elif kind == "repaired":
        e.update(
            start_us=a * S,
            end_us=b * S,
            trades=draw(st.integers(0, 9)),
            via=draw(st.sampled_from(["/x", "/y"])),
        )
    else:
        e.update(start_us=a * S, end_us=b * S, reason=draw(st.sampled_from(REASONS)))
    return e


@st.composite
def full_journals(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A connection journal with span events inserted anywhere (another process appends them)."""
    events = draw(journals())
    for extra in draw(st.lists(span_events(), max_size=12)):
        events.insert(draw(st.integers(0, len(events))), extra)
    return events


def _covers(e: dict[str, Any], first: str, last: str, t: int) -> bool:
    return e[first] <= t <= e[last]


def reference_point(
    events: list[dict[str, Any]],
    t: int,
    base: str,
    listening_gaps: list[tuple[int, int]],
    symbols: tuple[str, ...],
) -> tuple[str, str] | None:
    """At µs `t`: None (no gap), ("repaired", "") or ("missing", reason), from scratch."""
    ours = [e for e in events if e["event"] in ("id_gap", "repaired", "unrepaired") and e["base"] == base]
    in_gap = any(a <= t < b for a, b in listening_gaps) or any(
        _covers(e, "after_us", "before_us", t) for e in ours if e["event"] == "id_gap"
    )
    if not in_gap:
        # a failed repair names a gap of its own, for the symbols it names (issue 10)
        named = {
            # (up to its closed end, exclusive)
            e["symbol"]
            for e in ours
            if e["event"] == "unrepaired" and e["start_us"] <= t < e["end_us"]
        }
        if not named:
            return None
        symbols = tuple(sorted(named))
    done = {e["symbol"] for e in ours if e["event"] == "repaired" and _covers(e, "start_us", "end_us", t)}
    lacking = [s for s in symbols if s not in done]
    if symbols and not lacking:
        return "repaired", ""
    failed = [
        e
        for e in ours
        if e["event"] == "unrepaired" and e["symbol"] in lacking and _covers(e, "start_us", "end_us", t)
    ]
    return "missing", failed[-1]["reason"] if failed else "not_attempted"


def probes(events: list[dict[str, Any]], start_us: int, end_us: int) -> list[int]:
    """Every µs where the classification may change, and the one before each."""
    points = {start_us, end_us}
    for e in events:
        for key in ("ts", "start_us", "end_us", "after_us", "before_us"):
            if key in e:
                points.update((e[key] - 1, e[key], e[key] + 1))
    return sorted(p for p in points if start_us <= p <= end_us)


def _at(c: Completeness, t: int) -> tuple[str, str] | None:
    for r in c.repaired:
        if r.start_us <= t < r.end_us:
            return "repaired", ""
    for m in c.missing:
        if m.start_us <= t < m.end_us:
            return "missing", m.reason
    return None


NOW = 10**9 * S


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    events=full_journals(),
    start=st.integers(0, 100),
    length=st.integers(0, 60),
    base=st.sampled_from(["A", "B"]),
)
def test_completeness_matches_the_pointwise_reference(
    events: list[dict[str, Any]], start: int, length: int, base: str
) -> None:
    start_us, end_us = start * S, (start + length) * S
    c = completeness_from_events(events, start_us, end_us, base=base, now_us=NOW)
    # the not-listening spans are exactly today's coverage, whatever the span events
    plain = [e for e in events if e["event"] not in ("id_gap", "repaired", "unrepaired")]
    assert c.listening == coverage_from_events(plain, start_us, end_us, base=base, now_us=NOW)
    listening_gaps = [(a, end_us + 1 if b == end_us else b) for a, b in c.listening.gaps]
    if not c.listening.known:
        listening_gaps = [(start_us, end_us + 1)]
    for t in probes(events, start_us, end_us):
        assert _at(c, t) == reference_point(events, t, base, listening_gaps, c.symbols), t
    # repaired and missing partition the gaps exactly: sorted, disjoint, nothing else
    pieces = sorted(
        [(r.start_us, r.end_us) for r in c.repaired] + [(m.start_us, m.end_us) for m in c.missing]
    )
    assert all(a < b for a, b in pieces)
    assert all(p[1] <= q[0] for p, q in itertools.pairwise(pieces))
    assert merge_spans(pieces) == c.gaps
    assert all(start_us <= a and b <= end_us + 1 for a, b in c.gaps)
    assert c.state == ("complete" if not c.gaps else "incomplete" if c.missing else "repaired")
    # maximal spans: two touching missing spans differ in reason or symbols
    for m, n in itertools.pairwise(c.missing):
        assert m.end_us < n.start_us or (m.reason, m.symbols) != (n.reason, n.symbols)
    for r, s in itertools.pairwise(c.repaired):
        assert r.end_us < s.start_us


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    events=full_journals(),
    start=st.integers(0, 100),
    length=st.integers(0, 60),
    base=st.sampled_from(["A", "B"]),
)
def test_a_repair_of_everything_leaves_nothing_missing(
    events: list[dict[str, Any]], start: int, length: int, base: str
) -> None:
    start_us, end_us = start * S, (start + length) * S
    before = completeness_from_events(events, start_us, end_us, base=base, now_us=NOW)
    whole = [
        {
            "ts": 0,
            "event": "repaired",
            "conn": None,
            "symbol": s,
            "base": base,
            "start_us": start_us,
            "end_us": end_us,
            "trades": 0,
            "via": "/all",
        }
        for s in BASE_SYMBOLS[base]
    ]
    after = completeness_from_events([*events, *whole], start_us, end_us, base=base, now_us=NOW)
    assert after.state in ("repaired", "complete")
    assert after.missing == []
    assert after.gaps == before.gaps
    assert (after.state == "complete") == (not before.gaps)
    # …wherever the repairs sit in the journal, and a failure journaled after them undoes nothing
    first = completeness_from_events([*whole, *events], start_us, end_us, base=base, now_us=NOW)
    assert first == after
    # (the failed spans are gaps of their own now, but every part of them is repaired)
    failed = [{**w, "event": "unrepaired", "reason": "rate_limited"} for w in whole]
    late = completeness_from_events([*events, *whole, *failed], start_us, end_us, base=base, now_us=NOW)
    assert late.missing == [] and late.state in ("repaired", "complete")
    assert set(after.gaps) <= set(late.gaps) or merge_spans([*after.gaps, *late.gaps]) == late.gaps


@settings(max_examples=EXAMPLES // 2, deadline=None)
@given(
    events=full_journals(),
    extra=span_events(),
    start=st.integers(0, 100),
    length=st.integers(0, 60),
    base=st.sampled_from(["A", "B"]),
)
def test_a_failure_never_shrinks_what_is_repaired_and_a_repair_never_grows_what_is_missing(
    events: list[dict[str, Any]], extra: dict[str, Any], start: int, length: int, base: str
) -> None:
    if extra["event"] == "id_gap":
        return
    start_us, end_us = start * S, (start + length) * S
    before = completeness_from_events(events, start_us, end_us, base=base, now_us=NOW)
    after = completeness_from_events([*events, extra], start_us, end_us, base=base, now_us=NOW)
    repaired_before = merge_spans((r.start_us, r.end_us) for r in before.repaired)
    repaired_after = merge_spans((r.start_us, r.end_us) for r in after.repaired)
    if before.symbols != after.symbols:
        return  # the event named the first symbol of a base nothing else names
    union = merge_spans([*repaired_before, *repaired_after])
    if extra["event"] == "unrepaired":
        assert repaired_after == repaired_before
    else:
        assert union == repaired_after  # only grows
