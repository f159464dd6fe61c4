"""Binance spot and USDⓈ-M futures trade history (by id).

Spot:    https://developers.binance.com/docs/binance-spot-api-docs/rest-api/market-data-endpoints
         (``GET /api/v3/historicalTrades``: "Old trade lookup", no API key since 2023-07;
         ``GET /api/v3/aggTrades``: "Compressed/Aggregate trades list")
Futures: https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Compressed-Aggregate-Trades-List

Spot pages ``historicalTrades`` by the trade id the live ``@trade`` stream calls ``t``, with the
header ``X-MBX-TIME-UNIT: MICROSECOND`` so times are µs like the live stream's
``timeUnit=MICROSECOND``; a gap known only by time is located with ``aggTrades``
(``startTime``/``endTime`` < 1 h, ``f`` = the first trade id). Futures pages ``aggTrades`` by the
aggregate id the live ``@aggTrade`` stream calls ``a`` (``fromId``), located by a < 1 h time
range (never both in one call: "might cause response timeout"); futures times are ms.
Rate: 2,400 request weight per minute on futures, 6,000 on spot, per IP; one budget for both
streams at the smaller figure. 429 carries ``Retry-After``; repeating it after a 429 earns an
IP ban answered with 418 (2 minutes up to 3 days).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from pumpwatch.errors import ParseError
from pumpwatch.recorder.adapter import HttpRequest, Instrument
from pumpwatch.recorder.adapters.checks import positive
from pumpwatch.recorder.history.spec import HistoryError, HistoryPage, HistorySpec, RateRule
from pumpwatch.segments.schema import TradeRow
from pumpwatch.timeunits import US_PER_DAY, US_PER_MINUTE, US_PER_MS

SPOT_DOC = "https://developers.binance.com/docs/binance-spot-api-docs/rest-api/market-data-endpoints"
FUTURES_DOC = (
    "https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/"
    "Compressed-Aggregate-Trades-List"
)
TIME_UNIT_HEADER = {"X-MBX-TIME-UNIT": "MICROSECOND"}
RATE = RateRule(
    key="binance",
    weight_per_window=2_400,
    window_s=60.0,
    reserve=0.5,
    ban_statuses=(418,),
    doc_url="https://developers.binance.com/docs/binance-spot-api-docs/rest-api/limits",
)
LOCATE_WINDOW_US = 59 * US_PER_MINUTE  # startTime..endTime must be less than one hour


def trade_row(
    trade_id: int, price: str, qty: str, time_us: int, buyer_maker: bool, inst: Instrument, recv_us: int
) -> TradeRow:
    """One Binance trade -> TradeRow, as the live decoder builds it (``m`` true: the taker sold).

    The live stream's per-trade mapping (``adapters/binance.py``) is the same: symbol, base and
    quote from the instrument, price and qty as floats, id as a string, time in µs.
    """
    if type(trade_id) is not int or type(buyer_maker) is not bool or type(time_us) is not int:
        raise ParseError(f"binance: bad trade fields {trade_id!r} {buyer_maker!r} {time_us!r}")
    side = "sell" if buyer_maker else "buy"
    return (
        time_us,
        recv_us,
        inst.symbol,
        inst.base,
        inst.quote,
        positive(price, "price"),
        positive(qty, "qty"),
        side,
        str(trade_id),
    )


def _items(body: bytes) -> list[Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ParseError("binance: history answer is not JSON") from None
    if type(doc) is dict and "code" in doc:
        # {"code":-1121,"msg":"Invalid symbol."}
        raise HistoryError(f"binance {doc.get('code')}: {doc.get('msg')}")
    if type(doc) is not list or not all(type(item) is dict for item in doc):
        raise ParseError("binance: history answer is not a list of objects")
    return doc


def parse_historical_trades(body: bytes, recv_us: int, inst: Instrument) -> HistoryPage:
    """A ``/api/v3/historicalTrades`` answer (times in µs by the request header)::

    [{"id":28457,"price":"4.00000100","qty":"12.00000000","quoteQty":"48.000012",
      "time":1499865549590123,"isBuyerMaker":true,"isBestMatch":true}]
    """
    rows, ids = [], []
    try:
        for item in _items(body):
            tid = item["id"]
            rows.append(
                trade_row(tid, item["price"], item["qty"], item["time"], item["isBuyerMaker"], inst, recv_us)
            )
            ids.append(tid)
    except KeyError as exc:
        raise ParseError(f"binance: history trade without {exc}") from None
    return HistoryPage(rows, ids)


def parse_historical_trades_ms(body: bytes, recv_us: int, inst: Instrument) -> HistoryPage:
    """A ``/api/v3/historicalTrades`` answer without the µs header (times in ms), for a live
    stream configured with ``time_unit: MILLISECOND``."""
    page = parse_historical_trades(body, recv_us, inst)
    return HistoryPage([(r[0] * US_PER_MS, *r[1:]) for r in page.rows], page.ids)


def parse_agg_trades(body: bytes, recv_us: int, inst: Instrument) -> HistoryPage:
    """A ``/fapi/v1/aggTrades`` answer (times in ms; the id is the aggregate id ``a``)::

    [{"a":26129,"p":"0.01633102","q":"4.70443515","f":27781,"l":27781,"T":1498793709153,"m":true}]
    """
    rows, ids = [], []
    try:
        for item in _items(body):
            t, aid = item["T"], item["a"]
            if type(t) is not int:
                raise ParseError(f"binance: bad T {t!r}")
            rows.append(trade_row(aid, item["p"], item["q"], t * US_PER_MS, item["m"], inst, recv_us))
            ids.append(aid)
    except KeyError as exc:
        raise ParseError(f"binance: aggTrade without {exc}") from None
    return HistoryPage(rows, ids)


def _first_id(key: str) -> Callable[[bytes], int | None]:
    """Locating: the `key` id (``f`` first trade id / ``a`` aggregate id) of the oldest aggTrade."""

    def parse_locate(body: bytes) -> int | None:
        items = _items(body)
        if not items:
            return None
        value = items[0].get(key)
        if type(value) is not int:
            raise ParseError(f"binance: aggTrade {key} is {value!r}")
        return value

    return parse_locate


def spec(market: str, rest_url: str, options: Mapping[str, Any]) -> HistorySpec | None:
    """The history of ``binance_<market>`` at `rest_url` (``https://api.binance.com``
    or ``https://fapi.binance.com``); None when the adapter `options` record a channel whose
    ids no history endpoint pages by (spot ``aggTrade``; futures ``trade``, whose by-id
    history needs an API key). Spot asks for µs times only when the live stream gets µs."""
    base = rest_url.rstrip("/")
    if market == "spot":
        if options.get("channel", "trade") != "trade":
            return None
        micro = str(options.get("time_unit", "MICROSECOND")).upper() == "MICROSECOND"
        headers = TIME_UNIT_HEADER if micro else {}
        return HistorySpec(
            stream="binance_spot",
            kind="by_id",
            via="/api/v3/historicalTrades",
            doc_url=SPOT_DOC,
            limit=1000,
            reach_us=None,  # the whole history
            weight=25,
            rate=RATE,
            parse=parse_historical_trades if micro else parse_historical_trades_ms,
            direction="forward",
            request_ids=lambda sym, from_id, limit: HttpRequest(
                "GET",
                f"{base}/api/v3/historicalTrades?symbol={sym}&fromId={from_id}&limit={limit}",
                headers,
            ),
            request_locate=lambda sym, start_us, end_us: HttpRequest(
                "GET",
                f"{base}/api/v3/aggTrades?symbol={sym}&startTime={start_us // US_PER_MS}"
                f"&endTime={end_us // US_PER_MS}&limit=1",
            ),
            parse_locate=_first_id("f"),
            locate_weight=4,
            locate_window_us=LOCATE_WINDOW_US,
            ids_contiguous=True,
        )
    if market == "futures":
        if options.get("channel", "aggTrade") != "aggTrade":
            return None
        return HistorySpec(
            stream="binance_futures",
            kind="by_id",
            via="/fapi/v1/aggTrades",
            doc_url=FUTURES_DOC,
            limit=1000,
            reach_us=365 * US_PER_DAY,  # "only trades of the last year"
            weight=20,
            rate=RATE,
            parse=parse_agg_trades,
            direction="forward",
            request_ids=lambda sym, from_id, limit: HttpRequest(
                "GET", f"{base}/fapi/v1/aggTrades?symbol={sym}&fromId={from_id}&limit={limit}"
            ),
            request_locate=lambda sym, start_us, end_us: HttpRequest(
                "GET",
                f"{base}/fapi/v1/aggTrades?symbol={sym}&startTime={start_us // US_PER_MS}"
                f"&endTime={end_us // US_PER_MS}&limit=1",
            ),
            parse_locate=_first_id("a"),
            locate_weight=20,
            locate_window_us=LOCATE_WINDOW_US,
            ids_contiguous=True,
        )
    raise ValueError(f"binance has no market {market!r}")
