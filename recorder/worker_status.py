"""The status side of a recorder worker: one log line per stream per status interval, and the
stream's cumulative counters journaled (``stats`` events) so `pumpwatch status` can show them
from disk."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("pumpwatch.recorder.worker")


def _stat(stats: Any, name: str, default: Any = 0) -> Any:
    """A runner statistic by name (a mapping or attributes), `default` when absent."""
    if isinstance(stats, Mapping):
        return stats.get(name, default)
    return getattr(stats, name, default)


class StatusTracker:
    """Builds the periodic status line of one stream and warns while the writer queue grows."""

    def __init__(self, stream: str, *, queue_warn_rows: int) -> None:
        self.stream = stream
        self.queue_warn_rows = queue_warn_rows
        self._last = (time.time_ns() // 1000, 0)  # (now_us, trades) at the previous line
        self._last_queue = 0
        self._growing = 0

    def line(self, stats: Any, queue_rows: int, now_us: int) -> str:
        """One status line; logs a warning when the queue is past the mark or kept growing."""
        trades = int(_stat(stats, "trades"))
        rate = 0.0
        if now_us > self._last[0]:
            rate = (trades - self._last[1]) * 1e6 / (now_us - self._last[0])
        self._last = (now_us, trades)
        last_recv_us = _stat(stats, "last_trade_recv_us", None)
        age = f"{(now_us - last_recv_us) / 1e6:.1f} s ago" if last_recv_us else "never"
        lag_us = _stat(stats, "lag_us", None)
        lag = f"{lag_us / 1000:.1f} ms" if isinstance(lag_us, int | float) else "n/a"
        self._growing = self._growing + 1 if queue_rows > self._last_queue > 0 else 0
        self._last_queue = queue_rows
        # Growth alone is noise (a queue of a second's trades goes up and down); growth of a
        # queue already a tenth of the warning mark is a disk falling behind.
        growing = self._growing >= 3 and queue_rows >= self.queue_warn_rows // 10
        if queue_rows >= self.queue_warn_rows or growing:
            log.warning(
                "%s: writer queue at %d rows and %s (the disk is not keeping up; nothing is dropped)",
                self.stream,
                queue_rows,
                f"growing for {self._growing} intervals" if growing else "over the warning mark",
            )
        return (
            f"{self.stream}: {rate:.1f} trades/s, lag {lag}, reconnects {_stat(stats, 'reconnects')}, "
            f"parse errors {_stat(stats, 'parse_errors')}, last trade {age}, "
            f"writer queue {queue_rows} rows, connections {_stat(stats, 'connected')}"
        )


def journal_stats(journal: Any, stats: Any) -> None:
    """Journal a stream's counters, cumulative since this worker started (an `EventJournal`)."""
    journal.record(
        "stats",
        frames=int(_stat(stats, "frames")),
        trades=int(_stat(stats, "trades")),
        parse_errors=int(_stat(stats, "parse_errors")),
        reconnects=int(_stat(stats, "reconnects")),
        duplicates=int(_stat(stats, "duplicates")),
    )
