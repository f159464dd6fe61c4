"""The subscription file: format, validation, selection policy, and the refresh against local REST servers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pumpwatch.errors import ConfigError, ParseError
from pumpwatch.recorder import adapters as adapters_pkg
from pumpwatch.recorder.adapter import Adapter, HttpRequest, Instrument
from pumpwatch.recorder.sim.http import LocalHttpServer, Request
from pumpwatch.recorder.sim.protocol import HttpResponse
from pumpwatch.recorder.symbols import (
    load_symbols,
    load_symbols_file,
    select_instruments,
    update_krw_first_seen,
    write_symbols,
)
from pumpwatch.recorder.symbols_fetch import refresh_symbols
from pumpwatch.settings import Settings

HOUR_US = 3600 * 1_000_000


def test_write_then_load_round_trips_every_field(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "symbols.yaml"
    okx = Instrument("0G-USDT-SWAP", "0G", "USDT", multiplier=0.01)
    phemex = Instrument("sBTCUSDT", "BTC", "USDT", price_scale=8, qty_scale=8)
    write_symbols(
        path,
        {"okx_futures": [okx], "phemex_spot": [phemex], "binance_spot": []},
        krw_first_seen_us={"BTC": 0, "NEW": 5},
        policy="exclude_upbit_krw",
        generated_at_us=123,
    )
    f = load_symbols_file(path)
    assert f.generated_at_us == 123
    assert f.policy == "exclude_upbit_krw"
    assert f.krw_first_seen_us == {"BTC": 0, "NEW": 5}
    assert f.streams == {
        "binance_spot": {},
        "okx_futures": {"0G-USDT-SWAP": okx},
        "phemex_spot": {"sBTCUSDT": phemex},
    }
    got = load_symbols(path)["okx_futures"]["0G-USDT-SWAP"]
    assert (got.symbol, got.base, got.quote, got.multiplier, got.price_scale, got.qty_scale) == (
        "0G-USDT-SWAP",
        "0G",
        "USDT",
        0.01,
        0,
        0,
    )
    assert not list(path.parent.glob(".*.tmp")), "the temporary file must be renamed away"


def test_file_without_krw_key_means_unknown(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    write_symbols(path, {"bybit_spot": [Instrument("ABCUSDT", "ABC", "USDT")]})
    assert load_symbols_file(path).krw_first_seen_us is None


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("streams: {nope_spot: []}", "unknown stream"),
        ("streams: {binance_spot: [{symbol: AUSDT, base: ../A, quote: USDT}]}", "streams.binance_spot[0]"),
        ("streams: {binance_spot: [{symbol: AUSDT, base: A, quote: USDT, multiplier: -1}]}", "[0]"),
        ("streams: {binance_spot: [{symbol: AUSDT, base: A, quote: USDT, multiplier: .nan}]}", "[0]"),
        ("streams: {binance_spot: [{symbol: 'A USDT', base: A, quote: USDT}]}", "[0]"),
        ("streams: {binance_spot: [{symbol: AUSDT, base: A, quote: USDT, qty_scale: 40}]}", "[0]"),
        ("streams: {binance_spot: {symbol: AUSDT}}", "must be a list"),
        ("upbit_krw_first_seen_us: {btc: 1}", "malformed Upbit base"),
        ("upbit_krw_first_seen_us: {BTC: soon}", "integer"),
        ("- a\n- b", "top level"),
        ("streams: [unclosed", "not valid YAML"),
    ],
)
def test_bad_files_are_one_config_error_line(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_symbols(path)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_a_binary_file_is_one_config_error_line(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(b"streams:\n  \x89PNG\r\n\x1a\n\xff\x00")
    with pytest.raises(ConfigError) as info:
        load_symbols(path)
    assert str(info.value) == f"symbols file {path} is not UTF-8 text (byte 11)"


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read symbols file"):
        load_symbols(tmp_path / "absent.yaml")


INSTRUMENTS = [
    Instrument("OLDUSDT", "OLD", "USDT"),  # on KRW long ago
    Instrument("NEWUSDT", "NEW", "USDT"),  # joined KRW recently
    Instrument("FREEUSDT", "FREE", "USDT"),  # not on KRW
    Instrument("FREEBTC", "FREE", "BTC"),  # not USDT-quoted
]


def _symbols(items: list[Instrument]) -> list[str]:
    return [i.symbol for i in items]


def test_policy_exclude_upbit_krw_keeps_new_krw_coins_for_the_configured_time() -> None:
    krw = {"OLD": 0, "NEW": 10 * HOUR_US}
    kwargs = {"policy": "exclude_upbit_krw", "krw_first_seen_us": krw, "keep_after_krw_s": 24 * 3600.0}
    inside = select_instruments(INSTRUMENTS, now_us=(10 + 23) * HOUR_US, **kwargs)  # type: ignore[arg-type]
    assert _symbols(inside) == ["NEWUSDT", "FREEUSDT"]
    at_limit = select_instruments(INSTRUMENTS, now_us=(10 + 24) * HOUR_US, **kwargs)  # type: ignore[arg-type]
    assert _symbols(at_limit) == ["FREEUSDT"]


def test_policy_all_and_list() -> None:
    krw = {"OLD": 0}
    assert _symbols(select_instruments(INSTRUMENTS, policy="all", krw_first_seen_us=krw)) == [
        "OLDUSDT",
        "NEWUSDT",
        "FREEUSDT",
    ]
    chosen = select_instruments(INSTRUMENTS, policy="list", include=["free", "OLD"], krw_first_seen_us=krw)
    assert _symbols(chosen) == ["OLDUSDT", "FREEUSDT"]
    with pytest.raises(ConfigError):
        select_instruments(INSTRUMENTS, policy="some")


def test_krw_first_seen_first_refresh_marks_everything_old() -> None:
    assert update_krw_first_seen(None, ["BTC", "ETH"], 99) == {"BTC": 0, "ETH": 0}
    assert update_krw_first_seen({"BTC": 0, "GONE": 5}, ["BTC", "NEW"], 99) == {"BTC": 0, "NEW": 99}


# ---- refresh against local servers ------------------------------------------------------------


def _paged_adapter(stream: str) -> Adapter:
    """A test adapter whose instrument list spans two pages (`?page=`)."""

    def request(rest_url: str, page: int = 0) -> HttpRequest:
        return HttpRequest("GET", f"{rest_url}/instruments?page={page}")

    def parse(body: bytes) -> tuple[list[Instrument], HttpRequest | None]:
        doc = json.loads(body)
        if not isinstance(doc, dict):
            raise ParseError("bad")
        items = [Instrument(x["s"], x["b"], x["q"], multiplier=x["m"]) for x in doc["items"]]
        nxt = doc.get("next")
        return items, (request(doc["rest"], nxt) if nxt is not None else None)

    def never(*_a: object) -> list[str]:
        raise AssertionError("not used")

    return Adapter(
        stream=stream,
        doc_url="test",
        decode=never,  # type: ignore[arg-type]
        subscribe=never,
        unsubscribe=never,
        max_symbols_per_request=1,
        max_symbols_per_connection=1,
        max_requests_per_s=1.0,
        instruments_request=request,
        parse_instruments=parse,
    )


class Venue:
    """One local REST server: two pages of instruments, Upbit market/all, switchable failures."""

    def __init__(self) -> None:
        self.pages: list[list[dict[str, object]]] = [
            [
                {"s": "AAAUSDT", "b": "AAA", "q": "USDT", "m": 0.01},
                {"s": "KRWCOINUSDT", "b": "KRWCOIN", "q": "USDT", "m": 1.0},
            ],
            [
                {"s": "BBBUSDT", "b": "BBB", "q": "USDT", "m": 1.0},
                {"s": "EVILUSDT", "b": "../X", "q": "USDT", "m": 1.0},
            ],
        ]
        self.krw = ["KRW-KRWCOIN", "KRW-../bad", "BTC-AAA"]
        self.fail_instruments = False
        self.fail_upbit = False
        self.server = LocalHttpServer(self.handle)

    def handle(self, req: Request) -> HttpResponse:
        if req.path == "/v1/market/all":
            if self.fail_upbit:
                return HttpResponse(503, b"busy")
            return HttpResponse(200, json.dumps([{"market": m} for m in self.krw]).encode())
        if req.path == "/instruments":
            if self.fail_instruments:
                return HttpResponse(500, b"oops")
            page = int(req.query["page"])
            nxt = page + 1 if page + 1 < len(self.pages) else None
            doc = {"items": self.pages[page], "next": nxt, "rest": self.server.url}
            return HttpResponse(200, json.dumps(doc).encode())
        return HttpResponse(404, b"{}")


def _settings(tmp_path: Path, url: str) -> Settings:
    s = Settings()
    s.recorder.symbols_file = str(tmp_path / "symbols.yaml")
    s.recorder.streams = ["binance_spot"]
    s.streams["binance_spot"].rest_url = url
    s.symbols.upbit_rest_url = url
    return s


def _with_venue(monkeypatch: pytest.MonkeyPatch, body: Callable[[Venue], object]) -> object:
    monkeypatch.setattr(adapters_pkg, "get_adapter", lambda stream, options=None: _paged_adapter(stream))

    async def main() -> object:
        venue = Venue()
        async with venue.server:
            result = body(venue)
            if asyncio.iscoroutine(result):
                return await result
            return result

    return asyncio.run(main())


def test_refresh_follows_pages_filters_and_keeps_lists_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario(venue: Venue) -> None:
        settings = _settings(tmp_path, venue.server.url)
        first = await refresh_symbols(settings, now_us=HOUR_US)
        assert first.counts == {"binance_spot": 2}
        assert first.invalid == {"binance_spot": 1}
        assert first.upbit_krw == 1
        f = load_symbols_file(settings.recorder.symbols_file)
        # KRWCOIN was on KRW before our first look: excluded at once.
        assert f.krw_first_seen_us == {"KRWCOIN": 0}
        assert f.streams["binance_spot"] == {
            "AAAUSDT": Instrument("AAAUSDT", "AAA", "USDT", 0.01),
            "BBBUSDT": Instrument("BBBUSDT", "BBB", "USDT", 1.0),
        }
        # BBB joins Upbit KRW: it stays subscribed for keep_after_krw, then goes.
        venue.krw.append("KRW-BBB")
        await refresh_symbols(settings, now_us=2 * HOUR_US)
        f = load_symbols_file(settings.recorder.symbols_file)
        assert f.krw_first_seen_us == {"BBB": 2 * HOUR_US, "KRWCOIN": 0}
        assert sorted(f.streams["binance_spot"]) == ["AAAUSDT", "BBBUSDT"]
        # The exchange's REST fails and Upbit too: previous lists and KRW times are kept.
        venue.fail_instruments = True
        venue.fail_upbit = True
        kept = await refresh_symbols(settings, now_us=3 * HOUR_US)
        assert list(kept.failed) == ["binance_spot"]
        assert "500" in kept.failed["binance_spot"]
        assert kept.upbit_krw is None
        f = load_symbols_file(settings.recorder.symbols_file)
        assert f.krw_first_seen_us == {"BBB": 2 * HOUR_US, "KRWCOIN": 0}
        assert sorted(f.streams["binance_spot"]) == ["AAAUSDT", "BBBUSDT"]
        venue.fail_instruments = False
        venue.fail_upbit = False
        await refresh_symbols(settings, now_us=(2 + 24) * HOUR_US)
        f = load_symbols_file(settings.recorder.symbols_file)
        assert sorted(f.streams["binance_spot"]) == ["AAAUSDT"]

    _with_venue(monkeypatch, scenario)


def test_refresh_without_any_upbit_answer_records_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario(venue: Venue) -> None:
        venue.fail_upbit = True
        settings = _settings(tmp_path, venue.server.url)
        await refresh_symbols(settings, now_us=HOUR_US)
        f = load_symbols_file(settings.recorder.symbols_file)
        assert f.krw_first_seen_us is None
        assert sorted(f.streams["binance_spot"]) == ["AAAUSDT", "BBBUSDT", "KRWCOINUSDT"]

    _with_venue(monkeypatch, scenario)


def test_an_unreadable_previous_file_and_a_failed_stream_leave_the_stream_out_with_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing to keep: the stream is left out (a worker then keeps its current list, see
    # test_worker), never written as an empty list; the log says so as an error.
    async def scenario(venue: Venue) -> None:
        settings = _settings(tmp_path, venue.server.url)
        Path(settings.recorder.symbols_file).write_text("streams: [this is not a symbols file\n")
        venue.fail_instruments = True
        report = await refresh_symbols(settings, now_us=HOUR_US)
        assert list(report.failed) == ["binance_spot"] and report.counts == {}
        f = load_symbols_file(settings.recorder.symbols_file)
        assert "binance_spot" not in f.streams and "binance_spot" in f.refresh_failing

    _with_venue(monkeypatch, scenario)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("binance_spot" in m and "no previous list to keep" in m for m in errors)


def test_krw_bases_of_upbit_s_first_answer_after_a_written_list_count_as_first_seen_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Upbit unreachable at the first refreshes (everything recorded, no KRW map); when it
    # answers, a base listed on KRW meanwhile is news: kept for keep_after_krw, not dropped as
    # if it had been there before we looked.
    async def scenario(venue: Venue) -> None:
        settings = _settings(tmp_path, venue.server.url)
        venue.fail_upbit = True
        await refresh_symbols(settings, now_us=HOUR_US)
        assert load_symbols_file(settings.recorder.symbols_file).krw_first_seen_us is None
        venue.fail_upbit = False
        await refresh_symbols(settings, now_us=2 * HOUR_US)
        f = load_symbols_file(settings.recorder.symbols_file)
        assert f.krw_first_seen_us == {"KRWCOIN": 2 * HOUR_US}
        assert sorted(f.streams["binance_spot"]) == ["AAAUSDT", "BBBUSDT", "KRWCOINUSDT"]
        await refresh_symbols(settings, now_us=(2 + 24) * HOUR_US)  # keep_after_krw later: gone
        f = load_symbols_file(settings.recorder.symbols_file)
        assert sorted(f.streams["binance_spot"]) == ["AAAUSDT", "BBBUSDT"]

    _with_venue(monkeypatch, scenario)
