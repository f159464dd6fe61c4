"""Shared pieces of the history tests: the project's local exchange servers (`SimExchange`, with
their REST history endpoints) holding a list of trades, the requests a repair sent, instruments,
a store stand-in and a journal collector."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from helpers.history_faults import FaultProxy
from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.history.budget import RateBudget
from pumpwatch.recorder.history.repair import make_client
from pumpwatch.recorder.history.spec import HistorySpec
from pumpwatch.recorder.history.specs import history_spec
from pumpwatch.recorder.sim.cluster import sim_protocol_for
from pumpwatch.recorder.sim.history import RateLimit, history_api_for
from pumpwatch.recorder.sim.instruments import sim_instrument
from pumpwatch.recorder.sim.server import SimExchange
from pumpwatch.segments.schema import TradeRow

NOW_US = time.time_ns() // 1000
START_US = (NOW_US - 600_000_000) // 1000 * 1000  # ten minutes ago, whole ms (inside every reach)


def instrument(stream: str, base: str = "ABC") -> Instrument:
    return sim_instrument(stream, base)


def make_trades(
    inst: Instrument,
    count: int,
    *,
    start_us: int,
    first_id: int = 1000,
    step_us: Sequence[int] = (0, 1000, 2000, 3000),
    micro: bool = False,
    seed: int = 7,
) -> list[TradeRow]:
    """`count` trades of `inst`, oldest first, ids counting up from `first_id`; times step by
    one of `step_us` (0 gives same-time ties), plus sub-ms µs when `micro`. Prices and sizes
    are chosen so every venue's wire form is exact (whole contracts, Phemex 1e-8 steps)."""
    rnd = random.Random(seed)
    rows: list[TradeRow] = []
    t = start_us
    for i in range(count):
        t += rnd.choice(step_us)
        time_us = t + (rnd.randrange(1000) if micro else 0)
        time_us = max(time_us, rows[-1][0] if rows else time_us)
        price = round(1.0 + rnd.randrange(1, 5000) / 1000, 3)
        qty = rnd.randrange(1, 500) * (inst.multiplier if inst.multiplier != 1.0 else 0.01)
        side = "buy" if rnd.random() < 0.5 else "sell"
        rows.append((time_us, 0, inst.symbol, inst.base, inst.quote, price, qty, side, str(first_id + i)))
    return rows


def sim_limit(stream: str, name: str = "ip") -> RateLimit:
    """The local server's own rate limit `name` of `stream` (OKX: ``history-trades``)."""
    return history_api_for(stream).budgets[name]


@dataclass(frozen=True)
class Sent:
    """One request a repair sent: path, query and headers (lower-case names)."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class Venue:
    """A local exchange server holding trades, and the client a repair uses against it."""

    stream: str
    inst: Instrument
    sim: SimExchange
    client: httpx.AsyncClient
    url: str  # the REST base a spec is built on (the sim's, or the fault proxy's in front of it)
    proxy: FaultProxy | None
    log: list[Sent] = field(default_factory=list)


@contextlib.asynccontextmanager
async def venue(
    stream: str,
    trades: Sequence[TradeRow],
    *,
    limits: Mapping[str, RateLimit] | None = None,
    faults: bool = False,
    **sim_kwargs: Any,
) -> AsyncIterator[Venue]:
    """`stream`'s `SimExchange` (instrument ABC) with `trades` published while nobody listens,
    so they are REST history only. Its rate limits are lifted unless `limits` sets some by name
    (the limit tests); `faults` puts a `FaultProxy` in front for the faults the sim does not make."""
    inst = instrument(stream)
    budgets = {
        name: dataclasses.replace(lim, limit=10**9) for name, lim in history_api_for(stream).budgets.items()
    }
    budgets.update(limits or {})
    async with contextlib.AsyncExitStack() as stack:
        sim = await stack.enter_async_context(
            SimExchange(sim_protocol_for(stream), [inst], history_budgets=budgets, **sim_kwargs)
        )
        sim.publish(trades)
        proxy = await stack.enter_async_context(FaultProxy(sim.rest_url)) if faults else None
        client = await stack.enter_async_context(make_client())
        place = Venue(stream, inst, sim, client, proxy.url if proxy else sim.rest_url, proxy)

        async def log(request: httpx.Request) -> None:
            headers = {k.lower(): v for k, v in request.headers.items()}
            place.log.append(Sent(request.url.path, dict(request.url.params), headers))

        client.event_hooks["request"].append(log)
        yield place


class Store:
    """What `write_repaired` does for these tests: keep rows, drop ones already held."""

    def __init__(self) -> None:
        self.rows: list[TradeRow] = []
        self.keys: set[Any] = set()
        self.calls = 0

    def write(self, rows: list[TradeRow], recv_us: int) -> int:
        self.calls += 1
        new = 0
        for row in rows:
            key = (row[2], row[8]) if row[8] is not None else (row[2], row[0], row[5], row[6], row[7])
            if key not in self.keys:
                self.keys.add(key)
                self.rows.append(row)
                new += 1
        return new

    def ids(self) -> list[int]:
        return sorted(int(r[8] or 0) for r in self.rows)


class Journal:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: str, fields: Mapping[str, Any]) -> None:
        self.events.append((event, dict(fields)))

    def of(self, event: str) -> list[dict[str, Any]]:
        return [fields for name, fields in self.events if name == event]


def fast_budget(spec: HistorySpec, *, real_rate: bool = False, **kwargs: Any) -> RateBudget:
    """The spec's budget with backoffs shrunk for tests and, unless `real_rate`, a weight
    budget 100 times the exchange's (the pacing itself is tested in test_budget.py)."""
    kwargs.setdefault("default_429_s", 0.05)
    kwargs.setdefault("ban_floor_s", 0.3)
    rule = (
        spec.rate
        if real_rate
        else dataclasses.replace(spec.rate, weight_per_window=spec.rate.weight_per_window * 100)
    )
    return RateBudget(rule, **kwargs)


def spec_for(stream: str, rest_url: str, options: Mapping[str, Any] | None = None) -> HistorySpec:
    """The stream's history spec (with default options every stream has one)."""
    spec = history_spec(stream, rest_url, options)
    assert spec is not None
    return spec
