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

Trade-id continuity (issue 10 §1): a spot trade's ``id`` (the stored trade id, equal to the REST
``id``) is exchange-wide, so it says nothing about missed trades of one pair; ``id_market``
counts up by one per pair (REST ``sequence_id``: "a unique and consecutive trade ID within a
single market"). The spot decoder returns `Sequenced` trades carrying ``id_market`` beside the
row (``range`` ``"first-last"`` when it names more than one id), and the adapter is
``sequenced``: the continuity check reads those, the store keeps ``id``. Futures trade ids are
not documented as contiguous and are not checked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Annotated, Any

import msgspec
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
    sequenced,
)
from pumpwatch.recorder.adapters.checks import (
    BY_TIME,
    Side,
    contract_qty,
    loads,
    multiplier_parts,
    not_a_trade,
    option_values,
    positive,
    read_options,
    trade_row,
)
from pumpwatch.segments.schema import TradeRow
from pumpwatch.timeunits import US_PER_MS, US_PER_S

DOC_URL = "https://www.gate.com/docs/developers/apiv4/ws/en/"
FUTURES_DOC_URL = "https://www.gate.com/docs/developers/futures/ws/en/"
SIZE_DECIMAL_HEADER = "X-Gate-Size-Decimal"
_CHANNEL = {"spot": "spot", "futures": "futures"}


def ms_to_us(value: Any, seconds: int | None = None) -> int:
    """Gate ms time -> integer µs: ``"1606292218213.4578"`` -> 1606292218213457 exactly.

    Strings are cut at the decimal point and the fraction's first three digits kept (truncated),
    so no float rounding touches the sub-millisecond part; an int is whole milliseconds. With
    `value` None (frames from before ``create_time_ms`` existed), whole `seconds`.
    """
    kind = value.__class__
    if kind is str:
        whole, _, frac = value.partition(".")
        digits = whole + frac
        if whole and digits.isascii() and digits.isdigit():
            return int(whole + (frac + "000")[:3])
    elif kind is int:
        return value * US_PER_MS
    elif kind is float and value == value and abs(value) < float("inf"):
        return int(Decimal(repr(value)) * US_PER_MS)
    elif value is None and seconds is not None:
        return seconds * US_PER_S
    raise ParseError(f"bad create_time_ms: {value!r:.40}")


class SpotTrade(msgspec.Struct, kw_only=True, gc=False):
    """One ``spot.trades`` result (or a REST ``/spot/trades`` row)."""

    id: int | str
    currency_pair: str
    side: Side  # the taker's
    amount: str | float
    price: str | float
    create_time_ms: str | int | float | None = None  # "1606292218213.4578"
    create_time: int | None = None  # seconds: frames from before create_time_ms existed
    id_market: int | str | None = None  # per-pair contiguous id (REST `sequence_id`); not stored
    range: str | None = None  # "2390902-2390902": the id_market ids this push accounts for


def market_ids(trade: SpotTrade) -> int | tuple[int, int] | None:
    """The per-pair ids a spot push accounts for: ``id_market``; ``(first, last)`` when its
    ``range`` ``"first-last"`` names more ids around it (a range that does not hold
    ``id_market`` is ignored: the documented id wins); the range alone without ``id_market``;
    None when neither is usable (the trade is then not checked)."""
    n = trade.id_market
    if type(n) is not int:
        n = int(n) if type(n) is str and n.isascii() and n.isdigit() else None
    span = trade.range
    if span is None:
        return n
    first, _, last = span.partition("-")
    if first == last and n is not None:
        return n  # "7-7" (the usual push): one id, id_market's (or a stray range: ignored)
    if not (first.isascii() and first.isdigit() and last.isascii() and last.isdigit()):
        return n
    lo, hi = int(first), int(last)
    if lo > hi or (n is not None and not lo <= n <= hi):
        return n
    return lo if lo == hi else (lo, hi)


class FuturesTrade(msgspec.Struct, kw_only=True, gc=False):
    """One ``futures.trades`` result item (or a REST ``/futures/usdt/trades`` row)."""

    id: int | str
    contract: str
    size: str | int | float  # signed contracts: the sign is the taker side
    price: str | float
    create_time_ms: str | int | float | None = None
    create_time: int | None = None
    is_internal: bool = False  # insurance-fund/ADL takeover: not a market trade


class _SpotPush(msgspec.Struct, gc=False):
    channel: str
    result: SpotTrade
    event: str | None = None  # "update"; a push without it is still a trade


class _FuturesPush(msgspec.Struct, gc=False):
    channel: str
    result: list[FuturesTrade]
    event: str | None = None


def spot_trade_rows(trades: Iterable[SpotTrade], inst: Instrument, recv_us: int) -> list[TradeRow]:
    """Spot trades of `inst` -> checked rows; live frames and REST history rows alike."""
    rows: list[TradeRow] = []
    try:
        for trade in trades:
            price, qty = float(trade.price), float(trade.amount)
            rows.append(
                trade_row(
                    ms_to_us(trade.create_time_ms, trade.create_time),
                    recv_us,
                    inst,
                    price,
                    qty,
                    trade.side,
                    str(trade.id),
                )
            )
    except ValueError as exc:  # a price or amount string that is not a number
        if isinstance(exc, ParseError):
            raise
        raise ParseError(f"gate: {exc}") from None
    return rows


def futures_trade_rows(
    trades: Iterable[FuturesTrade], instruments: Instruments, recv_us: int
) -> list[TradeRow]:
    """Futures trades (any order, any contracts) -> checked market-trade rows, oldest first.

    qty = |size| × the contract's quanto multiplier, the sign of size is the taker side;
    ``is_internal`` prints are left out. Live frames and REST history rows alike.
    """
    rows: list[TradeRow] = []
    append = rows.append
    last_inst: Instrument | None = None
    multiplier = multiplier_parts(1.0)
    try:
        for trade in trades:
            inst = instruments.get(trade.contract)
            if inst is None:
                raise ParseError(f"unknown contract {trade.contract!r:.40}")
            if trade.is_internal:
                continue  # insurance fund/ADL: kept in the frame journal, not in segments (DESIGN §3)
            contracts, price = float(trade.size), float(trade.price)
            if inst is not last_inst:  # a frame's trades are mostly of one contract
                last_inst, multiplier = inst, multiplier_parts(inst.multiplier)
            qty = contract_qty(trade.size, multiplier)
            side = "buy" if contracts > 0.0 else "sell"
            append(
                trade_row(
                    ms_to_us(trade.create_time_ms, trade.create_time),
                    recv_us,
                    inst,
                    price,
                    qty,
                    side,
                    str(trade.id),
                )
            )
    except ValueError as exc:  # a size or price string that is not a number
        if isinstance(exc, ParseError):
            raise
        raise ParseError(f"gate: {exc}") from None
    if len(rows) > 1:
        rows.sort(key=BY_TIME)  # linear when already ascending
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
    futures = market == "futures"
    push_type: type[_SpotPush | _FuturesPush] = _FuturesPush if futures else _SpotPush
    decode_push: Callable[[bytes | str], _SpotPush | _FuturesPush] = msgspec.json.Decoder(push_type).decode

    def decode(frame: bytes | str, recv_us: int, instruments: Instruments) -> list[TradeRow] | Control:
        """One Gate frame -> trades (oldest first), or a Control for replies, pongs and notices.

        Spot: {"time":1606292218,"channel":"spot.trades","event":"update","result":{"id":309143071,
        "create_time":1606292218,"create_time_ms":"1606292218213.4578","side":"sell",
        "currency_pair":"GT_USDT","amount":"16.47","price":"0.4705"}}
        Futures: {"channel":"futures.trades","event":"update","result":[{"size":"-108",
        "id":27753479,"create_time":1545136464,"create_time_ms":1545136464123,"price":"96.4",
        "contract":"BTC_USDT","is_internal":true}]}
        """
        try:
            push = decode_push(frame)
        except msgspec.DecodeError:
            return other(frame)
        if push.channel != trades_channel or push.event not in (None, "update"):
            raise ParseError(f"unexpected frame: channel {push.channel!r:.40} event {push.event!r:.40}")
        if isinstance(push, _SpotPush):
            trade = push.result
            inst = instruments.get(trade.currency_pair)
            if inst is None:
                raise ParseError(f"unknown symbol {trade.currency_pair!r:.40}")
            return sequenced(spot_trade_rows((trade,), inst, recv_us), [market_ids(trade)])
        return futures_trade_rows(push.result, instruments, recv_us)

    def other(frame: bytes | str) -> Control:
        """Replies, pongs, the upgrade notice; a trade push whose schema check failed."""
        msg = loads(frame)
        if type(msg) is not dict:
            raise ParseError("frame is not an object")
        channel, event = msg.get("channel"), msg.get("event")
        if channel == trades_channel:
            if event in ("subscribe", "unsubscribe"):
                return _reply(msg)
            try:
                msgspec.convert(msg, push_type)
            except msgspec.ValidationError as exc:
                raise not_a_trade(exc) from None
        elif channel == pong_channel:
            return Control("pong")
        elif msg.get("type") == "upgrade":
            # {"type":"upgrade","msg":"The connection will soon be closed for a service upgrade..."}
            return Control("reconnect", message=str(msg.get("msg", "")))
        raise ParseError(f"unexpected frame: channel {channel!r:.40} event {event!r:.40}")

    return decode


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
    rows = loads(body)
    if not isinstance(rows, list):
        raise ParseError(f"instrument list is not a list: {str(rows)[:200]}")
    return [r for r in rows if isinstance(r, dict)]


def _text(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if type(value) is not str or not value:
        raise ParseError(f"instrument field {key!r} is {value!r}")
    return value


# Spot ``trade_status`` (untradable, buyable, sellable, tradable; "List all currency pairs",
# https://www.gate.com/docs/developers/apiv4/en/#list-all-currency-pairs-supported):
# buyable and sellable pairs trade (one side open, e.g. while a listing opens), so they are kept;
# untradable cannot trade now and is not told apart from a delisted pair, so it is left out.
# Pre-market pairs (``type: premarket``) are not on the spot trade channel.
SPOT_TRADING_STATUSES = frozenset({"tradable", "buyable", "sellable"})
# Futures ``status`` (prelaunch, trading, delisting, delisted, circuit_breaker; "List all futures
# contracts", https://www.gate.com/docs/developers/apiv4/en/#list-all-futures-contracts):
# `prelaunch` is a contract before its first trade and `circuit_breaker` a trading contract whose
# mark price is braked, both kept; delisting/delisted (or ``in_delisting``) are not.
FUTURES_ENDED_STATUSES = frozenset({"delisting", "delisted"})
# Futures ``contract_type`` of non-crypto underlyings, left out unless `include_non_crypto`.
NON_CRYPTO_CONTRACT_TYPES = frozenset({"stocks", "metals", "indices", "forex", "commodities"})


def parse_spot_instruments(body: bytes) -> tuple[list[Instrument], HttpRequest | None]:
    """Tradable, buyable or sellable USDT pairs (pre-market pairs excluded) from
    ``GET /api/v4/spot/currency_pairs``."""
    out = []
    for r in _rows(body):
        if r.get("quote") != "USDT" or r.get("type") == "premarket":
            continue
        if r.get("trade_status") in SPOT_TRADING_STATUSES:
            out.append(Instrument(_text(r, "id"), _text(r, "base").upper(), "USDT"))
    return out, None


def parse_futures_instruments(
    body: bytes, include_non_crypto: bool = False
) -> tuple[list[Instrument], HttpRequest | None]:
    """Linear USDT contracts that trade or are about to (prelaunch), not delisting, from
    ``GET /api/v4/futures/usdt/contracts``; stock/metal/index/forex/commodity contracts only
    with `include_non_crypto`.

    The endpoint returns every contract when no ``limit`` is given, so there is no follow-up page.
    """
    out = []
    for r in _rows(body):
        if r.get("type", "direct") != "direct" or r.get("in_delisting") is True:
            continue
        if r.get("status", "trading") in FUTURES_ENDED_STATUSES:
            continue
        if not include_non_crypto and r.get("contract_type") in NON_CRYPTO_CONTRACT_TYPES:
            continue
        name = _text(r, "name")
        base, _, quote = name.partition("_")
        if quote != "USDT" or not base:
            continue
        multiplier = positive(r.get("quanto_multiplier"), f"quanto_multiplier of {name!r}")
        out.append(Instrument(name, base.upper(), quote, multiplier=multiplier))
    return out, None


class SpotOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``streams.gate_spot.options``."""

    # The server closes connections idle for 60 s; gate's SDKs ping every 5-10 s.
    ping_interval_s: Annotated[float, msgspec.Meta(gt=0, lt=60)] = 10.0
    # No documented cap; slow consumers get dropped, so stay moderate.
    max_symbols_per_connection: Annotated[int, msgspec.Meta(ge=1)] = 200


class FuturesOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``streams.gate_futures.options``."""

    ping_interval_s: Annotated[float, msgspec.Meta(gt=0, lt=60)] = 10.0
    max_symbols_per_connection: Annotated[int, msgspec.Meta(ge=1)] = 200
    size_decimal: bool = True  # send X-Gate-Size-Decimal: 1 so fractional sizes are not truncated
    # stock/metal/index/forex/commodity contracts too; default: symbols.include_non_crypto
    include_non_crypto: bool = False


def _futures_parser(opts: Any) -> Callable[[bytes], tuple[list[Instrument], HttpRequest | None]]:
    include = isinstance(opts, FuturesOptions) and opts.include_non_crypto
    return lambda body: parse_futures_instruments(body, include)


def adapter(market: str, options: Mapping[str, Any]) -> Adapter:
    """The Gate `Adapter` for ``"spot"`` or ``"futures"``; options: see `SpotOptions`, `FuturesOptions`."""
    if market not in _CHANNEL:
        raise ConfigError(f"gate: unknown market {market!r}")
    opts = read_options(f"gate_{market}", options, FuturesOptions if market == "futures" else SpotOptions)
    per_conn, ping_s = opts.max_symbols_per_connection, opts.ping_interval_s
    headers = {SIZE_DECIMAL_HEADER: "1"} if isinstance(opts, FuturesOptions) and opts.size_decimal else {}
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
        parse_instruments=parse_spot_instruments if market == "spot" else _futures_parser(opts),
        default_options=option_values(opts.__class__()),
        sequenced=market == "spot",
    )
