"""Binance spot and USDⓈ-M futures public trade history, as the local servers answer it.

Spot:    https://developers.binance.com/docs/binance-spot-api-docs/rest-api/market-data-endpoints
         (Old trade lookup, Compressed/Aggregate trades list; limits: .../rest-api/limits)
Futures: https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Compressed-Aggregate-Trades-List

Values come from the same rows and the same encoders as the WebSocket frames in
``recorder/sim/binance.py``: spot ``id`` = WS ``t``, futures ``a`` = WS ``a`` (one fill per
aggregate in the sim, so ``f == l == a``). Spot aggregate ids are a separate sequence
(``a = t + SPOT_AGG_ID_OFFSET``, ``f == l == t``), as on the real exchange. Times are ms, or µs
on spot when the request carries ``X-MBX-TIME-UNIT: MICROSECOND``. Rate limits: one IP weight
budget per minute (6000 spot, 2400 futures), 429 with ``Retry-After``, then 418 (banned) for a
client that keeps calling after 429s.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from pumpwatch.recorder.sim.binance import decimal_str
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
DEFAULT_LIMIT = 500
SPOT_AGG_ID_OFFSET = 3_000_000_000
FUTURES_MAX_SPAN_MS = 3_600_000  # startTime..endTime must be under one hour
SPOT_WEIGHT_PER_MIN = 6000
FUTURES_WEIGHT_PER_MIN = 2400


def _error(code: int, msg: str, status: int = 400) -> HttpResponse:
    return json_response(orjson.dumps({"code": code, "msg": msg}), status)


def _param_error(exc: ParamError) -> HttpResponse:
    if exc.missing:
        return _error(-1102, f"Mandatory parameter '{exc.name}' was not sent, was empty/null, or malformed.")
    return _error(
        -1100, f"Illegal characters found in parameter '{exc.name}'; legal range is '^[0-9]{{1,20}}$'."
    )


def _rate_limit(weight_per_min: int) -> RateLimit:
    msg = (
        f"Too much request weight used; current limit is {weight_per_min} request weight per 1 MINUTE. "
        "Please use WebSocket Streams for live updates to avoid polling the API."
    )

    def banned(until_ms: int) -> bytes:
        text = (
            f"Way too much request weight used; IP banned until {until_ms}. "
            "Please use WebSocket Streams for live updates to avoid bans."
        )
        return orjson.dumps({"code": -1003, "msg": text})

    return RateLimit(
        limit=weight_per_min,
        window_s=60.0,
        body=orjson.dumps({"code": -1003, "msg": msg}),
        ban_after=3,
        ban_s=120.0,
        ban_body=banned,
        used_header="X-MBX-USED-WEIGHT-1M",
    )


def _symbol(req: HistoryRequest) -> str:
    symbol = req.query.get("symbol", "")
    if not symbol:
        raise ParamError("symbol", missing=True)
    return symbol


def _limit(req: HistoryRequest) -> int | None:
    limit = int_param(req.query, "limit", DEFAULT_LIMIT)
    assert limit is not None
    return limit if 1 <= limit <= MAX_LIMIT else None


def _time_param(req: HistoryRequest, name: str, end: bool = False) -> int | None:
    """A startTime/endTime as µs (both inclusive: an ms `end` covers its whole millisecond);
    Binance takes ms or µs and tells them apart by size."""
    value = int_param(req.query, name)
    if value is None:
        return None
    if value >= 10**14:
        return value
    return value * 1000 + (999 if end else 0)


def _micros(req: HistoryRequest, futures: bool) -> bool:
    return not futures and req.headers.get("x-mbx-time-unit", "").upper() == "MICROSECOND"


def historical_trades(req: HistoryRequest) -> HttpResponse:
    """``GET /api/v3/historicalTrades?symbol&fromId&limit``: trades from `fromId` on (ids = WS
    ``t``), oldest first; the latest ones without `fromId`.

    ``[{"id":28457,"price":"4.00000100","qty":"12.00000000","quoteQty":"48.000012",
    "time":1499865549590,"isBuyerMaker":true,"isBestMatch":true}]``
    """
    try:
        symbol, limit, from_id = _symbol(req), _limit(req), int_param(req.query, "fromId")
    except ParamError as exc:
        return _param_error(exc)
    if symbol not in req.instruments:
        return _error(-1121, "Invalid symbol.")
    if limit is None:
        return _error(-1130, "Data sent for parameter 'limit' is not valid.")
    if from_id is None:
        rows = req.store.latest(symbol, limit)
    else:
        rows = req.store.id_range(symbol, from_id, None)[:limit]
    micros = _micros(req, futures=False)
    out = [
        {
            "id": numeric_id(r),
            "price": decimal_str(r[5]),
            "qty": decimal_str(r[6]),
            "quoteQty": decimal_str(float(f"{r[5] * r[6]:.12g}")),
            "time": r[0] if micros else r[0] // 1000,
            "isBuyerMaker": r[7] == "sell",
            "isBestMatch": True,
        }
        for r in rows
    ]
    return json_response(orjson.dumps(out))


def _agg_rows(
    req: HistoryRequest, futures: bool, symbol: str, limit: int
) -> Sequence[TradeRow] | HttpResponse:
    from_id = int_param(req.query, "fromId")
    start_us, end_us = _time_param(req, "startTime"), _time_param(req, "endTime", end=True)
    store = req.store
    if from_id is not None:
        if not futures and (start_us is not None or end_us is not None):
            return _error(-1128, "Combination of optional parameters invalid.")
        first_id = from_id - SPOT_AGG_ID_OFFSET if not futures else from_id
        return store.id_range(symbol, first_id, None)[:limit]
    if start_us is None and end_us is None:
        return store.latest(symbol, limit)
    if futures:
        span_us = FUTURES_MAX_SPAN_MS * 1000
        if start_us is not None and end_us is not None and end_us - start_us >= span_us:
            return _error(-1127, "More than 1 hours between startTime and endTime.")
        if end_us is None:
            assert start_us is not None
            end_us = start_us + span_us - 1
        if start_us is None:
            start_us = end_us - span_us + 1
    if start_us is not None:
        return store.time_range(symbol, start_us, end_us)[:limit]
    rows = store.time_range(symbol, None, end_us)
    return rows[max(len(rows) - limit, 0) :]


def _agg_trades(futures: bool, req: HistoryRequest) -> HttpResponse:
    """``GET /api/v3/aggTrades`` / ``GET /fapi/v1/aggTrades`` with ``symbol`` and ``fromId`` or
    ``startTime``/``endTime`` (futures: under one hour apart), oldest first.

    Spot ``[{"a":26129,"p":"0.01633102","q":"4.70443515","f":27781,"l":27781,"T":1498793709153,
    "m":true,"M":true}]``; futures items have no ``M``.
    """
    try:
        symbol, limit = _symbol(req), _limit(req)
        if symbol not in req.instruments:
            return _error(-1121, "Invalid symbol.")
        if limit is None:
            return _error(-1130, "Data sent for parameter 'limit' is not valid.")
        rows = _agg_rows(req, futures, symbol, limit)
    except ParamError as exc:
        return _param_error(exc)
    if isinstance(rows, HttpResponse):
        return rows
    micros = _micros(req, futures)
    out = []
    for r in rows:
        tid = numeric_id(r)
        agg_id = tid if futures else tid + SPOT_AGG_ID_OFFSET
        item: dict[str, object] = {
            "a": agg_id,
            "p": decimal_str(r[5]),
            "q": decimal_str(r[6]),
            "f": tid,
            "l": tid,
            "T": r[0] if micros else r[0] // 1000,
            "m": r[7] == "sell",
        }
        if not futures:
            item["M"] = True
        out.append(item)
    return json_response(orjson.dumps(out))


def history_api(market: str) -> HistoryApi:
    """The ``binance_<market>`` trade-history routes and weight budget."""
    if market == "futures":
        return HistoryApi(
            routes={"/fapi/v1/aggTrades": HistoryRoute(lambda r: _agg_trades(True, r), weight=20)},
            budgets={"ip": _rate_limit(FUTURES_WEIGHT_PER_MIN)},
        )
    return HistoryApi(
        routes={
            "/api/v3/historicalTrades": HistoryRoute(historical_trades, weight=25),
            "/api/v3/aggTrades": HistoryRoute(lambda r: _agg_trades(False, r), weight=4),
        },
        budgets={"ip": _rate_limit(SPOT_WEIGHT_PER_MIN)},
    )
