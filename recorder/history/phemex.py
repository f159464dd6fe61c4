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

import msgspec

from pumpwatch.errors import ParseError
from pumpwatch.recorder.adapter import HttpRequest, Instrument
from pumpwatch.recorder.adapters.checks import loads
from pumpwatch.recorder.adapters.phemex import PerpTrade, SpotTrade, perp_trade_rows, spot_trade_rows
from pumpwatch.recorder.history.normalize import rest_rows
from pumpwatch.recorder.history.spec import HistoryError, HistoryPage, HistorySpec, RateRule

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
NS_PER_US = 1000


# The rows are the push's rows: ``[ts_ns, side, priceEp, value]`` (spot, the adapter's
# `SpotTrade`) and ``[ts_ns, side, "priceRp", "qtyRq"]`` (perpetual, `PerpTrade`).
class _SpotResult(msgspec.Struct, gc=False):
    trades: list[SpotTrade]
    symbol: str | None = None


class _PerpResult(msgspec.Struct, gc=False):
    trades_p: list[PerpTrade]
    symbol: str | None = None


class _SpotAnswer(msgspec.Struct, gc=False):
    result: _SpotResult
    error: None = None


class _PerpAnswer(msgspec.Struct, gc=False):
    result: _PerpResult
    error: None = None


_decode_spot = msgspec.json.Decoder(_SpotAnswer).decode
_decode_perp = msgspec.json.Decoder(_PerpAnswer).decode


def _error(body: bytes, exc: msgspec.DecodeError) -> Exception:
    """`HistoryError` for ``{"error":{"code":6001,"message":"invalid argument"},…}``, else ParseError."""
    doc = loads(body)
    if type(doc) is dict and doc.get("error") is not None:
        return HistoryError(f"phemex: {doc['error']}")
    return ParseError(f"phemex: malformed history answer ({exc})")


def _check_symbol(symbol: str | None, inst: Instrument) -> None:
    if symbol is not None and symbol != inst.symbol:
        raise ParseError(f"phemex: answer about {symbol!r:.40}, asked {inst.symbol!r}")


def parse_spot_trades(body: bytes, recv_us: int, inst: Instrument) -> HistoryPage:
    """``{"error":null,"id":0,"result":{"sequence":15934323,"symbol":"sBTCUSDT",
    "trades":[[1579164056368538508,"Sell",869600000000,1210000]],"type":"snapshot"}}``"""
    try:
        result = _decode_spot(body).result
    except msgspec.DecodeError as exc:
        raise _error(body, exc) from None
    _check_symbol(result.symbol, inst)
    rows = rest_rows(
        lambda trades, ref_us: spot_trade_rows(list(trades), inst, ref_us, False),
        ((trade, trade[0] // NS_PER_US) for trade in reversed(result.trades)),  # newest first on the wire
        recv_us,
    )
    rows.sort(key=lambda row: row[0])
    return HistoryPage(rows)


def parse_perp_trades(body: bytes, recv_us: int, inst: Instrument) -> HistoryPage:
    """``{"error":null,"id":0,"result":{"sequence":77702250,"symbol":"BTCUSDT",
    "trades_p":[[1666856076819029800,"Sell","20700.3","0.649"]],"type":"snapshot"}}``"""
    try:
        result = _decode_perp(body).result
    except msgspec.DecodeError as exc:
        raise _error(body, exc) from None
    _check_symbol(result.symbol, inst)
    rows = rest_rows(
        lambda trades, ref_us: perp_trade_rows(list(trades), inst, ref_us, False),
        ((trade, trade[0] // NS_PER_US) for trade in reversed(result.trades_p)),
        recv_us,
    )
    rows.sort(key=lambda row: row[0])
    return HistoryPage(rows)


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
