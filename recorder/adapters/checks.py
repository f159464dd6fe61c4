"""What every exchange parser shares: value checks, the JSON error boundary, option validation.

Sans-I/O. The trade checks raise only `ParseError` (the parser contract, DESIGN §12); option
validation raises only `ConfigError` naming ``streams.<stream>.options.<key>`` (settings are
checked when loaded, before any process starts).

A parser decodes the frame with a typed schema (a `msgspec.Struct`), so the JSON types are
already checked when these run: what is left is meaning (a price must be positive and finite,
a trade time near the receive time).
"""

from __future__ import annotations

from collections.abc import Mapping
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import msgspec

from pumpwatch.errors import ConfigError, ParseError
from pumpwatch.timeunits import US_PER_DAY

if TYPE_CHECKING:
    from pumpwatch.segments.schema import TradeRow

_INF = float("inf")
_TIME = itemgetter(0)

# A trade time further than this from the receive time is implausible: a unit error, a stale
# replay, or garbage. Clocks and exchange batching are off by seconds, never by a day.
MAX_CLOCK_SKEW_US = US_PER_DAY

# The taker side as exchanges spell it: schemas type the field with one of these, so a value
# outside it never reaches a parser; capitalized spellings map to ours.
Side = Literal["buy", "sell"]
CapitalSide = Literal["Buy", "Sell"]
SIDE_OF_CAPITAL: Mapping[str, str] = {"Buy": "buy", "Sell": "sell"}


def plausible_time(time_us: int, recv_us: int) -> bool:
    """True when a trade at `time_us` could have been received at `recv_us` (within a day)."""
    return -MAX_CLOCK_SKEW_US <= time_us - recv_us <= MAX_CLOCK_SKEW_US


def checked_time(time_us: int, recv_us: int, raw: object) -> int:
    """`time_us` if plausible (see `plausible_time`), else ParseError citing the `raw` value."""
    if -MAX_CLOCK_SKEW_US <= time_us - recv_us <= MAX_CLOCK_SKEW_US:  # plausible_time, inlined
        return time_us
    raise ParseError(f"implausible time {raw!r}")


def sorted_plausible(rows: list[TradeRow], recv_us: int, skip_old: bool = False) -> list[TradeRow]:
    """`rows` sorted by time (stable: ties keep exchange order), their times checked as a whole.

    After sorting, the first and last rows bound every time, so the plausibility check is made
    on those two. `skip_old` (a subscribe snapshot replaying history) drops rows older than the
    bound instead of refusing the frame.
    """
    if len(rows) > 1:
        rows.sort(key=_TIME)  # linear when already ascending
    if rows:
        if skip_old and not plausible_time(rows[0][0], recv_us) and rows[0][0] < recv_us:
            keep = next((i for i, row in enumerate(rows) if plausible_time(row[0], recv_us)), len(rows))
            del rows[:keep]
            if not rows:
                return rows
        checked_time(rows[0][0], recv_us, rows[0][0])
        checked_time(rows[-1][0], recv_us, rows[-1][0])
    return rows


def positive(value: Any, what: str) -> float:
    """A finite number > 0 from a JSON string or number (bool is not a number here)."""
    if value.__class__ is not bool:
        try:
            x = float(value)
        except (ValueError, TypeError, OverflowError):
            raise ParseError(f"bad {what}: {value!r:.60}") from None
        if 0.0 < x < _INF:
            return x
    raise ParseError(f"bad {what}: {value!r:.60}")


def signed(value: Any, what: str) -> float:
    """A finite, non-zero number whose sign means something (Gate's signed contract sizes)."""
    if value.__class__ is not bool:
        try:
            x = float(value)
        except (ValueError, TypeError, OverflowError):
            raise ParseError(f"bad {what}: {value!r:.60}") from None
        if 0.0 < abs(x) < _INF:
            return x
    raise ParseError(f"bad {what}: {value!r:.60}")


def loads(frame: bytes | str) -> Any:
    """Any JSON value of `frame` (control frames, instrument lists); ParseError if not JSON."""
    try:
        return msgspec.json.decode(frame)
    except msgspec.DecodeError as exc:
        raise ParseError(f"not JSON: {exc}") from None


def not_a_trade(exc: msgspec.ValidationError) -> ParseError:
    """The ParseError for a trade push whose schema check failed (its meaning cannot be known)."""
    return ParseError(f"malformed trade push: {exc}")


Options = TypeVar("Options", bound=msgspec.Struct)


def read_options(stream: str, given: Mapping[str, Any], schema: type[Options]) -> Options:
    """`given` (settings ``streams.<stream>.options``) checked against `schema`, defaults filled.

    `schema` is a `msgspec.Struct` (``forbid_unknown_fields=True``) whose fields are the
    stream's options with their defaults and constraints (``Annotated[int, Meta(ge=1)]``).
    An unknown key or a bad value raises ConfigError naming ``streams.<stream>.options.<key>``.
    """
    known = schema.__struct_fields__
    for key in given:
        if key not in known:
            raise ConfigError(
                f"streams.{stream}.options.{key}: unknown option (known: {', '.join(sorted(known))})"
            )
        try:
            msgspec.convert({key: given[key]}, schema)
        except msgspec.ValidationError as exc:
            reason = str(exc).split(" - at ", 1)[0]
            raise ConfigError(f"streams.{stream}.options.{key}: {reason} (got {given[key]!r})") from None
    return msgspec.convert(dict(given), schema)


def option_values(options: msgspec.Struct) -> dict[str, Any]:
    """The options as a plain dict (`Adapter.default_options`, logs)."""
    return msgspec.structs.asdict(options)
