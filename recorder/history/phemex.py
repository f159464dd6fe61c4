"""Phemex spot and USDT-perpetual trade history (latest only, no ids).

Spot:      https://github.com/phemex/phemex-api-docs/blob/master/Public-Spot-API-en.md#query-recent-trades
           ``GET /md/trade?symbol=sBTCUSDT`` -> ``result.trades`` rows
           ``[ts_ns, "Buy"|"Sell", priceEp, qty]`` (scaled integers)
Perpetual: https://github.com/phemex/phemex-api-docs/blob/master/Public-Hedged-Perpetual-API.md#query-trade
           ``GET /md/v2/trade?symbol=BTCUSDT`` -> ``result.trades_p`` rows
           ``[ts_ns, "Buy"|"Sell", "priceRp", "qtyRq"]``

Recent trades only (the same ~200 the WebSocket replays after a subscribe), newest first, no
paging and no trade id: the store de-duplicates these rows by value. The count is not
documented, so a short answer is not taken to be everything. Rate: public market data is in
the "Others" group, 100 requests per minute; HTTP 429 beyond.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from pumpwatch.errors import ParseError
from pumpwatch.recorder.adapter import HttpRequest, Instrument
from pumpwatch.recorder.adapters.checks import positive
from pumpwatch.recorder.history.spec import HistoryError, HistoryPage, HistorySpec, RateRule
from pumpwatch.segments.schema import TradeRow

SPOT_DOC = "https://github.com/phemex/phemex-api-docs/blob/master/Public-Spot-API-en.md#query-recent-trades"
FUTURES_DOC = (
    "https://github.com/phemex/phemex-api-docs/blob/master/Public-Hedged-Perpetual-API.md#query-trade"
)
RATE = RateRule(
    key="phemex",
    weight_per_window=100,
    window_s=60.0,
    reserve=0.5,
    ban_statuses=(),
    doc_url="https://github.com/phemex/phemex-api-docs/blob/master/Generic-API-Info.en.md",
)
_SIDES = {"Buy": "buy", "Sell": "sell"}


def spot_trade_row(
    ts_ns: int, side: str, price_ep: int, qty_ev: int, inst: Instrument, recv_us: int
) -> TradeRow:
    """One Phemex spot trade -> TradeRow as the live decoder maps it: scaled integers divided
    by the instrument's 10**price_scale and 10**qty_scale, ns → µs, no id."""
    if (
        type(ts_ns) is not int
        or type(price_ep) is not int
        or type(qty_ev) is not int
        or type(side) is not str
        or side not in _SIDES
    ):
        raise ParseError(f"phemex: bad spot trade {[ts_ns, side, price_ep, qty_ev]!r:.120}")
    if price_ep <= 0 or qty_ev <= 0:
        raise ParseError(f"phemex: bad spot price/qty {price_ep!r} {qty_ev!r}")
    price = price_ep / 10**inst.price_scale
    qty = qty_ev / 10**inst.qty_scale
    return (ts_ns // 1000, recv_us, inst.symbol, inst.base, inst.quote, price, qty, _SIDES[side], None)


def perp_trade_row(
    ts_ns: int, side: str, price_rp: str, qty_rq: str, inst: Instrument, recv_us: int
) -> TradeRow:
    """One Phemex USDT-perpetual trade -> TradeRow as the live decoder maps it (real values)."""
    if type(ts_ns) is not int or type(side) is not str or side not in _SIDES:
        raise ParseError(f"phemex: bad perpetual trade {[ts_ns, side, price_rp, qty_rq]!r:.120}")
    qty = positive(qty_rq, "qty") * inst.multiplier
    return (
        ts_ns // 1000,
        recv_us,
        inst.symbol,
        inst.base,
        inst.quote,
        positive(price_rp, "price"),
        qty,
        _SIDES[side],
        None,
    )


def _result(body: bytes, key: str, inst: Instrument) -> list[Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ParseError("phemex: history answer is not JSON") from None
    if type(doc) is not dict:
        raise ParseError("phemex: history answer is not an object")
    if doc.get("error") is not None:
        # {"error":{"code":6001,"message":"invalid argument"},"id":0,"result":null}
        raise HistoryError(f"phemex: {doc['error']}")
    result = doc.get("result")
    if type(result) is not dict or type(result.get(key)) is not list:
        raise ParseError(f"phemex: history answer without result.{key}")
    if result.get("symbol", inst.symbol) != inst.symbol:
        raise ParseError(f"phemex: answer about {result.get('symbol')!r}, asked {inst.symbol!r}")
    items = result[key]
    if not all(type(item) is list and len(item) == 4 for item in items):
        raise ParseError("phemex: a trade row is not [ts, side, price, qty]")
    return items


def _oldest_first(rows: list[TradeRow]) -> list[TradeRow]:
    rows.reverse()  # newest first on the wire, ties included
    rows.sort(key=lambda row: row[0])
    return rows


def parse_spot_trades(body: bytes, recv_us: int, inst: Instrument) -> HistoryPage:
    """``{"error":null,"id":0,"result":{"sequence":15934323,"symbol":"sBTCUSDT",
    "trades":[[1579164056368538508,"Sell",869600000000,1210000]],"type":"snapshot"}}``"""
    rows = [spot_trade_row(ts, side, p, q, inst, recv_us) for ts, side, p, q in _result(body, "trades", inst)]
    return HistoryPage(_oldest_first(rows))


def parse_perp_trades(body: bytes, recv_us: int, inst: Instrument) -> HistoryPage:
    """``{"error":null,"id":0,"result":{"sequence":77702250,"symbol":"BTCUSDT",
    "trades_p":[[1666856076819029800,"Sell","20700.3","0.649"]],"type":"snapshot"}}``"""
    rows = [
        perp_trade_row(ts, side, p, q, inst, recv_us) for ts, side, p, q in _result(body, "trades_p", inst)
    ]
    return HistoryPage(_oldest_first(rows))


def spec(market: str, rest_url: str, options: Mapping[str, Any]) -> HistorySpec | None:
    """The history of ``phemex_<market>`` at `rest_url` (``https://api.phemex.com``)."""
    if market not in ("spot", "futures"):
        raise ValueError(f"phemex has no market {market!r}")
    futures = market == "futures"
    path = "/md/v2/trade" if futures else "/md/trade"
    base = rest_url.rstrip("/")
    return HistorySpec(
        stream=f"phemex_{market}",
        kind="latest",
        via=path,
        doc_url=FUTURES_DOC if futures else SPOT_DOC,
        limit=200,
        reach_us=None,
        weight=1,
        rate=RATE,
        parse=parse_perp_trades if futures else parse_spot_trades,
        request_latest=lambda sym, _limit: HttpRequest("GET", f"{base}{path}?symbol={sym}"),
        short_is_complete=False,  # the answer's size is not documented
    )
