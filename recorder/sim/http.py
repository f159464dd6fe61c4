"""A minimal asyncio HTTP/1.1 server for the local exchange servers (tests, demo, benchmarks).

Only what a REST client such as httpx needs from a local stand-in: request line, headers,
``Content-Length`` or chunked request bodies, keep-alive, one response per request. Routing
(including 404 for an unknown path) is the handler's job. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from urllib.parse import parse_qsl, unquote, urlsplit

from pumpwatch.recorder.sim.protocol import HttpResponse

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
CLOSE_GRACE_S = 1.0  # how long close() lets a request in progress finish


@dataclass(frozen=True)
class Request:
    """One parsed HTTP request."""

    method: str
    path: str  # decoded path without the query string
    query: dict[str, str]  # last value wins for a repeated key
    headers: dict[str, str]  # lower-case keys
    body: bytes


Handler = Callable[[Request], HttpResponse | Awaitable[HttpResponse]]


class _BadRequest(Exception):
    pass


class LocalHttpServer:
    """Serve `handler` on ``http://host:port`` (port 0 picks a free one) until `close()`."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0) -> None:
        self._handler = handler
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}  # open connections
        self.requests = 0  # requests served, for tests

    async def start(self) -> None:
        """Bind and start accepting connections."""
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        log.debug("http server listening on %s", self.url)

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234`` (valid after `start()`)."""
        return f"http://{self._host}:{self._port}"

    async def close(self) -> None:
        """Stop listening and drop open keep-alive connections.

        Connections are ended by closing their sockets, not by cancelling their tasks: on
        Python 3.11 a cancelled connection task makes asyncio log a CancelledError traceback.
        A request still in its handler gets `CLOSE_GRACE_S`, then its task is cancelled (and
        ends quietly).
        """
        if self._server is not None:
            self._server.close()
        conns = dict(self._conns)
        for writer in conns.values():
            writer.close()
        if conns:
            _, late = await asyncio.wait(conns, timeout=CLOSE_GRACE_S)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> LocalHttpServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = writer
        try:
            while True:
                try:
                    parsed = await _read_request(reader)
                except _BadRequest as exc:
                    await _write_response(writer, HttpResponse(400, str(exc).encode()), keep_alive=False)
                    return
                if parsed is None:
                    return
                request, keep_alive = parsed
                response = await self._respond(request)
                await _write_response(writer, response, keep_alive=keep_alive, head=request.method == "HEAD")
                self.requests += 1
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            # Only close() (after its grace) or loop shutdown cancel this root task; ending it
            # normally keeps 3.11's start_server from logging the cancel as an error.
            return
        finally:
            self._conns.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(self, request: Request) -> HttpResponse:
        try:
            result = self._handler(request)
            if inspect.isawaitable(result):
                result = await result
            assert isinstance(result, HttpResponse), f"handler returned {type(result).__name__}"
            return result
        except Exception:
            log.exception("http handler failed on %s %s", request.method, request.path)
            return HttpResponse(500, b'{"error":"internal"}')


async def _read_request(reader: asyncio.StreamReader) -> tuple[Request, bool] | None:
    """The next request on a connection and whether to keep it open; None at a clean EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise _BadRequest("truncated request head") from None
    except asyncio.LimitOverrunError:
        raise _BadRequest("request head too large") from None
    if len(head) > MAX_HEADER_BYTES:
        raise _BadRequest("request head too large")
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise _BadRequest(f"malformed request line {lines[0]!r}") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _BadRequest(f"malformed header line {line!r}")
        headers[name.strip().lower()] = value.strip()
    body = await _read_body(reader, headers)
    split = urlsplit(target)
    query = dict(parse_qsl(split.query, keep_blank_values=True))
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    return Request(method.upper(), unquote(split.path) or "/", query, headers, body), keep_alive


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest("malformed chunk size") from None
            if size == 0:
                # Trailers, if any, end with an empty line.
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise _BadRequest("body too large")
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length_text = headers.get("content-length")
    if not length_text:
        return b""
    try:
        length = int(length_text)
    except ValueError:
        raise _BadRequest("malformed content-length") from None
    if length < 0 or length > MAX_BODY_BYTES:
        raise _BadRequest("bad content-length")
    return await reader.readexactly(length)


async def _write_response(
    writer: asyncio.StreamWriter, response: HttpResponse, *, keep_alive: bool, head: bool = False
) -> None:
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {response.status} {reason}"]
    given = {k.lower() for k in response.headers}
    lines.extend(f"{k}: {v}" for k, v in response.headers.items() if k.lower() not in ("content-length",))
    lines.append(f"Content-Length: {len(response.body)}")
    if "connection" not in given:
        lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if not head:
        writer.write(response.body)
    await writer.drain()
