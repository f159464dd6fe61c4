"""Shared pieces of the history tests: instruments, a store stand-in and a journal collector."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.history.budget import RateBudget
from pumpwatch.recorder.history.spec import HistorySpec
from pumpwatch.recorder.history.specs import history_spec
from pumpwatch.recorder.sim.instruments import sim_instrument
from pumpwatch.segments.schema import TradeRow

NOW_US = time.time_ns() // 1000
START_US = (NOW_US - 600_000_000) // 1000 * 1000  # ten minutes ago, whole ms (inside every reach)


def instrument(stream: str, base: str = "ABC") -> Instrument:
    return sim_instrument(stream, base)


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
