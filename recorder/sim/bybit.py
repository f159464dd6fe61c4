"""Simulated Bybit v5 public spot and linear streams (server side of adapters/bybit.py).

Connect/limits/heartbeat: https://bybit-exchange.github.io/docs/v5/ws/connect
Trade topic:              https://bybit-exchange.github.io/docs/v5/websocket/public/trade

Acks and pongs in the spot and linear shapes, ``args size >10`` for an oversized spot
request, refused topics named in ``ret_msg`` (the valid ones of the request are subscribed,
or with ``refusal_subscribes_rest=False`` none), ``already subscribed`` for a topic asked twice,
up to 1024 trades of one symbol per frame, a paginated instruments-info route, and the
10-minute cut of a connection that neither pings nor receives data.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence

import orjson

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.sim.binance import decimal_str
from pumpwatch.recorder.sim.protocol import HttpHandler, HttpResponse, SimProtocol, SimSession
from pumpwatch.segments.schema import TradeRow
from pumpwatch.timeunits import MS_PER_S, US_PER_MS

MAX_TRADES_PER_FRAME = 1024
_PATHS = {"spot": "/v5/public/spot", "futures": "/v5/public/linear"}


def _reply(futures: bool, session: SimSession, op: str, req_id: object, ok: bool, ret_msg: str) -> str:
    reply: dict[str, object] = {"success": ok, "ret_msg": ret_msg, "conn_id": session.conn_id}
    if futures or req_id is not None:
        reply["req_id"] = "" if req_id is None else req_id
    reply["op"] = op
    return orjson.dumps(reply).decode()


def _on_message(
    futures: bool, session: SimSession, frame: str | bytes, now_ms: int, refusal_subscribes_rest: bool = True
) -> list[str]:
    del now_ms
    try:
        req = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return [_reply(futures, session, "", None, False, "error:request not json")]
    if type(req) is not dict:
        return [_reply(futures, session, "", None, False, "error:request not json")]
    op, req_id, args = req.get("op"), req.get("req_id"), req.get("args")
    if op == "ping":
        return [_reply(futures, session, "ping", req_id if futures else None, True, "pong")]
    if op not in ("subscribe", "unsubscribe"):
        return [_reply(futures, session, str(op), req_id, False, f"error:invalid op {op!r}")]
    if type(args) is not list or not all(type(a) is str for a in args):
        return [_reply(futures, session, op, req_id, False, "error:args must be a list of topics")]
    if not futures and len(args) > 10:
        return [_reply(futures, session, op, req_id, False, "args size >10")]
    good: list[tuple[str, str]] = []
    bad: list[tuple[str, str]] = []
    for topic in args:
        symbol = topic.removeprefix("publicTrade.")
        valid = topic.startswith("publicTrade.") and symbol in session.instruments
        (good if valid and symbol not in session.reject else bad).append((topic, symbol))
    if op == "subscribe" and len(args) == 1 and good and good[0][1] in session.subscribed:
        # what Bybit answers a topic subscribed twice (sieblyio/bybit-api#477)
        return [_reply(futures, session, op, req_id, False, f"error:already subscribed,topic:{args[0]}")]
    if op == "subscribe" and (refusal_subscribes_rest or not bad):
        session.subscribed.update(symbol for _topic, symbol in good)
    else:
        session.subscribed.difference_update(symbol for _topic, symbol in good)
    if bad:
        topics = ",".join(topic for topic, _symbol in bad)
        text = f"error:handler not found,topic:{topics}" if futures else f"Invalid symbol :[{topics}]"
        return [_reply(futures, session, op, req_id, False, text)]
    return [_reply(futures, session, op, req_id, True, "" if futures else op)]


def _encoder(futures: bool) -> Callable[[Sequence[TradeRow], Mapping[str, Instrument]], list[str]]:
    seq = itertools.count(1_783_284_617)

    def encode(rows: Sequence[TradeRow], instruments: Mapping[str, Instrument]) -> list[str]:
        del instruments  # linear quantities are base coin already
        frames: list[str] = []
        # Consecutive trades of one symbol share a frame, as Bybit batches them.
        for symbol, group in itertools.groupby(rows, key=lambda row: row[2]):
            batch = list(group)
            for start in range(0, len(batch), MAX_TRADES_PER_FRAME):
                data = []
                last_price = None
                last_ms = 0
                for t_us, _recv, _sym, _b, _q, price, qty, side, trade_id in batch[
                    start : start + MAX_TRADES_PER_FRAME
                ]:
                    last_ms = t_us // US_PER_MS
                    item: dict[str, object] = {
                        "T": last_ms, "s": symbol, "S": "Buy" if side == "buy" else "Sell",
                        "v": decimal_str(qty), "p": decimal_str(price),
                    }  # fmt: skip
                    if futures:
                        up = last_price is None or price >= last_price
                        item["L"] = "PlusTick" if up else "MinusTick"
                    item.update(i=trade_id or "", BT=False, RPI=False, seq=next(seq))
                    last_price = price
                    data.append(item)
                frame = {"topic": f"publicTrade.{symbol}", "ts": last_ms, "type": "snapshot", "data": data}
                frames.append(orjson.dumps(frame).decode())
        return frames

    return encode


def _instruments_route(futures: bool) -> HttpHandler:
    category = "linear" if futures else "spot"

    def handler(
        query: Mapping[str, str], _body: bytes, insts: Sequence[Instrument], _url: str
    ) -> HttpResponse:
        if query.get("category") != category:
            body = {"retCode": 10001, "retMsg": "params error: category invalid", "result": {}, "time": 0}
            return HttpResponse(200, orjson.dumps(body))
        # Like Bybit, only `Trading` symbols by default; every simulated instrument trades, so the
        # list asked for another status (PreLaunch, Delivering, Closed) is empty.
        if query.get("status", "Trading") != "Trading":
            insts = []
        limit = min(int(query.get("limit", "500")), 1000) if futures else len(insts)
        offset = int(query.get("cursor") or 0)
        page = insts[offset : offset + limit]
        items = []
        for inst in page:
            item: dict[str, object] = {
                "symbol": inst.symbol, "baseCoin": inst.base, "quoteCoin": inst.quote, "status": "Trading",
            }  # fmt: skip
            if futures:
                item.update(contractType="LinearPerpetual", settleCoin=inst.quote, launchTime="1585526400000")
            items.append(item)
        more = futures and offset + limit < len(insts)
        result = {"category": category, "list": items, "nextPageCursor": str(offset + limit) if more else ""}
        body = {
            "retCode": 0,
            "retMsg": "OK",
            "result": result,
            "retExtInfo": {},
            "time": int(time.time() * MS_PER_S),
        }
        return HttpResponse(200, orjson.dumps(body))

    return handler


def sim_protocol(market: str, *, refusal_subscribes_rest: bool = True) -> SimProtocol:
    """The simulated ``bybit_<market>`` server protocol.

    Whether a request refused for some of its topics subscribes the others is not documented;
    `refusal_subscribes_rest=False` makes such a refusal subscribe none of them (the worst case
    the runner must survive: it asks for the unnamed topics again)."""
    futures = market == "futures"
    real_path = _PATHS[market]
    return SimProtocol(
        stream=f"bybit_{market}",
        # The real path, or the bare root of a local server whose URL carries no path.
        accept=lambda path, _headers: None if path.split("?", 1)[0] in (real_path, "/", "") else 404,
        on_connect=lambda _session: [],
        on_message=lambda s, f, now_ms: _on_message(futures, s, f, now_ms, refusal_subscribes_rest),
        encode_trades=_encoder(futures),
        idle_timeout_s=600.0,
        http_routes={("GET", "/v5/market/instruments-info"): _instruments_route(futures)},
    )
