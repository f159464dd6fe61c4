"""Futures quantities: contracts × multiplier exact to the decimals the two numbers have
(`checks.contract_qty`), in every futures adapter that converts contracts (OKX ctVal, KuCoin
multiplier, Gate quanto_multiplier)."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.adapters import get_adapter
from pumpwatch.recorder.adapters.checks import Multiplier, contract_qty, decimal_parts, multiplier_parts

RECV_US = 1_767_301_205_000_000
TS_MS = RECV_US // 1000 - 359


def decimal_text(digits: int, places: int, sign: str = "") -> str:
    text = str(Decimal(digits).scaleb(-places))
    return sign + (format(Decimal(text), "f"))


decimals = st.builds(
    decimal_text,
    st.integers(min_value=1, max_value=10**12),
    st.integers(min_value=0, max_value=12),
)


@given(a=decimals, b=decimals)
def test_the_product_is_the_exact_decimal_one(a: str, b: str) -> None:
    exact = Decimal(a) * Decimal(b)
    scale = decimal_parts(a)[1] + decimal_parts(b)[1]
    assert exact == exact.quantize(Decimal(1).scaleb(-scale))  # the combined scale holds it
    assert contract_qty(a, Multiplier(decimal_parts(b))) == float(exact)
    # the multiplier as an instrument keeps it (a float, read back by its shortest repr)
    mult = multiplier_parts(float(b))
    assert contract_qty(a, mult) == float(exact)
    assert contract_qty(a, mult) == float(exact)  # again: remembered
    # a size sent as a JSON number, signed (Gate's sign is the taker side)
    assert contract_qty(float(a), mult) == float(exact)
    assert contract_qty("-" + a, mult) == float(exact)


def test_examples() -> None:
    assert contract_qty("17711", multiplier_parts(0.1)) == 1771.1  # float: 1771.1000000000001
    assert contract_qty(3, multiplier_parts(0.0001)) == 0.0003  # float: 0.00030000000000000003
    assert contract_qty("0.7", multiplier_parts(1e-05)) == 7e-06
    assert contract_qty("2", multiplier_parts(100.0)) == 200.0
    assert decimal_parts("1E+3") == (1000, 0)


@pytest.mark.parametrize(
    "bad", ["", ".", "nan", "inf", "-inf", "1.2.3", "0x10", "1e999999", "9" * 50 + "." + "9" * 45]
)
def test_malformed_sizes_are_value_errors(bad: str) -> None:
    with pytest.raises(ValueError):
        contract_qty(bad, multiplier_parts(0.1))


def test_each_futures_adapter_stores_the_exact_quantity() -> None:
    okx = get_adapter("okx_futures")
    okx_insts = {"0G-USDT-SWAP": Instrument("0G-USDT-SWAP", "0G", "USDT", multiplier=0.1)}
    frame = {
        "arg": {"channel": "trades-all", "instId": "0G-USDT-SWAP"},
        "data": [
            {"instId": "0G-USDT-SWAP", "tradeId": "1", "px": "0.0778", "sz": "17711", "side": "buy",
             "ts": str(TS_MS)}
        ],
    }  # fmt: skip
    (row,) = okx.decode(orjson.dumps(frame), RECV_US, okx_insts)
    assert row[6] == 1771.1

    kucoin = get_adapter("kucoin_futures")
    ku_insts = {"0GUSDTM": Instrument("0GUSDTM", "0G", "USDT", multiplier=0.1)}
    frame = {
        "topic": "/contractMarket/execution:0GUSDTM",
        "type": "message",
        "subject": "match",
        "sn": 1,
        "data": {"symbol": "0GUSDTM", "sequence": 5, "side": "sell", "size": 17711, "price": "0.0778",
                 "takerOrderId": "a", "makerOrderId": "b", "tradeId": "t1", "ts": TS_MS * 1_000_000},
    }  # fmt: skip
    (row,) = kucoin.decode(orjson.dumps(frame), RECV_US, ku_insts)
    assert row[6] == 1771.1

    gate = get_adapter("gate_futures")
    gate_insts = {"0G_USDT": Instrument("0G_USDT", "0G", "USDT", multiplier=0.1)}
    frame = {
        "time": TS_MS // 1000,
        "time_ms": TS_MS,
        "channel": "futures.trades",
        "event": "update",
        "result": [{"size": -17711, "id": 9, "create_time": TS_MS // 1000, "create_time_ms": TS_MS,
                    "price": "0.0778", "contract": "0G_USDT"}],
    }  # fmt: skip
    (row,) = gate.decode(orjson.dumps(frame), RECV_US, gate_insts)
    assert (row[6], row[7]) == (1771.1, "sell")
