"""A local Upbit-shaped HTTP server: the announcements list and ``/v1/market/all``.

For tests, the demo and the trigger benchmark. It answers like the real hosts as far as the
public captures show (research notes §1): ``{success, data{total_pages, total_count,
notices[...], fixed_notices[...]}}`` with KST ``+09:00`` times, notices sorted by `listed_at`
descending (an edited old notice jumps to the top), ``category`` filtering, ``ETag`` and
``304 Not Modified`` on ``If-None-Match``. Faults on demand: n answers of 429 (with
``Retry-After``) or another status, garbage bodies, and a 403 for any request carrying an
``Origin`` header (as reported for the real CDN). Every request's headers are recorded.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone

import orjson

from pumpwatch.recorder.sim.http import LocalHttpServer, Request
from pumpwatch.recorder.sim.protocol import HttpResponse
from pumpwatch.timeunits import US_PER_DAY, US_PER_S

KST = timezone(timedelta(hours=9))
_CATEGORIES = {
    "trade": "거래",
    "dtw": "입출금",
    "notice": "안내",
    "digital_asset": "디지털 자산",
    "event": "이벤트",
}
_JSON = {"Content-Type": "application/json;charset=UTF-8"}


def kst_iso(ts_us: int) -> str:
    """UTC µs -> ``2026-08-21T19:19:25+09:00`` (second precision, as the API writes it)."""
    return datetime.fromtimestamp(ts_us // US_PER_S, UTC).astimezone(KST).isoformat()


@dataclass
class SimNotice:
    id: int
    title: str
    first_listed_at_us: int
    listed_at_us: int
    uuid: str | None = None
    category: str = "거래"
    need_new_badge: bool = True
    need_update_badge: bool = False

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "listed_at": kst_iso(self.listed_at_us),
            "first_listed_at": kst_iso(self.first_listed_at_us),
            "id": self.id,
        }
        if self.uuid is not None:
            out["uuid"] = self.uuid
        out.update(
            title=self.title,
            category=self.category,
            need_new_badge=self.need_new_badge,
            need_update_badge=self.need_update_badge,
        )
        return out


@dataclass
class _Fault:
    status: int
    count: int
    retry_after_s: float | None = None
    body: bytes = b""


@dataclass
class UpbitSim:
    """The server. Mutate it with `add_notice`, `edit_notice`, `fail_next`, `garbage_next`."""

    notices: list[SimNotice] = field(default_factory=list)
    fixed_notices: list[SimNotice] = field(default_factory=list)
    markets: list[dict[str, str]] = field(default_factory=list)  # /v1/market/all entries
    forbid_origin: bool = True
    requests: list[Request] = field(default_factory=list)
    served: dict[int, int] = field(default_factory=dict)  # status -> count
    _faults: list[_Fault] = field(default_factory=list)
    _server: LocalHttpServer | None = None

    async def start(self) -> None:
        self._server = LocalHttpServer(self.handle)
        await self._server.start()

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()

    async def __aenter__(self) -> UpbitSim:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return self._server.url

    # -- content -------------------------------------------------------------------------------

    def add_notice(
        self,
        title: str,
        *,
        at_us: int | None = None,
        notice_id: int | None = None,
        uuid: str | None = None,
        category: str = "거래",
    ) -> SimNotice:
        """Publish a notice first listed at `at_us` (default: now)."""
        at_us = int(time.time() * 1e6) if at_us is None else at_us
        at_us -= at_us % US_PER_S  # the API has second precision
        nid = notice_id if notice_id is not None else max((n.id for n in self.notices), default=6000) + 1
        notice = SimNotice(
            nid, title, at_us, at_us, uuid if uuid is not None else str(100_000_000 + nid * 7919)
        )
        notice.category = category
        self.notices.append(notice)
        return notice

    def edit_notice(self, notice_id: int, *, title: str | None = None, at_us: int | None = None) -> SimNotice:
        """Edit a notice as Upbit does: `listed_at` moves, `id` and `first_listed_at` stay."""
        at_us = int(time.time() * 1e6) if at_us is None else at_us
        for i, notice in enumerate(self.notices):
            if notice.id == notice_id:
                edited = replace(
                    notice,
                    title=title if title is not None else notice.title,
                    listed_at_us=at_us - at_us % US_PER_S,
                    need_new_badge=False,
                    need_update_badge=True,
                )
                self.notices[i] = edited
                return edited
        raise KeyError(notice_id)

    def fail_next(self, count: int, status: int = 429, retry_after_s: float | None = None) -> None:
        """Answer the next `count` list requests with `status` (and ``Retry-After``)."""
        self._faults.append(_Fault(status, count, retry_after_s))

    def garbage_next(self, count: int, body: bytes = b'{"success": true, "data": {"notices": "oops"') -> None:
        """Answer the next `count` list requests with 200 and a malformed body."""
        self._faults.append(_Fault(200, count, body=body))

    def list_body(self, query: dict[str, str]) -> bytes:
        """The JSON body the list endpoint returns for these query parameters."""
        category = query.get("category", "all")
        wanted = _CATEGORIES.get(category)
        items = [n for n in self.notices if wanted is None or n.category == wanted]
        items.sort(key=lambda n: (n.listed_at_us, n.id), reverse=True)
        page = max(1, _int(query.get("page"), 1))
        per_page = min(max(1, _int(query.get("per_page"), 20)), 50)
        chunk = items[(page - 1) * per_page : page * per_page]
        doc = {
            "success": True,
            "data": {
                "total_pages": max(1, -(-len(items) // per_page)),
                "total_count": len(items),
                "notices": [n.to_json() for n in chunk],
                "fixed_notices": [n.to_json() for n in self.fixed_notices] if page == 1 else [],
            },
        }
        return orjson.dumps(doc)

    # -- HTTP ----------------------------------------------------------------------------------

    def handle(self, request: Request) -> HttpResponse:
        self.requests.append(request)
        response = self._route(request)
        self.served[response.status] = self.served.get(response.status, 0) + 1
        return response

    def _route(self, request: Request) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return HttpResponse(405, b'{"error":{"message":"method not allowed"}}', _JSON)
        if request.path == "/v1/market/all":
            details = request.query.get("is_details", request.query.get("isDetails", "")).lower() == "true"
            return HttpResponse(200, orjson.dumps([_market(m, details) for m in self.markets]), _JSON)
        if request.path != "/api/v1/announcements":
            return HttpResponse(404, b'{"success":false,"error":{"code":404}}', _JSON)
        if self.forbid_origin and "origin" in request.headers:
            return HttpResponse(
                403, b"<html><body>403 Forbidden</body></html>", {"Content-Type": "text/html"}
            )
        if self._faults:
            fault = self._faults[0]
            fault.count -= 1
            if fault.count <= 0:
                self._faults.pop(0)
            headers = dict(_JSON)
            if fault.retry_after_s is not None:
                headers["Retry-After"] = f"{fault.retry_after_s:g}"
            body = fault.body or orjson.dumps(
                {"error": {"name": "too_many_requests", "status": fault.status}}
            )
            return HttpResponse(fault.status, body, headers)
        body = self.list_body(request.query)
        etag = '"' + hashlib.sha1(body).hexdigest()[:20] + '"'
        headers = {**_JSON, "ETag": etag, "Cache-Control": "max-age=0"}
        if request.headers.get("if-none-match") == etag:
            return HttpResponse(304, b"", {"ETag": etag})
        return HttpResponse(200, body, headers)


def _market(entry: dict[str, str], details: bool) -> dict[str, object]:
    """One ``/v1/market/all`` entry; ``is_details=true`` adds the (all-clear) market_event."""
    if not details:
        return dict(entry)
    caution = dict.fromkeys(
        (
            "PRICE_FLUCTUATIONS",
            "TRADING_VOLUME_SOARING",
            "DEPOSIT_AMOUNT_SOARING",
            "GLOBAL_PRICE_DIFFERENCES",
            "CONCENTRATION_OF_SMALL_ACCOUNTS",
        ),
        False,
    )
    return {**entry, "market_event": {"warning": False, "caution": caution}}


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


# Real titles (lion-coin and crypto-pulse captures) as an old backlog, so that the first poll
# has something to record without firing.
BACKLOG_TITLES: tuple[tuple[str, str], ...] = (
    ("커브(CRV) KRW, USDT 마켓 디지털 자산 추가", "거래"),
    ("BTC, USDT 마켓 신규 거래지원 안내 (BICO, BMT, NIL, GWEI)", "거래"),
    ("만트라(MANTRA) 거래 유의 종목 지정 안내", "거래"),
    ("넥소(NEXO) 신규 거래지원 안내 (USDT 마켓)", "거래"),
    ("클러스터프로토콜(CP) 신규 거래지원 안내 (KRW, BTC, USDT 마켓)", "거래"),
    ("레이븐코인(RVN) 거래지원 종료 안내 (10/12 15:00)", "거래"),
    ("메가이더(MEGA) 입출금 일시 중단 안내 (08/25 09:00 ~)", "입출금"),
)


def backlog(
    now_us: int, titles: Sequence[tuple[str, str]] = BACKLOG_TITLES, first_id: int = 6480
) -> list[SimNotice]:
    """Old notices, one per day going back from two days before `now_us`."""
    out = []
    for i, (title, category) in enumerate(titles):
        at_us = now_us - (2 + i) * US_PER_DAY
        at_us -= at_us % US_PER_S
        out.append(
            SimNotice(first_id + len(titles) - i, title, at_us, at_us, str(700_000_000 + i), category, False)
        )
    return out


def krw_markets(symbols: Iterable[str], other: Iterable[str] = ()) -> list[dict[str, str]]:
    """``/v1/market/all`` entries: ``KRW-<sym>`` for `symbols`, ``USDT-<sym>`` for `other`."""
    out = [{"market": f"KRW-{s}", "korean_name": s, "english_name": s} for s in symbols]
    out += [{"market": f"USDT-{s}", "korean_name": s, "english_name": s} for s in other]
    return out
