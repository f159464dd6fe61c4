"""The segment writer: trades in (from the recorder's event loop), hourly Arrow IPC files out.

`append` only enqueues and returns; a background thread converts, compresses and writes one
zstd record batch per flush (every `flush_interval_s`, or sooner at `flush_rows`), fsyncs it,
and rotates files by each row's receive time: a row belongs to the file of its recv hour.
Nothing is ever dropped: if the disk is slower than the feed the queue grows (and a warning is
logged once per state change); a disk or schema fault stops the writer and is raised to the
caller on its next `append`/`flush`/`close` as a `StoreError`.

Every batch it writes carries ``source = "ws"`` (a `TradeRow` has no source; repaired rows
are written by ``repair.py``, never through this writer).

Layout and sealing (DESIGN §5): the open file is ``_HHMMSS.arrow``; at the hour it gets its
footer, is fsynced, renamed to ``HHMMSS.arrow`` and the directory fsynced. Until then, after its
8-byte magic, it is a valid IPC stream up to its last complete batch (see ``recovery.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeAlias

import pyarrow as pa

from pumpwatch.errors import StoreError
from pumpwatch.segments.convert import Converter
from pumpwatch.segments.hourfile import HourFile
from pumpwatch.segments.schema import TRADE_FIELDS, TRADE_SCHEMA, TradeRow
from pumpwatch.streams import split_stream
from pumpwatch.timeunits import US_PER_HOUR

log = logging.getLogger(__name__)

_Item: TypeAlias = Sequence[TradeRow] | pa.RecordBatch


def _wall_us() -> int:
    return time.time_ns() // 1000


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
        self._clock_us = clock_us

        # `with self._lock` (C) rather than `with self._cond` (a Python-level __enter__) on the
        # append path: append is called once per frame, ~0.3 µs of it was the Condition.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._pending: list[_Item] = []
        self._pending_rows = 0
        self._appended_rows = 0  # rows ever enqueued
        self._durable_rows = 0  # rows ever written as complete, fsynced batches
        self._flush_asked = False
        self._closing = False
        self._closed = False
        self._queue_warned = False
        self._error: StoreError | None = None

        self._converter = Converter(stream)
        self._file: HourFile | None = None
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
        """Rows appended but not yet durable on disk."""
        return self._appended_rows - self._durable_rows

    @property
    def current_path(self) -> Path | None:
        """The open ``_HHMMSS.arrow`` file, if any."""
        f = self._file
        return f.path if f is not None else None

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
                raise self._error
            if self._closing:
                raise StoreError(f"{self.stream}: segment writer is closed")
            if n == 0:
                return
            self._pending.append(item)
            self._pending_rows += n
            self._appended_rows += n
            if self._pending_rows >= self.flush_rows:
                self._cond.notify()
            if not self._queue_warned and self._appended_rows - self._durable_rows >= self.queue_warn_rows:
                self._queue_warned = True
                log.warning(
                    "%s: %d rows wait for the disk (nothing is dropped; memory grows)",
                    self.stream,
                    self._appended_rows - self._durable_rows,
                )

    def flush(self) -> None:
        """Block until every row appended so far is on disk as complete, fsynced batches."""
        with self._cond:
            if self._error is not None:
                raise self._error
            target = self._appended_rows
            if self._durable_rows >= target:
                return
            self._flush_asked = True
            self._cond.notify_all()
            while self._durable_rows < target and self._error is None and self._thread.is_alive():
                self._cond.wait(1.0)
            if self._error is not None:
                raise self._error
            if self._durable_rows < target:
                raise StoreError(f"{self.stream}: segment writer thread stopped")

    def close(self) -> None:
        """Flush, seal the open file and stop the thread. Idempotent; raises a pending error once."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- background thread -------------------------------------------------------------

    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_interval_s
        try:
            while True:
                with self._cond:
                    while not (self._closing or self._flush_asked or self._pending_rows >= self.flush_rows):
                        wait_s = next_flush - time.monotonic()
                        if wait_s <= 0:
                            break
                        self._cond.wait(wait_s)
                    items, n = self._pending, self._pending_rows
                    self._pending, self._pending_rows = [], 0
                    self._flush_asked = False
                    closing = self._closing
                if items:
                    self._write(items)
                elif self._file is not None and self._clock_us() >= self._file.end_us + self.seal_grace_us:
                    self._seal()  # an hour passed with no rows: do not leave it open
                if closing and self._file is not None:
                    self._seal()
                with self._cond:
                    self._durable_rows += n
                    if self._queue_warned and self.queue_rows < self.queue_warn_rows // 2:
                        self._queue_warned = False
                        log.info("%s: writer queue drained (%d rows waiting)", self.stream, self.queue_rows)
                    self._cond.notify_all()
                    if closing and not self._pending:
                        return
                next_flush = time.monotonic() + self.flush_interval_s
        except Exception as exc:  # a disk or schema fault: stop loudly, never lose data quietly
            ours = isinstance(exc, StoreError)
            err = exc if isinstance(exc, StoreError) else StoreError(f"{self.stream}: segment write: {exc}")
            log.error("%s: segment writer stopped: %s", self.stream, err, exc_info=not ours)
            with self._cond:
                self._error = err
                self._cond.notify_all()

    def _write(self, items: list[_Item]) -> None:
        bad: StoreError | None = None
        for batch in self._converter.batches(items):
            recv = batch.column(1).to_numpy().view("i8")
            hours = recv // US_PER_HOUR
            lo, hi = int(hours.min()), int(hours.max())
            groups = (
                [(lo, batch)]
                if lo == hi
                else [(int(h), batch.filter(pa.array(hours == h))) for h in sorted(set(hours.tolist()))]
            )
            for hour, part in groups:
                self._file_for(hour, part).add(part)
        if self._converter.bad is not None:
            bad, self._converter.bad = self._converter.bad, None
        if self._file is not None:
            self._file.write_pending()
            self._account()
        if bad is not None:
            raise bad

    def _file_for(self, hour: int, part: pa.RecordBatch) -> HourFile:
        f = self._file
        if f is not None and hour * US_PER_HOUR < f.end_us:
            if hour * US_PER_HOUR < f.hour_us:
                f.note_late_rows(part.num_rows)
            return f
        if f is not None:
            self._seal()
        if self._opened_any:
            start_us = hour * US_PER_HOUR  # a rotation: the file opens at the top of its hour
        else:
            recv_min = int(part.column(1).to_numpy().view("i8").min())
            start_us = recv_min - recv_min % 1_000_000  # a (re)start mid-hour: the rest of the hour
        self._file = HourFile.create(
            self.data_dir,
            self.stream,
            start_us,
            compression_level=self.compression_level,
            max_batch_rows=self.flush_rows,
            fsync=self.fsync,
        )
        self._opened_any = True
        return self._file

    def _account(self) -> None:
        f = self._file
        rows, batches, nbytes = self._sealed_totals
        if f is not None:
            rows, batches, nbytes = rows + f.rows, batches + f.batches, nbytes + f.bytes
        self.rows_written, self.batches_written, self.bytes_written = rows, batches, nbytes

    def _seal(self) -> None:
        f = self._file
        assert f is not None
        f.seal()
        rows, batches, nbytes = self._sealed_totals
        self._sealed_totals = (rows + f.rows, batches + f.batches, nbytes + f.bytes)
        self._file = None
        self.files_sealed += 1
        self._account()
