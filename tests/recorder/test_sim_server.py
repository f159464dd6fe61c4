"""The local HTTP and WebSocket exchange servers, against real clients on 127.0.0.1."""

from __future__ import annotations

import asyncio

import httpx
from pumpwatch.recorder.sim.http import LocalHttpServer, Request
from pumpwatch.recorder.sim.protocol import HttpResponse


async def _echo(request: Request) -> HttpResponse:
    if request.path == "/missing":
        return HttpResponse(404, b'{"error":"not found"}')
    if request.path == "/boom":
        raise RuntimeError("handler bug")
    body = (
        f"{request.method} {request.path} q={sorted(request.query.items())} "
        f"h={request.headers.get('x-token')} b={request.body.decode()}"
    )
    return HttpResponse(200, body.encode(), {"Content-Type": "text/plain", "X-Echo": "1"})


def test_http_server_serves_keep_alive_requests() -> None:
    async def main() -> None:
        async with LocalHttpServer(_echo) as server:
            assert server.url.startswith("http://127.0.0.1:")
            assert server.port > 0
            async with httpx.AsyncClient(base_url=server.url) as client:
                r1 = await client.post(
                    "/api/v1/bullet-public?a=1&b=x%20y", content=b"hello", headers={"X-Token": "t1"}
                )
                r2 = await client.get("/missing")
                r3 = await client.get("/boom")
                r4 = await client.get("/plain")
            assert r1.status_code == 200
            assert r1.text == "POST /api/v1/bullet-public q=[('a', '1'), ('b', 'x y')] h=t1 b=hello"
            assert r1.headers["x-echo"] == "1"
            assert r1.headers["content-type"] == "text/plain"
            assert r2.status_code == 404
            assert r2.json() == {"error": "not found"}
            assert r3.status_code == 500
            assert r4.text == "GET /plain q=[] h=None b="
            assert server.requests == 4

    asyncio.run(main())


def test_http_server_sync_handler_and_raw_keep_alive() -> None:
    def handler(request: Request) -> HttpResponse:
        return HttpResponse(200, request.body[::-1])

    async def main() -> None:
        server = LocalHttpServer(handler)
        await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            # Two requests on one connection, the second with a chunked body.
            writer.write(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
            writer.write(
                b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"2\r\nde\r\n1\r\nf\r\n0\r\n\r\n"
            )
            await writer.drain()
            head1 = await reader.readuntil(b"\r\n\r\n")
            assert head1.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"Content-Length: 3" in head1
            assert b"Connection: keep-alive" in head1
            assert await reader.readexactly(3) == b"cba"
            head2 = await reader.readuntil(b"\r\n\r\n")
            assert b"Content-Length: 3" in head2
            assert await reader.readexactly(3) == b"fed"
            writer.write(b"GARBAGE\r\n\r\n")
            await writer.drain()
            head3 = await reader.readuntil(b"\r\n\r\n")
            assert head3.startswith(b"HTTP/1.1 400 Bad Request")
            assert b"Connection: close" in head3
            writer.close()
        finally:
            await server.close()

    asyncio.run(main())


def test_http_server_honours_connection_close() -> None:
    async def main() -> None:
        async with LocalHttpServer(lambda r: HttpResponse(200, b"ok")) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            await writer.drain()
            data = await reader.read()  # the server closes after one response
            assert data.endswith(b"\r\n\r\nok")
            assert b"Connection: close" in data
            writer.close()

    asyncio.run(main())
