"""Gate spot and USDT-futures public trade history, as the local servers answer it.

Spot:    https://www.gate.com/docs/developers/apiv4/en/#retrieve-market-trades
Futures: https://www.gate.com/docs/developers/apiv4/en/#futures-trading-history

Both page by time: ``from``/``to`` in seconds (inclusive; ``to`` defaults to now, spot ``from``
to 30 days before it), newest first, at most 1000 per call; spot pages with ``page`` (with
``limit * (page - 1) <= 100000``), futures with ``offset``. Values match the WS pushes of
``recorder/sim/gate.py``: spot ``id`` and ``sequence_id`` (= WS ``id_market``, per market
contiguous: `market_id` of the id), ``create_time_ms`` with the same µs fraction; futures
``size`` in signed contracts, a string with ``X-Gate-Size-Decimal: 1`` and truncated toward
zero to an integer without it.
Budget: 200 calls / 10 s per endpoint; refusals ``{"label":"TOO_MANY_REQUESTS",...}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import orjson

from pumpwatch.recorder.sim.gate import contracts, market_id, num_text, us_to_ms_text
from pumpwatch.recorder.sim.history import (
    HistoryApi,
    HistoryRequest,
    HistoryRoute,
    ParamError,
    RateLimit,
    int_param,
    json_response,
    numeric_id,
)
from pumpwatch.recorder.sim.protocol import HttpResponse
from pumpwatch.segments.schema import TradeRow

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_PAGE_DEPTH = 100_000
SPOT_DEFAULT_SPAN_S = 30 * 86_400
_TOO_MANY = orjson.dumps({"label": "TOO_MANY_REQUESTS", "message": "Request Rate limit Exceeded"})


def _error(label: str, message: str, status: int = 400) -> HttpResponse:
    return json_response(orjson.dumps({"label": label, "message": message}), status)


def _window(
    req: HistoryRequest, key: str, futures: bool
) -> tuple[str, int, Sequence[TradeRow]] | HttpResponse:
    """(symbol, limit, rows in [from, to] oldest first) or the error answer."""
    symbol = req.query.get(key, "")
    if not symbol:
        return _error("MISSING_REQUIRED_PARAM", f"Missing required parameter: {key}")
    try:
        limit = int_param(req.query, "limit", DEFAULT_LIMIT)
        to_s = int_param(req.query, "to")
        from_s = int_param(req.query, "from")
    except ParamError as exc:
        return _error("INVALID_PARAM_VALUE", f"Invalid parameter value: {exc.name}")
    assert limit is not None
    if not 1 <= limit <= MAX_LIMIT:
        return _error("INVALID_PARAM_VALUE", f"limit must be between 1 and {MAX_LIMIT}")
    if symbol not in req.instruments:
        if futures:
            return _error("CONTRACT_NOT_FOUND", f"Contract {symbol} not found")
        return _error("INVALID_CURRENCY_PAIR", f"Invalid currency pair {symbol}")
    hi_us = req.now_us if to_s is None else to_s * 1_000_000 + 999_999
    if from_s is None and not futures:
        from_s = hi_us // 1_000_000 - SPOT_DEFAULT_SPAN_S
    lo_us = None if from_s is None else from_s * 1_000_000
    return symbol, limit, req.store.time_range(symbol, lo_us, hi_us)


def _page(rows: Sequence[TradeRow], skip: int, limit: int) -> list[TradeRow]:
    """Newest first, `skip` newest ones skipped."""
    stop = len(rows) - skip
    return list(reversed(rows[max(stop - limit, 0) : max(stop, 0)]))


def spot_trades(req: HistoryRequest) -> HttpResponse:
    """``GET /api/v4/spot/trades?currency_pair&from&to&limit&page``.

    ``[{"id":"1232893232","create_time":"1548000000","create_time_ms":"1548000000123.456",
    "currency_pair":"BTC_USDT","side":"sell","role":"taker","amount":"0.15","price":"0.03",
    "sequence_id":"588018"}]``
    """
    window = _window(req, "currency_pair", futures=False)
    if isinstance(window, HttpResponse):
        return window
    symbol, limit, rows = window
    try:
        page = int_param(req.query, "page", 1)
    except ParamError:
        page = None
    if page is None or page < 1 or limit * (page - 1) > MAX_PAGE_DEPTH:
        return _error("INVALID_PARAM_VALUE", f"page too deep: limit * (page - 1) must be <= {MAX_PAGE_DEPTH}")
    out = [
        {
            "id": str(numeric_id(r)),
            "create_time": str(r[0] // 1_000_000),
            "create_time_ms": us_to_ms_text(r[0]),
            "currency_pair": symbol,
            "side": r[7],
            "role": "taker",
            "amount": num_text(r[6]),
            "price": num_text(r[5]),
            "sequence_id": str(market_id(numeric_id(r))),
        }
        for r in _page(rows, limit * (page - 1), limit)
    ]
    return json_response(orjson.dumps(out))


def futures_trades(req: HistoryRequest) -> HttpResponse:
    """``GET /api/v4/futures/usdt/trades?contract&from&to&limit&offset``.

    ``[{"id":121234231,"create_time":1514764800.123,"create_time_ms":1514764800123,
    "contract":"BTC_USDT","size":"-100","price":"100.123"}]`` (``size`` an int without the
    ``X-Gate-Size-Decimal: 1`` header).
    """
    window = _window(req, "contract", futures=True)
    if isinstance(window, HttpResponse):
        return window
    symbol, limit, rows = window
    try:
        offset = int_param(req.query, "offset", 0)
    except ParamError as exc:
        return _error("INVALID_PARAM_VALUE", f"Invalid parameter value: {exc.name}")
    assert offset is not None
    decimal = req.headers.get("x-gate-size-decimal") == "1"
    multiplier = req.instruments[symbol].multiplier
    out: list[dict[str, Any]] = []
    for r in _page(rows, offset, limit):
        size = contracts(r[6], multiplier)
        signed = size if r[7] == "buy" else -size
        t_ms = r[0] // 1000
        out.append(
            {
                "id": numeric_id(r),
                "create_time": t_ms / 1000,
                "create_time_ms": t_ms,
                "contract": symbol,
                "size": num_text(signed) if decimal else math.trunc(signed),
                "price": num_text(r[5]),
                "is_internal": r[8] in req.off_market,
            }
        )
    return json_response(orjson.dumps(out))


def history_api(market: str) -> HistoryApi:
    """The ``gate_<market>`` trade-history route and its budget (200 calls / 10 s)."""
    if market == "futures":
        route = {"/api/v4/futures/usdt/trades": HistoryRoute(futures_trades)}
    else:
        route = {"/api/v4/spot/trades": HistoryRoute(spot_trades)}
    return HistoryApi(routes=route, budgets={"ip": RateLimit(200, 10.0, body=_TOO_MANY)})
