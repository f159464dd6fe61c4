"""Every history parser, given arbitrary bytes or arbitrary JSON, raises only its documented
errors (`ParseError` for a malformed answer, `HistoryError` for an error answer)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from helpers.history import spec_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pumpwatch.errors import ParseError
from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.history.spec import HistoryError, HistorySpec
from pumpwatch.streams import STREAMS

RECV = 1_800_000_000_000_000  # 2027: REST trade times up to then are plausible
INST = Instrument("ABC", "ABC", "USDT", multiplier=0.01, price_scale=8, qty_scale=8)
SPECS = {stream: spec_for(stream, "http://127.0.0.1:9") for stream in STREAMS}

KEYS = [
    "code",
    "msg",
    "data",
    "result",
    "list",
    "retCode",
    "error",
    "trades",
    "trades_p",
    "symbol",
    "id",
    "price",
    "qty",
    "time",
    "isBuyerMaker",
    "a",
    "p",
    "q",
    "T",
    "m",
    "f",
    "instId",
    "tradeId",
    "px",
    "sz",
    "side",
    "ts",
    "create_time_ms",
    "create_time",
    "amount",
    "size",
    "contract",
    "currency_pair",
    "execId",
    "sequence",
    "label",
    "is_internal",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["ABC", "buy", "sell", "Buy", "Sell", "0", "200000", "1.5", "-2", "1700000000000"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(
            st.sampled_from(KEYS),
            inner,
            max_size=8,
        ),
    ),
    max_leaves=25,
)


def _parse(spec: HistorySpec, body: bytes) -> Any:
    return spec.parse(body, RECV, INST)


def _parsers() -> list[tuple[str, Callable[[bytes], Any]]]:
    out: list[tuple[str, Callable[[bytes], Any]]] = []
    for stream, spec in SPECS.items():
        out.append((f"{stream}.parse", functools.partial(_parse, spec)))
        if spec.parse_locate is not None:
            out.append((f"{stream}.locate", spec.parse_locate))
    return out


PARSERS = _parsers()


def _check(parse: Callable[[bytes], Any], data: bytes) -> None:
    with contextlib.suppress(ParseError, HistoryError):
        parse(data)


@pytest.mark.parametrize(("name", "parse"), PARSERS, ids=[p[0] for p in PARSERS])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=64))
def test_arbitrary_bytes(name: str, parse: Callable[[bytes], Any], data: bytes) -> None:
    _check(parse, data)


@pytest.mark.parametrize(("name", "parse"), PARSERS, ids=[p[0] for p in PARSERS])
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values)
def test_arbitrary_json(name: str, parse: Callable[[bytes], Any], value: Any) -> None:
    _check(parse, orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))


@pytest.mark.parametrize(("name", "parse"), PARSERS, ids=[p[0] for p in PARSERS])
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(json_values, max_size=4))
def test_arbitrary_items_in_the_right_envelope(
    name: str, parse: Callable[[bytes], Any], items: list[Any]
) -> None:
    for envelope in (
        items,
        {"code": "0", "msg": "", "data": items},
        {"code": "200000", "data": items},
        {"retCode": 0, "result": {"list": items}},
        {"error": None, "result": {"symbol": "ABC", "trades": items, "trades_p": items}},
    ):
        _check(parse, orjson.dumps(envelope, option=orjson.OPT_NON_STR_KEYS))
