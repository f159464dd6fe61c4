"""Gate spot and USDT perpetual futures public trades (API v4).

Implements:
  https://www.gate.com/docs/developers/apiv4/ws/en/#public-trades-channel      (spot.trades)
  https://www.gate.com/docs/developers/futures/ws/en/#trades-subscription      (futures.trades)
  https://www.gate.com/docs/developers/apiv4/en/#list-all-currency-pairs-supported
  https://www.gate.com/docs/developers/apiv4/en/#list-all-futures-contracts

Traps handled here: futures sizes are signed contract counts (sign = taker side, |size| ×
``quanto_multiplier`` = base qty) and since 2026 may be fractional, which the server only sends
when the handshake carries ``X-Gate-Size-Decimal: 1`` (without it sizes are truncated toward
zero); ``is_internal`` futures prints (insurance fund / ADL takeovers) are not market trades
and are dropped; spot ``create_time_ms`` is a string with a sub-millisecond fraction, converted
to µs with string arithmetic, never through a float; the server drops connections idle for a
minute, so the client sends ``<market>.ping`` every few seconds; ids become strings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from operator import itemgetter
from typing import Any

import orjson

from pumpwatch.errors import ConfigError, ParseError
from pumpwatch.recorder.adapter import (
    Adapter,
    ConnectTarget,
    Control,
    Decoder,
    HttpRequest,
    Instrument,
    Instruments,
)
from pumpwatch.recorder.adapters.checks import positive
from pumpwatch.segments.schema import TradeRow

DOC_URL = "https://www.gate.com/docs/developers/apiv4/ws/en/"
FUTURES_DOC_URL = "https://www.gate.com/docs/developers/futures/ws/en/"
SIZE_DECIMAL_HEADER = "X-Gate-Size-Decimal"
DAY_US = 86_400_000_000
_INF = float("inf")
_SIDES = {"buy": "buy", "sell": "sell"}
_CHANNEL = {"spot": "spot", "futures": "futures"}
_TIME_KEY = itemgetter(0)
_NUMERIC = {str: True, int: True, float: True}  # JSON types a number may come as (bool is not one)


def ms_to_us(value: Any) -> int:
    """Gate ms time -> integer µs: ``"1606292218213.4578"`` -> 1606292218213457 exactly.

    Strings are cut at the decimal point and the fraction's first three digits kept (truncated),
    so no float rounding touches the sub-millisecond part; an int is whole milliseconds.
    """
    kind = type(value)
    if kind is int:
        return int(value) * 1000
    if kind is str:
        whole, _, frac = value.partition(".")
        if whole.isascii() and whole.isdigit() and (not frac or (frac.isascii() and frac.isdigit())):
            return int(whole) * 1000 + (int((frac + "000")[:3]) if frac else 0)
    elif kind is float and value == value and abs(value) < _INF:
        return int(Decimal(repr(value)) * 1000)
    raise ParseError(f"bad create_time_ms: {value!r}")


def _slow_time_us(item: dict[str, Any]) -> int:
    """create_time_ms in any other form than the usual one, or missing (then whole seconds)."""
    raw = item.get("create_time_ms")
    if raw is not None:
        return ms_to_us(raw)
    secs = item["create_time"]  # frames from before create_time_ms existed
    if type(secs) is not int:
        raise ParseError(f"bad create_time: {secs!r}")
    return secs * 1_000_000


def _trade_id(value: Any) -> str:
    if type(value) is int or type(value) is str:
        return str(value)
    raise ParseError(f"bad trade id: {value!r}")


def _spot_trade(res: Any, recv_us: int, instruments: Instruments) -> list[TradeRow]:
    """{"id":309143071,"create_time_ms":"1606292218213.4578","side":"sell","currency_pair":"GT_USDT",
    "amount":"16.47","price":"0.4705","id_market":5736713,...}

    Unknown sides or pairs and unhashable values raise KeyError/TypeError, which `decode` turns
    into ParseError; the checks here catch what would otherwise pass.
    """
    symbol = res["currency_pair"]
    inst = instruments.get(symbol)
    if inst is None:
        raise ParseError(f"unknown symbol {symbol!r}")
    p, a = res["price"], res["amount"]
    if _NUMERIC.get(type(p)) is None or _NUMERIC.get(type(a)) is None:
        raise ParseError(f"bad price/amount {p!r} {a!r}")
    price, qty = float(p), float(a)
    if not (0.0 < price < _INF and 0.0 < qty < _INF):
        raise ParseError(f"bad price/amount {p!r} {a!r}")
    raw = res.get("create_time_ms")
    if type(raw) is str:
        whole, _, frac = raw.partition(".")
        if not whole.isdigit() or (frac and not frac.isdigit()):
            raise ParseError(f"bad create_time_ms {raw!r}")
        time_us = int(whole) * 1000 + (int((frac + "00")[:3]) if frac else 0)
    else:
        time_us = _slow_time_us(res)
    if not -DAY_US <= time_us - recv_us <= DAY_US:
        raise ParseError(f"implausible time {raw!r}")
    tid = res["id"]
    trade_id = str(tid) if type(tid) is int else _trade_id(tid)
    return [(time_us, recv_us, symbol, inst.base, inst.quote, price, qty, _SIDES[res["side"]], trade_id)]


def _futures_trades(res: Any, recv_us: int, instruments: Instruments) -> list[TradeRow]:
    """[{"size":"-108","id":27753479,"create_time_ms":1545136464123,"price":"96.4",
    "contract":"BTC_USDT","is_internal":true}, ...] — the sign of size is the taker side."""
    if type(res) is not list:
        raise ParseError("futures.trades result is not a list")
    lo_us, hi_us = recv_us - DAY_US, recv_us + DAY_US
    rows: list[TradeRow] = []
    append = rows.append
    last_symbol: Any = None
    inst: Instrument | None = None
    mult = 0.0
    for item in res:
        symbol = item["contract"]
        if symbol != last_symbol:
            inst = instruments.get(symbol)
            if inst is None:
                raise ParseError(f"unknown contract {symbol!r}")
            last_symbol, mult = symbol, inst.multiplier
        internal = item.get("is_internal")
        if internal is not None:
            if internal is True:
                continue  # insurance-fund/ADL takeover, not a market trade (kept in the frame journal)
            if internal is not False:
                raise ParseError(f"bad is_internal {internal!r}")
        size, p = item["size"], item["price"]
        if _NUMERIC.get(type(size)) is None or _NUMERIC.get(type(p)) is None:
            raise ParseError(f"bad size/price {size!r} {p!r}")
        contracts, price = float(size), float(p)
        if contracts > 0.0:
            side = "buy"
        else:
            side, contracts = "sell", -contracts
        qty = contracts * mult
        if not (0.0 < qty < _INF and 0.0 < price < _INF):
            raise ParseError(f"bad size/price {size!r} {p!r}")
        raw = item.get("create_time_ms")
        time_us = raw * 1000 if type(raw) is int else _slow_time_us(item)
        if not lo_us <= time_us <= hi_us:
            raise ParseError(f"implausible time {raw!r}")
        tid = item["id"]
        trade_id = str(tid) if type(tid) is int else _trade_id(tid)
        assert inst is not None  # set together with last_symbol
        append((time_us, recv_us, symbol, inst.base, inst.quote, price, qty, side, trade_id))
    if len(rows) > 1:
        rows.sort(key=_TIME_KEY)  # stable, and linear when already ascending
    return rows


def _reply(msg: dict[str, Any]) -> Control:
    """Subscribe/unsubscribe reply: error null is success.

    A refusal: {"error":{"code":2,"message":"unknown currency pair X_USDT"},...}.
    """
    req_id = msg.get("id")
    rid = None if req_id is None else str(req_id)
    error = msg.get("error")
    if error is None:
        return Control("ack", req_id=rid)
    if type(error) is dict:
        message = f"{error.get('code', '')} {error.get('message', '')}".strip()
    else:
        message = str(error)
    # Gate names only one pair and does not say whether the rest of the payload went through,
    # so no symbols are claimed: the runner retries the request one symbol at a time.
    return Control("ack", req_id=rid, ok=False, message=message)


def _make_decode(market: str) -> Decoder:
    prefix = _CHANNEL[market]
    trades_channel, pong_channel = f"{prefix}.trades", f"{prefix}.pong"
    parse_result = _spot_trade if market == "spot" else _futures_trades
    loads, sides, inf = orjson.loads, _SIDES, _INF

    def decode(frame: bytes | str, recv_us: int, instruments: Instruments) -> list[TradeRow] | Control:
        """One Gate frame -> trades (oldest first), or a Control for replies, pongs and notices."""
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"not JSON: {exc}") from None
        return careful(msg, recv_us, instruments)

    def decode_spot(frame: bytes | str, recv_us: int, instruments: Instruments) -> list[TradeRow] | Control:
        """`decode` with a fast path for the usual spot trade frame (one trade per frame).

        Every check of `_spot_trade` is here in one condition; any other shape (a reply, an
        int time, a missing field, a bad value) raises or fails it and `careful` decodes the
        frame field by field, raising the precise ParseError. The time is ``int(whole ms +
        first 3 fraction digits)``: one exact integer parse, digits checked by ``isdigit``.
        """
        try:
            msg = loads(frame)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"not JSON: {exc}") from None
        try:
            if msg["channel"] == trades_channel and msg["event"] == "update":
                res = msg["result"]
                symbol = res["currency_pair"]
                inst = instruments[symbol]
                whole, _, frac = res["create_time_ms"].partition(".")
                time_us = int(whole + (frac + "00")[:3])
                price, qty = float(res["price"] + ""), float(res["amount"] + "")
                tid = res["id"]
                if (
                    0.0 < price < inf > qty > 0.0
                    and -DAY_US <= time_us - recv_us <= DAY_US
                    and type(tid) is int
                    and whole.isdigit()
                    and frac.isdigit()
                ):
                    side = sides[res["side"]]
                    return [(time_us, recv_us, symbol, inst.base, inst.quote, price, qty, side, str(tid))]
        except (KeyError, TypeError, ValueError, AttributeError):
            pass
        return careful(msg, recv_us, instruments)

    def careful(msg: Any, recv_us: int, instruments: Instruments) -> list[TradeRow] | Control:
        """Field-by-field decoding of any frame."""
        if type(msg) is not dict:
            raise ParseError("frame is not an object")
        channel, event = msg.get("channel"), msg.get("event")
        try:
            if channel == trades_channel:
                if event == "update":
                    return parse_result(msg["result"], recv_us, instruments)
                if event in ("subscribe", "unsubscribe"):
                    return _reply(msg)
            elif channel == pong_channel:
                return Control("pong")
            elif msg.get("type") == "upgrade":
                # {"type":"upgrade","msg":"The connection will soon be closed for a service upgrade..."}
                return Control("reconnect", message=str(msg.get("msg", "")))
        except KeyError as exc:
            raise ParseError(f"missing field or unknown value {exc}") from None
        except (ValueError, TypeError, OverflowError, AttributeError) as exc:
            if isinstance(exc, ParseError):
                raise
            raise ParseError(str(exc)) from None
        raise ParseError(f"unexpected frame: channel {channel!r} event {event!r}")

    return decode_spot if market == "spot" else decode


def make_subscribe(
    market: str, event: str, clock_s: Callable[[], float] = time.time
) -> Callable[[Sequence[str], str], list[str]]:
    """Builder of ``{"time":<s>,"id":<int>,"channel":"spot.trades","event":"subscribe","payload":[..]}``.

    Gate wants the request time in seconds within 60 s of its own clock, so this one builder reads
    a clock (injectable for tests); the id is sent as an integer when the req_id is one.
    """
    channel = f"{_CHANNEL[market]}.trades"

    def build(symbols: Sequence[str], req_id: str) -> list[str]:
        if not symbols:
            return []
        rid: int | str = int(req_id) if req_id.isascii() and req_id.isdigit() else req_id
        frame = {
            "time": int(clock_s()),
            "id": rid,
            "channel": channel,
            "event": event,
            "payload": list(symbols),
        }
        return [orjson.dumps(frame).decode()]

    return build


def _make_ping(market: str) -> Callable[[int], str]:
    channel = f"{_CHANNEL[market]}.ping"
    return lambda now_ms: f'{{"time":{now_ms // 1000},"channel":"{channel}"}}'


def _rows(body: bytes) -> list[dict[str, Any]]:
    try:
        rows = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"bad instrument list: {exc}") from None
    if not isinstance(rows, list):
        raise ParseError(f"instrument list is not a list: {str(rows)[:200]}")
    return [r for r in rows if isinstance(r, dict)]


def _text(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if type(value) is not str or not value:
        raise ParseError(f"instrument field {key!r} is {value!r}")
    return value


def parse_spot_instruments(body: bytes) -> tuple[list[Instrument], HttpRequest | None]:
    """Tradable USDT pairs (pre-market pairs excluded) from ``GET /api/v4/spot/currency_pairs``."""
    out = []
    for r in _rows(body):
        if r.get("quote") == "USDT" and r.get("trade_status") == "tradable" and r.get("type") != "premarket":
            out.append(Instrument(_text(r, "id"), _text(r, "base").upper(), "USDT"))
    return out, None


def parse_futures_instruments(body: bytes) -> tuple[list[Instrument], HttpRequest | None]:
    """Trading, not delisting, linear USDT contracts from ``GET /api/v4/futures/usdt/contracts``.

    The endpoint returns every contract when no ``limit`` is given, so there is no follow-up page.
    """
    out = []
    for r in _rows(body):
        if r.get("type", "direct") != "direct" or r.get("in_delisting") is True:
            continue
        if r.get("status", "trading") != "trading":
            continue
        name = _text(r, "name")
        base, _, quote = name.partition("_")
        if quote != "USDT" or not base:
            continue
        multiplier = positive(r.get("quanto_multiplier"), f"quanto_multiplier of {name!r}")
        out.append(Instrument(name, base.upper(), quote, multiplier=multiplier))
    return out, None


DEFAULT_OPTIONS: dict[str, Any] = {
    "ping_interval_s": 10.0,  # the server closes connections idle for 60 s; gate's SDKs ping every 5-10 s
    "max_symbols_per_connection": 200,  # no documented cap; slow consumers get dropped, so stay moderate
}
FUTURES_OPTIONS: dict[str, Any] = {
    **DEFAULT_OPTIONS,
    "size_decimal": True,  # send X-Gate-Size-Decimal: 1 so fractional contract sizes are not truncated
}


def adapter(market: str, options: dict[str, Any]) -> Adapter:
    """The Gate `Adapter` for ``"spot"`` or ``"futures"``."""
    if market not in _CHANNEL:
        raise ConfigError(f"gate: unknown market {market!r}")
    defaults = FUTURES_OPTIONS if market == "futures" else DEFAULT_OPTIONS
    unknown = set(options) - set(defaults)
    if unknown:
        raise ConfigError(f"gate_{market}: unknown option(s) {sorted(unknown)}")
    opts = {**defaults, **options}
    per_conn, ping_s = opts["max_symbols_per_connection"], opts["ping_interval_s"]
    if type(per_conn) is not int or per_conn < 1:
        raise ConfigError(
            f"gate_{market}: max_symbols_per_connection must be a positive int, got {per_conn!r}"
        )
    if not isinstance(ping_s, int | float) or not 0 < ping_s < 60:
        raise ConfigError(f"gate_{market}: ping_interval_s must be between 0 and 60, got {ping_s!r}")
    headers = {SIZE_DECIMAL_HEADER: "1"} if market == "futures" and opts["size_decimal"] else {}
    rest_path = "/api/v4/spot/currency_pairs" if market == "spot" else "/api/v4/futures/usdt/contracts"
    return Adapter(
        stream=f"gate_{market}",
        doc_url=DOC_URL if market == "spot" else FUTURES_DOC_URL,
        decode=_make_decode(market),
        subscribe=make_subscribe(market, "subscribe"),
        unsubscribe=make_subscribe(market, "unsubscribe"),
        max_symbols_per_request=min(100, per_conn),
        max_symbols_per_connection=per_conn,
        max_requests_per_s=10.0,
        connect_target=lambda ws_url, _body, _cid: ConnectTarget(ws_url, headers=headers),
        ping=_make_ping(market),
        ping_interval_s=float(ping_s),
        quiet_timeout_s=max(30.0, 3 * float(ping_s)),  # a pong answers every ping
        instruments_request=lambda rest_url: HttpRequest("GET", rest_url.rstrip("/") + rest_path),
        parse_instruments=parse_spot_instruments if market == "spot" else parse_futures_instruments,
        default_options=defaults,
    )
