"""Polls the Upbit announcements list politely (research notes §1, "Recommendation for us").

``GET {host}/api/v1/announcements?os=web&page=1&per_page=N&category=trade`` with a realistic
User-Agent, ``Accept: application/json``, ``If-None-Match`` with the last ETag (a cheap 304
when nothing changed) and **no** ``Origin`` header (a cross-origin request was answered 403).
The hosts (``api-manager.upbit.com``, then ``pub-info.upbit.com``; same shape) are tried in
order within one poll, starting from the last one that answered. 429 and 418 end the poll and
back off, honouring ``Retry-After``; 403, 404, 5xx, timeouts and connection errors fall over to
the next host, and back off once every host failed. Backoff is capped and jittered. A body
that is not the announcements shape is counted and skipped. State changes are logged once,
not per attempt.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from pumpwatch.errors import ParseError
from pumpwatch.recorder.stream.backoff import Backoff
from pumpwatch.recorder.upbit.notices import NoticePage, parse_page
from pumpwatch.settings import UpbitSettings

log = logging.getLogger(__name__)

LIST_PATH = "/api/v1/announcements"
RATE_LIMITED = (429, 418)
MAX_RETRY_AFTER_S = 3600.0


@dataclass
class PollResult:
    """The outcome of one poll round over the hosts."""

    status: str  # "ok" | "not_modified" | "rate_limited" | "failed"
    page: NoticePage | None = None
    host: str | None = None
    retry_after_s: float | None = None
    error: str | None = None
    received_us: int = 0  # wall clock when the answer arrived


@dataclass
class PollStats:
    requests: int = 0
    pages: int = 0
    not_modified: int = 0
    rate_limited: int = 0
    http_errors: int = 0
    network_errors: int = 0
    malformed: int = 0
    bad_notices: int = 0
    by_host: dict[str, int] = field(default_factory=dict)


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now_s)


class NoticePoller:
    """One poll round at a time; `next_delay_s` says how long to wait before the next one."""

    def __init__(
        self,
        cfg: UpbitSettings,
        *,
        client: httpx.AsyncClient | None = None,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not cfg.hosts:
            raise ValueError("upbit.hosts is empty")
        self.cfg = cfg
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(cfg.timeout_s))
        self._rng = rng
        self._clock = clock
        self._backoff = Backoff(
            max(cfg.poll_interval_s, 0.05), max(cfg.backoff_max_s, cfg.poll_interval_s), rng=rng
        )
        self._preferred = 0
        self._etags: dict[str, str] = {}
        self._state = "starting"
        self._failed_rounds = 0
        self.stats = PollStats()

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    def url(self, host: str) -> str:
        return host.rstrip("/") + LIST_PATH

    def params(self) -> dict[str, str | int]:
        return {"os": "web", "page": 1, "per_page": self.cfg.per_page, "category": self.cfg.category}

    def headers(self, host: str) -> dict[str, str]:
        # Deliberately no Origin (403 from the CDN) and no Referer: this is not a browser.
        headers = {"User-Agent": self.cfg.user_agent, "Accept": "application/json"}
        etag = self._etags.get(host)
        if etag:
            headers["If-None-Match"] = etag
        return headers

    async def fetch(self, *, use_etag: bool = True) -> PollResult:
        """One round: hosts in order from the last good one until one answers usefully."""
        hosts = self.cfg.hosts
        last = PollResult("failed", error="no host tried")
        for k in range(len(hosts)):
            index = (self._preferred + k) % len(hosts)
            result = await self._fetch_host(hosts[index], use_etag=use_etag)
            if result.status in ("ok", "not_modified"):
                self._preferred = index
                self._set_state("ok", result)
                return result
            last = result
            if result.status == "rate_limited":
                break  # the other host may share the limit; asking it now makes things worse
        self._set_state(f"{last.status}: {last.error}", last)
        return last

    async def _fetch_host(self, host: str, *, use_etag: bool) -> PollResult:
        self.stats.requests += 1
        self.stats.by_host[host] = self.stats.by_host.get(host, 0) + 1
        headers = (
            self.headers(host)
            if use_etag
            else {k: v for k, v in self.headers(host).items() if k != "If-None-Match"}
        )
        try:
            resp = await self._client.get(self.url(host), params=self.params(), headers=headers)
        except httpx.TimeoutException:
            self.stats.network_errors += 1
            return PollResult("failed", host=host, error="timeout")
        except httpx.HTTPError as exc:
            self.stats.network_errors += 1
            return PollResult("failed", host=host, error=f"{type(exc).__name__}")
        received_us = int(self._clock() * 1e6)
        if resp.status_code == 304:
            self.stats.not_modified += 1
            return PollResult("not_modified", host=host, received_us=received_us)
        if resp.status_code in RATE_LIMITED:
            self.stats.rate_limited += 1
            retry_after = parse_retry_after(resp.headers.get("retry-after"), self._clock())
            return PollResult(
                "rate_limited", host=host, retry_after_s=retry_after, error=f"HTTP {resp.status_code}"
            )
        if resp.status_code != 200:
            self.stats.http_errors += 1
            return PollResult("failed", host=host, error=f"HTTP {resp.status_code}")
        try:
            page = parse_page(resp.content)
        except ParseError as exc:
            self.stats.malformed += 1
            self._etags.pop(host, None)  # get a full body next time, not a 304 for garbage
            return PollResult("failed", host=host, error=f"malformed body ({exc})"[:200])
        self.stats.pages += 1
        self.stats.bad_notices += page.bad_notices
        etag = resp.headers.get("etag")
        if etag:
            self._etags[host] = etag
        return PollResult("ok", page=page, host=host, received_us=received_us)

    def next_delay_s(self, result: PollResult) -> float:
        """The poll interval with jitter after success; capped jittered backoff after failure."""
        if result.status in ("ok", "not_modified"):
            self._backoff.reset()
            jitter = self.cfg.jitter * (2 * self._rng() - 1)
            return max(0.0, self.cfg.poll_interval_s * (1 + jitter))
        delay = self._backoff.next_delay_s()
        if result.retry_after_s is not None:
            # Honour the server; the cap only guards against a nonsense header.
            delay = max(delay, min(result.retry_after_s, MAX_RETRY_AFTER_S))
        return delay

    def _set_state(self, state: str, result: PollResult) -> None:
        if state == "ok":
            if self._state not in ("ok", "starting"):
                log.info(
                    "upbit notices: polling %s again after %d failed round(s)",
                    result.host,
                    self._failed_rounds,
                )
            elif self._state == "starting":
                log.info("upbit notices: polling %s every %.1f s", result.host, self.cfg.poll_interval_s)
            self._failed_rounds = 0
        else:
            self._failed_rounds += 1
            kind = state.split(":", 1)[0]
            if not self._state.startswith(kind):
                log.warning("upbit notices: %s (last host %s); backing off", state, result.host)
        self._state = state
