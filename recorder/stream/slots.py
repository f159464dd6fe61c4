"""Where a stream's symbols live: slots of at most ``max_symbols_per_connection`` symbols, at
most ``max_connections`` of them, each holding one serving connection. Sans-I/O bookkeeping for
``recorder/stream/runner.py``; symbols beyond the capacity wait in an over-capacity list (reported,
never silently dropped) and move in as soon as room frees up."""

from __future__ import annotations

import asyncio
import logging

from pumpwatch.recorder.adapter import Adapter
from pumpwatch.recorder.stream.connection import Connection
from pumpwatch.recorder.stream.logcontext import StreamLog

log = logging.getLogger(__name__)


class Slot:
    """One place for a connection and the symbols it should carry.

    With ``recorder.redundancy: 2`` each group of symbols has two slots (replicas 0 and 1)
    sharing one `symbols` set, each with its own connection, backoff and rotation.
    """

    def __init__(self, index: int, replica: int = 0, symbols: set[str] | None = None) -> None:
        self.index = index
        self.replica = replica
        self.name = str(index) if replica == 0 else f"{index}r{replica}"  # connection ids "<name>-<seq>"
        self.symbols: set[str] = symbols if symbols is not None else set()  # wanted, not rejected
        self.active: Connection | None = None  # the serving connection
        self.rotate_reason: str | None = None  # set: open a replacement, then retire `active`
        self.wake = asyncio.Event()  # symbols changed, connection ended, rotation asked
        self.seq = 0  # connections opened so far (connection ids are "<index>-<seq>")
        self.task: asyncio.Task[None] | None = None
        self.down_since_s: float | None = None  # monotonic time the slot lost its connection
        self.failures = 0  # failed attempts in the current outage
        self.retry_delay_s = 0.0  # wait this long before the next attempt
        self.served = False  # some connection of this slot has been fully subscribed
        self.refused: str | None = None  # why its last attempt failed, while it has no connection
        self.capacity_refused = False  # that attempt was refused while other connections were open
        self.retry_floor_s = 0.0  # the next attempt waits at least this (Retry-After, capacity)


class SlotTable:
    """Places symbols into slots; `over_capacity` is the runner's stats list, kept in place.

    `replicas` slots (connections) carry each group of symbols; `max_connections` counts
    groups, so with two replicas a stream capped at 5 connections opens up to 10 (the cap is
    per connection budget of one client; a second client's connections are what redundancy
    asks for).
    """

    def __init__(self, adapter: Adapter, over_capacity: list[str], replicas: int = 1) -> None:
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, not {replicas}")
        self._log = StreamLog(log, adapter.stream)
        self.per_slot = adapter.max_symbols_per_connection  # lowered when learned (learn_capacity)
        self.ceiling = adapter.max_symbols_per_connection
        self.max_slots = adapter.max_connections  # lowered when learned (learn_capacity)
        self.ceiling_slots = adapter.max_connections
        self.learn = adapter.learn_capacity
        # Learning (adapter.learn_capacity): symbol -> symbols its connection held when it was
        # refused (presumed over capacity, moved). A suspect refused again is refused for itself
        # and its evidence withdrawn; the learned cap is the least evidence left.
        self.evidence: dict[str, int] = {}
        self.proven: set[str] = set()  # suspects later acked elsewhere: the cap is confirmed
        self.replicas = replicas
        self.slots: list[Slot] = []  # every replica of every group
        self.groups: list[list[Slot]] = []  # the replicas of each group, sharing one symbol set
        self.over_capacity = over_capacity

    def assign(self, symbol: str, prefer: Slot | None = None) -> list[Slot]:
        """Put `symbol` in the first group with room (`prefer`'s group first, when it has
        room); returns the slots it had to create."""
        groups = self.groups
        if prefer is not None and prefer.index < len(groups):
            groups = [groups[prefer.index], *groups]
        for group in groups:
            if len(group[0].symbols) < self.per_slot:
                group[0].symbols.add(symbol)
                for slot in group:
                    slot.wake.set()
                return []
        if self.max_slots is None or len(self.groups) < self.max_slots:
            index = len(self.groups)
            symbols = {symbol}
            group = [Slot(index, r, symbols) for r in range(self.replicas)]
            self.groups.append(group)
            self.slots.extend(group)
            return group
        if symbol not in self.over_capacity:
            self.over_capacity.append(symbol)
            if len(self.over_capacity) == 1:
                self._log.warning(
                    "over capacity (%d connections x %d symbols); not recording %s and later ones",
                    self.max_slots,
                    self.per_slot,
                    symbol,
                )
        return []

    def remove(self, symbol: str) -> None:
        """`symbol` is no longer wanted (or was rejected): free its place."""
        if symbol in self.over_capacity:
            self.over_capacity.remove(symbol)
        for group in self.groups:
            if symbol in group[0].symbols:
                group[0].symbols.discard(symbol)
                for slot in group:
                    slot.wake.set()

    def fill_free_capacity(self) -> list[Slot]:
        """Move waiting symbols into freed room; returns the slots created for them."""
        waiting = list(self.over_capacity)
        self.over_capacity.clear()
        return [slot for symbol in waiting for slot in self.assign(symbol)]

    # -- learning the capacity at run time (adapter.learn_capacity) ----------------------------

    def presume_capacity(self, symbol: str, held: int) -> bool:
        """`symbol` was refused on a connection holding `held` acked symbols. True: presumed
        over that connection's capacity (the cap is lowered to `held`, the caller moves the
        symbol); False: refused for itself (a first refusal on an empty connection, or a
        second refusal), and any cap it had set is withdrawn."""
        if not self.learn:
            return False
        if held < 1 or symbol in self.evidence:
            self.evidence.pop(symbol, None)
            self._relearn()
            return False
        self.evidence[symbol] = held
        self._relearn()
        return True

    def acked(self, symbols: list[str]) -> None:
        """Suspects acked on another connection: their refusal was capacity, for sure."""
        for symbol in symbols:
            if symbol in self.evidence:
                self.proven.add(symbol)

    def _relearn(self) -> None:
        learned = min(self.evidence.values(), default=self.ceiling)
        if learned != self.per_slot:
            self._log.warning(
                "learned capacity: %d symbols per connection (refusals beyond it; ceiling %d)",
                learned,
                self.ceiling,
            )
        self.per_slot = max(1, min(learned, self.ceiling))

    def learn_max_connections(self, open_groups: int) -> None:
        """Handshakes were refused for a limit while `open_groups` groups were open."""
        if not self.learn or open_groups < 1:
            return
        if self.max_slots is None or open_groups < self.max_slots:
            self._log.warning("learned capacity: %d connections (a further one was refused)", open_groups)
            self.max_slots = open_groups

    def unlearn_max_connections(self, open_groups: int) -> None:
        """A handshake was accepted with `open_groups` open, more than the learned cap: the
        limit was not (or is no longer) there; back to the adapter's, learned again on refusals."""
        if self.max_slots is not None and open_groups > self.max_slots:
            self._log.warning(
                "connection cap of %d withdrawn: %d groups are open now", self.max_slots, open_groups
            )
            self.max_slots = self.ceiling_slots

    def move(self, symbol: str) -> list[Slot]:
        """Take `symbol` out of its group and place it again (room elsewhere, a new group, or the
        over-capacity list); returns the slots created."""
        for group in self.groups:
            if symbol in group[0].symbols:
                group[0].symbols.discard(symbol)
                for slot in group:
                    slot.wake.set()
        return self.assign(symbol)
