"""What the writers do when the disk refuses a write: keep rows in memory up to a bound, retry
with a capped backoff, and account exactly for what had to be dropped.

A full disk (``ENOSPC``), an exhausted quota (``EDQUOT``) or a failing device (``EIO``) is a
state the store lives through, not a reason to stop recording: the segment writer
(``writer.py``) and the frame writer (``frames.py``) keep what they cannot write, retry, and
resume on their own when space returns. What does not fit the in-memory bound is dropped
oldest first and becomes a `LostSpan`: the exact first and last receive and trade time of
the dropped rows and their count, journaled as a ``dropped`` event so coverage, metadata and
`status` can tell the truth and the repair engine can fill the span later.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pumpwatch.segments.journal import EventJournal

if TYPE_CHECKING:  # the frame journal uses this module in processes that never load pyarrow
    import pyarrow as pa

log = logging.getLogger(__name__)

# Rows a writer keeps in memory while the disk refuses them (Arrow bytes of the converted
# batches, ~60 bytes per trade: 64 MiB is ~1 M trades, minutes of a busy stream). Beyond it the
# oldest rows are dropped and journaled as a gap.
DEFAULT_BACKLOG_BYTES = 64 * 2**20
RETRY_FIRST_S = 0.25  # first retry after a failed write; doubles up to RETRY_MAX_S
RETRY_MAX_S = 2.0
RESERVE_BYTES = 512 * 1024  # per stream: room for the loss's journal line and a last footer
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})


def describe(exc: BaseException) -> str:
    """One line for a write failure (its own message: never a traceback)."""
    return str(exc) or type(exc).__name__


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or the `OSError` a `StoreError` was raised from) says the disk is full or
    failing. `HourFile` raises ``StoreError(...) from None``: the `OSError` is its context."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in DISK_ERRNOS:
            return True
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    # pyarrow's own file objects raise OSError without errno: "[errno 28] No space left on device"
    return any(f"[errno {n}]" in text.lower() for n in DISK_ERRNOS)


class Backoff:
    """Capped doubling delay between retries of a failed write."""

    def __init__(self, first_s: float = RETRY_FIRST_S, max_s: float = RETRY_MAX_S) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.delay_s = first_s

    def next(self) -> float:
        """The delay before the next try (then doubles, capped)."""
        delay = self.delay_s
        self.delay_s = min(self.delay_s * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self.delay_s = self.first_s


class Reserve:
    """A small preallocated file given back to the file system when the disk is full, so that
    the bookkeeping of a loss (its journal line, a footer) can still be written."""

    def __init__(self, path: Path, size_bytes: int = RESERVE_BYTES) -> None:
        self.path = path
        self.size_bytes = size_bytes

    def ensure(self) -> bool:
        """Make sure the reserve exists (best effort: False when there is no room for it)."""
        try:
            if self.path.stat().st_size >= self.size_bytes:
                return True
        except FileNotFoundError:
            pass
        except OSError:
            return False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                os.posix_fallocate(fd, 0, self.size_bytes)  # real blocks, not a sparse file
            finally:
                os.close(fd)
        except OSError:
            with contextlib.suppress(OSError):
                self.path.unlink()
            return False
        return True

    def release(self) -> bool:
        """Give the space back; whether there was a reserve to give."""
        try:
            self.path.unlink()
        except OSError:
            return False
        log.warning("released the disk reserve %s for the bookkeeping of a full disk", self.path)
        return True


@dataclass
class LostSpan:
    """Rows that never reached the disk: consecutive in receive order, with exact bounds."""

    rows: int = 0
    first_recv_us: int = 0
    last_recv_us: int = 0
    first_time_us: int = 0
    last_time_us: int = 0

    def add_batch(self, batch: pa.RecordBatch) -> None:
        """Account for the rows of `batch` (columns 0 and 1 are time and recv_time)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        n = batch.num_rows
        if not n:
            return
        t = pc.min_max(batch.column(0).cast(pa.int64()))
        r = pc.min_max(batch.column(1).cast(pa.int64()))
        self.add(n, r["min"].as_py(), r["max"].as_py(), t["min"].as_py(), t["max"].as_py())

    def add(self, rows: int, recv_min: int, recv_max: int, time_min: int, time_max: int) -> None:
        """Account for `rows` rows with these receive- and trade-time bounds."""
        if self.rows == 0:
            self.first_recv_us, self.last_recv_us = recv_min, recv_max
            self.first_time_us, self.last_time_us = time_min, time_max
        else:
            self.first_recv_us = min(self.first_recv_us, recv_min)
            self.last_recv_us = max(self.last_recv_us, recv_max)
            self.first_time_us = min(self.first_time_us, time_min)
            self.last_time_us = max(self.last_time_us, time_max)
        self.rows += rows

    def fields(self) -> dict[str, int]:
        """The journal fields of a ``dropped`` event."""
        return {
            "rows": self.rows,
            "first_recv_us": self.first_recv_us,
            "last_recv_us": self.last_recv_us,
            "first_time_us": self.first_time_us,
            "last_time_us": self.last_time_us,
        }


class LossJournal:
    """Journals `LostSpan`s as ``dropped`` events of one stream; what cannot be journaled yet
    (the journal is on the same full disk) is kept, merged, and tried again later."""

    def __init__(self, data_dir: str, stream: str, *, what: str, reserve: Reserve | None = None) -> None:
        self.data_dir = data_dir
        self.reserve = reserve
        self.stream = stream
        self.what = what  # "rows" (segments) or "frames"
        self.waiting: LostSpan | None = None
        self.total = 0  # rows (or frames) ever dropped
        self._journal: EventJournal | None = None
        self._failing = False

    def note(self, span: LostSpan) -> None:
        """Add a dropped span (consecutive with the one waiting, if any)."""
        if not span.rows:
            return
        self.total += span.rows
        if self.waiting is None:
            self.waiting = LostSpan()
        w = self.waiting
        w.add(span.rows, span.first_recv_us, span.last_recv_us, span.first_time_us, span.last_time_us)

    def write(self, reason: str, *, final: bool = False) -> bool:
        """Journal what waits; False (logged once per failure spell) when the journal fails too.
        A `final` write (the writer is closing) may spend the reserve on it; a running writer
        does not (the rows would take the room at once)."""
        span = self.waiting
        if span is None:
            return True
        try:
            try:
                self._record(span, reason)
            except OSError:
                if not final or self.reserve is None or not self.reserve.release():
                    raise
                self._record(span, reason)  # the reserve's room is meant for this line
        except OSError as exc:
            if not self._failing:
                self._failing = True
                log.error("%s: cannot journal %d dropped %s yet: %s", self.stream, span.rows, self.what, exc)
            return False
        if self._failing:
            self._failing = False
            log.warning("%s: journal writable again", self.stream)
        self.waiting = None
        return True

    def _record(self, span: LostSpan, reason: str) -> None:
        if self._journal is None:
            self._journal = EventJournal(self.data_dir, self.stream)
        self._journal.record("dropped", what=self.what, reason=reason, **span.fields())

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None
