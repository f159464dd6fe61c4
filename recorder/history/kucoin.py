"""KuCoin spot and USDT-futures trade history (latest 100 only).

Spot:    https://www.kucoin.com/docs-new/rest/spot-trading/market-data/get-trade-history
         ``GET /api/v1/market/histories?symbol`` — the last 100 trades, weight 3 (public pool).
Futures: https://www.kucoin.com/docs-new/rest/futures-trading/market-data/get-trade-history
         ``GET /api/v1/trade/history?symbol`` — the last 100 trades, weight 5 (public pool).

No time or id paging. Times are ns; futures ``size`` is lots × the contract ``multiplier``.
The spot answer carries no ``tradeId``: its ``sequence`` is used, which equals the live push's
``tradeId`` in current data (the documented push sample has ``tradeId == sequence``); older
hex ids would not match and such rows are de-duplicated by the store only by value. Rate: the
public pool is 2,000 weight per 30 s per IP (spot and futures each); 429 beyond, code 429000.
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

SPOT_DOC = "https://www.kucoin.com/docs-new/rest/spot-trading/market-data/get-trade-history"
FUTURES_DOC = "https://www.kucoin.com/docs-new/rest/futures-trading/market-data/get-trade-history"
RATE = RateRule(
    key="kucoin",
    weight_per_window=2_000,
    window_s=30.0,
    reserve=0.5,
    ban_statuses=(),
    doc_url="https://www.kucoin.com/docs-new/rate-limit",
)
_SIDES = {"buy": "buy", "sell": "sell"}


def trade_row(
    trade_id: str, price: str, size: str | int, side: str, time_ns: int | str, inst: Instrument, recv_us: int
) -> TradeRow:
    """One KuCoin trade -> TradeRow as the live decoder maps it: ns → µs by integer division,
    qty = size × multiplier on futures (the multiplier is 1.0 on spot, so spot qty is size)."""
    if (
        type(trade_id) is not str
        or type(side) is not str
        or side not in _SIDES
        or type(time_ns) not in (int, str)
    ):
        raise ParseError(f"kucoin: bad trade fields {trade_id!r} {side!r} {time_ns!r}")
    try:
        time_us = int(time_ns) // 1000
    except ValueError:
        raise ParseError(f"kucoin: bad time {time_ns!r}") from None
    qty = positive(size, "size")
    if inst.multiplier != 1.0:
        qty = qty * inst.multiplier
    return (
        time_us,
        recv_us,
        inst.symbol,
        inst.base,
        inst.quote,
        positive(price, "price"),
        qty,
        _SIDES[side],
        trade_id,
    )


def _data(body: bytes) -> list[dict[str, Any]]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ParseError("kucoin: history answer is not JSON") from None
    if type(doc) is not dict:
        raise ParseError("kucoin: history answer is not an object")
    if doc.get("code") != "200000":
        # {"code":"400100","msg":"This pair is not provided at present"}
        raise HistoryError(f"kucoin {doc.get('code')}: {doc.get('msg')}")
    data = doc.get("data")
    if type(data) is not list or not all(type(item) is dict for item in data):
        raise ParseError("kucoin: history data is not a list of objects")
    return data


def _id_text(value: Any) -> str:
    """An id sent as a string or an integer, as a string."""
    if type(value) is str or type(value) is int:
        return str(value)
    raise ParseError(f"kucoin: bad id {value!r}")


def _sorted(rows: list[TradeRow]) -> list[TradeRow]:
    rows.sort(key=lambda row: row[0])
    return rows


def parse_spot_histories(body: bytes, recv_us: int, inst: Instrument) -> HistoryPage:
    """A spot histories answer::

    {"code":"200000","data":[{"sequence":"10976028003549185","price":"67122","size":"0.000025",
     "side":"buy","time":1729843222921000000}]}
    """
    try:
        rows = [
            trade_row(
                str(item["sequence"]), item["price"], item["size"], item["side"], item["time"], inst, recv_us
            )
            for item in _data(body)
        ]
    except KeyError as exc:
        raise ParseError(f"kucoin: spot trade without {exc}") from None
    return HistoryPage(_sorted(rows))


def parse_futures_history(body: bytes, recv_us: int, inst: Instrument) -> HistoryPage:
    """A futures trade/history answer (size in lots)::

    {"code":"200000","data":[{"sequence":1794100537695,"contractId":1,"tradeId":"1794100537695",
     "makerOrderId":"247822167163555840","takerOrderId":"247822202957807616",
     "ts":1731898619520000000,"size":2,"price":"90503.9","side":"buy"}]}
    """
    try:
        rows = [
            trade_row(
                str(item["tradeId"]), item["price"], item["size"], item["side"], item["ts"], inst, recv_us
            )
            for item in _data(body)
        ]
    except KeyError as exc:
        raise ParseError(f"kucoin: futures trade without {exc}") from None
    return HistoryPage(_sorted(rows))


def spec(market: str, rest_url: str, options: Mapping[str, Any]) -> HistorySpec | None:
    """The history of ``kucoin_<market>`` at `rest_url` (``https://api.kucoin.com`` or
    ``https://api-futures.kucoin.com``)."""
    base = rest_url.rstrip("/")
    if market not in ("spot", "futures"):
        raise ValueError(f"kucoin has no market {market!r}")
    futures = market == "futures"
    path = "/api/v1/trade/history" if futures else "/api/v1/market/histories"
    return HistorySpec(
        stream=f"kucoin_{market}",
        kind="latest",
        via=path,
        doc_url=FUTURES_DOC if futures else SPOT_DOC,
        limit=100,
        reach_us=None,
        weight=5 if futures else 3,
        rate=RATE,
        parse=parse_futures_history if futures else parse_spot_histories,
        request_latest=lambda sym, _limit: HttpRequest("GET", f"{base}{path}?symbol={sym}"),
        short_is_complete=True,  # "the last 100 trades": fewer is all there is
    )
