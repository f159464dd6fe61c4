"""One WebSocket connection of a stream: open, subscribe with acks, keep alive, watch, close.

The `StreamRunner` (``recorder/stream/runner.py``) decides when connections open, rotate and retry;
this module does the I/O of a single one. It knows no exchange: every difference comes from
the `Adapter` (frames to send, ping rule, limits) and `ConnectTarget` (URL, headers, welcome).
Every frame goes to the runner's `process` callback, which returns a `Control` when the frame
was one; acks, pongs, welcomes and server notices are then handled here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from pumpwatch.errors import ParseError
from pumpwatch.recorder.adapter import Adapter, ConnectTarget, Control
from pumpwatch.recorder.stream.logcontext import StreamLog
from pumpwatch.recorder.stream.ratelimit import RateLimiter
from pumpwatch.recorder.stream.requests import PendingRequest, RequestBook
from pumpwatch.timeunits import NS_PER_US, US_PER_MS

log = logging.getLogger(__name__)

# Frames up to 16 MiB (history snapshots can be large); a deep receive queue so that a burst
# does not pause the TCP reader while the parser catches up (nothing is lost either way).
MAX_FRAME_BYTES = 16 * 1024 * 1024
MAX_QUEUE_FRAMES = 1024
CLOSE_TIMEOUT_S = 2.0


_req_ids = itertools.count(1)  # numeric strings: accepted as ids by every exchange (Phemex: int only)


# A handshake answered with these is a rate limit or a ban (Binance: 429, then 418 "IP banned"
# for clients that keep knocking, with escalating ban lengths): wait at least Retry-After, and
# far longer than after an ordinary failure when the answer gives none.
RATE_LIMIT_STATUSES = frozenset((418, 429))
RATE_LIMIT_DEFAULT_WAIT_S = {429: 60.0, 418: 300.0}


class ConnectFailed(Exception):
    """This connection could not be opened or subscribed; the runner retries with backoff.

    `status` is the HTTP status of a refused handshake (or token request), `retry_after_s` the
    wait the exchange asked for (its ``Retry-After``), when it gave one.
    """

    def __init__(
        self, message: str, *, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def rate_limited(self) -> bool:
        return self.status in RATE_LIMIT_STATUSES


def retry_after_s(value: str | None, now_s: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if absent or
    unreadable (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now_s is None else now_s))


class _TimedConnection(ClientConnection):
    """Notes when the last bytes arrived (frames, pongs, server pings) for the watchdog."""

    last_rx_s: float = 0.0

    def data_received(self, data: bytes) -> None:
        self.last_rx_s = time.monotonic()
        super().data_received(data)


def redact_url(url: str) -> str:
    """`url` without its query string (which may hold a token) for logs and the journal."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


class Connection:
    """One WebSocket connection; `open()`, `subscribe()`, then it reads until it ends.

    Callbacks into the runner: `process(frame, recv_us)` decodes one frame (returns a Control
    or None); `on_end(conn)` runs once when the connection is over for any reason;
    `on_notice(conn)` when the server announced a close (rotate now).
    """

    def __init__(
        self,
        conn_id: str,
        adapter: Adapter,
        *,
        ws_url: str,
        rest_url: str,
        process: Callable[[bytes | str, int], Control | None],
        on_end: Callable[[Connection], None],
        on_notice: Callable[[Connection], None],
        clock: Callable[[], int] = time.time_ns,
        open_timeout_s: float = 10.0,
        ack_timeout_s: float = 10.0,
    ) -> None:
        self.conn_id = conn_id
        self.adapter = adapter
        self.ws_url = ws_url
        self.rest_url = rest_url
        self._process = process
        self._on_end = on_end
        self._on_notice = on_notice
        self._clock = clock
        self.open_timeout_s = open_timeout_s
        self.ack_timeout_s = ack_timeout_s
        self.name = f"{adapter.stream} conn {conn_id}"  # of its asyncio tasks
        self.log = StreamLog(log, adapter.stream, conn_id)
        self.limiter = RateLimiter(adapter.max_requests_per_s)
        self.url = ""  # redacted URL once open
        self.subscribed: set[str] = set()  # symbols the exchange acked on this connection
        self.lost: frozenset[str] = frozenset()  # `subscribed` at the moment it ended
        self.opened_s: float | None = None  # monotonic time the WebSocket opened
        self.subscribed_s: float | None = None  # monotonic time the runner declared it serving
        self.end_reason: str | None = None
        self.closed_by_us = False  # ended by `close` (a rotation, a stop), not by dying
        self.last_frame_us: int | None = None  # the receive stamp of the last frame read
        self.ended = asyncio.Event()
        self._ws: _TimedConnection | None = None
        self._welcome = asyncio.Event()
        self._book = RequestBook(per_symbol=adapter.acks_per_symbol)
        self._unmatched_errors = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._end_reported = False

    # -- opening ---------------------------------------------------------------------------

    @property
    def last_rx_s(self) -> float | None:
        """Monotonic time anything (a frame, a pong) last arrived; None before it opened."""
        ws = self._ws
        return ws.last_rx_s if ws is not None else None

    async def open(self) -> None:
        """Fetch a token if the adapter needs one, connect, and wait for the welcome if asked."""
        target = await self._target()
        headers = dict(target.headers)
        try:
            ws = await connect(
                target.url,
                additional_headers=headers or None,
                open_timeout=self.open_timeout_s,
                close_timeout=CLOSE_TIMEOUT_S,
                ping_interval=None,  # keep-alive is ours: it must go through the rate limiter
                ping_timeout=None,
                max_size=MAX_FRAME_BYTES,
                max_queue=MAX_QUEUE_FRAMES,
                compression=None,
                proxy=None,  # never route exchange traffic through an environment proxy
                create_connection=_TimedConnection,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            wait_s = retry_after_s(exc.response.headers.get("Retry-After"))
            raise ConnectFailed(
                f"handshake refused: HTTP {status}"
                + ("" if wait_s is None else f", Retry-After {wait_s:g} s"),
                status=status,
                retry_after_s=wait_s,
            ) from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise ConnectFailed(f"connect failed: {exc!r}") from None
        assert isinstance(ws, _TimedConnection)
        self._ws = ws
        ws.last_rx_s = time.monotonic()
        self.opened_s = time.monotonic()
        self.url = redact_url(target.url)
        self._tasks = [
            asyncio.create_task(self._read(), name=f"{self.name} read"),
            asyncio.create_task(self._keepalive(target), name=f"{self.name} ping"),
            asyncio.create_task(self._watchdog(), name=f"{self.name} watchdog"),
        ]
        if target.wait_welcome:
            await self._wait(self._welcome.wait(), self.open_timeout_s, "no welcome")

    async def _target(self) -> ConnectTarget:
        body: bytes | None = None
        if self.adapter.connect_request is not None:
            import httpx  # only token-fetching streams need it: ~11 MB a worker otherwise spends

            request = self.adapter.connect_request(self.rest_url)
            try:
                async with httpx.AsyncClient(timeout=self.open_timeout_s, trust_env=False) as client:
                    response = await client.request(
                        request.method, request.url, headers=dict(request.headers), content=request.body
                    )
            except httpx.HTTPError as exc:
                raise ConnectFailed(f"{request.method} {redact_url(request.url)} failed: {exc!r}") from None
            if response.status_code // 100 != 2:
                raise ConnectFailed(
                    f"{request.method} {redact_url(request.url)}: HTTP {response.status_code}",
                    status=response.status_code,
                    retry_after_s=retry_after_s(response.headers.get("Retry-After")),
                )
            body = response.content
        try:
            return self.adapter.connect_target(self.ws_url, body, self.conn_id)
        except ParseError as exc:
            raise ConnectFailed(f"unusable connect response: {exc}") from None

    async def _wait(self, awaitable: Any, timeout_s: float, what: str) -> None:
        """Await `awaitable`, failing when the connection ends first or the time runs out."""
        task = asyncio.ensure_future(awaitable)
        ended = asyncio.ensure_future(self.ended.wait())
        try:
            done, _ = await asyncio.wait(
                {task, ended}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for t in (task, ended):
                if not t.done():
                    t.cancel()
        if task not in done:
            raise ConnectFailed(f"{what}: " + (self.end_reason or f"nothing within {timeout_s:g} s"))
        task.result()

    # -- subscribing -----------------------------------------------------------------------

    async def subscribe(
        self,
        symbols: Sequence[str],
        on_acked: Callable[[Connection, list[str]], None],
        on_rejected: Callable[[Connection, dict[str, str]], None],
    ) -> None:
        """Subscribe `symbols` in chunks and wait for every ack.

        `on_acked` / `on_rejected` run as each request is answered (the journal gets exact
        times). A request refused as a whole without naming symbols is retried one symbol per
        request so that one bad symbol does not take its whole chunk down. No ack within
        `ack_timeout_s` raises `ConnectFailed` (the runner reconnects).
        """
        todo = [list(symbols)]
        single = False
        while todo:
            requests: list[PendingRequest] = []
            size = 1 if single else self.adapter.max_symbols_per_request
            for batch in todo:
                for i in range(0, len(batch), size):
                    chunk = batch[i : i + size]
                    requests.append(
                        await self._send_request(chunk, self.adapter.subscribe, on_acked, on_rejected)
                    )
            todo = []
            for request in requests:
                await self._wait(request.done, self.ack_timeout_s, f"no ack for request {request.req_id}")
                if self.ended.is_set():
                    raise ConnectFailed(f"ended while subscribing: {self.end_reason}")
                if request.isolate:
                    todo.append(request.isolate)
            single = True

    async def unsubscribe(self, symbols: Sequence[str]) -> None:
        """Send unsubscribe requests; the symbols stop counting as subscribed at once."""
        self.subscribed.difference_update(symbols)
        size = self.adapter.max_symbols_per_request
        loop = asyncio.get_running_loop()
        for i in range(0, len(symbols), size):
            request = await self._send_request(list(symbols[i : i + size]), self.adapter.unsubscribe)
            # Nobody waits for an unsubscribe ack (some exchanges send none): forget it in time
            # so that it cannot soak up an unattributed answer meant for a later subscribe.
            loop.call_later(self.ack_timeout_s, self._book.discard, request.req_id)

    async def _send_request(
        self,
        chunk: list[str],
        build: Callable[[Sequence[str], str], list[str]],
        on_acked: Callable[[Connection, list[str]], None] | None = None,
        on_rejected: Callable[[Connection, dict[str, str]], None] | None = None,
    ) -> PendingRequest:
        req_id = str(next(_req_ids))
        request = PendingRequest(req_id, tuple(chunk), asyncio.get_running_loop().create_future())
        request.context = (on_acked, on_rejected)
        self._book.add(request)
        for frame in build(chunk, req_id):
            await self.send(frame)
        return request

    def _answer(self, ctl: Control) -> None:
        answer = self._book.answer(ctl)
        request = answer.request
        if request is None:
            if not ctl.ok:
                self._unmatched_errors += 1
                if self._unmatched_errors <= 5 or self._unmatched_errors % 1000 == 0:
                    self.log.warning("error frame (%d so far): %s", self._unmatched_errors, ctl.message)
            return
        on_acked, on_rejected = request.context
        # Report each answer at once, not when the whole request is settled: the journal's
        # subscribe time must be the ack time, since trades of an acked symbol follow right away
        # (OKX answers each symbol of a request separately, with trades in between).
        if on_acked is not None and answer.acked:
            self.subscribed.update(answer.acked)
            on_acked(self, answer.acked)
        if on_rejected is not None and answer.rejected:
            on_rejected(self, answer.rejected)
        if answer.complete and not request.done.done():
            request.done.set_result(None)

    # -- sending, reading, keep-alive --------------------------------------------------------

    async def send(self, frame: str) -> None:
        """Send one control frame within the exchange's rate limit."""
        ws = self._ws
        if ws is None:
            raise ConnectFailed("not open")
        await self.limiter.acquire()
        try:
            await ws.send(frame)
        except ConnectionClosed:
            raise ConnectFailed(self.end_reason or "closed while sending") from None

    async def _read(self) -> None:
        ws = self._ws
        assert ws is not None
        process = self._process
        clock = self._clock
        ns_per_us = NS_PER_US  # a local: this loop runs once per frame
        reason = "closed"
        try:
            while True:
                frame = await ws.recv()
                self.last_frame_us = recv_us = clock() // ns_per_us
                ctl = process(frame, recv_us)
                if ctl is not None:
                    self._control(ctl)
        except ConnectionClosed as exc:
            reason = _close_reason(exc)
        except asyncio.CancelledError:
            reason = self.end_reason or "cancelled"
            raise
        except Exception as exc:  # a bug in a callback: end this connection, the runner retries
            self.log.exception("reader failed")
            reason = f"reader failed: {exc!r}"
        finally:
            self._finish(reason)

    def _control(self, ctl: Control) -> None:
        kind = ctl.kind
        if ctl.reply is not None:
            self._spawn(self._send_quietly(ctl.reply), "reply")
        if kind in ("ack", "error"):
            self._answer(ctl)
        elif kind == "welcome":
            self._welcome.set()
        elif kind == "reconnect":
            self.log.info("server announced a close (%s)", ctl.message or "notice")
            self._on_notice(self)

    async def _send_quietly(self, frame: str) -> None:
        with contextlib.suppress(ConnectFailed):
            await self.send(frame)

    async def _keepalive(self, target: ConnectTarget) -> None:
        interval_s = target.ping_interval_s or self.adapter.ping_interval_s
        ping = self.adapter.ping
        ws = self._ws
        assert ws is not None
        while True:
            await asyncio.sleep(interval_s)
            await self.limiter.acquire()
            try:
                if ping is not None:
                    await ws.send(ping(self._clock() // NS_PER_US // US_PER_MS))
                else:
                    await ws.ping()  # the pong only refreshes last_rx_s; the watchdog judges
            except ConnectionClosed:
                return

    async def _watchdog(self) -> None:
        ws = self._ws
        assert ws is not None
        quiet_s = self.adapter.quiet_timeout_s
        while True:
            await asyncio.sleep(min(1.0, quiet_s / 4))
            silent_s = time.monotonic() - ws.last_rx_s
            if silent_s > quiet_s:
                self.abort(f"silent for {silent_s:.1f} s")
                return

    def _spawn(self, coro: Any, what: str) -> None:
        task = asyncio.create_task(coro, name=f"{self.name} {what}")
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    # -- ending ------------------------------------------------------------------------------

    def abort(self, reason: str) -> None:
        """Drop the connection at once without a closing handshake (it is dead anyway)."""
        if self.end_reason is None:
            self.end_reason = reason
        ws = self._ws
        if ws is not None and ws.transport is not None:
            ws.transport.abort()
        else:
            self._finish(reason)

    async def close(self, reason: str) -> None:
        """Close with a handshake (bounded by CLOSE_TIMEOUT_S) and wait until it is over."""
        if not self.ended.is_set():
            self.closed_by_us = True
        if self.end_reason is None:
            self.end_reason = reason
        ws = self._ws
        if ws is None:
            self._finish(reason)
            return
        with contextlib.suppress(Exception):
            await ws.close()
        reader = self._tasks[0] if self._tasks else None
        if reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(reader), CLOSE_TIMEOUT_S)
        self._finish(reason)

    def _finish(self, reason: str) -> None:
        if self.end_reason is None:
            self.end_reason = reason
        self.ended.set()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current and not task.done():
                task.cancel()
        self._book.close()  # waiters see `ended` and fail
        self.lost = frozenset(self.subscribed)  # what it listened to when it ended
        self.subscribed.clear()
        if not self._end_reported:
            self._end_reported = True
            self._on_end(self)


def _close_reason(exc: ConnectionClosed) -> str:
    rcvd = exc.rcvd
    if rcvd is not None:
        return f"closed by server: code {rcvd.code}" + (f" ({rcvd.reason})" if rcvd.reason else "")
    return "connection lost" if exc.sent is None else f"closed: code {exc.sent.code}"
