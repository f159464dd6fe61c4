"""What an exchange adapter is: a plain record of values and pure functions (STYLE.md).

One file per exchange under ``recorder/adapters/`` builds one `Adapter` per market. The
connection runner (``recorder/runner.py``) is the only code that does I/O with them and it
never names an exchange: every difference between exchanges is a value or a function here.

Everything in this module is Sans-I/O: no sockets, no awaiting, no clock reads. Times that a
function needs (a receive time, "now" for a ping payload) are passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # only in annotations: importing the schema at runtime would load pyarrow
    from pumpwatch.segments.schema import TradeRow


@dataclass(frozen=True, slots=True)
class Instrument:
    """One subscribable instrument, as kept in ``config/symbols.yaml``."""

    symbol: str  # the exchange's own symbol: "0GUSDT", "0G-USDT-SWAP", "sBTCUSDT", "XBTUSDTM"
    base: str  # upper-case base as Upbit names it ("XBT" -> "BTC"; never "1000PEPE" -> "PEPE")
    quote: str  # upper-case quote asset
    multiplier: float = 1.0  # base units per contract/lot (OKX ctVal, KuCoin multiplier, Gate quanto)
    price_scale: int = 0  # Phemex spot: price = priceEp / 10**price_scale (0 = not scaled)
    qty_scale: int = 0  # Phemex spot: qty = value / 10**qty_scale (0 = not scaled)


# The instruments a parser knows, by exchange symbol exactly as it appears in frames.
Instruments = Mapping[str, Instrument]


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A REST call the runner performs on an adapter's behalf (token, instrument list)."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class ConnectTarget:
    """Where and how to open one WebSocket connection."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    ping_interval_s: float | None = None  # overrides Adapter.ping_interval_s (KuCoin's pingInterval)
    wait_welcome: bool = False  # subscribe only after a Control(kind="welcome") arrives


ControlKind = Literal["ack", "error", "pong", "welcome", "info", "reconnect"]


@dataclass(frozen=True, slots=True)
class Control:
    """A non-trade frame, decoded.

    kind:
      ack       -- reply to a subscribe/unsubscribe request `req_id`; `ok` False means rejected,
                   with the rejected `symbols` when the exchange says which.
      error     -- an error frame; `req_id`/`symbols` when attributable, `message` always.
      pong      -- reply to our keep-alive.
      welcome   -- the server is ready for subscriptions (KuCoin).
      info      -- anything harmless (heartbeat, notice, server time) — ignored.
      reconnect -- the server announced it will close soon (Binance serverShutdown,
                   OKX notice 64008): the runner rotates make-before-break now.
    `reply` is a frame to send back at once (an application-level ping from the server).
    """

    kind: ControlKind
    req_id: str | None = None
    ok: bool = True
    symbols: tuple[str, ...] = ()
    message: str = ""
    reply: str | None = None


class Sequenced(list["TradeRow"]):
    """Decoded trades (a list of `TradeRow`) with `seq`: one continuity id per trade.

    For exchanges whose stored trade id does not count up per symbol but whose push carries a
    second id that does (Gate spot: ``id`` is exchange-wide, ``id_market`` counts per market).
    An entry is an int, or ``(first, last)`` for a trade that accounts for several ids, or None
    (not checked). Only the continuity check reads it (`Adapter.sequenced`); the rows are
    stored and de-duplicated as usual. Build it with `sequenced` (on the hot path: no Python
    ``__init__``).
    """

    __slots__ = ("seq",)
    seq: Sequence[Any]


def sequenced(rows: Iterable[TradeRow], seq: Sequence[Any]) -> Sequenced:
    """`rows` as `Sequenced` trades with `seq` (one entry per row)."""
    out = Sequenced(rows)
    out.seq = seq
    return out


def kept_sequence(decoded: list[TradeRow], kept: list[TradeRow]) -> Sequence[Any]:
    """The `Sequenced.seq` entries of the rows of `decoded` that are in `kept` (the same row
    objects, in order, as the de-duplicator passes them); None for each when `decoded` carries
    no sequence (such trades are not checked). A `seq` of the wrong length is passed on as it
    is (the check counts such trades as bad ids)."""
    seq = getattr(decoded, "seq", None)
    if seq is None:
        return [None] * len(kept)
    if len(kept) == len(decoded):
        return seq
    out: list[Any] = []
    it = iter(kept)
    want = next(it, None)
    for row, entry in zip(decoded, seq, strict=False):
        if row is want:
            out.append(entry)
            want = next(it, None)
    return out


# decode(frame, recv_us, instruments) -> trades (oldest first) or a Control.
# Raises pumpwatch.errors.ParseError, and nothing else, on garbage or an unexpected shape.
# Trades of an instrument missing from `instruments` raise ParseError when the base or the
# multiplier cannot be known otherwise (never guess a contract multiplier).
Decoder = Callable[[bytes | str, int, Instruments], "list[TradeRow] | Control"]


@dataclass(frozen=True)
class Adapter:
    """One exchange market: URLs come from settings, everything else from here."""

    stream: str  # "okx_futures"
    doc_url: str  # the API page this implements
    decode: Decoder

    # Subscribing. `subscribe(symbols, req_id)` returns the frames to send for one chunk of
    # at most `max_symbols_per_request` symbols; `unsubscribe` likewise.
    subscribe: Callable[[Sequence[str], str], list[str]]
    unsubscribe: Callable[[Sequence[str], str], list[str]]
    max_symbols_per_request: int  # Bybit spot 10, Phemex 1 …
    # With `learn_capacity` this is only the ceiling: the runner learns the real cap from refusals.
    max_symbols_per_connection: int  # Binance 1024, KuCoin spot 400, OKX 300 …
    max_requests_per_s: float  # Binance spot 5 (every control frame counts)
    max_connections: int | None = None  # None: as many as needed (or learned, with learn_capacity)

    # Opening a connection. `connect_request(rest_url)` is a REST call to make before every
    # connect (KuCoin bullet-public), its response body is passed to `connect_target`.
    connect_target: Callable[[str, bytes | None, str], ConnectTarget] = lambda ws_url, _body, _cid: (
        ConnectTarget(ws_url)
    )
    connect_request: Callable[[str], HttpRequest] | None = None

    # Keep-alive. `ping(now_ms)` builds an application ping; None means WebSocket ping frames.
    ping: Callable[[int], str] | None = None
    ping_interval_s: float = 20.0
    # No frame at all for this long means the connection is dead (watchdog).
    quiet_timeout_s: float = 60.0
    # Planned rotation: open a replacement this long before the exchange's lifetime cap.
    max_lifetime_s: float | None = None
    rotate_margin_s: float = 600.0

    # Instrument list for `pumpwatch symbols`: the REST calls (paginated ones may return a
    # follow-up request from `parse_instruments`) and the parse of their bodies.
    instruments_request: Callable[[str], HttpRequest] | None = None
    parse_instruments: Callable[[bytes], tuple[list[Instrument], HttpRequest | None]] | None = None

    # Trade-id continuity reads `Sequenced.seq` (ids the decoder attaches beside the rows), not
    # the rows' trade ids. Such a stream's stored ids say nothing about continuity, so nothing
    # primes the check from the store (a worker start is a gap, settled by time).
    sequenced: bool = False

    # De-duplication across overlapping connections and replayed snapshots. The key must be
    # equal for the same trade seen twice. Default: (symbol, trade_id).
    dedupe_key: Callable[[TradeRow], Any] = lambda row: (row[2], row[8])
    # How many recent trades the exchange sends after every (re)subscribe (Phemex: a snapshot
    # of 200); the runner's de-duplicator remembers that many (plus a margin) per symbol.
    replay_trades: int = 0

    # The defaults of the stream's options (settings streams.<id>.options). Each adapter module
    # declares its options as a msgspec Struct and `adapter(market, options)` checks the given
    # ones with `checks.read_options`, raising ConfigError naming the key.
    default_options: Mapping[str, Any] = field(default_factory=dict)

    # How the exchange answers a subscribe request of several symbols. False: one reply per
    # request, a refusal names the refused symbols and the rest are subscribed (Bybit). True:
    # one answer per symbol (OKX: an event per arg, error 60018 naming the instId), so an
    # answer naming symbols settles only those.
    acks_per_symbol: bool = False

    # The documented capacity is contested (Phemex: "20 subscriptions per connection, 5
    # connections per client", while clients subscribe 100 and more on one socket): learn it at
    # run time. A subscription refused on a connection that already holds others is presumed
    # over that connection's capacity and moved to another connection (refused there too, it is
    # refused for itself); a handshake refused while other connections of the stream are open
    # caps the connections at those. What does not fit is reported as not recorded.
    learn_capacity: bool = False
