"""KuCoin spot and futures recent public trades, as the local servers answer them.

Spot:    https://www.kucoin.com/docs-new/rest/spot-trading/market-data/get-trade-history
Futures: https://www.kucoin.com/docs-new/rest/futures-trading/market-data/get-trade-history
Limits:  https://www.kucoin.com/docs-new/rate-limit

The latest 100 trades only, no paging, in the ``{"code":"200000","data":[...]}`` envelope. Values
match the WS pushes of ``recorder/sim/kucoin.py``: same ``tradeId``, ``sequence``, price; spot
``size`` in base units, futures ``size`` in lots; times in ns. Budget: the public pool, 2000
weight / 30 s (weight 3 spot, 5 futures); refusals are HTTP 429 ``{"code":"429000",...}``.
"""

from __future__ import annotations

from typing import Any

import orjson

from pumpwatch.recorder.sim.history import HistoryApi, HistoryRequest, HistoryRoute, RateLimit, json_response
from pumpwatch.recorder.sim.kucoin import contracts, num_text, sequence_of
from pumpwatch.recorder.sim.protocol import HttpResponse

RECENT_TRADES = 100
_TOO_MANY = orjson.dumps({"code": "429000", "msg": "Too Many Requests"})


def _reply(code: str, data: Any, msg: str | None = None) -> HttpResponse:
    body: dict[str, Any] = {"code": code, "data": data}
    if msg is not None:
        body["msg"] = msg
    return json_response(orjson.dumps(body))


def _trades(futures: bool, req: HistoryRequest) -> HttpResponse:
    """Spot ``GET /api/v1/market/histories?symbol``: ``{"code":"200000","data":[{"sequence":
    "10976028003549185","tradeId":"10976028003549185","price":"67122","size":"0.000025",
    "side":"buy","time":1729843222921000000}]}``, oldest first.

    Futures ``GET /api/v1/trade/history?symbol``: ``{"code":"200000","data":[{"sequence":
    1697915257909,"contractId":1,"tradeId":"1697915257909","makerOrderId":"…","takerOrderId":"…",
    "ts":1697915257909000000,"size":1,"price":"29681.2","side":"buy"}]}``, newest first.
    """
    symbol = req.query.get("symbol", "")
    if not symbol:
        return _reply("400100", None, "symbol is required")
    if symbol not in req.instruments:
        return _reply(
            "400100", None, f"Unsupported trading pair: {symbol}" if not futures else "contract not exists"
        )
    rows = req.store.latest(symbol, RECENT_TRADES)
    data: list[dict[str, Any]] = []
    for time_us, _recv, _sym, _b, _q, price, qty, side, trade_id in rows:
        seq = sequence_of(trade_id) or 0
        if futures:
            data.append(
                {
                    "sequence": seq,
                    "contractId": 1,
                    "tradeId": trade_id or str(seq),
                    "makerOrderId": f"{seq + 1:024x}",
                    "takerOrderId": f"{seq:024x}",
                    "ts": time_us * 1000,
                    "size": contracts(qty, req.instruments[symbol].multiplier),
                    "price": num_text(price),
                    "side": side,
                }
            )
        else:
            data.append(
                {
                    "sequence": str(seq),
                    "tradeId": trade_id or str(seq),
                    "price": num_text(price),
                    "size": num_text(qty),
                    "side": side,
                    "time": time_us * 1000,
                }
            )
    if futures:
        data.reverse()
    return _reply("200000", data)


def history_api(market: str) -> HistoryApi:
    """The ``kucoin_<market>`` recent-trades route and the public weight pool."""
    futures = market == "futures"
    path = "/api/v1/trade/history" if futures else "/api/v1/market/histories"
    return HistoryApi(
        routes={path: HistoryRoute(lambda r: _trades(futures, r), weight=5 if futures else 3)},
        budgets={"ip": RateLimit(2000, 30.0, body=_TOO_MANY)},
    )
