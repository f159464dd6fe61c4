"""OKX spot and SWAP trade history (by tradeId, paging backwards).

https://www.okx.com/docs-v5/en/#order-book-trading-market-data-get-trades-history

``GET /api/v5/market/history-trades?instId&type=1&after=<tradeId>&limit=100`` returns up to 100
trades with ``tradeId`` below `after`, newest first, one record per fill with the same
``tradeId`` the live ``trades-all`` channel pushes (contiguous per instrument). ``type=2``
pages by ``ts`` instead (``after`` only): it locates the newest trade at or before a gap's end.
The last 3 months are served. Rate: 20 requests per 2 s per IP; over it, HTTP 429 with code
50011. SWAP ``sz`` is in contracts: base qty = sz × ctVal (the instrument's multiplier).
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
from pumpwatch.timeunits import US_PER_DAY, US_PER_MS

DOC_URL = "https://www.okx.com/docs-v5/en/#order-book-trading-market-data-get-trades-history"
PATH = "/api/v5/market/history-trades"
RATE = RateRule(
    key="okx",
    weight_per_window=20,
    window_s=2.0,
    reserve=0.5,
    ban_statuses=(),
    doc_url=DOC_URL,
)
_SIDES = {"buy": "buy", "sell": "sell"}


def trade_row(
    trade_id: str, px: str, sz: str, ts_ms: str, side: str, inst: Instrument, recv_us: int
) -> TradeRow:
    """One OKX trade -> TradeRow exactly as the live ``trades-all`` decoder maps it: price
    ``float(px)``, qty ``float(sz) × multiplier`` (1 on spot, ctVal on SWAP), time ms → µs."""
    if (
        not (str is type(trade_id) is type(px) is type(sz) is type(ts_ms))
        or type(side) is not str
        or side not in _SIDES
    ):
        raise ParseError(f"okx: bad trade fields {trade_id!r} {side!r}")
    positive(px, "px")
    positive(sz, "sz")
    try:
        time_us = int(ts_ms) * US_PER_MS
    except ValueError:
        raise ParseError(f"okx: bad ts {ts_ms!r}") from None
    return (
        time_us,
        recv_us,
        inst.symbol,
        inst.base,
        inst.quote,
        float(px),
        float(sz) * inst.multiplier,
        _SIDES[side],
        trade_id,
    )


def _data(body: bytes) -> list[Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ParseError("okx: history answer is not JSON") from None
    if type(doc) is not dict or type(doc.get("data")) is not list:
        raise ParseError("okx: history answer without a data list")
    if doc.get("code") != "0":
        # {"code":"51001","msg":"Instrument ID does not exist","data":[]}
        raise HistoryError(f"okx {doc.get('code')}: {doc.get('msg')}")
    if not all(type(item) is dict for item in doc["data"]):
        raise ParseError("okx: history data holds a non-object")
    return doc["data"]


def _trade_id(item: dict[str, Any]) -> int:
    tid = item.get("tradeId")
    if type(tid) is not str or not tid.isascii() or not tid.isdigit():
        raise ParseError(f"okx: tradeId {tid!r}")
    return int(tid)


def parse_history_trades(body: bytes, recv_us: int, inst: Instrument) -> HistoryPage:
    """A history-trades answer (newest first on the wire, oldest first here)::

    {"code":"0","msg":"","data":[{"instId":"BTC-USDT","side":"sell","sz":"0.00001",
     "px":"29963.2","source":"0","tradeId":"242720720","ts":"1654161646974"}]}
    """
    rows, ids = [], []
    try:
        for item in reversed(_data(body)):
            if item["instId"] != inst.symbol:
                raise ParseError(f"okx: trade of {item['instId']!r} in an answer about {inst.symbol!r}")
            tid = _trade_id(item)
            rows.append(
                trade_row(item["tradeId"], item["px"], item["sz"], item["ts"], item["side"], inst, recv_us)
            )
            ids.append(tid)
    except KeyError as exc:
        raise ParseError(f"okx: history trade without {exc}") from None
    return HistoryPage(rows, ids)


def parse_locate(body: bytes) -> int | None:
    """The newest tradeId of a ``type=2`` answer, or None when it is empty."""
    data = _data(body)
    return max(_trade_id(item) for item in data) if data else None


def spec(market: str, rest_url: str, options: Mapping[str, Any]) -> HistorySpec | None:
    """The history of ``okx_<market>`` at `rest_url` (``https://www.okx.com``); None when the
    live stream records the aggregated ``trades`` channel (one row per taker order, whose
    tradeId is the last fill's: per-fill REST rows would count its other fills twice)."""
    if market not in ("spot", "futures"):
        raise ValueError(f"okx has no market {market!r}")
    if options.get("channel", "trades-all") != "trades-all":
        return None
    url = rest_url.rstrip("/") + PATH
    return HistorySpec(
        stream=f"okx_{market}",
        kind="by_id",
        via=PATH,
        doc_url=DOC_URL,
        limit=100,
        reach_us=90 * US_PER_DAY,  # "the last 3 months"
        weight=1,
        rate=RATE,
        parse=parse_history_trades,
        direction="backward",
        request_ids=lambda sym, before_id, limit: HttpRequest(
            "GET", f"{url}?instId={sym}&type=1&after={before_id}&limit={limit}"
        ),
        # type=2: `after` is a ms timestamp and returns trades strictly older than it.
        request_locate=lambda sym, _start_us, end_us: HttpRequest(
            "GET", f"{url}?instId={sym}&type=2&after={end_us // US_PER_MS + 1}&limit=1"
        ),
        parse_locate=parse_locate,
        locate_weight=1,
        ids_contiguous=True,
    )
