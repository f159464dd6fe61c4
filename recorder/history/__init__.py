"""Repairing gaps from the exchanges' public REST trade history.

spec.py     what a stream's history endpoint is (`HistorySpec`, `HistoryPage`, `RateRule`)
budget.py   one token-bucket `RateBudget` per exchange, with 429/418 backoff
pager.py    pages a span out of a spec, exchange-blind, and says what is covered
repair.py   `repair()`: page, write through the store, journal `repaired`/`unrepaired`
specs.py    the registry: `history_spec(stream, rest_url, options)` and shared `Budgets`
<exchange>.py  the specs of one exchange's two markets (see docs/repair.md)
"""
