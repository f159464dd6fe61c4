"""Phemex spot and USDT perpetual public trades.

Implements:
  https://github.com/phemex/phemex-api-docs/blob/master/Public-Spot-API-en.md#tradesub
  https://github.com/phemex/phemex-api-docs/blob/master/Public-Hedged-Perpetual-API.md#tradesub
  https://phemex-docs.github.io/#query-product-information-3   (GET /public/products)

The WebSocket lives at ``wss://ws.phemex.com`` (the documented ``wss://phemex.com/ws`` answers
HTTP 410). One symbol per subscribe request; the client must ping (``server.ping``) at least
every 30 s. The documented "20 subscriptions per connection, 5 connections per client" (API Rate
Limits section) is contested (phemex-api-docs PR #87: 100 work on one socket; others subscribe
every symbol on one), so the runner learns the real limits from refusals (`learn_capacity`). Spot uses
``trade.subscribe`` with ``s``-prefixed symbols and scaled integers: price = priceEp /
10**priceScale of the product, qty = value / 10**valueScale of the base currency, both read
from ``/public/products`` into Instrument.price_scale/qty_scale. USDT perpetuals use
``trade_p.subscribe`` and push real values as strings under ``trades_p``. Times are integer ns.
Trades carry no id: `dedupe_key` is (symbol, time_us, side, price, qty), packed. Each subscribe is
followed by a ``snapshot`` of recent history; it is decoded like live trades and the runner's
de-duplication drops what was already recorded.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

import msgspec
import orjson

from pumpwatch.errors import ConfigError, ParseError
from pumpwatch.recorder.adapter import Adapter, Control, Decoder, HttpRequest, Instrument, Instruments
from pumpwatch.recorder.adapters.checks import (
    BY_TIME,
    SIDE_OF_CAPITAL,
    CapitalSide,
    loads,
    not_a_trade,
    option_values,
    read_options,
    stale,
    trade_row,
)
from pumpwatch.segments.schema import TradeRow

log = logging.getLogger(__name__)

DOC_URL = "https://github.com/phemex/phemex-api-docs/blob/master/Public-Spot-API-en.md"
FUTURES_DOC_URL = "https://github.com/phemex/phemex-api-docs/blob/master/Public-Hedged-Perpetual-API.md"
_METHOD = {"spot": "trade", "futures": "trade_p"}

# ``[ts_ns, "Buy"|"Sell", priceEp, value]``: scaled integers (spot).
SpotTrade = tuple[int, CapitalSide, int, int]
# ``[ts_ns, "Buy"|"Sell", "priceRp", "qtyRq"]``: real values, documented as strings (perpetual).
PerpTrade = tuple[int, CapitalSide, str | float, str | float]


class _SpotPush(msgspec.Struct, gc=False):
    symbol: str
    trades: list[SpotTrade]
    type: Literal["incremental", "snapshot"] = "incremental"  # a push without it is live


class _PerpPush(msgspec.Struct, gc=False):
    symbol: str
    trades_p: list[PerpTrade]
    type: Literal["incremental", "snapshot"] = "incremental"


_PACK_KEY = struct.Struct("<qdd").pack


def dedupe_key(row: TradeRow) -> tuple[str, bytes]:
    """Phemex has no trade id: a trade is (symbol, time_us, side, price, qty), with time, price
    and qty packed exactly (an int64 and two doubles) and the side's UTF-8 after them into one
    bytes object, the id the de-duplicator keeps (~117 bytes per key with its table slots,
    against ~222 for a tuple of an int and two floats: Phemex keeps 256 keys per symbol).

    Two genuine fills with the same side, price and size in the same microsecond would collapse
    into one; on a single order book that is rare, and the alternative (keeping snapshot replays
    twice) is certain, so the key trades that small risk for exactness on replays.
    """
    return (row[2], _PACK_KEY(row[0], row[5], row[6]) + row[7].encode())


def _control(msg: dict[str, Any]) -> Control:
    req_id = msg.get("id")
    rid = None if req_id is None else str(req_id)
    error = msg.get("error")
    if error is not None:
        # {"error":{"code":6001,"message":"invalid argument"},"id":1,"result":null}
        if type(error) is dict:
            message = f"{error.get('code', '')} {error.get('message', '')}".strip()
        else:
            message = str(error)
        return (
            Control("ack", req_id=rid, ok=False, message=message)
            if rid
            else Control("error", message=message)
        )
    result = msg.get("result")
    if result == "pong":
        return Control("pong", req_id=rid)
    if type(result) is dict and result.get("status") == "success":
        return Control("ack", req_id=rid)
    raise ParseError(f"unexpected reply {msg!s:.120}")


def spot_trade_rows(
    trades: list[SpotTrade], inst: Instrument, recv_us: int, snapshot: bool
) -> list[TradeRow]:
    """Spot trades of `inst` -> checked rows: price = priceEp / 10**price_scale, qty = value /
    10**qty_scale (the scales come from the instrument list, never assumed).

    Oldest first (a snapshot lists the newest first; ties keep exchange order). In a subscribe
    snapshot, history older than the plausibility bound is not news and is skipped.
    """
    price_div, qty_div = 10**inst.price_scale, 10**inst.qty_scale
    rows: list[TradeRow] = []
    append = rows.append
    try:
        for ts_ns, side, price_ep, value in reversed(trades) if snapshot else trades:
            time_us = ts_ns // 1000
            if snapshot and stale(time_us, recv_us):
                continue
            price, qty = price_ep / price_div, value / qty_div
            append(trade_row(time_us, recv_us, inst, price, qty, SIDE_OF_CAPITAL[side], None))
    except OverflowError:  # an integer too large for a float
        raise ParseError(f"phemex: priceEp/value out of range in {trades!s:.120}") from None
    if len(rows) > 1:
        rows.sort(key=BY_TIME)  # linear when already ascending
    return rows


def perp_trade_rows(
    trades: list[PerpTrade], inst: Instrument, recv_us: int, snapshot: bool
) -> list[TradeRow]:
    """Perpetual trades of `inst` -> checked rows (qty × multiplier); order and snapshots as spot."""
    multiplier = inst.multiplier
    rows: list[TradeRow] = []
    append = rows.append
    try:
        for ts_ns, side, price, qty in reversed(trades) if snapshot else trades:
            time_us = ts_ns // 1000
            if snapshot and stale(time_us, recv_us):
                continue
            p, q = float(price), float(qty) * multiplier
            append(trade_row(time_us, recv_us, inst, p, q, SIDE_OF_CAPITAL[side], None))
    except ValueError as exc:  # a price or qty string that is not a number
        if isinstance(exc, ParseError):
            raise
        raise ParseError(f"phemex: {exc}") from None
    if len(rows) > 1:
        rows.sort(key=BY_TIME)
    return rows


def _make_decode(market: str) -> Decoder:
    """The decoder of one market: spot pushes ``trades``, perpetual pushes ``trades_p``."""
    spot = market == "spot"
    trades_key = "trades" if spot else "trades_p"
    push_type: type[_SpotPush | _PerpPush] = _SpotPush if spot else _PerpPush
    decode_push: Callable[[bytes | str], _SpotPush | _PerpPush] = msgspec.json.Decoder(push_type).decode

    def decode(frame: bytes | str, recv_us: int, instruments: Instruments) -> list[TradeRow] | Control:
        """One Phemex frame -> trades (oldest first), or a Control for replies and pongs.

        Spot: {"sequence":1067556417,"symbol":"sBTCUSDT","trades":[[1591268226414925245,"Sell",
        954488000000,279100]],"type":"incremental"}  (priceEp and value are scaled integers)
        Perpetual: {"sequence":79157171,"symbol":"BTCUSDT","trades_p":[[1669198793402790477,"Buy",
        "16545.6","0.7"]],"type":"incremental"}
        """
        try:
            push = decode_push(frame)
        except msgspec.DecodeError:
            return other(frame)
        inst = instruments.get(push.symbol)
        if inst is None:
            raise ParseError(f"unknown symbol {push.symbol!r:.40}")
        snapshot = push.type == "snapshot"
        if isinstance(push, _SpotPush):
            return spot_trade_rows(push.trades, inst, recv_us, snapshot)
        return perp_trade_rows(push.trades_p, inst, recv_us, snapshot)

    def other(frame: bytes | str) -> Control:
        """Replies and pongs; a trade push whose schema check failed."""
        msg = loads(frame)
        if type(msg) is not dict:
            raise ParseError("frame is not an object")
        if trades_key in msg:
            try:
                msgspec.convert(msg, push_type)
            except msgspec.ValidationError as exc:
                raise not_a_trade(exc) from None
        if "result" in msg or "error" in msg:
            return _control(msg)
        raise ParseError(f"unexpected frame keys {sorted(msg)[:6]}")

    return decode


def _make_subscribe(market: str, action: str) -> Callable[[Sequence[str], str], list[str]]:
    method = f"{_METHOD[market]}.{action}"

    def build(symbols: Sequence[str], req_id: str) -> list[str]:
        """``{"id":1234,"method":"trade.subscribe","params":["sBTCUSDT"]}``: one symbol per request."""
        rid: int | str = int(req_id) if req_id.isascii() and req_id.isdigit() else req_id
        return [orjson.dumps({"id": rid, "method": method, "params": [s]}).decode() for s in symbols]

    return build


def ping(now_ms: int) -> str:
    """``{"id":<ms>,"method":"server.ping","params":[]}`` -> ``{"error":null,"id":<ms>,"result":"pong"}``."""
    return f'{{"id":{now_ms},"method":"server.ping","params":[]}}'


def _products(body: bytes) -> dict[str, Any]:
    try:
        reply = loads(body)
        data = reply["data"]
    except (KeyError, TypeError) as exc:
        raise ParseError(f"bad products response: {exc}") from None
    if reply.get("code") != 0 or type(data) is not dict:
        raise ParseError(f"products refused: {str(reply)[:200]}")
    return data


def _rows(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    rows = data.get(key)
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def parse_spot_instruments(body: bytes) -> tuple[list[Instrument], HttpRequest | None]:
    """Listed USDT spot products; price scale from the product, qty scale from the base currency."""
    data = _products(body)
    value_scale = {
        c["currency"]: c["valueScale"]
        for c in _rows(data, "currencies")
        if type(c.get("currency")) is str and type(c.get("valueScale")) is int
    }
    out, skipped = [], []
    for r in _rows(data, "products"):
        if r.get("type") != "Spot" or r.get("quoteCurrency") != "USDT" or r.get("status") != "Listed":
            continue
        symbol, base, price_scale = r.get("symbol"), r.get("baseCurrency"), r.get("priceScale")
        if type(symbol) is not str or type(base) is not str or type(price_scale) is not int:
            skipped.append(str(symbol))
            continue
        if base not in value_scale:  # never assume a scale: without it the quantities are unknowable
            skipped.append(symbol)
            continue
        out.append(
            Instrument(symbol, base.upper(), "USDT", price_scale=price_scale, qty_scale=value_scale[base])
        )
    if skipped:
        log.warning("phemex_spot: %d products without usable scales skipped: %s", len(skipped), skipped[:10])
    return out, None


def parse_futures_instruments(body: bytes) -> tuple[list[Instrument], HttpRequest | None]:
    """Listed USDT-settled perpetuals (``perpProductsV2``, real-valued ``trades_p``, qty in base)."""
    out = []
    for r in _rows(_products(body), "perpProductsV2"):
        if r.get("type") != "PerpetualV2" or r.get("status") != "Listed":
            continue
        if r.get("settleCurrency") != "USDT" or r.get("quoteCurrency") != "USDT":
            continue
        symbol, base = r.get("symbol"), r.get("baseCurrency") or r.get("contractUnderlyingAssets")
        if type(symbol) is str and type(base) is str and base:
            out.append(Instrument(symbol, base.upper(), "USDT"))
    return out, None


class Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``streams.phemex_<market>.options``."""

    # DataGW drops a client silent for 30 s; the docs recommend pinging every 5 s.
    ping_interval_s: Annotated[float, msgspec.Meta(gt=0, lt=30)] = 10.0


def adapter(market: str, options: Mapping[str, Any]) -> Adapter:
    """The Phemex `Adapter` for ``"spot"`` or ``"futures"`` (USDT perpetual); options: see `Options`."""
    if market not in _METHOD:
        raise ConfigError(f"phemex: unknown market {market!r}")
    ping_s = read_options(f"phemex_{market}", options, Options).ping_interval_s
    return Adapter(
        stream=f"phemex_{market}",
        doc_url=DOC_URL if market == "spot" else FUTURES_DOC_URL,
        decode=_make_decode(market),
        subscribe=_make_subscribe(market, "subscribe"),
        # The spot page documents only "unsubscribe all"; the perpetual page documents the
        # per-symbol form used here for both.
        unsubscribe=_make_subscribe(market, "unsubscribe"),
        max_symbols_per_request=1,
        # Only a ceiling: the runner learns the real cap from the first refusals. 200 bounds one
        # connection's subscribing to 20 s at 10 requests/s (and its snapshot replays).
        max_symbols_per_connection=200,
        max_requests_per_s=10.0,  # documented throttle: 20 requests/s per connection
        max_connections=None,  # learned: a handshake refused while others are open caps them
        learn_capacity=True,
        ping=ping,
        ping_interval_s=float(ping_s),
        quiet_timeout_s=3 * float(ping_s),  # "reconnect if nothing received in 3 heartbeat intervals"
        instruments_request=lambda rest_url: HttpRequest("GET", rest_url.rstrip("/") + "/public/products"),
        parse_instruments=parse_spot_instruments if market == "spot" else parse_futures_instruments,
        dedupe_key=dedupe_key,
        replay_trades=200,  # the snapshot after every subscribe holds the last 200 trades
        default_options=option_values(Options()),
    )
