"""Bybit v5 spot and linear (USDT perpetual) public trades.

Connect/limits/heartbeat: https://bybit-exchange.github.io/docs/v5/ws/connect
Trade topic:              https://bybit-exchange.github.io/docs/v5/websocket/public/trade
Instrument list:          https://bybit-exchange.github.io/docs/v5/market/instrument

Topic ``publicTrade.<SYMBOL>``: one frame carries up to 1024 trades of one symbol, oldest
first, times in ms, ``S`` the taker side, ``v`` in base coin (also for linear contracts). The
client keeps the connection alive with a JSON ``ping`` every 20 s; spot takes at most 10 args
per subscribe request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import msgspec
import orjson

from pumpwatch.errors import ConfigError, ParseError
from pumpwatch.recorder.adapter import Adapter, Control, HttpRequest, Instrument, Instruments
from pumpwatch.recorder.adapters.checks import (
    SIDE_OF_CAPITAL,
    CapitalSide,
    loads,
    not_a_trade,
    option_values,
    read_options,
    trade_row,
)
from pumpwatch.segments.schema import TradeRow
from pumpwatch.timeunits import US_PER_MS

DOC_URL = "https://bybit-exchange.github.io/docs/v5/websocket/public/trade"

_PREFIX = "publicTrade."
_TOPIC_RE = re.compile(r"publicTrade\.([A-Za-z0-9_-]+)")


class Trade(msgspec.Struct, kw_only=True, gc=False):
    """One trade of a ``publicTrade`` push. Price, size and id are documented as strings."""

    time: int = msgspec.field(name="T")  # ms
    symbol: str = msgspec.field(name="s")
    side: CapitalSide = msgspec.field(name="S")  # the taker's
    qty: str | float = msgspec.field(name="v")  # base coin, also for linear contracts
    price: str | float = msgspec.field(name="p")
    trade_id: str | int = msgspec.field(name="i")
    block: bool = msgspec.field(name="BT", default=False)  # a block trade


class _Push(msgspec.Struct, gc=False):
    topic: str
    data: list[Trade]


_decode_push = msgspec.json.Decoder(_Push).decode


def trade_rows(trades: list[Trade], inst: Instrument, recv_us: int, drop_block: bool) -> list[TradeRow]:
    """Trades of `inst` (oldest first) -> checked rows; live pushes and REST history rows alike."""
    symbol = inst.symbol
    rows: list[TradeRow] = []
    append = rows.append
    try:
        for trade in trades:
            if trade.symbol != symbol:
                raise ParseError(f"bybit: trade of {trade.symbol!r:.40} in the push of {symbol!r}")
            if drop_block and trade.block:
                continue
            price, qty = float(trade.price), float(trade.qty)
            side = SIDE_OF_CAPITAL[trade.side]
            append(trade_row(trade.time * US_PER_MS, recv_us, inst, price, qty, side, str(trade.trade_id)))
    except ValueError as exc:  # a price or size string that is not a number
        if isinstance(exc, ParseError):
            raise
        raise ParseError(f"bybit: {exc}") from None
    return rows


def _decode(
    frame: bytes | str, recv_us: int, instruments: Instruments, drop_block_trades: bool
) -> list[TradeRow] | Control:
    """One Bybit frame -> trades (oldest first), or a Control for acks, errors and pongs.

    Trade frame (linear; spot lacks ``L`` and has numeric ids)::

        {"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1672304486868,"data":[
         {"T":1672304486865,"s":"BTCUSDT","S":"Buy","v":"0.001","p":"16578.50","L":"PlusTick",
          "i":"20f43950-d8dd-5b31-9112-a178eb6023af","BT":false,"seq":1783284617}]}
    """
    try:
        push = _decode_push(frame)
    except msgspec.DecodeError:
        return _control(frame)
    topic = push.topic
    if not topic.startswith(_PREFIX):
        raise ParseError(f"bybit: unexpected topic {topic!r:.40}")
    inst = instruments.get(topic[len(_PREFIX) :])
    if inst is None:
        raise ParseError(f"bybit: unknown symbol in {topic!r:.40}")
    return trade_rows(push.data, inst, recv_us, drop_block_trades)


def _control(frame: bytes | str) -> Control:
    """Subscribe replies, pongs and errors: ``{"success":…,"ret_msg":…,"op":…,"req_id":…}``."""
    msg = loads(frame)
    if type(msg) is not dict:
        raise ParseError("bybit: frame is not an object")
    if "topic" in msg:  # a push whose schema check failed: say which field is wrong
        try:
            msgspec.convert(msg, _Push)
        except msgspec.ValidationError as exc:
            raise not_a_trade(exc) from None
    op = msg.get("op")
    success = msg.get("success")
    raw_id = msg.get("req_id")
    req_id = str(raw_id) if type(raw_id) in (str, int) and raw_id != "" else None
    ret_msg = str(msg.get("ret_msg", ""))
    if op in ("ping", "pong") and success is not False:
        return Control("pong", req_id=req_id)
    if op in ("subscribe", "unsubscribe") and type(success) is bool:
        if success:
            return Control("ack", req_id=req_id)
        # Bybit names the refused topics in ret_msg ("Invalid symbol :[publicTrade.X]",
        # "error:handler not found,topic:publicTrade.X"); "args size >10" names none.
        symbols = tuple(_TOPIC_RE.findall(ret_msg))
        if symbols and "already subscribed" in ret_msg:
            # "error:already subscribed,topic:publicTrade.X" (seen live, sieblyio/bybit-api#477):
            # the topic is subscribed on this connection; the runner re-asks after a partial refusal.
            return Control("ack", req_id=req_id, symbols=symbols, message=ret_msg)
        return Control("ack", req_id=req_id, ok=False, symbols=symbols, message=ret_msg)
    if success is False:
        return Control("error", req_id=req_id, message=ret_msg)
    if op is not None and success is True:
        return Control("info", req_id=req_id, message=str(op))
    raise ParseError("bybit: unexpected frame")


def _request(op: str, symbols: Sequence[str], req_id: str, per_request: int) -> list[str]:
    args = [_PREFIX + s for s in symbols]
    return [
        orjson.dumps({"req_id": req_id, "op": op, "args": args[i : i + per_request]}).decode()
        for i in range(0, len(args), per_request)
    ]


# Instrument statuses subscribed (instruments-info ``status``, enum page "status": PreLaunch,
# Trading, Delivering, Closed; https://bybit-exchange.github.io/docs/v5/enum#status). PreLaunch
# is a linear contract before its first trade (pre-market perpetuals included); Delivering and
# Closed are a delisting's. instruments-info returns only `Trading` symbols unless asked for
# another status, so linear is fetched twice: the default list, then ``status=PreLaunch``.
# Spot "has Trading only" (https://bybit-exchange.github.io/docs/v5/market/instrument).
SUBSCRIBED_STATUSES = frozenset({"Trading", "PreLaunch"})
PRE_TRADING_STATUS = "PreLaunch"
# symbolType of non-crypto instruments (enum page "symbolType"): linear commodity, stock and forex
# perpetuals and spot xstocks (tokenized shares); left out unless `include_non_crypto`.
NON_CRYPTO_SYMBOL_TYPES = frozenset({"commodity", "stock", "forex", "xstocks"})


def _parse_instruments(
    body: bytes, futures: bool, quotes: frozenset[str], rest: dict[str, str], include_non_crypto: bool = False
) -> tuple[list[Instrument], HttpRequest | None]:
    """Subscribable instruments of one instruments-info page, and the request for the next page
    (linear: after the last page of the default list, the first of the PreLaunch list)."""
    try:
        doc = loads(body)
        if doc["retCode"] != 0:
            raise ParseError(f"bybit: instruments-info retCode {doc['retCode']}: {doc.get('retMsg')}")
        result = doc["result"]
        out = []
        for item in result["list"]:
            if item["status"] not in SUBSCRIBED_STATUSES or item["quoteCoin"] not in quotes:
                continue
            if not include_non_crypto and item.get("symbolType") in NON_CRYPTO_SYMBOL_TYPES:
                continue
            if futures and (item["contractType"] != "LinearPerpetual" or item["settleCoin"] not in quotes):
                continue
            out.append(Instrument(item["symbol"], item["baseCoin"].upper(), item["quoteCoin"].upper()))
        cursor = result.get("nextPageCursor") or ""
    except (KeyError, TypeError, AttributeError) as exc:
        raise ParseError(f"bybit: bad instruments-info response ({exc!r})") from None
    if "first_url" not in rest:
        if cursor:
            raise ParseError("bybit: a paginated instruments-info page without instruments_request")
        return out, None
    current = rest.get("current_url", rest["first_url"])
    if cursor:
        return out, HttpRequest("GET", f"{current}&cursor={quote(cursor)}")
    if futures and current == rest["first_url"]:
        rest["current_url"] = f"{rest['first_url']}&status={PRE_TRADING_STATUS}"
        return out, HttpRequest("GET", rest["current_url"])
    return out, None


class Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``streams.bybit_<market>.options``."""

    drop_block_trades: bool = False
    quotes: tuple[str, ...] = ("USDT",)  # quote assets recorded
    # stock/forex/commodity perpetuals and xstocks too; default: symbols.include_non_crypto
    include_non_crypto: bool = False


def adapter(market: str, options: Mapping[str, Any]) -> Adapter:
    """The Adapter of ``bybit_<market>``; options: see `Options`."""
    if market not in ("spot", "futures"):
        raise ConfigError(f"bybit has no market {market!r}")
    futures = market == "futures"
    opts = read_options(f"bybit_{market}", options, Options)
    drop_block = opts.drop_block_trades
    quotes = frozenset(q.upper() for q in opts.quotes)
    non_crypto = opts.include_non_crypto
    # Spot takes at most 10 args per request; linear has no per-request cap, but every public
    # connection's args must stay under 21,000 characters (~29 per topic -> 500 is safe).
    per_request = 100 if futures else 10
    category = "linear" if futures else "spot"
    rest: dict[str, str] = {}  # the first page's URL, for the cursor of the next pages

    def instruments_request(rest_url: str) -> HttpRequest:
        limit = "&limit=1000" if futures else ""
        rest["first_url"] = f"{rest_url.rstrip('/')}/v5/market/instruments-info?category={category}{limit}"
        rest.pop("current_url", None)
        return HttpRequest("GET", rest["first_url"])

    return Adapter(
        stream=f"bybit_{market}",
        doc_url=DOC_URL,
        decode=lambda frame, recv_us, instruments: _decode(frame, recv_us, instruments, drop_block),
        subscribe=lambda symbols, req_id: _request("subscribe", symbols, req_id, per_request),
        unsubscribe=lambda symbols, req_id: _request("unsubscribe", symbols, req_id, per_request),
        max_symbols_per_request=per_request,
        max_symbols_per_connection=500,
        max_requests_per_s=10.0,
        ping=lambda now_ms: orjson.dumps({"req_id": str(now_ms), "op": "ping"}).decode(),
        ping_interval_s=20.0,
        quiet_timeout_s=60.0,
        instruments_request=instruments_request,
        parse_instruments=lambda body: _parse_instruments(body, futures, quotes, rest, non_crypto),
        default_options=option_values(Options()),
    )
