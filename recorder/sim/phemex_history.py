"""Phemex spot and USDT-perpetual recent public trades, as the local servers answer them.

Spot:      https://phemex-docs.github.io/#query-recent-trades
Perpetual: https://phemex-docs.github.io/#query-trades-2 (hedged perpetual, ``/md/v2/trade``)

The latest `RECENT_TRADES` trades only, newest first, without ids, as one ``snapshot`` inside the
``{"error":null,"id":0,"result":...}`` envelope; each row is exactly the row the WS frames of
``recorder/sim/phemex.py`` carry (spot scaled integers ``[ns, side, priceEp, qtyEv]``, perpetual
strings ``[ns, side, priceRp, qtyRq]``). An unknown symbol gets the DataGW's ``6001 invalid
argument``. Budget: 5000 calls / 5 min per IP, refused with HTTP 429.
"""

from __future__ import annotations

from typing import Any

import orjson

from pumpwatch.recorder.sim.history import HistoryApi, HistoryRequest, HistoryRoute, RateLimit, json_response
from pumpwatch.recorder.sim.phemex import num_text
from pumpwatch.recorder.sim.protocol import HttpResponse
from pumpwatch.segments.schema import TradeRow

RECENT_TRADES = 200
_TOO_MANY = orjson.dumps({"code": 10002, "msg": "Too many requests"})


def wire_row(row: TradeRow, price_scale: int, qty_scale: int, multiplier: float, spot: bool) -> list[Any]:
    """One trade as the WS frames carry it (the same arithmetic as recorder/sim/phemex.py)."""
    time_us, _recv, _sym, _b, _q, price, qty, side, _tid = row
    wire_side = "Buy" if side == "buy" else "Sell"
    if spot:
        return [time_us * 1000, wire_side, round(price * 10**price_scale), round(qty * 10**qty_scale)]
    return [time_us * 1000, wire_side, num_text(price), num_text(qty / multiplier)]


def _trades(spot: bool, req: HistoryRequest) -> HttpResponse:
    """Spot ``GET /md/trade?symbol=sBTCUSDT``: ``{"error":null,"id":0,"result":{"sequence":15934323,
    "symbol":"sBTCUSDT","trades":[[1579164056368538508,"Sell",869600000000,1210000]],
    "type":"snapshot"}}``; perpetual ``GET /md/v2/trade?symbol=BTCUSDT`` has ``trades_p`` rows
    ``[1666856076819029800,"Sell","20700.3","0.649"]``.
    """
    symbol = req.query.get("symbol", "")
    inst = req.instruments.get(symbol)
    if inst is None:
        body = {"error": {"code": 6001, "message": "invalid argument"}, "id": 0, "result": None}
        return json_response(orjson.dumps(body))
    store = req.store
    rows = store.latest(symbol, RECENT_TRADES)
    trades = [wire_row(r, inst.price_scale, inst.qty_scale, inst.multiplier, spot) for r in reversed(rows)]
    result = {
        "sequence": len(store.rows(symbol)) + store.forgotten,
        "symbol": symbol,
        "trades" if spot else "trades_p": trades,
        "type": "snapshot",
    }
    return json_response(orjson.dumps({"error": None, "id": 0, "result": result}))


def history_api(market: str) -> HistoryApi:
    """The ``phemex_<market>`` recent-trades route and its IP budget."""
    spot = market == "spot"
    path = "/md/trade" if spot else "/md/v2/trade"
    return HistoryApi(
        routes={path: HistoryRoute(lambda r: _trades(spot, r))},
        budgets={"ip": RateLimit(5000, 300.0, body=_TOO_MANY)},
    )
