"""Which instrument states each adapter subscribes: every documented status on a fixture, the
pre-trading ones kept (so a market is recorded from its first trade), the final ones left out,
and non-crypto instruments only with ``include_non_crypto``."""

from __future__ import annotations

from pathlib import Path

import pytest

from pumpwatch.recorder.adapter import Adapter, Instrument
from pumpwatch.recorder.adapters import get_adapter

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _fx(exchange: str, name: str) -> bytes:
    return (FIXTURES / exchange / name).read_bytes()


def _symbols(adapter: Adapter, body: bytes) -> list[str]:
    assert adapter.parse_instruments is not None
    insts, follow = adapter.parse_instruments(body)
    assert follow is None
    return [i.symbol for i in insts]


def test_binance_spot_keeps_every_listed_status() -> None:
    # enums.md lists TRADING, END_OF_DAY, HALT, BREAK, CANCEL_ONLY: none is final, and a pair
    # announced for listing is BREAK until it opens.
    got = _symbols(get_adapter("binance_spot"), _fx("binance", "spot_exchange_info_states.json"))
    assert got == ["TRDUSDT", "EODUSDT", "HLTUSDT", "BRKUSDT", "CXLUSDT"]


@pytest.mark.parametrize(
    ("include", "expected"),
    [
        (False, ["TRDUSDT", "PNDUSDT"]),
        (True, ["TRDUSDT", "PNDUSDT", "TSLAUSDT", "XAUUSDT"]),
    ],
)
def test_binance_futures_pending_trading_in_settlement_states_out(include: bool, expected: list[str]) -> None:
    adapter = get_adapter("binance_futures", {"include_non_crypto": include})
    got = _symbols(adapter, _fx("binance", "futures_exchange_info_states.json"))
    assert got == expected  # PRE_DELIVERING … CLOSE (a delisted perpetual is SETTLING) left out


def test_bybit_linear_asks_for_the_prelaunch_list_after_the_trading_one() -> None:
    adapter = get_adapter("bybit_futures")
    assert adapter.instruments_request is not None and adapter.parse_instruments is not None
    first = adapter.instruments_request("http://127.0.0.1:9")
    assert "status=" not in first.url  # the default list: Trading symbols only
    trading, follow = adapter.parse_instruments(_fx("bybit", "futures_instruments_trading_states.json"))
    assert [i.symbol for i in trading] == ["TRDUSDT", "INNUSDT"]  # stock, commodity, forex left out
    assert follow is not None and follow.url == first.url + "&status=PreLaunch"
    pre, end = adapter.parse_instruments(_fx("bybit", "futures_instruments_prelaunch.json"))
    assert pre == [Instrument("PREUSDT", "PRE", "USDT")] and end is None
    # A new walk starts from the default list again.
    again = adapter.instruments_request("http://127.0.0.1:9")
    _, follow = adapter.parse_instruments(_fx("bybit", "futures_instruments_trading_states.json"))
    assert follow is not None and follow.url == again.url + "&status=PreLaunch"


def test_bybit_non_crypto_only_when_asked() -> None:
    adapter = get_adapter("bybit_futures", {"include_non_crypto": True})
    assert adapter.instruments_request is not None and adapter.parse_instruments is not None
    adapter.instruments_request("http://127.0.0.1:9")
    trading, _ = adapter.parse_instruments(_fx("bybit", "futures_instruments_trading_states.json"))
    assert [i.symbol for i in trading] == ["TRDUSDT", "INNUSDT", "AAPLUSDT", "XAUTUSDT", "EURUSDT"]
    pre, _ = adapter.parse_instruments(_fx("bybit", "futures_instruments_prelaunch.json"))
    assert [i.symbol for i in pre] == ["PREUSDT", "NVDAUSDT"]
    spot = get_adapter("bybit_spot")
    assert _symbols(spot, _fx("bybit", "spot_instruments_states.json")) == ["TRDUSDT", "ADVUSDT"]
    spot_all = get_adapter("bybit_spot", {"include_non_crypto": True})
    assert _symbols(spot_all, _fx("bybit", "spot_instruments_states.json")) == [
        "TRDUSDT",
        "ADVUSDT",
        "AAPLXUSDT",
    ]


def test_okx_states_and_categories() -> None:
    spot = _symbols(get_adapter("okx_spot"), _fx("okx", "spot_instruments_states.json"))
    # test pairs never trade; a preopen pair announced a moment ago has no quote yet (its fields
    # fill in at least 5 minutes before listTime) and comes with a later refresh; stocks left out.
    assert spot == ["LIV-USDT", "PRE-USDT", "SUS-USDT"]
    swap = get_adapter("okx_futures")
    assert _symbols(swap, _fx("okx", "futures_instruments_states.json")) == [
        "LIV-USDT-SWAP",
        "PRE-USDT-SWAP",
        "PMK-USDT-SWAP",
        "RBS-USDT-SWAP",
        "PST-USDT-SWAP",
        "SUS-USDT-SWAP",
    ]
    swap_all = get_adapter("okx_futures", {"include_non_crypto": True})
    assert _symbols(swap_all, _fx("okx", "futures_instruments_states.json"))[-4:] == [
        "TSLA-USDT-SWAP",
        "XAU-USDT-SWAP",
        "EUR-USDT-SWAP",
        "UST10Y-USDT-SWAP",
    ]


def test_kucoin_init_and_reopenable_contracts_kept_settled_ones_not() -> None:
    got = _symbols(get_adapter("kucoin_futures"), _fx("kucoin", "futures_contracts_active_states.json"))
    assert got == ["INITUSDTM", "OPENUSDTM", "PAUSUSDTM", "CXLOUSDTM"]
    spot = _symbols(get_adapter("kucoin_spot"), _fx("kucoin", "spot_symbols_states.json"))
    # a pair in (or scheduled for) its opening call auction is subscribed; a disabled pair with
    # no opening announced is not
    assert spot == ["TRD-USDT", "AUC-USDT", "SCH-USDT"]


@pytest.mark.parametrize(
    ("include", "expected"),
    [
        (False, ["PRE_USDT", "TRD_USDT", "CBK_USDT"]),
        (
            True,
            ["PRE_USDT", "TRD_USDT", "CBK_USDT", "AAPL_USDT", "XAU_USDT", "SPX_USDT", "EUR_USDT", "OIL_USDT"],
        ),
    ],
)
def test_gate_futures_prelaunch_and_circuit_breaker_kept(include: bool, expected: list[str]) -> None:
    adapter = get_adapter("gate_futures", {"include_non_crypto": include})
    assert _symbols(adapter, _fx("gate", "futures_contracts_states.json")) == expected


def test_gate_spot_buyable_and_sellable_pairs_trade() -> None:
    got = _symbols(get_adapter("gate_spot"), _fx("gate", "spot_currency_pairs_states.json"))
    assert got == ["TRD_USDT", "BUY_USDT", "SEL_USDT"]


@pytest.mark.parametrize(
    "stream", ["binance_futures", "bybit_spot", "bybit_futures", "okx_spot", "okx_futures", "gate_futures"]
)
def test_include_non_crypto_is_a_checked_boolean_option(stream: str) -> None:
    from pumpwatch.errors import ConfigError

    assert get_adapter(stream).default_options["include_non_crypto"] is False
    with pytest.raises(ConfigError, match=f"streams.{stream}.options"):
        get_adapter(stream, {"include_non_crypto": "yes"})
