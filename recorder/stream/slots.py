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
        self.per_slot = adapter.max_symbols_per_connection
        self.max_slots = adapter.max_connections
        self.replicas = replicas
        self.slots: list[Slot] = []  # every replica of every group
        self.groups: list[list[Slot]] = []  # the replicas of each group, sharing one symbol set
        self.over_capacity = over_capacity

    def assign(self, symbol: str) -> list[Slot]:
        """Put `symbol` in the first group with room; returns the slots it had to create."""
        for group in self.groups:
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
