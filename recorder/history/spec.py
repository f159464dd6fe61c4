"""What a stream's REST trade history is: a plain record of values and pure functions.

One file per exchange under ``recorder/history/`` builds one `HistorySpec` per market. The
pager (``pager.py``) and `repair` (``repair.py``) are the only code doing I/O with them, and
they never name an exchange: how an exchange pages, how far back it reaches and what a call
costs are values here. Everything in this module is Sans-I/O (no sockets, no clock reads).

Three kinds of history endpoint:

by_id    pages by trade id (Binance ``fromId``, OKX ``after=<tradeId>``). A gap with known ids
         is fetched id by id, exactly; a gap known only by time first *locates* an id near
         its start (forward paging) or its end (backward paging), then pages by id.
by_time  pages a time range (Gate ``from``/``to`` + page or offset), in windows of at most
         `window_us`, each window paged until a short page.
latest   only the most recent trades, one call (Bybit, KuCoin, Phemex): a gap is repaired
         only as far back as the answer reaches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pumpwatch.recorder.adapter import HttpRequest, Instrument

if TYPE_CHECKING:  # only in annotations: importing the schema at runtime would load pyarrow
    from pumpwatch.segments.schema import TradeRow

Kind = Literal["by_id", "by_time", "latest"]
Direction = Literal["forward", "backward"]


class HistoryError(ValueError):
    """The exchange answered with an error body (a bad symbol, a refused parameter).

    Raised by a spec's `parse` for a well-formed error answer; a malformed body raises
    `pumpwatch.errors.ParseError`. Both end a repair as ``exchange_error: <detail>``.
    """


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One REST answer, decoded: trades oldest first, their numeric ids where ids page, and
    `n_raw`, how many trades the answer held before the adapter left some out (Gate futures
    ``is_internal`` prints, Bybit block trades under ``drop_block_trades``, off-book prints).

    Whether a page is short (the history is exhausted, a latest-only answer holds everything)
    is decided on `n_raw`, never on ``len(rows)``: one dropped print on a full page must not
    read as the end of the history.
    """

    rows: list[TradeRow]
    ids: list[int] = field(default_factory=list)  # parallel to `rows` (by_id kinds), else empty
    n_raw: int = field(kw_only=True)  # trades in the answer, before any was left out

    def __post_init__(self) -> None:
        if self.ids and len(self.ids) != len(self.rows):
            raise ValueError(f"{len(self.ids)} ids for {len(self.rows)} rows")
        if self.n_raw < len(self.rows):
            raise ValueError(f"{len(self.rows)} rows from an answer of {self.n_raw} trades")

    @property
    def oldest_us(self) -> int | None:
        return self.rows[0][0] if self.rows else None

    @property
    def newest_us(self) -> int | None:
        return self.rows[-1][0] if self.rows else None


@dataclass(frozen=True, slots=True)
class RateRule:
    """An exchange's REST budget for these endpoints, shared by its spot and futures streams.

    `weight_per_window` request weight per `window_s` (per IP); the worker's live repairs use
    at most ``1 - reserve`` of it, and the extraction-time repairs of a process
    `budget.EXTRACTION_SHARE` of the rest, so the recorder's other REST calls (tokens,
    instrument lists) and anyone else behind the same IP keep headroom. `ban_statuses` are answers that mean
    "banned for a while" (Binance 418, Bybit 403 "access too frequent"): they back off much
    longer than a 429.
    """

    key: str  # one budget per key: the exchange
    weight_per_window: float
    window_s: float
    reserve: float = 0.5
    ban_statuses: tuple[int, ...] = (418,)
    doc_url: str = ""


@dataclass(frozen=True)
class HistorySpec:
    """One stream's REST trade history (see the module docstring for the three kinds).

    Request builders take the exchange symbol and return the `HttpRequest` to send (the REST
    base URL is bound when the spec is built). `parse(body, recv_us, instrument)` decodes an
    answer about `instrument` (the one asked for: some answers do not name it) into a
    `HistoryPage` whose rows are exactly the `TradeRow` the live WebSocket decoder gives for
    the same trade, except ``recv_time`` (here the answer's receive time).
    """

    stream: str
    kind: Kind
    via: str  # the endpoint path, journaled as `via` of `repaired`
    doc_url: str
    limit: int  # trades per call
    reach_us: int | None  # how far back the endpoint serves trades; None = full history
    weight: int  # request weight of one call
    rate: RateRule
    parse: Callable[[bytes, int, Instrument], HistoryPage]
    # by_id: request_ids(symbol, cursor, limit). Forward: ids >= cursor, ascending. Backward:
    # ids < cursor (the exchange's "after"), newest first.
    direction: Direction = "forward"
    request_ids: Callable[[str, int, int], HttpRequest] | None = None
    # by_id without known ids: request_locate(symbol, start_us, end_us) and parse_locate(body)
    # give forward: the first id at or after start_us inside [start_us, end_us] (None: no trade
    # in that window; the pager then tries the next window of `locate_window_us`); backward:
    # the newest id at or before end_us (None: no trade at all before end_us).
    request_locate: Callable[[str, int, int], HttpRequest] | None = None
    parse_locate: Callable[[bytes], int | None] | None = None
    locate_weight: int = 1
    locate_window_us: int | None = None
    # by_time: request_time(symbol, start_us, end_us, page, limit), page counted from 1;
    # windows of at most `window_us` µs; at most `max_pages` pages per window (Gate spot:
    # limit × (page − 1) ≤ 100,000), beyond which the window is halved.
    request_time: Callable[[str, int, int, int, int], HttpRequest] | None = None
    window_us: int | None = None
    max_pages: int | None = None
    # latest: request_latest(symbol, limit). `short_is_complete`: an answer with fewer than
    # `limit` trades holds every trade the exchange has (so it covers the whole gap).
    request_latest: Callable[[str, int], HttpRequest] | None = None
    short_is_complete: bool = False
    ids_contiguous: bool = False  # ids count up by one per trade and symbol (gap detection)
    # The live connection sends recent trades again after every subscribe (Phemex's snapshot of
    # its last 200): an extraction-time repair leaves a gap alone until that replay is stored.
    live_replays: bool = False

    def __post_init__(self) -> None:
        needed = {
            "by_id": ("request_ids", "request_locate", "parse_locate"),
            "by_time": ("request_time", "window_us"),
            "latest": ("request_latest",),
        }[self.kind]
        missing = [name for name in needed if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{self.stream}: a {self.kind} history spec needs {missing}")
        if self.kind == "by_id" and self.direction == "forward" and self.locate_window_us is None:
            raise ValueError(f"{self.stream}: forward locating needs locate_window_us")
