"""The history registry: one module per exchange, each with ``spec(market, rest_url)``, and
one shared `RateBudget` per exchange and side (`Budgets`: the worker's live repair has its
own; every extraction-time repair of a process shares `extraction_budgets()`)."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from typing import Any

from pumpwatch.recorder.history.budget import EXTRACTION_SHARE, RateBudget
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
    by every repair of that exchange's streams that uses this registry; each gets `share` of
    the exchange's limit (None: ``1 − RateRule.reserve``, the live repair's)."""

    def __init__(self, share: float | None = None, **budget_kwargs: Any) -> None:
        self.share = share
        self._kwargs = budget_kwargs  # clock, sleep, backoffs (tests)
        self._budgets: dict[str, RateBudget] = {}
        self._lock = threading.Lock()

    def for_spec(self, spec: HistorySpec) -> RateBudget:
        with self._lock:
            budget = self._budgets.get(spec.rate.key)
            if budget is None:
                budget = RateBudget(spec.rate, share=self.share, **self._kwargs)
                self._budgets[spec.rate.key] = budget
            return budget


_extraction = Budgets(share=EXTRACTION_SHARE)


def extraction_budgets() -> Budgets:
    """The process's one registry for extraction-time repairs (`window.repair_window`, the
    store extraction's repair): however many extractions run at once in this process (the
    listing trigger runs two), together they spend at most `EXTRACTION_SHARE` of each
    exchange's limit, beside the worker's live repairs."""
    return _extraction


def reset_extraction_budgets(**budget_kwargs: Any) -> Budgets:
    """A fresh process registry (tests: no backoff carried over from an earlier test)."""
    global _extraction
    _extraction = Budgets(share=EXTRACTION_SHARE, **budget_kwargs)
    return _extraction
