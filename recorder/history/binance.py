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

import msgspec

from pumpwatch.errors import ParseError
from pumpwatch.recorder.adapter import HttpRequest, Instrument
from pumpwatch.recorder.adapters.binance import Trade, trade_rows
from pumpwatch.recorder.history.rest import decode_answer, rest_rows
from pumpwatch.recorder.history.spec import HistoryPage, HistorySpec, RateRule
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


class HistoricalTrade(msgspec.Struct, kw_only=True, gc=False):
    """One ``historicalTrades`` row: the WS ``@trade`` fields under other names."""

    trade_id: int = msgspec.field(name="id")  # = WS ``t``
    price: str | float
    qty: str | float
    time: int  # µs with X-MBX-TIME-UNIT: MICROSECOND, else ms
    buyer_maker: bool = msgspec.field(name="isBuyerMaker")  # = WS ``m``


class _AggIds(msgspec.Struct, gc=False):
    """The ids of an ``aggTrades`` row, for locating: ``a`` aggregate id, ``f`` first trade id."""

    a: int
    f: int


_decode_historical = msgspec.json.Decoder(list[HistoricalTrade]).decode
# aggTrades rows carry the WS ``@aggTrade`` names (a, p, q, f, l, T, m): the adapter's own struct.
_decode_agg = msgspec.json.Decoder(list[Trade]).decode
_decode_agg_ids = msgspec.json.Decoder(list[_AggIds]).decode


def _error(doc: Any) -> str | None:
    """``{"code":-1121,"msg":"Invalid symbol."}``"""
    return f"binance {doc.get('code')}: {doc.get('msg')}" if type(doc) is dict and "code" in doc else None


def _answer(decode: Callable[[bytes], list[Any]], body: bytes) -> list[Any]:
    return decode_answer(decode, body, _error, "binance")


def _as_trade(row: HistoricalTrade) -> Trade:
    """A ``historicalTrades`` row as the adapter's ``@trade`` struct (``isBuyerMaker`` -> ``m``)."""
    return Trade(
        price=row.price,
        qty=row.qty,
        time=row.time,
        buyer_maker=row.buyer_maker,
        trade_id=row.trade_id,
        event="trade",
    )


def parse_historical_trades(
    body: bytes, recv_us: int, inst: Instrument, *, micro: bool = True
) -> HistoryPage:
    """A ``/api/v3/historicalTrades`` answer (times in µs when asked with the header, else ms)::

    [{"id":28457,"price":"4.00000100","qty":"12.00000000","quoteQty":"48.000012",
      "time":1499865549590123,"isBuyerMaker":true,"isBestMatch":true}]
    """
    items = _answer(_decode_historical, body)
    unit_us = 1 if micro else US_PER_MS
    rows = rest_rows(
        lambda trades, ref_us: trade_rows(trades, inst, ref_us),
        ((_as_trade(item), item.time * unit_us) for item in items),
        recv_us,
    )
    return HistoryPage(rows, [int(row[8] or 0) for row in rows], n_raw=len(items))


def parse_historical_trades_ms(body: bytes, recv_us: int, inst: Instrument) -> HistoryPage:
    """A ``/api/v3/historicalTrades`` answer without the µs header (times in ms), for a live
    stream configured with ``time_unit: MILLISECOND``."""
    return parse_historical_trades(body, recv_us, inst, micro=False)


def parse_agg_trades(body: bytes, recv_us: int, inst: Instrument) -> HistoryPage:
    """A ``/fapi/v1/aggTrades`` answer (times in ms; the id is the aggregate id ``a``)::

    [{"a":26129,"p":"0.01633102","q":"4.70443515","f":27781,"l":27781,"T":1498793709153,"m":true}]
    """
    items: list[Trade] = _answer(_decode_agg, body)
    for item in items:
        if item.agg_id is None:
            raise ParseError("binance: aggTrade without its id a")
    rows = rest_rows(
        lambda trades, ref_us: trade_rows(trades, inst, ref_us),
        ((item, item.time * US_PER_MS) for item in items),
        recv_us,
    )
    return HistoryPage(rows, [int(row[8] or 0) for row in rows], n_raw=len(items))


def _first_id(key: str) -> Callable[[bytes], int | None]:
    """Locating: the `key` id (``f`` first trade id / ``a`` aggregate id) of the oldest aggTrade."""

    def parse_locate(body: bytes) -> int | None:
        items: list[_AggIds] = _answer(_decode_agg_ids, body)
        return getattr(items[0], key) if items else None

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
