"""The firing rule and its persistence."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson

from pumpwatch.recorder.upbit.notices import Notice, NoticePage
from pumpwatch.recorder.upbit.state import REFIRE_AFTER_S, WatchState
from pumpwatch.timeunits import US_PER_S as S

NOW_US = 1_790_000_000_000_000  # 2026-09-21T14:13:20Z

FRESH_S = 1800.0


def notice(nid: int, title: str, first_ago_s: float, listed_ago_s: float | None = None) -> Notice:
    first = NOW_US - int(first_ago_s * S)
    listed = NOW_US - int((listed_ago_s if listed_ago_s is not None else first_ago_s) * S)
    return Notice(nid, title, first, listed, uuid=str(900_000 + nid))


def page(*notices: Notice, fixed: tuple[Notice, ...] = ()) -> NoticePage:
    return NoticePage(list(notices), list(fixed))


def booted(tmp_path: Path, *existing: Notice) -> WatchState:
    state = WatchState(tmp_path)
    assert state.decide(page(*existing), NOW_US, FRESH_S) == []
    return state


def test_first_poll_records_and_fires_nothing(tmp_path: Path) -> None:
    state = WatchState(tmp_path)
    assert not state.bootstrapped
    fresh = notice(10, "커브(CRV) KRW, USDT 마켓 디지털 자산 추가", 5)
    assert state.decide(page(fresh), NOW_US, FRESH_S) == []
    assert state.seen_ids == {10}
    doc = orjson.loads((tmp_path / "upbit" / "state.json").read_bytes())
    assert doc["seen_ids"] == [10] and doc["fired"] == {}
    # The same page on the next poll still fires nothing.
    assert state.decide(page(fresh), NOW_US, FRESH_S) == []


def test_new_krw_listing_fires_once_with_t_first_listed_at(tmp_path: Path) -> None:
    state = booted(tmp_path, notice(1, "레이븐코인(RVN) 거래지원 종료 안내 (10/12 15:00)", 86400))
    new = notice(2, "클러스터프로토콜(CP) 신규 거래지원 안내 (KRW, BTC, USDT 마켓)", 13)
    (firing,) = state.decide(page(new), NOW_US, FRESH_S)
    assert firing.symbol == "CP"
    assert firing.trigger_us == NOW_US - 13 * S
    assert firing.detection_delay_s == 13.0
    assert firing.source() == {
        "type": "upbit",
        "notice_id": 2,
        "uuid": "900002",
        "title": "클러스터프로토콜(CP) 신규 거래지원 안내 (KRW, BTC, USDT 마켓)",
        "first_listed_at": "2026-09-21T14:13:07Z",
        "detected_at": "2026-09-21T14:13:20Z",
        "detection_delay_s": 13.0,
    }
    assert state.decide(page(new), NOW_US + 3 * S, FRESH_S) == []
    assert state.fired["CP"]["notice_id"] == 2


def test_state_survives_restart(tmp_path: Path) -> None:
    state = booted(tmp_path, notice(1, "x", 86400))
    new = notice(2, "커브(CRV) KRW, USDT 마켓 디지털 자산 추가", 5)
    assert [f.symbol for f in state.decide(page(new), NOW_US, FRESH_S)] == ["CRV"]
    again = WatchState(tmp_path)
    assert again.bootstrapped and again.seen_ids == {1, 2}
    assert again.decide(page(new), NOW_US + S, FRESH_S) == []
    # A new notice after the restart is not a bootstrap: it fires.
    other = notice(3, "바이프로스트(BFC) KRW, USDT 마켓 디지털 자산 추가", 1)
    assert [f.symbol for f in again.decide(page(other, new), NOW_US, FRESH_S)] == ["BFC"]


def test_edited_old_notice_never_fires(tmp_path: Path) -> None:
    original = notice(5, "넥소(NEXO) 신규 거래지원 안내 (KRW, USDT 마켓)", 3 * 86400)
    state = booted(tmp_path, original)
    edited = notice(
        5, "넥소(NEXO) 신규 거래지원 안내 (KRW, USDT 마켓) (거래지원 개시 시점 변경 안내)", 3 * 86400, 1
    )
    assert state.decide(page(edited), NOW_US, FRESH_S) == []


def test_unseen_but_old_notice_does_not_fire(tmp_path: Path) -> None:
    # Not on the bootstrap page (beyond per_page), edited today so it jumps to the top.
    state = booted(tmp_path, notice(9, "x", 60))
    old = notice(4, "커브(CRV) KRW, USDT 마켓 디지털 자산 추가", 2 * 86400, 2)
    assert state.decide(page(old), NOW_US, FRESH_S) == []
    assert 4 in state.seen_ids
    just_inside = notice(6, "바이프로스트(BFC) KRW, USDT 마켓 디지털 자산 추가", FRESH_S - 1)
    assert [f.symbol for f in state.decide(page(just_inside), NOW_US, FRESH_S)] == ["BFC"]


def test_non_krw_and_mixed_notices(tmp_path: Path) -> None:
    state = booted(tmp_path)
    usdt_only = notice(20, "BTC, USDT 마켓 신규 거래지원 안내 (BICO, BMT, NIL, GWEI)", 2)
    mixed = notice(
        21, "셀레스티아(TIA)(KRW, BTC, USDT 마켓), 아이오넷(IO)(BTC, USDT 마켓) 신규 거래지원 안내", 2
    )
    two = notice(
        22, "페이팔유에스디(PYUSD), 제이피와이코인(JPYC) 신규 거래지원 안내 (KRW, BTC, USDT 마켓)", 2
    )
    firings = state.decide(page(usdt_only, mixed, two), NOW_US, FRESH_S)
    assert [(f.symbol, f.notice.id) for f in firings] == [("TIA", 21), ("PYUSD", 22), ("JPYC", 22)]


def test_fixed_notices_are_ignored(tmp_path: Path) -> None:
    state = booted(tmp_path)
    pinned = notice(30, "커브(CRV) KRW, USDT 마켓 디지털 자산 추가", 1)
    assert state.decide(page(fixed=(pinned,)), NOW_US, FRESH_S) == []
    assert 30 not in state.seen_ids


def test_reannounced_symbol_does_not_fire_twice(tmp_path: Path) -> None:
    state = booted(tmp_path)
    first = notice(40, "커브(CRV) KRW 마켓 디지털 자산 추가", 1)
    second = notice(41, "커브(CRV) 신규 거래지원 안내 (KRW, USDT 마켓)", 1)
    assert [f.symbol for f in state.decide(page(first), NOW_US, FRESH_S)] == ["CRV"]
    assert state.decide(page(second, first), NOW_US + 60 * S, FRESH_S) == []
    # Long after, a relisting is a new event.
    later = NOW_US + int(REFIRE_AFTER_S * S) + S
    relist = Notice(42, "커브(CRV) KRW 마켓 디지털 자산 추가", later - S, later - S)
    assert [f.symbol for f in state.decide(page(relist), later, FRESH_S)] == ["CRV"]


def test_malformed_symbol_is_dropped_with_a_log_line(tmp_path: Path, caplog) -> None:
    state = booted(tmp_path)
    bad = notice(50, "해커(../ETC), 커브(CRV) 신규 거래지원 안내 (KRW 마켓)", 1)
    with caplog.at_level(logging.WARNING, logger="pumpwatch.recorder.upbit.state"):
        firings = state.decide(page(bad), NOW_US, FRESH_S)
    assert [f.symbol for f in firings] == ["CRV"]
    assert any("../ETC" in r.getMessage() for r in caplog.records)
    assert "../ETC" not in state.fired


def test_damaged_state_file_means_a_silent_first_poll(tmp_path: Path) -> None:
    path = tmp_path / "upbit" / "state.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"seen_ids": [1, 2')
    state = WatchState(tmp_path)
    assert not state.bootstrapped
    assert state.decide(page(notice(3, "커브(CRV) KRW 마켓 디지털 자산 추가", 1)), NOW_US, FRESH_S) == []
    assert orjson.loads(path.read_bytes())["seen_ids"] == [3]
