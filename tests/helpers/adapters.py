"""Shared helpers for the exchange adapter tests (fixtures on disk, sim instruments, hypothesis).

Import them as ``from helpers.adapters import …``. Keep this module small and its names
stable: other adapter tests import from it.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from hypothesis import strategies as st

from pumpwatch.errors import ParseError
from pumpwatch.recorder.adapter import Control, Instrument, Instruments
from pumpwatch.recorder.adapters import checks, get_adapter
from pumpwatch.recorder.sim.instruments import sim_instrument
from pumpwatch.segments.schema import TradeRow
from pumpwatch.streams import split_stream
from pumpwatch.timeunits import US_PER_DAY, US_PER_HOUR, US_PER_MS

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# A receive time near "now" for generated rows: 2026-01-02T03:04:05.678901Z.
RECV_US = 1_767_323_045_678_901

SIM_BASES: tuple[str, ...] = ("BTC", "ETH", "0G", "1000PEPE", "SOL")


def fixture_bytes(exchange: str, name: str) -> bytes:
    """The bytes of ``tests/fixtures/<exchange>/<name>`` (name with its extension)."""
    return (FIXTURES / exchange / name).read_bytes()


def fixture_json(exchange: str, name: str) -> Any:
    """``tests/fixtures/<exchange>/<name>`` parsed as JSON."""
    return orjson.loads(fixture_bytes(exchange, name))


def sim_instruments(stream: str, bases: Sequence[str] = SIM_BASES) -> dict[str, Instrument]:
    """The simulated instruments of `stream` by exchange symbol."""
    insts = (sim_instrument(stream, base) for base in bases)
    return {inst.symbol: inst for inst in insts}


def decode_or_parse_error(
    decode: Callable[[bytes | str, int, Instruments], list[TradeRow] | Control],
    frame: bytes | str,
    instruments: Instruments,
    recv_us: int = RECV_US,
) -> list[TradeRow] | Control | None:
    """Run `decode`; ParseError gives None, any other exception fails the test, and a result
    must be a Control or a list of well-formed rows."""
    try:
        out = decode(frame, recv_us, instruments)
    except ParseError:
        return None
    if isinstance(out, Control):
        return out
    assert isinstance(out, list), type(out)
    for row in out:
        assert len(row) == 9
        time_us, row_recv, symbol, base, quote, price, qty, side, trade_id = row
        assert type(time_us) is int and abs(time_us - recv_us) < US_PER_DAY
        assert row_recv == recv_us
        assert (
            symbol in instruments and base == instruments[symbol].base and quote == instruments[symbol].quote
        )
        assert type(price) is float and 0 < price < float("inf")
        assert type(qty) is float and 0 < qty < float("inf")
        assert side in ("buy", "sell")
        assert trade_id is None or type(trade_id) is str
    return out


# Arbitrary JSON values, for fuzzing decoders with well-formed but unexpected shapes.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=5)
    ),
    max_leaves=20,
)


def json_bytes(value: Any) -> bytes:
    """`value` as JSON text (stdlib: big integers and ``Infinity`` go through, as garbage may)."""
    return json.dumps(value).encode()


positive_floats = st.floats(min_value=1e-8, max_value=1e9, allow_nan=False, allow_infinity=False)


def contract_qty(contracts: str, multiplier: float) -> float:
    """Base quantity of `contracts` exactly as a decoder computes it (the exact decimal product)."""
    return checks.contract_qty(contracts, checks.multiplier_parts(multiplier))


@st.composite
def trade_rows(
    draw: st.DrawFn,
    instruments: Instruments,
    ids: st.SearchStrategy[str | None],
    time_step_us: int = 1,
    max_rows: int = 30,
) -> list[TradeRow]:
    """Rows as a decoder would emit them for `instruments`, oldest first.

    `time_step_us` is the stream's time resolution (1000 for ms streams); futures
    quantities are whole multiples of contracts with up to 3 decimals, as exchanges send.
    """
    symbols = sorted(instruments)
    n = draw(st.integers(min_value=1, max_value=max_rows))
    start = draw(st.integers(min_value=-US_PER_HOUR, max_value=US_PER_HOUR)) + RECV_US
    start -= start % time_step_us
    rows: list[TradeRow] = []
    t = start
    for _ in range(n):
        t += draw(st.integers(min_value=0, max_value=5)) * time_step_us
        inst = instruments[draw(st.sampled_from(symbols))]
        if inst.multiplier != 1.0:
            lots = draw(st.integers(min_value=1, max_value=10**7))
            contracts = str(Decimal(lots).scaleb(-draw(st.integers(min_value=0, max_value=3))))
            qty = contract_qty(contracts, inst.multiplier)
        else:
            qty = draw(positive_floats)
        side = draw(st.sampled_from(("buy", "sell")))
        price = draw(positive_floats)
        rows.append((t, RECV_US, inst.symbol, inst.base, inst.quote, price, qty, side, draw(ids)))
    return rows


def ms_rows(instruments: Instruments, n: int = 40) -> list[TradeRow]:
    """`n` deterministic rows over `instruments` at whole ms (every stream carries them exactly)."""
    symbols = sorted(instruments)
    rows: list[TradeRow] = []
    for i in range(n):
        inst = instruments[symbols[i % len(symbols)]]
        qty = contract_qty(str(i + 1), inst.multiplier) if inst.multiplier != 1.0 else 0.25 * (i + 1)
        t_us = RECV_US - RECV_US % US_PER_MS - (n - i) * US_PER_MS
        side = "buy" if i % 3 else "sell"
        rows.append((t_us, RECV_US, inst.symbol, inst.base, inst.quote, 100.5 + i, qty, side, str(1000 + i)))
    return rows


async def sim_end_to_end(
    stream: str, rows: Sequence[TradeRow], acks: int, reject: Sequence[str] = ()
) -> tuple[list[TradeRow], list[Control], list[Instrument]]:
    """Drive `stream`'s adapter against its simulated server over real sockets on 127.0.0.1.

    Fetches the instrument list over REST (following pagination), connects to the adapter's
    connect target, subscribes every sim instrument in request-sized chunks,
    waits for `acks` ack Controls (one per request, or one per symbol on OKX), publishes `rows`,
    sends one keep-alive ping when the adapter has one. Returns the decoded trades, every
    Control decoded on the way, and the REST instruments. (No token step: not for KuCoin.)
    """
    import httpx
    from websockets.asyncio.client import connect

    from pumpwatch.recorder.sim.server import SimExchange

    exchange, market = split_stream(stream)
    adapter = get_adapter(stream)
    proto = importlib.import_module(f"pumpwatch.recorder.sim.{exchange}").sim_protocol(market)
    insts = sim_instruments(stream)
    controls: list[Control] = []
    trades: list[TradeRow] = []

    async def read_until(done: Callable[[], bool]) -> None:
        while not done():
            out = adapter.decode(await asyncio.wait_for(ws.recv(), 5.0), RECV_US, insts)
            if isinstance(out, Control):
                controls.append(out)
            else:
                trades.extend(out)

    async with SimExchange(proto, list(insts.values())) as sim:
        sim.reject(reject)
        rest: list[Instrument] = []
        assert adapter.instruments_request is not None and adapter.parse_instruments is not None
        request = adapter.instruments_request(sim.rest_url)
        async with httpx.AsyncClient() as client:
            while request is not None:
                response = await client.request(request.method, request.url, headers=dict(request.headers))
                page, request = adapter.parse_instruments(response.content)
                rest.extend(page)
        target = adapter.connect_target(sim.ws_url, None, "conn-1")
        async with connect(target.url, additional_headers=dict(target.headers)) as ws:
            symbols = sorted(insts)
            step = adapter.max_symbols_per_request
            for i in range(0, len(symbols), step):
                for frame in adapter.subscribe(symbols[i : i + step], str(i + 1)):
                    await ws.send(frame)
            await read_until(lambda: sum(c.kind == "ack" for c in controls) >= acks)
            sim.publish(rows)
            wanted = [r for r in rows if r[2] not in reject]
            await read_until(lambda: len(trades) >= len(wanted))
            if adapter.ping is not None:
                await ws.send(adapter.ping(RECV_US // US_PER_MS))
                await read_until(lambda: any(c.kind == "pong" for c in controls))
    return trades, controls, rest


numeric_ids = st.integers(min_value=0, max_value=2**62).map(str)
uuid_ids = st.uuids().map(str)
