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


_MAX_SCALE = 40  # decimals of a size or multiplier beyond this are not a quantity: refused
_POW10 = tuple(10**k for k in range(2 * _MAX_SCALE + 1))


def decimal_parts(value: str | int | float) -> tuple[int, int]:
    """``(m, k)`` with ``|value| == m × 10^-k`` exactly as the value is written: a JSON string
    as sent, a float by its shortest repr (what the exchange sent, for a JSON number),
    ``"17711"`` -> (17711, 0), ``0.1`` -> (1, 1), ``"-1.50"`` -> (150, 2). ValueError when it is
    not a plain finite decimal."""
    if value.__class__ is int:
        return abs(value), 0
    text = value if value.__class__ is str else repr(float(value))
    text = text.lstrip("+-")
    whole, dot, frac = text.partition(".")
    if (not frac.isdigit() and frac) or not (whole.isdigit() or (whole == "" and frac)):
        return _scientific(text)
    if len(frac) > _MAX_SCALE:
        raise ValueError(f"too many decimals: {text[:60]!r}")
    return int(whole + frac) if dot else int(whole), len(frac)


def _scientific(text: str) -> tuple[int, int]:
    """``1e-05``-style text (repr of a small float), bounded so 10^k stays small."""
    from decimal import Decimal, InvalidOperation

    try:
        _sign, digits, exp = Decimal(text).as_tuple()
    except InvalidOperation:
        raise ValueError(f"not a decimal number: {text[:60]!r}") from None
    if not isinstance(exp, int) or not -_MAX_SCALE <= exp <= _MAX_SCALE or len(digits) > 60:
        raise ValueError(f"not a plausible quantity: {text[:60]!r}")
    m = int("".join(map(str, digits)) or "0")
    return (m * 10**exp, 0) if exp >= 0 else (m, -exp)


class Multiplier:
    """A contract multiplier as an exact decimal ``m × 10^-k`` (`decimal_parts`), with the
    quantities already computed for the sizes seen (a market trades the same few contract
    counts over and over; bounded)."""

    __slots__ = ("k", "known", "m")
    MAX_KNOWN = 4096

    def __init__(self, parts: tuple[int, int]) -> None:
        self.m, self.k = parts
        self.known: dict[str | int | float, float] = {}


_MULTIPLIERS: dict[float, Multiplier] = {}


def multiplier_parts(multiplier: float) -> Multiplier:
    """The `Multiplier` of an instrument's multiplier, remembered: a parser asks once per frame,
    and exchanges use a handful of distinct multipliers."""
    found = _MULTIPLIERS.get(multiplier)
    if found is None:
        found = Multiplier(decimal_parts(multiplier))
        if len(_MULTIPLIERS) < 10_000:  # bounded whatever an instrument list holds
            _MULTIPLIERS[multiplier] = found
    return found


def contract_qty(size: str | int | float, multiplier: Multiplier) -> float:
    """``|size| × multiplier`` in base units, exact to the decimals the two numbers have:
    17711 contracts × 0.1 = 1771.1 (not ``1771.1000000000001``). `multiplier` comes from
    `multiplier_parts`. The result is the float nearest the exact decimal product (Python's
    int / int is correctly rounded), i.e. ``float(Decimal(size) * Decimal(multiplier))``.
    ValueError on a malformed size. Runs once per futures trade: a size seen before is a dict
    lookup, the common shapes (a plain decimal string, an int, a whole float) stay inline."""
    known = multiplier.known
    qty = known.get(size)
    if qty is not None:
        return qty
    cls = size.__class__
    if cls is str:
        whole, _, frac = size.partition(".")  # type: ignore[union-attr]  # a str here
        try:
            if not frac:
                m, k = int(whole), 0
            elif frac.isdigit() and len(frac) <= _MAX_SCALE:
                m, k = int(whole + frac), len(frac)
            else:
                m, k = decimal_parts(size)
        except ValueError:
            m, k = decimal_parts(size)  # 1e-05, or not a number at all (raises)
    elif cls is int:
        m, k = size, 0  # type: ignore[assignment]  # an int here
    elif cls is float and size.is_integer():  # type: ignore[union-attr]  # a float here
        m, k = int(size), 0
    else:
        m, k = decimal_parts(size)
    qty = abs(m * multiplier.m) / _POW10[k + multiplier.k]
    if len(known) < Multiplier.MAX_KNOWN:
        known[size] = qty
    return qty


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
