"""Trade history and its REST endpoints on the local exchange servers: the generic part.

A `SimExchange` keeps every trade it publishes per symbol (`TradeStore`, bounded), including
trades no client received, and answers the exchange's public trade-history routes from it. The
routes themselves (paths, parameters, paging, limits, error bodies) live in
``recorder/sim/<exchange>_history.py`` as a `HistoryApi`: plain data plus one handler per route.
This module adds what every exchange does alike: a request budget per rolling window with the
exchange's own refusal (429 + ``Retry-After``; Binance's 418 ban after ignoring 429s; Bybit's
403 block), `throttle(n)` fault injection, call counters, `skip_pushes(n)` (trades kept for REST but
never pushed, so a connected client sees a hole in contiguous ids) and `flag_off_market(ids)`
(stored trades the history flags as internal / block prints).
"""

from __future__ import annotations

import bisect
import importlib
import math
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.sim.protocol import HttpResponse
from pumpwatch.segments.schema import TradeRow

DEFAULT_MAX_ROWS_PER_SYMBOL = 200_000
JSON = {"Content-Type": "application/json"}


class ParamError(ValueError):
    """A query parameter is missing or malformed; each exchange turns it into its error body."""

    def __init__(self, name: str, missing: bool = False) -> None:
        super().__init__(name)
        self.name = name
        self.missing = missing


def int_param(query: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    """`query[name]` as a non-negative integer, `default` when absent or empty."""
    text = query.get(name, "")
    if text == "":
        return default
    if not text.isdigit() or len(text) > 20:
        raise ParamError(name)
    return int(text)


def numeric_id(row: TradeRow) -> int:
    """The row's trade id as an integer (the sim's ids are decimal strings)."""
    tid = row[8]
    if tid is None or not tid.isdigit():
        raise ValueError(f"trade without a numeric id: {row!r}")
    return int(tid)


class TradeStore:
    """Every published trade per exchange symbol, oldest first. Rows of one symbol must be
    published in time order. Each symbol keeps at least its newest `max_rows_per_symbol` rows and
    at most an eighth more: the oldest are forgotten in chunks, so that a full store does not
    move the whole list on every publish."""

    def __init__(self, max_rows_per_symbol: int = DEFAULT_MAX_ROWS_PER_SYMBOL) -> None:
        self.max_rows_per_symbol = max_rows_per_symbol
        self._rows: dict[str, list[TradeRow]] = defaultdict(list)
        self.forgotten = 0  # rows dropped by the bound

    def add(self, rows: Iterable[TradeRow]) -> None:
        touched = set()
        for row in rows:
            self._rows[row[2]].append(row)
            touched.add(row[2])
        slack = self.max_rows_per_symbol // 8
        for symbol in touched:
            kept = self._rows[symbol]
            excess = len(kept) - self.max_rows_per_symbol
            if excess > slack:
                del kept[:excess]
                self.forgotten += excess

    def rows(self, symbol: str) -> Sequence[TradeRow]:
        """All kept rows of `symbol`, oldest first (do not mutate)."""
        return self._rows.get(symbol, [])

    def id_range(self, symbol: str, lo: int | None, hi: int | None) -> Sequence[TradeRow]:
        """Rows with ``lo <= id <= hi`` (either bound open), oldest first."""
        rows = self.rows(symbol)
        start = 0 if lo is None else bisect.bisect_left(rows, lo, key=numeric_id)
        stop = len(rows) if hi is None else bisect.bisect_right(rows, hi, key=numeric_id)
        return rows[start:stop]

    def time_range(self, symbol: str, lo_us: int | None, hi_us: int | None) -> Sequence[TradeRow]:
        """Rows with ``lo_us <= time <= hi_us`` (either bound open), oldest first."""
        rows = self.rows(symbol)
        start = 0 if lo_us is None else bisect.bisect_left(rows, lo_us, key=_time_us)
        stop = len(rows) if hi_us is None else bisect.bisect_right(rows, hi_us, key=_time_us)
        return rows[start:stop]

    def latest(self, symbol: str, n: int) -> Sequence[TradeRow]:
        """The newest `n` rows, oldest first."""
        rows = self.rows(symbol)
        return rows[max(len(rows) - n, 0) :]


def _time_us(row: TradeRow) -> int:
    return row[0]


@dataclass(frozen=True)
class HistoryRequest:
    """What a history route handler gets: the request and the exchange's stored trades."""

    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names
    instruments: Mapping[str, Instrument]  # by exchange symbol
    store: TradeStore
    now_us: int
    # trade ids the history flags as not a market trade (Gate futures ``is_internal``, Bybit
    # ``isBlockTrade``): see `HistoryService.flag_off_market`
    off_market: frozenset[str] = frozenset()


HistoryHandler = Callable[[HistoryRequest], HttpResponse]


@dataclass(frozen=True)
class RateLimit:
    """A request budget: `limit` weight per rolling `window_s`, refused with `status` + `body`.

    `penalty_s` > 0: once exceeded, every call is refused for that long (Bybit's 403 block).
    `ban_after` (Binance): this many refused calls in a row without backing off turn into a ban
    answered with `ban_status` (418) + `ban_body` for `ban_s`.
    """

    limit: int
    window_s: float
    status: int = 429
    body: bytes = b'{"error":"too many requests"}'
    penalty_s: float = 0.0
    ban_after: int | None = None
    ban_s: float = 120.0
    ban_status: int = 418
    ban_body: Callable[[int], bytes] | None = None  # ban end (ms) -> body
    used_header: str | None = None  # response header carrying the weight used (Binance)
    content_type: str = "application/json"


@dataclass(frozen=True)
class HistoryRoute:
    """One GET route: its handler, its weight and which budget of the exchange it draws on."""

    handler: HistoryHandler
    weight: int = 1
    budget: str = "ip"


@dataclass(frozen=True)
class HistoryApi:
    """An exchange market's history routes (by path) and its budgets (by name)."""

    routes: Mapping[str, HistoryRoute] = field(default_factory=dict)
    budgets: Mapping[str, RateLimit] = field(default_factory=dict)


def history_api_for(stream: str) -> HistoryApi:
    """The `HistoryApi` from ``recorder/sim/<exchange>_history.py``; empty if there is none
    (test protocols, Upbit)."""
    exchange, _, market = stream.partition("_")
    name = f"pumpwatch.recorder.sim.{exchange}_history"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        return HistoryApi()
    api: HistoryApi = module.history_api(market)
    return api


class _Budget:
    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self.spent: deque[tuple[float, int]] = deque()  # (monotonic time, weight)
        self.used = 0
        self.blocked_until = 0.0
        self.banned_until = 0.0
        self.refused_in_row = 0

    def _expire(self, now: float) -> None:
        while self.spent and self.spent[0][0] <= now - self.limit.window_s:
            self.used -= self.spent.popleft()[1]

    def admit(self, weight: int, now: float) -> tuple[int, bytes, float] | None:
        """None to serve the call, else (status, body, retry_after_s)."""
        lim = self.limit
        self._expire(now)
        if now < self.banned_until:
            return lim.ban_status, self._ban_body(), self.banned_until - now
        if now < self.blocked_until:
            return lim.status, lim.body, self.blocked_until - now
        if self.used + weight <= lim.limit:
            self.spent.append((now, weight))
            self.used += weight
            self.refused_in_row = 0
            return None
        self.refused_in_row += 1
        if lim.ban_after is not None and self.refused_in_row > lim.ban_after:
            self.banned_until = now + lim.ban_s
            self.refused_in_row = 0
            return lim.ban_status, self._ban_body(), lim.ban_s
        if lim.penalty_s > 0:
            self.blocked_until = now + lim.penalty_s
            return lim.status, lim.body, lim.penalty_s
        return lim.status, lim.body, self._until_fits(weight, now)

    def _until_fits(self, weight: int, now: float) -> float:
        need = self.used + weight - self.limit.limit
        for t, w in self.spent:
            need -= w
            if need <= 0:
                return t + self.limit.window_s - now
        return self.limit.window_s

    def _ban_body(self) -> bytes:
        make = self.limit.ban_body
        end_ms = int((time.time() + self.banned_until - time.monotonic()) * 1000)
        return make(end_ms) if make is not None else self.limit.body


@dataclass
class HistoryStats:
    """Counters of history calls, for tests and benchmarks."""

    requests: int = 0  # every call to a history route
    served: int = 0  # answered by the route (any status the route chose)
    limited: int = 0  # refused by a budget or `throttle`
    by_path: Counter[str] = field(default_factory=Counter)  # served calls per path


class HistoryService:
    """The history side of one `SimExchange`: stored trades, budgets, faults, counters."""

    def __init__(
        self,
        api: HistoryApi,
        *,
        max_rows_per_symbol: int = DEFAULT_MAX_ROWS_PER_SYMBOL,
        budgets: Mapping[str, RateLimit] | None = None,
        throttle_retry_after_s: float = 1.0,
    ) -> None:
        self.api = api
        self.store = TradeStore(max_rows_per_symbol)
        merged = {**api.budgets, **dict(budgets or {})}
        self._budgets = {name: _Budget(lim) for name, lim in merged.items()}
        self.throttle_retry_after_s = throttle_retry_after_s
        self.stats = HistoryStats()
        self.skipped: list[TradeRow] = []  # trades held back by `skip_pushes`
        self._throttle = 0
        self._skip: dict[str | None, int] = {}
        self._off_market: frozenset[str] = frozenset()

    # -- faults ---------------------------------------------------------------------------

    def throttle(self, n: int) -> None:
        """The next `n` history calls are refused as over the limit (the route's budget's status
        and body, ``Retry-After: throttle_retry_after_s``), whatever the budget says."""
        self._throttle += n

    def skip_pushes(self, n: int, symbol: str | None = None) -> None:
        """The next `n` trades (of `symbol`, or of any symbol) are kept for REST but not pushed."""
        self._skip[symbol] = self._skip.get(symbol, 0) + n

    def flag_off_market(self, trade_ids: Iterable[str]) -> None:
        """The history answers these stored trades flagged as prints a recorder does not keep:
        Gate futures ``is_internal: true`` (insurance fund / ADL takeovers), Bybit
        ``isBlockTrade: true``; exchanges without such a flag ignore it."""
        self._off_market = self._off_market | frozenset(trade_ids)

    # -- trades ---------------------------------------------------------------------------

    def record(self, rows: Sequence[TradeRow]) -> Sequence[TradeRow]:
        """Keep `rows`; return those to push to clients (all but the ones `skip_pushes` holds)."""
        self.store.add(rows)
        if not self._skip:
            return rows
        push: list[TradeRow] = []
        for row in rows:
            key: str | None = row[2] if self._skip.get(row[2]) else None
            if self._skip.get(key):
                self._skip[key] -= 1
                if not self._skip[key]:
                    del self._skip[key]
                self.skipped.append(row)
            else:
                push.append(row)
        return push

    # -- HTTP -----------------------------------------------------------------------------

    def serves(self, method: str, path: str) -> bool:
        return method in ("GET", "HEAD") and path in self.api.routes

    def handle(
        self,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        instruments: Mapping[str, Instrument],
    ) -> HttpResponse:
        """Answer one history call (budget first, then the route)."""
        route = self.api.routes[path]
        self.stats.requests += 1
        budget = self._budgets.get(route.budget)
        lim = budget.limit if budget is not None else None
        if self._throttle > 0:
            self._throttle -= 1
            self.stats.limited += 1
            if lim is None:
                return _refusal(429, b'{"error":"too many requests"}', self.throttle_retry_after_s, JSON)
            return _refusal(lim.status, lim.body, self.throttle_retry_after_s, self._headers(budget))
        if budget is not None:
            refused = budget.admit(route.weight, time.monotonic())
            if refused is not None:
                self.stats.limited += 1
                status, body, retry_after_s = refused
                return _refusal(status, body, retry_after_s, self._headers(budget))
        request = HistoryRequest(
            query, headers, instruments, self.store, time.time_ns() // 1000, self._off_market
        )
        response = route.handler(request)
        self.stats.served += 1
        self.stats.by_path[path] += 1
        if budget is not None and budget.limit.used_header:
            extra = {**response.headers, **self._headers(budget)}
            response = HttpResponse(response.status, response.body, extra)
        return response

    @staticmethod
    def _headers(budget: _Budget | None) -> dict[str, str]:
        if budget is None:
            return dict(JSON)
        out = {"Content-Type": budget.limit.content_type}
        if budget.limit.used_header:
            out[budget.limit.used_header] = str(budget.used)
        return out


def _refusal(status: int, body: bytes, retry_after_s: float, headers: Mapping[str, str]) -> HttpResponse:
    return HttpResponse(status, body, {**headers, "Retry-After": str(max(1, math.ceil(retry_after_s)))})


def json_response(body: bytes, status: int = 200) -> HttpResponse:
    return HttpResponse(status, body, dict(JSON))
