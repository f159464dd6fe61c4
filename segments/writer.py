"""The segment writer: trades in (from the recorder's event loop), hourly Arrow IPC files out.

`append` only enqueues and returns; a background thread converts, compresses and writes one
zstd record batch per flush (every `flush_interval_s`, or sooner at `flush_rows`), fsyncs it,
and rotates files by each row's receive time: a row belongs to the file of its recv hour.
If the disk is slower than the feed the queue grows (and a warning is logged once per state
change). A disk that refuses a write (full, over quota, failing: see ``diskfault.py``) does not
stop the writer: the open file is cut back to its last complete batch and closed (its rows stay
readable; it is sealed by `recover` as soon as the disk takes writes again), the rows wait in
memory up to `max_backlog_bytes`, and the write is retried with a capped backoff on a new
file. Rows beyond the bound are dropped oldest first and journaled as a ``dropped`` event with
their exact bounds. While retrying, what is written is made durable (fsynced, and leaves the
memory) every `RETRY_PROGRESS_BYTES`, so a disk that frees only part of the room lets the
backlog drain piece by piece instead of failing whole each time. Each state change is logged
once.

A row that does not fit the schema (a None price, a wrong arity) is left out and counted
(`rows_rejected`); the good rows around it are written and the writer goes on. Logged once
when rejections start and once when rows fit again.

Any other fault in the writer thread (a bug) stops it for good: `failed` says why, the open
file is closed at its last complete batch (`recover` seals it), and every row it still held or
is given afterwards is dropped and journaled as a ``dropped`` span (`rows_lost`); `append`
then does not raise (the caller is told by `failed`: the recorder's worker exits and is
restarted). `flush`/`close` raise a fresh `StoreError` (never the stored exception, whose
traceback would grow with each raise).

Every batch it writes carries ``source = "ws"`` (a `TradeRow` has no source; repaired rows
are written by ``repair.py``, never through this writer).

Layout and sealing (DESIGN §5): the open file is ``_HHMMSS.arrow``; at the hour it gets its
footer, is fsynced, renamed to ``HHMMSS.arrow`` and the directory fsynced. Until then, after its
8-byte magic, it is a valid IPC stream up to its last complete batch (see ``recovery.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeAlias

import pyarrow as pa

from pumpwatch.errors import StoreError
from pumpwatch.segments.convert import Converter
from pumpwatch.segments.diskfault import (
    DEFAULT_BACKLOG_BYTES,
    Backoff,
    LossJournal,
    LostSpan,
    Reserve,
    describe,
)
from pumpwatch.segments.hourfile import HourFile
from pumpwatch.segments.paths import sealed_name
from pumpwatch.segments.schema import TRADE_FIELDS, TRADE_SCHEMA, TradeRow
from pumpwatch.streams import split_stream
from pumpwatch.timeunits import US_PER_HOUR

log = logging.getLogger(__name__)

CLOSE_SEAL_GRACE_S = 5.0  # past the close deadline: time left for the last seal
# A retry first checks there is room for the rows: for their Arrow bytes over this (zstd
# stores a trade in a fraction of its Arrow size), at most one progress chunk's worth, so a disk
# with room for part of the backlog is written to piece by piece.
PROBE_COMPRESSION = 4
LOSS_JOURNAL_INTERVAL_S = 10.0  # while rows are dropped, journal them at least this often
# While retrying after a disk fault: fsync and release what was written every this many Arrow
# bytes of backlog (a disk with room for part of the backlog drains it piece by piece).
RETRY_PROGRESS_BYTES = 1 << 20
LAG_WINDOW_S = 60.0  # `recent_max_lag_us` covers the last one to two such windows

_Item: TypeAlias = Sequence[TradeRow] | pa.RecordBatch


def _wall_us() -> int:
    return time.time_ns() // 1000


def _span_of(item: _Item) -> LostSpan:
    """The `LostSpan` of queued rows that will never be written (tuples or a batch)."""
    span = LostSpan()
    if isinstance(item, pa.RecordBatch):
        with contextlib.suppress(Exception):  # a batch that never converted: count it anyway
            span.add_batch(item)
            return span
        span.rows = item.num_rows
        return span
    times = [r[0] for r in item if len(r) > 1 and isinstance(r[0], int)]
    recvs = [r[1] for r in item if len(r) > 1 and isinstance(r[1], int)]
    if times and recvs:
        span.add(len(item), min(recvs), max(recvs), min(times), max(times))
    else:
        span.rows = len(item)
    return span


def _merge(span: LostSpan, other: LostSpan) -> None:
    """Add `other` to `span` (its bounds only where it has any: a row without times counts)."""
    if other.rows and (other.first_recv_us or other.last_recv_us):
        span.add(other.rows, other.first_recv_us, other.last_recv_us, other.first_time_us, other.last_time_us)
    else:
        span.rows += other.rows


def _storable(name: str, tp: pa.DataType) -> bool:
    """Whether a column of this type converts to the segment schema without loss of meaning."""
    if name in ("time", "recv_time"):
        return bool(pa.types.is_timestamp(tp) or pa.types.is_int64(tp))
    if name in ("price", "qty"):
        return bool(pa.types.is_floating(tp))
    if pa.types.is_dictionary(tp):
        tp = tp.value_type
    return bool(pa.types.is_string(tp) or pa.types.is_large_string(tp))


class SegmentWriter:
    """Writes one stream's trades into hourly segments under `data_dir` (thread-safe)."""

    def __init__(
        self,
        data_dir: str | Path,
        stream: str,
        *,
        flush_interval_s: float = 1.0,
        flush_rows: int = 65536,
        compression_level: int = 3,
        queue_warn_rows: int = 1_000_000,
        seal_grace_s: float = 5.0,
        fsync: bool = True,
        clock_us: Callable[[], int] = _wall_us,
        max_backlog_bytes: int = DEFAULT_BACKLOG_BYTES,
        close_timeout_s: float = 5.0,
        retry: Backoff | None = None,
        on_flush: Callable[[], object] | None = None,
        reserve: bool = True,
    ) -> None:
        split_stream(stream)  # only a known stream id ever becomes a path
        if flush_interval_s <= 0 or flush_rows <= 0:
            raise StoreError("flush_interval_s and flush_rows must be positive")
        self.data_dir = Path(data_dir)
        self.stream = stream
        self.flush_interval_s = flush_interval_s
        self.flush_rows = flush_rows
        self.compression_level = compression_level
        self.queue_warn_rows = queue_warn_rows
        self.seal_grace_us = int(seal_grace_s * 1_000_000)
        self.fsync = fsync
        self.max_backlog_bytes = max_backlog_bytes
        self.close_timeout_s = close_timeout_s
        self._clock_us = clock_us
        self._on_flush = on_flush  # e.g. `DiskWatch.check`: cheap, called after each durable flush

        # `with self._lock` (C) rather than `with self._cond` (a Python-level __enter__) on the
        # append path: append is called once per frame, ~0.3 µs of it was the Condition.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._pending: list[_Item] = []
        self._pending_rows = 0
        self._appended_rows = 0  # rows ever enqueued
        self._settled_rows = 0  # rows ever written as complete, fsynced batches, or dropped
        self._flush_asked = False
        self._closing = False
        self._closed = False
        self._close_deadline = 0.0  # monotonic
        self._queue_warned = False
        self._error: str | None = None  # a fault that stopped the writer (raised afresh each time)

        # converted rows not yet durable, oldest first: (UTC hour of receive time, batch)
        self._backlog: deque[tuple[int, pa.RecordBatch]] = deque()
        self._backlog_rows = 0
        self._backlog_bytes = 0
        self._fault: str | None = None  # the disk refuses writes: why (None = writing fine)
        self._fault_since = 0.0
        self._retry = retry if retry is not None else Backoff()
        self._retry_at = 0.0
        self._lost_in_fault = 0
        self._orphaned = False  # a file was cut back and closed unsealed: `recover` seals it
        self._reserve = Reserve(self.data_dir / "run" / f"{stream}.reserve") if reserve else None
        self._loss = LossJournal(str(self.data_dir), stream, what="rows", reserve=self._reserve)
        self._loss_journal_at = 0.0

        self._converter = Converter(stream)
        self._bad_seen = 0  # the converter's bad rows already counted as settled
        self._rejected_batch_rows = 0  # rows of columnar batches that could not be stored
        self._rejecting = False  # rows are being rejected (logged once per spell)
        self._lag_max = (0, 0)  # max(recv - time) of rows written: (this window, the last one)
        self._lag_window_end = 0.0
        self.progress_bytes = RETRY_PROGRESS_BYTES
        self._file: HourFile | None = None
        self._file_durable = (0, 0, 0)  # rows, batches, bytes of the open file on disk, fsynced
        self._opened_any = False
        self._sealed_totals = (0, 0, 0)
        self.rows_written = 0
        self.bytes_written = 0
        self.batches_written = 0
        self.files_sealed = 0

        self._thread = threading.Thread(target=self._run, name=f"segments-{stream}", daemon=True)
        self._thread.start()

    # ---- caller side -------------------------------------------------------------------

    @property
    def queue_rows(self) -> int:
        """Rows appended but not yet durable on disk (nor dropped)."""
        return self._appended_rows - self._settled_rows

    @property
    def rows_lost(self) -> int:
        """Rows dropped since this writer started (the disk refused them past the memory bound)."""
        return self._loss.total

    @property
    def rows_rejected(self) -> int:
        """Rows left out because they do not fit the schema (the writer went on without them)."""
        return self._converter.bad_rows + self._rejected_batch_rows

    @property
    def failed(self) -> str | None:
        """Why the writer thread stopped for good (every row since is dropped and journaled),
        or None while it runs."""
        return self._error

    @property
    def recent_max_lag_us(self) -> int:
        """The largest receive-minus-trade time of the rows written in the last minute or two
        (0 if none): how far before its receive time a trade's exchange time may lie."""
        return max(self._lag_max)

    @property
    def disk_fault(self) -> str | None:
        """Why the disk refuses writes right now, or None while writing works."""
        return self._fault

    @property
    def current_path(self) -> Path | None:
        """The open ``_HHMMSS.arrow`` file, if any."""
        f = self._file
        return f.path if f is not None else None

    def _raise_error(self) -> None:
        # a fresh exception each time: re-raising one stored object grows its traceback
        if self._error is not None:
            raise StoreError(self._error) from None

    def append(self, rows: Sequence[TradeRow]) -> None:
        """Enqueue trades (`TradeRow` tuples); never blocks on disk. Keeps a reference to `rows`."""
        self._enqueue(rows, len(rows))

    def append_batch(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Enqueue a columnar batch with the columns of `TRADE_SCHEMA` (strings or dictionaries);
        without the last, ``source``, its rows are stored as received live (``"ws"``)."""
        if tuple(batch.schema.names) not in (TRADE_FIELDS, tuple(TRADE_SCHEMA.names)):
            names = batch.schema.names
            raise StoreError(f"{self.stream}: batch columns {names} are not {TRADE_SCHEMA.names}")
        for field in batch.schema:
            if not _storable(field.name, field.type):
                raise StoreError(f"{self.stream}: column {field.name} cannot be stored as {field.type}")
        if isinstance(batch, pa.Table):
            for b in batch.to_batches():
                self._enqueue(b, b.num_rows)
        else:
            self._enqueue(batch, batch.num_rows)

    def _enqueue(self, item: _Item, n: int) -> None:
        with self._lock:
            if self._error is not None:
                self._reject_after_failure(item, n)
                return
            if self._closing:
                raise StoreError(f"{self.stream}: segment writer is closed")
            if n == 0:
                return
            self._pending.append(item)
            self._pending_rows += n
            self._appended_rows += n
            if self._pending_rows >= self.flush_rows:
                self._cond.notify()
            if not self._queue_warned and self._appended_rows - self._settled_rows >= self.queue_warn_rows:
                self._queue_warned = True
                log.warning(
                    "%s: %d rows wait for the disk (memory grows)",
                    self.stream,
                    self._appended_rows - self._settled_rows,
                )

    def _reject_after_failure(self, item: _Item, n: int) -> None:
        """Under the lock, the writer thread gone: the rows are dropped and journaled."""
        if self._closing:
            raise StoreError(f"{self.stream}: segment writer is closed")
        if n == 0:
            return
        self._appended_rows += n
        self._settled_rows += n
        self._loss.note(_span_of(item))
        now = time.monotonic()
        if now >= self._loss_journal_at:
            self._loss_journal_at = now + LOSS_JOURNAL_INTERVAL_S
            self._loss.write("segment writer stopped")

    def flush(self) -> None:
        """Block until every row appended so far is on disk as complete, fsynced batches.

        While the disk refuses writes this raises `StoreError` at once (the rows stay queued)."""
        with self._cond:
            self._raise_error()
            target = self._appended_rows
            if self._settled_rows >= target:
                return
            self._flush_asked = True
            self._cond.notify_all()
            while (
                self._settled_rows < target
                and self._error is None
                and self._fault is None
                and self._thread.is_alive()
            ):
                self._cond.wait(1.0)
            self._raise_error()
            if self._fault is not None:
                raise StoreError(f"{self.stream}: the disk refuses writes ({self._fault}); rows kept queued")
            if self._settled_rows < target:
                raise StoreError(f"{self.stream}: segment writer thread stopped")

    def close(self, timeout_s: float | None = None) -> None:
        """Flush, seal the open file and stop the thread. Idempotent; raises a pending error once.

        While the disk refuses writes, retries for at most `timeout_s` (default
        `close_timeout_s`); what is still unwritten then is dropped and journaled, and
        `rows_lost` says how many rows that was. Never waits much longer than that."""
        wait_s = self.start_close(timeout_s)
        with self._cond:
            if self._closed:
                return
            self._closed = True
        # the thread gives up on the disk at the deadline; sealing after it is bounded by the disk
        self._thread.join(wait_s + CLOSE_SEAL_GRACE_S)
        if self._thread.is_alive():
            log.error("%s: segment writer still busy %.0f s after close; leaving it", self.stream, wait_s)
            raise StoreError(f"{self.stream}: segment writer did not stop within {wait_s:.0f} s")
        if self._error is not None:
            with self._lock:  # what was rejected after the failure, journaled now
                self._loss.write("segment writer stopped", final=True)
                self._loss.close()
        self._raise_error()

    def start_close(self, timeout_s: float | None = None) -> float:
        """Begin closing without waiting (so several writers wait for the disk at once); the
        wait granted, in seconds. `close` then waits for the end. Idempotent."""
        wait_s = self.close_timeout_s if timeout_s is None else timeout_s
        with self._cond:
            if not self._closing:
                self._closing = True
                self._close_deadline = time.monotonic() + wait_s
                self._cond.notify_all()
            return max(0.0, self._close_deadline - time.monotonic())

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- background thread -------------------------------------------------------------

    def _wait_for_work(self, next_flush: float) -> bool:
        """Under the lock: sleep until there is something to do; whether the writer is closing."""
        while True:
            if self._flush_asked or self._pending_rows >= self.flush_rows:
                return self._closing
            now = time.monotonic()
            wake = next_flush
            if self._fault is not None:
                wake = min(wake, self._retry_at)
            if self._closing:
                if self._fault is None or now >= self._close_deadline:
                    return True
                wake = min(wake, self._close_deadline)
            if wake <= now:
                return self._closing
            self._cond.wait(wake - now)

    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_interval_s
        items: list[_Item] = []
        if self._reserve is not None:
            self._reserve.ensure()
        try:
            while True:
                with self._cond:
                    closing = self._wait_for_work(next_flush)
                    items = self._pending
                    self._pending, self._pending_rows = [], 0
                    self._flush_asked = False
                rejected = self._convert(items) if items else 0
                items = []
                rows_before = self._backlog_rows
                self._cycle(closing)
                settled = rows_before - self._backlog_rows
                with self._cond:
                    self._settled_rows += settled + rejected
                    if self._queue_warned and self.queue_rows < self.queue_warn_rows // 2:
                        self._queue_warned = False
                        log.info("%s: writer queue drained (%d rows waiting)", self.stream, self.queue_rows)
                    self._cond.notify_all()
                if closing and not self._backlog and self._file is None:
                    with self._cond:
                        if not self._pending:
                            return
                next_flush = time.monotonic() + self.flush_interval_s
        except Exception as exc:  # a bug: stop loudly, and account for every row from now on
            ours = isinstance(exc, StoreError)
            msg = str(exc) if ours else f"{self.stream}: segment write: {describe(exc)}"
            log.error(
                "%s: segment writer stopped: %s (rows it held or gets from now on are dropped and journaled)",
                self.stream,
                msg,
                exc_info=not ours,
            )
            self._stop_failed(msg, items)
        finally:
            with self._lock:  # after a failure, `append` notes losses under the lock too
                self._loss.write(self._fault or "writer stopped", final=True)
                if self._error is None:
                    self._loss.close()

    def _stop_failed(self, msg: str, items: list[_Item]) -> None:
        """The thread stops for good: close the open file at its last complete batch, and
        drop (journaled) every row not on disk."""
        if self._file is not None:
            try:
                self._cut_back(self._file, sealing=False)
            except Exception as exc:  # never let the bookkeeping of a failure fail it
                log.error("%s: cannot close %s after the failure: %s", self.stream, self._file.path, exc)
                self._file = None
        span = LostSpan()
        for _, part in self._backlog:
            span.add_batch(part)
        self._backlog.clear()
        self._backlog_rows = self._backlog_bytes = 0
        for item in items:  # taken from the queue but not converted
            _merge(span, _span_of(item))
        with self._cond:
            for item in self._pending:
                _merge(span, _span_of(item))
            self._pending, self._pending_rows = [], 0
            self._loss.note(span)
            self._settled_rows = self._appended_rows
            self._error = msg
            self._cond.notify_all()

    def _convert(self, items: list[_Item]) -> int:
        """Turn queued items into single-hour batches at the end of the backlog; the number of
        rows rejected (they do not fit the schema: left out, counted, logged once per spell)."""
        rejected = 0
        first_reason: str | None = None
        runs: list[list[_Item]] = [[]]
        for item in items:  # a columnar batch is converted (and may be rejected) on its own
            if isinstance(item, pa.RecordBatch):
                runs += [[item], []]
            else:
                runs[-1].append(item)
        converted: list[pa.RecordBatch] = []
        for run in runs:
            if not run:
                continue
            try:
                converted.extend(self._converter.batches(run))
            except StoreError as exc:  # only a columnar batch raises: every row of it is left out
                n = run[0].num_rows if isinstance(run[0], pa.RecordBatch) else 0
                self._rejected_batch_rows += n
                rejected += n
                first_reason = first_reason or str(exc)
        for batch in converted:  # only now: a failure above leaves every row in `items`
            self._to_backlog(batch)
        bad, self._converter.bad = self._converter.bad, None
        n = self._converter.bad_rows - self._bad_seen
        self._bad_seen = self._converter.bad_rows
        rejected += n
        if bad is not None:
            first_reason = first_reason or str(bad)
        if rejected and not self._rejecting:
            self._rejecting = True
            log.error(
                "%s: rows that do not fit the schema are left out and counted, the rest written "
                "(logged again when rows fit again): %s",
                self.stream,
                first_reason,
            )
        elif not rejected and self._rejecting:
            self._rejecting = False
            log.warning("%s: rows fit the schema again (%d rejected so far)", self.stream, self.rows_rejected)
        return rejected

    def _to_backlog(self, batch: pa.RecordBatch) -> None:
        """Append a converted batch to the backlog, split by hour of receive time."""
        if not batch.num_rows:
            return
        recv = batch.column(1).to_numpy().view("i8")
        lag = int((recv - batch.column(0).to_numpy().view("i8")).max())
        now = time.monotonic()
        if now >= self._lag_window_end:
            self._lag_window_end = now + LAG_WINDOW_S
            self._lag_max = (0, self._lag_max[0])
        if lag > self._lag_max[0]:
            self._lag_max = (lag, self._lag_max[1])
        hours = recv // US_PER_HOUR
        lo, hi = int(hours.min()), int(hours.max())
        groups = (
            [(lo, batch)]
            if lo == hi
            else [(int(h), batch.filter(pa.array(hours == h))) for h in sorted(set(hours.tolist()))]
        )
        for hour, part in groups:
            self._backlog.append((hour, part))
            self._backlog_rows += part.num_rows
            self._backlog_bytes += part.nbytes

    def _cycle(self, closing: bool) -> None:
        """One turn of the thread: write (or retry) the backlog, seal what is due, keep the
        memory bound while the disk refuses writes."""
        now = time.monotonic()
        if self._fault is None or now >= self._retry_at:
            try:
                if self._backlog:
                    if self._fault is not None:  # no file opened (nor logged) until there is room
                        self._probe(min(self._backlog_bytes, self.progress_bytes) // PROBE_COMPRESSION)
                    self._write_backlog()
                elif self._file is not None and (
                    closing or self._clock_us() >= self._file.end_us + self.seal_grace_us
                ):
                    self._seal()  # closing, or an hour passed with no rows: do not leave it open
                elif self._fault is not None:
                    self._probe(4096)
                if self._fault is not None and not self._backlog:
                    self._leave_fault()
                if self._file is not None and closing and not self._backlog:
                    self._seal()
            except (OSError, StoreError) as exc:
                self._enter_fault(exc)
        if self._fault is not None:
            self._keep_bound(drop_all=closing and time.monotonic() >= self._close_deadline)
        if self._loss.waiting is not None and (self._fault is None or now >= self._loss_journal_at):
            self._loss_journal_at = now + LOSS_JOURNAL_INTERVAL_S
            self._loss.write(self._fault or "disk refused writes")

    def _write_backlog(self) -> None:
        """Write every backlog batch as complete, fsynced batches; each batch leaves the
        backlog only once durable (a failure leaves the rest for the retry)."""
        in_file = 0  # backlog head batches added to the open file since it was last durable
        unsynced = 0  # their Arrow bytes
        retrying = self._fault is not None
        for hour, part in list(self._backlog):
            f = self._file
            if f is None or hour * US_PER_HOUR >= f.end_us:
                if f is not None:
                    try:
                        self._seal()
                    except (OSError, StoreError):
                        if f.compacted:  # every row of it is in the complete file left for `recover`
                            self._pop_written(in_file)
                        raise
                    self._pop_written(in_file)
                    in_file = unsynced = 0
                f = self._open(hour, part)
            elif hour * US_PER_HOUR < f.hour_us:
                f.note_late_rows(part.num_rows)
            f.add(part)
            in_file += 1
            unsynced += part.nbytes
            if retrying and unsynced >= self.progress_bytes:
                # a disk with room for part of the backlog: keep what fits, durable, out of memory
                self._make_durable(f)
                self._pop_written(in_file)
                in_file = unsynced = 0
        f = self._file
        if f is not None:
            self._make_durable(f)
        self._pop_written(in_file)
        if self._on_flush is not None:
            self._on_flush()

    def _make_durable(self, f: HourFile) -> None:
        f.write_pending()
        self._file_durable = (f.rows, f.batches, f.bytes)
        self._account()

    def _pop_written(self, n: int) -> None:
        for _ in range(n):
            _, part = self._backlog.popleft()
            self._backlog_rows -= part.num_rows
            self._backlog_bytes -= part.nbytes

    def _open(self, hour: int, part: pa.RecordBatch) -> HourFile:
        if self._opened_any and not self._orphaned:
            start_us = hour * US_PER_HOUR  # a rotation: the file opens at the top of its hour
        else:
            # a (re)start mid-hour, or the first file after a cut-back one: the rest of the hour
            recv_min = int(part.column(1).to_numpy().view("i8").min())
            start_us = max(recv_min - recv_min % 1_000_000, hour * US_PER_HOUR)
        self._file = HourFile.create(
            self.data_dir,
            self.stream,
            start_us,
            compression_level=self.compression_level,
            max_batch_rows=self.flush_rows,
            fsync=self.fsync,
        )
        self._file_durable = (0, 0, 0)
        self._opened_any = True
        return self._file

    def _account(self) -> None:
        f = self._file
        rows, batches, nbytes = self._sealed_totals
        if f is not None:
            r, b, n = self._file_durable
            rows, batches, nbytes = rows + r, batches + b, nbytes + n
        self.rows_written, self.batches_written, self.bytes_written = rows, batches, nbytes

    def _seal(self) -> None:
        f = self._file
        assert f is not None
        try:
            # after a disk fault, seal without the compacting rewrite (it needs a second copy)
            f.seal(compact=self._fault is None and not self._orphaned)
        except (OSError, StoreError):
            if not f.path.exists() and sealed_name(f.path).exists():
                log.warning(
                    "%s: %s sealed, though not every step after the rename succeeded", self.stream, f.path
                )
            elif f.compacted:
                # The compacted file (footer, fsynced, every row) already replaced the open one;
                # only the final rename failed. Cutting it back to the old file's length would
                # cut it mid-batch: leave it whole for `recover` to seal.
                self._file = None
                self._file_durable = (0, 0, 0)
                try:
                    nbytes = f.path.stat().st_size
                except OSError:
                    nbytes = 0
                r0, b0, n0 = self._sealed_totals
                self._sealed_totals = (r0 + f.rows, b0 + f.batches, n0 + nbytes)
                self._orphaned = True
                self._account()
                raise
            else:
                self._cut_back(f, sealing=True)
                raise
        rows, batches, nbytes = self._sealed_totals
        self._sealed_totals = (rows + f.rows, batches + f.batches, nbytes + f.bytes)
        self._file = None
        self._file_durable = (0, 0, 0)
        self.files_sealed += 1
        self._account()

    def _cut_back(self, f: HourFile, *, sealing: bool) -> None:
        """Close a file whose write failed, cut back to its last complete, fsynced batch (a
        valid stream that readers read and `recover` seals); a file with none is removed."""
        rows, batches, keep = self._file_durable
        self._file = None
        self._file_durable = (0, 0, 0)
        r0, b0, n0 = self._sealed_totals
        self._sealed_totals = (r0 + rows, b0 + batches, n0 + keep)
        f.abandon()  # its buffered tail may reach the disk (cut below); no-op if closed
        try:
            if sealing:  # `seal` closed the descriptor; a temporary of its compaction may be left
                f.path.with_name(f".{sealed_name(f.path).name}.sealing").unlink(missing_ok=True)
                if keep:
                    os.truncate(f.path, keep)
                else:
                    f.path.unlink(missing_ok=True)
            else:
                fd = f.fd
                try:
                    if keep:
                        os.ftruncate(fd, keep)
                        os.fsync(fd)
                    else:
                        f.path.unlink(missing_ok=True)
                finally:
                    os.close(fd)  # also drops the flock: `recover` may seal it now
        except OSError as exc:
            log.error("%s: cannot cut %s back to its last complete batch: %s", self.stream, f.path, exc)
        if keep:
            self._orphaned = True
        self._account()

    def _enter_fault(self, exc: BaseException) -> None:
        if self._file is not None:
            self._cut_back(self._file, sealing=False)
        now = time.monotonic()
        self._retry_at = now + self._retry.next()
        if self._fault is None:
            self._fault = describe(exc)
            self._fault_since = now
            self._lost_in_fault = 0
            log.error(
                "%s: the disk refuses writes (%s); keeping up to %.1f MB of rows in memory and retrying",
                self.stream,
                self._fault,
                self.max_backlog_bytes / 2**20,
            )

    def _leave_fault(self) -> None:
        log.warning(
            "%s: writing again after %.1f s without the disk (%d rows dropped in that time)",
            self.stream,
            time.monotonic() - self._fault_since,
            self._lost_in_fault,
        )
        self._fault = None
        self._retry.reset()
        if self._reserve is not None:
            self._reserve.ensure()
        self._loss.write("disk refused writes")
        if self._orphaned:
            self._seal_orphans()

    def _probe(self, nbytes: int) -> None:
        """While the disk refuses writes: is there room for `nbytes` now? (raises OSError if not)"""
        probe = self.data_dir / f".{self.stream}.probe"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.posix_fallocate(fd, 0, max(nbytes, 4096))
            finally:
                os.close(fd)
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()

    def _seal_orphans(self) -> None:
        from pumpwatch.segments.recovery import recover  # a cycle otherwise: recovery -> hourfile

        try:
            sealed = recover(self.data_dir, [self.stream])  # the open file holds its flock: skipped
        except Exception as exc:  # also a raw OSError: never a reason to stop the writer
            log.warning(
                "%s: cut-back segments not sealed yet (%s); `recover` seals them later", self.stream, exc
            )
            return
        self._orphaned = False
        for path in sealed:
            log.info("%s: sealed cut-back segment %s", self.stream, path)

    def _keep_bound(self, *, drop_all: bool) -> None:
        """Drop the oldest rows past `max_backlog_bytes` (all of them when `drop_all`)."""
        span = LostSpan()
        while self._backlog and (drop_all or self._backlog_bytes > self.max_backlog_bytes):
            _, part = self._backlog.popleft()
            self._backlog_rows -= part.num_rows
            self._backlog_bytes -= part.nbytes
            span.add_batch(part)
        if not span.rows:
            return
        if not self._lost_in_fault:
            log.error(
                "%s: %s: dropping the oldest rows (journaled as a gap with their exact bounds)",
                self.stream,
                "closing with the disk still refusing writes" if drop_all else "memory bound reached",
            )
        self._lost_in_fault += span.rows
        self._loss.note(span)
