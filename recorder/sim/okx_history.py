"""OKX public trade history (spot and SWAP), as the local servers answer it.

History: https://www.okx.com/docs-v5/en/#order-book-trading-market-data-get-trades-history
Recent:  https://www.okx.com/docs-v5/en/#order-book-trading-market-data-get-trades

``history-trades`` pages newest first: ``type=1`` (default) by tradeId, ``after`` = older than,
``before`` = newer than (alone: the latest records newer than it); ``type=2`` by ``ts`` with
``after`` only. At most 100 per call, 20 calls / 2 s per IP. ``trades`` gives the latest ≤ 500
(100 calls / 2 s). Items are the ``trades-all`` push items of ``recorder/sim/okx.py`` (same
tradeId, px, side, ts; SWAP ``sz`` in contracts); errors use the ``{"code","msg","data"}``
envelope (HTTP 200, 429 for 50011).
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
)
from pumpwatch.recorder.sim.okx import _contracts
from pumpwatch.recorder.sim.protocol import HttpResponse
from pumpwatch.segments.schema import TradeRow

HISTORY_MAX_LIMIT = 100
RECENT_MAX_LIMIT = 500
RECENT_DEFAULT_LIMIT = 100
_TOO_MANY = orjson.dumps({"msg": "Too Many Requests", "code": "50011"})


def _envelope(code: str, msg: str, data: list[dict[str, str]], status: int = 200) -> HttpResponse:
    return json_response(orjson.dumps({"code": code, "msg": msg, "data": data}), status)


def _items(req: HistoryRequest, symbol: str, rows: Sequence[TradeRow]) -> HttpResponse:
    """Newest first, each as the WS ``trades-all`` item."""
    inst = req.instruments[symbol]
    data = [
        {
            "instId": symbol,
            "side": r[7],
            "sz": _contracts(r[6], inst),
            "source": "0",
            "px": decimal_str(r[5]),
            "tradeId": r[8] or "",
            "ts": str(r[0] // 1000),
        }
        for r in reversed(rows)
    ]
    return _envelope("0", "", data)


def _common(req: HistoryRequest, max_limit: int, default: int) -> tuple[str, int] | HttpResponse:
    inst_id = req.query.get("instId", "")
    if not inst_id:
        return _envelope("50014", "Parameter instId can not be empty.", [], 400)
    try:
        limit = int_param(req.query, "limit", default)
    except ParamError:
        limit = None
    if limit is None or not 1 <= limit <= max_limit:
        return _envelope("51000", "Parameter limit error", [])
    if inst_id not in req.instruments:
        return _envelope("51001", "Instrument ID does not exist.", [])
    return inst_id, limit


def history_trades(req: HistoryRequest) -> HttpResponse:
    """``GET /api/v5/market/history-trades?instId&type&after&before&limit``.

    ``{"code":"0","msg":"","data":[{"instId":"BTC-USDT","side":"sell","sz":"0.00001","source":"0",
    "px":"29963.2","tradeId":"242720720","ts":"1654161646974"}]}``
    """
    parsed = _common(req, HISTORY_MAX_LIMIT, HISTORY_MAX_LIMIT)
    if isinstance(parsed, HttpResponse):
        return parsed
    symbol, limit = parsed
    kind = req.query.get("type", "1") or "1"
    try:
        after, before = int_param(req.query, "after"), int_param(req.query, "before")
    except ParamError as exc:
        return _envelope("51000", f"Parameter {exc.name} error", [])
    store = req.store
    if kind == "2":  # by timestamp (ms); `before` is not supported for timestamps
        rows = store.time_range(symbol, None, None if after is None else after * 1000 - 1)
        return _items(req, symbol, rows[max(len(rows) - limit, 0) :])
    if kind != "1":
        return _envelope("51000", "Parameter type error", [])
    lo = None if before is None else before + 1
    hi = None if after is None else after - 1
    rows = store.id_range(symbol, lo, hi)
    # Newest first in both cases: with `after` the newest older ones; with `before` alone "the
    # latest data" newer than it (not the oldest ones right after it).
    return _items(req, symbol, rows[max(len(rows) - limit, 0) :])


def recent_trades(req: HistoryRequest) -> HttpResponse:
    """``GET /api/v5/market/trades?instId&limit``: the latest trades (≤ 500), newest first."""
    parsed = _common(req, RECENT_MAX_LIMIT, RECENT_DEFAULT_LIMIT)
    if isinstance(parsed, HttpResponse):
        return parsed
    symbol, limit = parsed
    return _items(req, symbol, req.store.latest(symbol, limit))


def history_api(market: str) -> HistoryApi:
    """The ``okx_<market>`` trade-history routes and their per-endpoint IP budgets."""
    del market  # spot and SWAP share the endpoints; the instrument decides contracts
    return HistoryApi(
        routes={
            "/api/v5/market/history-trades": HistoryRoute(history_trades, budget="history-trades"),
            "/api/v5/market/trades": HistoryRoute(recent_trades, budget="trades"),
        },
        budgets={
            "history-trades": RateLimit(20, 2.0, body=_TOO_MANY),
            "trades": RateLimit(100, 2.0, body=_TOO_MANY),
        },
    )
