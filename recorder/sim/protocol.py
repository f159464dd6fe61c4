"""What a simulated exchange protocol is: the server-side mirror of an `Adapter`.

``recorder/sim/server.py`` runs one local WebSocket server (plus a small HTTP server for REST
routes) per stream on 127.0.0.1 and knows no exchange by name; each ``recorder/sim/<exchange>.py``
builds one `SimProtocol` per market with the exchange's real subscribe/ack/ping rules and wire
format. Faults (drops, stalls, rejected subscriptions, lifetime closes, garbage) are injected by
the server generically; a protocol only has to answer what a well-behaved exchange would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.segments.schema import TradeRow


@dataclass
class SimSession:
    """Per-connection state the server keeps; protocols read and mutate it."""

    conn_id: str
    path: str  # request path with query string, e.g. "/stream?timeUnit=MICROSECOND"
    headers: Mapping[str, str]
    instruments: Mapping[str, Instrument]  # by exchange symbol
    subscribed: set[str] = field(default_factory=set)  # exchange symbols currently subscribed
    reject: set[str] = field(default_factory=set)  # symbols the server must refuse (fault injection)
    scratch: dict[str, object] = field(default_factory=dict)  # protocol-private state


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})


# handler(query: dict[str, str], body: bytes, instruments: list[Instrument], ws_url: str) -> HttpResponse
HttpHandler = Callable[[Mapping[str, str], bytes, Sequence[Instrument], str], HttpResponse]


@dataclass(frozen=True)
class SimProtocol:
    """One exchange market as a local server speaks it."""

    stream: str
    # None to accept the WebSocket upgrade, else the HTTP status to refuse it with (a wrong
    # path, a missing required header such as Gate's X-Gate-Size-Decimal, a bad token).
    accept: Callable[[str, Mapping[str, str]], int | None]
    # Frames to send right after the upgrade (KuCoin's welcome).
    on_connect: Callable[[SimSession], list[str]]
    # Handle one client frame: subscribe/unsubscribe (update session.subscribed, honour
    # session.reject with the exchange's real error shape), pings. Returns frames to send.
    on_message: Callable[[SimSession, str | bytes, int], list[str]]
    # Encode trades of subscribed symbols into the exchange's wire frames (rows carry the
    # exchange symbol; qty is in base units and must be divided by the contract multiplier).
    encode_trades: Callable[[Sequence[TradeRow], Mapping[str, Instrument]], list[str]]
    # Frames sent after a successful subscribe to `symbol`, given recent trades (Phemex snapshot).
    snapshot: Callable[[str, Sequence[TradeRow], Mapping[str, Instrument]], list[str]] | None = None
    # The server closes a connection from which it heard nothing for this long (OKX 30 s,
    # Gate 60 s, Phemex 30 s); None: no such rule. Tests shrink it.
    idle_timeout_s: float | None = None
    # WebSocket ping frames from the server (Binance every 20 s); None: none.
    server_ping_interval_s: float | None = None
    # REST routes: (method, path) -> handler (instrument lists, KuCoin bullet-public).
    http_routes: Mapping[tuple[str, str], HttpHandler] = field(default_factory=dict)
    # The frame announcing a planned close (Binance serverShutdown, OKX 64008 notice), if any.
    shutdown_notice: Callable[[], str] | None = None
