"""The history registry: one module per exchange, each with ``spec(market, rest_url)``, and
one shared `RateBudget` per exchange."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from pumpwatch.recorder.history.budget import RateBudget
from pumpwatch.recorder.history.spec import HistorySpec
from pumpwatch.streams import split_stream


def history_spec(stream: str, rest_url: str, options: Mapping[str, Any] | None = None) -> HistorySpec | None:
    """The `HistorySpec` of `stream` (e.g. ``"okx_futures"``) against the REST base `rest_url`.

    `options` are the stream's adapter options from settings (``streams.<id>.options``): the
    REST rows must match what the live stream records, so a configuration whose live records
    no history endpoint reproduces (Binance futures on the raw ``@trade`` channel, OKX on the
    aggregated ``trades`` channel) has no history: None. Repairs of such a stream are
    journaled ``unrepaired`` with reason ``no_history``.
    """
    exchange, market = split_stream(stream)
    module = importlib.import_module(f"pumpwatch.recorder.history.{exchange}")
    spec: HistorySpec | None = module.spec(market, rest_url, dict(options or {}))
    return spec


class Budgets:
    """One `RateBudget` per exchange (its `RateRule.key`), made on first use and then shared
    by every repair of that exchange's streams in this process."""

    def __init__(self) -> None:
        self._budgets: dict[str, RateBudget] = {}

    def for_spec(self, spec: HistorySpec) -> RateBudget:
        budget = self._budgets.get(spec.rate.key)
        if budget is None:
            budget = self._budgets[spec.rate.key] = RateBudget(spec.rate)
        return budget
