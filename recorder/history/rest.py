"""From a REST history answer to rows, as every exchange file under ``recorder/history/`` does it.

`decode_answer`: the answer is decoded with the exchange file's msgspec structs; one that does
not fit them is the exchange's error body (`HistoryError`) or malformed (`ParseError`).

`rest_rows`: each exchange file under ``recorder/history/`` decodes its REST answer with msgspec structs and
converts every REST trade, in one place, into the adapter's trade struct (the type its public
``trade_rows`` takes for WebSocket pushes), paired with the trade time in µs as the REST field
says it. `rest_rows` then makes each row with the adapter's ``trade_rows``, so a REST row and
the push of the same trade pass the same code and checks: side mapping, contract multipliers
and price scales, finite positive price and quantity, the trade id as a string, off-book prints
left out.

The time bound. The live check (``adapters/checks.trade_row``) wants a trade within a day of
its receive time; a REST answer legitimately returns trades months old. So each trade is
normalized as if received at its own REST time: the live bound then checks that the adapter
reads the time field exactly as the history file does (a unit slip between the two is a day or
more off and fails), and `rest_rows` bounds the REST time itself: not after the answer's
receive time (plus the live skew) and not before `EARLIEST_US`. The rows then carry the
answer's receive time as ``recv_time``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from pumpwatch.errors import ParseError
from pumpwatch.recorder.adapters.checks import MAX_CLOCK_SKEW_US, loads
from pumpwatch.recorder.history.spec import HistoryError

if TYPE_CHECKING:
    from pumpwatch.segments.schema import TradeRow

# 2009-01-01: older than any exchange's history, so an earlier time is a unit error (ms read
# as µs lands in 1970).
EARLIEST_US = 1_230_768_000_000_000

Trade = TypeVar("Trade")
Answer = TypeVar("Answer")


def decode_answer(
    decode: Callable[[bytes], Answer], body: bytes, error: Callable[[Any], str | None], exchange: str
) -> Answer:
    """`body` decoded by `decode` (a msgspec decoder of the answer's shape). A body that does not
    fit is looked at as plain JSON: `error(doc)` names the exchange's error (`HistoryError`), or
    None when it is not an error body either (`ParseError`)."""
    try:
        return decode(body)
    except msgspec.DecodeError as exc:
        message = error(loads(body))
        if message is not None:
            raise HistoryError(message) from None
        raise ParseError(f"{exchange}: malformed history answer ({exc})") from None


def rest_rows(
    normalize: Callable[[tuple[Trade], int], list[TradeRow]],
    trades: Iterable[tuple[Trade, int]],
    recv_us: int,
) -> list[TradeRow]:
    """Rows of `trades` (pairs of an adapter trade struct and its REST time in µs), in order.

    `normalize(trades, recv_us)` is the adapter's ``trade_rows`` bound to the instrument (and
    the stream's options); it may leave a trade out (off-book and internal prints). Raises
    `ParseError` for a trade the live decoder would refuse or a REST time out of bounds.
    """
    latest_us = recv_us + MAX_CLOCK_SKEW_US
    rows: list[TradeRow] = []
    for trade, time_us in trades:
        if not EARLIEST_US <= time_us <= latest_us:
            raise ParseError(f"implausible REST trade time {time_us} µs (received {recv_us})")
        for r in normalize((trade,), time_us):
            rows.append((r[0], recv_us, r[2], r[3], r[4], r[5], r[6], r[7], r[8]))
    return rows
