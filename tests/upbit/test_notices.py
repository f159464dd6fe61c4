"""Parsing the announcements list response (shape of the verbatim captures)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pumpwatch.errors import ParseError
from pumpwatch.recorder.upbit.notices import parse_page, parse_time_us
from pumpwatch.utctime import format_utc

FIXTURE = Path(__file__).parent.parent / "fixtures" / "upbit" / "announcements_trade.json"


def us(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1_000_000)


def test_fixture_page_field_by_field() -> None:
    page = parse_page(FIXTURE.read_bytes())
    assert page.total_count == 773
    assert page.bad_notices == 0
    assert [n.id for n in page.notices] == [6580, 6562, 6560, 6561, 6558, 6555, 6540]
    first = page.notices[0]
    assert first.uuid == "1580532257"
    assert first.title.startswith("페이팔유에스디(PYUSD), 제이피와이코인(JPYC) 신규 거래지원 안내")
    assert first.category == "거래"
    assert first.first_listed_at_us == us("2026-09-17T00:48:01+00:00")  # 09:48:01 KST
    assert first.listed_at_us == us("2026-09-17T05:50:12+00:00")
    assert first.edited is True
    assert (first.need_new_badge, first.need_update_badge) == (False, True)
    cp = page.notices[5]
    assert (cp.id, cp.uuid, cp.edited) == (6555, "316864820", False)
    assert page.notices[-1].uuid is None  # uuid is optional (2025 captures lack it)
    (fixed,) = page.fixed_notices
    assert (fixed.id, fixed.uuid, fixed.category) == (2895, "2895", "안내")
    assert fixed.first_listed_at_us == us("2022-08-25T11:00:02+00:00")


def test_time_conversion_kst_to_utc() -> None:
    assert parse_time_us("2026-08-21T19:19:25+09:00") == us("2026-08-21T10:19:25+00:00")
    assert parse_time_us("2026-08-21T19:19:25") == us("2026-08-21T10:19:25+00:00")  # no offset: KST
    assert parse_time_us("2026-08-21T10:19:25Z") == us("2026-08-21T10:19:25+00:00")
    assert format_utc(us("2026-08-21T10:19:25+00:00")) == "2026-08-21T10:19:25Z"
    assert format_utc(us("2026-08-21T10:19:25+00:00") + 250_000) == "2026-08-21T10:19:25.25Z"
    for bad in (None, 17, "yesterday", ""):
        with pytest.raises(ParseError):
            parse_time_us(bad)


def test_malformed_entries_are_counted_and_skipped() -> None:
    doc = orjson.loads(FIXTURE.read_bytes())
    notices = doc["data"]["notices"]
    notices[1]["id"] = "6562"  # a string id
    notices[2]["first_listed_at"] = "not a time"
    notices[3]["title"] = None
    notices.append(["not", "an", "object"])
    page = parse_page(orjson.dumps(doc))
    assert page.bad_notices == 4
    assert [n.id for n in page.notices] == [6580, 6558, 6555, 6540]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>502 Bad Gateway</html>",
        b'{"success": true, "data": {"notices": "oops"',
        b"[]",
        b'{"success": true}',
        b'{"success": true, "data": {"notices": {}}}',
        b'{"success": false, "error": {"code": 500}}',
    ],
)
def test_unexpected_bodies_raise_parse_error(body: bytes) -> None:
    with pytest.raises(ParseError):
        parse_page(body)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_parse_error(body: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_page(body)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=10),
        lambda c: st.lists(c) | st.dictionaries(st.text(max_size=8), c),
        max_leaves=20,
    )
)
def test_arbitrary_json_notices_raise_only_parse_error(value: object) -> None:
    body = orjson.dumps({"success": True, "data": {"notices": [value], "fixed_notices": []}})
    page = parse_page(body)
    assert len(page.notices) + page.bad_notices == 1


def test_format_utc_is_utc() -> None:
    ts = int(datetime(2025, 9, 22, 4, 50, tzinfo=UTC).timestamp() * 1e6)
    assert format_utc(ts) == "2025-09-22T04:50:00Z"
