"""A local REST history server for the twelve streams, for tests (127.0.0.1 only).

It holds one list of trades per stream (TradeRows with numeric ids, oldest first) and answers
each exchange's history endpoint the way the real one pages: Binance ``historicalTrades``
(``fromId``, µs only with ``X-MBX-TIME-UNIT``) and ``aggTrades`` (< 1 h windows, never with
``fromId``), OKX ``history-trades`` (``after`` = older than, newest first, ≤ 100), Gate by
seconds with ``page``/``offset`` (newest first, the spot page cap), and the latest-only
endpoints of Bybit, KuCoin and Phemex. Faults are queued: the next requests answer 429 (with or
without ``Retry-After``), 418, 500, or an error body.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.sim.binance import decimal_str
from pumpwatch.recorder.sim.gate import contracts as gate_contracts
from pumpwatch.recorder.sim.gate import num_text, us_to_ms_text
from pumpwatch.recorder.sim.http import LocalHttpServer, Request
from pumpwatch.recorder.sim.kucoin import contracts as kucoin_contracts
from pumpwatch.recorder.sim.protocol import HttpResponse
from pumpwatch.segments.schema import TradeRow

JSON = {"Content-Type": "application/json"}


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    return HttpResponse(status, orjson.dumps(doc), {**JSON, **(headers or {})})


@dataclass
class Fault:
    status: int
    body: bytes = b'{"code":-1003,"msg":"Too many requests."}'
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeExchange:
    """Trades of one stream (all of one instrument) served at `url` after `start()`."""

    stream: str
    inst: Instrument
    trades: list[TradeRow]
    faults: deque[Fault] = field(default_factory=deque)
    log: list[Request] = field(default_factory=list)
    fail_after: int | None = None  # answer every request after this many with `fail_with`
    fail_with: Fault | None = None
    server: LocalHttpServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    async def __aenter__(self) -> FakeExchange:
        self.server = LocalHttpServer(self._handle)
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.close()

    def _handle(self, request: Request) -> HttpResponse:
        self.log.append(request)
        if self.faults:
            fault = self.faults.popleft()
            return HttpResponse(fault.status, fault.body, {**JSON, **fault.headers})
        if self.fail_after is not None and len(self.log) > self.fail_after and self.fail_with is not None:
            return HttpResponse(self.fail_with.status, self.fail_with.body, JSON)
        route = ROUTES.get((self.stream, request.path))
        if route is None:
            return _json({"error": "not found"}, 404)
        return route(self, request)

    def ids(self) -> list[int]:
        return [int(t[8] or 0) for t in self.trades]


# -- Binance ----------------------------------------------------------------------------------


def _binance_error(code: int, msg: str) -> HttpResponse:
    return _json({"code": code, "msg": msg}, 400)


def _binance_symbol(ex: FakeExchange, q: dict[str, str]) -> HttpResponse | None:
    if q.get("symbol") != ex.inst.symbol:
        return _binance_error(-1121, "Invalid symbol.")
    return None


def _binance_limit(q: dict[str, str]) -> int:
    return min(int(q.get("limit", "500")), 1000)


def _binance_historical(ex: FakeExchange, r: Request) -> HttpResponse:
    q = r.query
    if (bad := _binance_symbol(ex, q)) is not None:
        return bad
    micro = r.headers.get("x-mbx-time-unit", "").upper() == "MICROSECOND"
    from_id = int(q["fromId"])
    out = []
    for t in ex.trades:
        if int(t[8] or 0) >= from_id:
            out.append(
                {
                    "id": int(t[8] or 0),
                    "price": decimal_str(t[5]),
                    "qty": decimal_str(t[6]),
                    "quoteQty": decimal_str(t[5] * t[6]),
                    "time": t[0] if micro else t[0] // 1000,
                    "isBuyerMaker": t[7] == "sell",
                    "isBestMatch": True,
                }
            )
            if len(out) == _binance_limit(q):
                break
    return _json(out)


AGG_OFFSET = 7_000_000  # spot aggregate ids are not trade ids


def _binance_agg(ex: FakeExchange, r: Request) -> HttpResponse:
    """Spot: one aggregate per trade, ``a`` = id + AGG_OFFSET, ``f`` = ``l`` = the trade id.
    Futures: the rows are the aggregates (``a`` = the row id)."""
    q = r.query
    if (bad := _binance_symbol(ex, q)) is not None:
        return bad
    futures = ex.stream == "binance_futures"
    has_time = "startTime" in q or "endTime" in q
    if has_time and "fromId" in q:
        return _binance_error(-1128, "Combination of optional parameters invalid.")
    micro = r.headers.get("x-mbx-time-unit", "").upper() == "MICROSECOND"
    selected = []
    if has_time:
        start_ms, end_ms = int(q["startTime"]), int(q["endTime"])
        if end_ms - start_ms >= 3_600_000:
            return _binance_error(-1127, "More than 1 hours between startTime and endTime.")
        selected = [t for t in ex.trades if start_ms <= t[0] // 1000 <= end_ms]
    else:
        from_id = int(q.get("fromId", "0"))
        selected = [t for t in ex.trades if _agg_id(t, futures) >= from_id]
    out = []
    for t in selected[: _binance_limit(q)]:
        tid = int(t[8] or 0)
        item: dict[str, Any] = {
            "a": _agg_id(t, futures),
            "p": decimal_str(t[5]),
            "q": decimal_str(t[6]),
            "f": tid,
            "l": tid,
            "T": t[0] if micro else t[0] // 1000,
            "m": t[7] == "sell",
        }
        if not futures:
            item["M"] = True
        out.append(item)
    return _json(out)


def _agg_id(t: TradeRow, futures: bool) -> int:
    return int(t[8] or 0) + (0 if futures else AGG_OFFSET)


# -- OKX --------------------------------------------------------------------------------------


def _okx_contracts(qty: float, inst: Instrument) -> str:
    if inst.multiplier == 1.0:
        return decimal_str(qty)
    return decimal_str(float(f"{qty / inst.multiplier:.12g}"))


def _okx_history(ex: FakeExchange, r: Request) -> HttpResponse:
    q = r.query
    if q.get("instId") != ex.inst.symbol:
        return _json({"code": "51001", "msg": "Instrument ID does not exist", "data": []})
    limit = int(q.get("limit", "100"))
    if limit > 100:
        return _json({"code": "51000", "msg": "Parameter limit error", "data": []}, 400)
    kind = q.get("type", "1")
    after = int(q["after"]) if "after" in q else None
    if kind == "1":
        older = [t for t in ex.trades if after is None or int(t[8] or 0) < after]
    else:
        older = [t for t in ex.trades if after is None or t[0] // 1000 < after]
    page = list(reversed(older))[:limit]
    data = [
        {
            "instId": ex.inst.symbol,
            "side": t[7],
            "sz": _okx_contracts(t[6], ex.inst),
            "px": decimal_str(t[5]),
            "source": "0",
            "tradeId": t[8],
            "ts": str(t[0] // 1000),
        }
        for t in page
    ]
    return _json({"code": "0", "msg": "", "data": data})


# -- Gate -------------------------------------------------------------------------------------


def _gate_window(ex: FakeExchange, q: dict[str, str]) -> list[TradeRow]:
    lo, hi = int(q["from"]), int(q["to"])
    return [t for t in reversed(ex.trades) if lo <= t[0] // 1_000_000 <= hi]


def _gate_spot(ex: FakeExchange, r: Request) -> HttpResponse:
    q = r.query
    if q.get("currency_pair") != ex.inst.symbol:
        return _json(
            {"label": "INVALID_CURRENCY_PAIR", "message": f"Invalid currency pair {q.get('currency_pair')}"},
            400,
        )
    limit, page = int(q.get("limit", "100")), int(q.get("page", "1"))
    if limit > 1000 or limit * (page - 1) > 100_000:
        return _json({"label": "INVALID_PARAM_VALUE", "message": "page out of range"}, 400)
    rows = _gate_window(ex, q)[limit * (page - 1) : limit * page]
    return _json(
        [
            {
                "id": t[8],
                "create_time": str(t[0] // 1_000_000),
                "create_time_ms": us_to_ms_text(t[0]),
                "currency_pair": ex.inst.symbol,
                "side": t[7],
                "amount": num_text(t[6]),
                "price": num_text(t[5]),
                "sequence_id": t[8],
            }
            for t in rows
        ]
    )


def _gate_futures(ex: FakeExchange, r: Request) -> HttpResponse:
    q = r.query
    if q.get("contract") != ex.inst.symbol:
        return _json({"label": "CONTRACT_NOT_FOUND", "message": "Contract not found"}, 400)
    decimal = r.headers.get("x-gate-size-decimal") == "1"
    limit, offset = int(q.get("limit", "100")), int(q.get("offset", "0"))
    rows = _gate_window(ex, q)[offset : offset + limit]
    out = []
    for t in rows:
        size = gate_contracts(t[6], ex.inst.multiplier)
        signed = size if t[7] == "buy" else -size
        out.append(
            {
                "id": int(t[8] or 0),
                "create_time": (t[0] // 1000) / 1000,
                "create_time_ms": t[0] // 1000,
                "contract": ex.inst.symbol,
                "size": num_text(signed) if decimal else int(signed),
                "price": num_text(t[5]),
            }
        )
    return _json(out)


# -- latest-only ------------------------------------------------------------------------------


def _bybit_recent(ex: FakeExchange, r: Request) -> HttpResponse:
    q = r.query
    cap = 1000 if q.get("category") == "linear" else 60
    if q.get("symbol") != ex.inst.symbol:
        return _json({"retCode": 10001, "retMsg": "Not supported symbols", "result": {}, "time": 0})
    limit = min(int(q.get("limit", "60" if cap == 60 else "500")), cap)
    items = [
        {
            "execId": t[8],
            "symbol": ex.inst.symbol,
            "price": decimal_str(t[5]),
            "size": decimal_str(t[6]),
            "side": "Buy" if t[7] == "buy" else "Sell",
            "time": str(t[0] // 1000),
            "isBlockTrade": False,
            "isRPITrade": False,
        }
        for t in list(reversed(ex.trades))[:limit]
    ]
    return _json(
        {"retCode": 0, "retMsg": "OK", "result": {"category": q.get("category"), "list": items}, "time": 0}
    )


def _kucoin(ex: FakeExchange, r: Request) -> HttpResponse:
    if r.query.get("symbol") != ex.inst.symbol:
        return _json({"code": "400100", "msg": "This pair is not provided at present"})
    futures = ex.stream == "kucoin_futures"
    data = []
    for t in list(reversed(ex.trades))[:100]:
        if futures:
            data.append(
                {
                    "sequence": int(t[8] or 0),
                    "contractId": 1,
                    "tradeId": t[8],
                    "makerOrderId": "1",
                    "takerOrderId": "2",
                    "ts": t[0] * 1000,
                    "size": kucoin_contracts(t[6], ex.inst.multiplier),
                    "price": num_text(t[5]),
                    "side": t[7],
                }
            )
        else:
            data.append(
                {
                    "sequence": t[8],
                    "price": num_text(t[5]),
                    "size": num_text(t[6]),
                    "side": t[7],
                    "time": t[0] * 1000,
                }
            )
    return _json({"code": "200000", "data": data})


def _phemex(ex: FakeExchange, r: Request) -> HttpResponse:
    if r.query.get("symbol") != ex.inst.symbol:
        return _json({"error": {"code": 6001, "message": "invalid argument"}, "id": 0, "result": None})
    futures = ex.stream == "phemex_futures"
    rows: list[list[Any]] = []
    for t in list(reversed(ex.trades))[:200]:
        side = "Buy" if t[7] == "buy" else "Sell"
        if futures:
            rows.append([t[0] * 1000, side, num_text(t[5]), num_text(t[6])])
        else:
            p_scale, q_scale = 10**ex.inst.price_scale, 10**ex.inst.qty_scale
            rows.append([t[0] * 1000, side, round(t[5] * p_scale), round(t[6] * q_scale)])
    key = "trades_p" if futures else "trades"
    return _json(
        {
            "error": None,
            "id": 0,
            "result": {"sequence": 1, "symbol": ex.inst.symbol, key: rows, "type": "snapshot"},
        }
    )


ROUTES: dict[tuple[str, str], Callable[[FakeExchange, Request], HttpResponse]] = {
    ("binance_spot", "/api/v3/historicalTrades"): _binance_historical,
    ("binance_spot", "/api/v3/aggTrades"): _binance_agg,
    ("binance_futures", "/fapi/v1/aggTrades"): _binance_agg,
    ("okx_spot", "/api/v5/market/history-trades"): _okx_history,
    ("okx_futures", "/api/v5/market/history-trades"): _okx_history,
    ("gate_spot", "/api/v4/spot/trades"): _gate_spot,
    ("gate_futures", "/api/v4/futures/usdt/trades"): _gate_futures,
    ("bybit_spot", "/v5/market/recent-trade"): _bybit_recent,
    ("bybit_futures", "/v5/market/recent-trade"): _bybit_recent,
    ("kucoin_spot", "/api/v1/market/histories"): _kucoin,
    ("kucoin_futures", "/api/v1/trade/history"): _kucoin,
    ("phemex_spot", "/md/trade"): _phemex,
    ("phemex_futures", "/md/v2/trade"): _phemex,
}


def make_trades(
    inst: Instrument,
    count: int,
    *,
    start_us: int,
    first_id: int = 1000,
    step_us: Sequence[int] = (0, 1000, 2000, 3000),
    micro: bool = False,
    seed: int = 7,
) -> list[TradeRow]:
    """`count` trades of `inst`, oldest first, ids counting up from `first_id`; times step by
    one of `step_us` (0 gives same-time ties), plus sub-ms µs when `micro`. Prices and sizes
    are chosen so every venue's wire form is exact (whole contracts, Phemex 1e-8 steps)."""
    import random

    rnd = random.Random(seed)
    rows: list[TradeRow] = []
    t = start_us
    for i in range(count):
        t += rnd.choice(step_us)
        time_us = t + (rnd.randrange(1000) if micro else 0)
        time_us = max(time_us, rows[-1][0] if rows else time_us)
        price = round(1.0 + rnd.randrange(1, 5000) / 1000, 3)
        qty = rnd.randrange(1, 500) * (inst.multiplier if inst.multiplier != 1.0 else 0.01)
        side = "buy" if rnd.random() < 0.5 else "sell"
        rows.append((time_us, 0, inst.symbol, inst.base, inst.quote, price, qty, side, str(first_id + i)))
    return rows
