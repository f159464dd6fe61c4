"""Was a stream listening for the whole of a time window? Answered from its event journal.

Rules (docs/operations.md repeats them for users):

- A connection listens from its `subscribed` event (the exchange's ack) until its
  `disconnected`, or until that event's ``last_rx_us`` (the last frame or byte it received,
  written when it died rather than being closed by the recorder: a stall the watchdog noticed
  late is not listening); `unsubscribed` removes the named symbols from it. A `connected` event alone
  does not listen, and a repeated `connected` for the same id starts that connection afresh.
- With ``base`` given, only connections whose acked subscriptions include that base count: a
  drop of the connection carrying base X is a gap for X even while other connections are up.
  Without ``base``, any connection with at least one acked subscription counts.
- The stream listens while at least one counting connection does, so a make-before-break
  rotation (second connection subscribed before the first is closed) leaves no gap.
- ``stop`` ends every connection. ``start`` with connections still open means the previous
  process crashed: they ended at the time of the last event before that ``start`` (heartbeat
  ``alive`` events exist to bound this unknown span).
- ``crashed`` (written by the next worker before its ``start``) ends the previous run at its
  ``durable_us``, the newest trade that run got on disk: what it received later was lost, so
  none of its listening after that point counts, whether the last event before it is earlier
  (a heartbeat before the final flushes) or later (the supervisor noticing the death).
- At the end of the journal, connections still open are taken to listen until the last event
  plus ``3 × heartbeat_s`` (capped at now): a live recorder writes ``alive`` more often than that.
- ``gap_start``/``gap_end`` are informational only; gaps are derived from connection state.
  They never move the replay's clock (`NO_CLOCK`): a mark written after a death is no
  listening. The supervisor's mark of a worker's death (``gap_start`` with ``exit_code``)
  ends that run: its connections listened until the run's last sign of life (the last event
  before the mark), unless a ``crashed`` that follows bounds them more exactly; they do not
  reach the journal's open tail, and the marks of a crash loop do not stretch them.
- Events are taken in file order; a timestamp smaller than the one before it (a clock step,
  another process) is treated as equal to it, so intervals never run backwards.
- ``id_gap``, ``repaired`` and ``unrepaired`` (`OUT_OF_BAND`) are about spans of trades, not
  connections, and may be written by another process (an extraction's repair): the listening
  replay ignores them, so they neither move its clock nor extend an open tail.

Completeness (issue 10, `completeness_from_events`) builds on that, per stream and base:

- The **gaps** are the not-listening spans ∪ the ``id_gap`` spans of that base (a hole in
  contiguous trade ids while listening) ∪ the ``unrepaired`` spans of that base (a failed
  repair names a span that misses trades even where the connection state shows none: a push
  skipped right after a reconnect runs from before the gap to the first trade after it; counted
  up to its closed end exclusive, as the trade there was received).
  A part that is a gap only through ``unrepaired`` events concerns only the symbols they name.
- The **symbols** a gap must be repaired for are those of that base the stream records in the
  window: acked at the window start or by a ``subscribed`` inside it; failing that, every
  symbol ever acked for the base in the journal; failing that, the symbols the base's
  ``repaired``/``unrepaired`` events name (a window from before the recorder ran).
- A part of a gap is **repaired** where a ``repaired`` event of every one of those symbols
  covers it; the rest is **missing**, with the reason of the latest (file order) ``unrepaired``
  event covering it for a symbol still missing there, else ``not_attempted``. A ``repaired``
  event is final: an ``unrepaired`` before or after it for the same span changes nothing there.
- Spans are half-open ``[start_us, end_us)`` on the µs grid of the closed window
  ``[start_us, end_us]``. Events name closed spans: ``repaired``/``unrepaired``
  ``[start_us, end_us]`` and ``id_gap`` ``[after_us, before_us]`` (the missing trades may share
  the µs of the trades around the hole) cover ``[s, e + 1)``; reported ends are clipped to the
  window end.
- **Damaged** spans (what a damaged sealed segment of the window cannot give back,
  `segments.damage.damaged_spans`, passed in by the caller) are gaps too; a missing part of
  one has the reason ``damaged`` (the repair's own failure is in the journal).
- The state is ``complete`` (no gap), ``repaired`` (gaps, none missing) or ``incomplete``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pumpwatch.errors import UsageError
from pumpwatch.segments.journal import now_us as wall_now_us
from pumpwatch.segments.journal import read_events
from pumpwatch.timeunits import US_PER_S

DEFAULT_HEARTBEAT_S = 10.0
TAIL_HEARTBEATS = 3  # how many missed heartbeats before an open journal tail stops counting
# events about spans of trades (possibly written by another process): no sign of listening
OUT_OF_BAND = frozenset(("id_gap", "repaired", "unrepaired"))
# informational marks: fed to the replay (a death mark ends a run) but never moving its clock
NO_CLOCK = frozenset(("gap_start", "gap_end"))


def is_death_mark(event: dict[str, Any]) -> bool:
    """The supervisor's ``gap_start`` after a worker died (it names the exit code)."""
    return event.get("event") == "gap_start" and _int_field(event, "exit_code") is not None


def liveness_bound_us(heartbeat_s: float) -> int:
    """How long after a journal's last line a recorder still counts as running: `TAIL_HEARTBEATS`
    heartbeats. The one rule behind coverage's open tail and `pumpwatch status`'s ``CONN``."""
    return int(TAIL_HEARTBEATS * heartbeat_s * US_PER_S)


@dataclass(frozen=True)
class Coverage:
    """Listening state of one stream over ``[start_us, end_us]``.

    `gaps` are the not-listening spans in µs, clipped to the window, merged and sorted;
    `known` is False when the journal says nothing at all about the window (no event at or
    before its end), in which case the whole window is one gap. `listening_since` is the
    unclipped start of the first listening span that reaches into the window (the ack from
    which the stream was listening, possibly long before the window; None when it did not
    listen in it): a coin subscribed only when its listing notice came says so. It takes no
    part in equality (a pruned journal may know a later start of the same span).
    """

    complete: bool
    gaps: list[tuple[int, int]]
    listening_us: int
    known: bool
    listening_since: int | None = field(default=None, compare=False)


@dataclass
class ConnState:
    """Acked subscriptions of one open connection, and since when it counts (for the replay's
    base)."""

    symbols: dict[str, str | None] = field(default_factory=dict)  # exchange symbol -> base
    loose_bases: set[str] = field(default_factory=set)  # bases not given parallel to symbols
    since: int | None = None  # when it started counting for the replay's base; None: it does not

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

    `intervals` collects the closed listening spans for `base`, one per connection and counting
    stretch (they may overlap: `finish` merges them); `conns` is the state after the last event
    fed; `last_ts` that event's (monotonic-clamped) time.

    A ``disconnected`` event with ``last_rx_us`` (the last frame or byte the connection received,
    written when the connection died rather than being closed by the recorder) ends that
    connection's listening there, not at the event's time: a stall the watchdog noticed 30-90 s
    late is no listening. Without the field (older journals) it ends at the event.
    """

    base: str | None = None
    conns: dict[str, ConnState] = field(default_factory=dict)
    intervals: list[tuple[int, int]] = field(default_factory=list)
    last_ts: int | None = None
    run_first: int = 0  # index in `intervals` of the current run's first span (since `start`)
    # after the supervisor's death mark (`is_death_mark`): the dead run's connections, closed at
    # its last sign of life, as (since, end) pairs a following ``crashed`` may extend
    dead: list[tuple[int, int]] | None = None

    def feed(self, event: dict[str, Any]) -> int:
        """Apply one event; returns its clamped timestamp (a `NO_CLOCK` event leaves the clock
        where it was and returns that)."""
        ts = int(event["ts"])
        if self.last_ts is not None and ts < self.last_ts:
            ts = self.last_ts
        kind = event.get("event")
        conn = event.get("conn")
        if kind in NO_CLOCK:  # never moves the clock
            if is_death_mark(event):
                # the worker died: its connections listened until its last sign of life
                end = self.last_ts if self.last_ts is not None else ts
                self.dead = [(c.since, end) for c in self.conns.values() if c.since is not None]
                self._close_all(end)
                self.conns.clear()
            return self.last_ts if self.last_ts is not None else ts
        if kind == "start":
            if self.conns and self.last_ts is not None:
                # the previous process crashed: its connections ended with its last sign of life
                self._close_all(self.last_ts)
            self.conns.clear()
            self.run_first = len(self.intervals)
            self.dead = None
        elif kind == "crashed":
            durable = _int_field(event, "durable_us")
            if durable is not None:
                end = min(durable, ts)
                # a dead run's flushes after its last heartbeat, up to the bound on disk
                for since, closed in self.dead or ():
                    if closed < end:
                        self.intervals.append((since, end))
                self._end_run_at(end)
            self._close_all(ts)
            self.conns.clear()
            self.dead = None
        elif kind == "stop":
            self._close_all(ts)
            self.conns.clear()
            self.dead = None
        elif isinstance(conn, str):
            if kind == "connected":
                old = self.conns.get(conn)
                if old is not None:
                    self._close(old, ts)
                self.conns[conn] = ConnState()
            elif kind == "subscribed":
                self.conns.setdefault(conn, ConnState()).subscribe(
                    _list_field(event, "symbols"), _list_field(event, "bases")
                )
            elif kind == "unsubscribed" and conn in self.conns:
                self.conns[conn].unsubscribe(_list_field(event, "symbols"), _list_field(event, "bases"))
            elif kind == "disconnected":
                state = self.conns.pop(conn, None)
                if state is not None:
                    end = ts
                    last_rx = _int_field(event, "last_rx_us")
                    if last_rx is not None and state.since is not None:
                        end = min(ts, max(state.since, last_rx))
                    self._close(state, end)
        self._update(ts)
        self.last_ts = ts
        return ts

    def listening(self) -> bool:
        """Whether some open connection counts for `base` right now."""
        return any(c.listens(self.base) for c in self.conns.values())

    def _close(self, state: ConnState, end: int) -> None:
        if state.since is not None:
            if end > state.since:  # an empty span (same-µs flap) is no listening
                self.intervals.append((state.since, end))
            state.since = None

    def _close_all(self, end: int) -> None:
        for state in self.conns.values():
            self._close(state, end)

    def _end_run_at(self, end_us: int) -> None:
        """The current run listened until `end_us` at the latest: clip its spans there."""
        for state in self.conns.values():
            if state.since is not None:
                self._close(state, max(end_us, state.since))
        run = [(a, min(b, end_us)) for a, b in self.intervals[self.run_first :] if a < end_us]
        del self.intervals[self.run_first :]
        self.intervals.extend(run)

    def _update(self, ts: int) -> None:
        for state in self.conns.values():
            counts = state.listens(self.base)
            if counts and state.since is None:
                state.since = ts
            elif not counts and state.since is not None:
                self._close(state, ts)

    def finish(self, tail_end_us: int) -> list[tuple[int, int]]:
        """All listening spans, merged and sorted, the open ones (if any) ending at `tail_end_us`."""
        spans = list(self.intervals)
        for state in self.conns.values():
            if state.since is not None:
                spans.append((state.since, max(state.since, tail_end_us)))
        return merge_spans(spans)


def listening_spans(
    events: Iterable[dict[str, Any]], *, base: str | None = None, tail_grace_us: int, now_us: int
) -> tuple[list[tuple[int, int]], int | None]:
    """Listening spans ``[a, b)`` of the journal `events` for `base`, and the first event time."""
    replay = Replay(base=base.upper() if base else None)
    first_ts: int | None = None
    for event in events:
        kind = event.get("event")
        if kind in OUT_OF_BAND or (kind in NO_CLOCK and not is_death_mark(event)):
            continue
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
        if kind in OUT_OF_BAND or (kind in NO_CLOCK and not is_death_mark(event)):
            continue
        run_event = kind in ("start", "stop", "crashed") or kind in NO_CLOCK
        if run_event or (kind in _CONN_EVENTS and isinstance(event.get("conn"), str)):
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
    grace_us = liveness_bound_us(heartbeat_s)
    spans, first_ts = listening_spans(events, base=base, tail_grace_us=grace_us, now_us=now)
    if first_ts is None or first_ts > end_us:
        gaps = [(start_us, end_us)] if end_us > start_us else []
        return Coverage(complete=False, gaps=gaps, listening_us=0, known=False)
    gaps = []
    cursor = start_us
    since: int | None = None
    for a, b in sorted(spans):
        if b <= a or b <= cursor or a >= end_us:
            continue
        if since is None:
            since = a
        if a > cursor:
            gaps.append((cursor, a))
        cursor = max(cursor, b)
        if cursor >= end_us:
            break
    if cursor < end_us:
        gaps.append((cursor, end_us))
    listening = (end_us - start_us) - sum(b - a for a, b in gaps)
    return Coverage(complete=not gaps, gaps=gaps, listening_us=listening, known=True, listening_since=since)


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


# -- completeness (issue 10): gaps, id holes and their repair ------------------------------------

STATE_COMPLETE = "complete"
STATE_REPAIRED = "repaired"
STATE_INCOMPLETE = "incomplete"
NOT_ATTEMPTED = "not_attempted"
DAMAGED = "damaged"

Span = tuple[int, int]


@dataclass(frozen=True)
class RepairedSpan:
    """``[start_us, end_us)`` of a gap that every recorded symbol's ``repaired`` events cover;
    `via` the endpoints those events name (sorted, distinct)."""

    start_us: int
    end_us: int
    via: tuple[str, ...]


@dataclass(frozen=True)
class MissingSpan:
    """``[start_us, end_us)`` of a gap still missing: `reason` is the latest covering
    ``unrepaired`` reason or ``not_attempted``; `symbols` those not repaired there (empty when
    the stream records no symbol of the base that anything names)."""

    start_us: int
    end_us: int
    reason: str
    symbols: tuple[str, ...]


@dataclass(frozen=True)
class Completeness:
    """Does one stream hold every trade of one base over ``[start_us, end_us]``?

    `state` is ``complete``, ``repaired`` or ``incomplete``; `listening` the connection
    coverage alone (`Coverage`); `gaps` = not-listening ∪ `id_gaps`, merged; `repaired` and
    `missing` partition `gaps` exactly. Spans are half-open on the µs grid of the closed window,
    so one ending at ``end_us + 1`` reaches the window's last µs (`clip` for display).
    """

    state: str
    listening: Coverage
    gaps: list[Span]
    id_gaps: list[Span]
    repaired: list[RepairedSpan]
    missing: list[MissingSpan]
    symbols: tuple[str, ...]
    end_us: int

    def clip(self, end_us: int) -> int:
        """A span end as shown: never past the window's end."""
        return min(end_us, self.end_us)


def merge_spans(spans: Iterable[Span]) -> list[Span]:
    """Sorted union of half-open spans; touching spans merge, empty ones vanish."""
    out: list[Span] = []
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def dropped_spans(
    events: Iterable[dict[str, Any]], start_us: int, end_us: int, *, clock: str = "time"
) -> list[tuple[int, int, int]]:
    """``(first, last + 1, rows)`` of the ``dropped`` events (rows a writer could not keep on a
    full disk; not frames) meeting ``[start_us, end_us]``, clipped to it. `clock` is ``"time"``
    (trade time: what a window is cut by) or ``"recv"`` (receive time: what `status` shows)."""
    lo_key, hi_key = f"first_{clock}_us", f"last_{clock}_us"
    out = []
    for e in events:
        if e.get("event") != "dropped" or e.get("what", "rows") != "rows":
            continue
        a, b, n = e.get(lo_key), e.get(hi_key), e.get("rows")
        if not (isinstance(a, int) and isinstance(b, int) and isinstance(n, int)):
            continue
        lo, hi = max(a, start_us), min(b + 1, end_us)
        if lo < hi:
            out.append((lo, hi, n))
    return out


def _int_field(event: dict[str, Any], key: str) -> int | None:
    value = event.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _closed_span(event: dict[str, Any], first: str, last: str) -> Span | None:
    """``[first, last]`` of `event` as the half-open ``[first, last + 1)``; None if malformed."""
    a, b = _int_field(event, first), _int_field(event, last)
    if a is None or b is None or b < a:
        return None
    return a, b + 1


def _of_base(event: dict[str, Any], base: str) -> bool:
    value = event.get("base")
    return isinstance(value, str) and value.upper() == base


def id_gap_spans(events: Iterable[dict[str, Any]], base: str, start_us: int, end_us: int) -> list[Span]:
    """The ``id_gap`` holes of `base` inside the closed window, merged (µs-grid spans)."""
    base = base.upper()
    spans = []
    for event in events:
        if event.get("event") != "id_gap" or not _of_base(event, base):
            continue
        span = _closed_span(event, "after_us", "before_us")
        if span is not None:
            spans.append((max(span[0], start_us), min(span[1], end_us + 1)))
    return merge_spans(spans)


def recorded_symbols(
    events: Iterable[dict[str, Any]], base: str, start_us: int, end_us: int
) -> tuple[str, ...]:
    """Symbols of `base` the stream records in the window: acked on a connection open at
    `start_us` or by a ``subscribed`` inside the window; failing that, every symbol ever acked
    for the base; failing that, none. Only ``subscribed`` events whose bases run parallel to
    their symbols can name a symbol's base."""
    base = base.upper()
    replay = Replay()
    at_start: set[str] | None = None
    inside: set[str] = set()
    ever: set[str] = set()

    def open_now() -> set[str]:
        return {sym for c in replay.conns.values() for sym, b in c.symbols.items() if b == base}

    for event in events:
        if event.get("event") in OUT_OF_BAND:
            continue
        ts = max(int(event["ts"]), replay.last_ts if replay.last_ts is not None else int(event["ts"]))
        if at_start is None and ts > start_us:
            at_start = open_now()
        replay.feed(event)
        if event.get("event") == "subscribed" and isinstance(event.get("conn"), str):
            symbols, bases = _list_field(event, "symbols"), _list_field(event, "bases")
            if len(symbols) == len(bases):
                named = {str(s) for s, b in zip(symbols, bases, strict=True) if str(b).upper() == base}
                ever |= named
                if start_us <= ts <= end_us:
                    inside |= named
    if at_start is None:
        at_start = open_now()
    return tuple(sorted((at_start | inside) or ever))


@dataclass(frozen=True)
class SpanEvent:
    """A ``repaired`` or ``unrepaired`` journal event as a half-open span."""

    kind: str  # "repaired" | "unrepaired"
    symbol: str
    start_us: int
    end_us: int  # exclusive
    label: str  # via or reason
    order: int  # position in the journal


def span_events_of(
    events: Iterable[dict[str, Any]], base: str, start_us: int, end_us: int
) -> list[SpanEvent]:
    """Well-formed ``repaired``/``unrepaired`` events of `base` meeting the closed window."""
    out = []
    for i, event in enumerate(events):
        kind = event.get("event")
        if kind not in ("repaired", "unrepaired") or not _of_base(event, base):
            continue
        symbol = event.get("symbol")
        span = _closed_span(event, "start_us", "end_us")
        if not isinstance(symbol, str) or span is None or span[1] <= start_us or span[0] > end_us:
            continue
        label = event.get("via" if kind == "repaired" else "reason")
        out.append(SpanEvent(kind, symbol, span[0], span[1], "" if label is None else str(label), i))
    return out


def _piece(
    x: int, symbols: Sequence[str], covering: list[SpanEvent]
) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """("repaired", vias, ()) or ("missing", (reason,), missing symbols) for one elementary
    piece of a gap starting at `x`, given the span events that cover it."""
    repaired = {e.symbol for e in covering if e.kind == "repaired"}
    missing = tuple(s for s in symbols if s not in repaired)
    if symbols and not missing:
        vias = sorted({e.label for e in covering if e.kind == "repaired" and e.symbol in symbols})
        return "repaired", tuple(vias), ()
    failed = [e for e in covering if e.kind == "unrepaired" and e.symbol in missing]
    reason = max(failed, key=lambda e: e.order).label if failed else NOT_ATTEMPTED
    return "missing", (reason,), missing


def unrepaired_only_spans(
    span_events: Sequence[SpanEvent], gaps: Sequence[Span], start_us: int, end_us: int
) -> list[Span]:
    """The parts of ``unrepaired`` spans outside `gaps`, clipped to the closed window: a repair
    that failed for a span the connection state does not show as a gap (a push skipped right
    after a reconnect: the span runs from before the gap to the first trade after it)."""
    # up to the span's closed end, exclusive: the trade there (the first after a skipped push) was
    # received, and a repair that names a gap's end as its closed end claims no µs past the gap
    spans = merge_spans(
        (max(e.start_us, start_us), min(e.end_us - 1, end_us + 1))
        for e in span_events
        if e.kind == "unrepaired"
    )
    out: list[Span] = []
    for a, b in spans:
        cursor = a
        for g0, g1 in gaps:
            if g1 <= cursor or g0 >= b:
                continue
            if g0 > cursor:
                out.append((cursor, g0))
            cursor = max(cursor, g1)
        if cursor < b:
            out.append((cursor, b))
    return out


def classify_gaps(
    gaps: Sequence[Span],
    span_events: Sequence[SpanEvent],
    symbols: Sequence[str],
    damaged: Sequence[Span] = (),
    failed_only: Sequence[Span] = (),
) -> tuple[list[RepairedSpan], list[MissingSpan]]:
    """Split each gap into repaired and missing spans (see the module doc); pure. Inside
    `failed_only` (gaps only because an ``unrepaired`` event names them, `unrepaired_only_spans`)
    a piece concerns only the symbols such events name there."""
    repaired: list[RepairedSpan] = []
    missing: list[MissingSpan] = []
    for a, b in gaps:
        near = [e for e in span_events if e.start_us < b and e.end_us > a]
        bounds = {t for e in near for t in (e.start_us, e.end_us)} | {t for d in damaged for t in d}
        bounds |= {t for f in failed_only for t in f}
        cuts = sorted({a, b} | {t for t in bounds if a < t < b})
        for x, y in itertools.pairwise(cuts):
            covering = [e for e in near if e.start_us <= x < e.end_us]
            concerned = symbols
            if any(f0 <= x < f1 for f0, f1 in failed_only):
                concerned = tuple(sorted({e.symbol for e in covering if e.kind == "unrepaired"}))
            kind, labels, lacking = _piece(x, concerned, covering)
            if kind == "missing" and any(d0 <= x < d1 for d0, d1 in damaged):
                labels = (DAMAGED,)
            if kind == "repaired":
                if repaired and repaired[-1].end_us == x:
                    last = repaired[-1]
                    repaired[-1] = RepairedSpan(last.start_us, y, tuple(sorted(set(last.via) | set(labels))))
                else:
                    repaired.append(RepairedSpan(x, y, labels))
            elif (
                missing
                and missing[-1].end_us == x
                and (missing[-1].reason, missing[-1].symbols)
                == (
                    labels[0],
                    lacking,
                )
            ):
                missing[-1] = MissingSpan(missing[-1].start_us, y, labels[0], lacking)
            else:
                missing.append(MissingSpan(x, y, labels[0], lacking))
    return repaired, missing


def completeness_from_events(
    events: Sequence[dict[str, Any]],
    start_us: int,
    end_us: int,
    *,
    base: str,
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    now_us: int | None = None,
    damaged: Sequence[Span] = (),
) -> Completeness:
    """`completeness` over events already read (file order): pure, no I/O, no clock unless
    `now_us` is None. `damaged`: half-open spans the store cannot read (module doc)."""
    base = base.upper()
    # the connection replay needs only the events that move it (a week of heartbeats is ~70,000)
    conn_events = state_events(events)
    listening = coverage_from_events(
        conn_events, start_us, end_us, base=base, heartbeat_s=heartbeat_s, now_us=now_us
    )
    if listening.known:
        # a gap reaching the window end reaches its last µs too
        not_listening = [(a, end_us + 1 if b == end_us else b) for a, b in listening.gaps]
    else:
        not_listening = [(start_us, end_us + 1)]
    holes = id_gap_spans(events, base, start_us, end_us)
    # rows a writer dropped on a full disk were received but never stored (any base)
    dropped = [(a, b) for a, b, _ in dropped_spans(events, start_us, end_us + 1)]
    unreadable = merge_spans((max(a, start_us), min(b, end_us + 1)) for a, b in damaged)
    gaps = merge_spans([*not_listening, *holes, *dropped, *unreadable])
    span_events = span_events_of(events, base, start_us, end_us)
    symbols = recorded_symbols(conn_events, base, start_us, end_us)
    if not symbols:
        symbols = tuple(sorted({e.symbol for e in span_events}))
    # a failed repair of a span the connection state does not show as a gap is a gap too
    failed_only = unrepaired_only_spans(span_events, gaps, start_us, end_us)
    gaps = merge_spans([*gaps, *failed_only])
    repaired, missing = classify_gaps(gaps, span_events, symbols, unreadable, failed_only)
    state = STATE_COMPLETE if not gaps else STATE_INCOMPLETE if missing else STATE_REPAIRED
    return Completeness(state, listening, gaps, holes, repaired, missing, symbols, end_us)


def completeness(
    data_dir: str | os.PathLike[str],
    stream: str,
    start_us: int,
    end_us: int,
    *,
    base: str,
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    now_us: int | None = None,
    damaged: Sequence[Span] = (),
) -> Completeness:
    """Does `stream` hold every trade of `base` over ``[start_us, end_us]``, and where not, why?

    Reads ``<data_dir>/journal/<stream>.ndjson``; see the module docstring for the rules.
    `damaged`: the spans of the window the store cannot read (`segments.damage.damaged_spans`).
    """
    events = read_events(data_dir, stream)
    return completeness_from_events(
        events, start_us, end_us, base=base, heartbeat_s=heartbeat_s, now_us=now_us, damaged=damaged
    )


@dataclass(frozen=True)
class RepairTally:
    """What a journal says about trade holes over a window, for ``pumpwatch status``: `id_gaps`
    holes, `repaired` spans (and the `rest_trades` they wrote), and `unrepaired` spans that no
    ``repaired`` event of the same symbol covers entirely (still missing)."""

    id_gaps: int = 0
    repaired: int = 0
    rest_trades: int = 0
    unrepaired: int = 0


def repair_tally(events: Iterable[dict[str, Any]], start_us: int, end_us: int) -> RepairTally:
    """Count the id gaps, repairs and still-open failures whose spans meet ``[start_us, end_us]``
    (all bases); pure."""
    id_gaps = repaired = rest_trades = 0
    fixed: dict[tuple[str, str], list[Span]] = {}
    failed: list[tuple[tuple[str, str], Span]] = []
    for event in events:
        kind = event.get("event")
        if kind not in OUT_OF_BAND:
            continue
        first, last = ("after_us", "before_us") if kind == "id_gap" else ("start_us", "end_us")
        span = _closed_span(event, first, last)
        if span is None or span[1] <= start_us or span[0] > end_us:
            continue
        if kind == "id_gap":
            id_gaps += 1
            continue
        key = (str(event.get("symbol")), str(event.get("base")).upper())
        if kind == "repaired":
            repaired += 1
            trades = _int_field(event, "trades")
            rest_trades += trades or 0
            fixed.setdefault(key, []).append(span)
        else:
            failed.append((key, span))
    still_open = 0
    for key, span in failed:
        if merge_spans([*fixed.get(key, []), span]) != merge_spans(fixed.get(key, [])):
            still_open += 1
    return RepairTally(id_gaps, repaired, rest_trades, still_open)
