"""Sans-I/O trade de-duplication with bounded memory.

Duplicates reach the runner in two ways: during a make-before-break rotation two connections
deliver the same trades for a moment, and some exchanges replay recent history after every
subscribe (Phemex sends its last 200 trades). Both are removed here by the adapter's
`dedupe_key`.

Per symbol the filter remembers the keys of at least the last `keep_trades` trades and of every
trade within `keep_s` of the newest exchange time seen (whichever covers more), with a hard cap
of `max_keys` per symbol. A key seen before is dropped. A trade older than what was seen but
with an unseen key is kept: it is backfill, not a duplicate.

How long is enough (the defaults):

- Rotation overlap. The runner closes the old connection as soon as its replacement is
  subscribed, and the close (handshake, then the reader is cancelled) is bounded by the
  connection's close timeout (2 s). A trade is delivered twice only inside that overlap, and its
  two copies are apart by the difference of the two connections' delivery lags — milliseconds on
  a healthy link. The time window is measured in exchange time back from the newest trade of the
  symbol, so `keep_s` = 10 s tolerates an old connection running up to ~10 s behind its
  replacement; a quiet symbol keeps its keys anyway (nothing newer pushes them out).
- History replay. Phemex sends its 200 most recent trades after every (re)subscribe
  (`Adapter.replay_trades`); the ones already recorded are among the last 200 this filter let
  through, whatever their age, so the runner keeps ``replay + REPLAY_MARGIN`` = 256 for such a
  stream (`keep_trades_for`). No other exchange replays: their count floor is
  `KEEP_TRADES_FLOOR` (16), the time window doing the work.

Memory: about 130 bytes per remembered key (its trade id string, a dict entry, a deque slot and
8 bytes of time), so ~2.6 MB per stream at 2,000 trades/s; per quiet symbol 16 keys (~2 kB,
plus ~1 kB of per-symbol tables) on a stream without replay, 256 keys (~30 kB) on Phemex.
When every stream kept 256, that was ~27 MB per 1,000 quiet symbols per stream
(`bench/bench_dedupe_memory.py`: 3.7 MB with the floor). The
time array of a symbol is compacted once its evicted front is as long as its live part (and at
least `_COMPACT_MIN` slots), so it never holds much more than twice the live keys.

The common key shape ``(symbol, trade_id)`` is stored as the trade id alone — the
symbol is implied by the per-symbol table — and a key that is itself a string is wrapped in a
1-tuple, so a stored trade id can never equal another key. The id may be a string or bytes
(Phemex, which has no trade id, packs time, price, qty and side into bytes: one small object
per key where a tuple of an int and two floats took twice the memory); the two never compare
equal.

Exchanges without trade ids key on (time, side, price, qty); two genuine fills with the same
key can then arrive in one frame. So the filter counts: a key that came `n` times in one batch
lets through only the occurrences beyond the largest count seen in any earlier batch.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

from pumpwatch.timeunits import US_PER_S

if TYPE_CHECKING:  # the recorder's light processes must not import pyarrow through the schema
    from pumpwatch.segments.schema import TradeRow

# Default bounds, sized above (module docstring).
KEEP_TRADES = 256
KEEP_S = 10.0
MAX_KEYS = 100_000
KEEP_TRADES_FLOOR = 16  # a stream whose exchange replays nothing
REPLAY_MARGIN = 56  # beyond an exchange's replay (Phemex 200 -> 256)
_COMPACT_MIN = 32  # evicted time slots always tolerated at the front of a symbol's time array


def keep_trades_for(replay_trades: int) -> int:
    """The count a stream's de-duplicator keeps per symbol, given how many trades its exchange
    replays after a subscribe (`Adapter.replay_trades`)."""
    return replay_trades + REPLAY_MARGIN if replay_trades > 0 else KEEP_TRADES_FLOOR


class _SymbolKeys:
    __slots__ = ("counts", "head", "keys", "newest_us", "times")

    def __init__(self) -> None:
        self.counts: dict[Hashable, int] = {}
        self.keys: deque[Hashable] = deque()  # stored keys by first arrival
        self.times = array("q")  # exchange time of keys[i] at times[head + i]
        self.head = 0
        self.newest_us = -(2**62)


class Deduper:
    """Drop trades whose `key(row)` was already seen recently; a None key is never a duplicate."""

    def __init__(
        self,
        key: Callable[[TradeRow], Any],
        *,
        keep_trades: int = KEEP_TRADES,
        keep_s: float = KEEP_S,
        max_keys: int = MAX_KEYS,
    ) -> None:
        if keep_trades < 1 or max_keys < keep_trades or keep_s < 0:
            raise ValueError(
                f"bad dedupe bounds: keep_trades={keep_trades} keep_s={keep_s} max_keys={max_keys}"
            )
        self._key = key
        self.keep_trades = keep_trades
        self.keep_us = int(keep_s * US_PER_S)
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
            symbol = row[2]
            if symbol != last_symbol or state is None:
                last_symbol = symbol
                state = symbols.get(symbol)
                if state is None:
                    state = symbols[symbol] = _SymbolKeys()
                touched.add(state)
            occurrence = batch.get(key, 0) + 1  # the full key: one frame may hold several symbols
            batch[key] = occurrence
            # _stored_key(key, symbol), inlined: this loop runs once per trade
            if (
                type(key) is tuple
                and len(key) == 2
                and (type(key[1]) is str or type(key[1]) is bytes)
                and key[0] == symbol
            ):
                stored: Hashable = key[1]
            elif type(key) is str:
                stored = (key,)
            else:
                stored = key
            seen = state.counts.get(stored, 0)
            if occurrence <= seen:
                self.duplicates += 1
                continue
            kept.append(row)
            state.counts[stored] = occurrence
            if seen == 0:
                state.keys.append(stored)
                state.times.append(row[0])
            if row[0] > state.newest_us:
                state.newest_us = row[0]
        for state in touched:
            self._evict(state)
        return kept

    def remember(self, rows: Sequence[TradeRow]) -> None:
        """Teach the filter trades that are already recorded (oldest first), keeping nothing.

        Unlike `filter`, occurrences add up across calls: the rows of a stored range can be
        taught batch by batch and still count as one batch, so two genuine identical fills
        stored in different batches both stay known.
        """
        touched: set[_SymbolKeys] = set()
        key_of = self._key
        symbols = self._symbols
        for row in rows:
            key = key_of(row)
            if key is None:
                continue
            symbol = row[2]
            state = symbols.get(symbol)
            if state is None:
                state = symbols[symbol] = _SymbolKeys()
            touched.add(state)
            stored = _stored_key(key, symbol)
            seen = state.counts.get(stored, 0)
            state.counts[stored] = seen + 1
            if seen == 0:
                state.keys.append(stored)
                state.times.append(row[0])
            if row[0] > state.newest_us:
                state.newest_us = row[0]
        for state in touched:
            self._evict(state)

    def _evict(self, state: _SymbolKeys) -> None:
        keys = state.keys
        n = len(keys)
        if n <= self.keep_trades:
            return
        times, counts = state.times, state.counts
        head = state.head
        horizon_us = state.newest_us - self.keep_us
        while n > self.keep_trades and (times[head] < horizon_us or n > self.max_keys):
            del counts[keys.popleft()]
            head += 1
            n -= 1
        if head >= _COMPACT_MIN and head >= n:
            del times[:head]  # amortized: at most one copy of the live part per as many evictions
            head = 0
        state.head = head

    def forget(self, symbol: str) -> None:
        """Drop the memory of `symbol` (it was unsubscribed)."""
        self._symbols.pop(symbol, None)

    def newest_us(self, symbol: str) -> int | None:
        """The newest exchange time seen for `symbol` (None: nothing seen or remembered)."""
        state = self._symbols.get(symbol)
        return state.newest_us if state is not None and state.keys else None

    def keys_held(self, symbol: str | None = None) -> int:
        """How many keys are remembered, for one symbol or in total (memory bound checks)."""
        if symbol is not None:
            state = self._symbols.get(symbol)
            return len(state.keys) if state is not None else 0
        return sum(len(s.keys) for s in self._symbols.values())


def _stored_key(key: Any, symbol: str) -> Hashable:
    """How `key` is kept in `symbol`'s table (see the module docstring); `filter` inlines it."""
    if (
        type(key) is tuple
        and len(key) == 2
        and (type(key[1]) is str or type(key[1]) is bytes)
        and key[0] == symbol
    ):
        return key[1]
    if type(key) is str:
        return (key,)
    return key
