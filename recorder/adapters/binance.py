"""Binance spot and USDⓈ-M futures public trades.

Spot:    https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams
Futures: https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams

Spot records the raw ``<sym>@trade`` stream (one record per fill) on the combined-stream
endpoint with ``timeUnit=MICROSECOND``; futures records the documented ``<sym>@aggTrade`` on
the ``/market`` route (the unrouted legacy URL acks SUBSCRIBE and then sends nothing). The
server pings with WebSocket ping frames, so there is no application ping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from pumpwatch.errors import ParseError
from pumpwatch.recorder.adapter import Adapter, ConnectTarget, Control, HttpRequest, Instrument, Instruments
from pumpwatch.segments.schema import TradeRow

SPOT_DOC = "https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams"
FUTURES_DOC = "https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams"

_loads = orjson.loads
_JSONError = orjson.JSONDecodeError
_INF = float("inf")
_DAY_US = 86_400_000_000
# Trade times at or above this are µs (timeUnit=MICROSECOND), below it ms: 1e14 µs is 1973 and
# 1e14 ms is the year 5138, so the two ranges never meet.
_US_THRESHOLD = 100_000_000_000_000
# Off-book prints of the futures @trade variant (field X): not market trades (DESIGN §3).
_ON_BOOK = "MARKET"
_STREAM_RE = re.compile(r"([a-z0-9]+)@(?:trade|aggTrade)")


def decode(frame: bytes | str, recv_us: int, instruments: Instruments) -> list[TradeRow] | Control:
    """One Binance frame -> trades, or a Control for replies and notices.

    Combined-stream trade (spot, timeUnit=MICROSECOND)::

        {"stream":"bnbbtc@trade","data":{"e":"trade","E":1672515782136000,"s":"BNBBTC",
         "t":12345,"p":"0.001","q":"100","T":1672515782136000,"m":true,"M":true}}

    Raw (``/ws``) payloads without the wrapper, ms times, ``@aggTrade`` (id ``a``) and the
    futures ``@trade`` variant (off-book ``X`` dropped) decode the same way.
    """
    try:
        msg = _loads(frame)
    except _JSONError:
        raise ParseError("binance: not JSON") from None
    try:
        data = msg["data"]  # combined stream: {"stream": …, "data": payload}
        event = data["e"]
    except (KeyError, TypeError, IndexError):
        if type(msg) is not dict:
            raise ParseError("binance: frame is not an object") from None
        data = msg  # a raw /ws payload, a reply or a notice
        event = msg.get("e")
    if event == "trade":
        id_key = "t"
    elif event == "aggTrade":
        id_key = "a"
    else:
        return _control(msg, data)
    try:
        symbol = data["s"]
        inst = instruments[symbol]
        p = data["p"]
        q = data["q"]
        t = data["T"]
        m = data["m"]
        tid = data[id_key]
    except KeyError as exc:
        raise ParseError(f"binance: missing field or unknown symbol {exc}") from None
    except TypeError:
        raise ParseError("binance: symbol is not a string") from None
    if not (str is type(p) is type(q)) or not (int is type(t) is type(tid)):
        raise ParseError("binance: wrong field type")
    try:
        price = float(p)
        qty = float(q)
    except ValueError:
        raise ParseError(f"binance: bad number {p!r} / {q!r}") from None
    if not (0.0 < price < _INF and 0.0 < qty < _INF):
        raise ParseError(f"binance: price/qty out of range {p!r} / {q!r}")
    t_us = t if t >= _US_THRESHOLD else t * 1000
    if not -_DAY_US < t_us - recv_us < _DAY_US:
        raise ParseError(f"binance: implausible time {t}")
    if m is True:
        side = "sell"  # the buyer was the maker, so the taker sold
    elif m is False:
        side = "buy"
    else:
        raise ParseError("binance: m is not a boolean")
    x = data.get("X", _ON_BOOK)
    if x != _ON_BOOK:
        if type(x) is not str:
            raise ParseError("binance: X is not a string")
        return []
    return [(t_us, recv_us, symbol, inst.base, inst.quote, price, qty, side, str(tid))]


def _control(msg: dict[str, Any], data: dict[str, Any]) -> Control:
    """Replies to SUBSCRIBE, errors and the serverShutdown notice."""
    event = msg.get("event")
    if data.get("e") == "serverShutdown" or (type(event) is dict and event.get("e") == "serverShutdown"):
        return Control("reconnect", message="serverShutdown")
    raw_id = msg.get("id")
    req_id = None if raw_id is None or type(raw_id) in (dict, list) else str(raw_id)
    error = msg.get("error", msg if "code" in msg and "msg" in msg else None)
    if type(error) is dict:
        text = f"code {error.get('code')}: {error.get('msg')}"
        # Binance refuses a SUBSCRIBE as a whole; the culprit stream is named only sometimes.
        named = error.get("data")
        symbols = tuple(s.upper() for s in _STREAM_RE.findall(named)) if type(named) is str else ()
        if req_id is None:
            return Control("error", message=text)
        return Control("ack", req_id=req_id, ok=False, symbols=symbols, message=text)
    if "result" in msg and req_id is not None:
        if msg["result"] is None:
            return Control("ack", req_id=req_id)
        return Control("info", req_id=req_id, message="result")  # LIST_SUBSCRIPTIONS and the like
    raise ParseError(f"binance: unexpected frame (e={data.get('e')!r})")


def _request_frame(method: str, symbols: Sequence[str], req_id: str, channel: str) -> str:
    # An all-digit id goes out as an integer: Binance accepts int64 or alphanumeric ≤ 36 chars.
    rid: int | str = int(req_id) if req_id.isdigit() and len(req_id) < 19 else req_id
    params = [f"{s.lower()}@{channel}" for s in symbols]
    return orjson.dumps({"method": method, "params": params, "id": rid}).decode()


def _route(ws_url: str, futures: bool, channel: str, query: str) -> str:
    """The combined-stream URL: spot ``<base>/stream?…``; futures ``<base>/<route>/stream``.

    A futures URL without a route gets one, so the legacy unrouted base (which acks and then
    stays silent for aggTrade, pitfall 1) cannot be configured by mistake.
    """
    parts = urlsplit(ws_url)
    path = parts.path.rstrip("/")
    for tail in ("/stream", "/ws"):
        if path.endswith(tail):
            path = path[: -len(tail)]
    if futures:
        route = "/public" if channel == "trade" else "/market"
        if not path.endswith(("/market", "/public")):
            path += route
    return urlunsplit((parts.scheme, parts.netloc, path + "/stream", query, ""))


def _parse_exchange_info(body: bytes, futures: bool, quotes: frozenset[str]) -> list[Instrument]:
    """Trading USDT symbols (futures: USDT-margined perpetuals) of an exchangeInfo response."""
    try:
        symbols = _loads(body)["symbols"]
        out = []
        for item in symbols:
            if item["status"] != "TRADING" or item["quoteAsset"] not in quotes:
                continue
            if futures and item.get("contractType") != "PERPETUAL":
                continue
            out.append(Instrument(item["symbol"], item["baseAsset"].upper(), item["quoteAsset"].upper()))
    except (_JSONError, KeyError, TypeError, AttributeError) as exc:
        raise ParseError(f"binance: bad exchangeInfo response ({exc!r})") from None
    return out


def adapter(market: str, options: Mapping[str, Any]) -> Adapter:
    """The Adapter of ``binance_<market>``; options: ``channel`` ("trade" | "aggTrade"), ``quotes``."""
    futures = market == "futures"
    if market not in ("spot", "futures"):
        raise ValueError(f"binance has no market {market!r}")
    defaults: dict[str, Any] = {"channel": "aggTrade" if futures else "trade", "quotes": ["USDT"]}
    if not futures:
        defaults["time_unit"] = "MICROSECOND"
    opts = {**defaults, **options}
    channel = str(opts["channel"])
    if channel not in ("trade", "aggTrade"):
        raise ValueError(f"binance channel must be 'trade' or 'aggTrade', not {channel!r}")
    quotes = frozenset(str(q).upper() for q in opts["quotes"])
    query = "" if futures else f"timeUnit={opts['time_unit']}"
    info_path = "/fapi/v1/exchangeInfo" if futures else "/api/v3/exchangeInfo"
    return Adapter(
        stream=f"binance_{market}",
        doc_url=FUTURES_DOC if futures else SPOT_DOC,
        decode=decode,
        subscribe=lambda symbols, req_id: [_request_frame("SUBSCRIBE", symbols, req_id, channel)],
        unsubscribe=lambda symbols, req_id: [_request_frame("UNSUBSCRIBE", symbols, req_id, channel)],
        max_symbols_per_request=100,
        # 1024 streams per connection (spot); the futures page said 200 until 2026, keep that.
        max_symbols_per_connection=200 if futures else 1024,
        # 5 (spot) / 10 (futures) incoming messages per second, and our pong replies count too.
        max_requests_per_s=9.0 if futures else 4.0,
        connect_target=lambda ws_url, _body, _cid: ConnectTarget(_route(ws_url, futures, channel, query)),
        ping=None,
        # The server pings us (20 s spot, 3 min futures); our own WebSocket pings, whose pongs
        # refresh the watchdog, notice a dead link on a quiet connection well before that.
        ping_interval_s=30.0 if futures else 20.0,
        quiet_timeout_s=90.0 if futures else 60.0,
        max_lifetime_s=86_400.0,
        rotate_margin_s=600.0,
        instruments_request=lambda rest_url: HttpRequest("GET", rest_url.rstrip("/") + info_path),
        parse_instruments=lambda body: (_parse_exchange_info(body, futures, quotes), None),
        default_options=defaults,
    )
