"""Trade-id continuity: holes in ids that count up by one per trade and symbol (issue 10 §1).

Sans-I/O, no clock reads: the receive time comes in with every batch and "now" with every
`expire`. The runner feeds it the trades that passed the de-duplicator (`check`, on the hot
path), so a trade two connections delivered counts once.

Per symbol it keeps the highest id seen and that trade's time. A trade whose id is more than
one above it opens a *pending hole* (first and last missing id, the times of the trades around
it). A later arrival with an id inside a pending hole fills that id (an overlapping connection
during a rotation, or the second connection of `recorder.redundancy: 2`, may deliver it a
little late); the hole splits around it. A hole still (partly) open `grace_us` after it was
seen is handed out by `expire` as an `IdHole`: the caller journals it as ``id_gap`` and repairs
it by id. When the stream stops or a symbol is dropped, `drain` hands out its pending holes at
once, grace or not (nothing can fill them any more; none leaves unjournaled).

A disconnect is not a hole. When a symbol starts listening again after it was not (a lost
connection, a worker start), the runner calls `resume`: the symbol's next trade then does not
open a hole (the not-listening span is already a gap in the journal); instead it settles the
*resume* — `Resumed` with the ids missing between the last trade before the gap and the first
after it, so the gap is repaired exactly, by id, and only once. A symbol that trades nothing
within the grace after resuming is handed out by `expire` with the ids unknown above the last
one seen (repair then pages from that id up to the resume time), and stays resuming: its next
trade still settles it against the last id before the gap. The chain of ids is never dropped,
so ids that never arrive right after a resume (the exchange skipped pushes on the new
connection) are found and repaired too, and a ``repaired`` span that leans on the ids received
live is never claimed across ids nobody checked.

Which id is checked: the row's trade id, unless the caller passes `seq`, one id per row (Gate
spot: its stored ``id`` is exchange-wide, so the decoder attaches the per-market ``id_market``
to each trade, see `pumpwatch.recorder.adapter.Sequenced`). A `seq` entry may be a pair
``(first, last)``: one trade that accounts for several ids (Gate's ``range``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the recorder's light processes must not import pyarrow through the schema
    from pumpwatch.segments.schema import TradeRow


@dataclass(slots=True)
class IdHole:
    """Ids ``first_missing..last_missing`` of `symbol` never arrived while listening.

    `after_us` is the exchange time of the last trade before the hole, `before_us` of the first
    after it (the journal's ``id_gap`` fields); `due_us` when the grace ends (receive clock).
    """

    symbol: str
    first_missing: int
    last_missing: int
    after_us: int
    before_us: int
    due_us: int


@dataclass(slots=True)
class Resumed:
    """`symbol` was not listening from `since_us` to `resumed_us` (receive clock, µs).

    Filled in as the symbol's trades reveal it: `last_id`/`last_us` the last trade seen before
    the gap (None: none known), `next_id`/`next_us` the first trade after it (None: none yet).
    Missing ids are ``last_id + 1 .. next_id - 1`` when both are known. `handed_out`: `expire`
    already handed it out as quiet (repaired up to `resumed_us`); it still waits for its first
    trade, which settles the ids up to it.
    """

    symbol: str
    since_us: int
    resumed_us: int
    due_us: int
    last_id: int | None = None
    last_us: int | None = None
    next_id: int | None = None
    next_us: int | None = None
    handed_out: bool = False


class IdContinuity:
    """Tracks the last id per symbol and the holes after it (see the module docstring)."""

    def __init__(self, grace_us: int) -> None:
        if grace_us < 0:
            raise ValueError(f"negative grace {grace_us}")
        self.grace_us = grace_us
        self._last_id: dict[str, int] = {}
        self._last_us: dict[str, int] = {}
        self._pending: dict[str, list[IdHole]] = {}
        self._resuming: dict[str, Resumed] = {}
        self.holes_seen = 0  # holes opened (before any filling)
        self.ids_filled = 0  # missing ids that arrived within the grace
        self.bad_ids = 0  # trades whose id is not a decimal integer (not checked)

    # -- the hot path ----------------------------------------------------------------------

    def check(
        self, rows: Sequence[TradeRow], recv_us: int, seq: Sequence[Any] | None = None
    ) -> list[Resumed] | None:
        """Account the trades of one frame (after de-duplication), received at `recv_us`.

        With `seq` (one entry per row: an int, a decimal string, or ``(first, last)``) those ids
        are checked instead of the rows' trade ids; an entry that is neither (or a `seq` of the
        wrong length: every row) is counted in `bad_ids` and not checked. Returns the resumes
        settled by these trades (their first trade after a gap), or None.
        """
        if seq is not None:
            return self._check_seq(rows, recv_us, seq)
        last_id = self._last_id
        last_us = self._last_us
        settled: list[Resumed] | None = None
        for row in rows:
            symbol = row[2]
            prev = last_id.get(symbol)
            try:
                n = int(row[8])  # a None id raises TypeError: not checked
            except (TypeError, ValueError):
                self.bad_ids += 1
                continue
            if prev is not None and n == prev + 1:
                last_id[symbol] = n
                last_us[symbol] = row[0]
                continue
            if symbol in self._resuming:
                done = self._settle(symbol, n, row[0])
                settled = [done] if settled is None else [*settled, done]
            elif prev is None:
                pass
            elif n > prev:
                self._open(symbol, prev + 1, n - 1, last_us[symbol], row[0], recv_us)
            else:
                self._fill(symbol, n, row[0])
                continue  # a late arrival never moves the last id back
            last_id[symbol] = n
            last_us[symbol] = row[0]
        return settled

    def _check_seq(self, rows: Sequence[TradeRow], recv_us: int, seq: Sequence[Any]) -> list[Resumed] | None:
        """`check` on ids given beside the rows; the same rules, a trade may span several ids."""
        if len(seq) != len(rows):  # a decoder bug: never stop the stream for it
            self.bad_ids += len(rows)
            return None
        last_id = self._last_id
        last_us = self._last_us
        settled: list[Resumed] | None = None
        for row, raw in zip(rows, seq, strict=True):
            symbol = row[2]
            try:
                if type(raw) is tuple:
                    n, top = int(raw[0]), int(raw[1])
                    if top < n:
                        raise ValueError(raw)
                else:
                    n = top = int(raw)
            except (TypeError, ValueError, IndexError):
                self.bad_ids += 1
                continue
            prev = last_id.get(symbol)
            if prev is not None and n == prev + 1:
                pass
            elif symbol in self._resuming:
                done = self._settle(symbol, n, row[0])
                settled = [done] if settled is None else [*settled, done]
            elif prev is None:
                pass
            elif n > prev:
                self._open(symbol, prev + 1, n - 1, last_us[symbol], row[0], recv_us)
            else:
                self._fill(symbol, n, row[0], min(top, prev))
                if top <= prev:
                    continue  # a late arrival never moves the last id back
                # a range reaching past the last id: its new ids follow on
            last_id[symbol] = top
            last_us[symbol] = row[0]
        return settled

    # -- the rare paths ----------------------------------------------------------------------

    def _open(self, symbol: str, first: int, last: int, after_us: int, before_us: int, recv_us: int) -> None:
        self.holes_seen += 1
        hole = IdHole(symbol, first, last, after_us, before_us, recv_us + self.grace_us)
        self._pending.setdefault(symbol, []).append(hole)

    def _fill(self, symbol: str, n: int, time_us: int, top: int | None = None) -> None:
        """Ids ``n..top`` (one trade; `top` None: just `n`) arrived late: cut them out of the
        pending holes they fall in."""
        holes = self._pending.get(symbol)
        if not holes:
            return  # an old trade outside every hole: a replay, nothing to account
        top = n if top is None else top
        kept: list[IdHole] = []
        for hole in holes:
            lo, hi = max(hole.first_missing, n), min(hole.last_missing, top)
            if lo > hi:
                kept.append(hole)
                continue
            self.ids_filled += hi - lo + 1
            if hole.first_missing < lo:
                kept.append(IdHole(symbol, hole.first_missing, lo - 1, hole.after_us, time_us, hole.due_us))
            if hi < hole.last_missing:
                kept.append(IdHole(symbol, hi + 1, hole.last_missing, time_us, hole.before_us, hole.due_us))
        if kept:
            self._pending[symbol] = kept
        else:
            del self._pending[symbol]

    def _settle(self, symbol: str, n: int, time_us: int) -> Resumed:
        done = self._resuming.pop(symbol)
        done.next_id = n
        done.next_us = time_us
        return done

    # -- called by the runner ----------------------------------------------------------------

    def prime(self, symbol: str, last_id: int, last_us: int) -> None:
        """The newest trade of `symbol` already stored (worker start), unless one is known."""
        if symbol not in self._last_id:
            self._last_id[symbol] = last_id
            self._last_us[symbol] = last_us

    def resume(self, symbol: str, since_us: int, resumed_us: int) -> list[IdHole]:
        """`symbol` listens again after not listening since `since_us`; returns its pending
        holes (they end now: their connection is gone)."""
        prev = self._resuming.get(symbol)
        last_id = self._last_id.pop(symbol, None)
        last_us = self._last_us.pop(symbol, None)
        if prev is not None:  # lost again before any trade arrived: one resume for both gaps
            since_us = min(since_us, prev.since_us)
            last_id, last_us = prev.last_id, prev.last_us
        # A resume handed out as quiet before was repaired only up to its own resume time: the
        # new one is handed out again if it stays quiet (not `handed_out`), from the same ids.
        self._resuming[symbol] = Resumed(
            symbol, since_us, resumed_us, resumed_us + self.grace_us, last_id, last_us
        )
        return self._pending.pop(symbol, [])

    def expire(self, now_us: int) -> tuple[list[IdHole], list[Resumed]]:
        """Holes whose grace ended (handed out once and forgotten), and resumes that saw no
        trade within the grace (handed out once; they stay until their first trade settles
        them, see the module docstring)."""
        holes: list[IdHole] = []
        for symbol in list(self._pending):
            kept: list[IdHole] = []
            for hole in self._pending[symbol]:
                (holes if hole.due_us <= now_us else kept).append(hole)
            if kept:
                self._pending[symbol] = kept
            else:
                del self._pending[symbol]
        quiet = [r for r in self._resuming.values() if r.due_us <= now_us and not r.handed_out]
        for r in quiet:
            # Its repair pages up to `resumed_us` only: whatever the exchange traded after that
            # should arrive live, and the next trade proves it did (or settles what did not).
            r.handed_out = True
        return holes, [replace(r) for r in quiet]

    def drain(self, symbol: str | None = None) -> list[IdHole]:
        """Every pending hole (of `symbol`, or of all symbols), grace or not: the stream stops,
        or the symbol is dropped, so no late arrival can fill them any more. They leave."""
        if symbol is not None:
            return self._pending.pop(symbol, [])
        holes = [hole for held in self._pending.values() for hole in held]
        self._pending.clear()
        return holes

    def forget(self, symbol: str) -> None:
        """`symbol` was unsubscribed: nothing about it stays (`drain` its holes first)."""
        self._last_id.pop(symbol, None)
        self._last_us.pop(symbol, None)
        self._pending.pop(symbol, None)
        self._resuming.pop(symbol, None)

    def last(self, symbol: str) -> tuple[int, int] | None:
        """(last id, its time) of `symbol`, if known."""
        n = self._last_id.get(symbol)
        return None if n is None else (n, self._last_us[symbol])

    def pending_holes(self) -> int:
        return sum(len(h) for h in self._pending.values())


@dataclass(frozen=True, slots=True)
class Missing:
    """A span of one symbol the stream did not record, for the repair scheduler.

    ``start_us..end_us`` (exchange time) with, where known, the first and last missing trade id
    (exact paging by id). `cause` is ``id_gap`` (ids skipped while listening), ``reconnect`` (a
    lost connection) or ``start`` (the worker was not running). `not_before_us` (receive clock):
    do not fetch earlier, so the live connection has delivered what it will of the span.
    `whole`: the ids around the gap prove nothing is missing (journal it repaired, fetch nothing).
    """

    symbol: str
    start_us: int
    end_us: int
    cause: str
    first_id: int | None = None
    last_id: int | None = None
    not_before_us: int = 0
    whole: bool = False
