"""Counters of one `StreamRunner`, read by the status line, metrics and tests.

Plain attributes updated in place by the runner (one event loop, no locks); `snapshot()` gives
a JSON-able copy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunnerStats:
    """What a stream's connections did since the runner started."""

    frames: int = 0  # frames received (trades, acks, pongs, garbage alike)
    trades: int = 0  # trades handed to on_trades (after de-duplication)
    duplicates: int = 0  # trades dropped as already seen (rotation overlap, history replays)
    parse_errors: int = 0  # frames the adapter refused with ParseError (counted, skipped)
    decode_bugs: int = 0  # frames whose decode raised anything else (a bug; counted, skipped)
    error_frames: int = 0  # exchange error frames not tied to a subscription request
    reconnects: int = 0  # connections re-opened after an unplanned loss
    rotations: int = 0  # planned make-before-break replacements (lifetime, server notice)
    connect_failures: int = 0  # attempts that did not reach "subscribed"
    connected: int = 0  # WebSocket connections open right now
    subscribed_symbols: int = 0  # symbols acked on a live connection right now
    pending_subscriptions: int = 0  # symbols wanted but not (yet) acked on a live connection
    rejected: dict[str, str] = field(default_factory=dict)  # symbol -> the exchange's reason
    # a refused symbol is asked again: symbol -> wall-clock µs of its next attempt
    rejected_retry_at_us: dict[str, int] = field(default_factory=dict)
    over_capacity: list[str] = field(default_factory=list)  # symbols beyond max_connections
    # Every wanted symbol that is not receiving, and why ("rejected: …", "over_capacity: …",
    # "not_connected: …", "unparsable: …"); refreshed every health interval (not_recorded.py).
    not_recorded: dict[str, str] = field(default_factory=dict)
    id_holes: int = 0  # holes in contiguous trade ids journaled as id_gap (unfilled after the grace)
    missing_spans: int = 0  # spans handed to repair: id holes, reconnects, the worker's start
    last_trade_recv_us: int | None = None  # receive time of the newest trade
    lag_us: int | None = None  # recv - exchange time of the newest trade
    lag_avg_us: float | None = None  # exponentially weighted mean of the lag (alpha 0.01)

    def note_lag(self, lag_us: int) -> None:
        """Fold one frame's lag into `lag_us` and `lag_avg_us`."""
        self.lag_us = lag_us
        avg = self.lag_avg_us
        self.lag_avg_us = float(lag_us) if avg is None else avg + (lag_us - avg) * 0.01

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy of every counter."""
        return dataclasses.asdict(self)
