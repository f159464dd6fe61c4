"""A local exchange on 127.0.0.1: one WebSocket server speaking a `SimProtocol`, plus its REST
routes, with fault injection for tests, benchmarks and the demo.

It knows no exchange by name. The protocol answers subscribes, pings and REST calls the way the
real exchange does; the server adds what a real exchange does to you on a bad day: abrupt
drops, stalls, refused handshakes, rejected symbols, lifetime closes with a notice, idle
timeouts and garbage frames. It also records, per connection, every trade it actually wrote
while that connection was subscribed, so a test can check that each one reached the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.sim.history import (
    DEFAULT_MAX_ROWS_PER_SYMBOL,
    HistoryService,
    RateLimit,
    history_api_for,
)
from pumpwatch.recorder.sim.http import LocalHttpServer, Request
from pumpwatch.recorder.sim.protocol import HttpResponse, SimProtocol, SimSession
from pumpwatch.segments.schema import TradeRow

log = logging.getLogger(__name__)

_CLOSE = object()  # queue item: close the connection gracefully after what is queued before it


@dataclass
class ClientLimit:
    """Connections one client (an IP) may hold open, shared by the `SimExchange`s it is given to
    (Phemex: "5 concurrent connections per client", perhaps across spot and perpetual). A
    handshake beyond it is refused with `status` (the real answer is undocumented; 429 assumed),
    with `Retry-After` when `retry_after_s` is set."""

    max_connections: int
    status: int = 429
    retry_after_s: float | None = None
    open: int = 0  # connections open now, over every exchange sharing this limit
    refused: int = 0


class _TimedServerConnection(ServerConnection):
    """Notes when the client last sent anything (frames or WebSocket pings) for idle timeouts."""

    last_rx_s: float = 0.0

    def data_received(self, data: bytes) -> None:
        self.last_rx_s = time.monotonic()
        super().data_received(data)


@dataclass
class _Peer:
    ws: _TimedServerConnection
    session: SimSession
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    flowing: asyncio.Event = field(default_factory=asyncio.Event)  # cleared while stalled
    sent: list[TradeRow] = field(default_factory=list)  # trades written while subscribed
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class SimExchange:
    """One simulated exchange market on an ephemeral port: `ws_url`, `rest_url` after `start()`.

    Fault injection: `drop_all()`, `stall(seconds)`, `reject(symbols)` / `allow(symbols)`, `lifetime_s`,
    `send_raw(frame)`, `refuse_connections(n, status, retry_after)`, `client_limit` (connections
    per client, shared between exchanges); the protocol's idle timeout and server pings
    apply (override with `idle_timeout_s` / `server_ping_interval_s`).

    Trade history (recorder/sim/history.py): every published trade is kept per symbol
    (`history_max_rows` each) and served by the exchange's REST history routes under its rate
    limits (`history_budgets` overrides them by name); `throttle(n)`, `skip_pushes(n, symbol)`
    and `history.stats` are for tests.
    """

    def __init__(
        self,
        protocol: SimProtocol,
        instruments: Sequence[Instrument],
        *,
        host: str = "127.0.0.1",
        lifetime_s: float | None = None,
        shutdown_grace_s: float = 1.0,
        idle_timeout_s: float | None = -1.0,
        server_ping_interval_s: float | None = -1.0,
        keep_recent: int = 200,
        history_max_rows: int = DEFAULT_MAX_ROWS_PER_SYMBOL,
        history_budgets: Mapping[str, RateLimit] | None = None,
        client_limit: ClientLimit | None = None,
    ) -> None:
        self.protocol = protocol
        self.instruments: dict[str, Instrument] = {i.symbol: i for i in instruments}
        self.host = host
        self.lifetime_s = lifetime_s  # close each connection after this long (notice first)
        self.shutdown_grace_s = shutdown_grace_s  # between the notice and the close
        self.idle_timeout_s = protocol.idle_timeout_s if idle_timeout_s == -1.0 else idle_timeout_s
        self.server_ping_interval_s = (
            protocol.server_ping_interval_s if server_ping_interval_s == -1.0 else server_ping_interval_s
        )
        self._recent: dict[str, deque[TradeRow]] = defaultdict(lambda: deque(maxlen=keep_recent))
        self.history = HistoryService(
            history_api_for(protocol.stream), max_rows_per_symbol=history_max_rows, budgets=history_budgets
        )
        self._peers: dict[str, _Peer] = {}
        self._sent_by_conn: dict[str, list[TradeRow]] = {}
        self._reject: set[str] = set()
        self._refuse = 0
        self._refuse_status = 503
        self._refuse_headers: dict[str, str] = {}
        self.client_limit = client_limit
        self._ids = itertools.count(1)
        self._ws_server: Server | None = None
        self._http = LocalHttpServer(self._http_handler, host)
        self._port = 0
        self._timers: set[asyncio.Task[None]] = set()
        # Counters for tests and benchmarks.
        self.connections = 0  # WebSocket handshakes accepted
        self.refused = 0  # handshakes refused (fault injection or protocol.accept)
        self.subscribes = 0  # symbol subscriptions granted
        self.unsubscribes = 0
        self.messages_in = 0  # client frames received
        self.frames_out = 0  # frames written
        self.handshake_times_s: deque[float] = deque(maxlen=10_000)  # monotonic, refused ones too
        self.message_times_s: deque[float] = deque(maxlen=10_000)  # monotonic, client frames

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on an ephemeral port (WebSocket) and another one (REST)."""
        self._ws_server = await serve(
            self._handle,
            self.host,
            0,
            process_request=self._process_request,
            ping_interval=None,  # server pings are ours, so that a stall silences them too
            ping_timeout=None,
            compression=None,
            max_size=16 * 1024 * 1024,
            create_connection=_TimedServerConnection,
        )
        self._port = self._ws_server.sockets[0].getsockname()[1]
        await self._http.start()
        log.debug("%s sim listening on %s and %s", self.protocol.stream, self.ws_url, self.rest_url)

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self._port}"

    @property
    def rest_url(self) -> str:
        return self._http.url

    async def close(self) -> None:
        """Close every connection and stop listening."""
        for timer in list(self._timers):
            timer.cancel()
        for peer in self._peers.values():
            if not peer.flowing.is_set() and peer.ws.transport is not None:
                peer.ws.transport.abort()  # stalled: it would never answer a closing handshake
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
            self._ws_server = None
        await self._http.close()

    async def __aenter__(self) -> SimExchange:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- market data ------------------------------------------------------------------------

    def publish(self, rows: Sequence[TradeRow]) -> None:
        """Send `rows` to every connection subscribed to their symbol (exchange symbols); all
        of them stay in the REST history, even those `skip_pushes` holds back."""
        for row in rows:
            self._recent[row[2]].append(row)
        rows = self.history.record(rows)
        encode = self.protocol.encode_trades
        for peer in self._peers.values():
            subscribed = peer.session.subscribed
            if not subscribed:
                continue
            mine = [r for r in rows if r[2] in subscribed]
            if mine:
                peer.queue.put_nowait((encode(mine, self.instruments), mine))

    def sent_rows(self, conn_id: str | None = None) -> list[TradeRow]:
        """Live trades written to `conn_id` (or to any connection) while it was subscribed to
        them; history replays (`protocol.snapshot`) are not included."""
        if conn_id is not None:
            return list(self._sent_by_conn.get(conn_id, ()))
        return [row for rows in self._sent_by_conn.values() for row in rows]

    @property
    def active_connections(self) -> int:
        return len(self._peers)

    def sessions(self) -> list[SimSession]:
        """The sessions of the open connections."""
        return [p.session for p in self._peers.values()]

    # -- fault injection --------------------------------------------------------------------

    def drop_all(self) -> None:
        """Cut every connection without a closing handshake (frames already written still
        arrive; queued ones are lost, and not counted as sent)."""
        for peer in list(self._peers.values()):
            self._drop(peer)

    def drop(self, conn_id: str) -> None:
        """Cut one connection like `drop_all()`."""
        peer = self._peers.get(conn_id)
        if peer is not None:
            self._drop(peer)

    def _drop(self, peer: _Peer) -> None:
        while not peer.queue.empty():
            peer.queue.get_nowait()
        transport = peer.ws.transport
        if transport is not None:
            transport.close()

    def stall(self, seconds: float) -> None:
        """Open connections go silent for `seconds`: nothing sent, nothing read (so no pong)."""
        peers = list(self._peers.values())
        for peer in peers:
            peer.flowing.clear()
            if peer.ws.transport is not None:
                peer.ws.transport.pause_reading()

        async def resume() -> None:
            await asyncio.sleep(seconds)
            for peer in peers:
                peer.ws.last_rx_s = time.monotonic()  # the server was frozen, not the client
                peer.flowing.set()
                if peer.ws.transport is not None and not peer.ws.transport.is_closing():
                    peer.ws.transport.resume_reading()

        self._timer(resume())

    def reject(self, symbols: Iterable[str]) -> None:
        """Refuse subscriptions to `symbols` from now on (the protocol's real error shape)."""
        symbols = set(symbols)
        self._reject |= symbols
        for peer in self._peers.values():
            peer.session.reject |= symbols

    def allow(self, symbols: Iterable[str]) -> None:
        """Stop refusing `symbols` (undo `reject`): a refusal that was transient."""
        symbols = set(symbols)
        self._reject -= symbols
        for peer in self._peers.values():
            peer.session.reject -= symbols

    def throttle(self, n: int) -> None:
        """The next `n` REST history calls are refused as rate limited (the exchange's refusal:
        429, Bybit 403; `Retry-After: 1`)."""
        self.history.throttle(n)

    def skip_pushes(self, n: int, symbol: str | None = None) -> None:
        """The next `n` published trades (of `symbol`, or any) reach the REST history but no
        client, while connections stay up: a hole in contiguous ids."""
        self.history.skip_pushes(n, symbol)

    def refuse_connections(self, n: int, status: int = 503, retry_after: str | None = None) -> None:
        """Refuse the next `n` WebSocket handshakes with HTTP `status` (503; 429 or 418 for a rate
        limit or a ban), with a ``Retry-After: <retry_after>`` header when given."""
        self._refuse += n
        self._refuse_status = status
        self._refuse_headers = {} if retry_after is None else {"Retry-After": retry_after}

    def send_raw(self, frame: str | bytes, conn_id: str | None = None) -> None:
        """Queue an arbitrary frame (garbage, NaN prices, unknown types) to one or every connection."""
        for cid, peer in self._peers.items():
            if conn_id is None or cid == conn_id:
                peer.queue.put_nowait(([frame], None))

    # -- internals ----------------------------------------------------------------------------

    def _timer(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    def _process_request(self, ws: ServerConnection, request: WsRequest) -> WsResponse | None:
        self.handshake_times_s.append(time.monotonic())
        if self._refuse > 0:
            self._refuse -= 1
            self.refused += 1
            response = ws.respond(self._refuse_status, "refused by fault injection\n")
            for name, value in self._refuse_headers.items():
                response.headers[name] = value
            return response
        limit = self.client_limit
        if limit is not None and limit.open >= limit.max_connections:
            self.refused += 1
            limit.refused += 1
            response = ws.respond(limit.status, "too many connections\n")
            if limit.retry_after_s is not None:
                response.headers["Retry-After"] = f"{limit.retry_after_s:g}"
            return response
        status = self.protocol.accept(request.path, request.headers)
        if status is not None:
            self.refused += 1
            return ws.respond(status, "refused\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert isinstance(ws, _TimedServerConnection) and ws.request is not None
        conn_id = str(next(self._ids))
        session = SimSession(
            conn_id, ws.request.path, ws.request.headers, self.instruments, reject=set(self._reject)
        )
        peer = _Peer(ws, session)
        peer.flowing.set()
        ws.last_rx_s = time.monotonic()
        self._peers[conn_id] = peer
        self._sent_by_conn[conn_id] = peer.sent
        self.connections += 1
        if self.client_limit is not None:
            self.client_limit.open += 1
        for frame in self.protocol.on_connect(session):
            peer.queue.put_nowait(([frame], None))
        peer.tasks.append(asyncio.create_task(self._sender(peer)))
        if self.server_ping_interval_s:
            peer.tasks.append(asyncio.create_task(self._pinger(peer, self.server_ping_interval_s)))
        if self.idle_timeout_s:
            peer.tasks.append(asyncio.create_task(self._idle(peer, self.idle_timeout_s)))
        if self.lifetime_s is not None:
            peer.tasks.append(asyncio.create_task(self._lifetime(peer, self.lifetime_s)))
        try:
            async for message in ws:
                self._on_message(peer, message)
        except ConnectionClosed:
            pass
        finally:
            if self.client_limit is not None:
                self.client_limit.open -= 1
            del self._peers[conn_id]
            session.subscribed.clear()
            for task in peer.tasks:
                task.cancel()

    def _on_message(self, peer: _Peer, message: str | bytes) -> None:
        self.messages_in += 1
        self.message_times_s.append(time.monotonic())
        session = peer.session
        before = set(session.subscribed)
        replies = self.protocol.on_message(session, message, time.time_ns() // 1_000_000)
        if replies:
            peer.queue.put_nowait((replies, None))
        added = session.subscribed - before
        self.subscribes += len(added)
        self.unsubscribes += len(before - session.subscribed)
        snapshot = self.protocol.snapshot
        if snapshot is not None:
            for symbol in sorted(added):
                recent = list(self._recent.get(symbol, ()))
                frames = snapshot(symbol, recent, self.instruments)
                if frames:
                    # Not recorded as sent: the protocol picks which of the recent trades it
                    # replays, and they are repeats of trades published before anyway.
                    peer.queue.put_nowait((frames, None))

    async def _sender(self, peer: _Peer) -> None:
        ws = peer.ws
        try:
            while True:
                item = await peer.queue.get()
                await peer.flowing.wait()
                if item is _CLOSE:
                    await ws.close(1001, "connection lifetime reached")
                    return
                frames, rows = item
                for frame in frames:
                    await ws.send(frame)
                self.frames_out += len(frames)
                if rows:
                    peer.sent.extend(rows)
        except ConnectionClosed:
            return

    async def _pinger(self, peer: _Peer, interval_s: float) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(interval_s)
                await peer.flowing.wait()
                await peer.ws.ping()

    async def _idle(self, peer: _Peer, timeout_s: float) -> None:
        ws = peer.ws
        while True:
            await asyncio.sleep(min(timeout_s / 4, 1.0))
            if peer.flowing.is_set() and time.monotonic() - ws.last_rx_s > timeout_s:
                log.debug("sim conn %s: idle for %.1f s, closing", peer.session.conn_id, timeout_s)
                with contextlib.suppress(ConnectionClosed):
                    await ws.close(4000, "idle timeout")
                return

    async def _lifetime(self, peer: _Peer, lifetime_s: float) -> None:
        await asyncio.sleep(lifetime_s)
        notice = self.protocol.shutdown_notice
        if notice is not None:
            peer.queue.put_nowait(([notice()], None))
            await asyncio.sleep(self.shutdown_grace_s)
        peer.queue.put_nowait(_CLOSE)

    async def _http_handler(self, request: Request) -> HttpResponse:
        if self.history.serves(request.method, request.path):
            return self.history.handle(request.path, request.query, request.headers, self.instruments)
        handler = self.protocol.http_routes.get((request.method, request.path))
        if handler is None:
            return HttpResponse(404, b'{"error":"no such route"}')
        return handler(request.query, request.body, list(self.instruments.values()), self.ws_url)
