"""`read_trades` / `iter_batches` take the window as the user has it: epoch µs, aware datetimes,
pandas Timestamps, numpy datetime64 or TIME strings; `base` in any case; exchanges as streams."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from helpers.store import T0_US, make_rows

from pumpwatch.errors import UsageError
from pumpwatch.segments import SegmentWriter, iter_batches, read_trades
from pumpwatch.segments.reader import time_us
from pumpwatch.timeunits import US_PER_S as S

END_US = T0_US + 10 * S


@pytest.fixture
def store(tmp_path):
    for stream in ("binance_spot", "binance_futures", "okx_spot"):
        with SegmentWriter(tmp_path, stream, clock_us=lambda: 0) as w:
            w.append(make_rows(60, step_us=250_000))  # 15 s from 2026-01-01T00:00:00Z
    return tmp_path


def test_every_time_form_gives_the_same_window(store) -> None:
    want = read_trades(store, T0_US, END_US)
    assert want.num_rows == 3 * 41
    start = datetime(2026, 1, 1, tzinfo=UTC)
    forms = [
        (start, start + timedelta(seconds=10)),
        (start.astimezone(timezone(timedelta(hours=9))), start + timedelta(seconds=10)),  # KST
        (pd.Timestamp("2026-01-01T00:00:00Z"), pd.Timestamp("2026-01-01 09:00:10", tz="Asia/Seoul")),
        (np.datetime64("2026-01-01T00:00:00"), np.datetime64(END_US, "us")),
        ("2026-01-01T00:00:00Z", "2026-01-01T09:00:10+09:00"),
        ("1767225600", "1767225610000"),  # epoch s and ms, told apart by magnitude
        (np.int64(T0_US), END_US),
    ]
    for start_value, end_value in forms:
        assert read_trades(store, start_value, end_value).equals(want), (start_value, end_value)


def test_nanoseconds_are_floored_to_the_microsecond() -> None:
    assert time_us(pd.Timestamp(T0_US * 1000 + 999, unit="ns", tz="UTC")) == T0_US
    assert time_us(np.datetime64(T0_US * 1000 + 999, "ns")) == T0_US


def test_bad_times_are_one_line_usage_errors(store) -> None:
    for value in (
        datetime(2026, 1, 1),
        pd.Timestamp("2026-01-01"),
        "2026-01-01T00:00:00",
        "soon",
        1.5,
        True,
        None,
    ):
        with pytest.raises(UsageError) as info:
            read_trades(store, value, END_US)  # type: ignore[arg-type]
        assert "\n" not in str(info.value) and str(info.value).startswith("start")
    with pytest.raises(UsageError, match=r"^end"):
        list(iter_batches(store, T0_US, "yesterday"))


def test_base_is_case_insensitive(store) -> None:
    upper = read_trades(store, T0_US, END_US, base="0G")
    assert upper.num_rows == 3 * 13
    assert read_trades(store, T0_US, END_US, base="0g").equals(upper)
    assert read_trades(store, T0_US, END_US, base=" eth ").num_rows == 3 * 14


def test_an_exchange_means_both_its_streams(store) -> None:
    both = read_trades(store, T0_US, END_US, streams=["binance"])
    assert sorted(set(zip(both["exchange"].to_pylist(), both["market"].to_pylist(), strict=True))) == [
        ("binance", "futures"),
        ("binance", "spot"),
    ]
    assert read_trades(store, T0_US, END_US, streams="binance").equals(both)
    assert read_trades(store, T0_US, END_US, streams=["Binance_Spot", "binance_futures"]).equals(both)
    assert read_trades(store, T0_US, END_US, streams="okx,binance_spot").num_rows == 2 * 41
    with pytest.raises(UsageError, match="unknown stream"):
        read_trades(store, T0_US, END_US, streams=["kraken"])
