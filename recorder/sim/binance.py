"""Simulated Binance spot and USDⓈ-M futures market streams (server side of adapters/binance.py).

Spot:    https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams
Futures: https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams

Speaks SUBSCRIBE/UNSUBSCRIBE/LIST_SUBSCRIPTIONS with ``{"result":null,"id":…}`` replies, refuses
a whole request with ``{"error":{"code":2,"msg":…},"id":…}`` when it names a refused stream,
sends combined-stream trade events (µs times on spot, ms on futures), pings with WebSocket
ping frames, and announces planned closes with ``serverShutdown``. Like the real futures
server, an unrouted futures connection (``/stream`` instead of ``/market/stream``) acks
aggTrade subscriptions and then sends nothing (research pitfall 1).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping, Sequence
from decimal import Decimal

import orjson

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.sim.protocol import HttpResponse, SimProtocol, SimSession
from pumpwatch.segments.schema import TradeRow
from pumpwatch.timeunits import MS_PER_S, US_PER_MS, US_PER_S


def decimal_str(value: float) -> str:
    """Shortest round-tripping positional decimal of `value` (never ``1e-05``), as exchanges send."""
    text = repr(value)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return text[:-2] if text.endswith(".0") else text


def numeric_id(trade_id: str | None) -> int:
    """The integer id Binance sends; a non-numeric id from a generic row gets a stable stand-in."""
    if trade_id is not None and trade_id.isdigit():
        return int(trade_id)
    return zlib.crc32((trade_id or "").encode())


def _error(code: int, msg: str, req_id: object) -> str:
    return orjson.dumps({"error": {"code": code, "msg": msg}, "id": req_id}).decode()


MAX_STREAMS_PER_CONNECTION = 1024  # spot and USD-M futures (the routed endpoints)


def _on_message(futures: bool, session: SimSession, frame: str | bytes, now_ms: int) -> list[str]:
    del now_ms
    try:
        req = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return [_error(3, "Invalid JSON: expected value at line 1 column 1", None)]
    if type(req) is not dict or "method" not in req:
        return [_error(2, "Invalid request: missing field `method`", None)]
    req_id = req.get("id")
    method = req["method"]
    if method == "LIST_SUBSCRIPTIONS":
        channel = session.scratch.get("channel", "aggTrade" if futures else "trade")
        streams = sorted(f"{s.lower()}@{channel}" for s in session.subscribed)
        return [orjson.dumps({"result": streams, "id": req_id}).decode()]
    if method not in ("SUBSCRIBE", "UNSUBSCRIBE"):
        return [_error(2, f"Invalid request: unknown variant {method!r}", req_id)]
    params = req.get("params")
    if type(params) is not list or not all(type(p) is str for p in params):
        return [_error(2, "Invalid request: params must be a list of stream names", req_id)]
    by_lower = {s.lower(): s for s in session.instruments}
    wanted: list[str] = []
    for stream in params:
        name, _, channel = stream.partition("@")
        if channel not in ("trade", "aggTrade") or name != name.lower():
            return [_error(2, "Invalid request: invalid stream", req_id)]
        symbol = by_lower.get(name)
        if symbol in session.reject:
            return [_error(2, f"Invalid request: invalid stream {stream}", req_id)]
        session.scratch["channel"] = channel
        if symbol is not None:  # an unknown symbol is acked and stays silent, as on Binance
            wanted.append(symbol)
    if method == "UNSUBSCRIBE":
        session.subscribed.difference_update(wanted)
    elif len(session.subscribed | set(wanted)) > MAX_STREAMS_PER_CONNECTION:
        # "A single connection can listen to a maximum of 1024 streams" (the refusal's text is ours)
        return [_error(2, f"Invalid request: more than {MAX_STREAMS_PER_CONNECTION} streams", req_id)]
    elif not _silent(futures, session):
        session.subscribed.update(wanted)
    return [orjson.dumps({"result": None, "id": req_id}).decode()]


def _silent(futures: bool, session: SimSession) -> bool:
    # Unrouted futures connections only carry the /public streams (trade, depth, bookTicker).
    path = session.path.split("?", 1)[0]
    routed = path.startswith(("/market/", "/public/"))
    return futures and not routed and session.scratch.get("channel") == "aggTrade"


def _accept(futures: bool, path: str, headers: Mapping[str, str]) -> int | None:
    del headers
    bare = path.split("?", 1)[0]
    if futures:
        for route in ("/market", "/public"):
            if bare.startswith(route + "/"):
                bare = bare[len(route) :]
    return None if bare in ("/stream", "/ws") or bare.startswith("/ws/") else 404


def _encode_trades(
    futures: bool, rows: Sequence[TradeRow], instruments: Mapping[str, Instrument]
) -> list[str]:
    del instruments  # Binance quantities are base units already
    dumps = orjson.dumps
    frames = []
    for t_us, _recv, symbol, _base, _quote, price, qty, side, trade_id in rows:
        tid = numeric_id(trade_id)
        p, q, maker_bought = decimal_str(price), decimal_str(qty), side == "sell"
        if futures:
            t_ms = t_us // US_PER_MS
            data: dict[str, object] = {
                "e": "aggTrade", "E": t_ms, "a": tid, "s": symbol, "p": p, "q": q, "nq": q,
                "f": tid, "l": tid, "T": t_ms, "m": maker_bought,
            }  # fmt: skip
            stream = f"{symbol.lower()}@aggTrade"
        else:
            data = {"e": "trade", "E": t_us, "s": symbol, "t": tid, "p": p, "q": q, "T": t_us,
                    "m": maker_bought, "M": True}  # fmt: skip
            stream = f"{symbol.lower()}@trade"
        frames.append(dumps({"stream": stream, "data": data}).decode())
    return frames


def _exchange_info(futures: bool, instruments: Sequence[Instrument]) -> bytes:
    symbols = []
    for inst in instruments:
        item: dict[str, object] = {
            "symbol": inst.symbol, "status": "TRADING", "baseAsset": inst.base, "quoteAsset": inst.quote,
        }  # fmt: skip
        if futures:
            item.update(pair=inst.symbol, contractType="PERPETUAL", marginAsset=inst.quote)
        else:
            item.update(isSpotTradingAllowed=True, permissionSets=[["SPOT"]])
        symbols.append(item)
    return orjson.dumps({"timezone": "UTC", "serverTime": int(time.time() * MS_PER_S), "symbols": symbols})


def sim_protocol(market: str) -> SimProtocol:
    """The simulated ``binance_<market>`` server protocol."""
    futures = market == "futures"
    path = "/fapi/v1/exchangeInfo" if futures else "/api/v3/exchangeInfo"

    def exchange_info(_q: Mapping[str, str], _b: bytes, insts: Sequence[Instrument], _u: str) -> HttpResponse:
        return HttpResponse(200, _exchange_info(futures, insts))

    def shutdown() -> str:
        now_us = int(time.time() * US_PER_S)
        event = {"e": "serverShutdown", "E": now_us // US_PER_MS if futures else now_us}
        return orjson.dumps({"stream": "!serverShutdown", "data": event}).decode()

    return SimProtocol(
        stream=f"binance_{market}",
        accept=lambda p, h: _accept(futures, p, h),
        on_connect=lambda _session: [],
        on_message=lambda s, f, now_ms: _on_message(futures, s, f, now_ms),
        encode_trades=lambda rows, insts: _encode_trades(futures, rows, insts),
        server_ping_interval_s=180.0 if futures else 20.0,
        http_routes={("GET", path): exchange_info},
        shutdown_notice=shutdown,
    )
