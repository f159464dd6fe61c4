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

import msgspec

from pumpwatch.errors import ParseError
from pumpwatch.recorder.adapter import HttpRequest, Instrument
from pumpwatch.recorder.adapters.okx import Trade, trade_rows
from pumpwatch.recorder.history.rest import decode_answer, rest_rows
from pumpwatch.recorder.history.spec import HistoryError, HistoryPage, HistorySpec, RateRule
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


class HistoryTrade(Trade):
    """A history-trades row: the ``trades-all`` fields under the same names, plus ``instId``
    (the push names the instrument in its ``arg``)."""

    inst_id: str = msgspec.field(name="instId")


class _Answer(msgspec.Struct, gc=False):
    code: str
    msg: str = ""
    data: list[HistoryTrade] = []


_decode_answer = msgspec.json.Decoder(_Answer).decode


def _error(doc: Any) -> str | None:
    """``{"code":"51001","msg":"Instrument ID does not exist","data":[]}``: any code but "0"."""
    if type(doc) is dict and doc.get("code", "0") != "0":
        return f"okx {doc['code']}: {doc.get('msg', '')}"
    return None


def _data(body: bytes) -> list[HistoryTrade]:
    """The trades of an answer, newest first."""
    answer = decode_answer(_decode_answer, body, _error, "okx")
    if answer.code != "0":
        raise HistoryError(f"okx {answer.code}: {answer.msg}")
    return answer.data


def _number(value: str | int, what: str) -> int:
    """A tradeId or ts sent as a decimal string (or a number) as an int."""
    text = str(value)
    if not (text.isascii() and text.isdigit()):
        raise ParseError(f"okx: {what} {value!r:.40}")
    return int(text)


def parse_history_trades(body: bytes, recv_us: int, inst: Instrument) -> HistoryPage:
    """A history-trades answer (newest first on the wire, oldest first here)::

    {"code":"0","msg":"","data":[{"instId":"BTC-USDT","side":"sell","sz":"0.00001",
     "px":"29963.2","source":"0","tradeId":"242720720","ts":"1654161646974"}]}
    """
    items = _data(body)
    items.reverse()
    for item in items:
        if item.inst_id != inst.symbol:
            raise ParseError(f"okx: trade of {item.inst_id!r:.40} in an answer about {inst.symbol!r}")
    rows = rest_rows(
        lambda trades, ref_us: trade_rows(list(trades), inst, ref_us),
        ((item, _number(item.time, "ts") * US_PER_MS) for item in items),
        recv_us,
    )
    return HistoryPage(rows, [_number(row[8] or "", "tradeId") for row in rows], n_raw=len(items))


def parse_locate(body: bytes) -> int | None:
    """The newest tradeId of a ``type=2`` answer, or None when it is empty."""
    data = _data(body)
    return max(_number(item.trade_id, "tradeId") for item in data) if data else None


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
