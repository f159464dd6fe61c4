"""Times as text, in one place: the TIME argument every command takes (and the Python API),
the plausibility bound every time given by a user must meet, and the µs -> ISO 8601 formatter.

A TIME is ISO 8601 **with a zone** (``2026-01-01T09:01:00Z``, ``2026-01-01T18:01:00+09:00``,
fractions allowed) or an epoch number whose unit is told by its magnitude: between 2009 and
2100 an epoch in seconds has 10 digits, in ms 13, in µs 16, in ns 19, so the ranges never
overlap. A time without a zone is refused: guessing the machine's zone is how a window ends
up 9 hours off (Upbit shows KST). Anything outside [2009, 2100) is refused as a typo.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pumpwatch.errors import UsageError
from pumpwatch.timeunits import US_PER_MS, US_PER_S

EARLIEST_US = 1_230_768_000 * US_PER_S  # 2009-01-01T00:00:00Z: before any exchange in PumpWatch
LATEST_US = 4_102_444_800 * US_PER_S  # 2100-01-01T00:00:00Z
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_EPOCH_DIGITS = 19  # ns before 2100; more digits cannot be plausible (and int() stays cheap)
_EPOCH_UNITS = (("s", US_PER_S, 1), ("ms", US_PER_MS, 1), ("µs", 1, 1), ("ns", 1, 1_000))


def check_time_us(time_us: int, what: str = "time") -> int:
    """`time_us` itself if it lies in [2009, 2100); otherwise `UsageError` naming `what`."""
    if not EARLIEST_US <= time_us < LATEST_US:
        raise UsageError(f"{what} is not a plausible time (epoch {time_us} µs is not between 2009 and 2100)")
    return time_us


def parse_time_us(text: str, *, what: str = "time") -> int:
    """A TIME (module doc) as epoch µs UTC; `UsageError` (one line naming `what`) otherwise."""
    text = text.strip()
    if text.isascii() and text.isdigit():
        return _epoch_us(text, what)
    iso = text[:-1] + "Z" if text.endswith("z") else text
    try:
        when = datetime.fromisoformat(iso)
    except (ValueError, OverflowError):
        raise UsageError(
            f"{what}: cannot read time {text!r}: give ISO 8601 with a zone (2025-01-02T03:04:05Z, "
            "2025-01-02T12:04:05+09:00) or an epoch number in s, ms, µs or ns"
        ) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise UsageError(
            f"{what}: time {text!r} has no time zone: add Z (UTC) or an offset such as +09:00 (KST)"
        )
    try:
        time_us = (when - _EPOCH) // timedelta(microseconds=1)
    except OverflowError:
        time_us = -1
    if not EARLIEST_US <= time_us < LATEST_US:
        raise UsageError(f"{what}: time {text!r} is not plausible (not between 2009 and 2100)")
    return time_us


def _epoch_us(digits: str, what: str) -> int:
    if len(digits) <= _MAX_EPOCH_DIGITS:
        n = int(digits)
        for _unit, mul, div in _EPOCH_UNITS:
            time_us = n * mul // div
            if EARLIEST_US <= time_us < LATEST_US:
                return time_us
    raise UsageError(
        f"{what}: epoch {digits!r} is not a plausible time in s, ms, µs or ns (not between 2009 and 2100)"
    )


def format_utc(time_us: int) -> str:
    """Epoch µs -> ``2026-08-21T10:19:25Z``, with a fraction only when there is one, trailing
    zeros dropped (``…:25.25Z``, ``…:25.123456Z``)."""
    dt = _EPOCH + timedelta(microseconds=time_us)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if dt.microsecond:
        text += f".{dt.microsecond:06d}".rstrip("0")
    return text + "Z"
