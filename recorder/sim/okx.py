"""Simulated OKX v5 public trade streams (server side of adapters/okx.py).

All-trades channel: https://www.okx.com/docs-v5/en/#order-book-trading-market-data-ws-all-trades-channel
Connect/keep-alive: https://www.okx.com/docs-v5/en/#overview-websocket-connect

One ack per subscribed arg, error 60018 naming the instrument for a refused or unknown one
(and for ``trades-all`` asked on the public URL), 60012 for a malformed request, text
``ping`` -> ``pong``, the 30 s idle close, the 64008 service-upgrade notice, one trade per
``trades-all`` push with SWAP sizes in contracts, and the instruments REST route.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

import orjson

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.sim.binance import decimal_str
from pumpwatch.recorder.sim.protocol import HttpResponse, SimProtocol, SimSession
from pumpwatch.segments.schema import TradeRow
from pumpwatch.timeunits import US_PER_MS

_CHANNEL_PATH = {"trades-all": "/ws/v5/business", "trades": "/ws/v5/public"}


def _frame(session: SimSession, req_id: object, body: dict[str, object]) -> str:
    reply: dict[str, object] = {} if req_id is None else {"id": req_id}
    reply.update(body)
    reply["connId"] = session.conn_id
    return orjson.dumps(reply).decode()


def _on_message(session: SimSession, frame: str | bytes, now_ms: int) -> list[str]:
    del now_ms
    if frame in ("ping", b"ping"):
        return ["pong"]
    text = frame.decode(errors="replace") if isinstance(frame, bytes) else frame
    try:
        req = orjson.loads(frame)
    except orjson.JSONDecodeError:
        req = None
    op = req.get("op") if type(req) is dict else None
    args = req.get("args") if type(req) is dict else None
    req_id = req.get("id") if type(req) is dict else None
    if op not in ("subscribe", "unsubscribe") or type(args) is not list:
        return [
            _frame(session, req_id, {"event": "error", "code": "60012", "msg": f"Invalid request: {text}"})
        ]
    path = session.path.split("?", 1)[0].rstrip("/")
    replies = []
    for arg in args:
        channel = arg.get("channel") if type(arg) is dict else None
        inst_id = arg.get("instId") if type(arg) is dict else None
        wrong_url = path not in ("", _CHANNEL_PATH.get(str(channel), ""))
        if (
            channel not in _CHANNEL_PATH
            or wrong_url
            or inst_id not in session.instruments
            or inst_id in session.reject
        ):
            msg = (
                f"Wrong URL or channel:{channel},instId:{inst_id} doesn't exist. "
                "Please use the correct URL, channel and parameters referring to API document."
            )
            replies.append(_frame(session, req_id, {"event": "error", "code": "60018", "msg": msg}))
            continue
        assert type(inst_id) is str
        if op == "subscribe":
            session.subscribed.add(inst_id)
        else:
            session.subscribed.discard(inst_id)
        replies.append(_frame(session, req_id, {"event": op, "arg": {"channel": channel, "instId": inst_id}}))
    return replies


def _contracts(qty: float, inst: Instrument) -> str:
    """Base qty back to OKX's contract count: the decimal whose exact product with ctVal (the
    decoder's arithmetic, `pumpwatch.recorder.adapters.checks.contract_qty`) is `qty`."""
    if inst.multiplier == 1.0:
        return decimal_str(qty)
    whole = round(qty / inst.multiplier)
    if whole > 0 and whole * inst.multiplier == qty:  # a product with float noise: whole contracts
        return str(whole)
    return decimal_str(float(Decimal(repr(qty)) / Decimal(repr(inst.multiplier))))


def _encode_trades(rows: Sequence[TradeRow], instruments: Mapping[str, Instrument]) -> list[str]:
    frames = []
    for t_us, _recv, symbol, _base, _quote, price, qty, side, trade_id in rows:
        item = {
            "instId": symbol, "tradeId": trade_id or "", "px": decimal_str(price),
            "sz": _contracts(qty, instruments[symbol]), "side": side, "source": "0",
            "ts": str(t_us // US_PER_MS),
        }  # fmt: skip
        frame = {"arg": {"channel": "trades-all", "instId": symbol}, "data": [item]}
        frames.append(orjson.dumps(frame).decode())
    return frames


def _instrument(inst: Instrument, swap: bool) -> dict[str, object]:
    item: dict[str, object] = {
        "instType": "SWAP" if swap else "SPOT", "instId": inst.symbol, "state": "live",
        "listTime": "1606468572000", "tickSz": "0.0001",
        "lotSz": "1" if swap else "0.0001", "minSz": "1" if swap else "0.0001",
    }  # fmt: skip
    if swap:
        item.update(
            uly=f"{inst.base}-{inst.quote}", instFamily=f"{inst.base}-{inst.quote}", baseCcy="", quoteCcy="",
            settleCcy=inst.quote, ctVal=decimal_str(inst.multiplier), ctMult="1", ctValCcy=inst.base,
            ctType="linear",
        )  # fmt: skip
    else:
        item.update(
            uly="", instFamily="", baseCcy=inst.base, quoteCcy=inst.quote, settleCcy="", ctVal="", ctMult=""
        )
    return item


def sim_protocol(market: str) -> SimProtocol:
    """The simulated ``okx_<market>`` server protocol."""
    swap = market == "futures"

    def instruments_route(
        query: Mapping[str, str], _b: bytes, insts: Sequence[Instrument], _u: str
    ) -> HttpResponse:
        wanted = "SWAP" if swap else "SPOT"
        if query.get("instType") != wanted:
            return HttpResponse(
                200, orjson.dumps({"code": "51000", "msg": "Parameter instType error", "data": []})
            )
        data = [_instrument(inst, swap) for inst in insts]
        return HttpResponse(200, orjson.dumps({"code": "0", "msg": "", "data": data}))

    def notice() -> str:
        msg = "The connection will soon be closed for a service upgrade. Please reconnect."
        return orjson.dumps({"event": "notice", "code": "64008", "msg": msg, "connId": "sim"}).decode()

    def accept(path: str, _headers: Mapping[str, str]) -> int | None:
        bare = path.split("?", 1)[0].rstrip("/")
        return None if bare in ("", "/ws/v5/business", "/ws/v5/public") else 404

    return SimProtocol(
        stream=f"okx_{market}",
        accept=accept,
        on_connect=lambda _session: [],
        on_message=_on_message,
        encode_trades=_encode_trades,
        idle_timeout_s=30.0,
        http_routes={("GET", "/api/v5/public/instruments"): instruments_route},
        shutdown_notice=notice,
    )
