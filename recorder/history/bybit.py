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

import orjson

from pumpwatch.errors import ParseError
from pumpwatch.recorder.adapter import HttpRequest, Instrument
from pumpwatch.recorder.adapters.checks import positive
from pumpwatch.recorder.history.spec import HistoryError, HistoryPage, HistorySpec, RateRule
from pumpwatch.segments.schema import TradeRow
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
_SIDES = {"Buy": "buy", "Sell": "sell"}


def trade_row(
    exec_id: str, price: str, size: str, side: str, time_ms: int, inst: Instrument, recv_us: int
) -> TradeRow:
    """One Bybit trade -> TradeRow as the live decoder maps it (``S``/``side`` is the taker side,
    size in base coin on both categories, time ms → µs, id as sent)."""
    if type(exec_id) is not str or type(side) is not str or side not in _SIDES or type(time_ms) is not int:
        raise ParseError(f"bybit: bad trade fields {exec_id!r} {side!r} {time_ms!r}")
    px, qty = positive(price, "price"), positive(size, "size")
    return (time_ms * US_PER_MS, recv_us, inst.symbol, inst.base, inst.quote, px, qty, _SIDES[side], exec_id)


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
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ParseError("bybit: history answer is not JSON") from None
    if type(doc) is not dict:
        raise ParseError("bybit: history answer is not an object")
    if doc.get("retCode") != 0:
        # {"retCode":10001,"retMsg":"Not supported symbols","result":{},...}
        raise HistoryError(f"bybit {doc.get('retCode')}: {doc.get('retMsg')}")
    rows = []
    try:
        items: list[Any] = doc["result"]["list"]
        for item in items:
            if item["symbol"] != inst.symbol:
                raise ParseError(f"bybit: trade of {item['symbol']!r} in an answer about {inst.symbol!r}")
            t = item["time"]
            if type(t) is not str or not t.isascii() or not t.isdigit():
                raise ParseError(f"bybit: bad time {t!r}")
            if drop_block_trades and item.get("isBlockTrade") is True:
                continue
            rows.append(
                trade_row(item["execId"], item["price"], item["size"], item["side"], int(t), inst, recv_us)
            )
    except (KeyError, TypeError) as exc:
        raise ParseError(f"bybit: malformed recent-trade answer ({exc!r})") from None
    rows.reverse()  # oldest first, ties in exchange order
    rows.sort(key=lambda row: row[0])
    return HistoryPage(rows)


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
