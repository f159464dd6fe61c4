"""Faults the local exchange servers do not make, for the few tests that need them: a minimal
local HTTP server (127.0.0.1) in front of a `SimExchange` that answers queued faults (a 5xx, a
429 without ``Retry-After``, an error body part way through paging) and passes every other
request on to the sim unchanged."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import httpx

from pumpwatch.recorder.sim.http import LocalHttpServer, Request
from pumpwatch.recorder.sim.protocol import HttpResponse

JSON = {"Content-Type": "application/json"}
_HOP = ("host", "content-length", "connection", "accept-encoding", "transfer-encoding")


@dataclass
class Fault:
    status: int
    body: bytes = b'{"code":-1003,"msg":"Too many requests."}'
    headers: dict[str, str] = field(default_factory=dict)


class FaultProxy:
    """`url` answers the next queued `faults` first, every request after the first `fail_after`
    with `fail_with`, and passes the rest to `target_url`."""

    def __init__(self, target_url: str) -> None:
        self.target_url = target_url
        self.faults: deque[Fault] = deque()
        self.fail_after: int | None = None
        self.fail_with: Fault | None = None
        self.requests = 0
        self._server = LocalHttpServer(self._handle)
        self._client = httpx.AsyncClient(base_url=target_url, trust_env=False, timeout=10)

    @property
    def url(self) -> str:
        return self._server.url

    async def __aenter__(self) -> FaultProxy:
        await self._server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._server.close()
        await self._client.aclose()

    async def _handle(self, request: Request) -> HttpResponse:
        self.requests += 1
        if self.faults:
            fault = self.faults.popleft()
            return HttpResponse(fault.status, fault.body, {**JSON, **fault.headers})
        if self.fail_after is not None and self.requests > self.fail_after and self.fail_with is not None:
            return HttpResponse(self.fail_with.status, self.fail_with.body, JSON)
        headers = {k: v for k, v in request.headers.items() if k not in _HOP}
        answer = await self._client.request(
            request.method, request.path, params=request.query, headers=headers
        )
        kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
        return HttpResponse(answer.status_code, answer.content, kept)
