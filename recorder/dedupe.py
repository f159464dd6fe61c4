"""Sans-I/O trade de-duplication with bounded memory.

Duplicates reach the runner in two ways: during a make-before-break rotation two connections
deliver the same trades for a moment, and some exchanges replay recent history after every
subscribe (Phemex sends its last 200 trades). Both are removed here by the adapter's
`dedupe_key`.

Per symbol the filter remembers the keys of at least the last `keep_trades` trades and of every
trade within `keep_s` of the newest exchange time seen (whichever covers more), with a hard cap
of `max_keys` per symbol. A key seen before is dropped. A trade older than what was seen but
with an unseen key is kept: it is backfill, not a duplicate.

Exchanges without trade ids key on (time, side, price, qty); two genuine fills with the same
key can then arrive in one frame. So the filter counts: a key that came `n` times in one batch
lets through only the occurrences beyond the largest count seen in any earlier batch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from pumpwatch.segments.schema import TradeRow


class _SymbolKeys:
    __slots__ = ("counts", "newest_us", "order")

    def __init__(self) -> None:
        self.counts: dict[Hashable, int] = {}
        self.order: deque[tuple[Hashable, int]] = deque()  # (key, exchange time) by arrival
        self.newest_us = -(2**62)


class Deduper:
    """Drop trades whose `key(row)` was already seen recently; a None key is never a duplicate."""

    def __init__(
        self,
        key: Callable[[TradeRow], Any],
        *,
        keep_trades: int = 1000,
        keep_s: float = 30.0,
        max_keys: int = 100_000,
    ) -> None:
        if keep_trades < 1 or max_keys < keep_trades or keep_s < 0:
            raise ValueError(
                f"bad dedupe bounds: keep_trades={keep_trades} keep_s={keep_s} max_keys={max_keys}"
            )
        self._key = key
        self.keep_trades = keep_trades
        self.keep_us = int(keep_s * 1_000_000)
        self.max_keys = max_keys
        self._symbols: dict[str, _SymbolKeys] = {}
        self.duplicates = 0  # trades dropped so far

    def filter(self, rows: Sequence[TradeRow]) -> list[TradeRow]:
        """The rows of one frame minus the ones already seen, in their original order."""
        kept: list[TradeRow] = []
        batch: dict[Hashable, int] = {}
        touched: set[_SymbolKeys] = set()
        key_of = self._key
        symbols = self._symbols
        last_symbol: str | None = None
        state: _SymbolKeys | None = None
        for row in rows:
            key = key_of(row)
            if key is None:
                kept.append(row)
                continue
            if row[2] != last_symbol or state is None:
                last_symbol = row[2]
                state = symbols.get(last_symbol)
                if state is None:
                    state = symbols[last_symbol] = _SymbolKeys()
                touched.add(state)
            occurrence = batch.get(key, 0) + 1
            batch[key] = occurrence
            seen = state.counts.get(key, 0)
            if occurrence <= seen:
                self.duplicates += 1
                continue
            kept.append(row)
            state.counts[key] = occurrence
            if seen == 0:
                state.order.append((key, row[0]))
            if row[0] > state.newest_us:
                state.newest_us = row[0]
        for state in touched:
            self._evict(state)
        return kept

    def _evict(self, state: _SymbolKeys) -> None:
        order = state.order
        horizon_us = state.newest_us - self.keep_us
        while len(order) > self.keep_trades and (order[0][1] < horizon_us or len(order) > self.max_keys):
            key, _ = order.popleft()
            del state.counts[key]

    def forget(self, symbol: str) -> None:
        """Drop the memory of `symbol` (it was unsubscribed)."""
        self._symbols.pop(symbol, None)

    def keys_held(self, symbol: str | None = None) -> int:
        """How many keys are remembered, for one symbol or in total (memory bound checks)."""
        if symbol is not None:
            state = self._symbols.get(symbol)
            return len(state.order) if state is not None else 0
        return sum(len(s.order) for s in self._symbols.values())
