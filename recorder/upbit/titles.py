"""Upbit notice titles -> which coins join which markets (pure: no I/O, no clock).

Implements the title families of ``/work/shared/research/upbit.md`` §2. Real examples:

    커브(CRV) KRW, USDT 마켓 디지털 자산 추가                      CRV on KRW and USDT
    클러스터프로토콜(CP) 신규 거래지원 안내 (KRW, BTC, USDT 마켓)    CP on KRW, BTC, USDT
    BTC, USDT 마켓 신규 거래지원 안내 (BICO, BMT, NIL, GWEI) (…)    four coins, no KRW
    셀레스티아(TIA)(KRW, BTC, USDT 마켓), 아이오넷(IO)(BTC, USDT 마켓) 신규 거래지원 안내 (…)
                                                                  TIA is KRW, IO is not
    [거래] KRW, BTC 마켓 디지털 자산 추가 (MASK, ACS)               pre-2024 prefix
    Market Support for Re(RE) (KRW, BTC, USDT Market)             English (language=en)
    Market Support for ACS, GO, OBSR, QTCON, RLY (USDT Market)    English, bare tickers

Rules, each learnt from a real misfire elsewhere:
- A family is matched from the *start* of the title and its parts must parse completely: a
  coin list is `Name(SYM)` items (names may hold parentheses, ``엑스알피(리플)(XRP)``) or bare
  tickers, so a notice that merely contains listing words (``디지털 자산 실사보고서``,
  ``USDT 마켓 전 종목 거래 수수료 0%``) never matches.
- KRW is decided per coin: a coin's own market group wins over the shared one.
- Everything after the market group is a suffix. Suffixes are often part of the original title
  (``(업비트 ATH 이벤트 안내)``), so only a cancellation (``취소``) in them changes the result:
  it removes the coins it names, or every coin when it names none.
- Veto words (delisting, warning, deposit/withdrawal, withdrawal of a decision) are looked for
  in the head of the title only, before the listing phrase, never in the suffix.
- Symbols are returned as written; `is_valid_symbol` says whether one is safe for a path (the
  caller drops and logs the others).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from pumpwatch.streams import SYMBOL_RE

MARKET_CODES = ("KRW", "BTC", "USDT")
_MK = r"(?:KRW|BTC|USDT|원화)"
_MLIST = rf"{_MK}(?:\s*,\s*{_MK})*"
_MARKET_GROUP_RE = re.compile(rf"^\s*({_MLIST})\s*(?:마켓|markets?)?\s*$", re.IGNORECASE)
_MARKETS_HEAD_RE = re.compile(rf"^({_MLIST})\s*(?:마켓|markets?)$", re.IGNORECASE)
_ASSETS_THEN_MARKETS_RE = re.compile(rf"^(.+?)\s+({_MLIST})\s*마켓$")
_PREFIX_RE = re.compile(r"^\[[^\]]{1,20}\]\s*")
_NEW_SUPPORT_RE = re.compile(r"신규\s*거래\s*지원\s*안내")
_ASSET_ADDED_RE = re.compile(r"디지털\s*자산\s*추가")
_OLD_NEW_LISTING_RE = re.compile(r"신규\s*상장")
_EN_SUPPORT_RE = re.compile(r"^market\s+support\s+for\s*", re.IGNORECASE)
_EN_OLD_RE = re.compile(rf"^new\s+digital\s+assets?\s+on\s+({_MLIST})\s+markets?\s*", re.IGNORECASE)
# A symbol as written inside its parentheses. Deliberately looser than SYMBOL_RE so that a bad
# ticker is seen (and dropped with a log line by the caller) rather than silently unparsed;
# Hangul is excluded so a Korean remark such as ``(완료)`` is never a symbol.
_LOOSE_SYMBOL_RE = re.compile(r"^[^\s,()\uac00-\ud7a3]{1,40}$")
_BARE_SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,20}$")
_OLD_NAMED_SYMBOL_RE = re.compile(r"^(.+?)\s+([A-Z0-9]{1,20})$")  # ``휴먼스케이프 HUM``
_BAD_NAME_CHARS = frozenset(":!?[]")
_MAX_NAME_CHARS = 60
_TRANSLATE = str.maketrans({"（": "(", "）": ")", "，": ",", "\u00a0": " "})

# Checked in this order on the head of the title: a release or an extension of a warning also
# contains the words of the warning itself.
_VETOES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("warning_released", re.compile(r"유의\s*종목\s*지정\s*해제")),
    ("warning_extended", re.compile(r"유의\s*종목\s*지정\s*기간\s*연장")),
    ("warning", re.compile(r"유의")),
    ("withdrawn", re.compile(r"철회")),  # ``거래지원 종료 결정 철회``: a delisting called off
    ("delisting", re.compile(r"종료|폐지")),
    ("deposit_withdrawal", re.compile(r"입출금")),
)
_CANCEL_RE = re.compile(r"취소")


@dataclass(frozen=True)
class CoinListing:
    """One coin of a listing notice and the markets the notice opens for it."""

    symbol: str  # as written in the title; check `is_valid_symbol` before using it in a path
    name: str | None  # e.g. "커브", "Re"; None for a bare ticker
    markets: tuple[str, ...]  # subset of MARKET_CODES, in title order; empty if the title does not say
    cancelled: bool = False  # a cancellation suffix names this coin

    @property
    def krw(self) -> bool:
        return "KRW" in self.markets and not self.cancelled


@dataclass(frozen=True)
class TitleInfo:
    """How one title parses. `family` is None when the title is not a listing at all."""

    title: str  # normalised
    family: str | None  # "assets_first" | "markets_first" | "per_coin" | "english" | "english_old" | None
    coins: tuple[CoinListing, ...] = ()
    vetoed: str | None = None  # why a title is not a listing although it may look like one
    suffix: str = ""  # text after the market group (edit notes, remarks)

    @property
    def is_listing(self) -> bool:
        return self.family is not None and self.vetoed is None and bool(self.coins)

    @property
    def krw_symbols(self) -> tuple[str, ...]:
        """Coins this notice newly opens on the KRW market (raw; validate before use)."""
        if not self.is_listing:
            return ()
        return tuple(c.symbol for c in self.coins if c.krw)

    @property
    def krw_listing(self) -> bool:
        return any(is_valid_symbol(s) for s in self.krw_symbols)


def is_valid_symbol(symbol: str) -> bool:
    """True if `symbol` is an Upbit-style ticker that may reach a file path."""
    return SYMBOL_RE.fullmatch(symbol) is not None


def normalize_title(title: str) -> str:
    """NFC, ASCII parentheses and commas, one space between words, no ``[거래]`` prefix."""
    text = unicodedata.normalize("NFC", title).translate(_TRANSLATE)
    text = " ".join(text.split())
    return _PREFIX_RE.sub("", text, count=1)


def parse_title(title: str) -> TitleInfo:
    """Parse one notice title (Korean or English) into coins and their markets."""
    text = normalize_title(title)
    m = _EN_SUPPORT_RE.match(text)
    if m:
        return _parse_english(text, text[m.end() :])
    m = _EN_OLD_RE.match(text)
    if m:
        return _parse_markets_then_list(text, "english_old", _markets(m.group(1)), text[m.end() :])
    phrase = _NEW_SUPPORT_RE.search(text) or _ASSET_ADDED_RE.search(text) or _OLD_NEW_LISTING_RE.search(text)
    if phrase is None:
        return TitleInfo(text, None, vetoed=_veto(text))
    head, after = text[: phrase.start()].strip(), text[phrase.end() :]
    veto = _veto(head)
    info = _parse_korean(text, head, after)
    if veto is not None:
        return TitleInfo(text, info.family, info.coins, veto, info.suffix)
    return info


def _parse_korean(text: str, head: str, after: str) -> TitleInfo:
    m = _MARKETS_HEAD_RE.match(head)
    if m:  # ``KRW, BTC 마켓 디지털 자산 추가 (MASK, ACS)`` / ``BTC, USDT 마켓 신규 거래지원 안내 (…)``
        return _parse_markets_then_list(text, "markets_first", _markets(m.group(1)), after)
    common: tuple[str, ...] = ()
    m = _ASSETS_THEN_MARKETS_RE.match(head)
    if m:  # ``커브(CRV) KRW, USDT 마켓 디지털 자산 추가``
        head, common = m.group(1), _markets(m.group(2))
    items, head_common, rest = _parse_items(_tokens(head))
    if items is None or rest:
        return TitleInfo(text, None)
    common = common or head_common
    groups = _tokens(after.strip())
    suffix_start = 0
    if not common and groups and groups[0].kind == "group":
        mk = _MARKET_GROUP_RE.match(groups[0].text)
        if mk:  # ``… 신규 거래지원 안내 (KRW, BTC, USDT 마켓)``
            common, suffix_start = _markets(mk.group(1)), 1
    suffix = "".join(t.raw for t in groups[suffix_start:]).strip()
    family = "per_coin" if any(own for _, _, own in items) else "assets_first"
    return _result(text, family, items, common, suffix)


def _parse_english(text: str, body: str) -> TitleInfo:
    items, common, rest = _parse_items(_tokens(body))
    if items is None:
        return TitleInfo(text, None)
    family = "per_coin" if any(own for _, _, own in items) and not common else "english"
    return _result(text, family, items, common, "".join(t.raw for t in rest).strip())


def _parse_markets_then_list(text: str, family: str, markets: tuple[str, ...], after: str) -> TitleInfo:
    tokens = _tokens(after.strip())
    if not tokens or tokens[0].kind != "group":
        return TitleInfo(text, None)
    coins: list[tuple[str | None, str, tuple[str, ...]]] = []
    for part in tokens[0].text.split(","):
        part = part.strip()
        if _BARE_SYMBOL_RE.match(part):
            coins.append((None, part, ()))
            continue
        named = _OLD_NAMED_SYMBOL_RE.match(part)
        if named is None or not _good_name(named.group(1)):
            return TitleInfo(text, None)
        coins.append((named.group(1), named.group(2), ()))
    suffix = "".join(t.raw for t in tokens[1:]).strip()
    return _result(text, family, coins, markets, suffix)


def _result(
    text: str,
    family: str,
    items: list[tuple[str | None, str, tuple[str, ...]]],
    common: tuple[str, ...],
    suffix: str,
) -> TitleInfo:
    coins = [CoinListing(sym, name, own or common) for name, sym, own in items]
    vetoed = None
    if _CANCEL_RE.search(suffix):
        named = [c for c in coins if re.search(rf"(?<![A-Z0-9]){re.escape(c.symbol)}(?![A-Z0-9])", suffix)]
        targets = named or coins
        coins = [CoinListing(c.symbol, c.name, c.markets, c in targets) for c in coins]
        if all(c.cancelled for c in coins):
            vetoed = "cancelled"
    return TitleInfo(text, family, tuple(coins), vetoed, suffix)


def _markets(group: str) -> tuple[str, ...]:
    out: list[str] = []
    for part in group.split(","):
        code = part.strip().upper()
        code = "KRW" if code == "원화" else code
        if code in MARKET_CODES and code not in out:
            out.append(code)
    return tuple(out)


def _veto(head: str) -> str | None:
    for reason, pattern in _VETOES:
        if pattern.search(head):
            return reason
    return None


def _good_name(name: str) -> bool:
    return 0 < len(name) <= _MAX_NAME_CHARS and not (_BAD_NAME_CHARS & set(name)) and "마켓" not in name


@dataclass(frozen=True)
class _Tok:
    kind: str  # "text" | "group"
    text: str  # group content without its outer parentheses
    raw: str  # as written
    spaced: bool  # a group preceded by whitespace (detached from what comes before it)


def _tokens(text: str) -> list[_Tok]:
    """Split into top-level text runs and balanced parenthesised groups (nesting kept inside)."""
    out: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == "(":
            depth, j = 0, i
            while j < n:
                depth += {"(": 1, ")": -1}.get(text[j], 0)
                if depth == 0:
                    break
                j += 1
            if depth != 0:  # unbalanced: the rest is plain text
                out.append(_Tok("text", text[i:], text[i:], False))
                break
            spaced = i == 0 or text[i - 1].isspace()
            out.append(_Tok("group", text[i + 1 : j], text[i : j + 1], spaced))
            i = j + 1
        else:
            j = text.find("(", i)
            j = n if j < 0 else j
            out.append(_Tok("text", text[i:j], text[i:j], False))
            i = j
    return out


def _parse_items(
    tokens: list[_Tok],
) -> tuple[list[tuple[str | None, str, tuple[str, ...]]] | None, tuple[str, ...], list[_Tok]]:
    """A coin list: ``Name(SYM)[(MKTS 마켓)], …`` or bare ``SYM, …``.

    Returns (items or None if the tokens are not a coin list, the shared market group that
    follows the last coin after a space, the tokens after that group).
    """
    items: list[tuple[str | None, str, tuple[str, ...]]] = []
    current: list[_Tok] = []
    common: tuple[str, ...] = ()
    rest: list[_Tok] = []
    for idx, tok in enumerate(tokens):
        if tok.kind == "group" and tok.spaced and _item(current) is not None:
            mk = _MARKET_GROUP_RE.match(tok.text)
            if mk:  # ``Re(RE) (KRW, BTC, USDT Market)``: shared by every coin without its own group
                common, rest = _markets(mk.group(1)), tokens[idx + 1 :]
                break
            rest = tokens[idx:]  # a remark such as ``(주문 타입 제한 관련 안내)``
            break
        if tok.kind == "text" and "," in tok.text:
            pieces = tok.text.split(",")
            for k, piece in enumerate(pieces):
                if k > 0:
                    item = _item(current)
                    if item is None:
                        return None, (), []
                    items.append(item)
                    current = []
                if piece.strip():
                    current.append(_Tok("text", piece, piece, False))
            continue
        current.append(tok)
    item = _item(current)
    if item is None:
        return None, (), []
    items.append(item)
    return items, common, rest


def _item(toks: list[_Tok]) -> tuple[str | None, str, tuple[str, ...]] | None:
    toks = [t for t in toks if t.kind == "group" or t.text.strip()]
    if not toks:
        return None
    if len(toks) == 1 and toks[0].kind == "text":
        bare = toks[0].text.strip()
        return (None, bare, ()) if _BARE_SYMBOL_RE.match(bare) else None
    own: tuple[str, ...] = ()
    if len(toks) >= 3 and toks[-1].kind == "group" and toks[-2].kind == "group" and not toks[-1].spaced:
        mk = _MARKET_GROUP_RE.match(toks[-1].text)
        if mk:  # ``셀레스티아(TIA)(KRW, BTC, USDT 마켓)``
            own, toks = _markets(mk.group(1)), toks[:-1]
    sym_tok = toks[-1]
    if sym_tok.kind != "group" or not _LOOSE_SYMBOL_RE.match(sym_tok.text.strip()):
        return None
    name = "".join(t.raw for t in toks[:-1]).strip()
    if not _good_name(name):
        return None
    return name, sym_tok.text.strip(), own
