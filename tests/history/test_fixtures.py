"""Each exchange's REST history answer (tests/fixtures/<exchange>/<market>_history_*.json),
decoded field by field; and the REST row of a trade equals the current adapter's decoding of
the WebSocket push of the same trade (the push fixtures next to them), except recv_time.

The history fixtures rebuild the documented answer shapes around the same trades as the push
fixtures (``spot_trade.json``, ``futures_aggtrade.json`` …), so the two can be compared.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.history import spec_for

from pumpwatch.errors import ParseError
from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.adapters import get_adapter
from pumpwatch.recorder.adapters.gate import ms_to_us
from pumpwatch.recorder.history import binance, bybit, gate, kucoin, okx, phemex
from pumpwatch.recorder.history.spec import HistoryError, HistoryPage
from pumpwatch.segments.schema import TradeRow

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RECV = 1_800_000_000_000_000  # 2027: after every fixture's trades (a REST trade is never newer)

BNBBTC = Instrument("BNBBTC", "BNB", "BTC")
BTCUSDT = Instrument("BTCUSDT", "BTC", "USDT")
OKX_SPOT = Instrument("BTC-USDT", "BTC", "USDT")
OKX_SWAP = Instrument("BTC-USDT-SWAP", "BTC", "USDT", multiplier=0.01)
GT_USDT = Instrument("GT_USDT", "GT", "USDT")
GATE_BTC = Instrument("BTC_USDT", "BTC", "USDT", multiplier=0.0001)
KC_SPOT = Instrument("BTC-USDT", "BTC", "USDT")
KC_FUT = Instrument("XBTUSDTM", "BTC", "USDT", multiplier=0.001)
PHX_SPOT = Instrument("sBTCUSDT", "BTC", "USDT", price_scale=8, qty_scale=8)
PHX_PERP = Instrument("BTCUSDT", "BTC", "USDT")


def body(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def rows(page: HistoryPage) -> list[tuple[object, ...]]:
    return [(r[0], *r[2:]) for r in page.rows]


def test_binance_spot_historical_trades() -> None:
    page = binance.parse_historical_trades(body("binance/spot_history_historical_trades.json"), RECV, BNBBTC)
    assert page.rows == [
        (1672515782136407, RECV, "BNBBTC", "BNB", "BTC", 0.001, 100.0, "sell", "12345"),
        (1672515782137001, RECV, "BNBBTC", "BNB", "BTC", 0.0011, 2.5, "buy", "12346"),
    ]
    assert page.ids == [12345, 12346]


def test_binance_locate_answers() -> None:
    spot, futures = spec_for("binance_spot", "http://x"), spec_for("binance_futures", "http://x")
    assert spot.parse_locate is not None and futures.parse_locate is not None
    assert spot.parse_locate(body("binance/spot_history_agg_trades.json")) == 12345  # f, the trade id
    assert spot.parse_locate(body("binance/spot_history_agg_trades_empty.json")) is None
    assert futures.parse_locate(body("binance/futures_history_agg_trades.json")) == 5933014  # a


def test_binance_futures_agg_trades() -> None:
    page = binance.parse_agg_trades(body("binance/futures_history_agg_trades.json"), RECV, BTCUSDT)
    assert page.rows == [
        (1767323045678000, RECV, "BTCUSDT", "BTC", "USDT", 87914.7, 0.012, "sell", "5933014"),
        (1767323045701000, RECV, "BTCUSDT", "BTC", "USDT", 87914.8, 0.5, "buy", "5933015"),
    ]
    assert page.ids == [5933014, 5933015]


@pytest.mark.parametrize(
    ("parse", "name", "message"),
    [
        (
            binance.parse_historical_trades,
            "binance/spot_history_error.json",
            "binance -1121: Invalid symbol.",
        ),
        (binance.parse_agg_trades, "binance/futures_history_error_window.json", "binance -1127"),
        (okx.parse_history_trades, "okx/spot_history_error.json", "okx 51001: Instrument ID does not exist"),
        (okx.parse_history_trades, "okx/spot_history_rate_limited.json", "okx 50011"),
        (gate.parse_spot_trades, "gate/spot_history_error.json", "gate INVALID_CURRENCY_PAIR"),
        (bybit.parse_recent_trades, "bybit/spot_history_error.json", "bybit 10001: Not supported symbols"),
        (kucoin.parse_spot_histories, "kucoin/spot_history_error.json", "kucoin 400100"),
        (phemex.parse_spot_trades, "phemex/spot_history_error.json", "phemex: {'code': 6001"),
    ],
)
def test_error_bodies(parse: object, name: str, message: str) -> None:
    with pytest.raises(HistoryError, match="^" + message.replace("(", r"\(")[:30]):
        parse(body(name), RECV, BTCUSDT)  # type: ignore[operator]


def test_okx_history_trades_oldest_first() -> None:
    page = okx.parse_history_trades(body("okx/spot_history_trades.json"), RECV, OKX_SPOT)
    assert page.rows == [
        (1630048897897000, RECV, "BTC-USDT", "BTC", "USDT", 42219.9, 0.12060306, "buy", "130639474"),
        (1630048897911000, RECV, "BTC-USDT", "BTC", "USDT", 42220.1, 0.001, "sell", "130639475"),
    ]
    assert page.ids == [130639474, 130639475]
    assert okx.parse_locate(body("okx/spot_history_trades.json")) == 130639475


def test_okx_swap_contracts_to_base() -> None:
    page = okx.parse_history_trades(body("okx/futures_history_trades.json"), RECV, OKX_SWAP)
    assert rows(page) == [
        (1767323045678000, "BTC-USDT-SWAP", "BTC", "USDT", 87914.7, 5 * 0.01, "sell", "1394564798")
    ]


def test_okx_answer_about_another_instrument_is_refused() -> None:
    with pytest.raises(ParseError, match="BTC-USDT"):
        okx.parse_history_trades(body("okx/spot_history_trades.json"), RECV, OKX_SWAP)


def test_gate_spot_trades() -> None:
    page = gate.parse_spot_trades(body("gate/spot_history_trades.json"), RECV, GT_USDT)
    assert page.rows == [
        (1606292218213457, RECV, "GT_USDT", "GT", "USDT", 0.4705, 16.47, "sell", "309143071"),
        (1606292219001000, RECV, "GT_USDT", "GT", "USDT", 0.4706, 1.5, "buy", "309143072"),
    ]


def test_gate_futures_trades_sign_multiplier_and_internal() -> None:
    page = gate.parse_futures_trades(body("gate/futures_history_trades.json"), RECV, GATE_BTC)
    assert page.rows == [
        (1769990400501000, RECV, "BTC_USDT", "BTC", "USDT", 78251.3, 0.00015, "buy", "630210001"),
        (1769990400503000, RECV, "BTC_USDT", "BTC", "USDT", 78251.2, 0.00007, "sell", "630210002"),
    ]  # the is_internal print is dropped, as live
    seconds = gate.parse_futures_trades(body("gate/futures_history_trades_seconds_only.json"), RECV, GATE_BTC)
    assert seconds.rows[0][0] == 1769990400501000  # create_time 1769990400.501 s, no float error


def test_gate_time_conversions() -> None:
    """Spot ``create_time_ms`` goes through the adapter's own conversion; futures REST times
    (ms numbers, or seconds with a ms fraction) become the push's integer ms."""

    def futures_us(create_time_ms: object = None, create_time: object = None) -> int:
        row = gate.FuturesHistoryTrade(
            id=1, contract="X", size="1", price="1", create_time_ms=create_time_ms, create_time=create_time
        )
        return gate.futures_ms(row) * 1000

    assert ms_to_us("1606292218213.4578") == 1606292218213457
    assert ms_to_us("1606292218213") == 1606292218213000
    assert futures_us(create_time=1514764800.123) == 1514764800123000
    assert futures_us(1514764800123) == 1514764800123000
    assert futures_us(1514764800123.0) == 1514764800123000
    for bad in ("x", "1.2.3", "-5"):
        with pytest.raises(ParseError):
            ms_to_us(bad)
    with pytest.raises(ParseError):
        futures_us(True)


def test_bybit_recent_trades() -> None:
    spot = bybit.parse_recent_trades(body("bybit/spot_history_recent_trade.json"), RECV, BTCUSDT)
    assert spot.rows == [
        (1680652847524000, RECV, "BTCUSDT", "BTC", "USDT", 28165.38, 0.041732, "sell", "2290000000050703789")
    ]
    linear = bybit.parse_recent_trades(body("bybit/futures_history_recent_trade.json"), RECV, BTCUSDT)
    assert rows(linear) == [
        (
            1672304486865000,
            "BTCUSDT",
            "BTC",
            "USDT",
            16578.5,
            0.001,
            "buy",
            "20f43950-d8dd-5b31-9112-a178eb6023af",
        )
    ]


def test_kucoin_histories() -> None:
    spot = kucoin.parse_spot_histories(body("kucoin/spot_history_histories.json"), RECV, KC_SPOT)
    assert rows(spot) == [
        (1729843222921000, "BTC-USDT", "BTC", "USDT", 67523.0, 0.003, "buy", "11067996711960577")
    ]
    fut = kucoin.parse_futures_history(body("kucoin/futures_history_trade_history.json"), RECV, KC_FUT)
    assert rows(fut) == [
        (1731898619520000, "XBTUSDTM", "BTC", "USDT", 90503.9, 2 * 0.001, "buy", "1794100537695")
    ]


def test_phemex_trades() -> None:
    spot = phemex.parse_spot_trades(body("phemex/spot_history_trades.json"), RECV, PHX_SPOT)
    assert rows(spot) == [(1591268226414925, "sBTCUSDT", "BTC", "USDT", 9544.88, 0.002791, "sell", None)]
    perp = phemex.parse_perp_trades(body("phemex/futures_history_trades.json"), RECV, PHX_PERP)
    assert rows(perp) == [(1669198793402790, "BTCUSDT", "BTC", "USDT", 16545.6, 0.7, "buy", None)]


def test_rest_times_are_bounded_by_the_answer() -> None:
    """A REST trade newer than the answer (plus the live skew) or before 2009 is refused: a ms
    time read as µs (the µs header ignored) lands in 1970."""
    ms_answer = (
        body("binance/spot_history_historical_trades.json")
        .replace(b"1672515782136407", b"1672515782136")
        .replace(b"1672515782137001", b"1672515782137")
    )
    with pytest.raises(ParseError, match="implausible"):
        binance.parse_historical_trades(ms_answer, RECV, BNBBTC)
    assert binance.parse_historical_trades_ms(ms_answer, RECV, BNBBTC).rows[0][0] == 1672515782136000
    with pytest.raises(ParseError, match="implausible"):
        okx.parse_history_trades(body("okx/spot_history_trades.json"), 1_600_000_000_000_000, OKX_SPOT)


# -- the same trade over REST and over the WebSocket --------------------------------------------

PAIRS = [
    # (stream, instrument, push fixture, history fixture, parse, which REST row)
    (
        "binance_spot",
        BNBBTC,
        "binance/spot_trade.json",
        "binance/spot_history_historical_trades.json",
        binance.parse_historical_trades,
        0,
    ),
    (
        "binance_futures",
        BTCUSDT,
        "binance/futures_aggtrade.json",
        "binance/futures_history_agg_trades.json",
        binance.parse_agg_trades,
        0,
    ),
    (
        "okx_spot",
        OKX_SPOT,
        "okx/spot_trade.json",
        "okx/spot_history_trades.json",
        okx.parse_history_trades,
        0,
    ),
    (
        "okx_futures",
        OKX_SWAP,
        "okx/futures_trade.json",
        "okx/futures_history_trades.json",
        okx.parse_history_trades,
        0,
    ),
    (
        "gate_spot",
        GT_USDT,
        "gate/spot_trade.json",
        "gate/spot_history_trades.json",
        gate.parse_spot_trades,
        0,
    ),
    (
        "gate_futures",
        GATE_BTC,
        "gate/futures_multi_trade_decimal_sizes.json",
        "gate/futures_history_trades.json",
        gate.parse_futures_trades,
        None,
    ),
    (
        "bybit_spot",
        BTCUSDT,
        "bybit/spot_trade_2023.json",
        "bybit/spot_history_recent_trade.json",
        bybit.parse_recent_trades,
        0,
    ),
    (
        "bybit_futures",
        BTCUSDT,
        "bybit/futures_trade.json",
        "bybit/futures_history_recent_trade.json",
        bybit.parse_recent_trades,
        0,
    ),
    (
        "kucoin_spot",
        KC_SPOT,
        "kucoin/spot_trade.json",
        "kucoin/spot_history_histories.json",
        kucoin.parse_spot_histories,
        0,
    ),
    (
        "kucoin_futures",
        KC_FUT,
        "kucoin/futures_trade.json",
        "kucoin/futures_history_trade_history.json",
        kucoin.parse_futures_history,
        0,
    ),
    (
        "phemex_spot",
        PHX_SPOT,
        "phemex/spot_trade.json",
        "phemex/spot_history_trades.json",
        phemex.parse_spot_trades,
        0,
    ),
    (
        "phemex_futures",
        PHX_PERP,
        "phemex/futures_trade.json",
        "phemex/futures_history_trades.json",
        phemex.parse_perp_trades,
        0,
    ),
]


@pytest.mark.parametrize(
    ("stream", "inst", "push", "history", "parse", "index"), PAIRS, ids=[p[0] for p in PAIRS]
)
def test_rest_row_equals_push_row(
    stream: str, inst: Instrument, push: str, history: str, parse: object, index: int | None
) -> None:
    rest: list[TradeRow] = parse(body(history), RECV, inst).rows  # type: ignore[operator]
    frame = body(push)
    live = get_adapter(stream).decode(frame, rest[0][0], {inst.symbol: inst})  # received at trade time
    assert isinstance(live, list) and live
    want = [(r[0], *r[2:]) for r in live]
    got = [(r[0], *r[2:]) for r in rest]
    if index is None:
        assert got == want  # every trade of the push
    else:
        assert got[index] == want[0]
