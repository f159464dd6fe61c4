"""Repair one symbol's gap from its stream's REST history: fetch, write, journal.

`repair` is what the worker calls as soon as a gap closes and what extraction calls for a gap
still open inside its window. It knows no exchange: the `HistorySpec` says how to page, the
`RateBudget` (one per exchange) how fast, `write` stores the rows (bound by the caller to the
store's de-duplicating ``segments.repair.write_repaired``) and `journal` records the outcome
as the ``repaired`` / ``unrepaired`` events of the stream's journal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from pumpwatch.recorder.adapter import Instruments
from pumpwatch.recorder.history.budget import RateBudget
from pumpwatch.recorder.history.pager import BEYOND_REACH, MissingSpan, Pager, Span
from pumpwatch.recorder.history.spec import HistorySpec

if TYPE_CHECKING:
    from pumpwatch.segments.schema import TradeRow

log = logging.getLogger(__name__)

# A gap this close to an endpoint's reach is treated as beyond it: the exchange's cut-off is
# not exact to the second, and a span half-served would be journaled `repaired` wrongly.
REACH_MARGIN_US = 3_600_000_000
FLUSH_ROWS = 50_000  # rows handed to `write` at once (bounds memory on long repairs)
# Which fetched rows pass `admit` (the live de-duplicator): only those within ADMIT_WINDOW_US
# of the span's end, and of those at most the newest ADMIT_MAX_ROWS. A copy the connection
# delivers after the repair can only be of a trade near the gap's end (a late push, a
# rotation's overlap, Phemex's replay of its last 200); older rows need no remembering, and
# the store's own de-duplication in `write` drops those the connection already delivered.
# Handing the de-duplicator a whole long repair (it keeps at most MAX_KEYS = 100,000 keys per
# symbol and evicts the oldest-arrived first) pushed out the keys of the trades just received
# live, so their second copies (redundant connections, a rotation) were stored twice.
ADMIT_WINDOW_US = 60_000_000
ADMIT_MAX_ROWS = 10_000

# write(rows, recv_us) -> rows actually written (the store drops rows it already holds).
Write = Callable[["list[TradeRow]", int], int]
# admit(rows) -> the rows to store, on the event loop before each write: the live
# de-duplicator's `filter` in a worker, so a fetched trade the connection already delivered is
# not written again, and one it delivers later (a replay after a resubscribe, a late push) is
# dropped there as a duplicate instead of being stored a second time. Only the rows near the
# span's end go through it (ADMIT_WINDOW_US, ADMIT_MAX_ROWS).
Admit = Callable[["list[TradeRow]"], "list[TradeRow]"]
# journal(event, fields): "repaired" or "unrepaired" with the fields of the design.
Journal = Callable[[str, Mapping[str, Any]], None]


async def _write(write: Write, admit: Admit | None, rows: list[TradeRow], recv_us: int) -> int:
    if admit is not None:
        rows = admit(rows)
        if not rows:
            return 0
    return await asyncio.to_thread(write, rows, recv_us)


def _split_newest(rows: list[TradeRow], n: int) -> tuple[list[TradeRow], list[TradeRow]]:
    """(the others, the newest `n` by trade time) of `rows`, each oldest first."""
    ordered = sorted(rows, key=lambda row: row[0])
    cut = max(len(ordered) - n, 0)
    return ordered[:cut], ordered[cut:]


def wall_clock_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class RepairResult:
    """What one `repair` did: the spans now whole, the spans still missing (with reasons)."""

    stream: str
    symbol: str
    base: str
    start_us: int
    end_us: int
    fetched: int  # trades of the span the exchange returned
    written: int  # of which new to the store
    calls: int  # HTTP requests sent
    rate_limited: int  # of which answered 429 / a ban status
    repaired: tuple[Span, ...]
    unrepaired: tuple[MissingSpan, ...]

    @property
    def complete(self) -> bool:
        """Every trade of the span that the exchange still offers is stored."""
        return not self.unrepaired


def make_client(timeout_s: float = 15.0) -> httpx.AsyncClient:
    """The HTTP client for history calls: no proxy or netrc from the environment."""
    return httpx.AsyncClient(trust_env=False, timeout=timeout_s, follow_redirects=False)


async def repair(
    client: httpx.AsyncClient,
    spec: HistorySpec,
    budget: RateBudget,
    stream: str,
    symbol: str,
    start_us: int,
    end_us: int,
    *,
    instruments: Instruments,
    write: Write,
    journal: Journal,
    admit: Admit | None = None,
    first_id: int | None = None,
    last_id: int | None = None,
    now_us: Callable[[], int] = wall_clock_us,
    deadline_s: float | None = None,
    retries: int = 3,
    retry_delay_s: float = 1.0,
    flush_rows: int = FLUSH_ROWS,
) -> RepairResult:
    """Fetch every trade of `symbol` with ``start_us <= time <= end_us`` the exchange still has,
    store the new ones through `write` and journal the outcome.

    `first_id`/`last_id` (an id hole: the first and last missing id) make by-id paging exact;
    kinds that do not page by id use the span alone. Parts older than the endpoint's reach are
    `beyond_reach`; a latest-only endpoint leaves what its answer does not reach `no_history`.
    The call waits for `budget` as long as it takes; only with `deadline_s` (seconds from now)
    can it give up, and then what is left is `rate_limited`. An error answer ends it with
    ``exchange_error: <detail>`` for the part not yet paged. `write` runs in a worker thread
    (it does disk I/O); a store fault it raises propagates and nothing is journaled. `admit`
    (see `Admit`) runs on the event loop before the write of the rows near the span's end.
    """
    if stream != spec.stream:
        raise ValueError(f"history spec of {spec.stream} used for {stream}")
    if end_us < start_us:
        raise ValueError(f"empty span {start_us}..{end_us}")
    inst = instruments.get(symbol)
    if inst is None:
        raise ValueError(f"{stream}: unknown instrument {symbol!r}")
    missing: list[MissingSpan] = []
    lo = start_us
    if spec.reach_us is not None:
        reach_start = now_us() - spec.reach_us + REACH_MARGIN_US
        if start_us < reach_start:
            missing.append((start_us, min(end_us, reach_start - 1), BEYOND_REACH))
            lo = reach_start
            first_id = None  # the id hole starts beyond reach: locate the reachable part by time
    fetched = written = 0
    covered: list[Span] = []
    pager = None
    if lo <= end_us:
        deadline = None if deadline_s is None else budget.clock() + deadline_s
        pager = Pager(
            client,
            spec,
            budget,
            symbol,
            lo,
            end_us,
            instruments=instruments,
            first_id=first_id,
            last_id=last_id,
            clock_us=now_us,
            deadline=deadline,
            retries=retries,
            retry_delay_s=retry_delay_s,
        )
        pending: list[TradeRow] = []  # written as they come, without `admit`
        recent: list[TradeRow] = []  # near the span's end: through `admit`, at the end
        admit_from_us = end_us - ADMIT_WINDOW_US
        async for rows in pager.pages():
            fetched += len(rows)
            if admit is None:
                pending.extend(rows)
            else:
                for row in rows:
                    (recent if row[0] >= admit_from_us else pending).append(row)
                if len(recent) > 2 * ADMIT_MAX_ROWS:  # bounded: the older ones skip `admit`
                    older, recent = _split_newest(recent, ADMIT_MAX_ROWS)
                    pending.extend(older)
            if len(pending) >= flush_rows:
                written += await _write(write, None, pending, pager.recv_us)
                pending = []
        if recent:
            older, recent = _split_newest(recent, ADMIT_MAX_ROWS)
            pending.extend(older)
        if pending:
            written += await _write(write, None, pending, pager.recv_us)
        if recent:
            written += await _write(write, admit, recent, pager.recv_us)
        missing.extend(pager.missing)
        covered = pager.covered
    missing.sort()
    for i, (span_lo, span_hi) in enumerate(covered):
        journal(
            "repaired",
            {
                "symbol": symbol,
                "base": inst.base,
                "start_us": span_lo,
                "end_us": span_hi,
                "trades": written if i == 0 else 0,
                "via": spec.via,
            },
        )
    for span_lo, span_hi, reason in missing:
        journal(
            "unrepaired",
            {"symbol": symbol, "base": inst.base, "start_us": span_lo, "end_us": span_hi, "reason": reason},
        )
    result = RepairResult(
        stream=stream,
        symbol=symbol,
        base=inst.base,
        start_us=start_us,
        end_us=end_us,
        fetched=fetched,
        written=written,
        calls=pager.calls if pager else 0,
        rate_limited=pager.rate_limited if pager else 0,
        repaired=tuple(covered),
        unrepaired=tuple(missing),
    )
    log.info(
        "%s %s: repair %d..%d: %d fetched, %d written, %d calls, %s",
        stream,
        symbol,
        start_us,
        end_us,
        fetched,
        written,
        result.calls,
        "complete" if result.complete else f"unrepaired {[m[2] for m in missing]}",
    )
    return result
