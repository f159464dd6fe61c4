"""Page one symbol's missing span out of a `HistorySpec`, exchange-blind.

`Pager.pages()` yields the trades of the span page by page (already filtered to the span and
de-duplicated within the repair); when it ends, `Pager.covered` and `Pager.missing` say which
parts of the span are now known to be whole and which are not, and why:

by_id, forward   from `first_id` (or the id located at the span's start) up to `last_id`
                 (or past the span's end), ascending; exact by id.
by_id, backward  from `last_id` (or the id located at the span's end) down to `first_id`
                 (or before the span's start); exact by id.
by_time          the span in windows of the spec's `window_us`, each paged until a short page;
                 a window that needs more than `max_pages` pages is halved.
latest           one call; the span is whole only if the answer reaches back past its start
                 (or the answer is short and the spec says a short answer is everything).
                 Otherwise [span start, oldest returned trade] stays `no_history`: trades at
                 that same oldest timestamp may have been cut off by the answer's limit.

A page is short when the *answer* held fewer than `limit` trades (`HistoryPage.n_raw`), not
when fewer rows were left after the adapter dropped prints it does not store (Gate futures
``is_internal``, Bybit block trades): such a page is full, and paging goes on.

When paging stops early (an exchange error, a deadline) the part already paged is covered up
to the last timestamp seen, exclusive, and the rest is missing with the reason. Every call
waits for the exchange's `RateBudget`; 429/ban answers penalize the budget and the same call is
retried: a repair slows down, it never drops a page.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import httpx

from pumpwatch.errors import ParseError
from pumpwatch.recorder.adapter import HttpRequest, Instruments
from pumpwatch.recorder.history.budget import RateBudget, retry_after_s
from pumpwatch.recorder.history.spec import HistoryError, HistoryPage, HistorySpec

if TYPE_CHECKING:
    from pumpwatch.segments.schema import TradeRow

log = logging.getLogger(__name__)

Span = tuple[int, int]  # inclusive µs bounds
MissingSpan = tuple[int, int, str]  # inclusive µs bounds and the reason

NO_HISTORY = "no_history"
BEYOND_REACH = "beyond_reach"
RATE_LIMITED = "rate_limited"
EXCHANGE_ERROR = "exchange_error"
MIN_SPLIT_US = 1_000_000  # by_time windows are not halved below a second (Gate pages by seconds)


class _Stopped(Exception):
    """Paging cannot go on; the message is the `unrepaired` reason."""


def _key(row: TradeRow) -> Any:
    """Identity of a trade inside one repair: its id, else everything but the receive time."""
    return (row[8],) if row[8] is not None else (row[0], row[5], row[6], row[7])


class Pager:
    """Fetches the trades of `symbol` in ``[start_us, end_us]`` (see the module docstring)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        spec: HistorySpec,
        budget: RateBudget,
        symbol: str,
        start_us: int,
        end_us: int,
        *,
        instruments: Instruments,
        first_id: int | None = None,
        last_id: int | None = None,
        clock_us: Callable[[], int],
        deadline: float | None = None,
        retries: int = 3,
        retry_delay_s: float = 1.0,
    ) -> None:
        if end_us < start_us:
            raise ValueError(f"empty span {start_us}..{end_us}")
        self.client = client
        self.spec = spec
        self.budget = budget
        self.symbol = symbol
        self.start_us = start_us
        self.end_us = end_us
        self.instrument = instruments[symbol]
        self.first_id = first_id
        self.last_id = last_id
        self._clock_us = clock_us
        self._deadline = deadline
        self._retries = retries
        self._retry_delay_s = retry_delay_s
        self.calls = 0  # HTTP requests sent
        self.rate_limited = 0  # of which answered 429 or a ban status
        self.recv_us = 0  # receive time of the last answer
        self.missing: list[MissingSpan] = []
        self.covered: list[Span] = []
        self._done_until = start_us - 1  # forward kinds: everything up to here is paged
        self._done_from = end_us + 1  # backward paging: everything from here on is paged

    async def pages(self) -> AsyncIterator[list[TradeRow]]:
        """The span's trades, page by page; `covered`/`missing` are set when it ends."""
        spec = self.spec
        backward = spec.kind == "by_id" and spec.direction == "backward"
        try:
            if spec.kind == "latest":
                async for rows in self._latest():
                    yield rows
                return
            source = (
                self._by_time()
                if spec.kind == "by_time"
                else self._backward()
                if backward
                else self._forward()
            )
            async for rows in source:
                yield rows
        except _Stopped as stop:
            reason = str(stop)
            if backward:
                if self._done_from > self.start_us:
                    self.missing.append((self.start_us, self._done_from - 1, reason))
            elif self._done_until < self.end_us:
                self.missing.append((self._done_until + 1, self.end_us, reason))
            log.info("%s %s: paging stopped (%s)", spec.stream, self.symbol, reason)
        self.covered = _complement(self.start_us, self.end_us, self.missing)

    # -- the three kinds ------------------------------------------------------------------------

    async def _forward(self) -> AsyncIterator[list[TradeRow]]:
        spec, first_id, last_id = self.spec, self.first_id, self.last_id
        assert spec.request_ids is not None
        cursor = first_id if first_id is not None else await self._locate_forward()
        if cursor is None:  # no trade at all in the span
            self._done_until = self.end_us
            return
        while True:
            page = await self._call(spec.request_ids(self.symbol, cursor, spec.limit), spec.weight)
            rows: list[TradeRow] = []
            finished = False
            absent: tuple[int, int] | None = None  # ids the answer skipped
            whole_until = self._done_until  # every trade up to here is paged
            for row, tid in zip(page.rows, page.ids, strict=True):
                if tid < cursor:
                    continue
                if spec.ids_contiguous and tid != cursor and (last_id is None or cursor <= last_id):
                    absent = (cursor, tid - 1)
                    break
                if (last_id is not None and tid > last_id) or (last_id is None and row[0] > self.end_us):
                    finished = True
                    break
                if (first_id is not None or row[0] >= self.start_us) and (
                    last_id is not None or row[0] <= self.end_us
                ):
                    rows.append(row)
                cursor = tid + 1
                whole_until = min(row[0] - 1, self.end_us)  # a later id may share its time
            if rows:
                yield rows
            short = page.n_raw < spec.limit  # the answer's own count: rows may have been left out
            if absent is None and spec.ids_contiguous and short and not finished and last_id is not None:
                # the history ends before ids the live stream saw (empty when all were paged)
                absent = (cursor, last_id) if cursor <= last_id else None
            if absent is not None:
                self._done_until = max(self._done_until, whole_until)
                raise _Stopped(f"{EXCHANGE_ERROR}: trade ids {absent[0]}..{absent[1]} not in the answer")
            if finished or short:
                self._done_until = self.end_us  # reached the span's end, or the newest trade
                return
            if not page.ids:  # a full answer whose every trade was left out: no id to go on from
                raise _Stopped(f"{EXCHANGE_ERROR}: a full page without a trade to page on from")
            cursor = max(cursor, max(page.ids) + 1)
            newest = page.newest_us
            assert newest is not None
            self._done_until = max(self._done_until, min(newest - 1, self.end_us))

    async def _locate_forward(self) -> int | None:
        """The first id at or after the span's start, scanning windows of `locate_window_us`."""
        spec = self.spec
        assert spec.request_locate is not None and spec.parse_locate is not None
        assert spec.locate_window_us is not None
        window_start = self.start_us
        while window_start <= self.end_us:
            window_end = min(self.end_us, window_start + spec.locate_window_us - 1)
            body, _ = await self._get(
                spec.request_locate(self.symbol, window_start, window_end), spec.locate_weight
            )
            found = self._decode(spec.parse_locate, body)
            if found is not None:
                return found
            self._done_until = window_end  # that window holds no trade
            window_start = window_end + 1
        return None

    async def _backward(self) -> AsyncIterator[list[TradeRow]]:
        spec, first_id, last_id = self.spec, self.first_id, self.last_id
        assert spec.request_ids is not None
        if last_id is not None:
            cursor = last_id + 1
        else:
            assert spec.request_locate is not None and spec.parse_locate is not None
            body, _ = await self._get(
                spec.request_locate(self.symbol, self.start_us, self.end_us), spec.locate_weight
            )
            found = self._decode(spec.parse_locate, body)
            if found is None:  # no trade at all before the span's end
                self._done_from = self.start_us
                return
            cursor = found + 1
        while True:
            page = await self._call(spec.request_ids(self.symbol, cursor, spec.limit), spec.weight)
            rows: list[TradeRow] = []
            finished = False
            absent: tuple[int, int] | None = None  # ids the answer skipped
            whole_from = self._done_from  # every trade from here on is paged
            for row, tid in zip(reversed(page.rows), reversed(page.ids), strict=True):
                if tid >= cursor:
                    continue
                if spec.ids_contiguous and tid != cursor - 1 and (first_id is None or cursor > first_id):
                    absent = (tid + 1, cursor - 1)
                    break
                if (first_id is not None and tid < first_id) or (first_id is None and row[0] < self.start_us):
                    finished = True
                    break
                if last_id is not None or row[0] <= self.end_us:
                    rows.append(row)
                cursor = tid
                whole_from = max(row[0] + 1, self.start_us)  # an earlier id may share its time
                if first_id is not None and tid == first_id:
                    finished = True
                    break
            if rows:
                rows.reverse()
                yield rows
            short = page.n_raw < spec.limit  # the answer's own count: rows may have been left out
            if absent is None and spec.ids_contiguous and short and not finished and first_id is not None:
                # the history ends before ids the live stream saw (empty when all were paged)
                absent = (first_id, cursor - 1) if cursor > first_id else None
            if absent is not None:
                self._done_from = min(self._done_from, whole_from)
                raise _Stopped(f"{EXCHANGE_ERROR}: trade ids {absent[0]}..{absent[1]} not in the answer")
            if finished or short:
                self._done_from = self.start_us
                return
            if not page.ids:  # a full answer whose every trade was left out: no id to go on from
                raise _Stopped(f"{EXCHANGE_ERROR}: a full page without a trade to page on from")
            cursor = min(cursor, min(page.ids))
            oldest = page.oldest_us
            assert oldest is not None
            self._done_from = min(self._done_from, max(oldest + 1, self.start_us))

    async def _by_time(self) -> AsyncIterator[list[TradeRow]]:
        spec = self.spec
        assert spec.request_time is not None and spec.window_us is not None
        windows: deque[Span] = deque()
        lo = self.start_us
        while lo <= self.end_us:
            hi = min(self.end_us, lo + spec.window_us - 1)
            windows.append((lo, hi))
            lo = hi + 1
        seen: set[Any] = set()
        while windows:
            lo, hi = windows.popleft()
            page_no = 1
            while True:
                page = await self._call(
                    spec.request_time(self.symbol, lo, hi, page_no, spec.limit), spec.weight
                )
                rows = []
                for row in page.rows:
                    if lo <= row[0] <= hi:
                        key = _key(row)
                        if key not in seen:
                            seen.add(key)
                            rows.append(row)
                if rows:
                    yield rows
                if page.n_raw < spec.limit:  # not len(rows): a dropped print is no end of the window
                    self._done_until = hi
                    break
                page_no += 1
                if spec.max_pages is not None and page_no > spec.max_pages:
                    if hi - lo < MIN_SPLIT_US:
                        raise _Stopped(f"{EXCHANGE_ERROR}: more trades in one second than the endpoint pages")
                    mid = (lo + hi) // 2
                    windows.appendleft((mid + 1, hi))
                    windows.appendleft((lo, mid))
                    break

    async def _latest(self) -> AsyncIterator[list[TradeRow]]:
        spec = self.spec
        assert spec.request_latest is not None
        try:
            page = await self._call(spec.request_latest(self.symbol, spec.limit), spec.weight)
        except _Stopped as stop:
            self.missing.append((self.start_us, self.end_us, str(stop)))
            self.covered = []
            return
        rows = [row for row in page.rows if self.start_us <= row[0] <= self.end_us]
        if rows:
            yield rows
        oldest = page.oldest_us
        if (spec.short_is_complete and page.n_raw < spec.limit) or (
            oldest is not None and oldest < self.start_us
        ):
            pass  # the answer holds every trade of the span
        elif oldest is None or oldest > self.end_us:
            self.missing.append((self.start_us, self.end_us, NO_HISTORY))
        else:
            self.missing.append((self.start_us, oldest, NO_HISTORY))
        self.covered = _complement(self.start_us, self.end_us, self.missing)

    # -- HTTP ------------------------------------------------------------------------------------

    async def _call(self, request: HttpRequest, weight: int) -> HistoryPage:
        body, recv_us = await self._get(request, weight)
        return self._decode(lambda b: self.spec.parse(b, recv_us, self.instrument), body)

    def _decode(self, parse: Callable[[bytes], Any], body: bytes) -> Any:
        try:
            return parse(body)
        except (HistoryError, ParseError) as exc:
            raise _Stopped(f"{EXCHANGE_ERROR}: {str(exc)[:200]}") from None

    async def _get(self, request: HttpRequest, weight: int) -> tuple[bytes, int]:
        """One answer with status 200, its body and receive time; waits for the budget first,
        retries rate-limit answers without limit and transport errors / 5xx `retries` times."""
        failures = 0
        ban_statuses = self.budget.rule.ban_statuses
        while True:
            if not await self.budget.acquire(weight, deadline=self._deadline):
                raise _Stopped(RATE_LIMITED)
            self.calls += 1
            try:
                response = await self.client.request(
                    request.method, request.url, headers=dict(request.headers), content=request.body
                )
            except httpx.HTTPError as exc:
                failures += 1
                if failures > self._retries:
                    raise _Stopped(f"{EXCHANGE_ERROR}: {type(exc).__name__} {exc}"[:200]) from None
                await asyncio.sleep(self._retry_delay_s * 2 ** (failures - 1))
                continue
            self.recv_us = self._clock_us()
            status = response.status_code
            if status == 429 or status in ban_statuses:
                self.rate_limited += 1
                delay = self.budget.penalize(status, retry_after_s(response.headers.get("retry-after")))
                log.warning("%s: HTTP %d, REST budget blocked for %.1f s", self.spec.stream, status, delay)
                continue
            self.budget.succeeded()
            if status >= 500:
                failures += 1
                if failures > self._retries:
                    raise _Stopped(f"{EXCHANGE_ERROR}: HTTP {status} {response.content[:120]!r}")
                await asyncio.sleep(self._retry_delay_s * 2 ** (failures - 1))
                continue
            if status != 200:
                raise _Stopped(f"{EXCHANGE_ERROR}: HTTP {status} {response.content[:120]!r}")
            return response.content, self.recv_us


def _complement(start_us: int, end_us: int, missing: list[MissingSpan]) -> list[Span]:
    """The parts of ``[start_us, end_us]`` outside every missing span."""
    out: list[Span] = []
    lo = start_us
    for m_lo, m_hi, _ in sorted(missing):
        if m_lo > lo:
            out.append((lo, m_lo - 1))
        lo = max(lo, m_hi + 1)
    if lo <= end_us:
        out.append((lo, end_us))
    return out
