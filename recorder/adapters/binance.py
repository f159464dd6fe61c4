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
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec
import orjson

from pumpwatch.errors import ConfigError, ParseError
from pumpwatch.recorder.adapter import Adapter, ConnectTarget, Control, HttpRequest, Instrument, Instruments
from pumpwatch.recorder.adapters.checks import (
    loads,
    not_a_trade,
    option_values,
    read_options,
    trade_row,
)
from pumpwatch.segments.schema import TradeRow
from pumpwatch.timeunits import US_PER_MS

SPOT_DOC = "https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams"
FUTURES_DOC = "https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams"

# Documented WebSocket bases serving the same spot streams: ``stream.binance.com`` on 9443 or 443,
# and the market-data-only ``data-stream.binance.vision``. With `recorder.redundancy: 2` the
# second connection goes to the other host (`recorder/stream/endpoints.py`). Futures documents
# one base (``fstream.binance.com``, routed), so its two connections share it.
SPOT_WS_URLS = ("wss://stream.binance.com:9443", "wss://stream.binance.com:443")
SPOT_MARKET_DATA_WS_URL = "wss://data-stream.binance.vision"
REDUNDANT_WS_URLS = dict.fromkeys(SPOT_WS_URLS, SPOT_MARKET_DATA_WS_URL) | {
    SPOT_MARKET_DATA_WS_URL: SPOT_WS_URLS[0]
}
_ON_BOOK = "MARKET"  # off-book prints of the futures @trade variant (X) are not market trades (DESIGN §3)
_TRADE_EVENTS = ("trade", "aggTrade")
# Trade times at or above this are µs (timeUnit=MICROSECOND), below it ms: 1e14 µs is 1973 and
# 1e14 ms is the year 5138, so the two ranges never meet.
_US_THRESHOLD = 100_000_000_000_000
_STREAM_RE = re.compile(r"([a-z0-9]+)@(?:trade|aggTrade)")


class Trade(msgspec.Struct, kw_only=True, gc=False):
    """One trade as an ``@trade``/``@aggTrade`` payload (and a REST ``aggTrades`` row) carries it.

    Prices and quantities are documented as strings; a JSON number is read the same way.
    """

    price: str | float = msgspec.field(name="p")
    qty: str | float = msgspec.field(name="q")
    time: int = msgspec.field(name="T")  # ms, or µs with timeUnit=MICROSECOND
    buyer_maker: bool = msgspec.field(name="m")
    trade_id: int | None = msgspec.field(name="t", default=None)  # @trade
    agg_id: int | None = msgspec.field(name="a", default=None)  # @aggTrade and REST aggTrades
    symbol: str = msgspec.field(name="s", default="")  # absent from REST rows
    event: str | None = msgspec.field(name="e", default=None)
    book: str = msgspec.field(name="X", default=_ON_BOOK)  # futures @trade only


class _Combined(msgspec.Struct, gc=False):
    """``{"stream":"bnbbtc@trade","data":<payload>}`` (the stream name is not needed)."""

    data: Trade


_decode_combined = msgspec.json.Decoder(_Combined).decode
_decode_raw = msgspec.json.Decoder(Trade).decode


def trade_rows(trades: Iterable[Trade], inst: Instrument, recv_us: int) -> list[TradeRow]:
    """Trades of `inst` -> checked rows, off-book prints left out; live frames and REST rows.

    The id is ``t`` for ``@trade`` and ``a`` for ``@aggTrade`` (old ``@trade`` frames also carry
    an ``a``, the seller's order id); without an event tag, ``a`` if present.
    """
    rows: list[TradeRow] = []
    for trade in trades:
        event = trade.event
        if event == "trade":
            tid = trade.trade_id
        elif event == "aggTrade":
            tid = trade.agg_id
        elif event is None:
            tid = trade.trade_id if trade.agg_id is None else trade.agg_id
        else:
            raise ParseError(f"binance: unexpected event {event!r:.40}")
        if tid is None:
            raise ParseError(f"binance: {event or 'trade'} without its id")
        if trade.book != _ON_BOOK:
            continue
        t = trade.time
        try:
            price, qty = float(trade.price), float(trade.qty)
        except ValueError:
            raise ParseError(f"binance: bad price/qty {trade.price!r:.40} / {trade.qty!r:.40}") from None
        side = "sell" if trade.buyer_maker else "buy"  # the buyer was the maker, so the taker sold
        time_us = t if t >= _US_THRESHOLD else t * US_PER_MS
        rows.append(trade_row(time_us, recv_us, inst, price, qty, side, str(tid)))
    return rows


def decode(frame: bytes | str, recv_us: int, instruments: Instruments) -> list[TradeRow] | Control:
    """One Binance frame -> trades, or a Control for replies and notices.

    Combined-stream trade (spot, timeUnit=MICROSECOND)::

        {"stream":"bnbbtc@trade","data":{"e":"trade","E":1672515782136000,"s":"BNBBTC",
         "t":12345,"p":"0.001","q":"100","T":1672515782136000,"m":true,"M":true}}

    Raw (``/ws``) payloads without the wrapper, ms times, ``@aggTrade`` (id ``a``) and the
    futures ``@trade`` variant (off-book ``X`` dropped) decode the same way.
    """
    try:
        trade = _decode_combined(frame).data
    except msgspec.DecodeError:
        try:
            trade = _decode_raw(frame)
        except msgspec.DecodeError:
            return _control(frame)
    try:
        inst = instruments[trade.symbol]
    except KeyError:
        raise ParseError(f"binance: unknown symbol {trade.symbol!r:.40}") from None
    return trade_rows((trade,), inst, recv_us)


def _control(frame: bytes | str) -> Control:
    """Replies to SUBSCRIBE, errors and the serverShutdown notice; anything else is garbage."""
    msg = loads(frame)
    if type(msg) is not dict:
        raise ParseError("binance: frame is not an object")
    data = msg.get("data", msg)
    event = data.get("e") if type(data) is dict else None
    if event == "serverShutdown":
        return Control("reconnect", message="serverShutdown")
    if event in _TRADE_EVENTS:
        # A trade whose schema check failed: decode it again to say which field is wrong.
        try:
            msgspec.convert(data, Trade)
        except msgspec.ValidationError as exc:
            raise not_a_trade(exc) from None
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
    raise ParseError(f"binance: unexpected frame (e={event!r:.40})")


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


# Instrument statuses (exchangeInfo ``status``) after which a symbol never trades again.
# Spot, enums.md "Symbol status" (TRADING, END_OF_DAY, HALT, BREAK, CANCEL_ONLY,
# https://developers.binance.com/docs/binance-spot-api-docs/enums): none of them is final, and a
# pair announced for listing shows BREAK until it opens, so every listed pair is subscribed (its
# first trade is recorded; a pair that never trades again only costs one idle stream name).
# USDⓈ-M contract status (PENDING_TRADING, TRADING, PRE_DELIVERING, DELIVERING, DELIVERED,
# PRE_SETTLE, SETTLING, CLOSE: the "Common Definitions" list of the USDⓈ-M docs,
# https://developers.binance.com/docs/derivatives/usds-margined-futures/common-definition, as
# SDKs mirror it; a 2026 exchangeInfo showed TRADING, PENDING_TRADING and SETTLING): the delivery
# and settlement states wind a contract down (a delisted perpetual shows SETTLING);
# PENDING_TRADING, a new contract before its first trade, is subscribed.
SPOT_ENDED_STATUSES: frozenset[str] = frozenset()
FUTURES_ENDED_STATUSES = frozenset(
    {"PRE_DELIVERING", "DELIVERING", "DELIVERED", "PRE_SETTLE", "SETTLING", "CLOSE"}
)
# contractType of USDⓈ-M perpetuals: PERPETUAL for crypto; TRADIFI_PERPETUAL for stocks, metals
# and other traditional assets, left out unless `include_non_crypto`.
CRYPTO_PERPETUAL = "PERPETUAL"
NON_CRYPTO_PERPETUAL = "TRADIFI_PERPETUAL"


def _parse_exchange_info(
    body: bytes, futures: bool, quotes: frozenset[str], include_non_crypto: bool = False
) -> list[Instrument]:
    """USDT symbols of an exchangeInfo response that trade or may still trade (futures: the
    USDT-margined perpetuals, stock/metal ones only with `include_non_crypto`)."""
    ended = FUTURES_ENDED_STATUSES if futures else SPOT_ENDED_STATUSES
    contract_types = {CRYPTO_PERPETUAL, NON_CRYPTO_PERPETUAL} if include_non_crypto else {CRYPTO_PERPETUAL}
    try:
        symbols = loads(body)["symbols"]
        out = []
        for item in symbols:
            if item["status"] in ended or item["quoteAsset"] not in quotes:
                continue
            if futures and item.get("contractType") not in contract_types:
                continue
            out.append(Instrument(item["symbol"], item["baseAsset"].upper(), item["quoteAsset"].upper()))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ParseError(f"binance: bad exchangeInfo response ({exc!r})") from None
    return out


class FuturesOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``streams.binance_futures.options``."""

    channel: Literal["trade", "aggTrade"] = "aggTrade"
    quotes: tuple[str, ...] = ("USDT",)  # quote assets recorded
    # TRADIFI_PERPETUAL contracts too; default: symbols.include_non_crypto
    include_non_crypto: bool = False


class SpotOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``streams.binance_spot.options``."""

    channel: Literal["trade", "aggTrade"] = "trade"
    quotes: tuple[str, ...] = ("USDT",)
    time_unit: Literal["MICROSECOND", "MILLISECOND"] = "MICROSECOND"


def adapter(market: str, options: Mapping[str, Any]) -> Adapter:
    """The Adapter of ``binance_<market>``; options: see `SpotOptions`, `FuturesOptions`."""
    if market not in ("spot", "futures"):
        raise ConfigError(f"binance has no market {market!r}")
    futures = market == "futures"
    stream = f"binance_{market}"
    opts = read_options(stream, options, FuturesOptions if futures else SpotOptions)
    channel = opts.channel
    quotes = frozenset(q.upper() for q in opts.quotes)
    query = f"timeUnit={opts.time_unit}" if isinstance(opts, SpotOptions) else ""
    non_crypto = isinstance(opts, FuturesOptions) and opts.include_non_crypto
    info_path = "/fapi/v1/exchangeInfo" if futures else "/api/v3/exchangeInfo"
    return Adapter(
        stream=stream,
        doc_url=FUTURES_DOC if futures else SPOT_DOC,
        decode=decode,
        subscribe=lambda symbols, req_id: [_request_frame("SUBSCRIBE", symbols, req_id, channel)],
        unsubscribe=lambda symbols, req_id: [_request_frame("UNSUBSCRIBE", symbols, req_id, channel)],
        max_symbols_per_request=100,
        # "A single connection can listen to a maximum of 1024 streams": spot (SPOT_DOC, "WebSocket
        # Limits") and, since the 2026 routed endpoints, USD-M futures (FUTURES_DOC; older copies of
        # that page said 200).
        max_symbols_per_connection=1024,
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
        parse_instruments=lambda body: (_parse_exchange_info(body, futures, quotes, non_crypto), None),
        default_options=option_values(opts.__class__()),
    )
