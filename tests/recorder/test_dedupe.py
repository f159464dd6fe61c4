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


def test_the_time_array_is_compacted_relative_to_the_live_keys() -> None:
    # A symbol holding 16 keys must not carry thousands of evicted time slots (8 B each, per
    # symbol of a list of thousands).
    d = Deduper(by_id, keep_trades=16, keep_s=0.0)
    for i in range(5_000):
        d.filter([trade("AAAUSDT", i * 1_000_000, str(i))])
    state = d._symbols["AAAUSDT"]
    assert len(state.keys) == 16
    assert len(state.times) - state.head == 16
    assert len(state.times) <= 2 * 32 + 16  # never more than the live part plus its compaction slack


def test_the_runner_keeps_what_its_exchange_replays_and_a_small_floor_elsewhere() -> None:
    # Only Phemex replays history after a subscribe (200 trades): its de-duplicator keeps 256 per
    # symbol; every other stream keeps 16 beyond the 10 s window (~2 kB, not ~33 kB, per quiet
    # symbol: a list of thousands of symbols per stream).
    from pumpwatch.recorder.adapters import get_adapter
    from pumpwatch.recorder.stream.runner import StreamRunner

    def runner(stream: str) -> StreamRunner:
        return StreamRunner(
            get_adapter(stream),
            ws_url="ws://127.0.0.1:9",
            rest_url="http://127.0.0.1:9",
            instruments={},
            on_trades=lambda rows: None,
        )

    for stream in ("phemex_spot", "phemex_futures"):
        assert get_adapter(stream).replay_trades == 200
        assert runner(stream).dedupe.keep_trades == 256
    quiet = runner("binance_spot").dedupe
    assert quiet.keep_trades == 16
    minute_us = 60_000_000
    for i in range(1_000):
        quiet.filter([trade("AAAUSDT", i * minute_us, str(i))])
    assert quiet.keys_held("AAAUSDT") == 16
    assert quiet.newest_us("AAAUSDT") == 999 * minute_us  # what a resume's repair span starts from


def test_a_phemex_replay_of_a_quiet_symbol_after_a_reconnect_is_dropped() -> None:
    # Against the local Phemex: a symbol that traded 230 times, a minute apart, hours ago; the
    # reconnect's snapshot replays its last 200, every one recorded already.
    import asyncio
    import time

    from pumpwatch.recorder.adapters import get_adapter
    from pumpwatch.recorder.sim.market import instruments_for
    from pumpwatch.recorder.sim.phemex import sim_protocol
    from pumpwatch.recorder.sim.server import SimExchange
    from pumpwatch.recorder.stream.runner import StreamRunner

    stream = "phemex_futures"
    (inst,) = instruments_for([stream], ["QUIET"])[stream]
    got: list[TradeRow] = []

    async def until(cond: object, what: str) -> None:
        deadline = time.monotonic() + 10.0
        while not cond():  # type: ignore[operator]
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.02)

    async def main() -> StreamRunner:
        async with SimExchange(sim_protocol("futures"), [inst]) as ex:
            runner = StreamRunner(
                get_adapter(stream),
                ws_url=ex.ws_url,
                rest_url=ex.rest_url,
                instruments={inst.symbol: inst},
                on_trades=got.extend,
                backoff_initial_s=0.02,
                backoff_max_s=0.1,
            )
            task = asyncio.create_task(runner.run())
            try:
                await until(lambda: runner.stats.subscribed_symbols == 1, "subscribed")
                t0_us = time.time_ns() // 1000 - 5 * 3600 * 1_000_000
                rows = [
                    (t0_us + i * 60_000_000, 0, inst.symbol, inst.base, "USDT", 1.0 + i, 1.0, "buy", None)
                    for i in range(230)
                ]
                ex.publish(rows)
                await until(lambda: len(got) == 230, "230 trades")
                ex.drop_all()
                await until(lambda: runner.stats.reconnects == 1, "reconnected")
                await until(lambda: runner.stats.duplicates == 200, "the replay dropped")
                await asyncio.sleep(0.2)
            finally:
                await runner.stop()
                await task
            return runner

    runner = asyncio.run(main())
    assert len(got) == 230 and runner.stats.duplicates == 200


def test_a_phemex_key_is_stored_as_its_packed_bytes_and_tells_every_field_apart() -> None:
    # Phemex's key (symbol, packed time/price/qty/side) is kept as the bytes alone, like a trade
    # id; equal trades still match and a change of any field makes another key.
    from pumpwatch.recorder.adapters.phemex import dedupe_key

    d = Deduper(dedupe_key)
    a = trade("sAAAUSDT", 1_000, None, price=2.5, qty=0.1)
    assert d.filter([a]) == [a]
    (stored,) = d._symbols["sAAAUSDT"].keys
    assert type(stored) is bytes
    others = [
        trade("sAAAUSDT", 1_001, None, price=2.5, qty=0.1),  # time
        trade("sAAAUSDT", 1_000, None, price=2.5000000000000004, qty=0.1),  # one ulp of price
        trade("sAAAUSDT", 1_000, None, price=2.5, qty=0.10000000000000002),  # one ulp of qty
        (1_000, 1_005, "sAAAUSDT", "sAA", "USDT", 2.5, 0.1, "sell", None),  # side
        trade("sBBBUSDT", 1_000, None, price=2.5, qty=0.1),  # symbol
    ]
    assert d.filter([trade("sAAAUSDT", 1_000, None, price=2.5, qty=0.1)]) == []
    assert d.filter(others) == others
    assert d.filter([a, *others]) == []
    # remember() (restart priming) stores the same shape that filter() matches
    primed = Deduper(dedupe_key)
    primed.remember([a, *others])
    assert primed.filter([a, *others]) == []


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 5),
            st.sampled_from(["buy", "sell"]),
            st.one_of(st.sampled_from([1.0, 2.0, 0.5]), st.floats(0.001, 10)),
            st.sampled_from([1.0, 0.25, 3.0]),
        ),
        max_size=40,
    )
)
def test_packed_phemex_keys_dedupe_exactly_as_tuples_do(rows: list[tuple[int, str, float, float]]) -> None:
    # Against a reference that keys on the same fields as a tuple: the same rows pass (prices
    # and sizes as the adapter makes them: finite floats > 0).
    from pumpwatch.recorder.adapters.phemex import dedupe_key

    batch = [(t, t + 1, "sAAAUSDT", "sAA", "USDT", p, q, side, None) for t, side, p, q in rows]
    halves = [batch[: len(batch) // 2], batch[len(batch) // 2 :]]
    packed = Deduper(dedupe_key)
    reference = Deduper(by_fields)
    assert packed.filter(halves[0]) == reference.filter(halves[0])
    assert packed.filter(halves[1]) == reference.filter(halves[1])
    assert packed.filter(batch) == reference.filter(batch)
    assert packed.duplicates == reference.duplicates
