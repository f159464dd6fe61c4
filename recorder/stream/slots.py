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
    """One place for a connection and the symbols it should carry."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.symbols: set[str] = set()  # assigned: wanted, not rejected
        self.active: Connection | None = None  # the serving connection
        self.rotate_reason: str | None = None  # set: open a replacement, then retire `active`
        self.wake = asyncio.Event()  # symbols changed, connection ended, rotation asked
        self.seq = 0  # connections opened so far (connection ids are "<index>-<seq>")
        self.task: asyncio.Task[None] | None = None
        self.down_since_s: float | None = None  # monotonic time the slot lost its connection
        self.failures = 0  # failed attempts in the current outage
        self.retry_delay_s = 0.0  # wait this long before the next attempt
        self.served = False  # some connection of this slot has been fully subscribed


class SlotTable:
    """Places symbols into slots; `over_capacity` is the runner's stats list, kept in place."""

    def __init__(self, adapter: Adapter, over_capacity: list[str]) -> None:
        self._log = StreamLog(log, adapter.stream)
        self.per_slot = adapter.max_symbols_per_connection
        self.max_slots = adapter.max_connections
        self.slots: list[Slot] = []
        self.over_capacity = over_capacity

    def assign(self, symbol: str) -> Slot | None:
        """Put `symbol` in the first slot with room; returns a slot it had to create."""
        for slot in self.slots:
            if len(slot.symbols) < self.per_slot:
                slot.symbols.add(symbol)
                slot.wake.set()
                return None
        if self.max_slots is None or len(self.slots) < self.max_slots:
            slot = Slot(len(self.slots))
            slot.symbols.add(symbol)
            self.slots.append(slot)
            return slot
        if symbol not in self.over_capacity:
            self.over_capacity.append(symbol)
            if len(self.over_capacity) == 1:
                self._log.warning(
                    "over capacity (%d connections x %d symbols); not recording %s and later ones",
                    self.max_slots,
                    self.per_slot,
                    symbol,
                )
        return None

    def remove(self, symbol: str) -> None:
        """`symbol` is no longer wanted (or was rejected): free its place."""
        if symbol in self.over_capacity:
            self.over_capacity.remove(symbol)
        for slot in self.slots:
            if symbol in slot.symbols:
                slot.symbols.discard(symbol)
                slot.wake.set()

    def fill_free_capacity(self) -> list[Slot]:
        """Move waiting symbols into freed room; returns the slots created for them."""
        waiting = list(self.over_capacity)
        self.over_capacity.clear()
        created = [slot for symbol in waiting if (slot := self.assign(symbol)) is not None]
        return created
