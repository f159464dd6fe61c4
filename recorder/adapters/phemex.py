"""Phemex spot and USDT perpetual public trades.

Implements:
  https://github.com/phemex/phemex-api-docs/blob/master/Public-Spot-API-en.md#tradesub
  https://github.com/phemex/phemex-api-docs/blob/master/Public-Hedged-Perpetual-API.md#tradesub
  https://phemex-docs.github.io/#query-product-information-3   (GET /public/products)

The WebSocket lives at ``wss://ws.phemex.com`` (the documented ``wss://phemex.com/ws`` answers
HTTP 410). One symbol per subscribe request, at most 20 subscriptions per connection and 5
connections per client; the client must ping (``server.ping``) at least every 30 s. Spot uses
``trade.subscribe`` with ``s``-prefixed symbols and scaled integers: price = priceEp /
10**priceScale of the product, qty = value / 10**valueScale of the base currency, both read
from ``/public/products`` into Instrument.price_scale/qty_scale. USDT perpetuals use
``trade_p.subscribe`` and push real values as strings under ``trades_p``. Times are integer ns.
Trades carry no id: `dedupe_key` is (symbol, time_us, side, price, qty). Each subscribe is
followed by a ``snapshot`` of recent history; it is decoded like live trades and the runner's
de-duplication drops what was already recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

import orjson

from pumpwatch.errors import ConfigError, ParseError
from pumpwatch.recorder.adapter import Adapter, Control, Decoder, HttpRequest, Instrument, Instruments
from pumpwatch.segments.schema import TradeRow

log = logging.getLogger(__name__)

DOC_URL = "https://github.com/phemex/phemex-api-docs/blob/master/Public-Spot-API-en.md"
FUTURES_DOC_URL = "https://github.com/phemex/phemex-api-docs/blob/master/Public-Hedged-Perpetual-API.md"
DAY_US = 86_400_000_000
_INF = float("inf")
_SIDES = {"Buy": "buy", "Sell": "sell"}
_METHOD = {"spot": "trade", "futures": "trade_p"}
_TRADES_KEY = {"spot": "trades", "futures": "trades_p"}
_TIME_KEY = itemgetter(0)
_NUMERIC = {str: True, int: True, float: True}  # JSON types a real-valued field may come as (not bool)
_DIVISORS = {scale: 10**scale for scale in range(19)}  # spot scales the fast path takes


def dedupe_key(row: TradeRow) -> tuple[str, int, str, float, float]:
    """Phemex has no trade id: a trade is (symbol, time_us, side, price, qty).

    Two genuine fills with the same side, price and size in the same microsecond would collapse
    into one; on a single order book that is rare, and the alternative (keeping snapshot replays
    twice) is certain, so the key trades that small risk for exactness on replays.
    """
    return (row[2], row[0], row[7], row[5], row[6])


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
    raise ParseError(f"unexpected reply {str(msg)[:120]}")


def _make_decode(market: str) -> Decoder:
    """The decoder of one market: a fast path for well-formed trade frames, `careful` otherwise.

    The fast paths are comprehensions whose filter keeps only rows that pass every check, so
    a count mismatch means a bad row; anything unusual (a reply, a non-dict, an unknown symbol,
    a bad row, a time out of range) leaves them with None, KeyError or TypeError and goes to
    `careful`, which decodes field by field and raises the precise ParseError.
    """
    trades_key = _TRADES_KEY[market]
    strict_rows = _spot_rows if market == "spot" else _perp_rows
    loads, sides, inf, time_key, day_us, divisors = orjson.loads, _SIDES, _INF, _TIME_KEY, DAY_US, _DIVISORS

    def decode_spot(frame: bytes | str, recv_us: int, instruments: Instruments) -> list[TradeRow] | Control:
        """{"sequence":1067556417,"symbol":"sBTCUSDT","trades":[[1591268226414925245,"Sell",
        954488000000,279100]],"type":"incremental"}  (priceEp and value are scaled integers)

        On ints ``p > 0`` is the whole price check: divisors are at most 10**18 (larger scales
        take the careful path), so the quotient is > 0, and an int too big for a float raises.
        """
        try:
            msg = loads(frame)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"not JSON: {exc}") from None
        try:
            trades, symbol = msg["trades"], msg["symbol"]
            inst = instruments[symbol]
            if msg["type"] == "incremental":
                base, quote = inst.base, inst.quote
                price_div, qty_div = divisors[inst.price_scale], divisors[inst.qty_scale]
                rows = [
                    (ts // 1000, recv_us, symbol, base, quote, p / price_div, q / qty_div, sides[side], None)
                    for ts, side, p, q in trades
                    if type(ts) is type(p) is type(q) is int and p > 0 < q
                ]
                if len(rows) == len(trades) and rows:
                    # Stable and linear on ordered input: ties keep exchange order, as in careful.
                    rows.sort(key=time_key)
                    if recv_us - day_us <= rows[0][0] and rows[-1][0] <= recv_us + day_us:
                        return rows
        except (KeyError, TypeError, ValueError, OverflowError):
            pass
        return careful(msg, recv_us, instruments)

    def decode_perp(frame: bytes | str, recv_us: int, instruments: Instruments) -> list[TradeRow] | Control:
        """{"sequence":79157171,"symbol":"BTCUSDT","trades_p":[[1669198793402790477,"Buy",
        "16545.6","0.7"]],"type":"incremental"}

        ``for x in [expr]`` binds a comprehension name as cheaply as an assignment, so the filter
        can check converted values; ``p + ""`` raises TypeError unless p is a str (the wire type),
        so a float or bool value takes the careful path.
        """
        try:
            msg = loads(frame)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"not JSON: {exc}") from None
        try:
            trades, symbol = msg["trades_p"], msg["symbol"]
            inst = instruments[symbol]
            if msg["type"] == "incremental" and inst.multiplier == 1.0:
                base, quote = inst.base, inst.quote
                rows = [
                    (ts // 1000, recv_us, symbol, base, quote, price, qty, sides[side], None)
                    for ts, side, p, q in trades
                    for price in [float(p + "")]
                    for qty in [float(q + "")]
                    if type(ts) is int and 0.0 < price < inf > qty > 0.0
                ]
                if len(rows) == len(trades) and rows:
                    rows.sort(key=time_key)
                    if recv_us - day_us <= rows[0][0] and rows[-1][0] <= recv_us + day_us:
                        return rows
        except (KeyError, TypeError, ValueError, OverflowError):
            pass
        return careful(msg, recv_us, instruments)

    def careful(msg: Any, recv_us: int, instruments: Instruments) -> list[TradeRow] | Control:
        """Field-by-field decoding of replies, snapshots and frames the fast path declined."""
        if type(msg) is not dict:
            raise ParseError("frame is not an object")
        trades = msg.get(trades_key)
        if trades is None:
            if "result" in msg or "error" in msg:
                return _control(msg)
            raise ParseError(f"unexpected frame keys {sorted(msg)[:6]}")
        symbol = msg.get("symbol")
        inst = instruments.get(symbol) if isinstance(symbol, str) else None
        if inst is None or not isinstance(symbol, str):
            raise ParseError(f"unknown symbol {symbol!r}")
        kind = msg.get("type")
        if kind != "incremental" and kind != "snapshot":
            raise ParseError(f"unexpected trade message type {kind!r}")
        if type(trades) is not list:
            raise ParseError("trades is not a list")
        try:
            rows = strict_rows(trades, recv_us, symbol, inst, kind == "snapshot")
        except (KeyError, ValueError, TypeError, OverflowError) as exc:
            if isinstance(exc, ParseError):
                raise
            raise ParseError(f"bad trade row: {exc!r}") from None
        if len(rows) > 1:
            if kind == "snapshot":
                rows.reverse()  # snapshots list the newest trade first, ties included
            rows.sort(key=_TIME_KEY)
        return rows

    return decode_spot if market == "spot" else decode_perp


def _spot_rows(items: list[Any], recv_us: int, symbol: str, inst: Instrument, snap: bool) -> list[TradeRow]:
    """``[ts_ns, "Buy"|"Sell", priceEp, value]`` rows: scaled integers divided by the instrument's scales.

    A row of the wrong length, an unknown side or an unhashable one raise ValueError/KeyError/
    TypeError, which the caller turns into ParseError; the checks here cover what would pass.
    """
    lo_us, hi_us = recv_us - DAY_US, recv_us + DAY_US
    base, quote, sides = inst.base, inst.quote, _SIDES
    price_div, qty_div = 10**inst.price_scale, 10**inst.qty_scale
    rows: list[TradeRow] = []
    append = rows.append
    for ts_ns, side, p, q in items:
        if type(ts_ns) is not int or type(p) is not int or type(q) is not int or p <= 0 or q <= 0:
            raise ParseError(f"bad trade row {[ts_ns, side, p, q]!r:.120}")
        time_us = ts_ns // 1000
        if not lo_us <= time_us <= hi_us:
            if snap and time_us < lo_us:
                continue  # history older than a day in a subscribe snapshot is not news
            raise ParseError(f"implausible time {ts_ns!r}")
        append((time_us, recv_us, symbol, base, quote, p / price_div, q / qty_div, sides[side], None))
    return rows


def _perp_rows(items: list[Any], recv_us: int, symbol: str, inst: Instrument, snap: bool) -> list[TradeRow]:
    """``[ts_ns, "Buy"|"Sell", "priceRp", "qtyRq"]`` rows with real values as strings."""
    lo_us, hi_us = recv_us - DAY_US, recv_us + DAY_US
    base, quote, sides, mult = inst.base, inst.quote, _SIDES, inst.multiplier
    rows: list[TradeRow] = []
    append = rows.append
    for ts_ns, side, p, q in items:
        if type(ts_ns) is not int or _NUMERIC.get(type(p)) is None or _NUMERIC.get(type(q)) is None:
            raise ParseError(f"bad trade row {[ts_ns, side, p, q]!r:.120}")
        price, qty = float(p), float(q) * mult
        if not (0.0 < price < _INF and 0.0 < qty < _INF):
            raise ParseError(f"bad price/qty {p!r} {q!r}")
        time_us = ts_ns // 1000
        if not lo_us <= time_us <= hi_us:
            if snap and time_us < lo_us:
                continue
            raise ParseError(f"implausible time {ts_ns!r}")
        append((time_us, recv_us, symbol, base, quote, price, qty, sides[side], None))
    return rows


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
        reply = orjson.loads(body)
        data = reply["data"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
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


DEFAULT_OPTIONS: dict[str, Any] = {
    "ping_interval_s": 10.0,  # DataGW drops a client silent for 30 s; docs recommend 5 s
}


def adapter(market: str, options: dict[str, Any]) -> Adapter:
    """The Phemex `Adapter` for ``"spot"`` or ``"futures"`` (USDT perpetual)."""
    if market not in _METHOD:
        raise ConfigError(f"phemex: unknown market {market!r}")
    unknown = set(options) - set(DEFAULT_OPTIONS)
    if unknown:
        raise ConfigError(f"phemex_{market}: unknown option(s) {sorted(unknown)}")
    ping_s = {**DEFAULT_OPTIONS, **options}["ping_interval_s"]
    if not isinstance(ping_s, int | float) or not 0 < ping_s < 30:
        raise ConfigError(f"phemex_{market}: ping_interval_s must be between 0 and 30, got {ping_s!r}")
    return Adapter(
        stream=f"phemex_{market}",
        doc_url=DOC_URL if market == "spot" else FUTURES_DOC_URL,
        decode=_make_decode(market),
        subscribe=_make_subscribe(market, "subscribe"),
        # The spot page documents only "unsubscribe all"; the perpetual page documents the
        # per-symbol form used here for both.
        unsubscribe=_make_subscribe(market, "unsubscribe"),
        max_symbols_per_request=1,
        max_symbols_per_connection=20,
        max_requests_per_s=10.0,  # documented throttle: 20 requests/s per connection
        max_connections=5,
        ping=ping,
        ping_interval_s=float(ping_s),
        quiet_timeout_s=3 * float(ping_s),  # "reconnect if nothing received in 3 heartbeat intervals"
        instruments_request=lambda rest_url: HttpRequest("GET", rest_url.rstrip("/") + "/public/products"),
        parse_instruments=parse_spot_instruments if market == "spot" else parse_futures_instruments,
        dedupe_key=dedupe_key,
        default_options=DEFAULT_OPTIONS,
    )
