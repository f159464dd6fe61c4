"""The journal side of ``pumpwatch status``: connection state, gaps of the last 24 h and the
worker's ``stats`` counters, read fast enough for a week of heartbeats (~70,000 lines per
stream). `store_status` (status.py) calls `journal_status` once per stream.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from pumpwatch.segments.coverage import TAIL_HEARTBEATS, Replay, coverage_from_events
from pumpwatch.segments.journal import journal_path, parse_journal

S_US = 1_000_000
DAY_US = 86_400 * S_US
# cumulative counters of the worker's ``stats`` journal event
STATS_COUNTERS: tuple[str, ...] = ("frames", "trades", "parse_errors", "reconnects", "duplicates")


def counter_increase(events: Iterable[dict[str, Any]], start_us: int, end_us: int) -> dict[str, int] | None:
    """How much each `STATS_COUNTERS` counter grew over ``[start_us, end_us]``, from the
    ``stats`` events of the journal `events` (file order); None if no ``stats`` event lies in
    the window.

    The counters are cumulative since the worker process started, and a ``start`` event marks a
    new process, whose counters begin at zero. Each ``stats`` event in the window adds its value
    minus the previous value of the same run: the last ``stats`` before the window, or zero
    after a ``start``. A run whose beginning is no longer in the journal (pruned) takes its
    first value as the base. A value smaller than the previous one means a reset that left no
    ``start`` line; it counts in full.
    """
    totals = dict.fromkeys(STATS_COUNTERS, 0)
    seen = False
    prev: dict[str, int] = {}  # last value of the current run (missing: unknown base)
    for event in events:
        kind, ts = event.get("event"), event["ts"]
        if ts > end_us:
            break
        if kind == "start":
            prev = dict.fromkeys(STATS_COUNTERS, 0)
        elif kind == "stats":
            inside = ts >= start_us
            seen = seen or inside
            for key in STATS_COUNTERS:
                value = event.get(key)
                if not isinstance(value, int) or isinstance(value, bool):
                    continue
                base = prev.get(key, value)
                if inside:
                    totals[key] += value - base if value >= base else value
                prev[key] = value
    return totals if seen else None


_CONN_EVENTS = frozenset(("connected", "subscribed", "unsubscribed", "disconnected"))


def parse_journal_fast(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """`parse_journal`'s result, from one orjson call when every line is a valid event (a
    week of heartbeats is ~70,000 lines per stream); any doubt falls back to it line by line."""
    body = data.rstrip(b"\n")
    if not body:
        return [], 0
    try:
        objs = orjson.loads(b"[" + body.replace(b"\n", b",") + b"]")
    except orjson.JSONDecodeError:
        return parse_journal(data)
    if len(objs) != body.count(b"\n") + 1:  # a line held more (or less) than one value
        return parse_journal(data)
    try:
        # parse_journal's checks (`type(x) is int` also refuses a bool); a non-object raises
        valid = all(
            type(o["ts"]) is int and type(o["event"]) is str and type(o.get("conn")) in (str, type(None))
            for o in objs
        )
    except (TypeError, KeyError, IndexError):
        valid = False
    return (objs, 0) if valid else parse_journal(data)


def state_events(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events that matter to the connection replay (`coverage.Replay`): every ``start``,
    ``stop`` and connection event, the first event, and of each run of other events (``alive``,
    ``stats``, ``gap_*``, ``rejected``...) the one with the largest time. Those only move the
    replay's clock, which never runs backwards, so coverage and connection state are the same
    as over all events (property-tested); status replays hundreds of lines instead of 70,000."""
    out: list[dict[str, Any]] = []
    pending: dict[str, Any] | None = None
    for event in events:
        kind = event["event"]
        if kind in ("start", "stop") or (kind in _CONN_EVENTS and isinstance(event.get("conn"), str)):
            if pending is not None:
                out.append(pending)
                pending = None
            out.append(event)
        elif not out and pending is None:
            out.append(event)  # the journal's first time bounds the gaps window
        elif pending is None or event["ts"] >= pending["ts"]:
            pending = event
    if pending is not None:
        out.append(pending)
    return out


def journal_status(
    data_dir: Path, stream: str, now_us: int, heartbeat_s: float, has_segments: bool
) -> dict[str, Any]:
    """The journal figures of one stream's status entry (docs/operations.md lists them)."""
    try:
        all_events, skipped = parse_journal_fast(journal_path(data_dir, stream).read_bytes())
    except FileNotFoundError:
        all_events, skipped = [], 0
    events = state_events(all_events)
    replay = Replay()
    for event in events:
        replay.feed(event)
    listening = [c for c, state in replay.conns.items() if state.listens(None)]
    fresh = replay.last_ts is not None and now_us - replay.last_ts <= TAIL_HEARTBEATS * heartbeat_s * 1e6
    out: dict[str, Any] = {
        "connected_now": bool(listening) and fresh,
        "connections_now": len(listening) if fresh else 0,
        "journal_events": len(all_events),
        "journal_unreadable_lines": skipped,
        "first_event_us": events[0]["ts"] if events else None,
        "last_event_us": replay.last_ts,
        "counters_24h": counter_increase(
            (e for e in all_events if e["event"] in ("stats", "start")), now_us - DAY_US, now_us
        ),
    }
    if not events:
        # nothing to judge gaps by: the stream never ran here (or its journal is gone)
        out["recorded"] = "store only" if has_segments else "never"
        out.update(gaps_window_start_us=None, coverage_known_24h=False, gaps_24h=None, gap_s_24h=None)
        return out
    # the time before the stream was first recorded is no gap: it was not meant to listen yet
    window_start = min(max(now_us - DAY_US, events[0]["ts"]), now_us)
    cov = coverage_from_events(events, window_start, now_us, heartbeat_s=heartbeat_s, now_us=now_us)
    out["recorded"] = "journal"
    out["gaps_window_start_us"] = window_start
    out["coverage_known_24h"] = cov.known
    out["gaps_24h"] = [list(g) for g in cov.gaps]
    out["gap_s_24h"] = round(sum(b - a for a, b in cov.gaps) / S_US, 3)
    return out
