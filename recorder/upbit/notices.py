"""The announcements list response -> `Notice` records (pure).

Shape (verbatim capture, lion-coin ``tests/fixtures/upbit-notices.json``, Aug 2026)::

    {"success": true,
     "data": {"total_pages": 192, "total_count": 5748,
      "notices": [{"listed_at": "2026-08-21T21:50:05+09:00",
                   "first_listed_at": "2026-08-21T19:19:25+09:00",
                   "id": 6496, "uuid": "898944907",
                   "title": "넥소(NEXO) 신규 거래지원 안내 (USDT 마켓) (거래지원 개시 시점 변경 안내)",
                   "category": "거래", "need_new_badge": false, "need_update_badge": true}],
      "fixed_notices": [...]}}

`listed_at` moves on every edit and the list is sorted by it; `first_listed_at` is the original
publication time and `id` never changes, so those two are what the watcher uses. `uuid` is
missing in some captures. Times carry an explicit ``+09:00`` (KST) and are converted to UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson

from pumpwatch.errors import ParseError

KST = timezone(timedelta(hours=9), "KST")


@dataclass(frozen=True)
class Notice:
    """One announcement; times in UTC microseconds."""

    id: int
    title: str
    first_listed_at_us: int
    listed_at_us: int
    uuid: str | None = None
    category: str = ""
    need_new_badge: bool = False
    need_update_badge: bool = False

    @property
    def edited(self) -> bool:
        return self.listed_at_us != self.first_listed_at_us


@dataclass
class NoticePage:
    """One page of the list. `bad_notices` counts entries skipped as malformed."""

    notices: list[Notice] = field(default_factory=list)
    fixed_notices: list[Notice] = field(default_factory=list)
    total_count: int | None = None
    bad_notices: int = 0


def parse_time_us(value: object) -> int:
    """``"2026-08-21T19:19:25+09:00"`` -> UTC epoch microseconds.

    A time without an offset is read as KST, the zone the API writes in.
    """
    if not isinstance(value, str):
        raise ParseError(f"expected an ISO-8601 time string, got {type(value).__name__}")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ParseError(f"bad time {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=KST)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def parse_notice(raw: object) -> Notice:
    """One entry of ``notices`` / ``fixed_notices``; `ParseError` if a required field is wrong."""
    if not isinstance(raw, dict):
        raise ParseError("notice is not an object")
    nid = raw.get("id")
    if isinstance(nid, bool) or not isinstance(nid, int):
        raise ParseError(f"notice id is not an integer: {nid!r}")
    title = raw.get("title")
    if not isinstance(title, str):
        raise ParseError(f"notice {nid}: title is not a string")
    first = parse_time_us(raw.get("first_listed_at"))
    listed_raw = raw.get("listed_at")
    listed = parse_time_us(listed_raw) if listed_raw is not None else first
    uuid = raw.get("uuid")
    category = raw.get("category")
    return Notice(
        id=nid,
        title=title,
        first_listed_at_us=first,
        listed_at_us=listed,
        uuid=str(uuid) if isinstance(uuid, str | int) and not isinstance(uuid, bool) else None,
        category=category if isinstance(category, str) else "",
        need_new_badge=raw.get("need_new_badge") is True,
        need_update_badge=raw.get("need_update_badge") is True,
    )


def parse_page(body: bytes | str) -> NoticePage:
    """A whole response body. `ParseError` if it is not the announcements shape at all;
    single malformed entries are skipped and counted in `bad_notices`."""
    try:
        doc: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"response is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ParseError("response is not a JSON object")
    if doc.get("success") is False:
        raise ParseError(f"response says success=false: {str(doc.get('error'))[:200]}")
    data = doc.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("notices"), list):
        raise ParseError("response has no data.notices list")
    page = NoticePage()
    total = data.get("total_count")
    page.total_count = total if isinstance(total, int) and not isinstance(total, bool) else None
    fixed = data.get("fixed_notices")
    for raw_list, out in (
        (data["notices"], page.notices),
        (fixed if isinstance(fixed, list) else [], page.fixed_notices),
    ):
        for raw in raw_list:
            try:
                out.append(parse_notice(raw))
            except ParseError:
                page.bad_notices += 1
    return page
