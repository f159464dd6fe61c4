"""Value checks shared by the exchange parsers (Sans-I/O; raise only ParseError)."""

from __future__ import annotations

from typing import Any

from pumpwatch.errors import ParseError

_INF = float("inf")


def positive(value: Any, what: str) -> float:
    """A finite price/size > 0 from a JSON string or number (bool is not a number here)."""
    if type(value) is str or type(value) is int or type(value) is float:
        try:
            x = float(value)
        except (ValueError, OverflowError):
            raise ParseError(f"bad {what}: {value!r}") from None
        if 0.0 < x < _INF:
            return x
    raise ParseError(f"bad {what}: {value!r}")
