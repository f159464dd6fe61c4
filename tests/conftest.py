"""Every test starts with a fresh process-wide extraction budget registry
(`specs.extraction_budgets`), so no backoff or window of an earlier test carries over."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pumpwatch.recorder.history.specs import reset_extraction_budgets


@pytest.fixture(autouse=True)
def _fresh_extraction_budgets() -> Iterator[None]:
    reset_extraction_budgets()
    yield
    reset_extraction_budgets()
