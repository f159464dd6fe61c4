"""Trade de-duplication: overlap and replays removed, backfill kept, memory bounded."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pumpwatch.recorder.stream.dedupe import Deduper
from pumpwatch.segments.schema import TradeRow


def trade(symbol: str, time_us: int, trade_id: str | None, price: float = 1.0, qty: float = 1.0) -> TradeRow:
    return (time_us, time_us + 5, symbol, symbol[:3], "USDT", price, qty, "buy", trade_id)


def by_id(row: TradeRow) -> object:
    return (row[2], row[8])


def by_fields(row: TradeRow) -> object:
    # The shape an exchange without trade ids uses (Phemex).
    return (row[2], row[0], row[7], row[5], row[6])


def test_overlap_is_dropped_and_order_kept() -> None:
    d = Deduper(by_id)
    a = [trade("AAAUSDT", 10 + i, str(i)) for i in range(5)]
    assert d.filter(a[:3]) == a[:3]
    # The second connection of a rotation delivers 1..4; only 3 and 4 are new.
    assert d.filter(a[1:]) == a[3:]
    assert d.duplicates == 2
    # Same ids on another symbol are different trades.
    b = [trade("BBBUSDT", 10, "1")]
    assert d.filter(b) == b


def test_backfill_older_than_seen_is_kept() -> None:
    d = Deduper(by_id)
    live = [trade("AAAUSDT", 1_000_000 + i, str(100 + i)) for i in range(3)]
    assert d.filter(live) == live
    backfill = [trade("AAAUSDT", 500_000 + i, str(50 + i)) for i in range(3)] + live[:1]
    assert d.filter(backfill) == backfill[:3]
    assert d.duplicates == 1


def test_none_key_is_never_a_duplicate() -> None:
    d = Deduper(lambda row: None)
    rows = [trade("AAAUSDT", 1, None), trade("AAAUSDT", 1, None)]
    assert d.filter(rows) == rows
    assert d.filter(rows) == rows
    assert d.duplicates == 0


def test_identical_fills_in_one_frame_survive_a_replay() -> None:
    d = Deduper(by_fields)
    twin = trade("sAAAUSDT", 7, None)
    other = trade("sAAAUSDT", 8, None, price=2.0)
    assert d.filter([twin, twin, other]) == [twin, twin, other]
    # The history replay after a resubscribe repeats all three plus one genuinely new fill.
    new = trade("sAAAUSDT", 9, None, price=3.0)
    assert d.filter([twin, twin, other, new]) == [new]
    assert d.duplicates == 3
    # A third identical fill at the same instant arriving in one later frame with the first two.
    assert d.filter([twin, twin, twin]) == [twin]


def test_memory_is_bounded_by_trades_and_time() -> None:
    d = Deduper(by_id, keep_trades=100, keep_s=1.0, max_keys=1000)
    # 10 trades per second for 60 s: 1 s of time is 10 trades, so the count floor (100) rules.
    for i in range(600):
        d.filter([trade("AAAUSDT", i * 100_000, str(i))])
    assert d.keys_held("AAAUSDT") == 100
    # The most recent 100 are remembered, older ones forgotten.
    assert d.filter([trade("AAAUSDT", 599 * 100_000, "599")]) == []
    old = trade("AAAUSDT", 0, "0")
    assert d.filter([old]) == [old]
    # 10_000 trades inside one second: the time window holds them, up to the hard cap.
    for i in range(5000):
        d.filter([trade("BBBUSDT", 1_000_000 + i, str(i))])
    assert d.keys_held("BBBUSDT") == 1000
    d.forget("BBBUSDT")
    assert d.keys_held("BBBUSDT") == 0
    assert d.keys_held() == d.keys_held("AAAUSDT")


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        Deduper(by_id, keep_trades=0)
    with pytest.raises(ValueError):
        Deduper(by_id, keep_trades=10, max_keys=5)


@settings(max_examples=200, deadline=None)
@given(
    n_trades=st.integers(1, 200),
    cuts=st.lists(st.tuples(st.integers(0, 199), st.integers(1, 60)), min_size=1, max_size=30),
    seed=st.integers(0, 2**32 - 1),
)
def test_overlapping_replays_yield_every_trade_exactly_once(
    n_trades: int, cuts: list[tuple[int, int]], seed: int
) -> None:
    rng = random.Random(seed)
    symbols = ["AAAUSDT", "BBBUSDT"]
    truth = [trade(rng.choice(symbols), 1_000 * i, str(i)) for i in range(n_trades)]
    d = Deduper(by_id)
    out: list[TradeRow] = []
    for start, length in cuts:
        out.extend(d.filter(truth[start % n_trades : start % n_trades + length]))
    out.extend(d.filter(truth))  # a full replay at the end covers every trade
    assert sorted(out) == sorted(truth)
    assert d.duplicates == sum(len(truth[s % n_trades : s % n_trades + n]) for s, n in cuts)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["AAAUSDT", "BBBUSDT"]), st.integers(0, 50)), max_size=80))
def test_each_key_gets_through_as_often_as_its_largest_batch_count(rows: list[tuple[str, int]]) -> None:
    d = Deduper(by_id)
    batch = [trade(sym, tid * 10, str(tid)) for sym, tid in rows]
    halves = [batch[: len(batch) // 2], batch[len(batch) // 2 :]]
    out = d.filter(halves[0]) + d.filter(halves[1])
    keys = {(r[2], r[8]) for r in batch}
    assert {(r[2], r[8]) for r in out} == keys
    for key in keys:
        largest = max(sum(1 for r in half if (r[2], r[8]) == key) for half in halves)
        assert sum(1 for r in out if (r[2], r[8]) == key) == largest


def test_default_bounds_cover_a_phemex_replay_of_a_quiet_symbol() -> None:
    # A quiet symbol: one trade a minute for five hours. Phemex replays its last 200 trades after
    # a resubscribe, hours old; every one of them was recorded and must be dropped.
    d = Deduper(by_fields)
    minute_us = 60_000_000
    history = [trade("sAAAUSDT", i * minute_us, None, price=1.0 + i) for i in range(300)]
    for row in history:
        assert d.filter([row]) == [row]
    assert d.keys_held("sAAAUSDT") == 256  # the count floor, not the 10 s window
    new = trade("sAAAUSDT", 300 * minute_us, None, price=999.0)
    assert d.filter([*history[-200:], new]) == [new]
    assert d.duplicates == 200


def test_default_window_keeps_ten_seconds_of_a_busy_symbol() -> None:
    # 1,000 trades/s for 30 s: the keys of the last 10 s of exchange time are kept, older ones go.
    d = Deduper(by_id)
    for i in range(30_000):
        d.filter([trade("AAAUSDT", i * 1_000, str(i))])
    assert d.keys_held("AAAUSDT") == 10_001  # times 19.999 s .. 29.999 s
    late = [trade("AAAUSDT", i * 1_000, str(i)) for i in (19_999, 29_999)]
    assert d.filter(late) == []  # a rotation's second copy, 10 s late, is still caught
    evicted = trade("AAAUSDT", 19_998 * 1_000, "19998")
    assert d.filter([evicted]) == [evicted]


def test_a_string_key_never_equals_a_stored_trade_id() -> None:
    # The common (symbol, trade_id) key is stored as the bare id; a key function that returns a
    # plain string for other rows must not collide with it.
    def mixed(row: TradeRow) -> object:
        return (row[2], row[8]) if row[5] == 1.0 else row[8]

    d = Deduper(mixed)
    a = trade("AAAUSDT", 1, "7", price=1.0)
    b = trade("AAAUSDT", 2, "7", price=2.0)
    assert d.filter([a]) == [a]
    assert d.filter([b]) == [b]
    assert d.filter([a, b]) == []
    assert d.duplicates == 2
    # A key whose first element is another symbol is kept whole.
    other = Deduper(lambda row: ("ZZZUSDT", row[8]))
    assert other.filter([a]) == [a]
    assert other.filter([a]) == []


def test_remember_adds_occurrences_across_batches() -> None:
    # Trades read back from disk in two batches, the twin fill split across them: both stay known,
    # as if the range had been taught in one batch.
    d = Deduper(by_fields)
    twin = trade("sAAAUSDT", 7, None)
    other = trade("sAAAUSDT", 8, None, price=2.0)
    d.remember([twin])
    d.remember([twin, other])
    assert d.duplicates == 0
    assert d.keys_held("sAAAUSDT") == 2
    new = trade("sAAAUSDT", 9, None, price=3.0)
    assert d.filter([twin, twin, other, new]) == [new]
    assert d.filter([twin, twin, twin]) == [twin]  # a third identical fill is genuine
    d2 = Deduper(by_id)
    d2.remember([trade("AAAUSDT", 1, "1"), trade("AAAUSDT", 2, None)])
    assert d2.filter([trade("AAAUSDT", 1, "1"), trade("AAAUSDT", 3, "3")]) == [trade("AAAUSDT", 3, "3")]
