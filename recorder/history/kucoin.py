"""KuCoin spot and USDT-futures trade history (latest 100 only).

Spot:    https://www.kucoin.com/docs-new/rest/spot-trading/market-data/get-trade-history
         ``GET /api/v1/market/histories?symbol`` — the last 100 trades, weight 3 (public pool).
Futures: https://www.kucoin.com/docs-new/rest/futures-trading/market-data/get-trade-history
         ``GET /api/v1/trade/history?symbol`` — the last 100 trades, weight 5 (public pool).

No time or id paging. Times are ns; futures ``size`` is lots × the contract ``multiplier``.
Rows carrying ``tradeId`` use it, as the push does. The documented spot sample has none; then
its ``sequence`` is used, which equals the push's ``tradeId`` in the documented push sample but
not necessarily elsewhere (the local server derives a distinct one): such rows would not match
the live ids and the store would keep both. Rate: the
public pool is 2,000 weight per 30 s per IP (spot and futures each); 429 beyond, code 429000.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from pumpwatch.errors import ParseError
from pumpwatch.recorder.adapter import HttpRequest, Instrument
from pumpwatch.recorder.adapters.checks import Side
from pumpwatch.recorder.adapters.kucoin import Trade, trade_rows
from pumpwatch.recorder.history.rest import decode_answer, rest_rows
from pumpwatch.recorder.history.spec import HistoryError, HistoryPage, HistorySpec, RateRule
from pumpwatch.timeunits import NS_PER_US

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


class HistoryTrade(msgspec.Struct, kw_only=True, gc=False):
    """A spot histories / futures trade-history row (no ``symbol``: the answer is about one).

    The id is ``tradeId`` (the push's); a spot row without one (the documented sample has none)
    falls back to ``sequence``. Times are integer ns (spot ``time``, futures ``ts``); futures
    ``size`` is lots.
    """

    price: str | float
    size: str | float
    side: Side  # the taker's
    sequence: str | int
    trade_id: str | int | None = msgspec.field(name="tradeId", default=None)
    time: str | int | None = None  # spot, ns
    ts: str | int | None = None  # futures, ns


class _Answer(msgspec.Struct, gc=False):
    code: str
    msg: str = ""
    data: list[HistoryTrade] = []


_decode_answer = msgspec.json.Decoder(_Answer).decode


def _error(doc: Any) -> str | None:
    """``{"code":"400100","msg":"This pair is not provided at present"}``: any code but "200000"."""
    if type(doc) is dict and doc.get("code", "200000") != "200000":
        return f"kucoin {doc['code']}: {doc.get('msg', '')}"
    return None


def _as_trade(row: HistoryTrade, inst: Instrument, futures: bool) -> tuple[Trade, int]:
    """A REST row as the adapter's match struct, with its time in µs."""
    raw = row.ts if futures else row.time
    text = str(raw)
    if not (text.isascii() and text.isdigit()):
        raise ParseError(f"kucoin: bad time {raw!r:.40}")
    tid = row.trade_id
    if tid is None:
        if futures:
            raise ParseError("kucoin: futures trade without tradeId")
        tid = row.sequence
    trade = Trade(
        symbol=inst.symbol,
        side=row.side,
        price=row.price,
        size=row.size,
        trade_id=tid,
        time=None if futures else raw,
        ts=raw if futures else None,
    )
    return trade, int(text) // NS_PER_US


def _parse(body: bytes, recv_us: int, inst: Instrument, futures: bool) -> HistoryPage:
    answer = decode_answer(_decode_answer, body, _error, "kucoin")
    if answer.code != "200000":
        raise HistoryError(f"kucoin {answer.code}: {answer.msg}")
    rows = rest_rows(
        lambda trades, ref_us: trade_rows(trades, inst, ref_us),
        (_as_trade(item, inst, futures) for item in answer.data),
        recv_us,
    )
    rows.sort(key=lambda row: row[0])
    return HistoryPage(rows, n_raw=len(answer.data))


def parse_spot_histories(body: bytes, recv_us: int, inst: Instrument) -> HistoryPage:
    """A spot histories answer::

    {"code":"200000","data":[{"sequence":"10976028003549185","price":"67122","size":"0.000025",
     "side":"buy","time":1729843222921000000}]}
    """
    return _parse(body, recv_us, inst, futures=False)


def parse_futures_history(body: bytes, recv_us: int, inst: Instrument) -> HistoryPage:
    """A futures trade/history answer (size in lots)::

    {"code":"200000","data":[{"sequence":1794100537695,"contractId":1,"tradeId":"1794100537695",
     "makerOrderId":"247822167163555840","takerOrderId":"247822202957807616",
     "ts":1731898619520000000,"size":2,"price":"90503.9","side":"buy"}]}
    """
    return _parse(body, recv_us, inst, futures=True)


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
