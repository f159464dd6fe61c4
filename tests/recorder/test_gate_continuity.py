"""Gate spot trade-id continuity on `id_market` (issue 10 §1): the stored `id` is exchange-wide,
so the decoder attaches the per-pair `id_market` beside each row (`Sequenced`) and the check
reads that. Decoder, `IdContinuity` with given ids, the runner's ingest path (real adapter,
real de-duplicator) and the worker's start-up priming."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from pumpwatch.recorder.adapter import Instrument, Sequenced, kept_sequence, sequenced
from pumpwatch.recorder.adapters import gate
from pumpwatch.recorder.history.specs import history_spec
from pumpwatch.recorder.sim.instruments import sim_instrument
from pumpwatch.recorder.stream.continuity import IdContinuity, IdHole
from pumpwatch.recorder.stream.dedupe import Deduper
from pumpwatch.recorder.stream.ingest import FrameIngest
from pumpwatch.recorder.stream.stats import RunnerStats
from pumpwatch.segments.schema import TradeRow
from pumpwatch.settings import Settings

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "gate"
GRACE_US = 1_000_000
GT = Instrument("GT_USDT", "GT", "USDT")
INSTRUMENTS = {"GT_USDT": GT, "AB_USDT": Instrument("AB_USDT", "AB", "USDT")}
T0_MS = 1_606_292_218_000


def push(tid: int, market: int | str | None, t_ms: int, pair: str = "GT_USDT", **extra: Any) -> bytes:
    result: dict[str, Any] = {
        "id": tid,
        "create_time": t_ms // 1000,
        "create_time_ms": f"{t_ms}.000",
        "side": "buy",
        "currency_pair": pair,
        "amount": "1.5",
        "price": "0.47",
        **extra,
    }
    if market is not None:
        result["id_market"] = market
    return orjson.dumps({"time": t_ms // 1000, "channel": "spot.trades", "event": "update", "result": result})


def recv(t_ms: int) -> int:
    return t_ms * 1000 + 500


# -- the decoder ---------------------------------------------------------------------------------


def test_spot_trades_carry_id_market_beside_the_stored_exchange_wide_id() -> None:
    adapter = gate.adapter("spot", {})
    assert adapter.sequenced
    out = adapter.decode(push(309143071, 2390902, T0_MS), recv(T0_MS), INSTRUMENTS)
    assert type(out) is Sequenced and out.seq == [2390902]
    assert out[0][8] == "309143071"  # the row (and the store) keep `id`
    out = adapter.decode(push(309143072, "2390903", T0_MS + 1), recv(T0_MS + 1), INSTRUMENTS)
    assert isinstance(out, Sequenced) and out.seq == [2390903]


def test_the_documented_sample_decodes_and_its_range_never_overrides_id_market() -> None:
    # The docs' sample carries `id_market` twice and a `range` naming the first value only; the
    # decoder keeps the last `id_market` (JSON's last-wins) and ignores a range that does not hold it.
    out = gate.adapter("spot", {}).decode(
        (FIXTURES / "spot_trade.json").read_bytes(), recv(T0_MS), INSTRUMENTS
    )
    assert isinstance(out, Sequenced) and out.seq == [5736713]


@pytest.mark.parametrize(
    ("market", "span", "want"),
    [
        (7, None, 7),
        (7, "7-7", 7),
        (7, "5-9", (5, 9)),  # one push accounting for several per-pair ids
        (None, "5-9", (5, 9)),
        (None, "6-6", 6),
        (7, "9-5", 7),  # malformed ranges: id_market alone
        (7, "x-9", 7),
        (7, "1-3", 7),
        (None, None, None),  # not checked
        ("7a", None, None),
    ],
)
def test_market_ids(market: int | str | None, span: str | None, want: Any) -> None:
    trade = gate.SpotTrade(
        id=1, currency_pair="GT_USDT", side="buy", amount="1", price="1", id_market=market, range=span
    )
    assert gate.market_ids(trade) == want


def test_futures_are_not_sequenced_and_gate_spot_history_is_checked() -> None:
    assert not gate.adapter("futures", {}).sequenced
    frame = (FIXTURES / "futures_multi_trade_decimal_sizes.json").read_bytes()
    contracts = gate.parse_futures_instruments((FIXTURES / "futures_contracts.json").read_bytes())[0]
    t_ms = orjson.loads(frame)["result"][0]["create_time_ms"]
    out = gate.adapter("futures", {}).decode(frame, recv(int(t_ms)), {i.symbol: i for i in contracts})
    assert type(out) is list
    spot = history_spec("gate_spot", "http://127.0.0.1:1", {})
    futures = history_spec("gate_futures", "http://127.0.0.1:1", {})
    assert spot is not None and spot.ids_contiguous and spot.kind == "by_time"
    assert futures is not None and not futures.ids_contiguous


# -- IdContinuity on given ids ---------------------------------------------------------------------


def row(tid: int, t_us: int, symbol: str = "GT_USDT") -> TradeRow:
    return (t_us, t_us, symbol, symbol.split("_")[0], "USDT", 1.0, 1.0, "buy", str(tid))


def test_exchange_wide_ids_that_jump_open_no_hole_when_id_market_is_contiguous() -> None:
    ids = IdContinuity(GRACE_US)
    # exchange-wide ids jump by thousands (other pairs trade in between); id_market counts by one
    for k in range(50):
        assert ids.check([row(1_000 + 997 * k, 100 * k)], 10 * k, [500 + k]) is None
    assert ids.expire(10**12) == ([], [])
    assert ids.holes_seen == 0 and ids.last("GT_USDT") == (549, 4_900)


def test_a_jump_in_id_market_is_a_hole_named_in_id_market() -> None:
    ids = IdContinuity(GRACE_US)
    ids.check([row(1_000, 100), row(1_001, 200)], 0, [10, 11])
    ids.check([row(1_002, 600)], 50, [15])  # the stored ids are contiguous here: irrelevant
    holes, _ = ids.expire(50 + GRACE_US)
    assert holes == [IdHole("GT_USDT", 12, 14, 200, 600, 50 + GRACE_US)]


def test_ranges_account_for_every_id_they_name() -> None:
    ids = IdContinuity(GRACE_US)
    ids.check([row(1, 100), row(2, 200)], 0, [10, (11, 13)])
    ids.check([row(3, 300)], 0, [14])  # follows the range: no hole
    ids.check([row(4, 400)], 0, [(18, 19)])  # 15..17 missing
    ids.check([row(5, 350)], 0, [(15, 16)])  # late: fills part of it
    holes, _ = ids.expire(GRACE_US)
    assert [(h.first_missing, h.last_missing) for h in holes] == [(17, 17)]
    assert ids.last("GT_USDT") == (19, 400)
    ids.check([row(6, 500)], 0, [(19, 21)])  # overlaps the last id: the new ids follow on
    assert ids.last("GT_USDT") == (21, 500) and ids.expire(10**12) == ([], [])


def test_out_of_order_within_the_grace_is_no_hole_and_bad_entries_are_not_checked() -> None:
    ids = IdContinuity(GRACE_US)
    ids.check([row(1, 100)], 0, [10])
    ids.check([row(3, 300)], 0, [12])
    ids.check([row(2, 200)], 10, [11])  # the other connection's copy, a little late
    ids.check([row(4, 400), row(5, 500), row(6, 600)], 20, [None, "x", (9, 3)])
    assert ids.bad_ids == 3
    assert ids.expire(10**12) == ([], []) and ids.ids_filled == 1
    # a decoder that attached the wrong number of ids: counted, not checked, never raised
    assert ids.check([row(7, 700)], 0, [13, 14]) is None
    assert ids.bad_ids == 4 and ids.last("GT_USDT") == (12, 300)


def test_a_resume_settles_on_id_market() -> None:
    ids = IdContinuity(GRACE_US)
    ids.check([row(900, 100)], 0, [41])
    ids.resume("GT_USDT", since_us=200, resumed_us=5_000)
    settled = ids.check([row(990, 5_100)], 5_100, [42])
    assert settled is not None and (settled[0].last_id, settled[0].next_id) == (41, 42)


# -- the runner's ingest path: real adapter, real de-duplicator ---------------------------------------


def _ingest(ids: IdContinuity) -> tuple[FrameIngest, list[list[TradeRow]]]:
    adapter = gate.adapter("spot", {})
    stored: list[list[TradeRow]] = []
    ingest = FrameIngest(
        adapter, RunnerStats(), Deduper(adapter.dedupe_key), INSTRUMENTS, stored.append, ids=ids
    )
    return ingest, stored


def test_two_connections_and_out_of_order_pushes_make_no_false_hole() -> None:
    ids = IdContinuity(GRACE_US)
    ingest, stored = _ingest(ids)
    trades = [(5_000 + 31 * k, 700 + k, T0_MS + k) for k in range(20)]  # (id, id_market, ms)
    for tid, market, t_ms in trades:
        ingest.process(push(tid, market, t_ms), recv(t_ms))  # connection A
        ingest.process(push(tid, market, t_ms), recv(t_ms) + 3)  # connection B, a duplicate
    # two pairs interleaved, each contiguous on its own id_market
    for k, (tid, _market, t_ms) in enumerate(trades):
        ingest.process(push(tid + 1, 90 + k, t_ms, "AB_USDT"), recv(t_ms))
    # B delivers 721 before A delivers 720
    ingest.process(push(6_000, 721, T0_MS + 21), recv(T0_MS + 21))
    ingest.process(push(5_999, 720, T0_MS + 20), recv(T0_MS + 21) + 1)
    assert sum(map(len, stored)) == 20 + 20 + 2
    assert ids.expire(10**15) == ([], []) and ids.holes_seen == 1 and ids.ids_filled == 1
    assert ids.last("GT_USDT") == (721, (T0_MS + 21) * 1000) and ids.last("AB_USDT") == (
        109,
        (T0_MS + 19) * 1000,
    )


def test_a_skipped_push_is_a_hole_in_id_market_after_the_grace() -> None:
    ids = IdContinuity(GRACE_US)
    ingest, _ = _ingest(ids)
    for k in (0, 1, 2, 6, 7):  # id_market 703..705 never pushed
        ingest.process(push(10_000 + 17 * k, 700 + k, T0_MS + k), recv(T0_MS + k))
    holes, _ = ids.expire(recv(T0_MS + 6) + GRACE_US)
    assert holes == [
        IdHole("GT_USDT", 703, 705, (T0_MS + 2) * 1000, (T0_MS + 6) * 1000, recv(T0_MS + 6) + GRACE_US)
    ]


def test_kept_sequence_follows_the_rows_the_deduper_kept() -> None:
    a, b, c = row(1, 1), row(2, 2), row(3, 3)
    decoded = sequenced([a, b, c], [7, (8, 9), 10])
    assert kept_sequence(decoded, [a, b, c]) == [7, (8, 9), 10]
    assert kept_sequence(decoded, [a, c]) == [7, 10]
    assert kept_sequence(decoded, [b]) == [(8, 9)]
    assert kept_sequence([a, b], [b]) == [None]  # a decoder that attached nothing: not checked
    assert isinstance(decoded, Sequenced) and decoded == [a, b, c]
    assert kept_sequence(Sequenced([a, b]), [b]) == [None]  # `seq` never set: not checked


# -- the worker's start-up priming ------------------------------------------------------------------


@pytest.mark.parametrize(("stream", "primed"), [("gate_spot", False), ("binance_spot", True)])
def test_start_up_priming_never_feeds_a_stored_id_into_an_id_market_check(
    tmp_path: Path, stream: str, primed: bool
) -> None:
    """The store holds Gate spot's exchange-wide `id`: priming the id_market check with it would
    settle the start gap against a foreign number (a false `whole` when it is the larger)."""
    from pumpwatch.recorder.worker import StreamPipeline
    from pumpwatch.segments.writer import SegmentWriter

    settings = Settings()
    settings.data_dir = str(tmp_path / "data")
    inst = sim_instrument(stream, "AAA")
    t0 = time.time_ns() // 1000 - 30_000_000
    rows = [(t0 + i, t0 + i, inst.symbol, "AAA", "USDT", 1.0, 1.0, "buy", str(900_000 + i)) for i in range(5)]
    writer = SegmentWriter(settings.data_dir, stream, flush_interval_s=60.0)
    writer.append(rows)
    writer.close()
    pipe = StreamPipeline(settings, stream, {inst.symbol: inst})
    try:
        assert pipe.runner.ids is not None  # both streams are checked
        assert pipe.prime_dedupe(settings.data_dir) == 5
        assert pipe.runner.dedupe.filter(rows) == []  # the de-duplicator is primed either way
        assert pipe.runner.ids.last(inst.symbol) == ((900_004, t0 + 4) if primed else None)
    finally:
        pipe.close()
