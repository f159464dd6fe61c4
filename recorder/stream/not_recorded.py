"""Nothing silent (DESIGN §12, issue 12 §3): which wanted symbols of a stream are not receiving,
and why, in `stats.not_recorded`, the journal and the log within one health interval.

A symbol is not recorded when the exchange refused it (``rejected: <its reason> (next retry
<UTC time>)``: it is asked again, see ``runner.py``), when it does
not fit the stream's capacity (``over_capacity: …``: beyond the connections × symbols the
exchange allows, or on a connection the exchange refused while the stream's others are open),
when its connection has been down for a whole interval (``not_connected: …``), or when frames
arrive but every one of them fails to parse (``unparsable: …``, all subscribed symbols). A
counter alone never says which symbols; this does.

Each change is logged (a warning naming the reasons and a few symbols each; again every
`REMIND_S` while anything is missing) and journaled as a ``not_recorded`` event holding the whole
map (``pumpwatch status`` shows the last one); symbols newly over capacity are also journaled as
``rejected`` with the reason ``over_capacity: …``. A change of a refused symbol's next retry time
alone is no state change: never logged, and journaled at most every `REMIND_S`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import TYPE_CHECKING

from pumpwatch.recorder.stream.aio import wait_flags

if TYPE_CHECKING:
    from pumpwatch.recorder.stream.runner import StreamRunner

log = logging.getLogger(__name__)

REMIND_S = 600.0  # while symbols are missing, the warning is repeated this often
KINDS = ("rejected", "over_capacity", "not_connected", "unparsable")  # the reason prefixes


RETRY_MARK = " (next retry "  # a refused symbol's reason ends with " (next retry <UTC time>)"


def _utc(us: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(us / 1_000_000))


def _without_retry(reasons: dict[str, str]) -> dict[str, str]:
    return {s: r.split(RETRY_MARK, 1)[0] for s, r in reasons.items()}


def kind_of(reason: str) -> str:
    """The reason's kind (its prefix before ``:``), one of `KINDS`."""
    return reason.split(":", 1)[0]


class NotRecorded:
    """Recomputes a runner's not-recorded map every `interval_s` and reports changes."""

    def __init__(self, runner: StreamRunner, interval_s: float) -> None:
        self._runner = runner
        self.interval_s = interval_s
        self.current: dict[str, str] = {}
        self._counts = (0, 0, 0)  # frames, frames failing to parse, trades (incl. duplicates)
        self._logged_s = 0.0
        self._journaled: dict[str, str] = {}  # the map as last journaled
        self._journaled_s = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await wait_flags(stop, None, self.interval_s)
            if stop.is_set():
                return
            try:
                self.tick()
            except Exception:  # reporting must never take the stream down
                log.exception("%s: not-recorded check failed", self._runner.stream)

    def tick(self) -> None:
        """One check: recompute, publish in stats, report a change (or remind)."""
        now = self.compute()
        r = self._runner
        r._stats.not_recorded = now
        previous, self.current = self.current, now
        # A state change is journaled and logged at once. A refused symbol's new retry time
        # alone is journaled at most every REMIND_S (`status` shows the next retry as of the
        # last journaled map), so retries cost no journal line each, and it is never logged.
        moved = _without_retry(now) != _without_retry(self._journaled)
        due = now != self._journaled and time.monotonic() - self._journaled_s >= REMIND_S
        if moved or due:
            self._journal(previous, now)
            self._journaled, self._journaled_s = now, time.monotonic()
        if _without_retry(now) != _without_retry(previous) or (
            now and time.monotonic() - self._logged_s >= REMIND_S
        ):
            self._log(now)

    def compute(self) -> dict[str, str]:
        r = self._runner
        table = r._table
        st = r._stats
        out: dict[str, str] = {}
        retry_at = st.rejected_retry_at_us
        for symbol, reason in st.rejected.items():
            if symbol in r._wanted:
                at_us = retry_at.get(symbol)
                out[symbol] = f"rejected: {reason}" + ("" if at_us is None else f"{RETRY_MARK}{_utc(at_us)})")
        limit = f"{table.max_slots} connections x {table.per_slot} symbols"
        for symbol in table.over_capacity:
            out.setdefault(symbol, f"over_capacity: beyond {limit}")
        now_s = time.monotonic()
        open_conns = sum(1 for s in table.slots if s.active is not None)
        subscribed: set[str] = set()
        for group in table.groups:
            symbols = group[0].symbols
            actives = [s.active for s in group if s.active is not None]
            for conn in actives:
                subscribed |= conn.subscribed
            if actives or not symbols:
                continue
            refused = next((s for s in group if s.capacity_refused), None)
            if refused is not None:
                reason = f"over_capacity: connection refused with {open_conns} open ({refused.refused})"
            else:
                slot = group[0]
                since = slot.down_since_s
                if since is None or now_s - since < self.interval_s:
                    continue  # still opening, or down for less than an interval: a reconnect
                reason = f"not_connected: {slot.refused or 'connecting'}"
            for symbol in symbols:
                out.setdefault(symbol, reason)
        # A stream whose frames arrive but none parses records nothing, whatever it subscribed.
        bad = st.parse_errors + st.decode_bugs
        counts = (st.frames, bad, st.trades + r.dedupe.duplicates)
        d_frames, d_bad, d_good = (a - b for a, b in zip(counts, self._counts, strict=True))
        self._counts = counts
        if d_frames > 0 and d_bad > 0 and d_good == 0:
            reason = f"unparsable: every frame failed to parse ({d_bad} in {self.interval_s:g} s)"
            for symbol in subscribed:
                out.setdefault(symbol, reason)
        return out

    def _journal(self, previous: dict[str, str], now: dict[str, str]) -> None:
        journal = self._runner.journal
        record = getattr(journal, "record", None)
        if record is not None:
            record("not_recorded", symbols=dict(sorted(now.items())))
        newly: dict[str, list[str]] = defaultdict(list)
        for symbol, reason in now.items():
            if kind_of(reason) == "over_capacity" and previous.get(symbol) != reason:
                newly[reason].append(symbol)
        for reason, symbols in newly.items():
            journal.rejected(None, sorted(symbols), reason)

    def _log(self, now: dict[str, str]) -> None:
        self._logged_s = time.monotonic()
        r = self._runner
        if not now:
            r._log.info("every wanted symbol is recorded again")
            return
        by_reason: dict[str, list[str]] = defaultdict(list)
        for symbol, reason in sorted(now.items()):
            by_reason[reason].append(symbol)
        parts = [
            f"{len(syms)} {reason} ({', '.join(syms[:5])}{', …' if len(syms) > 5 else ''})"
            for reason, syms in sorted(by_reason.items(), key=lambda kv: -len(kv[1]))
        ]
        r._log.warning("%d of %d symbols not recorded: %s", len(now), len(r._wanted), "; ".join(parts))
