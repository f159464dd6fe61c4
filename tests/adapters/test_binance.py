"""Binance spot/futures adapter and simulated server: fixtures field by field, round trip, fuzzing."""

from __future__ import annotations

import asyncio

import msgspec
import orjson
import pytest
from helpers.adapters import (
    RECV_US,
    decode_or_parse_error,
    fixture_bytes,
    json_bytes,
    json_values,
    ms_rows,
    numeric_ids,
    sim_end_to_end,
    sim_instruments,
    trade_rows,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from pumpwatch.errors import ConfigError, ParseError
from pumpwatch.recorder.adapter import Control, Instrument
from pumpwatch.recorder.adapters import binance, get_adapter
from pumpwatch.recorder.sim.binance import decimal_str, sim_protocol
from pumpwatch.recorder.sim.protocol import SimSession

SPOT = get_adapter("binance_spot")
FUT = get_adapter("binance_futures")
BNB = {"BNBBTC": Instrument("BNBBTC", "BNB", "BTC")}
FUT_INSTS = {"BTCUSDT": Instrument("BTCUSDT", "BTC", "USDT"), "CTKUSDT": Instrument("CTKUSDT", "CTK", "USDT")}


def _fx(name: str) -> bytes:
    return fixture_bytes("binance", name)


# -- trades, field by field -------------------------------------------------------------------


def test_spot_trade_microseconds_combined() -> None:
    rows = SPOT.decode(_fx("spot_trade.json"), 1672515782200000, BNB)
    assert rows == [
        (1672515782136407, 1672515782200000, "BNBBTC", "BNB", "BTC", 0.001, 100.0, "sell", "12345")
    ]


def test_spot_trade_2019_capture_in_ms_with_removed_order_ids() -> None:
    rows = SPOT.decode(_fx("spot_trade_2019_with_order_ids.json"), 1554076801000000, BNB)
    assert isinstance(rows, list) and len(rows) == 1
    t, recv, symbol, base, quote, price, qty, side, tid = rows[0]
    assert t == 1554076800940000  # ms -> µs
    assert recv == 1554076801000000
    assert (symbol, base, quote) == ("BNBBTC", "BNB", "BTC")
    assert price == 0.0042699 and qty == 33.82
    assert side == "buy"  # m=false: the buyer took liquidity
    assert tid == "40756030"


def test_spot_raw_stream_payload_without_wrapper() -> None:
    rows = SPOT.decode(_fx("spot_trade_raw_ms.json"), 1672515782136000, BNB)
    assert rows == [
        (1672515782136000, 1672515782136000, "BNBBTC", "BNB", "BTC", 0.001, 100.0, "sell", "12345")
    ]


def test_futures_aggtrade_uses_aggregate_id_and_ms_time() -> None:
    rows = FUT.decode(_fx("futures_aggtrade.json"), RECV_US, FUT_INSTS)
    assert rows == [(1767323045678000, RECV_US, "BTCUSDT", "BTC", "USDT", 87914.7, 0.012, "sell", "5933014")]
    old = FUT.decode(_fx("futures_aggtrade_2021_raw.json"), 1626992741600000, FUT_INSTS)
    assert old == [
        (1626992741421000, 1626992741600000, "CTKUSDT", "CTK", "USDT", 1.011, 10.0, "buy", "16599292")
    ]


def test_futures_trade_variant_keeps_market_and_drops_insurance_fund() -> None:
    recv = 1596240000600000
    rows = FUT.decode(_fx("futures_trade_market.json"), recv, FUT_INSTS)
    assert rows == [(1596240000519000, recv, "BTCUSDT", "BTC", "USDT", 11343.67, 0.467, "sell", "173525189")]
    assert FUT.decode(_fx("futures_trade_insurance_fund.json"), recv, FUT_INSTS) == []


# -- control frames ---------------------------------------------------------------------------


def test_control_frames() -> None:
    assert SPOT.decode(_fx("spot_subscribe_ack.json"), RECV_US, BNB) == Control("ack", req_id="1")
    assert FUT.decode(_fx("futures_subscribe_ack.json"), RECV_US, BNB) == Control("ack", req_id="sub1")
    assert SPOT.decode(_fx("spot_subscribe_error.json"), RECV_US, BNB) == Control(
        "ack", req_id="7", ok=False, message="code 2: Invalid request: invalid stream"
    )
    legacy = SPOT.decode(_fx("spot_error_legacy.json"), RECV_US, BNB)
    assert isinstance(legacy, Control) and legacy.kind == "error" and legacy.req_id is None
    assert legacy.message.startswith("code 2: Invalid request: missing field")
    listing = SPOT.decode(_fx("spot_list_subscriptions.json"), RECV_US, BNB)
    assert listing == Control("info", req_id="3", message="result")
    for name in ("spot_server_shutdown.json", "spot_server_shutdown_raw.json"):
        assert SPOT.decode(_fx(name), RECV_US, BNB) == Control("reconnect", message="serverShutdown")


def test_error_naming_a_stream_lists_its_symbol() -> None:
    frame = '{"error":{"code":2,"msg":"Invalid request: invalid stream","data":"000usdt@trade"},"id":1}'
    out = SPOT.decode(frame, RECV_US, BNB)
    assert out == Control(
        "ack", req_id="1", ok=False, symbols=("000USDT",), message="code 2: Invalid request: invalid stream"
    )


# -- rejections -------------------------------------------------------------------------------

GOOD = orjson.loads(_fx("spot_trade.json"))


def _with(**fields: object) -> bytes:
    data = {**GOOD["data"], **fields}
    return json_bytes({"stream": GOOD["stream"], "data": data})


@pytest.mark.parametrize(
    "frame",
    [
        b"not json",
        b"[1,2]",
        b'"trade"',
        b"{}",
        _with(s="XYZBTC"),  # not subscribed: base unknown
        _with(q="abc"),
        _with(p="NaN"),
        _with(p="inf"),
        _with(q="-1"),
        _with(q="0"),
        _with(T="1672515782136407"),
        _with(T=True),
        _with(m="true"),
        _with(t="12345"),
        _with(T=1672515782136407 + 2 * 86_400_000_000),  # implausible time
        _with(X=5),
        orjson.dumps({"stream": "bnbbtc@trade", "data": {"e": "trade", "s": "BNBBTC"}}),
        orjson.dumps({"stream": "bnbbtc@depth", "data": {"e": "depthUpdate"}}),
        b'{"stream":"bnbbtc@trade","data":[1]}',
    ],
)
def test_garbage_is_a_parse_error(frame: bytes) -> None:
    with pytest.raises(ParseError):
        SPOT.decode(frame, 1672515782200000, BNB)


# -- leniency: a shape that differs from the docs only where meaning does not depend on it -----


def test_number_where_a_string_is_documented_still_yields_the_trade() -> None:
    # Before issue 9 a numeric price was refused; its meaning is plain, so it is a trade.
    expected = [(1672515782136407, 1672515782200000, "BNBBTC", "BNB", "BTC", 0.001, 100.0, "sell", "12345")]
    assert SPOT.decode(_with(p=0.001), 1672515782200000, BNB) == expected
    assert SPOT.decode(_with(p=0.001, q=100), 1672515782200000, BNB) == expected


def test_extra_fields_and_missing_tags_still_yield_the_trade() -> None:
    recv = 1672515782200000
    expected = [(1672515782136407, recv, "BNBBTC", "BNB", "BTC", 0.001, 100.0, "sell", "12345")]
    assert SPOT.decode(_with(extra={"x": [1, 2]}, Z="new"), recv, BNB) == expected
    no_stream = json_bytes({"data": GOOD["data"]})  # the wrapper without its stream name
    assert SPOT.decode(no_stream, recv, BNB) == expected
    untagged = {k: v for k, v in GOOD["data"].items() if k != "e"}  # no event tag: id t
    assert SPOT.decode(json_bytes({"stream": GOOD["stream"], "data": untagged}), recv, BNB) == expected
    agg = orjson.loads(_fx("futures_aggtrade.json"))["data"]
    del agg["e"]  # an untagged payload with an aggregate id is an aggTrade
    assert FUT.decode(json_bytes(agg), RECV_US, FUT_INSTS) == [
        (1767323045678000, RECV_US, "BTCUSDT", "BTC", "USDT", 87914.7, 0.012, "sell", "5933014")
    ]


def test_trade_rows_is_reusable_for_rest_history_rows() -> None:
    # A REST aggTrades row: the payload's fields without e/s (issue 10 normalizes these).
    rest = b'{"a":26129,"p":"0.01633102","q":"4.70443515","f":27781,"l":27781,"T":1498793709153,"m":true}'
    trade = msgspec.json.decode(rest, type=binance.Trade)
    inst = Instrument("LTCBTC", "LTC", "BTC")
    assert binance.trade_rows([trade], inst, 1498793709200000) == [
        (
            1498793709153000,
            1498793709200000,
            "LTCBTC",
            "LTC",
            "BTC",
            0.01633102,
            4.70443515,
            "sell",
            "26129",
        )
    ]


def test_options_are_validated_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"streams\.binance_futures\.options\.channel"):
        get_adapter("binance_futures", {"channel": "depth"})
    with pytest.raises(ConfigError, match=r"streams\.binance_spot\.options\.chanel: unknown option"):
        get_adapter("binance_spot", {"chanel": "trade"})
    with pytest.raises(ConfigError, match=r"streams\.binance_futures\.options\.time_unit"):
        get_adapter("binance_futures", {"time_unit": "MICROSECOND"})  # a spot-only option
    with pytest.raises(ConfigError, match=r"streams\.binance_spot\.options\.quotes"):
        get_adapter("binance_spot", {"quotes": "USDT"})
    assert get_adapter("binance_spot", {"quotes": ["usdc"]}).default_options["quotes"] == ("USDT",)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_fuzz_json_values_only_parse_error(value: object) -> None:
    decode_or_parse_error(SPOT.decode, json_bytes(value), BNB)
    decode_or_parse_error(FUT.decode, json_bytes({"stream": "x", "data": value}), FUT_INSTS)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(GOOD["data"])), json_values)
def test_fuzz_one_field_of_a_real_trade(key: str, value: object) -> None:
    out = decode_or_parse_error(SPOT.decode, _with(**{key: value}), BNB, recv_us=1672515782200000)
    assert out is None or isinstance(out, list)


# -- round trip through the simulated server --------------------------------------------------


@pytest.mark.parametrize(("stream", "step_us"), [("binance_spot", 1), ("binance_futures", 1000)])
def test_round_trip_through_sim_encode(stream: str, step_us: int) -> None:
    adapter = get_adapter(stream)
    insts = sim_instruments(stream)
    encode = sim_protocol(stream.split("_")[1]).encode_trades

    @settings(max_examples=60, deadline=None)
    @given(trade_rows(insts, numeric_ids, time_step_us=step_us))
    def check(rows: list) -> None:
        frames = encode(rows, insts)
        decoded = [row for f in frames for row in adapter.decode(f, RECV_US, insts)]
        assert decoded == rows

    check()


def test_decimal_str_is_positional_and_exact() -> None:
    assert decimal_str(1e-05) == "0.00001"
    assert decimal_str(100.0) == "100"
    assert decimal_str(1e16) == "10000000000000000"
    assert decimal_str(0.1 + 0.2) == "0.30000000000000004"


# -- subscribe, URLs, limits, instruments -----------------------------------------------------


def test_subscribe_frames_as_documented() -> None:
    assert SPOT.subscribe(["BTCUSDT", "0GUSDT"], "1") == [
        '{"method":"SUBSCRIBE","params":["btcusdt@trade","0gusdt@trade"],"id":1}'
    ]
    assert FUT.subscribe(["BTCUSDT"], "a7") == [
        '{"method":"SUBSCRIBE","params":["btcusdt@aggTrade"],"id":"a7"}'
    ]
    assert SPOT.unsubscribe(["BTCUSDT"], "312") == [
        '{"method":"UNSUBSCRIBE","params":["btcusdt@trade"],"id":312}'
    ]
    trade = get_adapter("binance_futures", {"channel": "trade"})
    assert trade.subscribe(["BTCUSDT"], "2") == ['{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":2}']
    with pytest.raises(ConfigError):
        get_adapter("binance_futures", {"channel": "depth"})


def test_connect_targets_add_path_query_and_route() -> None:
    assert SPOT.connect_target("wss://stream.binance.com:9443", None, "c1").url == (
        "wss://stream.binance.com:9443/stream?timeUnit=MICROSECOND"
    )
    assert SPOT.connect_target("ws://127.0.0.1:5000/", None, "c1").url == (
        "ws://127.0.0.1:5000/stream?timeUnit=MICROSECOND"
    )
    assert FUT.connect_target("wss://fstream.binance.com/market", None, "c").url == (
        "wss://fstream.binance.com/market/stream"
    )
    # The unrouted legacy base is silently dead for aggTrade: it gets its route.
    assert (
        FUT.connect_target("wss://fstream.binance.com", None, "c").url
        == "wss://fstream.binance.com/market/stream"
    )
    trade = get_adapter("binance_futures", {"channel": "trade"})
    assert trade.connect_target("wss://fstream.binance.com", None, "c").url == (
        "wss://fstream.binance.com/public/stream"
    )


def test_limits_as_data() -> None:
    assert (SPOT.max_symbols_per_connection, FUT.max_symbols_per_connection) == (1024, 1024)
    assert (SPOT.max_requests_per_s, FUT.max_requests_per_s) == (4.0, 9.0)
    assert SPOT.ping is None and FUT.ping is None  # server WebSocket pings
    assert SPOT.max_lifetime_s == FUT.max_lifetime_s == 86_400.0
    assert SPOT.stream == "binance_spot" and FUT.stream == "binance_futures"


def test_instruments_from_exchange_info_fixtures() -> None:
    assert SPOT.instruments_request is not None and SPOT.parse_instruments is not None
    req = SPOT.instruments_request("https://api.binance.com/")
    assert (req.method, req.url) == ("GET", "https://api.binance.com/api/v3/exchangeInfo")
    insts, follow = SPOT.parse_instruments(_fx("spot_exchange_info.json"))
    assert follow is None
    # LUNAUSDT is BREAK: kept, as a pair announced for listing shows BREAK until it opens.
    assert insts == [
        Instrument("BTCUSDT", "BTC", "USDT"),
        Instrument("0GUSDT", "0G", "USDT"),
        Instrument("LUNAUSDT", "LUNA", "USDT"),
    ]
    assert FUT.instruments_request is not None and FUT.parse_instruments is not None
    assert (
        FUT.instruments_request("https://fapi.binance.com").url
        == "https://fapi.binance.com/fapi/v1/exchangeInfo"
    )
    insts, _ = FUT.parse_instruments(_fx("futures_exchange_info.json"))
    assert insts == [Instrument("BTCUSDT", "BTC", "USDT"), Instrument("1000PEPEUSDT", "1000PEPE", "USDT")]
    with pytest.raises(ParseError):
        SPOT.parse_instruments(b'{"symbols":[{"symbol":"X"}]}')


# -- simulated server protocol ----------------------------------------------------------------


def _session(
    stream: str, path: str = "/stream?timeUnit=MICROSECOND", reject: set[str] | None = None
) -> SimSession:
    return SimSession("c1", path, {}, sim_instruments(stream), reject=reject or set())


def test_sim_subscribe_ack_reject_and_list() -> None:
    proto = sim_protocol("spot")
    session = _session("binance_spot", reject={"ETHUSDT"})
    out = proto.on_message(session, SPOT.subscribe(["BTCUSDT", "0GUSDT", "NOPEUSDT"], "1")[0], 0)
    assert out == ['{"result":null,"id":1}'] and session.subscribed == {"BTCUSDT", "0GUSDT"}
    refused = proto.on_message(session, SPOT.subscribe(["SOLUSDT", "ETHUSDT"], "2")[0], 0)
    assert SPOT.decode(refused[0], RECV_US, {}) == Control(
        "ack", req_id="2", ok=False, message="code 2: Invalid request: invalid stream ethusdt@trade"
    )
    assert session.subscribed == {"BTCUSDT", "0GUSDT"}  # the whole request was refused
    listed = orjson.loads(proto.on_message(session, '{"method":"LIST_SUBSCRIPTIONS","id":3}', 0)[0])
    assert listed == {"result": ["0gusdt@trade", "btcusdt@trade"], "id": 3}
    proto.on_message(session, SPOT.unsubscribe(["BTCUSDT"], "4")[0], 0)
    assert session.subscribed == {"0GUSDT"}
    bad = SPOT.decode(proto.on_message(session, "{oops", 0)[0], RECV_US, {})
    assert isinstance(bad, Control) and bad.kind == "error"


def test_sim_futures_routes_and_silent_legacy_url() -> None:
    proto = sim_protocol("futures")
    assert proto.accept("/market/stream", {}) is None
    assert proto.accept("/public/ws/btcusdt@trade", {}) is None
    assert proto.accept("/stream", {}) is None
    assert proto.accept("/v5/public/spot", {}) == 404
    routed = _session("binance_futures", "/market/stream")
    assert proto.on_message(routed, FUT.subscribe(["BTCUSDT"], "1")[0], 0) == ['{"result":null,"id":1}']
    assert routed.subscribed == {"BTCUSDT"}
    legacy = _session("binance_futures", "/stream")
    assert proto.on_message(legacy, FUT.subscribe(["BTCUSDT"], "1")[0], 0) == ['{"result":null,"id":1}']
    assert legacy.subscribed == set()  # acked, then nothing: pitfall 1


def test_sim_shutdown_notice_and_instrument_route_feed_the_adapter() -> None:
    for market, adapter in (("spot", SPOT), ("futures", FUT)):
        proto = sim_protocol(market)
        assert proto.shutdown_notice is not None
        assert adapter.decode(proto.shutdown_notice(), RECV_US, {}) == Control(
            "reconnect", message="serverShutdown"
        )
        insts = list(sim_instruments(f"binance_{market}").values())
        ((method, path), handler) = next(iter(proto.http_routes.items()))
        assert adapter.instruments_request is not None and adapter.parse_instruments is not None
        assert adapter.instruments_request("http://127.0.0.1:1").url == f"http://127.0.0.1:1{path}"
        response = handler({}, b"", insts, "")
        assert response.status == 200 and method == "GET"
        assert adapter.parse_instruments(response.body) == (insts, None)
    assert sim_protocol("spot").server_ping_interval_s == 20.0


# -- end to end over sockets, against recorder/sim/server.py ---------------------------------


@pytest.mark.parametrize("stream", ["binance_spot", "binance_futures"])
def test_end_to_end_against_the_sim_server(stream: str) -> None:
    insts = sim_instruments(stream)
    rows = ms_rows(insts)
    trades, controls, rest = asyncio.run(sim_end_to_end(stream, rows, acks=1))
    assert trades == rows
    assert controls == [Control("ack", req_id="1")]
    assert rest == list(insts.values())


def test_end_to_end_refused_request_subscribes_nothing() -> None:
    trades, controls, _ = asyncio.run(sim_end_to_end("binance_spot", [], acks=1, reject=["ETHUSDT"]))
    assert trades == []
    assert controls == [
        Control("ack", req_id="1", ok=False, message="code 2: Invalid request: invalid stream ethusdt@trade")
    ]
