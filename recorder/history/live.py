"""The worker's live repair: every span a stream did not record is fetched from REST history
as soon as it closes (issue 10 §2).

One `LiveRepair` per worker process: one HTTP client, one `Budgets` (one `RateBudget` per
exchange, ``1 − RateRule.reserve`` = half its per-IP limit; a worker records whole
exchanges, and extraction-time repairs draw on their own quarter, see ``budget.py``), a queue
of `Missing` spans from the runners (``recorder/stream/continuity.py``) and
a few repair tasks. It never touches a live connection: REST only, in its own tasks; the store
writes run in a thread (``repair.repair`` does that).

The queue holds at most one entry per (stream, symbol): a span arriving for a symbol already
queued is merged into that entry (the union of both spans; ids kept only when both are by
id), so its length is bounded by the number of subscribed symbols however often a connection
flaps. Entries run in arrival order, each not before its `not_before_us`.

Writes go through ``segments.repair.write_repaired`` after flushing the stream's live writer
(`SegmentWriter.flush`): rows still queued for the disk are then visible to its
de-duplication, so a trade both received live and fetched is stored once. Before each write
the fetched rows pass the stream's live de-duplicator (`admit`, on the event loop): what the
connection already delivered is dropped there, and the rest is remembered, so a copy the
connection delivers only later (Phemex's snapshot of recent trades after a resubscribe, a
late push) is dropped as a duplicate instead of being stored twice.

``repair.live: false``: nothing is fetched; every span is journaled ``unrepaired`` with reason
``disabled`` (so coverage says why the span is missing). A stream whose configuration has no
history (`history_spec` None) journals ``no_history``. Spans the ids prove whole are journaled
``repaired`` with 0 trades and ``via: "trade ids"`` and cost no call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.history.pager import NO_HISTORY
from pumpwatch.recorder.history.repair import make_client, repair
from pumpwatch.recorder.history.spec import HistorySpec
from pumpwatch.recorder.history.specs import Budgets
from pumpwatch.recorder.stream.continuity import Missing

log = logging.getLogger(__name__)

DISABLED = "disabled"
VIA_IDS = "trade ids"  # `via` of a span the ids around it prove whole
CONCURRENCY = 2  # repairs running at once per worker (they share the exchange's budget anyway)


@dataclass
class RepairStats:
    """Counters of one stream's live repairs (status line, metrics, ``stats`` journal events)."""

    repairs: int = 0  # spans repaired (fetched and journaled), whole or not
    trades: int = 0  # trades written from REST
    calls: int = 0  # REST requests sent
    rate_limited: int = 0  # of which answered 429 / a ban status (each one a wait, then a retry)
    unrepaired: int = 0  # spans (or parts) journaled unrepaired
    failed: int = 0  # repairs that ended in a store fault (logged; nothing journaled)
    queued: int = 0  # spans waiting now
    running: int = 0  # repairs in progress now

    def snapshot(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Stream:
    spec: HistorySpec | None
    instruments: Mapping[str, Instrument]
    write: Callable[[list[Any], int], int]
    journal: Any  # EventJournal (record(event, **fields))
    admit: Callable[[list[Any]], list[Any]] | None = None  # the runner's de-duplicator
    stats: RepairStats = field(default_factory=RepairStats)


class LiveRepair:
    """Per-worker repair scheduler (see the module docstring)."""

    def __init__(
        self,
        *,
        enabled: bool = True,
        concurrency: int = CONCURRENCY,
        client_factory: Callable[[], httpx.AsyncClient] = make_client,
        clock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
        retry_delay_s: float = 1.0,
    ) -> None:
        self.enabled = enabled
        self.concurrency = concurrency
        self._client_factory = client_factory
        self._clock_us = clock_us
        self._retry_delay_s = retry_delay_s
        self.budgets = Budgets()
        self._streams: dict[str, _Stream] = {}
        self._queue: dict[tuple[str, str], Missing] = {}  # insertion order = arrival order
        self._wake = asyncio.Event()

    def add_stream(
        self,
        stream: str,
        spec: HistorySpec | None,
        instruments: Mapping[str, Instrument],
        write: Callable[[list[Any], int], int],
        journal: Any,
        admit: Callable[[list[Any]], list[Any]] | None = None,
    ) -> RepairStats:
        """Register a stream: its history (None: none), the instruments its spans name (read
        when a repair starts), `write(rows, recv_us) -> rows written`, its journal and `admit`
        (`repair.Admit`: the live de-duplicator's filter, so live and fetched copies of a trade
        are stored once whichever comes first)."""
        entry = _Stream(spec, instruments, write, journal, admit)
        self._streams[stream] = entry
        return entry.stats

    def stats(self, stream: str) -> RepairStats:
        return self._streams[stream].stats

    # -- intake (the runner's on_missing, on the event loop) ---------------------------------------

    def submit(self, stream: str, span: Missing) -> None:
        """Queue `span` of `stream` (merged with a queued span of the same symbol)."""
        target = self._streams[stream]
        inst = target.instruments.get(span.symbol)
        base = inst.base if inst is not None else ""
        if span.whole:
            self._journal(
                target, "repaired", span.symbol, base, span.start_us, span.end_us, trades=0, via=VIA_IDS
            )
            return
        if not self.enabled or target.spec is None:
            reason = DISABLED if not self.enabled else NO_HISTORY
            self._journal(target, "unrepaired", span.symbol, base, span.start_us, span.end_us, reason=reason)
            target.stats.unrepaired += 1
            return
        key = (stream, span.symbol)
        queued = self._queue.get(key)
        self._queue[key] = span if queued is None else _merge(queued, span)
        target.stats.queued = sum(1 for s, _ in self._queue if s == stream)
        self._wake.set()

    def queue_length(self) -> int:
        return len(self._queue)

    # -- the repair tasks -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Repair queued spans until `stop`; a repair in progress is cancelled at stop (what
        it wrote stays; its span is simply not journaled)."""
        async with self._client_factory() as client:
            tasks = [
                asyncio.create_task(self._work(client, stop), name=f"live repair {i}")
                for i in range(self.concurrency)
            ]
            await stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _next(self) -> tuple[str, Missing] | float:
        """The first queued span that may start now, else seconds until one may (or 1.0)."""
        now_us = self._clock_us()
        wait_us = 1_000_000
        for key, span in self._queue.items():
            if span.not_before_us <= now_us:
                del self._queue[key]
                return key[0], span
            wait_us = min(wait_us, span.not_before_us - now_us)
        return wait_us / 1e6

    async def _work(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            got = self._next()
            if isinstance(got, float):
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), got)
                continue
            stream, span = got
            target = self._streams[stream]
            target.stats.queued = sum(1 for s, _ in self._queue if s == stream)
            target.stats.running += 1
            try:
                await self._repair(client, stream, target, span)
            except asyncio.CancelledError:
                raise
            except Exception:
                target.stats.failed += 1
                log.exception("%s %s: live repair failed", stream, span.symbol)
            finally:
                target.stats.running -= 1

    async def _repair(self, client: httpx.AsyncClient, stream: str, target: _Stream, span: Missing) -> None:
        spec = target.spec
        assert spec is not None
        start_us, end_us = span.start_us, max(span.end_us, span.start_us)
        result = await repair(
            client,
            spec,
            self.budgets.for_spec(spec),
            stream,
            span.symbol,
            start_us,
            end_us,
            instruments=target.instruments,
            write=target.write,
            journal=lambda event, fields: target.journal.record(event, **fields),
            admit=target.admit,
            first_id=span.first_id,
            last_id=span.last_id,
            now_us=self._clock_us,
            retry_delay_s=self._retry_delay_s,
        )
        st = target.stats
        st.repairs += 1
        st.trades += result.written
        st.calls += result.calls
        st.rate_limited += result.rate_limited
        st.unrepaired += len(result.unrepaired)
        log.info(
            "%s %s: %s gap repaired: %d trades written (%d fetched), %d calls%s",
            stream,
            span.symbol,
            span.cause,
            result.written,
            result.fetched,
            result.calls,
            "" if result.complete else f", still missing: {[m[2] for m in result.unrepaired]}",
        )

    @staticmethod
    def _journal(
        target: _Stream, event: str, symbol: str, base: str, start_us: int, end_us: int, **extra: Any
    ) -> None:
        target.journal.record(
            event, symbol=symbol, base=base, start_us=start_us, end_us=max(end_us, start_us), **extra
        )


def _merge(a: Missing, b: Missing) -> Missing:
    """One span covering both; paged by id only when both are (the union of their ids)."""
    by_id = a.first_id is not None and b.first_id is not None
    return Missing(
        a.symbol,
        min(a.start_us, b.start_us),
        max(a.end_us, b.end_us),
        a.cause if b.cause in a.cause.split("+") else f"{a.cause}+{b.cause}",
        first_id=min(a.first_id, b.first_id) if by_id else None,
        last_id=max(a.last_id, b.last_id) if a.last_id is not None and b.last_id is not None else None,
        not_before_us=max(a.not_before_us, b.not_before_us),
    )


def store_writer(data_dir: str | Path, stream: str, live_writer: Any) -> Callable[[list[Any], int], int]:
    """`write(rows, recv_us)` for `repair`: flush the live writer (its queued rows become
    visible to the de-duplication), then store the rows the store lacks; rows written."""
    from pumpwatch.segments.repair import write_repaired

    def write(rows: list[Any], recv_us: int) -> int:
        live_writer.flush()
        return write_repaired(data_dir, stream, rows, recv_us=recv_us).written

    return write
