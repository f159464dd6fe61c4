"""Reconnect backoff: exponential growth, cap, jitter bounds, reset."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pumpwatch.recorder.stream.backoff import Backoff


def test_backoff_doubles_to_the_cap_with_fixed_rng() -> None:
    top = Backoff(1.0, 30.0, rng=lambda: 0.999999)
    assert [round(top.next_delay_s(), 3) for _ in range(8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    bottom = Backoff(1.0, 30.0, rng=lambda: 0.0)
    assert [bottom.next_delay_s() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0]
    assert bottom.attempt == 7


def test_backoff_reset_starts_again() -> None:
    b = Backoff(0.1, 2.0, rng=lambda: 0.5)
    for _ in range(10):
        b.next_delay_s()
    assert b.next_delay_s() == pytest.approx(1.5)  # 2.0 cap: 1.0 + 0.5 * 1.0
    b.reset()
    assert b.attempt == 0
    assert b.next_delay_s() == pytest.approx(0.075)


def test_backoff_survives_a_very_long_outage() -> None:
    b = Backoff(1.0, 30.0, rng=lambda: 0.5)
    b.attempt = 10_000
    assert b.next_delay_s() == pytest.approx(22.5)


@pytest.mark.parametrize(
    ("initial_s", "max_s", "factor"), [(0.0, 1.0, 2.0), (2.0, 1.0, 2.0), (1.0, 2.0, 0.5)]
)
def test_backoff_rejects_nonsense(initial_s: float, max_s: float, factor: float) -> None:
    with pytest.raises(ValueError):
        Backoff(initial_s, max_s, factor=factor)


@given(
    initial_s=st.floats(0.001, 10.0),
    extra_s=st.floats(0.0, 100.0),
    draws=st.lists(st.floats(0.0, 0.9999999), min_size=1, max_size=40),
)
def test_backoff_delays_stay_within_jitter_bounds(
    initial_s: float, extra_s: float, draws: list[float]
) -> None:
    max_s = initial_s + extra_s
    it = iter(draws)
    b = Backoff(initial_s, max_s, rng=lambda: next(it))
    for attempt, _ in enumerate(draws):
        ceiling = min(max_s, initial_s * 2.0**attempt)
        delay = b.next_delay_s()
        assert ceiling / 2 <= delay <= ceiling
        assert delay <= max_s
