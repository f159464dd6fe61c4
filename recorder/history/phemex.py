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

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgspec

from pumpwatch.errors import ParseError
from pumpwatch.recorder.adapter import HttpRequest, Instrument
from pumpwatch.recorder.adapters.phemex import PerpTrade, SpotTrade, perp_trade_rows, spot_trade_rows
from pumpwatch.recorder.history.rest import decode_answer, rest_rows
from pumpwatch.recorder.history.spec import HistoryPage, HistorySpec, RateRule
from pumpwatch.segments.schema import TradeRow
from pumpwatch.timeunits import NS_PER_US

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


class _Result(msgspec.Struct, gc=False):
    """The rows are the push's: ``[ts_ns, side, priceEp, value]`` (spot, the adapter's
    `SpotTrade`) or ``[ts_ns, side, "priceRp", "qtyRq"]`` (perpetual, `PerpTrade`)."""

    symbol: str | None = None
    trades: list[SpotTrade] | None = None
    trades_p: list[PerpTrade] | None = None


class _Answer(msgspec.Struct, gc=False):
    result: _Result
    error: None = None


_decode_answer = msgspec.json.Decoder(_Answer).decode
Row = TypeVar("Row", SpotTrade, PerpTrade)


def _error(doc: Any) -> str | None:
    """``{"error":{"code":6001,"message":"invalid argument"},"id":0,"result":null}``"""
    return f"phemex: {doc['error']}" if type(doc) is dict and doc.get("error") is not None else None


def _page(
    trades: list[Row] | None,
    normalize: Callable[[list[Row], Instrument, int, bool], list[TradeRow]],
    symbol: str | None,
    recv_us: int,
    inst: Instrument,
) -> HistoryPage:
    if trades is None:
        raise ParseError("phemex: history answer without its trades")
    if symbol is not None and symbol != inst.symbol:
        raise ParseError(f"phemex: answer about {symbol!r:.40}, asked {inst.symbol!r}")
    rows = rest_rows(
        lambda one, ref_us: normalize(list(one), inst, ref_us, False),
        ((trade, trade[0] // NS_PER_US) for trade in reversed(trades)),  # newest first on the wire
        recv_us,
    )
    rows.sort(key=lambda row: row[0])
    return HistoryPage(rows, n_raw=len(trades))


def parse_spot_trades(body: bytes, recv_us: int, inst: Instrument) -> HistoryPage:
    """``{"error":null,"id":0,"result":{"sequence":15934323,"symbol":"sBTCUSDT",
    "trades":[[1579164056368538508,"Sell",869600000000,1210000]],"type":"snapshot"}}``"""
    result = decode_answer(_decode_answer, body, _error, "phemex").result
    return _page(result.trades, spot_trade_rows, result.symbol, recv_us, inst)


def parse_perp_trades(body: bytes, recv_us: int, inst: Instrument) -> HistoryPage:
    """``{"error":null,"id":0,"result":{"sequence":77702250,"symbol":"BTCUSDT",
    "trades_p":[[1666856076819029800,"Sell","20700.3","0.649"]],"type":"snapshot"}}``"""
    result = decode_answer(_decode_answer, body, _error, "phemex").result
    return _page(result.trades_p, perp_trade_rows, result.symbol, recv_us, inst)


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
        live_replays=True,  # every subscribe is followed by a snapshot of the recent trades
    )
