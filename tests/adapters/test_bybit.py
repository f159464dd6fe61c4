"""Bybit v5 spot/linear adapter and simulated server: fixtures field by field, round trip, fuzzing."""

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
    uuid_ids,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from pumpwatch.errors import ConfigError, ParseError
from pumpwatch.recorder.adapter import Control, Instrument
from pumpwatch.recorder.adapters import bybit, get_adapter
from pumpwatch.recorder.sim.bybit import sim_protocol
from pumpwatch.recorder.sim.protocol import SimSession

SPOT = get_adapter("bybit_spot")
FUT = get_adapter("bybit_futures")
INSTS = {
    "BTCUSDT": Instrument("BTCUSDT", "BTC", "USDT"),
    "0GUSDT": Instrument("0GUSDT", "0G", "USDT"),
    "1000PEPEUSDT": Instrument("1000PEPEUSDT", "1000PEPE", "USDT"),
}


def _fx(name: str) -> bytes:
    return fixture_bytes("bybit", name)


# -- trades, field by field -------------------------------------------------------------------


def test_spot_trade_2023_capture() -> None:
    recv = 1680652847600000
    assert SPOT.decode(_fx("spot_trade_2023.json"), recv, INSTS) == [
        (1680652847524000, recv, "BTCUSDT", "BTC", "USDT", 28165.38, 0.041732, "sell", "2290000000050703789")
    ]


def test_spot_multi_trade_frame_keeps_order_and_rpi_trades() -> None:
    rows = SPOT.decode(_fx("spot_multi_trade.json"), RECV_US, INSTS)
    assert rows == [
        (1767323045676000, RECV_US, "0GUSDT", "0G", "USDT", 1.2345, 150.5, "buy", "2290000000912345671"),
        (1767323045676000, RECV_US, "0GUSDT", "0G", "USDT", 1.2346, 20.0, "buy", "2290000000912345672"),
        (1767323045678000, RECV_US, "0GUSDT", "0G", "USDT", 1.2341, 0.7, "sell", "2290000000912345673"),
    ]


def test_linear_trade_documented_sample() -> None:
    recv = 1672304486900000
    assert FUT.decode(_fx("futures_trade.json"), recv, INSTS) == [
        (
            1672304486865000,
            recv,
            "BTCUSDT",
            "BTC",
            "USDT",
            16578.5,
            0.001,
            "buy",
            "20f43950-d8dd-5b31-9112-a178eb6023af",
        )
    ]


def test_linear_block_trades_are_kept_unless_the_option_drops_them() -> None:
    frame = _fx("futures_multi_trade_with_block.json")
    rows = FUT.decode(frame, RECV_US, INSTS)
    assert rows == [
        (1767323045690000, RECV_US, "1000PEPEUSDT", "1000PEPE", "USDT", 0.0071234, 12000.0, "sell",
         "6f4bd2c4-3a0b-5a5e-9f2c-0c1e6a0f4a11"),
        (1767323045695000, RECV_US, "1000PEPEUSDT", "1000PEPE", "USDT", 0.0071, 500000.0, "buy",
         "0b1c2d3e-4f50-5617-8293-a4b5c6d7e8f9"),
    ]  # fmt: skip
    dropping = get_adapter("bybit_futures", {"drop_block_trades": True})
    assert dropping.decode(frame, RECV_US, INSTS) == rows[:1]


# -- control frames ---------------------------------------------------------------------------


def test_control_frames() -> None:
    assert SPOT.decode(_fx("spot_subscribe_ack.json"), RECV_US, INSTS) == Control("ack", req_id="10001")
    assert FUT.decode(_fx("futures_subscribe_ack.json"), RECV_US, INSTS) == Control("ack", req_id=None)
    assert SPOT.decode(_fx("spot_pong.json"), RECV_US, INSTS) == Control("pong")
    assert FUT.decode(_fx("futures_pong.json"), RECV_US, INSTS) == Control("pong")
    assert FUT.decode(_fx("futures_pong_op_pong.json"), RECV_US, INSTS) == Control("pong", req_id="test")
    assert SPOT.decode(_fx("spot_subscribe_error_args.json"), RECV_US, INSTS) == Control(
        "ack", req_id="7", ok=False, message="args size >10"
    )
    assert SPOT.decode(_fx("spot_subscribe_error_symbol.json"), RECV_US, INSTS) == Control(
        "ack",
        req_id="3",
        ok=False,
        symbols=("NOTASYMBOL",),
        message="Invalid symbol :[publicTrade.NOTASYMBOL]",
    )
    assert FUT.decode(_fx("futures_subscribe_error.json"), RECV_US, INSTS) == Control(
        "ack",
        ok=False,
        symbols=("NOTASYMBOL",),
        message="error:handler not found,topic:publicTrade.NOTASYMBOL",
    )


# -- rejections -------------------------------------------------------------------------------

GOOD = orjson.loads(_fx("futures_trade.json"))


def _with(**fields: object) -> bytes:
    return json_bytes({**GOOD, "data": [{**GOOD["data"][0], **fields}]})


@pytest.mark.parametrize(
    "frame",
    [
        b"pong",
        b"",
        b"[]",
        b'{"topic":"publicTrade.XYZUSDT","data":[]}',  # unknown symbol
        b'{"topic":"orderbook.1.BTCUSDT","data":[]}',
        b'{"topic":"publicTrade.BTCUSDT","data":{}}',
        b'{"foo":1}',
        _with(v="0"),
        _with(v="-0.1"),
        _with(p="nan"),
        _with(p="Infinity"),
        _with(S="buy"),
        _with(T="1672304486865"),
        _with(T=1672304486865 + 2 * 86_400_000),  # implausible time
        _with(s="ETHUSDT"),  # trade of another symbol than its topic
        json_bytes({**GOOD, "data": [{"T": 1672304486865}]}),
    ],
)
def test_garbage_is_a_parse_error(frame: bytes) -> None:
    with pytest.raises(ParseError):
        FUT.decode(frame, 1672304486900000, INSTS)


# -- leniency: a shape that differs from the docs only where meaning does not depend on it -----

_GOOD_ROW = (1672304486865000, 1672304486900000, "BTCUSDT", "BTC", "USDT", 16578.5, 0.001, "buy")


def test_numbers_where_strings_are_documented_still_yield_the_trade() -> None:
    # Before issue 9 these were refused; their meaning is plain, so they are trades.
    assert FUT.decode(_with(p=16578.5), 1672304486900000, INSTS) == [
        (*_GOOD_ROW, "20f43950-d8dd-5b31-9112-a178eb6023af")
    ]
    assert FUT.decode(_with(i=123, v=0.001), 1672304486900000, INSTS) == [(*_GOOD_ROW, "123")]


def test_missing_envelope_tags_and_extra_fields_still_yield_the_trade() -> None:
    bare = {"topic": GOOD["topic"], "data": [{**GOOD["data"][0], "new": {"x": 1}}]}  # no type, ts
    assert FUT.decode(json_bytes(bare), 1672304486900000, INSTS) == [
        (*_GOOD_ROW, "20f43950-d8dd-5b31-9112-a178eb6023af")
    ]
    no_bt = {**GOOD, "data": [{k: v for k, v in GOOD["data"][0].items() if k not in ("BT", "L", "seq")}]}
    assert get_adapter("bybit_futures", {"drop_block_trades": True}).decode(
        json_bytes(no_bt), 1672304486900000, INSTS
    ) == [(*_GOOD_ROW, "20f43950-d8dd-5b31-9112-a178eb6023af")]


def test_trade_rows_is_reusable_for_rest_history_rows() -> None:
    item = msgspec.convert(GOOD["data"][0], bybit.Trade)
    assert bybit.trade_rows([item], INSTS["BTCUSDT"], 1672304486900000, drop_block=False) == [
        (*_GOOD_ROW, "20f43950-d8dd-5b31-9112-a178eb6023af")
    ]


def test_options_are_validated_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"streams\.bybit_spot\.options\.channel: unknown option"):
        get_adapter("bybit_spot", {"channel": "trade"})
    with pytest.raises(ConfigError, match=r"streams\.bybit_futures\.options\.drop_block_trades"):
        get_adapter("bybit_futures", {"drop_block_trades": "yes"})


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_fuzz_json_values_only_parse_error(value: object) -> None:
    decode_or_parse_error(SPOT.decode, json_bytes(value), INSTS)
    decode_or_parse_error(FUT.decode, json_bytes({"topic": "publicTrade.BTCUSDT", "data": value}), INSTS)
    decode_or_parse_error(FUT.decode, json_bytes({"topic": "publicTrade.BTCUSDT", "data": [value]}), INSTS)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(GOOD["data"][0])), json_values)
def test_fuzz_one_field_of_a_real_trade(key: str, value: object) -> None:
    out = decode_or_parse_error(FUT.decode, _with(**{key: value}), INSTS, recv_us=1672304486900000)
    assert out is None or isinstance(out, list)


# -- round trip through the simulated server --------------------------------------------------


@pytest.mark.parametrize("stream", ["bybit_spot", "bybit_futures"])
def test_round_trip_through_sim_encode(stream: str) -> None:
    adapter = get_adapter(stream)
    insts = sim_instruments(stream)
    encode = sim_protocol(stream.split("_")[1]).encode_trades
    ids = uuid_ids if stream == "bybit_futures" else numeric_ids

    @settings(max_examples=60, deadline=None)
    @given(trade_rows(insts, ids, time_step_us=1000))
    def check(rows: list) -> None:
        frames = encode(rows, insts)
        decoded = []
        for frame in frames:
            out = adapter.decode(frame, RECV_US, insts)
            assert isinstance(out, list) and 0 < len(out) <= 1024
            decoded.extend(out)
        assert decoded == rows

    check()


def test_sim_splits_long_batches_at_1024_trades() -> None:
    insts = sim_instruments("bybit_spot", ["BTC"])
    rows = [
        (1767323045000000 + i * 1000, RECV_US, "BTCUSDT", "BTC", "USDT", 1.5, 2.0, "buy", str(i))
        for i in range(2500)
    ]
    frames = sim_protocol("spot").encode_trades(rows, insts)
    assert [len(orjson.loads(f)["data"]) for f in frames] == [1024, 1024, 452]
    assert [r for f in frames for r in SPOT.decode(f, RECV_US, insts)] == rows


# -- subscribe, ping, limits, instruments -----------------------------------------------------


def test_subscribe_frames_and_spot_chunks_of_ten() -> None:
    assert SPOT.subscribe(["BTCUSDT", "ETHUSDT"], "test") == [
        '{"req_id":"test","op":"subscribe","args":["publicTrade.BTCUSDT","publicTrade.ETHUSDT"]}'
    ]
    symbols = [f"S{i}USDT" for i in range(23)]
    frames = [orjson.loads(f) for f in SPOT.subscribe(symbols, "9")]
    assert [len(f["args"]) for f in frames] == [10, 10, 3]
    assert [a for f in frames for a in f["args"]] == [f"publicTrade.{s}" for s in symbols]
    assert FUT.unsubscribe(["BTCUSDT"], "u1") == [
        '{"req_id":"u1","op":"unsubscribe","args":["publicTrade.BTCUSDT"]}'
    ]
    assert SPOT.max_symbols_per_request == 10 and FUT.max_symbols_per_request == 100
    assert SPOT.max_symbols_per_connection == FUT.max_symbols_per_connection == 500


def test_client_ping_every_20s() -> None:
    assert SPOT.ping is not None
    assert SPOT.ping(1767323045678) == '{"req_id":"1767323045678","op":"ping"}'
    assert SPOT.ping_interval_s == 20.0 and SPOT.quiet_timeout_s == 60.0
    assert SPOT.connect_target("wss://stream.bybit.com/v5/public/spot", None, "c").url == (
        "wss://stream.bybit.com/v5/public/spot"
    )


def test_spot_instruments_from_fixture() -> None:
    assert SPOT.instruments_request is not None and SPOT.parse_instruments is not None
    req = SPOT.instruments_request("https://api.bybit.com")
    assert req.url == "https://api.bybit.com/v5/market/instruments-info?category=spot"
    assert SPOT.parse_instruments(_fx("spot_instruments.json")) == (
        # NEWUSDT is PreLaunch: subscribed before its first trade.
        [
            Instrument("BTCUSDT", "BTC", "USDT"),
            Instrument("0GUSDT", "0G", "USDT"),
            Instrument("NEWUSDT", "NEW", "USDT"),
        ],
        None,
    )
    with pytest.raises(ParseError):
        SPOT.parse_instruments(b'{"retCode":10001,"retMsg":"params error","result":{}}')


def test_linear_instruments_paginate_with_the_cursor() -> None:
    adapter = get_adapter("bybit_futures")
    assert adapter.instruments_request is not None and adapter.parse_instruments is not None
    first = adapter.instruments_request("https://api.bybit.com/")
    assert first.url == "https://api.bybit.com/v5/market/instruments-info?category=linear&limit=1000"
    page1, follow = adapter.parse_instruments(_fx("futures_instruments_page1.json"))
    assert page1 == [Instrument("1000PEPEUSDT", "1000PEPE", "USDT")]
    assert follow is not None and follow.url == (
        "https://api.bybit.com/v5/market/instruments-info?category=linear&limit=1000"
        "&cursor=first%253D1000PEPEUSDT%2526last%253DBTCPERP"
    )
    page2, prelaunch = adapter.parse_instruments(_fx("futures_instruments_page2.json"))
    assert page2 == [Instrument("BTCUSDT", "BTC", "USDT")]
    # The default list holds only Trading symbols: the PreLaunch list is asked for next.
    assert prelaunch is not None and prelaunch.url == (
        "https://api.bybit.com/v5/market/instruments-info?category=linear&limit=1000&status=PreLaunch"
    )


# -- simulated server protocol ----------------------------------------------------------------


def _session(stream: str, reject: set[str] | None = None) -> SimSession:
    return SimSession("conn-1", "/v5/public/spot", {}, sim_instruments(stream), reject=reject or set())


def test_sim_spot_acks_rejects_and_limits() -> None:
    proto = sim_protocol("spot")
    session = _session("bybit_spot", reject={"ETHUSDT"})
    ack = proto.on_message(session, SPOT.subscribe(["BTCUSDT", "0GUSDT"], "1")[0], 0)
    assert SPOT.decode(ack[0], RECV_US, {}) == Control("ack", req_id="1")
    assert session.subscribed == {"BTCUSDT", "0GUSDT"}
    mixed = proto.on_message(session, SPOT.subscribe(["SOLUSDT", "ETHUSDT", "NOPEUSDT"], "2")[0], 0)
    assert SPOT.decode(mixed[0], RECV_US, {}) == Control(
        "ack", req_id="2", ok=False, symbols=("ETHUSDT", "NOPEUSDT"),
        message="Invalid symbol :[publicTrade.ETHUSDT,publicTrade.NOPEUSDT]",
    )  # fmt: skip
    assert session.subscribed == {"BTCUSDT", "0GUSDT", "SOLUSDT"}
    eleven = orjson.dumps(
        {"req_id": "3", "op": "subscribe", "args": [f"publicTrade.X{i}USDT" for i in range(11)]}
    )
    assert SPOT.decode(proto.on_message(session, eleven, 0)[0], RECV_US, {}) == Control(
        "ack", req_id="3", ok=False, message="args size >10"
    )
    assert SPOT.ping is not None
    pong = proto.on_message(session, SPOT.ping(5), 0)
    assert orjson.loads(pong[0]) == {"success": True, "ret_msg": "pong", "conn_id": "conn-1", "op": "ping"}
    assert SPOT.decode(pong[0], RECV_US, {}) == Control("pong")
    proto.on_message(session, SPOT.unsubscribe(["BTCUSDT"], "4")[0], 0)
    assert session.subscribed == {"0GUSDT", "SOLUSDT"}
    assert proto.accept("/v5/public/spot", {}) is None and proto.accept("/v5/public/linear", {}) == 404
    assert proto.idle_timeout_s == 600.0


def test_sim_linear_shapes_and_instrument_pages() -> None:
    proto = sim_protocol("futures")
    session = _session("bybit_futures", reject={"SOLUSDT"})
    symbols = sorted(session.instruments)
    ack = orjson.loads(proto.on_message(session, FUT.subscribe(symbols[:2], "")[0], 0)[0])
    assert ack == {"success": True, "ret_msg": "", "conn_id": "conn-1", "req_id": "", "op": "subscribe"}
    refused = proto.on_message(session, FUT.subscribe(["SOLUSDT"], "r")[0], 0)
    assert FUT.decode(refused[0], RECV_US, {}) == Control(
        "ack",
        req_id="r",
        ok=False,
        symbols=("SOLUSDT",),
        message="error:handler not found,topic:publicTrade.SOLUSDT",
    )
    pong = orjson.loads(proto.on_message(session, '{"req_id":"p","op":"ping"}', 0)[0])
    assert pong == {"success": True, "ret_msg": "pong", "conn_id": "conn-1", "req_id": "p", "op": "ping"}
    # The paginated instrument route, walked with the adapter's own follow-up requests.
    insts = [sim_instruments("bybit_futures", [f"C{i}"])[f"C{i}USDT"] for i in range(2500)]
    handler = proto.http_routes[("GET", "/v5/market/instruments-info")]
    assert FUT.instruments_request is not None and FUT.parse_instruments is not None
    request = FUT.instruments_request("http://127.0.0.1:1")
    seen: list[Instrument] = []
    pages = 0
    while request is not None:
        query = dict(part.split("=", 1) for part in request.url.split("?", 1)[1].split("&"))
        got, request = FUT.parse_instruments(handler(query, b"", insts, "").body)
        seen.extend(got)
        pages += 1
    assert pages == 4 and seen == insts  # three pages of Trading symbols, one empty PreLaunch page


# -- end to end over sockets, against recorder/sim/server.py ---------------------------------


@pytest.mark.parametrize("stream", ["bybit_spot", "bybit_futures"])
def test_end_to_end_against_the_sim_server(stream: str) -> None:
    insts = sim_instruments(stream)
    rows = ms_rows(insts)
    trades, controls, rest = asyncio.run(sim_end_to_end(stream, rows, acks=1, reject=["SOLUSDT"]))
    assert trades == [r for r in rows if r[2] != "SOLUSDT"]
    refused = "Invalid symbol :[publicTrade.SOLUSDT]" if stream == "bybit_spot" else (
        "error:handler not found,topic:publicTrade.SOLUSDT"
    )  # fmt: skip
    assert controls == [
        Control("ack", req_id="1", ok=False, symbols=("SOLUSDT",), message=refused),
        Control("pong", req_id="1767323045678" if stream == "bybit_futures" else None),
    ]
    assert rest == list(insts.values())
