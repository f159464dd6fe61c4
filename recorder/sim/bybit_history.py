"""Bybit v5 recent public trades (spot and linear), as the local servers answer them.

Recent trades: https://bybit-exchange.github.io/docs/v5/market/recent-trade
Rate limits:   https://bybit-exchange.github.io/docs/v5/rate-limit

Latest trades only, no paging: spot ``limit`` 1-60 (default 60), linear 1-1000 (default 500),
newest first, in the ``retCode``/``result.list`` envelope. Items carry the WS ``publicTrade``
values of ``recorder/sim/bybit.py`` (``execId`` = WS ``i``, same price/size strings, ``time`` in
ms). Over the IP budget (600 calls / 5 s) Bybit answers HTTP 403 "access too frequent" and
blocks the IP for at least 10 minutes (`penalty_s`, which tests shrink).
"""

from __future__ import annotations

import time

import orjson

from pumpwatch.recorder.sim.binance import decimal_str, numeric_id
from pumpwatch.recorder.sim.history import (
    HistoryApi,
    HistoryRequest,
    HistoryRoute,
    ParamError,
    RateLimit,
    int_param,
    json_response,
)
from pumpwatch.recorder.sim.protocol import HttpResponse

LIMITS = {"spot": (60, 60), "linear": (1000, 500)}  # category -> (max, default)


def _reply(ret_code: int, ret_msg: str, result: dict[str, object]) -> HttpResponse:
    body = {
        "retCode": ret_code,
        "retMsg": ret_msg,
        "result": result,
        "retExtInfo": {},
        "time": int(time.time() * 1000),
    }
    return json_response(orjson.dumps(body))


def _recent_trade(category: str, req: HistoryRequest) -> HttpResponse:
    """``GET /v5/market/recent-trade?category&symbol&limit``.

    ``{"retCode":0,"retMsg":"OK","result":{"category":"spot","list":[{"execId":"2100000000007764263",
    "symbol":"BTCUSDT","price":"16618.49","size":"0.00012","side":"Buy","time":"1672052955758",
    "isBlockTrade":false,"isRPITrade":false,"seq":"123"}]},"retExtInfo":{},"time":1672053054358}``
    """
    if req.query.get("category") != category:
        return _reply(10001, "params error: category invalid", {})
    symbol = req.query.get("symbol", "")
    max_limit, default = LIMITS[category]
    try:
        limit = int_param(req.query, "limit", default)
    except ParamError:
        limit = None
    if limit is None or not 1 <= limit <= max_limit:
        return _reply(10001, "params error: limit invalid", {})
    if symbol not in req.instruments:
        return _reply(10001, "Not supported symbols", {})
    items = [
        {
            "execId": r[8] or "",
            "symbol": symbol,
            "price": decimal_str(r[5]),
            "size": decimal_str(r[6]),
            "side": "Buy" if r[7] == "buy" else "Sell",
            "time": str(r[0] // 1000),
            "isBlockTrade": r[8] in req.off_market,
            "isRPITrade": False,
            "seq": str(numeric_id(r[8])),
        }
        for r in reversed(req.store.latest(symbol, limit))
    ]
    return _reply(0, "OK", {"category": category, "list": items})


def history_api(market: str) -> HistoryApi:
    """The ``bybit_<market>`` recent-trade route and its IP budget."""
    category = "linear" if market == "futures" else "spot"
    return HistoryApi(
        routes={"/v5/market/recent-trade": HistoryRoute(lambda r: _recent_trade(category, r))},
        budgets={
            "ip": RateLimit(
                600, 5.0, status=403, body=b"access too frequent", penalty_s=600.0, content_type="text/plain"
            )
        },
    )
