"""The title parser over a labelled set of real Upbit titles, plus its edge rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from pumpwatch.recorder.upbit.titles import is_valid_symbol, normalize_title, parse_title

FIXTURE = Path(__file__).parent.parent / "fixtures" / "upbit" / "titles.yaml"
CASES = yaml.safe_load(FIXTURE.read_text(encoding="utf-8"))


def test_labelled_set_is_large_and_mixed() -> None:
    listings = [c for c in CASES if c["krw"]]
    others = [c for c in CASES if not c["krw"]]
    real = [c for c in CASES if not c.get("constructed")]
    assert len(CASES) >= 50
    assert len(real) >= 50
    assert len(listings) >= 20 and len(others) >= 20
    assert len({c["title"] for c in CASES}) == len(CASES), "duplicate titles in the fixture"


@pytest.mark.parametrize("case", CASES, ids=[c["title"][:60] for c in CASES])
def test_labelled_title(case: dict) -> None:
    info = parse_title(case["title"])
    assert list(info.krw_symbols) == case["krw"]
    assert info.krw_listing is bool(case["krw"])
    if "family" in case:
        assert info.family == case["family"]
    if "vetoed" in case:
        assert info.vetoed == case["vetoed"]
    if "coins" in case:
        assert {c.symbol: list(c.markets) for c in info.coins} == case["coins"]
    if "cancelled" in case:
        assert [c.symbol for c in info.coins if c.cancelled] == case["cancelled"]


def test_per_coin_groups_decide_krw_per_coin() -> None:
    info = parse_title(
        "셀레스티아(TIA)(KRW, BTC, USDT 마켓), 아이오넷(IO)(BTC, USDT 마켓) 신규 거래지원 안내 "
        "(주문 타입 제한 관련 안내)"
    )
    tia, io = info.coins
    assert (tia.symbol, tia.name, tia.markets, tia.krw) == ("TIA", "셀레스티아", ("KRW", "BTC", "USDT"), True)
    assert (io.symbol, io.name, io.markets, io.krw) == ("IO", "아이오넷", ("BTC", "USDT"), False)
    assert info.suffix == "(주문 타입 제한 관련 안내)"


def test_name_with_parentheses_keeps_the_name_whole() -> None:
    (coin,) = parse_title("엑스알피(리플)(XRP) KRW 마켓 디지털 자산 추가").coins
    assert (coin.name, coin.symbol, coin.markets) == ("엑스알피(리플)", "XRP", ("KRW",))


def test_cancellation_suffix_removes_only_the_named_coin() -> None:
    info = parse_title("에이(AAA), 비비(BBB) 신규 거래지원 안내 (KRW 마켓) (에이(AAA) 거래지원 취소 안내)")
    assert info.krw_symbols == ("BBB",)
    assert info.vetoed is None
    everything = parse_title("에이(AAA) 신규 거래지원 안내 (KRW 마켓) (거래지원 취소 안내)")
    assert everything.krw_symbols == ()
    assert everything.vetoed == "cancelled"


def test_suffix_words_do_not_veto_a_listing() -> None:
    # 이벤트 and 변경 in the suffix are part of many real listing titles.
    info = parse_title("커널다오(KERNEL) 신규 거래지원 안내 (KRW, USDT 마켓) (업비트 ATH 이벤트 안내)")
    assert info.krw_symbols == ("KERNEL",)
    assert info.suffix == "(업비트 ATH 이벤트 안내)"


def test_veto_in_head_wins_over_listing_phrase() -> None:
    info = parse_title("거래 유의 종목 지정 해제 블라스트(BLAST) 신규 거래지원 안내 (KRW 마켓)")
    assert info.vetoed == "warning_released"
    assert info.krw_symbols == ()
    assert not info.krw_listing


def test_malformed_symbols_are_reported_but_not_valid() -> None:
    info = parse_title("해커(../ETC) KRW 마켓 디지털 자산 추가")
    assert info.krw_symbols == ("../ETC",)
    assert info.krw_listing is False
    assert not is_valid_symbol("../ETC")
    assert not is_valid_symbol("abc")
    assert not is_valid_symbol("A" * 21)
    assert is_valid_symbol("0G") and is_valid_symbol("1INCH")


def test_normalize_title() -> None:
    assert normalize_title("  [거래]  커브（CRV）  KRW，USDT 마켓\u00a0디지털 자산 추가 ") == (
        "커브(CRV) KRW,USDT 마켓 디지털 자산 추가"
    )
    assert parse_title("[거래]  커브（CRV） KRW，USDT 마켓 디지털 자산 추가").krw_symbols == ("CRV",)


def test_spacing_variants_of_the_listing_phrase() -> None:
    assert parse_title("커브(CRV) 신규거래지원 안내 (KRW 마켓)").krw_symbols == ("CRV",)
    assert parse_title("커브(CRV) 신규 거래 지원 안내 (KRW 마켓)").krw_symbols == ("CRV",)
    assert parse_title("KRW 마켓 디지털자산 추가 (CRV)").krw_symbols == ("CRV",)


@given(st.text(max_size=200))
def test_parser_never_raises_and_symbols_come_from_the_title(title: str) -> None:
    info = parse_title(title)
    norm = normalize_title(title)
    for coin in info.coins:
        assert coin.symbol in norm
        assert set(coin.markets) <= {"KRW", "BTC", "USDT"}
    assert set(info.krw_symbols) <= {c.symbol for c in info.coins}


@given(
    st.lists(st.from_regex(r"[A-Z0-9]{1,10}", fullmatch=True), min_size=1, max_size=4, unique=True),
    st.lists(st.sampled_from(["KRW", "BTC", "USDT"]), min_size=1, max_size=3, unique=True),
)
def test_generated_titles_of_each_family(symbols: list[str], markets: list[str]) -> None:
    mk = ", ".join(markets)
    expected = tuple(symbols) if "KRW" in markets else ()
    assets = ", ".join(f"코인{i}({s})" for i, s in enumerate(symbols))
    for title in (
        f"{assets} 신규 거래지원 안내 ({mk} 마켓)",
        f"{assets} {mk} 마켓 디지털 자산 추가",
        f"{mk} 마켓 신규 거래지원 안내 ({', '.join(symbols)})",
        f"[거래] {mk} 마켓 디지털 자산 추가 ({', '.join(symbols)}) (거래지원 개시 시점 연기 안내)",
        f"Market Support for {', '.join(f'Coin{i}({s})' for i, s in enumerate(symbols))} ({mk} Market)",
        f"Market Support for {', '.join(symbols)} ({mk} Market)",
    ):
        info = parse_title(title)
        assert info.krw_symbols == expected, title
        assert [c.symbol for c in info.coins] == symbols, title
