"""Gate spot and USDT-perpetual trade history (by time).

Spot:    https://www.gate.com/docs/developers/apiv4/en/#retrieve-market-trades
         ``GET /api/v4/spot/trades?currency_pair&from&to&limit&page`` — ``from``/``to`` unix
         seconds, ``limit`` ≤ 1000, ``limit × (page − 1) ≤ 100,000``.
Futures: https://www.gate.com/docs/developers/apiv4/en/#futures-market-transaction-records
         ``GET /api/v4/futures/usdt/trades?contract&from&to&limit&offset`` with the header
         ``X-Gate-Size-Decimal: 1`` (without it fractional sizes are truncated toward zero);
         ``size`` is signed contracts (sign = taker side) × ``quanto_multiplier``.

Both are paged by time window and page/offset (``last_id`` paging is deprecated). Seconds
are the request resolution, so a window asks for whole seconds around it and the pager keeps
only the window's trades. Rate: 200 requests per 10 s per endpoint and IP (public), 429
``TOO_MANY_REQUESTS`` beyond. Reach: the spot page serves about 30 days; the futures page
documents none, so 30 days is assumed for both (older spans are `beyond_reach`, never
claimed repaired).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from pumpwatch.errors import ParseError
from pumpwatch.recorder.adapter import HttpRequest, Instrument
from pumpwatch.recorder.adapters.checks import Side
from pumpwatch.recorder.adapters.gate import (
    FuturesTrade,
    SpotTrade,
    futures_trade_rows,
    ms_to_us,
    spot_trade_rows,
)
from pumpwatch.recorder.history.rest import decode_answer, rest_rows
from pumpwatch.recorder.history.spec import HistoryPage, HistorySpec, RateRule
from pumpwatch.timeunits import US_PER_DAY, US_PER_HOUR, US_PER_MS, US_PER_S

SPOT_DOC = "https://www.gate.com/docs/developers/apiv4/en/#retrieve-market-trades"
FUTURES_DOC = "https://www.gate.com/docs/developers/apiv4/en/#futures-market-transaction-records"
SIZE_DECIMAL = {"X-Gate-Size-Decimal": "1"}
RATE = RateRule(
    key="gate", weight_per_window=200, window_s=10.0, reserve=0.5, ban_statuses=(), doc_url=SPOT_DOC
)


class SpotHistoryTrade(msgspec.Struct, kw_only=True, gc=False):
    """A ``/spot/trades`` row: the ``spot.trades`` fields, but ``create_time`` is a string."""

    id: int | str
    currency_pair: str
    side: Side  # the taker's
    amount: str | float
    price: str | float
    create_time_ms: str  # "1606292218213.4578"
    sequence_id: str | int | None = None  # = the push's `id_market` (paging is by time: unused)


class FuturesHistoryTrade(msgspec.Struct, kw_only=True, gc=False):
    """A ``/futures/usdt/trades`` row: ``create_time_ms`` a number (ms), or only ``create_time``
    (seconds with a ms fraction), where the push has integer ms."""

    id: int | str
    contract: str
    size: str | int | float  # signed contracts: the sign is the taker side
    price: str | float
    create_time_ms: int | float | str | None = None
    create_time: int | float | str | None = None
    is_internal: bool = False


_decode_spot = msgspec.json.Decoder(list[SpotHistoryTrade]).decode
_decode_futures = msgspec.json.Decoder(list[FuturesHistoryTrade]).decode


def _error(doc: Any) -> str | None:
    """``{"label":"INVALID_CURRENCY_PAIR","message":"Invalid currency pair BAD_USDT"}``"""
    return f"gate {doc.get('label')}: {doc.get('message')}" if type(doc) is dict and "label" in doc else None


def _answer(decode: Callable[[bytes], list[Any]], body: bytes) -> list[Any]:
    return decode_answer(decode, body, _error, "gate")


def futures_ms(row: FuturesHistoryTrade) -> int:
    """A REST futures trade time as the push's integer ms: ``create_time_ms`` (ms), else
    ``create_time`` (s with a ms fraction); decimal arithmetic, no float error, whole ms."""
    value = row.create_time_ms if row.create_time_ms is not None else row.create_time
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ParseError(f"gate: bad create_time_ms {value!r}") from None
    if not number.is_finite() or number <= 0:
        raise ParseError(f"gate: bad create_time_ms {value!r}")
    ms = number if number >= 100_000_000_000 else number * 1000  # below 1e11 it is seconds
    return int(ms)


def _spot_trade(row: SpotHistoryTrade) -> tuple[SpotTrade, int]:
    """A REST spot row as the adapter's struct, with its time in µs (the adapter's conversion)."""
    trade = SpotTrade(
        id=row.id,
        currency_pair=row.currency_pair,
        side=row.side,
        amount=row.amount,
        price=row.price,
        create_time_ms=row.create_time_ms,
    )
    return trade, ms_to_us(row.create_time_ms)


def _futures_trade(row: FuturesHistoryTrade) -> tuple[FuturesTrade, int]:
    """A REST futures row as the adapter's struct (time as integer ms), with its time in µs."""
    ms = futures_ms(row)
    trade = FuturesTrade(
        id=row.id,
        contract=row.contract,
        size=row.size,
        price=row.price,
        create_time_ms=ms,
        is_internal=row.is_internal,
    )
    return trade, ms * US_PER_MS


def parse_spot_trades(body: bytes, recv_us: int, inst: Instrument) -> HistoryPage:
    """A ``/spot/trades`` answer, newest first on the wire::

    [{"id":"1232893232","create_time":"1548000000","create_time_ms":"1548000000123.456",
      "currency_pair":"BTC_USDT","side":"sell","amount":"0.15","price":"0.03",
      "sequence_id":"588018"}]
    """
    items: list[SpotHistoryTrade] = _answer(_decode_spot, body)
    for item in items:
        if item.currency_pair != inst.symbol:
            raise ParseError(f"gate: trade of {item.currency_pair!r:.40} in an answer about {inst.symbol!r}")
    rows = rest_rows(
        lambda trades, ref_us: spot_trade_rows(trades, inst, ref_us),
        (_spot_trade(item) for item in reversed(items)),
        recv_us,
    )
    rows.sort(key=lambda row: row[0])
    return HistoryPage(rows, n_raw=len(items))


def parse_futures_trades(body: bytes, recv_us: int, inst: Instrument) -> HistoryPage:
    """A ``/futures/usdt/trades`` answer (``is_internal`` insurance-fund/ADL prints dropped, as live)::

    [{"id":121234231,"create_time":1514764800.123,"create_time_ms":1514764800123,
      "contract":"BTC_USDT","size":"-100.5","price":"100.123"}]
    """
    items: list[FuturesHistoryTrade] = _answer(_decode_futures, body)
    for item in items:
        if item.contract != inst.symbol:
            raise ParseError(f"gate: trade of {item.contract!r:.40} in an answer about {inst.symbol!r}")
    instruments = {inst.symbol: inst}
    rows = rest_rows(
        lambda trades, ref_us: futures_trade_rows(trades, instruments, ref_us),
        (_futures_trade(item) for item in reversed(items)),
        recv_us,
    )
    rows.sort(key=lambda row: row[0])
    return HistoryPage(rows, n_raw=len(items))


def _seconds(start_us: int, end_us: int) -> str:
    """``from``/``to`` in whole seconds enclosing the µs window (the pager trims the excess)."""
    return f"from={start_us // US_PER_S}&to={end_us // US_PER_S + 1}"


def spec(market: str, rest_url: str, options: Mapping[str, Any]) -> HistorySpec | None:
    """The history of ``gate_<market>`` at `rest_url` (``https://api.gateio.ws``)."""
    base = rest_url.rstrip("/")
    if market == "spot":
        path = "/api/v4/spot/trades"
        return HistorySpec(
            stream="gate_spot",
            kind="by_time",
            via=path,
            doc_url=SPOT_DOC,
            limit=1000,
            reach_us=30 * US_PER_DAY,
            weight=1,
            rate=RATE,
            parse=parse_spot_trades,
            request_time=lambda sym, start_us, end_us, page, limit: HttpRequest(
                "GET",
                f"{base}{path}?currency_pair={sym}&{_seconds(start_us, end_us)}&limit={limit}&page={page}",
            ),
            window_us=US_PER_HOUR,
            max_pages=101,  # limit × (page − 1) ≤ 100,000
            # Continuity is checked live on `id_market` (= REST `sequence_id`, per pair), which
            # the adapter attaches beside each trade (`Adapter.sequenced`), not on the stored
            # exchange-wide `id`. Paging is by time, so the pager reads no ids.
            ids_contiguous=True,
        )
    if market == "futures":
        path = "/api/v4/futures/usdt/trades"
        return HistorySpec(
            stream="gate_futures",
            kind="by_time",
            via=path,
            doc_url=FUTURES_DOC,
            limit=1000,
            reach_us=30 * US_PER_DAY,
            weight=1,
            rate=RATE,
            parse=parse_futures_trades,
            request_time=lambda sym, start_us, end_us, page, limit: HttpRequest(
                "GET",
                f"{base}{path}?contract={sym}&{_seconds(start_us, end_us)}"
                f"&limit={limit}&offset={(page - 1) * limit}",
                SIZE_DECIMAL,
            ),
            window_us=US_PER_HOUR,
            max_pages=None,
        )
    raise ValueError(f"gate has no market {market!r}")
