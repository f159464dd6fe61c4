"""Phemex spot/perpetual adapter and simulated server: scaled values, snapshots, id-less dedupe."""

from __future__ import annotations

import asyncio
import dataclasses
import struct
import time
from collections.abc import Callable

import orjson
import pytest
from helpers.adapters import (
    RECV_US,
    decode_or_parse_error,
    fixture_bytes,
    json_bytes,
    json_values,
    sim_instruments,
    trade_rows,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from pumpwatch.errors import ConfigError, ParseError
from pumpwatch.recorder.adapter import Adapter, Control, Instrument
from pumpwatch.recorder.adapters import get_adapter, phemex
from pumpwatch.recorder.sim.phemex import sim_protocol
from pumpwatch.recorder.sim.protocol import SimSession
from pumpwatch.recorder.sim.server import SimExchange
from pumpwatch.recorder.stream.runner import StreamRunner
from pumpwatch.segments.schema import TradeRow
from pumpwatch.timeunits import US_PER_DAY as DAY_US

SPOT = get_adapter("phemex_spot")
FUT = get_adapter("phemex_futures")
SPOT_INSTS = {
    "sBTCUSDT": Instrument("sBTCUSDT", "BTC", "USDT", price_scale=8, qty_scale=8),
    "sSHIBUSDT": Instrument("sSHIBUSDT", "SHIB", "USDT", price_scale=8, qty_scale=4),
}
FUT_INSTS = {"BTCUSDT": Instrument("BTCUSDT", "BTC", "USDT")}
SIM_SPOT = sim_instruments("phemex_spot")
SIM_FUT = sim_instruments("phemex_futures")


def _fx(name: str) -> bytes:
    return fixture_bytes("phemex", name)


# -- trades, field by field -------------------------------------------------------------------


def test_spot_trade_scaled_integers_and_no_id() -> None:
    recv = 1591268226500000
    assert SPOT.decode(_fx("spot_trade.json"), recv, SPOT_INSTS) == [
        (1591268226414925, recv, "sBTCUSDT", "BTC", "USDT", 9544.88, 0.002791, "sell", None)
    ]


def test_spot_qty_scale_comes_from_the_instrument_not_assumed() -> None:
    frame = b'{"sequence":5,"symbol":"sSHIBUSDT","trades":[[1591268226414925245,"Buy",1234,56789]],'
    rows = SPOT.decode(frame + b'"type":"incremental"}', 1591268226500000, SPOT_INSTS)
    assert isinstance(rows, list)
    (row,) = rows
    assert row[5] == 1234 / 10**8 and row[6] == 5.6789  # valueScale 4 for SHIB
    assert row[7] == "buy"


def test_spot_snapshot_newest_first_comes_out_oldest_first() -> None:
    recv = 1573717000000000
    assert SPOT.decode(_fx("spot_snapshot.json"), recv, SPOT_INSTS) == [
        (1573716988636291, recv, "sBTCUSDT", "BTC", "USDT", 8673.5, 0.0012, "buy", None),
        (1573716991485286, recv, "sBTCUSDT", "BTC", "USDT", 8673.5, 0.0051, "buy", None),
        (1573716995033683, recv, "sBTCUSDT", "BTC", "USDT", 8673.5, 0.0052, "buy", None),
        (1573716998128563, recv, "sBTCUSDT", "BTC", "USDT", 8673.5, 0.0056, "buy", None),
    ]


def test_perpetual_trade_real_values() -> None:
    recv = 1669198793500000
    assert FUT.decode(_fx("futures_trade.json"), recv, FUT_INSTS) == [
        (1669198793402790, recv, "BTCUSDT", "BTC", "USDT", 16545.6, 0.7, "buy", None)
    ]


def test_perpetual_multi_trade_same_ns_keeps_exchange_order() -> None:
    recv = 1666856077000000
    assert FUT.decode(_fx("futures_multi_trade.json"), recv, FUT_INSTS) == [
        (1666856076819029, recv, "BTCUSDT", "BTC", "USDT", 20700.3, 0.649, "sell", None),
        (1666856076819029, recv, "BTCUSDT", "BTC", "USDT", 20700.1, 0.002, "sell", None),
    ]


def test_perpetual_snapshot() -> None:
    recv = 1666856063000000
    assert FUT.decode(_fx("futures_snapshot.json"), recv, FUT_INSTS) == [
        (1666854025545354, recv, "BTCUSDT", "BTC", "USDT", 20699.0, 0.001, "buy", None),
        (1666856062351916, recv, "BTCUSDT", "BTC", "USDT", 20703.6, 0.669, "sell", None),
    ]


def test_snapshot_history_older_than_a_day_is_skipped_but_live_old_trades_are_errors() -> None:
    recv = 1666854025545354 + DAY_US + 1_000_000_000  # oldest row 1 000 s past the bound, newest inside
    rows = FUT.decode(_fx("futures_snapshot.json"), recv, FUT_INSTS)
    assert isinstance(rows, list) and [r[0] for r in rows] == [1666856062351916]
    live = _fx("futures_snapshot.json").replace(b'"snapshot"', b'"incremental"')
    with pytest.raises(ParseError, match="implausible time"):
        FUT.decode(live, recv, FUT_INSTS)


def test_dedupe_key_identifies_a_trade_without_id() -> None:
    recv = 1666856077000000
    snap = FUT.decode(_fx("futures_snapshot.json"), recv, FUT_INSTS)
    live = FUT.decode(
        b'{"sequence":1,"symbol":"BTCUSDT","trades_p":[[1666856062351916300,"Sell","20703.6","0.669"]],'
        b'"type":"incremental"}',
        recv + 5,
        FUT_INSTS,
    )
    assert isinstance(snap, list) and isinstance(live, list)
    assert (
        FUT.dedupe_key(live[0])
        == FUT.dedupe_key(snap[1])
        == (
            "BTCUSDT",
            struct.pack("<qdd", 1666856062351916, 20703.6, 0.669) + b"sell",
        )  # time, price, qty, side
    )
    assert FUT.dedupe_key(snap[0]) != FUT.dedupe_key(snap[1])
    multi = FUT.decode(_fx("futures_multi_trade.json"), recv, FUT_INSTS)
    assert isinstance(multi, list) and FUT.dedupe_key(multi[0]) != FUT.dedupe_key(multi[1])


# -- control frames and garbage --------------------------------------------------------------


def test_ack_error_pong() -> None:
    assert SPOT.decode(_fx("spot_subscribe_ack.json"), RECV_US, {}) == Control("ack", req_id="1234")
    assert FUT.decode(_fx("spot_subscribe_error.json"), RECV_US, {}) == Control(
        "ack", req_id="1", ok=False, message="6001 invalid argument"
    )
    assert SPOT.decode(_fx("spot_pong.json"), RECV_US, {}) == Control("pong", req_id="1234")


@pytest.mark.parametrize(
    "frame",
    [
        b'{"sequence":1,"symbol":"sBTCUSDT","trades":[[1591268226414925245,"Sell",954488000000.0,279100]],"type":"incremental"}',
        b'{"sequence":1,"symbol":"sBTCUSDT","trades":[[1591268226414925245,"Sell","954488000000",279100]],"type":"incremental"}',
        b'{"sequence":1,"symbol":"sBTCUSDT","trades":[[1591268226414925245,"Sell",0,279100]],"type":"incremental"}',
        b'{"sequence":1,"symbol":"sBTCUSDT","trades":[[1591268226414925245,"Sell",954488000000,-5]],"type":"incremental"}',
        b'{"sequence":1,"symbol":"sBTCUSDT","trades":[[1591268226414925245,"bid",954488000000,279100]],"type":"incremental"}',
        b'{"sequence":1,"symbol":"sBTCUSDT","trades":[[1591268226414925245.0,"Sell",954488000000,279100]],"type":"incremental"}',
        b'{"sequence":1,"symbol":"sBTCUSDT","trades":[[1591268226414925245,"Sell",954488000000]],"type":"incremental"}',
        b'{"sequence":1,"symbol":"sBTCUSDT","trades":[[1591268226414925245,"Sell",'
        + b"9" * 400
        + b',279100]],"type":"incremental"}',
        b'{"sequence":1,"symbol":"sBTCUSDT","trades":[],"type":"replay"}',
        b'{"sequence":1,"symbol":"sETHUSDT","trades":[],"type":"incremental"}',
        b'{"sequence":1,"symbol":"BTCUSDT","trades_p":[],"type":"incremental"}',
        b'{"book":{"asks":[],"bids":[]},"symbol":"sBTCUSDT","type":"snapshot"}',
        b'{"error":null,"id":1,"result":{"status":"weird"}}',
        b"[]",
        b"not json",
    ],
)
def test_spot_garbage_is_a_parse_error(frame: bytes) -> None:
    with pytest.raises(ParseError):
        SPOT.decode(frame, 1591268226500000, SPOT_INSTS)


@pytest.mark.parametrize("value", ['"NaN"', '"inf"', '"0"', '"-0.5"', "true", "null", '"1e999"', '"abc"'])
def test_perpetual_bad_numbers_are_parse_errors(value: str) -> None:
    frame = b'{"sequence":1,"symbol":"BTCUSDT","trades_p":[[1669198793402790477,"Buy","16545.6",%s]],'
    frame += b'"type":"incremental"}'
    with pytest.raises(ParseError):
        FUT.decode(frame % value.encode(), 1669198793500000, FUT_INSTS)


def _spot_rows_frame(rows: str) -> bytes:
    return b'{"sequence":1,"symbol":"sBTCUSDT","trades":[%s],"type":"incremental"}' % rows.encode()


def test_spot_incremental_out_of_order_comes_out_oldest_first_ties_in_exchange_order() -> None:
    recv = 1591268226500000
    frame = _spot_rows_frame(
        '[1591268226414925245,"Sell",954488000000,279100],'
        '[1591268226314925245,"Buy",954480000000,100],'
        '[1591268226414925999,"Buy",954489000000,200]'
    )
    assert SPOT.decode(frame, recv, SPOT_INSTS) == [
        (1591268226314925, recv, "sBTCUSDT", "BTC", "USDT", 9544.8, 0.000001, "buy", None),
        (1591268226414925, recv, "sBTCUSDT", "BTC", "USDT", 9544.88, 0.002791, "sell", None),
        (1591268226414925, recv, "sBTCUSDT", "BTC", "USDT", 9544.89, 0.000002, "buy", None),
    ]


def test_spot_scale_beyond_the_fast_path_still_exact() -> None:
    insts = {"sBTCUSDT": Instrument("sBTCUSDT", "BTC", "USDT", price_scale=20, qty_scale=8)}
    frame = _spot_rows_frame('[1591268226414925245,"Sell",954488000000,279100]')
    assert SPOT.decode(frame, 1591268226500000, insts) == [
        (
            1591268226414925,
            1591268226500000,
            "sBTCUSDT",
            "BTC",
            "USDT",
            954488000000 / 10**20,
            0.002791,
            "sell",
            None,
        )
    ]


@pytest.mark.parametrize(
    "row",
    [
        '[1591268226414925245,"Sell",true,279100]',
        '[1591268226414925245,"Sell",954488000000,false]',
        '[true,"Sell",954488000000,279100]',
        '[1591268226414925245,"Sell",954488000000,279100,7]',
        '[1591268226414925245,"Sell",954488000000,0]',
        '[1591268226414925245,["Sell"],954488000000,279100]',
    ],
)
def test_spot_bad_row_after_good_rows_is_a_parse_error(row: str) -> None:
    good = '[1591268226414925245,"Sell",954488000000,279100]'
    with pytest.raises(ParseError):
        SPOT.decode(_spot_rows_frame(f"{good},{good},{row}"), 1591268226500000, SPOT_INSTS)


def _perp_frame(*rows: str) -> bytes:
    body = ",".join(rows).encode()
    return b'{"sequence":1,"symbol":"BTCUSDT","trades_p":[%s],"type":"incremental"}' % body


def test_perpetual_numbers_sent_as_json_numbers_and_multipliers_take_the_careful_path() -> None:
    recv = 1669198793500000
    frame = _perp_frame('[1669198793402790477,"Sell",16545.6,2]')
    assert FUT.decode(frame, recv, FUT_INSTS) == [
        (1669198793402790, recv, "BTCUSDT", "BTC", "USDT", 16545.6, 2.0, "sell", None)
    ]
    lots = {"BTCUSDT": Instrument("BTCUSDT", "BTC", "USDT", multiplier=0.001)}
    assert FUT.decode(_fx("futures_trade.json"), recv, lots) == [
        (1669198793402790, recv, "BTCUSDT", "BTC", "USDT", 16545.6, 0.7 * 0.001, "buy", None)
    ]


@pytest.mark.parametrize(
    "row",
    [
        '[1669198793402790477.0,"Buy","16545.6","0.7"]',
        '[true,"Buy","16545.6","0.7"]',
        '["1669198793402790477","Buy","16545.6","0.7"]',
        '[1669198793402790477,"buy","16545.6","0.7"]',
        '[1669198793402790477,"Buy",false,"0.7"]',
        '[1669198793402790477,"Buy","-inf","0.7"]',
        '[1869198793402790477,"Buy","16545.6","0.7"]',
    ],
)
def test_perpetual_bad_row_after_a_good_row_is_a_parse_error(row: str) -> None:
    frame = _perp_frame('[1669198793402790477,"Buy","16545.6","0.7"]', row)
    with pytest.raises(ParseError):
        FUT.decode(frame, 1669198793500000, FUT_INSTS)


# -- leniency: a shape that differs from the docs only where meaning does not depend on it -----


def test_missing_type_tag_and_extra_fields_still_yield_the_trades() -> None:
    recv = 1591268226500000
    frame = b'{"symbol":"sBTCUSDT","trades":[[1591268226414925245,"Sell",954488000000,279100]],"new":[1]}'
    assert SPOT.decode(frame, recv, SPOT_INSTS) == [
        (1591268226414925, recv, "sBTCUSDT", "BTC", "USDT", 9544.88, 0.002791, "sell", None)
    ]
    perp = b'{"symbol":"BTCUSDT","trades_p":[[1669198793402790477,"Buy",16545.6,"0.7"]],"sequence":"x"}'
    assert FUT.decode(perp, 1669198793500000, FUT_INSTS) == [
        (1669198793402790, 1669198793500000, "BTCUSDT", "BTC", "USDT", 16545.6, 0.7, "buy", None)
    ]


def test_trade_rows_are_reusable_for_rest_history_rows() -> None:
    rows = [(1669198793402790477, "Buy", "16545.6", "0.7")]
    assert phemex.perp_trade_rows(rows, FUT_INSTS["BTCUSDT"], 1669198793500000, snapshot=False) == [
        (1669198793402790, 1669198793500000, "BTCUSDT", "BTC", "USDT", 16545.6, 0.7, "buy", None)
    ]


def test_options_are_validated_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"streams\.phemex_spot\.options\.ping_interval_s"):
        get_adapter("phemex_spot", {"ping_interval_s": 45})
    with pytest.raises(ConfigError, match=r"streams\.phemex_futures\.options\.max_symbols_per_connection"):
        get_adapter("phemex_futures", {"max_symbols_per_connection": 5})


# -- subscribing, limits, ping ---------------------------------------------------------------


def test_one_symbol_per_subscribe_request() -> None:
    assert SPOT.subscribe(["sBTCUSDT"], "1234") == [
        '{"id":1234,"method":"trade.subscribe","params":["sBTCUSDT"]}'
    ]
    assert FUT.subscribe(["BTCUSDT"], "7") == ['{"id":7,"method":"trade_p.subscribe","params":["BTCUSDT"]}']
    assert FUT.unsubscribe(["BTCUSDT"], "8") == [
        '{"id":8,"method":"trade_p.unsubscribe","params":["BTCUSDT"]}'
    ]
    for a in (SPOT, FUT):
        assert a.max_symbols_per_request == 1
        # contested documented limits (20 x 5): learned at run time under a ceiling
        assert a.max_symbols_per_connection == 200 and a.learn_capacity
        assert a.max_connections is None
        assert a.ping is not None and a.ping(1234) == '{"id":1234,"method":"server.ping","params":[]}'
        assert a.ping_interval_s == 10.0 and a.ping_interval_s < 30
        assert a.quiet_timeout_s == 30.0
        assert a.connect_target("wss://ws.phemex.com", None, "c").url == "wss://ws.phemex.com"
    with pytest.raises(ConfigError):
        get_adapter("phemex_spot", {"ping_interval_s": 45})
    with pytest.raises(ConfigError):
        get_adapter("phemex_futures", {"url": "wss://phemex.com/ws"})


# -- instrument list -----------------------------------------------------------------------


def test_spot_instruments_scales_from_products_and_currencies() -> None:
    assert SPOT.instruments_request is not None and SPOT.parse_instruments is not None
    assert SPOT.instruments_request("https://api.phemex.com").url == "https://api.phemex.com/public/products"
    insts, follow_up = SPOT.parse_instruments(_fx("products.json"))
    assert follow_up is None
    # sOLDUSDT is delisted, sETHBTC not USDT, sMYSTUSDT has no currency row (scale unknown: skipped)
    assert insts == [
        Instrument("sBTCUSDT", "BTC", "USDT", price_scale=8, qty_scale=8),
        Instrument("sSHIBUSDT", "SHIB", "USDT", price_scale=8, qty_scale=4),
    ]


def test_perpetual_instruments() -> None:
    assert FUT.parse_instruments is not None
    insts, follow_up = FUT.parse_instruments(_fx("products.json"))
    assert follow_up is None
    assert insts == [Instrument("BTCUSDT", "BTC", "USDT"), Instrument("u1000PEPEUSDT", "1000PEPE", "USDT")]


# -- the simulated server ------------------------------------------------------------------


def _session(insts: dict[str, Instrument]) -> SimSession:
    return SimSession(conn_id="p1", path="/", headers={}, instruments=insts)


def test_sim_url_rules() -> None:
    proto = sim_protocol("spot")
    assert proto.accept("/", {}) is None and proto.accept("", {}) is None
    assert proto.accept("/ws", {}) == 410
    assert proto.accept("/?x=1", {}) == 410
    assert proto.idle_timeout_s == 30.0


@pytest.mark.parametrize(("market", "adapter"), [("spot", SPOT), ("futures", FUT)])
def test_sim_subscription_rules(market: str, adapter: Adapter) -> None:
    bases = [f"C{i}" for i in range(22)]
    insts = sim_instruments(f"phemex_{market}", bases)
    proto = sim_protocol(market, max_subscriptions=20)  # the default is generous
    session = _session(insts)
    symbols = list(insts)
    for n, symbol in enumerate(symbols[:20]):
        (ack,) = proto.on_message(session, adapter.subscribe([symbol], str(n))[0], 0)
        assert adapter.decode(ack, RECV_US, insts) == Control("ack", req_id=str(n))
    (full,) = proto.on_message(session, adapter.subscribe([symbols[20]], "99")[0], 0)
    out = adapter.decode(full, RECV_US, insts)
    assert isinstance(out, Control) and (out.kind, out.req_id, out.ok) == ("ack", "99", False)
    assert len(session.subscribed) == 20
    method = "trade.subscribe" if market == "spot" else "trade_p.subscribe"
    two = orjson.dumps({"id": 5, "method": method, "params": symbols[:2]})
    assert adapter.decode(proto.on_message(session, two, 0)[0], RECV_US, insts) == Control(
        "ack", req_id="5", ok=False, message="6001 invalid argument"
    )
    (unack,) = proto.on_message(session, adapter.unsubscribe([symbols[0]], "6")[0], 0)
    assert adapter.decode(unack, RECV_US, insts) == Control("ack", req_id="6")
    assert symbols[0] not in session.subscribed and len(session.subscribed) == 19
    session.reject.add(symbols[21])
    (rej,) = proto.on_message(session, adapter.subscribe([symbols[21]], "7")[0], 0)
    assert adapter.decode(rej, RECV_US, insts) == Control(
        "ack", req_id="7", ok=False, message="6001 invalid argument"
    )
    assert adapter.ping is not None
    (pong,) = proto.on_message(session, adapter.ping(77), 0)
    assert adapter.decode(pong, RECV_US, insts) == Control("pong", req_id="77")


@pytest.mark.parametrize(("market", "adapter"), [("spot", SPOT), ("futures", FUT)])
def test_sim_products_parse_back(market: str, adapter: Adapter) -> None:
    insts = SIM_SPOT if market == "spot" else SIM_FUT
    reply = sim_protocol(market).http_routes[("GET", "/public/products")]({}, b"", list(insts.values()), "")
    assert adapter.parse_instruments is not None
    assert adapter.parse_instruments(reply.body)[0] == list(insts.values())


def _scaled(rows: list[TradeRow], insts: dict[str, Instrument]) -> list[TradeRow]:
    """Rows whose price and qty are representable in the spot wire's scaled integers."""
    out = []
    for t, recv, sym, base, quote, price, qty, side, _tid in rows:
        inst = insts[sym]
        p = max(1, round(price * 10**inst.price_scale)) / 10**inst.price_scale
        q = max(1, round(qty * 10**inst.qty_scale)) / 10**inst.qty_scale
        out.append((t, recv, sym, base, quote, p, q, side, None))
    return out


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip_incremental_and_snapshot(data: st.DataObject) -> None:
    no_ids: st.SearchStrategy[str | None] = st.none()
    for market, adapter, insts in (("spot", SPOT, SIM_SPOT), ("futures", FUT, SIM_FUT)):
        rows = data.draw(trade_rows(insts, no_ids))
        if market == "spot":
            rows = _scaled(rows, insts)
        proto = sim_protocol(market)
        frames = proto.encode_trades(rows, insts)
        assert [r for f in frames for r in adapter.decode(f, RECV_US, insts)] == rows
        assert proto.snapshot is not None
        symbol = rows[0][2]
        (snap,) = proto.snapshot(symbol, rows, insts)
        assert orjson.loads(snap)["type"] == "snapshot"
        assert adapter.decode(snap, RECV_US, insts) == [r for r in rows if r[2] == symbol]


# -- fuzzing -------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    index=st.integers(min_value=0, max_value=3), value=json_values, kind=st.sampled_from(["snapshot", "x"])
)
def test_fuzz_trade_rows_of_real_frames(index: int, value: object, kind: str) -> None:
    spot = orjson.loads(_fx("spot_snapshot.json"))
    spot["trades"][1][index] = value
    decode_or_parse_error(SPOT.decode, json_bytes(spot), SPOT_INSTS, recv_us=1573717000000000)
    fut = orjson.loads(_fx("futures_trade.json"))
    fut["trades_p"][0][index] = value
    fut["type"] = kind
    decode_or_parse_error(FUT.decode, json_bytes(fut), FUT_INSTS, recv_us=1669198793500000)


# -- end to end: the generic local server and the connection runner ------------------------


def _now_rows(insts: dict[str, Instrument], n: int, start: int = 0) -> list[TradeRow]:
    now_us = time.time_ns() // 1000
    syms = sorted(insts)
    return [
        (now_us - 1000 * (n - k), 0, syms[k % len(syms)], insts[syms[k % len(syms)]].base, "USDT",
         100.25 + k, 0.5 + start + k, ("buy", "sell")[k % 2], None)
        for k in range(n)
    ]  # fmt: skip


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("market", "adapter", "insts"), [("spot", SPOT, SIM_SPOT), ("futures", FUT, SIM_FUT)]
)
def test_end_to_end_snapshot_replay_is_deduplicated(
    market: str, adapter: Adapter, insts: dict[str, Instrument]
) -> None:
    async def main() -> None:
        async with SimExchange(sim_protocol(market), list(insts.values()), idle_timeout_s=0.4) as sim:
            received: list[TradeRow] = []
            runner = StreamRunner(
                dataclasses.replace(adapter, ping_interval_s=0.1), ws_url=sim.ws_url, rest_url=sim.rest_url,
                instruments=insts, on_trades=received.extend,
                backoff_initial_s=0.02, backoff_max_s=0.2, ack_timeout_s=2.0, open_timeout_s=2.0,
            )  # fmt: skip
            task = asyncio.create_task(runner.run())
            try:
                await _until(lambda: runner.stats.subscribed_symbols == len(insts))
                await asyncio.sleep(0.6)  # past the idle timeout: server.ping keeps it open
                rows = _now_rows(insts, 10)
                sim.publish(rows)
                await _until(lambda: len(received) == len(rows))
                assert [(r[0], *r[2:]) for r in received] == [(r[0], *r[2:]) for r in rows]
                sim.drop_all()  # the resubscribe brings snapshots replaying all ten trades
                await _until(
                    lambda: runner.stats.reconnects == 1 and runner.stats.subscribed_symbols == len(insts)
                )
                more = _now_rows(insts, 3, start=100)
                sim.publish(more)
                await _until(lambda: len(received) >= len(rows) + len(more))
                await asyncio.sleep(0.2)
                assert [(r[0], *r[2:]) for r in received] == [(r[0], *r[2:]) for r in rows + more]
                assert sim.connections == 2
                assert runner.stats.duplicates == len(rows)  # every replayed trade was recognised
            finally:
                await runner.stop()
                await task

    asyncio.run(asyncio.wait_for(main(), 30))
