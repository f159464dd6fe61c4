"""Was a stream listening for the whole of a time window? Answered from its event journal.

Rules (docs/operations.md repeats them for users):

- A connection listens from its `subscribed` event (the exchange's ack) until its
  `disconnected`; `unsubscribed` removes the named symbols from it. A `connected` event alone
  does not listen, and a repeated `connected` for the same id starts that connection afresh.
- With ``base`` given, only connections whose acked subscriptions include that base count: a
  drop of the connection carrying base X is a gap for X even while other connections are up.
  Without ``base``, any connection with at least one acked subscription counts.
- The stream listens while at least one counting connection does, so a make-before-break
  rotation (second connection subscribed before the first is closed) leaves no gap.
- ``stop`` ends every connection. ``start`` with connections still open means the previous
  process crashed: they ended at the time of the last event before that ``start`` (heartbeat
  ``alive`` events exist to bound this unknown span).
- At the end of the journal, connections still open are taken to listen until the last event
  plus ``3 × heartbeat_s`` (capped at now): a live recorder writes ``alive`` more often than that.
- ``gap_start``/``gap_end`` are informational only; gaps are derived from connection state.
- Events are taken in file order; a timestamp smaller than the one before it (a clock step,
  another process) is treated as equal to it, so intervals never run backwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pumpwatch.errors import UsageError
from pumpwatch.segments.journal import now_us as wall_now_us
from pumpwatch.segments.journal import read_events
from pumpwatch.timeunits import US_PER_S

DEFAULT_HEARTBEAT_S = 10.0
TAIL_HEARTBEATS = 3  # how many missed heartbeats before an open journal tail stops counting


@dataclass(frozen=True)
class Coverage:
    """Listening state of one stream over ``[start_us, end_us]``.

    `gaps` are the not-listening spans in µs, clipped to the window, merged and sorted;
    `known` is False when the journal says nothing at all about the window (no event at or
    before its end), in which case the whole window is one gap.
    """

    complete: bool
    gaps: list[tuple[int, int]]
    listening_us: int
    known: bool


@dataclass
class ConnState:
    """Acked subscriptions of one open connection."""

    symbols: dict[str, str | None] = field(default_factory=dict)  # exchange symbol -> base
    loose_bases: set[str] = field(default_factory=set)  # bases not given parallel to symbols

    def subscribe(self, symbols: list[Any], bases: list[Any]) -> None:
        if len(symbols) == len(bases):
            for sym, b in zip(symbols, bases, strict=True):
                self.symbols[str(sym)] = str(b).upper()
        else:
            for sym in symbols:
                self.symbols.setdefault(str(sym), None)
            self.loose_bases.update(str(b).upper() for b in bases)

    def unsubscribe(self, symbols: list[Any], bases: list[Any]) -> None:
        for sym in symbols:
            self.symbols.pop(str(sym), None)
        self.loose_bases.difference_update(str(b).upper() for b in bases)
        if not self.symbols:
            self.loose_bases.clear()

    def listens(self, base: str | None) -> bool:
        """Whether this connection counts for `base` (None: for the stream as a whole)."""
        if base is None:
            return bool(self.symbols) or bool(self.loose_bases)
        return base in self.loose_bases or base in self.symbols.values()


def _list_field(event: dict[str, Any], key: str) -> list[Any]:
    value = event.get(key)
    return value if isinstance(value, list) else []


@dataclass
class Replay:
    """The journal's connection state machine, fed one event at a time in file order.

    `intervals` collects the closed listening spans for `base`; `conns` is the state after the
    last event fed; `last_ts` that event's (monotonic-clamped) time.
    """

    base: str | None = None
    conns: dict[str, ConnState] = field(default_factory=dict)
    intervals: list[tuple[int, int]] = field(default_factory=list)
    last_ts: int | None = None
    listening_since: int | None = None

    def feed(self, event: dict[str, Any]) -> int:
        """Apply one event; returns its clamped timestamp."""
        ts = int(event["ts"])
        if self.last_ts is not None and ts < self.last_ts:
            ts = self.last_ts
        kind = event.get("event")
        conn = event.get("conn")
        if kind == "start":
            if self.conns and self.last_ts is not None:
                # the previous process crashed: its connections ended with its last sign of life
                self._close_at(self.last_ts)
            self.conns.clear()
        elif kind == "stop":
            self.conns.clear()
        elif isinstance(conn, str):
            if kind == "connected":
                self.conns[conn] = ConnState()
            elif kind == "subscribed":
                self.conns.setdefault(conn, ConnState()).subscribe(
                    _list_field(event, "symbols"), _list_field(event, "bases")
                )
            elif kind == "unsubscribed" and conn in self.conns:
                self.conns[conn].unsubscribe(_list_field(event, "symbols"), _list_field(event, "bases"))
            elif kind == "disconnected":
                self.conns.pop(conn, None)
        self._update(ts)
        self.last_ts = ts
        return ts

    def listening(self) -> bool:
        """Whether some open connection counts for `base` right now."""
        return any(c.listens(self.base) for c in self.conns.values())

    def _close_at(self, ts: int) -> None:
        if self.listening_since is not None:
            if ts > self.listening_since:  # an empty span (same-µs flap) is no listening
                self.intervals.append((self.listening_since, ts))
            self.listening_since = None

    def _update(self, ts: int) -> None:
        now_listening = self.listening()
        if now_listening and self.listening_since is None:
            self.listening_since = ts
        elif not now_listening and self.listening_since is not None:
            self._close_at(ts)

    def finish(self, tail_end_us: int) -> list[tuple[int, int]]:
        """All listening spans, the open one (if any) ending at `tail_end_us`."""
        spans = list(self.intervals)
        if self.listening_since is not None:
            spans.append((self.listening_since, max(self.listening_since, tail_end_us)))
        return spans


def listening_spans(
    events: Iterable[dict[str, Any]], *, base: str | None = None, tail_grace_us: int, now_us: int
) -> tuple[list[tuple[int, int]], int | None]:
    """Listening spans ``[a, b)`` of the journal `events` for `base`, and the first event time."""
    replay = Replay(base=base.upper() if base else None)
    first_ts: int | None = None
    for event in events:
        ts = replay.feed(event)
        if first_ts is None:
            first_ts = ts
    tail_end = now_us
    if replay.last_ts is not None:
        # what the journal says up to its last event stands even if `now_us` is earlier
        tail_end = max(replay.last_ts, min(replay.last_ts + tail_grace_us, now_us))
    return replay.finish(tail_end), first_ts


_CONN_EVENTS = frozenset(("connected", "subscribed", "unsubscribed", "disconnected"))


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


def coverage_from_events(
    events: Iterable[dict[str, Any]],
    start_us: int,
    end_us: int,
    *,
    base: str | None = None,
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    now_us: int | None = None,
) -> Coverage:
    """`coverage` over events already read (file order): pure, no I/O, no clock unless
    `now_us` is None."""
    if end_us < start_us:
        raise UsageError(f"coverage window ends before it starts ({start_us} > {end_us})")
    now = wall_now_us() if now_us is None else now_us
    grace_us = int(TAIL_HEARTBEATS * heartbeat_s * US_PER_S)
    spans, first_ts = listening_spans(events, base=base, tail_grace_us=grace_us, now_us=now)
    if first_ts is None or first_ts > end_us:
        gaps = [(start_us, end_us)] if end_us > start_us else []
        return Coverage(complete=False, gaps=gaps, listening_us=0, known=False)
    gaps = []
    cursor = start_us
    for a, b in sorted(spans):
        if b <= a or b <= cursor or a >= end_us:
            continue
        if a > cursor:
            gaps.append((cursor, a))
        cursor = max(cursor, b)
        if cursor >= end_us:
            break
    if cursor < end_us:
        gaps.append((cursor, end_us))
    listening = (end_us - start_us) - sum(b - a for a, b in gaps)
    return Coverage(complete=not gaps, gaps=gaps, listening_us=listening, known=True)


def coverage(
    data_dir: str | os.PathLike[str],
    stream: str,
    start_us: int,
    end_us: int,
    *,
    base: str | None = None,
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    now_us: int | None = None,
) -> Coverage:
    """Was `stream` listening (for `base`, if given) for the whole of ``[start_us, end_us]``?

    Reads ``<data_dir>/journal/<stream>.ndjson``; see the module docstring for the rules.
    """
    # the whole journal: a `start` after the window can still end connections inside it
    events = read_events(data_dir, stream)
    return coverage_from_events(events, start_us, end_us, base=base, heartbeat_s=heartbeat_s, now_us=now_us)
