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

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from pumpwatch.errors import ParseError
from pumpwatch.recorder.adapter import HttpRequest, Instrument
from pumpwatch.recorder.adapters.checks import positive
from pumpwatch.recorder.history.spec import HistoryError, HistoryPage, HistorySpec, RateRule
from pumpwatch.segments.schema import TradeRow
from pumpwatch.timeunits import US_PER_DAY, US_PER_HOUR, US_PER_MS, US_PER_S

SPOT_DOC = "https://www.gate.com/docs/developers/apiv4/en/#retrieve-market-trades"
FUTURES_DOC = "https://www.gate.com/docs/developers/apiv4/en/#futures-market-transaction-records"
SIZE_DECIMAL = {"X-Gate-Size-Decimal": "1"}
RATE = RateRule(
    key="gate", weight_per_window=200, window_s=10.0, reserve=0.5, ban_statuses=(), doc_url=SPOT_DOC
)
_SIDES = {"buy": "buy", "sell": "sell"}


def ms_text_to_us(value: str) -> int:
    """``"1606292218213.4578"`` -> 1606292218213457: whole ms plus the fraction's first three
    digits, truncated, as the live spot decoder converts ``create_time_ms``."""
    whole, _, frac = value.partition(".")
    if not (whole.isascii() and whole.isdigit()) or (frac and not (frac.isascii() and frac.isdigit())):
        raise ParseError(f"gate: bad create_time_ms {value!r}")
    return int(whole) * US_PER_MS + (int((frac + "000")[:3]) if frac else 0)


def spot_trade_row(
    trade_id: str | int,
    create_time_ms: str,
    side: str,
    amount: str,
    price: str,
    inst: Instrument,
    recv_us: int,
) -> TradeRow:
    """One Gate spot trade -> TradeRow as the live ``spot.trades`` decoder maps it (id as a string)."""
    if (
        type(trade_id) not in (int, str)
        or type(create_time_ms) is not str
        or type(side) is not str
        or side not in _SIDES
    ):
        raise ParseError(f"gate: bad spot trade fields {trade_id!r} {create_time_ms!r} {side!r}")
    qty, px = positive(amount, "amount"), positive(price, "price")
    return (
        ms_text_to_us(create_time_ms),
        recv_us,
        inst.symbol,
        inst.base,
        inst.quote,
        px,
        qty,
        _SIDES[side],
        str(trade_id),
    )


def futures_time_us(value: Any) -> int:
    """REST futures ``create_time_ms`` (a number: ms, or s with a ms fraction) -> µs in whole ms,
    as the live ``futures.trades`` push (integer ms) gives it; decimal arithmetic, no float error."""
    if type(value) not in (int, float, str):
        raise ParseError(f"gate: bad create_time_ms {value!r}")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ParseError(f"gate: bad create_time_ms {value!r}") from None
    if not number.is_finite() or number <= 0:
        raise ParseError(f"gate: bad create_time_ms {value!r}")
    ms = number if number >= 100_000_000_000 else number * 1000  # below 1e11 it is seconds
    return int(ms) * US_PER_MS


def futures_trade_row(
    trade_id: int | str, time_us: int, size: str, price: str, inst: Instrument, recv_us: int
) -> TradeRow:
    """One Gate futures trade -> TradeRow as the live decoder maps it: the sign of ``size`` is
    the taker side, base qty = |contracts| × quanto_multiplier."""
    if type(trade_id) not in (int, str) or type(size) not in (str, int, float):
        raise ParseError(f"gate: bad futures trade fields {trade_id!r} {size!r}")
    try:
        contracts = float(size)
    except ValueError:
        raise ParseError(f"gate: bad size {size!r}") from None
    side = "buy"
    if contracts < 0.0:
        side, contracts = "sell", -contracts
    qty = contracts * inst.multiplier
    if not 0.0 < qty < float("inf"):
        raise ParseError(f"gate: bad size {size!r}")
    return (
        time_us,
        recv_us,
        inst.symbol,
        inst.base,
        inst.quote,
        positive(price, "price"),
        qty,
        side,
        str(trade_id),
    )


def _items(body: bytes) -> list[dict[str, Any]]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ParseError("gate: history answer is not JSON") from None
    if type(doc) is dict and "label" in doc:
        # {"label":"INVALID_CURRENCY_PAIR","message":"Invalid currency pair BAD_USDT"}
        raise HistoryError(f"gate {doc.get('label')}: {doc.get('message')}")
    if type(doc) is not list or not all(type(item) is dict for item in doc):
        raise ParseError("gate: history answer is not a list of objects")
    return doc


def parse_spot_trades(body: bytes, recv_us: int, inst: Instrument) -> HistoryPage:
    """A ``/spot/trades`` answer, newest first on the wire::

    [{"id":"1232893232","create_time":"1548000000","create_time_ms":"1548000000123.456",
      "currency_pair":"BTC_USDT","side":"sell","amount":"0.15","price":"0.03",
      "sequence_id":"588018"}]
    """
    rows = []
    try:
        for item in _items(body):
            pair = item.get("currency_pair", inst.symbol)
            if pair != inst.symbol:
                raise ParseError(f"gate: trade of {pair!r} in an answer about {inst.symbol!r}")
            rows.append(
                spot_trade_row(
                    item["id"],
                    item["create_time_ms"],
                    item["side"],
                    item["amount"],
                    item["price"],
                    inst,
                    recv_us,
                )
            )
    except KeyError as exc:
        raise ParseError(f"gate: spot trade without {exc}") from None
    rows.sort(key=lambda row: row[0])
    return HistoryPage(rows)


def parse_futures_trades(body: bytes, recv_us: int, inst: Instrument) -> HistoryPage:
    """A ``/futures/usdt/trades`` answer (``is_internal`` insurance-fund/ADL prints dropped, as live)::

    [{"id":121234231,"create_time":1514764800.123,"create_time_ms":1514764800123,
      "contract":"BTC_USDT","size":"-100.5","price":"100.123"}]
    """
    rows = []
    try:
        for item in _items(body):
            if item.get("contract", inst.symbol) != inst.symbol:
                raise ParseError(
                    f"gate: trade of {item.get('contract')!r} in an answer about {inst.symbol!r}"
                )
            if item.get("is_internal") is True:
                continue
            raw_time = item["create_time_ms"] if "create_time_ms" in item else item["create_time"]
            rows.append(
                futures_trade_row(
                    item["id"], futures_time_us(raw_time), item["size"], item["price"], inst, recv_us
                )
            )
    except KeyError as exc:
        raise ParseError(f"gate: futures trade without {exc}") from None
    rows.sort(key=lambda row: row[0])
    return HistoryPage(rows)


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
            ids_contiguous=False,  # `id` is exchange-wide; `sequence_id` counts per market
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
