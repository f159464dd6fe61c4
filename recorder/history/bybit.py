"""Bybit v5 spot and linear trade history (latest only).

https://bybit-exchange.github.io/docs/v5/market/recent-trade

``GET /v5/market/recent-trade?category=spot|linear&symbol&limit`` returns the most recent
trades only — spot at most 60, linear at most 1000 — with no time or id paging; older trades
exist only in Bybit's daily archive files. A gap is repaired only when the answer reaches back
past its start. ``execId`` is the id the live ``publicTrade`` push calls ``i`` (numeric strings
on spot, UUIDs on linear: not contiguous). Rate: 600 requests per 5 s per IP; over it Bybit
answers HTTP 403 "access too frequent" and blocks the IP for about 10 minutes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from pumpwatch.errors import ParseError
from pumpwatch.recorder.adapter import HttpRequest, Instrument
from pumpwatch.recorder.adapters.bybit import Trade, trade_rows
from pumpwatch.recorder.adapters.checks import CapitalSide
from pumpwatch.recorder.history.rest import decode_answer, rest_rows
from pumpwatch.recorder.history.spec import HistoryError, HistoryPage, HistorySpec, RateRule
from pumpwatch.timeunits import US_PER_MS

DOC_URL = "https://bybit-exchange.github.io/docs/v5/market/recent-trade"
PATH = "/v5/market/recent-trade"
RATE = RateRule(
    key="bybit",
    weight_per_window=600,
    window_s=5.0,
    reserve=0.5,
    ban_statuses=(403,),
    doc_url="https://bybit-exchange.github.io/docs/v5/rate-limit",
)


class RecentTrade(msgspec.Struct, kw_only=True, gc=False):
    """A recent-trade row: the ``publicTrade`` fields under their long names, time a ms string."""

    trade_id: str | int = msgspec.field(name="execId")  # = WS ``i``
    symbol: str
    price: str | float
    size: str | float  # base coin, also for linear
    side: CapitalSide  # the taker's
    time: str  # ms, "1672052955758"
    block: bool = msgspec.field(name="isBlockTrade", default=False)  # = WS ``BT``


class _Result(msgspec.Struct, gc=False):
    trades: list[RecentTrade] = msgspec.field(name="list", default_factory=list)


class _Answer(msgspec.Struct, gc=False):
    retCode: int
    retMsg: str = ""
    result: _Result | None = None


_decode_answer = msgspec.json.Decoder(_Answer).decode


def _error(doc: Any) -> str | None:
    """``{"retCode":10001,"retMsg":"Not supported symbols","result":{},...}``: any retCode but 0."""
    if type(doc) is dict and doc.get("retCode", 0) != 0:
        return f"bybit {doc['retCode']}: {doc.get('retMsg', '')}"
    return None


def _as_trade(row: RecentTrade) -> tuple[Trade, int]:
    """A REST row as the adapter's push struct (the ms string as an int), with its time in µs."""
    if not (row.time.isascii() and row.time.isdigit()):
        raise ParseError(f"bybit: bad time {row.time!r:.40}")
    time_ms = int(row.time)
    trade = Trade(
        time=time_ms,
        symbol=row.symbol,
        side=row.side,
        qty=row.size,
        price=row.price,
        trade_id=row.trade_id,
        block=row.block,
    )
    return trade, time_ms * US_PER_MS


def parse_recent_trades(body: bytes, recv_us: int, inst: Instrument) -> HistoryPage:
    """A recent-trade answer, block trades included (the live default)."""
    return _parse(body, recv_us, inst, drop_block_trades=False)


def parse_recent_trades_without_block_trades(body: bytes, recv_us: int, inst: Instrument) -> HistoryPage:
    """A recent-trade answer without block trades (live option ``drop_block_trades: true``)."""
    return _parse(body, recv_us, inst, drop_block_trades=True)


def _parse(body: bytes, recv_us: int, inst: Instrument, *, drop_block_trades: bool) -> HistoryPage:
    """A recent-trade answer (newest first on the wire)::

    {"retCode":0,"retMsg":"OK","result":{"category":"spot","list":[{"execId":"2100000000007764263",
     "symbol":"BTCUSDT","price":"16618.49","size":"0.00012","side":"Buy","time":"1672052955758",
     "isBlockTrade":false,"isRPITrade":false}]},"retExtInfo":{},"time":1672053054358}
    """
    answer = decode_answer(_decode_answer, body, _error, "bybit")
    if answer.retCode != 0:
        raise HistoryError(f"bybit {answer.retCode}: {answer.retMsg}")
    if answer.result is None:
        raise ParseError("bybit: recent-trade answer without result")
    rows = rest_rows(
        lambda trades, ref_us: trade_rows(list(trades), inst, ref_us, drop_block_trades),
        (_as_trade(item) for item in reversed(answer.result.trades)),  # oldest first, ties in exchange order
        recv_us,
    )
    rows.sort(key=lambda row: row[0])
    return HistoryPage(rows, n_raw=len(answer.result.trades))


def spec(market: str, rest_url: str, options: Mapping[str, Any]) -> HistorySpec | None:
    """The history of ``bybit_<market>`` at `rest_url` (``https://api.bybit.com``); block
    trades are dropped when the live stream drops them (``drop_block_trades``)."""
    if market not in ("spot", "futures"):
        raise ValueError(f"bybit has no market {market!r}")
    category = "linear" if market == "futures" else "spot"
    url = rest_url.rstrip("/") + PATH
    return HistorySpec(
        stream=f"bybit_{market}",
        kind="latest",
        via=PATH,
        doc_url=DOC_URL,
        limit=1000 if market == "futures" else 60,
        reach_us=None,
        weight=1,
        rate=RATE,
        parse=parse_recent_trades_without_block_trades
        if options.get("drop_block_trades")
        else parse_recent_trades,
        request_latest=lambda sym, limit: HttpRequest(
            "GET", f"{url}?category={category}&symbol={sym}&limit={limit}"
        ),
        short_is_complete=True,  # fewer than `limit` trades: that is every trade there is
    )
