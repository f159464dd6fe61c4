"""Phemex spot and USDT perpetual as a local server speaks them (see recorder/adapters/phemex.py).

DataGW rules reproduced: only the bare URL is accepted (the old ``/ws`` path answers 410), one
symbol per ``trade.subscribe``/``trade_p.subscribe``, at most `max_subscriptions` per connection
(the documented 20 is contested, so the default is generous and tests set a low one; beyond it
a subscribe gets the generic error reply ``{"error":{"code":6001,…},"id":…,"result":null}``; the
real code and message are undocumented), connections per client through the server's
`ClientLimit`,
``server.ping`` answered with ``"pong"``, a client silent for 30 s is dropped, and every
successful subscribe is followed by a ``snapshot`` of recent trades (newest first). Spot frames
carry scaled integers (priceEp, value) with the instrument's scales; perpetual frames carry
real values as strings.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.sim.protocol import HttpHandler, HttpResponse, SimProtocol, SimSession
from pumpwatch.segments.schema import TradeRow

MAX_SUBSCRIPTIONS = 1000  # generous: the real limit is unknown (documented 20, seen 100 and more)
SNAPSHOT_TRADES = 1000  # the spot page says 1000 history trades, older pages 200
IDLE_TIMEOUT_S = 30.0


def num_text(x: float) -> str:
    """A plain decimal string (no exponent) that float() turns back into exactly `x`."""
    text = repr(float(x))
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return text[:-2] if text.endswith(".0") else text


def _error(req_id: Any, code: int, message: str) -> str:
    return orjson.dumps({"error": {"code": code, "message": message}, "id": req_id, "result": None}).decode()


def sim_protocol(market: str, *, max_subscriptions: int = MAX_SUBSCRIPTIONS) -> SimProtocol:
    """The Phemex `SimProtocol` for ``"spot"`` or ``"futures"`` (USDT perpetual); a subscribe
    beyond `max_subscriptions` on one connection is refused."""
    if market not in ("spot", "futures"):
        raise ValueError(f"phemex: unknown market {market!r}")
    spot = market == "spot"
    family = "trade" if spot else "trade_p"
    trades_key = "trades" if spot else "trades_p"
    sequence = itertools.count(77_702_250)

    def trade_row(row: TradeRow, inst: Instrument) -> list[Any]:
        time_us, _recv, _sym, _b, _q, price, qty, side, _tid = row
        wire_side = "Buy" if side == "buy" else "Sell"
        if spot:
            return [
                time_us * 1000,
                wire_side,
                round(price * 10**inst.price_scale),
                round(qty * 10**inst.qty_scale),
            ]
        return [time_us * 1000, wire_side, num_text(price), num_text(qty / inst.multiplier)]

    def frame(symbol: str, rows: list[list[Any]], kind: str) -> str:
        msg = {"sequence": next(sequence), "symbol": symbol, trades_key: rows, "type": kind}
        return orjson.dumps(msg).decode()

    def accept(path: str, _headers: Mapping[str, str]) -> int | None:
        # "Websocket (further URI or querystring not allowed): wss://ws.phemex.com"
        return None if path in ("", "/") else 410

    def on_message(session: SimSession, raw: str | bytes, _now: int) -> list[str]:
        try:
            req = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return [_error(None, 6001, "invalid argument")]
        if not isinstance(req, dict):
            return [_error(None, 6001, "invalid argument")]
        req_id, method, params = req.get("id"), req.get("method"), req.get("params")
        if method == "server.ping":
            return [orjson.dumps({"error": None, "id": req_id, "result": "pong"}).decode()]
        if not isinstance(params, list):
            return [_error(req_id, 6001, "invalid argument")]
        if method == f"{family}.unsubscribe":
            if params:
                session.subscribed.difference_update(str(p) for p in params)
            else:
                session.subscribed.clear()
            return [orjson.dumps({"error": None, "id": req_id, "result": {"status": "success"}}).decode()]
        if method != f"{family}.subscribe":
            return [_error(req_id, 6001, "invalid argument")]
        if len(params) != 1 or params[0] in session.reject or params[0] not in session.instruments:
            return [_error(req_id, 6001, "invalid argument")]
        symbol = params[0]
        if symbol not in session.subscribed and len(session.subscribed) >= max_subscriptions:
            return [_error(req_id, 6001, "invalid argument")]
        session.subscribed.add(symbol)
        return [orjson.dumps({"error": None, "id": req_id, "result": {"status": "success"}}).decode()]

    def encode_trades(rows: Sequence[TradeRow], instruments: Mapping[str, Instrument]) -> list[str]:
        """Consecutive trades of one symbol share an ``incremental`` frame, oldest first."""
        frames: list[str] = []
        batch: list[list[Any]] = []
        batch_symbol = ""
        for row in rows:
            if batch and row[2] != batch_symbol:
                frames.append(frame(batch_symbol, batch, "incremental"))
                batch = []
            batch_symbol = row[2]
            batch.append(trade_row(row, instruments[batch_symbol]))
        if batch:
            frames.append(frame(batch_symbol, batch, "incremental"))
        return frames

    def snapshot(symbol: str, recent: Sequence[TradeRow], instruments: Mapping[str, Instrument]) -> list[str]:
        """The history DataGW sends after a subscribe: up to 1000 trades, newest first."""
        inst = instruments[symbol]
        mine = [r for r in recent if r[2] == symbol][-SNAPSHOT_TRADES:]
        return [frame(symbol, [trade_row(r, inst) for r in reversed(mine)], "snapshot")]

    return SimProtocol(
        stream=f"phemex_{market}",
        accept=accept,
        on_connect=lambda _session: [],
        on_message=on_message,
        encode_trades=encode_trades,
        snapshot=snapshot,
        idle_timeout_s=IDLE_TIMEOUT_S,
        http_routes={("GET", "/public/products"): _products_handler(spot)},
    )


def _products_handler(spot: bool) -> HttpHandler:
    def products(_q: Mapping[str, str], _b: bytes, inst: Sequence[Instrument], _w: str) -> HttpResponse:
        usdt = {"currency": "USDT", "valueScale": 8, "status": "Listed"}
        currencies: dict[str, dict[str, Any]] = {"USDT": usdt}
        spot_rows, perp_rows = [], []
        for i in inst:
            if spot:
                currencies[i.base] = {"currency": i.base, "valueScale": i.qty_scale, "status": "Listed"}
                spot_rows.append(
                    {
                        "symbol": i.symbol,
                        "type": "Spot",
                        "displaySymbol": f"{i.base} / {i.quote}",
                        "quoteCurrency": i.quote,
                        "priceScale": i.price_scale,
                        "ratioScale": 8,
                        "baseCurrency": i.base,
                        "status": "Listed",
                    }
                )
            else:
                perp_rows.append(
                    {
                        "symbol": i.symbol,
                        "type": "PerpetualV2",
                        "displaySymbol": f"{i.base} / {i.quote}",
                        "contractUnderlyingAssets": i.base,
                        "settleCurrency": i.quote,
                        "quoteCurrency": i.quote,
                        "priceScale": 0,
                        "baseCurrency": i.base,
                        "status": "Listed",
                        "qtyStepSize": "0.001",
                    }
                )
        data = {"currencies": list(currencies.values()), "products": spot_rows, "perpProductsV2": perp_rows}
        return HttpResponse(200, orjson.dumps({"code": 0, "msg": "", "data": data}))

    return products
