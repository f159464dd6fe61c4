"""The poller against the local Upbit-shaped server (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable

import httpx

from pumpwatch.recorder.sim.upbit import UpbitSim, backlog
from pumpwatch.recorder.upbit.poller import NoticePoller, PollResult, parse_retry_after
from pumpwatch.settings import UpbitSettings


def run(coro_fn: Callable[[UpbitSim], Awaitable[None]], sim: UpbitSim | None = None) -> None:
    async def main() -> None:
        server = sim or UpbitSim(notices=backlog(int(time.time() * 1e6)))
        async with server:
            await coro_fn(server)

    asyncio.run(main())


def cfg(*hosts: str, **kw: object) -> UpbitSettings:
    base = dict(hosts=list(hosts), poll_interval_s=0.05, jitter=0.2, backoff_max_s=2.0, timeout_s=2.0)
    base.update(kw)
    return UpbitSettings(**base)  # type: ignore[arg-type]


def dead_url() -> str:
    """A local port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_request_shape_no_origin_and_etag_304() -> None:
    async def body(sim: UpbitSim) -> None:
        poller = NoticePoller(cfg(sim.url, per_page=30, category="trade", user_agent="pw-test/1"))
        first = await poller.fetch()
        assert first.status == "ok" and first.host == sim.url
        assert first.page is not None
        assert [n.id for n in first.page.notices] == [
            6487,
            6486,
            6485,
            6484,
            6483,
            6482,
        ]  # 입출금 filtered out
        req = sim.requests[0]
        assert req.path == "/api/v1/announcements"
        assert req.query == {"os": "web", "page": "1", "per_page": "30", "category": "trade"}
        assert "origin" not in req.headers and "referer" not in req.headers
        assert req.headers["accept"] == "application/json"
        assert req.headers["user-agent"] == "pw-test/1"
        assert "if-none-match" not in req.headers
        second = await poller.fetch()
        assert second.status == "not_modified" and second.page is None
        assert sim.requests[1].headers["if-none-match"].startswith('"')
        assert sim.served == {200: 1, 304: 1}
        sim.add_notice("커브(CRV) KRW, USDT 마켓 디지털 자산 추가")
        third = await poller.fetch()
        assert third.status == "ok" and third.page is not None
        assert third.page.notices[0].title == "커브(CRV) KRW, USDT 마켓 디지털 자산 추가"
        assert poller.stats.requests == 3 and poller.stats.not_modified == 1 and poller.stats.pages == 2
        await poller.aclose()

    run(body)


def test_origin_header_would_be_refused() -> None:
    # The sim mirrors the reported CDN behaviour, so the no-Origin assertion above is meaningful.
    async def body(sim: UpbitSim) -> None:
        async with httpx.AsyncClient() as client:
            resp = await client.get(
                sim.url + "/api/v1/announcements", headers={"Origin": "https://upbit.com"}
            )
        assert resp.status_code == 403

    run(body)


def test_429_with_retry_after_then_recovery(caplog) -> None:
    async def body(sim: UpbitSim) -> None:
        sim.fail_next(3, status=429, retry_after_s=0.3)
        poller = NoticePoller(cfg(sim.url, dead_url()), rng=lambda: 0.5)
        results = []
        delays = []
        with caplog.at_level(logging.INFO, logger="pumpwatch.recorder.upbit.poller"):
            for _ in range(4):
                result = await poller.fetch()
                results.append(result.status)
                delays.append(poller.next_delay_s(result))
        assert results == ["rate_limited", "rate_limited", "rate_limited", "ok"]
        # Retry-After (0.3 s) wins over the smaller backoff; rate limiting never tries the other host.
        assert delays[0] == 0.3 and delays[1] == 0.3
        assert delays[2] >= 0.3
        assert 0.04 <= delays[3] <= 0.06  # back to the poll interval with jitter
        assert poller.stats.rate_limited == 3 and poller.stats.network_errors == 0
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "rate_limited" in warnings[0].getMessage()
        assert any("again after 3 failed round(s)" in r.getMessage() for r in caplog.records)
        await poller.aclose()

    run(body)


def test_backoff_grows_capped_and_jittered() -> None:
    poller = NoticePoller(
        cfg("http://127.0.0.1:9", poll_interval_s=1.0, backoff_max_s=8.0), rng=lambda: 0.999
    )
    fail = PollResult("failed", error="timeout")
    delays = [round(poller.next_delay_s(fail), 2) for _ in range(6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    low = NoticePoller(cfg("http://127.0.0.1:9", poll_interval_s=1.0, backoff_max_s=8.0), rng=lambda: 0.0)
    assert [low.next_delay_s(fail) for _ in range(4)] == [0.5, 1.0, 2.0, 4.0]


def test_malformed_body_counted_then_fallback_host_answers() -> None:
    async def body(sim: UpbitSim) -> None:
        bad = UpbitSim()
        await bad.start()
        try:
            bad.garbage_next(5)
            poller = NoticePoller(cfg(bad.url, sim.url))
            result = await poller.fetch()
            assert result.status == "ok" and result.host == sim.url
            assert poller.stats.malformed == 1
            # The good host stays preferred afterwards.
            again = await poller.fetch(use_etag=False)
            assert again.host == sim.url and len(bad.requests) == 1
            await poller.aclose()
        finally:
            await bad.close()

    run(body)


def test_every_host_down_fails_without_raising() -> None:
    async def body(sim: UpbitSim) -> None:
        sim.fail_next(10, status=503)
        poller = NoticePoller(cfg(dead_url(), sim.url))
        result = await poller.fetch()
        assert result.status == "failed" and result.error == "HTTP 503" and result.host == sim.url
        assert poller.stats.network_errors == 1 and poller.stats.http_errors == 1
        sim.garbage_next(1, body=b"\x00\xff not json")
        sim._faults = sim._faults[-1:]  # only the garbage answer remains
        result = await poller.fetch()
        assert result.status == "failed" and "malformed" in (result.error or "")
        result = await poller.fetch()
        assert result.status == "ok"
        await poller.aclose()

    run(body)


def test_timeout_is_a_failure() -> None:
    async def body(sim: UpbitSim) -> None:
        slow = UpbitSim()
        orig = slow.handle

        async def stall(request):
            await asyncio.sleep(1.0)
            return orig(request)

        slow.handle = stall
        await slow.start()
        try:
            poller = NoticePoller(cfg(slow.url, sim.url, timeout_s=0.2))
            result = await poller.fetch()
            assert result.status == "ok" and result.host == sim.url
            assert poller.stats.network_errors == 1
            await poller.aclose()
        finally:
            await slow.close()

    run(body)


def test_parse_retry_after() -> None:
    assert parse_retry_after("7", 0.0) == 7.0
    assert parse_retry_after("1.5", 0.0) == 1.5
    assert parse_retry_after(None, 0.0) is None
    assert parse_retry_after("soon", 0.0) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10.0
