"""What every exchange parser shares: value checks, the JSON error boundary, option validation.

Sans-I/O. The trade checks raise only `ParseError` (the parser contract, DESIGN §12); option
validation raises only `ConfigError` naming ``streams.<stream>.options.<key>`` (settings are
checked when loaded, before any process starts).

A parser decodes the frame with a typed schema (a `msgspec.Struct`; ``gc=False`` on frame
structs: they hold scalars and lists of structs, never a cycle), so the JSON types are
already checked when these run: what is left is meaning (a price must be positive and finite,
a trade time near the receive time), checked as each row is made by `trade_row`.
"""

from __future__ import annotations

from collections.abc import Mapping
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import msgspec

from pumpwatch.errors import ConfigError, ParseError
from pumpwatch.timeunits import US_PER_DAY

if TYPE_CHECKING:
    from pumpwatch.recorder.adapter import Instrument
    from pumpwatch.segments.schema import TradeRow

_INF = float("inf")
BY_TIME = itemgetter(0)  # sort key of rows: a stable sort keeps exchange order among ties

# A trade time further than this from the receive time is implausible: a unit error, a stale
# replay, or garbage. Clocks and exchange batching are off by seconds, never by a day.
MAX_CLOCK_SKEW_US = US_PER_DAY

# The taker side as exchanges spell it: schemas type the field with one of these, so a value
# outside it never reaches a parser; capitalized spellings map to ours.
Side = Literal["buy", "sell"]
CapitalSide = Literal["Buy", "Sell"]
SIDE_OF_CAPITAL: Mapping[str, str] = {"Buy": "buy", "Sell": "sell"}


def trade_row(
    time_us: int, recv_us: int, inst: Instrument, price: float, qty: float, side: str, trade_id: str | None
) -> TradeRow:
    """The one place a trade row is made, after the checks every row must pass.

    The time must be within `MAX_CLOCK_SKEW_US` of the receive time and the price and the
    quantity (already converted with ``float()``) finite and > 0; otherwise ParseError.
    """
    if not -MAX_CLOCK_SKEW_US <= time_us - recv_us <= MAX_CLOCK_SKEW_US:
        raise ParseError(f"implausible time {time_us} µs (received {recv_us})")
    if not (0.0 < price < _INF and 0.0 < qty < _INF):
        raise ParseError(f"bad price/qty {price!r} / {qty!r}")
    return (time_us, recv_us, inst.symbol, inst.base, inst.quote, price, qty, side, trade_id)


def stale(time_us: int, recv_us: int) -> bool:
    """True for a trade older than `trade_row` accepts (history replayed in a snapshot)."""
    return time_us < recv_us - MAX_CLOCK_SKEW_US


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
