"""KuCoin spot and USDT-margined futures public trades.

Implements:
  https://www.kucoin.com/docs-new/websocket-api/base-info/introduction   (token, welcome, ping)
  https://www.kucoin.com/docs-new/3470072w0   (spot  /market/match)
  https://www.kucoin.com/docs-new/3470084w0   (futures /contractMarket/execution)

Every connect needs a fresh token from ``POST <rest>/api/v1/bullet-public`` (spot and futures
from their own REST hosts; a reused token fails with ``401 token is expired`` after 24 h).
The connection is usable only after the ``welcome`` frame; the client pings with JSON at the
server-given ``pingInterval``. Spot times are nanosecond strings, futures times nanosecond
integers above 2**53 (decoded by msgspec as exact ints, never floats). Futures sizes are lots:
base qty = lots × the contract ``multiplier`` from ``/api/v1/contracts/active``. KuCoin calls
bitcoin ``XBT`` on futures; the base is stored as ``BTC``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
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
)
from pumpwatch.recorder.adapters.checks import (
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

# Connection limits: topics per batch and per connection, upstream messages per 10 s.
RATE_LIMIT_DOC = "https://www.kucoin.com/docs-new/rate-limit"
DOC_URL = "https://www.kucoin.com/docs-new/websocket-api/base-info/introduction"
# KuCoin names bitcoin XBT on futures; Upbit (and our `base`) say BTC.
_BASE_ALIASES = {"XBT": "BTC"}

_TOPIC = {"spot": "/market/match:", "futures": "/contractMarket/execution:"}
_SUBJECT = {"spot": "trade.l3match", "futures": "match"}
_CONTROL_TYPES = ("welcome", "ack", "pong", "error", "notice")


class Trade(msgspec.Struct, kw_only=True, gc=False):
    """One match: spot ``/market/match`` data (time ``time``) or futures execution (``ts``).

    Times are integer nanoseconds (spot sends a string, futures an integer above 2**53, which
    msgspec reads exactly); a float time is refused, it has lost the nanoseconds.
    """

    symbol: str
    side: Side  # the taker's
    price: str | float
    size: str | float  # futures: lots
    trade_id: str | int = msgspec.field(name="tradeId")
    time: str | int | None = None  # spot, ns
    ts: str | int | None = None  # futures, ns


class _Push(msgspec.Struct, gc=False):
    data: Trade
    type: str | None = None  # "message"
    subject: str | None = None
    topic: str | None = None


_decode_push = msgspec.json.Decoder(_Push).decode


def trade_rows(trades: Iterable[Trade], inst: Instrument, recv_us: int) -> list[TradeRow]:
    """Matches of `inst` -> checked rows (futures qty = lots × multiplier); live frames and REST."""
    contract = None if inst.multiplier == 1.0 else multiplier_parts(inst.multiplier)
    rows: list[TradeRow] = []
    try:
        for trade in trades:
            raw = trade.time if trade.ts is None else trade.ts  # futures: ts; spot: time
            if raw is None:
                raise ParseError("kucoin: match without time")
            price = float(trade.price)
            qty = float(trade.size) if contract is None else contract_qty(trade.size, contract)
            rows.append(
                trade_row(int(raw) // 1000, recv_us, inst, price, qty, trade.side, str(trade.trade_id))
            )
    except ValueError as exc:  # a string that is not a number
        if isinstance(exc, ParseError):
            raise
        raise ParseError(f"kucoin: {exc}") from None
    return rows


def _control(msg: dict[str, Any], kind: str) -> Control:
    req_id = msg.get("id")
    rid = None if req_id is None else str(req_id)
    if kind == "welcome":
        return Control("welcome", req_id=rid)
    if kind == "ack":
        return Control("ack", req_id=rid)
    if kind == "pong":
        return Control("pong", req_id=rid)
    if kind == "notice":
        return Control("info", message=str(msg.get("data", "")))
    # {"id":"...","type":"error","code":401,"data":"token is expired"}: with an id it answers that
    # request (a refused subscribe), without one it is a connection-level error. The refused
    # symbols are deliberately not read out of the text: whether KuCoin refuses a comma-joined
    # topic whole or in part is undocumented, so the runner retries such a request one symbol
    # per request and learns exactly which ones are refused.
    message = f"{msg.get('code', '')} {msg.get('data', '')}".strip()
    if rid is not None:
        return Control("ack", req_id=rid, ok=False, message=message)
    return Control("error", message=message)


def _make_decode(market: str) -> Decoder:
    subject_expected, topic_prefix = _SUBJECT[market], _TOPIC[market]

    def decode(frame: bytes | str, recv_us: int, instruments: Instruments) -> list[TradeRow] | Control:
        """One KuCoin frame -> trades or a Control.

        Spot sample: {"topic":"/market/match:BTC-USDT","type":"message","subject":"trade.l3match",
        "data":{"price":"67523","side":"buy","size":"0.003","symbol":"BTC-USDT",
        "time":"1729843222921000000","tradeId":"11067996711960577",...}}
        Futures sample: {"topic":"/contractMarket/execution:XBTUSDTM","type":"message",
        "subject":"match","data":{"symbol":"XBTUSDTM","side":"buy","size":2,"price":"90503.9",
        "tradeId":"1794100537695","ts":1731898619520000000,...}}

        A push is known by its subject, or without one by its topic; its ``type`` may be missing.
        """
        try:
            push = _decode_push(frame)
        except msgspec.DecodeError:
            return other(frame)
        subject = push.subject
        if push.type not in (None, "message") or (
            subject != subject_expected
            and (subject is not None or push.topic is None or not push.topic.startswith(topic_prefix))
        ):
            raise ParseError(f"unexpected frame type {push.type!r:.40} subject {subject!r:.40}")
        trade = push.data
        inst = instruments.get(trade.symbol)
        if inst is None:
            raise ParseError(f"unknown symbol {trade.symbol!r:.40}")
        return trade_rows((trade,), inst, recv_us)

    def other(frame: bytes | str) -> Control:
        msg = loads(frame)
        if type(msg) is not dict:
            raise ParseError("frame is not an object")
        kind = msg.get("type")
        if kind in _CONTROL_TYPES:
            return _control(msg, kind)
        if kind == "message" or "data" in msg:  # a push whose schema check failed: say which field
            try:
                msgspec.convert(msg, _Push)
            except msgspec.ValidationError as exc:
                raise not_a_trade(exc) from None
        raise ParseError(f"unexpected frame type {kind!r:.40}")

    return decode


def _make_subscribe(market: str, action: str) -> Callable[[Sequence[str], str], list[str]]:
    prefix = _TOPIC[market]

    def build(symbols: Sequence[str], req_id: str) -> list[str]:
        """One frame per chunk: KuCoin takes up to 100 symbols comma-joined in one topic."""
        if not symbols:
            return []
        frame: dict[str, Any] = {"id": req_id, "type": action, "topic": prefix + ",".join(symbols)}
        if market == "spot":
            frame["privateChannel"] = False
        frame["response"] = True
        return [orjson.dumps(frame).decode()]

    return build


def bullet_request(rest_url: str) -> HttpRequest:
    """The public-token request made before every connect (tokens are per market host)."""
    return HttpRequest("POST", rest_url.rstrip("/") + "/api/v1/bullet-public", {}, b"")


def connect_target(ws_url: str, body: bytes | None, conn_id: str) -> ConnectTarget:
    """``<endpoint>?token=…&connectId=…`` from a bullet-public response.

    ``ws_url`` from settings, when set, replaces the endpoint the token response names (a proxy
    or a test server); ping interval comes from the response's ``pingInterval`` (ms).
    """
    try:
        reply = loads(body or b"")
        data = reply["data"]
        token = data["token"]
        server = data["instanceServers"][0]
        endpoint = ws_url or server["endpoint"]
        ping_interval_s = float(server.get("pingInterval", 18_000)) / 1000.0
        if reply.get("code") != "200000" or type(token) is not str or type(endpoint) is not str:
            raise ParseError(f"bullet-public refused: {reply!r:.200}")
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, ParseError):
            raise
        raise ParseError(f"bad bullet-public response: {exc}") from None
    sep = "&" if "?" in endpoint else "?"
    return ConnectTarget(
        url=f"{endpoint}{sep}token={token}&connectId={conn_id}",
        ping_interval_s=ping_interval_s,
        wait_welcome=True,
    )


def ping(now_ms: int) -> str:
    """``{"id":"<ms>","type":"ping"}``; the server answers with a pong of the same id."""
    return f'{{"id":"{now_ms}","type":"ping"}}'


def _instruments_request(market: str) -> Callable[[str], HttpRequest]:
    path = "/api/v2/symbols" if market == "spot" else "/api/v1/contracts/active"
    return lambda rest_url: HttpRequest("GET", rest_url.rstrip("/") + path)


def _base(name: str) -> str:
    upper = name.upper()
    return _BASE_ALIASES.get(upper, upper)


# Futures contract statuses after which a contract never trades again (``status`` of
# GET /api/v1/contracts/active: Init, Open, BeingSettled, Settled, Paused, Closed, CancelOnly, as
# KuCoin's OpenAPI spec lists them: Kucoin/kucoin-universal-sdk spec/rest/api/
# openapi-futures-market.json, "Get All Symbols"). `Init` is a new contract before it opens;
# `Paused` and `CancelOnly` return to `Open`.
FUTURES_ENDED_STATUSES = frozenset({"BeingSettled", "Settled", "Closed"})


def _spot_opens(row: dict[str, Any]) -> bool:
    """Whether a spot pair trades or is scheduled to: ``enableTrading``, or a call auction /
    ``tradingStartTime`` announced for its opening (GET /api/v2/symbols fields, KuCoin's OpenAPI
    spec openapi-spot-market.json "Get All Symbols")."""
    if row.get("enableTrading") is True or row.get("callauctionIsEnabled") is True:
        return True
    start = row.get("tradingStartTime")
    return type(start) is int and start > 0


def parse_spot_instruments(body: bytes) -> tuple[list[Instrument], HttpRequest | None]:
    """USDT pairs that trade or are about to open, from ``GET /api/v2/symbols``."""
    out = []
    for r in _rows(body):
        if r.get("quoteCurrency") == "USDT" and _spot_opens(r):
            out.append(Instrument(_text(r, "symbol"), _base(_text(r, "baseCurrency")), "USDT"))
    return out, None


def parse_futures_instruments(body: bytes) -> tuple[list[Instrument], HttpRequest | None]:
    """Linear USDT perpetuals (type FFWCSX) not being settled or closed (`Init` included), from
    ``GET /api/v1/contracts/active``."""
    out = []
    for r in _rows(body):
        if (
            r.get("quoteCurrency") != "USDT"
            or r.get("settleCurrency") != "USDT"
            or r.get("isInverse") is not False
            or r.get("type") != "FFWCSX"
            or r.get("status") in FUTURES_ENDED_STATUSES
        ):
            continue
        multiplier = positive(r.get("multiplier"), f"multiplier of {r.get('symbol')!r}")
        out.append(
            Instrument(_text(r, "symbol"), _base(_text(r, "baseCurrency")), "USDT", multiplier=multiplier)
        )
    return out, None


def _text(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if type(value) is not str or not value:
        raise ParseError(f"instrument field {key!r} is {value!r}")
    return value


def _rows(body: bytes) -> list[dict[str, Any]]:
    try:
        reply = loads(body)
        rows = reply["data"]
    except (KeyError, TypeError) as exc:
        raise ParseError(f"bad instrument list: {exc}") from None
    if reply.get("code") != "200000" or not isinstance(rows, list):
        raise ParseError(f"instrument list refused: {str(reply)[:200]}")
    return [r for r in rows if isinstance(r, dict)]


class Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``streams.kucoin_<market>.options``."""

    # Symbols (topics) per connection. KuCoin's rate-limit page (RATE_LIMIT_DOC): at most 100 topics
    # per subscribe batch and 400 topics per connection on spot; futures documents no per-connection
    # cap, so it gets the same 400 (the setting may lower it, never raise it past the documented cap).
    max_symbols_per_connection: Annotated[int, msgspec.Meta(ge=1, le=400)] = 400


def adapter(market: str, options: Mapping[str, Any]) -> Adapter:
    """The KuCoin `Adapter` for ``"spot"`` or ``"futures"``; options: see `Options`."""
    if market not in _TOPIC:
        raise ConfigError(f"kucoin: unknown market {market!r}")
    per_conn = read_options(f"kucoin_{market}", options, Options).max_symbols_per_connection
    return Adapter(
        stream=f"kucoin_{market}",
        doc_url=DOC_URL,
        decode=_make_decode(market),
        subscribe=_make_subscribe(market, "subscribe"),
        unsubscribe=_make_subscribe(market, "unsubscribe"),
        max_symbols_per_request=min(100, per_conn),  # "100 topics per batch" (RATE_LIMIT_DOC)
        max_symbols_per_connection=per_conn,
        # "100 upstream messages per 10 s" per connection, pings included (RATE_LIMIT_DOC): stay at
        # half of it (a full connection subscribes in 4 messages).
        max_requests_per_s=5.0,
        connect_target=connect_target,
        connect_request=bullet_request,
        ping=ping,
        ping_interval_s=18.0,  # replaced by the token response's pingInterval
        quiet_timeout_s=60.0,
        max_lifetime_s=86_400.0,  # "a single connection is expected to be disconnected after 24 hours"
        instruments_request=_instruments_request(market),
        parse_instruments=parse_spot_instruments if market == "spot" else parse_futures_instruments,
        default_options=option_values(Options()),
    )
