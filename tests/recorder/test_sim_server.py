"""The local HTTP and WebSocket exchange servers, against real clients on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from helpers.json_exchange import instrument, make_protocol, rows_for

from pumpwatch.recorder.sim.cluster import SimCluster
from pumpwatch.recorder.sim.http import LocalHttpServer, Request
from pumpwatch.recorder.sim.protocol import HttpResponse
from pumpwatch.recorder.sim.server import SimExchange


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


def test_http_server_close_with_an_open_keep_alive_client_logs_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Python 3.11's start_server logs "Exception in callback ... CancelledError" for a cancelled
    # per-connection task; closing must end those connections without such a traceback.
    async def main() -> bytes:
        server = LocalHttpServer(lambda r: HttpResponse(200, b"ok"))
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"Connection: keep-alive" in head
        assert await reader.readexactly(2) == b"ok"
        started = time.monotonic()
        await server.close()  # the client still holds its keep-alive connection open
        assert time.monotonic() - started < 1.0
        rest = await asyncio.wait_for(reader.read(), 1.0)  # the server closed its side
        writer.close()
        for _ in range(5):  # let done-callbacks of the finished connection tasks run
            await asyncio.sleep(0.01)
        assert server.requests == 1
        return rest

    with caplog.at_level(logging.DEBUG):
        assert asyncio.run(main()) == b""
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == [], [r.getMessage() for r in errors]


def test_http_server_close_during_a_stuck_handler_cancels_quietly_after_the_grace(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pumpwatch.recorder.sim import http as http_module

    monkeypatch.setattr(http_module, "CLOSE_GRACE_S", 0.1)

    async def main() -> float:
        entered = asyncio.Event()

        async def stuck(_request: Request) -> HttpResponse:
            entered.set()
            await asyncio.Event().wait()  # never answers
            raise AssertionError("unreachable")

        server = LocalHttpServer(stuck)
        await server.start()
        _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(entered.wait(), 1.0)
        started = time.monotonic()
        await server.close()
        took_s = time.monotonic() - started
        writer.close()
        for _ in range(5):
            await asyncio.sleep(0.01)
        assert server.requests == 0
        return took_s

    with caplog.at_level(logging.DEBUG):
        took_s = asyncio.run(main())
    assert 0.09 <= took_s < 1.0
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == [], [r.getMessage() for r in errors]


# -- SimExchange, driven by a plain websockets client speaking the test protocol ----------------


async def _client(url: str) -> Any:
    from websockets.asyncio.client import connect

    return await connect(url, proxy=None, open_timeout=2, ping_interval=None, close_timeout=1)


async def _recv_json(ws: Any, timeout_s: float = 2.0) -> Any:
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout_s))


def test_sim_exchange_subscribe_publish_and_record() -> None:
    async def main() -> None:
        insts = [instrument(b) for b in ("AAA", "BBB")]
        async with SimExchange(make_protocol(), insts) as ex:
            assert ex.ws_url.startswith("ws://127.0.0.1:")
            ws = await _client(ex.ws_url + "/ws")
            await ws.send('{"op":"sub","id":"1","args":["AAAUSDT"]}')
            assert await _recv_json(ws) == {"e": "ack", "id": "1", "ok": True, "rejected": [], "msg": ""}
            rows = rows_for(["AAAUSDT", "BBBUSDT"], 0, 4)
            ex.publish(rows)
            msg = await _recv_json(ws)
            assert msg["e"] == "trade"
            assert [d["i"] for d in msg["d"]] == ["0", "2"]  # only the subscribed symbol
            assert msg["d"][0] == {
                "s": "AAAUSDT",
                "t": rows[0][0],
                "p": "1.0",
                "q": "0.5",
                "S": "sell",
                "i": "0",
            }
            await asyncio.sleep(0.05)
            assert ex.sent_rows("1") == [rows[0], rows[2]]
            assert ex.sent_rows() == [rows[0], rows[2]]
            assert (ex.connections, ex.subscribes, ex.messages_in, ex.frames_out) == (1, 1, 1, 2)
            assert [s.subscribed for s in ex.sessions()] == [{"AAAUSDT"}]
            await ws.send('{"op":"unsub","id":"2","args":["AAAUSDT"]}')
            assert (await _recv_json(ws))["id"] == "2"
            ex.publish(rows)
            ex.send_raw("garbage!")
            assert await asyncio.wait_for(ws.recv(), 2) == "garbage!"  # no trade frame before it
            assert ex.unsubscribes == 1
            await ws.close()

    asyncio.run(main())


def test_sim_exchange_faults() -> None:
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    async def main() -> None:
        insts = [instrument(b) for b in ("AAA", "BAD")]
        async with SimExchange(make_protocol(), insts, lifetime_s=0.3, shutdown_grace_s=0.1) as ex:
            # Refused handshakes, then a wrong path refused by the protocol itself.
            ex.refuse_connections(1)
            with pytest.raises(InvalidStatus) as refused:
                await _client(ex.ws_url + "/ws")
            assert refused.value.response.status_code == 503
            with pytest.raises(InvalidStatus) as wrong:
                await _client(ex.ws_url + "/nope")
            assert wrong.value.response.status_code == 404
            assert ex.refused == 2 and ex.connections == 0
            # Rejection uses the protocol's error shape.
            ex.reject(["BADUSDT"])
            ws = await _client(ex.ws_url + "/ws")
            await ws.send('{"op":"sub","id":"5","args":["AAAUSDT","BADUSDT"]}')
            ack = await _recv_json(ws)
            assert ack == {
                "e": "ack",
                "id": "5",
                "ok": False,
                "rejected": ["BADUSDT"],
                "msg": "no such symbol",
            }
            # Lifetime: the shutdown notice, then a normal close 0.1 s later.
            t0 = time.monotonic()
            assert await _recv_json(ws, 1.0) == {"e": "shutdown"}
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 1.0)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
            assert 0.05 < time.monotonic() - t0 < 0.5

    asyncio.run(main())


def test_sim_exchange_drop_stall_and_idle() -> None:
    from websockets.exceptions import ConnectionClosed

    async def main() -> None:
        insts = [instrument("AAA")]
        async with SimExchange(make_protocol(), insts, idle_timeout_s=0.3) as ex:
            ws = await _client(ex.ws_url + "/ws")
            await ws.send('{"op":"sub","id":"1","args":["AAAUSDT"]}')
            await _recv_json(ws)
            # Stall: nothing comes back, not even pongs, until it ends; then the backlog arrives.
            ex.stall(0.4)
            await ws.send('{"op":"ping","ts":7}')
            ex.publish(rows_for(["AAAUSDT"], 0, 1))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.3)
            assert ex.sent_rows() == []
            got = [await _recv_json(ws, 1.0), await _recv_json(ws, 1.0)]
            assert {m["e"] for m in got} == {"trade", "pong"}
            assert len(ex.sent_rows()) == 1
            # Idle: a client that says nothing for 0.3 s is closed with 4000.
            with pytest.raises(ConnectionClosed) as idle:
                await asyncio.wait_for(ws.recv(), 2.0)
            assert idle.value.rcvd is not None and idle.value.rcvd.code == 4000
            # Drop: the TCP connection ends without a closing handshake.
            ws2 = await _client(ex.ws_url + "/ws")
            await ws2.send('{"op":"ping","ts":1}')
            await _recv_json(ws2)
            ex.drop_all()
            with pytest.raises(ConnectionClosed) as dropped:
                await asyncio.wait_for(ws2.recv(), 2.0)
            assert dropped.value.rcvd is None
            assert ex.connections == 2

    asyncio.run(main())


def test_sim_exchange_rest_routes_and_snapshot() -> None:
    async def main() -> None:
        insts = [instrument("AAA")]
        async with SimExchange(make_protocol(token=True, snapshot=True), insts) as ex:
            async with httpx.AsyncClient(base_url=ex.rest_url, trust_env=False) as client:
                token = (await client.post("/token")).json()["token"]
                missing = await client.get("/token")
            assert missing.status_code == 404
            rows = rows_for(["AAAUSDT"], 0, 30)
            ex.publish(rows)  # nobody subscribed yet: kept as recent history only
            ws = await _client(f"{ex.ws_url}/ws?token={token}")
            await ws.send('{"op":"sub","id":"1","args":["AAAUSDT"]}')
            assert (await _recv_json(ws))["e"] == "ack"
            replay = await _recv_json(ws)
            assert [d["i"] for d in replay["d"]] == [str(i) for i in range(10, 30)]  # the last 20
            assert ex.sent_rows() == []  # replays are not live trades
            await ws.close()

    asyncio.run(main())


# -- SimCluster ---------------------------------------------------------------------------------


def test_sim_cluster_publishes_and_points_the_recorder_at_itself(tmp_path: Path) -> None:
    from pumpwatch.recorder.symbols import load_symbols
    from pumpwatch.settings import load_settings

    async def main() -> None:
        streams = ["binance_spot", "okx_futures"]
        async with SimCluster(streams, ["BTC", "0G"], trades_per_s=500.0, tick_s=0.02) as cluster:
            over = cluster.settings_overrides()
            assert over["recorder"] == {"streams": streams}
            for s in streams:
                assert over["streams"][s] == {
                    "ws_url": cluster.exchanges[s].ws_url,
                    "rest_url": cluster.exchanges[s].rest_url,
                }
            cfg = cluster.write_config(tmp_path / "c.yaml", {"storage": {"flush_interval": "200ms"}})
            settings = load_settings(cfg)
            assert settings.storage.flush_interval_s == 0.2
            assert settings.recorder.streams == streams
            assert settings.streams["okx_futures"].ws_url == cluster.exchanges["okx_futures"].ws_url
            symbols = load_symbols(cluster.write_symbols(tmp_path / "symbols.yaml"))
            assert {s: sorted(v) for s, v in symbols.items()} == {
                "binance_spot": ["0GUSDT", "BTCUSDT"],
                "okx_futures": ["0G-USDT-SWAP", "BTC-USDT-SWAP"],
            }
            assert symbols["okx_futures"]["BTC-USDT-SWAP"].multiplier == 0.01
            await asyncio.sleep(0.5)
            assert all(n > 0 for n in cluster.published.values())
            cluster.pause()
            before = dict(cluster.published)
            await asyncio.sleep(0.1)
            assert cluster.published == before

    asyncio.run(main())


def test_sim_cluster_tick_before_start_says_so() -> None:
    cluster = SimCluster(["binance_spot"], ["BTC"])
    with pytest.raises(RuntimeError, match="before start"):
        cluster.tick()
