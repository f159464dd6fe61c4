"""KuCoin spot/futures adapter and simulated server: fixtures field by field, token flow, fuzzing."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence

import msgspec
import orjson
import pytest
from helpers.adapters import (
    RECV_US,
    decode_or_parse_error,
    fixture_bytes,
    json_bytes,
    json_values,
    numeric_ids,
    sim_instruments,
    trade_rows,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from pumpwatch.errors import ConfigError, ParseError
from pumpwatch.recorder.adapter import Adapter, Control, Instrument
from pumpwatch.recorder.adapters import get_adapter, kucoin
from pumpwatch.recorder.sim.kucoin import sim_protocol
from pumpwatch.recorder.sim.protocol import HttpResponse, SimSession
from pumpwatch.recorder.sim.server import SimExchange
from pumpwatch.recorder.stream.runner import StreamRunner
from pumpwatch.segments.schema import TradeRow

SPOT = get_adapter("kucoin_spot")
FUT = get_adapter("kucoin_futures")
SPOT_INSTS = {
    "BTC-USDT": Instrument("BTC-USDT", "BTC", "USDT"),
    "ETH-BTC": Instrument("ETH-BTC", "ETH", "BTC"),
}
FUT_INSTS = {
    "XBTUSDTM": Instrument("XBTUSDTM", "BTC", "USDT", multiplier=0.001),
    "ETHUSDTM": Instrument("ETHUSDTM", "ETH", "USDT", multiplier=0.01),
}
SIM_SPOT = sim_instruments("kucoin_spot")
SIM_FUT = sim_instruments("kucoin_futures")


def _fx(name: str) -> bytes:
    return fixture_bytes("kucoin", name)


# -- trades, field by field -------------------------------------------------------------------


def test_spot_trade_documented_sample() -> None:
    recv = 1729843222950000
    assert SPOT.decode(_fx("spot_trade.json"), recv, SPOT_INSTS) == [
        (1729843222921000, recv, "BTC-USDT", "BTC", "USDT", 67523.0, 0.003, "buy", "11067996711960577")
    ]


def test_spot_trade_2018_hex_id_keeps_ns_digits_by_integer_division() -> None:
    recv = 1545913818200000
    rows = SPOT.decode(_fx("spot_trade_2018_hex_id.json"), recv, SPOT_INSTS)
    assert isinstance(rows, list) and len(rows) == 1
    time_us, row_recv, symbol, base, quote, price, qty, side, trade_id = rows[0]
    assert time_us == 1545913818099033  # "…099033203" ns, truncated to µs
    assert row_recv == recv
    assert (symbol, base, quote) == ("ETH-BTC", "ETH", "BTC")
    assert price == 0.082 and qty == 0.01022222
    assert side == "sell"
    assert trade_id == "5c24c5da03aa673885cd67aa"


def test_futures_trade_lots_times_multiplier_and_xbt_is_btc() -> None:
    recv = 1731898619600000
    assert FUT.decode(_fx("futures_trade.json"), recv, FUT_INSTS) == [
        (1731898619520000, recv, "XBTUSDTM", "BTC", "USDT", 90503.9, 2 * 0.001, "buy", "1794100537695")
    ]


def test_futures_trade_with_user_ids_and_ns_beyond_2_53() -> None:
    recv = 1722508416300000
    rows = FUT.decode(_fx("futures_trade_with_user_ids.json"), recv, FUT_INSTS)
    assert isinstance(rows, list)
    (row,) = rows
    assert row[0] == 1722508416234123  # 1722508416234123456 ns: a float would have lost the 456
    assert row[2:5] == ("ETHUSDTM", "ETH", "USDT")
    assert row[5] == 3406.13
    assert row[6] == 37 * 0.01
    assert row[7] == "sell"
    assert row[8] == "1723549110456"


# -- control frames ------------------------------------------------------------------------


def test_welcome_ack_pong() -> None:
    assert SPOT.decode(_fx("spot_welcome.json"), RECV_US, {}) == Control("welcome", req_id="hQvf8jkno")
    assert FUT.decode(_fx("spot_subscribe_ack.json"), RECV_US, {}) == Control("ack", req_id="1545910660739")
    assert SPOT.decode(_fx("spot_pong.json"), RECV_US, {}) == Control("pong", req_id="1545910590801")


def test_token_expired_error_without_id_is_a_connection_error() -> None:
    out = SPOT.decode(_fx("spot_error_token_expired.json"), RECV_US, {})
    assert out == Control("error", message="401 token is expired")


def test_subscribe_error_refuses_the_request_without_claiming_symbols() -> None:
    out = SPOT.decode(_fx("spot_subscribe_error.json"), RECV_US, {})
    # No symbols are claimed: the runner retries a refused request symbol by symbol.
    assert out == Control(
        "ack",
        req_id="1545910660740",
        ok=False,
        message="404 topic /market/match:FOO-USDT,BAR-USDT is not found",
    )


def test_subscribe_limit_error_rejects_the_request_without_symbols() -> None:
    out = SPOT.decode(_fx("spot_subscribe_limit_error.json"), RECV_US, {})
    assert isinstance(out, Control)
    assert (out.kind, out.req_id, out.ok, out.symbols) == ("ack", "1545910660741", False, ())
    assert out.message.startswith("509 exceed max subscription count")


# -- garbage -------------------------------------------------------------------------------


def _spot_frame(**changes: object) -> bytes:
    msg = orjson.loads(_fx("spot_trade.json"))
    msg["data"].update(changes)
    return orjson.dumps(msg)


@pytest.mark.parametrize(
    "changes",
    [
        {"price": "NaN"},
        {"price": "inf"},
        {"price": "-1"},
        {"size": "0"},
        {"size": True},
        {"price": "1e400"},
        {"side": "BUY"},
        {"side": None},
        {"time": 1729843222921000000.0},
        {"time": "17298432229210000000000"},  # year 50 000: implausible
        {"time": "1629843222921000000"},  # 100+ days before recv
        {"tradeId": 1.5},
        {"symbol": "DOGE-USDT"},  # not subscribed: unknown instrument
        {"symbol": ["BTC-USDT"]},
    ],
)
def test_spot_bad_fields_are_parse_errors(changes: dict[str, object]) -> None:
    with pytest.raises(ParseError):
        SPOT.decode(_spot_frame(**changes), 1729843222950000, SPOT_INSTS)


def test_missing_field_unknown_type_subject_and_non_json_are_parse_errors() -> None:
    msg = orjson.loads(_fx("spot_trade.json"))
    del msg["data"]["price"]
    for frame in (
        orjson.dumps(msg),
        b'{"type":"mystery"}',
        b'{"type":"message","subject":"trade.ticker","data":{}}',
        b"[1,2]",
        b"\xff\xfe",
        b"",
    ):
        with pytest.raises(ParseError):
            SPOT.decode(frame, 1729843222950000, SPOT_INSTS)


# -- leniency: a shape that differs from the docs only where meaning does not depend on it -----

_SPOT_ROW = (
    1729843222921000,
    1729843222950000,
    "BTC-USDT",
    "BTC",
    "USDT",
    67523.0,
    0.003,
    "buy",
    "11067996711960577",
)


@pytest.mark.parametrize(
    "changes",
    [
        {"price": 67523, "size": 0.003},  # numbers where strings are documented
        {"time": 1729843222921000000},  # an integer ns time
        {"tradeId": 11067996711960577},
        {"makerOrderId": None, "brandNew": [1, 2]},  # extra or changed fields nobody reads
    ],
)
def test_spot_variants_still_yield_the_trade(changes: dict[str, object]) -> None:
    assert SPOT.decode(_spot_frame(**changes), 1729843222950000, SPOT_INSTS) == [_SPOT_ROW]


def test_missing_type_or_subject_still_yields_the_trade() -> None:
    msg = orjson.loads(_fx("spot_trade.json"))
    for drop in ("type", "subject"):
        frame = orjson.dumps({k: v for k, v in msg.items() if k != drop})
        assert SPOT.decode(frame, 1729843222950000, SPOT_INSTS) == [_SPOT_ROW], drop
    fut = orjson.loads(_fx("futures_trade.json"))
    del fut["type"]
    assert FUT.decode(orjson.dumps(fut), 1731898619600000, FUT_INSTS) == [
        (
            1731898619520000,
            1731898619600000,
            "XBTUSDTM",
            "BTC",
            "USDT",
            90503.9,
            2 * 0.001,
            "buy",
            "1794100537695",
        )
    ]
    for frame in (orjson.dumps({"data": msg["data"]}), orjson.dumps({**msg, "subject": "trade.ticker"})):
        with pytest.raises(ParseError):  # neither subject nor topic says it is a match
            SPOT.decode(frame, 1729843222950000, SPOT_INSTS)


def test_trade_rows_is_reusable_for_rest_history_rows() -> None:
    trade = msgspec.convert(orjson.loads(_fx("spot_trade.json"))["data"], kucoin.Trade)
    assert kucoin.trade_rows([trade], SPOT_INSTS["BTC-USDT"], 1729843222950000) == [_SPOT_ROW]


def test_options_are_validated_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"streams\.kucoin_spot\.options\.max_symbols_per_connection"):
        get_adapter("kucoin_spot", {"max_symbols_per_connection": 0})
    with pytest.raises(ConfigError, match=r"streams\.kucoin_futures\.options\.channel: unknown option"):
        get_adapter("kucoin_futures", {"channel": "x"})


def test_futures_unknown_contract_is_a_parse_error_never_a_guessed_multiplier() -> None:
    with pytest.raises(ParseError, match="unknown symbol"):
        FUT.decode(_fx("futures_trade.json"), 1731898619600000, {"ETHUSDTM": FUT_INSTS["ETHUSDTM"]})


# -- subscribing, limits, token, ping ------------------------------------------------------


def test_subscribe_frames_as_documented() -> None:
    assert SPOT.subscribe(["BTC-USDT", "ETH-USDT"], "1545910660739") == [
        '{"id":"1545910660739","type":"subscribe","topic":"/market/match:BTC-USDT,ETH-USDT",'
        '"privateChannel":false,"response":true}'
    ]
    assert FUT.subscribe(["XBTUSDTM"], "42") == [
        '{"id":"42","type":"subscribe","topic":"/contractMarket/execution:XBTUSDTM","response":true}'
    ]
    assert FUT.unsubscribe(["XBTUSDTM"], "43") == [
        '{"id":"43","type":"unsubscribe","topic":"/contractMarket/execution:XBTUSDTM","response":true}'
    ]
    assert SPOT.subscribe([], "1") == []


def test_limits_are_data() -> None:
    for a in (SPOT, FUT):
        assert a.max_symbols_per_request == 100
        assert a.max_symbols_per_connection == 400  # the documented per-connection cap (spot)
        assert a.max_requests_per_s == 5.0
        assert a.max_lifetime_s == 86_400.0
        assert a.ping is not None and a.ping(1545910590801) == '{"id":"1545910590801","type":"ping"}'
    assert get_adapter("kucoin_spot", {"max_symbols_per_connection": 50}).max_symbols_per_request == 50
    with pytest.raises(ConfigError):
        get_adapter("kucoin_spot", {"max_symbols_per_connection": 401})
    assert get_adapter("kucoin_spot", {"max_symbols_per_connection": 300}).max_symbols_per_request == 100
    with pytest.raises(ConfigError):
        get_adapter("kucoin_futures", {"channel": "x"})


def test_fresh_token_request_per_market_host() -> None:
    assert SPOT.connect_request is not None and FUT.connect_request is not None
    spot_req = SPOT.connect_request("https://api.kucoin.com")
    fut_req = FUT.connect_request("https://api-futures.kucoin.com/")
    assert (spot_req.method, spot_req.url) == ("POST", "https://api.kucoin.com/api/v1/bullet-public")
    assert (fut_req.method, fut_req.url) == ("POST", "https://api-futures.kucoin.com/api/v1/bullet-public")


def test_connect_target_from_bullet_public() -> None:
    body = _fx("spot_bullet_public.json")
    token = orjson.loads(body)["data"]["token"]
    target = SPOT.connect_target("", body, "conn-7")
    assert target.url == f"wss://ws-api-spot.kucoin.com/?token={token}&connectId=conn-7"
    assert target.ping_interval_s == 18.0
    assert target.wait_welcome is True
    fut = FUT.connect_target("", _fx("futures_bullet_public.json"), "c2")
    assert fut.url.startswith("wss://ws-api-futures.kucoin.com/?token=") and fut.url.endswith("&connectId=c2")
    override = SPOT.connect_target("ws://127.0.0.1:9/", body, "c3")
    assert override.url == f"ws://127.0.0.1:9/?token={token}&connectId=c3"


@pytest.mark.parametrize("body", [b"", b"{}", b'{"code":"400100","data":{}}', b'{"code":"200000","data":[]}'])
def test_bad_bullet_public_is_a_parse_error(body: bytes) -> None:
    with pytest.raises(ParseError):
        SPOT.connect_target("", body, "c")


# -- instrument lists ----------------------------------------------------------------------


def test_spot_instruments_usdt_and_trading_only() -> None:
    assert SPOT.parse_instruments is not None and SPOT.instruments_request is not None
    assert SPOT.instruments_request("https://api.kucoin.com").url == "https://api.kucoin.com/api/v2/symbols"
    insts, follow_up = SPOT.parse_instruments(_fx("spot_symbols.json"))
    assert follow_up is None
    assert insts == [Instrument("BTC-USDT", "BTC", "USDT"), Instrument("0G-USDT", "0G", "USDT")]


def test_futures_instruments_open_linear_usdt_with_multiplier_from_the_list() -> None:
    assert FUT.parse_instruments is not None and FUT.instruments_request is not None
    req = FUT.instruments_request("https://api-futures.kucoin.com")
    assert req.url == "https://api-futures.kucoin.com/api/v1/contracts/active"
    insts, follow_up = FUT.parse_instruments(_fx("futures_contracts_active.json"))
    assert follow_up is None
    # inverse XBTUSDM and the dated XBTMH26 are left out; the paused PEPEUSDTM may reopen
    assert insts == [
        Instrument("XBTUSDTM", "BTC", "USDT", multiplier=0.001),
        Instrument("ETHUSDTM", "ETH", "USDT", multiplier=0.01),
        Instrument("PEPEUSDTM", "PEPE", "USDT", multiplier=100000.0),
    ]


def test_instrument_list_refusal_is_a_parse_error() -> None:
    assert FUT.parse_instruments is not None
    with pytest.raises(ParseError):
        FUT.parse_instruments(b'{"code":"429000","msg":"Too many requests"}')


# -- the simulated server ------------------------------------------------------------------


def _session(instruments: dict[str, Instrument], path: str) -> SimSession:
    return SimSession(conn_id="s1", path=path, headers={}, instruments=instruments)


@pytest.mark.parametrize(
    ("market", "adapter", "insts"), [("spot", SPOT, SIM_SPOT), ("futures", FUT, SIM_FUT)]
)
def test_sim_token_welcome_subscribe_ping(
    market: str, adapter: Adapter, insts: dict[str, Instrument]
) -> None:
    proto = sim_protocol(market, ping_interval_ms=500)
    assert proto.idle_timeout_s == 10.5
    bullet = proto.http_routes[("POST", "/api/v1/bullet-public")]
    reply = bullet({}, b"", list(insts.values()), "ws://127.0.0.1:5555/")
    target = adapter.connect_target("", reply.body, "cid-1")
    assert target.ping_interval_s == 0.5
    path = target.url.removeprefix("ws://127.0.0.1:5555")
    assert proto.accept(path, {}) is None
    assert proto.accept("/?connectId=x", {}) == 401
    assert proto.accept("/?token=not-issued&connectId=x", {}) == 401
    session = _session(insts, path)
    (welcome,) = proto.on_connect(session)
    assert adapter.decode(welcome, RECV_US, insts) == Control("welcome", req_id="cid-1")
    symbols = sorted(insts)[:3]
    (ack,) = proto.on_message(session, adapter.subscribe(symbols, "9")[0], 0)
    assert adapter.decode(ack, RECV_US, insts) == Control("ack", req_id="9")
    assert session.subscribed == set(symbols)
    assert adapter.ping is not None
    (pong,) = proto.on_message(session, adapter.ping(123), 0)
    assert adapter.decode(pong, RECV_US, insts) == Control("pong", req_id="123")
    (unack,) = proto.on_message(session, adapter.unsubscribe(symbols[:1], "10")[0], 0)
    assert adapter.decode(unack, RECV_US, insts) == Control("ack", req_id="10")
    assert session.subscribed == set(symbols[1:])


def test_sim_refuses_a_topic_with_a_bad_symbol_whole() -> None:
    proto = sim_protocol("spot")
    session = _session(SIM_SPOT, "/?token=t")
    session.reject.add("ETH-USDT")
    (err,) = proto.on_message(session, SPOT.subscribe(["BTC-USDT", "ETH-USDT", "NOPE-USDT"], "5")[0], 0)
    assert SPOT.decode(err, RECV_US, SIM_SPOT) == Control(
        "ack", req_id="5", ok=False, message="404 topic /market/match:ETH-USDT,NOPE-USDT is not found"
    )
    assert session.subscribed == set()
    (ack,) = proto.on_message(session, SPOT.subscribe(["BTC-USDT"], "6")[0], 0)
    assert SPOT.decode(ack, RECV_US, SIM_SPOT) == Control("ack", req_id="6")
    assert session.subscribed == {"BTC-USDT"}


@pytest.mark.parametrize(("market", "adapter"), [("spot", SPOT), ("futures", FUT)])
def test_sim_instrument_list_parses_back_to_the_sim_instruments(market: str, adapter: Adapter) -> None:
    insts = SIM_SPOT if market == "spot" else SIM_FUT
    proto = sim_protocol(market)
    path = "/api/v2/symbols" if market == "spot" else "/api/v1/contracts/active"
    reply = proto.http_routes[("GET", path)]({}, b"", list(insts.values()), "")
    assert adapter.parse_instruments is not None
    parsed, _ = adapter.parse_instruments(reply.body)
    assert parsed == list(insts.values())
    if market == "futures":
        assert "XBTUSDTM" in insts and insts["XBTUSDTM"].base == "BTC"


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip_encode_decode(data: st.DataObject) -> None:
    for market, adapter, insts in (("spot", SPOT, SIM_SPOT), ("futures", FUT, SIM_FUT)):
        rows = data.draw(trade_rows(insts, numeric_ids))
        frames = sim_protocol(market).encode_trades(rows, insts)
        assert len(frames) == len(rows)  # KuCoin pushes one trade per message
        decoded = [row for frame in frames for row in adapter.decode(frame, RECV_US, insts)]
        assert decoded == rows


# -- fuzzing -------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(["price", "size", "time", "ts", "side", "tradeId", "symbol"]), value=json_values)
def test_fuzz_fields_of_real_frames(key: str, value: object) -> None:
    spot = orjson.loads(_fx("spot_trade.json"))
    fut = orjson.loads(_fx("futures_trade.json"))
    spot["data"][key] = value
    fut["data"][key] = value
    insts_spot = {"BTC-USDT": SPOT_INSTS["BTC-USDT"]}
    decode_or_parse_error(SPOT.decode, json_bytes(spot), insts_spot, recv_us=1729843222950000)
    decode_or_parse_error(FUT.decode, json_bytes(fut), FUT_INSTS, recv_us=1731898619600000)


# -- end to end: the generic local server and the connection runner ------------------------


def _now_rows(insts: dict[str, Instrument], n: int) -> list[TradeRow]:
    now_us = time.time_ns() // 1000
    syms = sorted(insts)
    return [
        (now_us - 1000 * (n - k), 0, syms[k % len(syms)], insts[syms[k % len(syms)]].base, "USDT",
         100.25 + k, 7 * insts[syms[k % len(syms)]].multiplier, ("buy", "sell")[k % 2], str(900 + k))
        for k in range(n)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("market", "adapter", "insts"), [("spot", SPOT, SIM_SPOT), ("futures", FUT, SIM_FUT)]
)
def test_end_to_end_fresh_token_every_connect(
    market: str, adapter: Adapter, insts: dict[str, Instrument]
) -> None:
    proto = sim_protocol(market, ping_interval_ms=200)
    bullet = proto.http_routes[("POST", "/api/v1/bullet-public")]
    calls: list[str] = []

    def counting_bullet(
        q: Mapping[str, str], body: bytes, instruments: Sequence[Instrument], ws_url: str
    ) -> HttpResponse:
        calls.append(ws_url)
        return bullet(q, body, instruments, ws_url)

    proto = dataclasses.replace(
        proto, http_routes={**proto.http_routes, ("POST", "/api/v1/bullet-public"): counting_bullet}
    )

    async def main() -> None:
        async with SimExchange(proto, list(insts.values())) as sim:
            received: list[TradeRow] = []
            runner = StreamRunner(
                adapter, ws_url="", rest_url=sim.rest_url, instruments=insts, on_trades=received.extend,
                backoff_initial_s=0.02, backoff_max_s=0.2, ack_timeout_s=2.0, open_timeout_s=2.0,
            )  # fmt: skip
            task = asyncio.create_task(runner.run())
            try:
                await _until(lambda: runner.stats.subscribed_symbols == len(insts))
                rows = _now_rows(insts, 12)
                sim.publish(rows)
                await _until(lambda: len(received) == len(rows))
                assert [(r[0], *r[2:]) for r in received] == [(r[0], *r[2:]) for r in rows]
                await asyncio.sleep(0.5)  # > pingInterval: the runner's JSON pings keep it open
                assert sim.active_connections == 1 and runner.stats.reconnects == 0
                sim.drop_all()
                await _until(
                    lambda: runner.stats.reconnects == 1 and runner.stats.subscribed_symbols == len(insts)
                )
                assert len(calls) == 2 and calls[0] == sim.ws_url  # a fresh token for the new connection
                assert sim.refused == 0
            finally:
                await runner.stop()
                await task

    asyncio.run(asyncio.wait_for(main(), 30))


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)
