"""KuCoin spot and futures as a local server speaks them (see recorder/adapters/kucoin.py).

The token dance is real: ``POST /api/v1/bullet-public`` hands out a token and the server's own
WebSocket URL as ``instanceServers[0].endpoint``; the upgrade is refused (401) without a token
this server issued; a ``welcome`` carrying the connectId comes first; JSON pings get pongs;
a connection that stays silent past pingInterval + pingTimeout is closed.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import orjson

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.sim.protocol import HttpHandler, HttpResponse, SimProtocol, SimSession
from pumpwatch.segments.schema import TradeRow
from pumpwatch.timeunits import MS_PER_S

_TOPIC = {"spot": "/market/match:", "futures": "/contractMarket/execution:"}
PING_TIMEOUT_MS = 10_000
SEQUENCE_OFFSET = 1_000_000_000_000


def num_text(x: float) -> str:
    """A plain decimal string (no exponent) that float() turns back into exactly `x`."""
    text = repr(float(x))
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return text[:-2] if text.endswith(".0") else text


def contracts(qty: float, multiplier: float) -> float | int:
    """Lots whose exact decimal product with the multiplier (the decoder's arithmetic,
    `pumpwatch.recorder.adapters.checks.contract_qty`) is `qty`, an int when whole."""
    whole = round(qty / multiplier)
    if whole > 0 and whole * multiplier == qty:  # a product with float noise: still whole lots
        return whole
    lots = Decimal(repr(qty)) / Decimal(repr(multiplier))
    return int(lots) if lots == lots.to_integral_value() else float(lots)


def sequence_of(trade_id: str | None) -> int | None:
    """The ``sequence`` of a trade, the same on every connection and over REST: derived from the
    sim's numeric trade id (distinct from it, as on KuCoin); None for a row without one."""
    return SEQUENCE_OFFSET + int(trade_id) if trade_id is not None and trade_id.isdigit() else None


def _error(req_id: Any, code: int, data: str) -> str:
    return orjson.dumps({"id": req_id, "type": "error", "code": code, "data": data}).decode()


# KuCoin's rate-limit page: 400 topics per connection on spot (none documented on futures).
MAX_TOPICS_PER_CONNECTION = {"spot": 400, "futures": None}


def sim_protocol(
    market: str,
    *,
    ping_interval_ms: int = 18_000,
    max_topics: int | Literal["documented"] | None = "documented",
) -> SimProtocol:
    """The KuCoin `SimProtocol` for ``"spot"`` or ``"futures"``; tests shrink `ping_interval_ms`.
    A subscribe that would take a connection past `max_topics` (the documented 400 on spot) is
    refused whole with error 509 (the code clients report; its text here is ours)."""
    if market not in _TOPIC:
        raise ValueError(f"kucoin: unknown market {market!r}")
    prefix = _TOPIC[market]
    futures = market == "futures"
    cap = MAX_TOPICS_PER_CONNECTION[market] if max_topics == "documented" else max_topics
    tokens: set[str] = set()
    sequence = itertools.count(1_000_000_000)

    def bullet(_q: Mapping[str, str], _body: bytes, _inst: Sequence[Instrument], ws_url: str) -> HttpResponse:
        token = secrets.token_urlsafe(24)
        tokens.add(token)
        server = {
            "endpoint": ws_url,
            "encrypt": False,
            "protocol": "websocket",
            "pingInterval": ping_interval_ms,
            "pingTimeout": PING_TIMEOUT_MS,
        }
        body = {"code": "200000", "data": {"token": token, "instanceServers": [server]}}
        return HttpResponse(200, orjson.dumps(body))

    def accept(path: str, _headers: Mapping[str, str]) -> int | None:
        query = parse_qs(urlsplit(path).query)
        token = query.get("token", [""])[0]
        return None if token in tokens else 401

    def on_connect(session: SimSession) -> list[str]:
        conn_id = parse_qs(urlsplit(session.path).query).get("connectId", [session.conn_id])[0]
        return [orjson.dumps({"id": conn_id, "type": "welcome"}).decode()]

    def on_message(session: SimSession, frame: str | bytes, _now: int) -> list[str]:
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return [_error(None, 400, "malformed request")]
        if not isinstance(msg, dict):
            return [_error(None, 400, "malformed request")]
        req_id, kind = msg.get("id"), msg.get("type")
        if kind == "ping":
            return [orjson.dumps({"id": req_id, "type": "pong"}).decode()]
        if kind not in ("subscribe", "unsubscribe"):
            return [_error(req_id, 400, f"unsupported type {kind!r}")]
        topic = msg.get("topic")
        if not isinstance(topic, str) or not topic.startswith(prefix):
            return [_error(req_id, 404, f"topic {topic} is not found")]
        symbols = [s for s in topic[len(prefix) :].split(",") if s]
        if not symbols or len(symbols) > 100:
            return [_error(req_id, 400, "a topic takes 1 to 100 symbols")]
        if kind == "unsubscribe":
            session.subscribed.difference_update(symbols)
            return [orjson.dumps({"id": req_id, "type": "ack"}).decode()] if msg.get("response") else []
        bad = [s for s in symbols if s in session.reject or s not in session.instruments]
        if bad:  # the whole topic is refused; nothing of it is subscribed
            return [_error(req_id, 404, f"topic {prefix}{','.join(bad)} is not found")]
        if cap is not None and len(session.subscribed | set(symbols)) > cap:
            return [_error(req_id, 509, f"exceed max subscription count limitation of {cap} per session")]
        session.subscribed.update(symbols)
        return [orjson.dumps({"id": req_id, "type": "ack"}).decode()] if msg.get("response") else []

    def encode_trades(rows: Sequence[TradeRow], instruments: Mapping[str, Instrument]) -> list[str]:
        frames = []
        for time_us, _recv, symbol, _b, _q, price, qty, side, trade_id in rows:
            seq = sequence_of(trade_id) or next(sequence)
            tid = trade_id if trade_id is not None else str(seq)
            if futures:
                data: dict[str, Any] = {
                    "symbol": symbol,
                    "sequence": seq,
                    "side": side,
                    "size": contracts(qty, instruments[symbol].multiplier),
                    "price": num_text(price),
                    "takerOrderId": f"{seq:024x}",
                    "makerOrderId": f"{seq + 1:024x}",
                    "tradeId": tid,
                    "ts": time_us * 1000,
                }
                subject = "match"
            else:
                data = {
                    "makerOrderId": f"{seq + 1:024x}",
                    "price": num_text(price),
                    "sequence": str(seq),
                    "side": side,
                    "size": num_text(qty),
                    "symbol": symbol,
                    "takerOrderId": f"{seq:024x}",
                    "time": str(time_us * 1000),
                    "tradeId": tid,
                    "type": "match",
                }
                subject = "trade.l3match"
            frame = {"topic": prefix + symbol, "type": "message", "subject": subject, "data": data}
            frames.append(orjson.dumps(frame).decode())
        return frames

    routes: dict[tuple[str, str], HttpHandler] = {("POST", "/api/v1/bullet-public"): bullet}
    if futures:
        routes[("GET", "/api/v1/contracts/active")] = _futures_contracts
    else:
        routes[("GET", "/api/v2/symbols")] = _spot_symbols
    return SimProtocol(
        stream=f"kucoin_{market}",
        accept=accept,
        on_connect=on_connect,
        on_message=on_message,
        encode_trades=encode_trades,
        idle_timeout_s=(ping_interval_ms + PING_TIMEOUT_MS) / MS_PER_S,
        http_routes=routes,
    )


def _spot_symbols(_q: Mapping[str, str], _b: bytes, inst: Sequence[Instrument], _ws: str) -> HttpResponse:
    rows = [
        {
            "symbol": i.symbol,
            "name": i.symbol,
            "baseCurrency": i.base,
            "quoteCurrency": i.quote,
            "feeCurrency": i.quote,
            "market": "USDS",
            "baseIncrement": "0.0001",
            "priceIncrement": "0.0001",
            "enableTrading": True,
        }
        for i in inst
    ]
    return HttpResponse(200, orjson.dumps({"code": "200000", "data": rows}))


def _futures_contracts(
    _q: Mapping[str, str], _b: bytes, inst: Sequence[Instrument], _ws: str
) -> HttpResponse:
    rows = [
        {
            "symbol": i.symbol,
            "rootSymbol": i.quote,
            "type": "FFWCSX",
            # The wire base, e.g. XBT for XBTUSDTM: the symbol minus quote and the trailing M.
            "baseCurrency": i.symbol[: -len(i.quote) - 1],
            "quoteCurrency": i.quote,
            "settleCurrency": i.quote,
            "multiplier": i.multiplier,
            "lotSize": 1,
            "isInverse": False,
            "isQuanto": False,
            "status": "Open",
        }
        for i in inst
    ]
    return HttpResponse(200, orjson.dumps({"code": "200000", "data": rows}))
