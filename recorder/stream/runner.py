"""The one connection runner shared by all twelve streams (STYLE.md: no exchange name in here).

A `StreamRunner` keeps a stream's symbols subscribed, all the time:

- Symbols are spread over *slots* of at most ``adapter.max_symbols_per_connection`` each (at most
  ``adapter.max_connections`` slots); symbols beyond that capacity are reported in
  ``stats.over_capacity``, never silently dropped. Each slot holds one serving connection.
- A slot whose connection is lost reconnects with capped, jittered exponential backoff and
  subscribes everything again; the backoff resets once a connection stayed healthy.
- Before the exchange's lifetime cap, or when the server announces a close, the slot opens the
  replacement and subscribes it fully *before* it closes the old one (make-before-break); the
  overlap is removed by the `Deduper`, so a planned rotation loses and repeats nothing.
- A symbol the exchange refuses stays wanted: it is asked again after a capped backoff
  (``reject_retry_initial_s`` doubling up to ``reject_retry_max_s``) and at once whenever a
  connection of the stream reconnects; until one attempt is acked it shows as ``rejected`` (with
  its next retry) in `stats` and ``not_recorded``. The refusal is journaled and logged once,
  when the symbol turns refused, not at every retry (a refusal can be transient: an exchange
  under load, a gateway that does not know a just-announced instrument yet).
- Every connect, subscribe, rejection, unsubscribe, disconnect and gap goes to the journal at
  the moment it happens; logs say state changes only, each line with stream and connection id
  (bound by `StreamLog`, never typed into the message).
- With ``redundancy=2`` every group of symbols has two standing connections (the second through
  `redundant_ws_url` when the exchange documents another endpoint); the `Deduper` merges them,
  so either may die without a gap.
- Completeness (issue 10): a symbol that listens again after it was not (a lost connection, the
  worker's start) is reported to `on_missing` as a `Missing` span, and with `contiguous_ids`
  holes in trade ids while listening are journaled ``id_gap`` and reported too
  (``recorder/stream/continuity.py``). The repair itself is the caller's (REST, its own task).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pumpwatch.recorder.adapter import Adapter, Instrument
from pumpwatch.recorder.stream.aio import wait_flags
from pumpwatch.recorder.stream.backoff import Backoff
from pumpwatch.recorder.stream.connection import RATE_LIMIT_DEFAULT_WAIT_S, ConnectFailed, Connection
from pumpwatch.recorder.stream.continuity import IdContinuity, IdHole, Missing, Resumed
from pumpwatch.recorder.stream.dedupe import Deduper, keep_trades_for
from pumpwatch.recorder.stream.endpoints import redundant_ws_url_for
from pumpwatch.recorder.stream.ingest import FrameIngest
from pumpwatch.recorder.stream.journal import Journal, NullJournal
from pumpwatch.recorder.stream.logcontext import StreamLog
from pumpwatch.recorder.stream.not_recorded import NotRecorded
from pumpwatch.recorder.stream.slots import Slot, SlotTable
from pumpwatch.recorder.stream.stats import RunnerStats
from pumpwatch.segments.schema import TradeRow

log = logging.getLogger(__name__)

# A lost connection's symbols are missing from this long before its last received byte: trades
# the exchange had sent but we never read carry exchange times a little before it.
LOST_MARGIN_US = 5_000_000
# A span repaired by time (or latest) is fetched this long after it closed, so the live
# connection has delivered every trade of the span it will deliver (no REST copy of them).
SETTLE_US = 2_000_000
# ... and it reaches this far past the moment the symbol listened again: a trade sent while we
# were not listening can carry an exchange time a little after our clock's resume time (clock
# skew, the exchange's own stamping). Live trades in that stretch are stored by the time the
# span is fetched (it is shorter than SETTLE_US), so the repair drops them as duplicates.
RESUMED_MARGIN_US = 1_000_000
WATCH_INTERVAL_S = 0.25  # how often pending id holes and quiet resumes are checked
# A quiet resume already repaired up to its resume time: when its first trade settles it, ids
# up to this many are paged again by id (one page anywhere); more, and only the part after the
# resume is paged, located by time (a long downtime is not fetched twice).
REFETCH_IDS = 100
# A handshake answered with these while connections of the stream are open may be the
# exchange's connection limit (learn_capacity): learned once it repeats at the same number of
# open groups, and withdrawn when a handshake beyond it is accepted (the refused slot knocks
# again every `capacity_retry_s`). Any other status (a 502/503 of a gateway blip) is an
# ordinary failure with its ordinary backoff.
CAP_STATUSES = frozenset((403, 429))
CAP_REPEATS = 2
HEALTH_INTERVAL_S = 10.0  # how often the symbols not recorded are recomputed (not_recorded.py)
# A refused symbol is asked again after this long, doubling per refusal up to the maximum.
REJECT_RETRY_INITIAL_S = 30.0
REJECT_RETRY_MAX_S = 600.0


@dataclass(slots=True)
class Refusal:
    """A wanted symbol the exchange refused; it is asked again at `due_s` (monotonic)."""

    reason: str
    refusals: int  # refusals in a row (the first one included)
    delay_s: float  # the wait before the next attempt
    due_s: float
    in_flight: bool = False  # placed in a slot again: its subscribe is being asked


class StreamRunner:
    """Record one stream: connect, subscribe, keep alive, rotate, reconnect, until `stop()`."""

    def __init__(
        self,
        adapter: Adapter,
        *,
        ws_url: str,
        rest_url: str,
        instruments: Mapping[str, Instrument],
        on_trades: Callable[[list[TradeRow]], None],
        on_frame: Callable[[int, bytes | str], None] | None = None,
        journal: Journal | Any | None = None,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
        clock: Callable[[], int] = time.time_ns,
        healthy_after_s: float = 60.0,
        open_timeout_s: float = 10.0,
        ack_timeout_s: float = 10.0,
        rng: Callable[[], float] = random.random,
        redundancy: int = 1,
        redundant_ws_url: str | None = None,
        contiguous_ids: bool = False,
        id_grace_s: float = 2.0,
        on_missing: Callable[[Missing], None] | None = None,
        not_listening_since_us: int | None = None,
        capacity_retry_s: float = 300.0,
        health_interval_s: float | None = None,
        rate_limit_wait_s: Mapping[int, float] = RATE_LIMIT_DEFAULT_WAIT_S,
        reject_retry_initial_s: float | None = None,
        reject_retry_max_s: float | None = None,
    ) -> None:
        self.adapter = adapter
        self.stream = adapter.stream
        self._log = StreamLog(log, adapter.stream)
        self.ws_url = ws_url
        self.rest_url = rest_url
        self._on_trades = on_trades
        self._on_frame = on_frame
        self.journal: Any = journal if journal is not None else NullJournal()
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._clock = clock
        self.healthy_after_s = healthy_after_s
        self.open_timeout_s = open_timeout_s
        self.ack_timeout_s = ack_timeout_s
        self._rng = rng
        self._stats = RunnerStats()
        # Keys kept per symbol: the exchange's replay after a subscribe plus a margin (Phemex),
        # else a small floor; the 10 s time window covers rotation overlaps on every stream.
        self.dedupe = Deduper(adapter.dedupe_key, keep_trades=keep_trades_for(adapter.replay_trades))
        self._known: dict[str, Instrument] = {}  # every instrument ever wanted: late frames still parse
        # the second connection's endpoint: given, else the exchange's other documented one when
        # `ws_url` is a documented one (never away from a local or private URL), else `ws_url`
        self.redundant_ws_url = redundant_ws_url or redundant_ws_url_for(adapter.stream, ws_url) or ws_url
        self._on_missing = on_missing
        # Trade-id continuity: only where ids count up by one per trade and symbol.
        self.ids = IdContinuity(int(id_grace_s * 1_000_000)) if contiguous_ids else None
        self._down_since: dict[str, int] = {}  # symbol -> receive time (µs) it stopped listening
        self._first_since_us = not_listening_since_us  # the worker was not running since then
        self._ingest = FrameIngest(
            adapter,
            self._stats,
            self.dedupe,
            self._known,
            on_trades,
            on_frame,
            ids=self.ids,
            on_resumed=self._resumes_settled,
        )
        self._wanted: dict[str, Instrument] = {}
        self._table = SlotTable(adapter, self._stats.over_capacity, replicas=redundancy)
        self._slots = self._table.slots  # the same list, grown in place
        self._backoffs: dict[str, Backoff] = {}  # by slot name
        self._stop = asyncio.Event()
        self._running = False
        self._gap_open = False
        self._journaled: set[Connection] = set()  # connections whose `connected` was journaled
        self._group_of: dict[Connection, int] = {}  # open connection -> its slot group's index
        self._background: set[asyncio.Task[None]] = set()
        # Capacity (issue 12): a handshake refused with 429/418 holds every new connection of the
        # stream until then (monotonic s); a slot refused for the connection limit retries after
        # `capacity_retry_s`; `_health` reports what is not recorded.
        self.capacity_retry_s = capacity_retry_s
        self.rate_limit_wait_s = dict(rate_limit_wait_s)
        self._hold_until_s = 0.0
        self._cap_evidence: dict[int, int] = {}  # groups open -> handshakes refused for a limit at it
        interval_s = HEALTH_INTERVAL_S if health_interval_s is None else health_interval_s
        self._health = NotRecorded(self, interval_s)
        # Refused symbols (still wanted): asked again with a capped backoff and at reconnects.
        initial_s = REJECT_RETRY_INITIAL_S if reject_retry_initial_s is None else reject_retry_initial_s
        max_s = REJECT_RETRY_MAX_S if reject_retry_max_s is None else reject_retry_max_s
        self.reject_retry_initial_s = initial_s
        self.reject_retry_max_s = max(max_s, initial_s)
        self._refused: dict[str, Refusal] = {}
        self._retry_wake = asyncio.Event()
        self.update_instruments(instruments)
        if not_listening_since_us is not None:
            self._down_since.update(dict.fromkeys(self._wanted, not_listening_since_us))

    # -- public API ------------------------------------------------------------------------

    @property
    def stats(self) -> RunnerStats:
        """Live counters (derived ones refreshed on read)."""
        st = self._stats
        subscribed = 0
        pending = 0
        for group in self._table.groups:
            acked: set[str] = set()
            for slot in group:
                if slot.active is not None:
                    acked |= slot.active.subscribed
            subscribed += len(acked)
            pending += len(group[0].symbols - acked)
        st.subscribed_symbols = subscribed
        st.pending_subscriptions = pending
        st.duplicates = self.dedupe.duplicates
        return st

    @property
    def known_instruments(self) -> Mapping[str, Instrument]:
        """Every instrument ever wanted (a late frame or a repair may still name a dropped one)."""
        return self._known

    @property
    def instruments(self) -> Mapping[str, Instrument]:
        """The instruments wanted now (rejected and over-capacity ones included)."""
        return self._wanted

    @property
    def refused(self) -> Mapping[str, Refusal]:
        """Wanted symbols the exchange refused, with their retry state (until one is acked)."""
        return self._refused

    def update_instruments(self, instruments: Mapping[str, Instrument]) -> None:
        """Subscribe added symbols and unsubscribe dropped ones on the live connections.

        Nothing reconnects. A symbol the exchange refused stays wanted and is asked again
        (see the module docstring) until it is acked or dropped from the list.
        """
        new = dict(instruments)
        self._known.update(new)
        removed = self._wanted.keys() - new.keys()
        added = sorted(new.keys() - self._wanted.keys())
        self._wanted = new
        st = self._stats
        for symbol in removed:
            if self.ids is not None:
                # Its holes still in their grace can no longer be filled: journaled, repaired.
                for hole in self.ids.drain(symbol):
                    self._report_hole(hole, repair=not self._stop.is_set())
            st.rejected.pop(symbol, None)
            st.rejected_retry_at_us.pop(symbol, None)
            self._refused.pop(symbol, None)
            self._table.remove(symbol)
            self.dedupe.forget(symbol)
            self._down_since.pop(symbol, None)
            if self.ids is not None:
                self.ids.forget(symbol)
        created = [slot for symbol in added for slot in self._table.assign(symbol)]
        created += self._table.fill_free_capacity()
        if self._running:
            for slot in created:
                self._start_slot(slot)

    async def run(self) -> None:
        """Run until `stop()`; never returns on its own and never raises a network error."""
        self._running = True
        self._log.info("starting with %d symbols", len(self._wanted))
        for slot in self._slots:
            self._start_slot(slot)
        watches = [
            asyncio.create_task(self._health.run(self._stop), name=f"{self.stream} not recorded"),
            asyncio.create_task(self._retry_refused(), name=f"{self.stream} refused retries"),
        ]
        if self.ids is not None:
            watches.append(asyncio.create_task(self._watch_ids(), name=f"{self.stream} id continuity"))
        await self._stop.wait()
        for watch in watches:
            watch.cancel()
        await asyncio.gather(*watches, return_exceptions=True)
        tasks = [s.task for s in self._slots if s.task is not None and not s.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            # Each slot also returns on its own at the stop flag: a cancel lost to Python 3.11's
            # wait_for (the awaited thing finished in the same loop turn) cannot keep it running.
            await asyncio.wait(tasks)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                self._log.error("slot task failed", exc_info=task.exception())
        conns = [s.active for s in self._slots if s.active is not None]
        await asyncio.gather(*(c.close("stopped") for c in conns), *self._background, return_exceptions=True)
        if self.ids is not None:
            # Holes still in their grace at the stop (every connection closed: nothing can fill
            # them now) are holes all the same: journaled, so coverage says so and the next
            # start's rescan of the journal repairs them (the repair loop stops with us).
            for hole in self.ids.drain():
                try:
                    self._report_hole(hole, repair=False)
                except Exception:
                    self._log.exception("reporting the id hole of %s failed", hole.symbol)
        self._running = False
        self._log.info("stopped")

    async def stop(self) -> None:
        """Ask `run()` to close every connection and return."""
        self._stop.set()

    def _start_slot(self, slot: Slot) -> None:
        if self._stop.is_set():
            return
        self._backoffs[slot.name] = Backoff(self.backoff_initial_s, self.backoff_max_s, rng=self._rng)
        slot.task = asyncio.create_task(self._run_slot(slot), name=f"{self.stream} slot {slot.name}")

    # -- the per-slot loop -------------------------------------------------------------------

    async def _run_slot(self, slot: Slot) -> None:
        # The stop flag is checked at the top and after every wait: stopping must never depend
        # on a cancel arriving. Every failed attempt waits its backoff, so no path loops tight.
        backoff = self._backoffs[slot.name]
        stop = self._stop
        while not stop.is_set():
            conn = slot.active
            if conn is not None and slot.rotate_reason is None:
                await self._serve(slot, conn)
                continue
            if conn is None and not slot.symbols:
                slot.wake.clear()
                await wait_flags(self._stop, slot.wake, None)
                continue
            if slot.retry_delay_s > 0:
                await wait_flags(self._stop, None, slot.retry_delay_s)
                slot.retry_delay_s = 0.0
                if stop.is_set():
                    return
                if slot.active is not None and slot.rotate_reason is None:
                    continue
            hold_s = self._hold_until_s - time.monotonic()
            if hold_s > 0:  # the exchange answered a handshake with 429/418: nobody knocks until then
                await wait_flags(self._stop, None, hold_s)
                continue
            if slot.active is None and self._refused:
                # A reconnect may reach a gateway that knows what the last one refused.
                self._place_refused(slot, due_only=False)
            new = await self._open(slot)
            if stop.is_set():
                if new is not None:
                    await new.close("stopped")
                return
            if new is None:
                slot.failures += 1
                slot.retry_delay_s = max(backoff.next_delay_s(), slot.retry_floor_s)
                continue
            self._install(slot, new)

    async def _serve(self, slot: Slot, conn: Connection) -> None:
        """Wait for work on a serving connection: symbol changes, rotation time, its end."""
        lifetime_s = self.adapter.max_lifetime_s
        timeout_s: float | None = None
        if lifetime_s is not None and conn.opened_s is not None:
            margin_s = min(self.adapter.rotate_margin_s, lifetime_s / 2)
            timeout_s = conn.opened_s + lifetime_s - margin_s - time.monotonic()
            if timeout_s <= 0:
                slot.rotate_reason = "lifetime"
                return
        slot.wake.clear()
        if self._symbols_out_of_sync(slot, conn):
            await self._sync(slot, conn)
            return
        if not slot.symbols:
            await conn.close("no symbols left")
            return
        if not await wait_flags(self._stop, slot.wake, timeout_s) and not self._stop.is_set():
            slot.rotate_reason = "lifetime"

    def _symbols_out_of_sync(self, slot: Slot, conn: Connection) -> bool:
        return bool(slot.symbols - conn.subscribed or conn.subscribed - slot.symbols)

    async def _sync(self, slot: Slot, conn: Connection) -> None:
        extra = sorted(conn.subscribed - slot.symbols)
        missing = sorted(slot.symbols - conn.subscribed)
        try:
            if extra:
                await conn.unsubscribe(extra)
                self.journal.unsubscribed(conn.conn_id, extra)
                self._log.conn(conn.conn_id).info("unsubscribed %d symbols", len(extra))
            if missing:
                await conn.subscribe(missing, self._acked, self._rejected)
        except ConnectFailed as exc:
            conn.abort(str(exc))

    async def _open(self, slot: Slot) -> Connection | None:
        """A new connection with every symbol of the slot acked, or None after logging why."""
        slot.seq += 1
        conn_id = f"{slot.name}-{slot.seq}"
        conn = Connection(
            conn_id,
            self.adapter,
            ws_url=self.ws_url if slot.replica == 0 else self.redundant_ws_url,
            rest_url=self.rest_url,
            process=self._ingest.process,
            on_end=lambda c: self._ended(slot, c),
            on_notice=lambda c: self._notice(slot, c),
            clock=self._clock,
            open_timeout_s=self.open_timeout_s,
            ack_timeout_s=self.ack_timeout_s,
        )
        clog = self._log.conn(conn_id)
        try:
            await conn.open()
            self._stats.connected += 1
            self._journaled.add(conn)
            self._group_of[conn] = slot.index
            self._handshake_accepted()
            self.journal.connected(conn_id, conn.url)
            clog.debug("connected to %s", conn.url)
            # Symbols may be added while earlier ones are being acked: repeat until none is missing.
            while missing := sorted(slot.symbols - conn.subscribed):
                await conn.subscribe(missing, self._acked, self._rejected)
            if conn.ended.is_set():
                raise ConnectFailed(conn.end_reason or "ended")
        except ConnectFailed as exc:
            self._stats.connect_failures += 1
            self._note_failure(slot, clog, str(exc))
            self._note_refusal(slot, exc)
            await conn.close(str(exc))
            return None
        except asyncio.CancelledError:
            await asyncio.shield(conn.close("stopped"))
            raise
        return conn

    def _install(self, slot: Slot, conn: Connection) -> None:
        """`conn` is fully subscribed: it serves the slot now; a rotated predecessor closes."""
        old = slot.active
        clog = self._log.conn(conn.conn_id)
        conn.subscribed_s = time.monotonic()
        slot.active = conn
        if old is not None:
            reason = slot.rotate_reason or "rotated"
            self._stats.rotations += 1
            clog.info(
                "replaced conn %s (%s) with no gap, %d symbols",
                old.conn_id,
                reason,
                len(conn.subscribed),
            )
            old.end_reason = f"rotated: {reason}"
            self._spawn_close(old)
        elif slot.down_since_s is not None:
            self._stats.reconnects += slot.served
            clog.info(
                "%s after %.1f s and %d failed attempts, %d symbols",
                "reconnected" if slot.served else "connected",
                time.monotonic() - slot.down_since_s,
                slot.failures,
                len(conn.subscribed),
            )
        else:
            clog.info("subscribed %d symbols at %s", len(conn.subscribed), conn.url)
        slot.rotate_reason = None
        slot.served = True
        slot.down_since_s = None
        slot.failures = 0
        slot.refused = None
        slot.capacity_refused = False
        self._update_gap()

    def _spawn_close(self, conn: Connection) -> None:
        task = asyncio.create_task(
            conn.close(conn.end_reason or "rotated"), name=f"{self.stream} close {conn.conn_id}"
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _note_refusal(self, slot: Slot, exc: ConnectFailed) -> None:
        """How long the slot waits at least after a failed attempt, and why (for `not_recorded`).

        429/418 (a rate limit, a ban): `Retry-After`, else far longer than a backoff, and the whole
        stream holds its new connections until then. A handshake refused while other connections
        of the stream are open is the exchange's connection limit when the adapter learns its
        capacity: the slot's symbols are over capacity and it knocks again only rarely.
        """
        slot.refused = str(exc)
        slot.retry_floor_s = 0.0
        slot.capacity_refused = False
        if exc.rate_limited:
            assert exc.status is not None
            wait_s = exc.retry_after_s
            if wait_s is None:
                wait_s = self.rate_limit_wait_s.get(exc.status, max(self.rate_limit_wait_s.values()))
            slot.retry_floor_s = wait_s
            self._hold_until_s = max(self._hold_until_s, time.monotonic() + wait_s)
            self._log.conn(f"{slot.name}-{slot.seq}").warning(
                "handshake answered HTTP %d: no new connection for %.1f s", exc.status, wait_s
            )
        if exc.status in CAP_STATUSES and self.adapter.learn_capacity:
            # Groups open now, serving or still subscribing (the cap counts groups: with
            # `redundancy` 2 each group holds two connections).
            open_groups = self._open_groups()
            if open_groups >= 1:
                seen = self._cap_evidence[open_groups] = self._cap_evidence.get(open_groups, 0) + 1
                if seen >= CAP_REPEATS:
                    self._table.learn_max_connections(open_groups)
                    slot.capacity_refused = True
                    slot.retry_floor_s = max(slot.retry_floor_s, self.capacity_retry_s)
                else:
                    self._log.conn(f"{slot.name}-{slot.seq}").info(
                        "handshake refused (HTTP %d) with %d groups open: a connection limit if it repeats",
                        exc.status,
                        open_groups,
                    )

    def _open_groups(self) -> int:
        return len(set(self._group_of.values()))

    def _handshake_accepted(self) -> None:
        """A handshake was accepted: refusals at fewer open groups than now were no limit, and a
        learned connection cap below it is withdrawn (learned again if the refusals come back)."""
        if not self.adapter.learn_capacity:
            return
        open_groups = self._open_groups()
        for count in [c for c in self._cap_evidence if c < open_groups]:
            del self._cap_evidence[count]
        table = self._table
        if table.max_slots is not None and open_groups > table.max_slots:
            table.unlearn_max_connections(open_groups)
            for slot in table.fill_free_capacity():
                self._start_slot(slot)

    def _note_failure(self, slot: Slot, clog: StreamLog, reason: str) -> None:
        if slot.down_since_s is None and slot.active is None:
            slot.down_since_s = time.monotonic()
            clog.warning("cannot connect: %s (retrying with backoff)", reason)
        elif slot.active is not None:
            clog.warning("replacement failed: %s (old connection keeps serving)", reason)
        else:
            clog.debug("attempt %d failed: %s", slot.failures + 1, reason)

    # -- callbacks from connections -------------------------------------------------------------

    def _acked(self, conn: Connection, symbols: list[str]) -> None:
        self._table.acked(symbols)
        if self._refused:
            st = self._stats
            for symbol in symbols:
                refusal = self._refused.pop(symbol, None)
                if refusal is not None:
                    st.rejected.pop(symbol, None)
                    st.rejected_retry_at_us.pop(symbol, None)
                    self._log.conn(conn.conn_id).info(
                        "%s subscribed after %d refusals (%s)", symbol, refusal.refusals, refusal.reason
                    )
        known = self._known
        self.journal.subscribed(conn.conn_id, symbols, [known[s].base if s in known else "" for s in symbols])
        if self._down_since:
            now_us = self._clock() // 1000
            for symbol in symbols:
                since_us = self._down_since.pop(symbol, None)
                if since_us is not None:
                    self._resumed(symbol, since_us, now_us)

    def _rejected(self, conn: Connection, rejected: dict[str, str]) -> None:
        # A symbol dropped from the list while its subscribe was in flight needs nothing more;
        # nor one no longer in this connection's group: the other replica of the group
        # (`redundancy` 2) already had it refused, and it was moved or is refused already.
        group = self._group_of.get(conn)
        mine = self._table.groups[group][0].symbols if group is not None else self._wanted
        rejected = {s: r for s, r in rejected.items() if s in self._wanted and s in mine}
        if not rejected:
            return
        held = len(conn.subscribed)
        # A symbol already refused for itself is not evidence of a capacity on its retry.
        moved = [
            s for s in sorted(rejected) if s not in self._refused and self._table.presume_capacity(s, held)
        ]
        if moved:
            # Presumed over this connection's capacity (adapter.learn_capacity): another
            # connection gets them; refused there too, they are refused for themselves.
            self._log.conn(conn.conn_id).debug(
                "%d symbols refused beyond %d on this connection (%s): moving them",
                len(moved),
                held,
                rejected[moved[0]],
            )
            created = [slot for symbol in moved for slot in self._table.move(symbol)]
            for slot in created:
                if self._running:
                    self._start_slot(slot)
            rejected = {s: r for s, r in rejected.items() if s not in moved}
            if not rejected:
                return
        st = self._stats
        clog = self._log.conn(conn.conn_id)
        now_s = time.monotonic()
        now_us = self._clock() // 1000
        newly: list[str] = []  # turned refused now: journaled and logged (retries are not)
        for symbol in sorted(rejected):
            reason = rejected[symbol]
            refusal = self._refused.get(symbol)
            if refusal is None:
                delay_s = self.reject_retry_initial_s
                refusal = self._refused[symbol] = Refusal(reason, 1, delay_s, now_s + delay_s)
                newly.append(symbol)
                clog.warning("%s rejected: %s (asking again in %g s)", symbol, reason, delay_s)
            else:
                refusal.refusals += 1
                refusal.reason = reason
                refusal.delay_s = min(refusal.delay_s * 2, self.reject_retry_max_s)
                refusal.due_s = now_s + refusal.delay_s
                refusal.in_flight = False
                clog.debug(
                    "%s refused again (%d in a row): %s; next try in %g s",
                    symbol,
                    refusal.refusals,
                    reason,
                    refusal.delay_s,
                )
            st.rejected[symbol] = reason
            st.rejected_retry_at_us[symbol] = now_us + int(refusal.delay_s * 1_000_000)
            self._table.remove(symbol)
        if newly:
            reasons = sorted({rejected[s] for s in newly})
            self.journal.rejected(conn.conn_id, newly, "; ".join(reasons))
        self._retry_wake.set()
        for slot in self._table.fill_free_capacity():
            self._start_slot(slot)

    def _place_refused(self, prefer: Slot | None = None, *, due_only: bool = True) -> None:
        """Put refused symbols (those due, or all) into slots again: their subscribe is asked
        on the slot's connection, or with its next connection."""
        now_s = time.monotonic()
        created: list[Slot] = []
        for symbol, refusal in self._refused.items():
            if refusal.in_flight or (due_only and refusal.due_s > now_s):
                continue
            refusal.in_flight = True
            created += self._table.assign(symbol, prefer=prefer)
        if self._running:
            for slot in created:
                self._start_slot(slot)

    async def _retry_refused(self) -> None:
        """Ask refused symbols again when their backoff ends."""
        stop = self._stop
        while not stop.is_set():
            waiting = [r.due_s for r in self._refused.values() if not r.in_flight]
            timeout_s = max(0.0, min(waiting) - time.monotonic()) if waiting else None
            self._retry_wake.clear()
            await wait_flags(stop, self._retry_wake, timeout_s)
            if stop.is_set():
                return
            try:
                self._place_refused()
            except Exception:  # retries must never take the stream down
                self._log.exception("asking refused symbols again failed")

    def _notice(self, slot: Slot, conn: Connection) -> None:
        if conn is slot.active and slot.rotate_reason is None:
            slot.rotate_reason = "server notice"
            slot.wake.set()

    def _ended(self, slot: Slot, conn: Connection) -> None:
        reason = conn.end_reason or "closed"
        conn_id, subscribed_s = conn.conn_id, conn.subscribed_s
        self._group_of.pop(conn, None)
        if conn in self._journaled:
            self._journaled.discard(conn)
            self._stats.connected -= 1
            # a connection that died (not closed by us) listened until it last received anything
            last_rx_us = None if conn.closed_by_us else self._last_rx_us(conn)
            self.journal.disconnected(conn.conn_id, reason, last_rx_us=last_rx_us)
            self._note_lost(conn)
        if slot.active is not conn:
            return
        slot.active = None
        slot.wake.set()
        if self._stop.is_set() or not slot.symbols:
            return
        served_s = time.monotonic() - subscribed_s if subscribed_s is not None else 0.0
        backoff = self._backoffs[slot.name]
        if served_s >= self.healthy_after_s:
            # It had proved itself: reconnect at once and start the backoff afresh.
            backoff.reset()
            slot.retry_delay_s = 0.0
        else:
            # Accepted and then dropped soon: back off, or a flapping server gets hammered.
            slot.retry_delay_s = backoff.next_delay_s()
        slot.down_since_s = time.monotonic()
        slot.failures = 0
        self._log.conn(conn_id).warning("lost after %.1f s: %s", served_s, reason)
        self._update_gap(f"conn {conn_id}: {reason}")

    def _update_gap(self, reason: str | None = None) -> None:
        uncovered = any(
            group[0].symbols and all(s.active is None for s in group) for group in self._table.groups
        )
        if uncovered and not self._gap_open and reason is not None:
            self._gap_open = True
            self.journal.gap_start(reason)
        elif not uncovered and self._gap_open:
            self._gap_open = False
            self.journal.gap_end()

    # -- completeness: what was not recorded goes to `on_missing` ------------------------------

    def _note_lost(self, conn: Connection) -> None:
        """`conn` ended: its symbols that no other open connection listens to stop listening
        from a little before the last byte it received."""
        if not conn.lost or self._stop.is_set():
            return
        last_rx_us = self._last_rx_us(conn)
        open_conns = self._journaled
        for symbol in conn.lost:
            if symbol in self._wanted and not any(symbol in c.subscribed for c in open_conns):
                self._down_since.setdefault(symbol, last_rx_us)

    def _last_rx_us(self, conn: Connection) -> int:
        """Wall-clock µs `conn` last received anything (now if it never opened): its last byte,
        or the receive stamp of its last frame read if later (stamped when it was parsed)."""
        now_us = self._clock() // 1000
        rx_s = conn.last_rx_s
        if rx_s is None:
            return now_us
        last_rx_us = now_us - int((time.monotonic() - rx_s) * 1_000_000)
        return max(last_rx_us, conn.last_frame_us or last_rx_us)

    def _resumed(self, symbol: str, since_us: int, now_us: int) -> None:
        """`symbol` listens again after not listening since `since_us`."""
        cause = "start" if since_us == self._first_since_us else "reconnect"
        if self.ids is None:
            # Trades arrive in order per connection: nothing older than the newest one seen is
            # missing (the margin covers a symbol that was quiet before the loss).
            start_us = since_us - LOST_MARGIN_US
            newest_us = self.dedupe.newest_us(symbol)
            if newest_us is not None:
                start_us = min(max(start_us, newest_us), since_us)
            end_us = now_us + RESUMED_MARGIN_US
            self._missing(Missing(symbol, start_us, end_us, cause, not_before_us=now_us + SETTLE_US))
            return
        # Ids will say exactly what is missing once the symbol's next trade arrives.
        for hole in self.ids.resume(symbol, since_us, now_us):
            self._report_hole(hole)

    def _resumes_settled(self, settled: list[Resumed]) -> None:
        """First trades after gaps (called from the hot path: rare, cheap, never raises)."""
        for r in settled:
            try:
                self._settle(r)
            except Exception:
                self._log.exception("settling the gap of %s failed", r.symbol)

    def _settle(self, r: Resumed) -> None:
        assert r.next_id is not None and r.next_us is not None
        cause = "start" if r.since_us == self._first_since_us else "reconnect"
        start_us = r.since_us - LOST_MARGIN_US
        if r.last_us is not None:
            start_us = min(start_us, r.last_us)
        end_us = max(r.next_us, r.resumed_us)
        # A `sequenced` stream (Gate spot: checked on id_market, repaired by time) waits until
        # the connection has delivered what it will of the span's last moments, so no REST copy
        # of a trade lands before its live push; repairs by id fetch only the ids below this one.
        wait = self._clock() // 1000 + SETTLE_US if self.adapter.sequenced else 0
        if r.handed_out and (r.last_id is None or r.next_id - r.last_id - 1 > REFETCH_IDS):
            # Its quiet repair stored the span up to the resume; the trades after the resume
            # that never arrived (skipped pushes) are the ids below this one from there on.
            self._missing(
                Missing(r.symbol, r.resumed_us, end_us, cause, last_id=r.next_id - 1, not_before_us=wait)
            )
        elif r.last_id is None:  # nothing known before the gap: by time up to the id after it
            self._missing(
                Missing(r.symbol, start_us, end_us, cause, last_id=r.next_id - 1, not_before_us=wait)
            )
        elif r.next_id > r.last_id + 1:
            self._missing(
                Missing(r.symbol, start_us, end_us, cause, r.last_id + 1, r.next_id - 1, not_before_us=wait)
            )
        else:  # the first id after the gap follows the last before it: nothing was missed
            self._missing(Missing(r.symbol, start_us, end_us, cause, whole=True))

    def _report_hole(self, hole: IdHole, repair: bool = True) -> None:
        """Journal an unfilled id hole and (`repair`) hand it to repair, by id."""
        self._stats.id_holes += 1
        inst = self._known.get(hole.symbol)
        self.journal.record(
            "id_gap",
            symbol=hole.symbol,
            base=inst.base if inst is not None else "",
            first_missing=hole.first_missing,
            last_missing=hole.last_missing,
            after_us=hole.after_us,
            before_us=hole.before_us,
        )
        self._log.warning(
            "%s: trade ids %d..%d never arrived (%d trades)",
            hole.symbol,
            hole.first_missing,
            hole.last_missing,
            hole.last_missing - hole.first_missing + 1,
        )
        if not repair:
            return
        self._missing(
            Missing(
                hole.symbol, hole.after_us, hole.before_us, "id_gap", hole.first_missing, hole.last_missing
            )
        )

    def _missing(self, span: Missing) -> None:
        self._stats.missing_spans += 1
        if self._on_missing is None:
            return
        try:
            self._on_missing(span)
        except Exception:
            self._log.exception("on_missing failed for %s", span.symbol)

    async def _watch_ids(self) -> None:
        """Hand out id holes whose grace ended and resumes that saw no trade in time."""
        ids = self.ids
        assert ids is not None
        while not self._stop.is_set():
            await wait_flags(self._stop, None, min(WATCH_INTERVAL_S, max(ids.grace_us / 2e6, 0.01)))
            now_us = self._clock() // 1000
            holes, quiet = ids.expire(now_us)
            for hole in holes:
                try:
                    self._report_hole(hole)
                except Exception:
                    self._log.exception("reporting the id hole of %s failed", hole.symbol)
            for r in quiet:
                cause = "start" if r.since_us == self._first_since_us else "reconnect"
                start_us = r.since_us - LOST_MARGIN_US
                if r.last_us is not None:
                    start_us = min(start_us, r.last_us)
                first_id = r.last_id + 1 if r.last_id is not None else None
                self._missing(
                    Missing(
                        r.symbol,
                        start_us,
                        r.resumed_us,
                        cause,
                        first_id=first_id,
                        not_before_us=r.resumed_us + SETTLE_US,
                    )
                )
