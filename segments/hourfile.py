"""One open segment: ``_HHMMSS.arrow`` being written, then sealed under ``HHMMSS.arrow``.

Only the writer thread touches an `HourFile`. The file holds an exclusive `flock` while open,
so `recover()` run by another process can tell a live file from one left by a crash (the
kernel drops the lock when the process dies, even on ``kill -9``).

Dictionary columns: an IPC *file* may not replace a dictionary between batches, only extend
it (a delta). Each file therefore keeps its own append-only dictionary per column; every
batch's local dictionary is remapped onto it, and pyarrow writes only the new entries.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from pumpwatch.atomic import fsync_dir
from pumpwatch.errors import StoreError
from pumpwatch.segments.checksum import ChecksumFileWriter, damaged_schema, quarantine, salvage
from pumpwatch.segments.compact import COMPACT_MIN_ROWS, batch_metadata, group_by_symbol, write_compacted
from pumpwatch.segments.ipcscan import scan_segment
from pumpwatch.segments.paths import hour_start_us, sealed_name, segment_path
from pumpwatch.segments.schema import DICT_COLUMNS, SEGMENT_SCHEMA
from pumpwatch.timeunits import US_PER_HOUR, US_PER_S

log = logging.getLogger(__name__)

_DICT_POS = [SEGMENT_SCHEMA.get_field_index(n) for n in DICT_COLUMNS]


def make_dirs(path: Path) -> None:
    """mkdir -p, fsyncing each parent that gained an entry."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        fsync_dir(d.parent)


class HourFile:
    """An open segment file of one stream and one UTC hour."""

    def __init__(self, path: Path, fd: int, start_us: int, *, compression_level: int, max_batch_rows: int,
                 fsync: bool) -> None:  # fmt: skip
        self.path = path
        self.start_us = start_us
        self.hour_us = hour_start_us(start_us)
        self.end_us = self.hour_us + US_PER_HOUR
        self.max_batch_rows = max_batch_rows
        self.compression_level = compression_level
        self.compact_rows = 65536
        self.fsync = fsync
        self.rows = 0
        self.batches = 0
        self.loose_rows = 0  # rows in batches too small to be kept as they are at sealing
        self._fd = fd
        options = ipc.IpcWriteOptions(
            compression=pa.Codec("zstd", compression_level),
            emit_dictionary_deltas=True,
            use_threads=False,  # per CPU second it is cheaper; streams give the parallelism
        )
        self._writer = ChecksumFileWriter(path, fd, SEGMENT_SCHEMA, options)
        self._values: list[list[str]] = [[] for _ in DICT_COLUMNS]
        self._index: list[dict[str, int]] = [{} for _ in DICT_COLUMNS]
        self._dicts: list[pa.Array] = [pa.array([], pa.string()) for _ in DICT_COLUMNS]
        self._acc: list[list[pa.Array | np.ndarray]] = [[] for _ in SEGMENT_SCHEMA]
        self._acc_rows = 0
        self._late_warned = False
        self._sealed_bytes: int | None = None
        # sealing replaced the open file by its compacted copy (complete, footer, fsynced): a
        # failure after that must not cut the file back to the old length (`SegmentWriter`)
        self.compacted = False

    @classmethod
    def create(cls, data_dir: Path, stream: str, start_us: int, *, compression_level: int = 3,
               max_batch_rows: int = 65536, fsync: bool = True) -> HourFile:  # fmt: skip
        """Open ``_HHMMSS.arrow`` for the hour of `start_us`, never reusing an existing name."""
        end_us = hour_start_us(start_us) + US_PER_HOUR
        start_us -= start_us % US_PER_S
        while True:
            path = segment_path(data_dir, stream, start_us, sealed=False)
            if not path.exists() and not sealed_name(path).exists():
                break
            start_us += US_PER_S  # a same-second collision (a restart): the next free second
            if start_us >= end_us:
                raise StoreError(f"{stream}: no free segment name left in the hour of {path}")
        try:
            make_dirs(path.parent)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)  # read: see checksum.py
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            f = cls(path, fd, start_us, compression_level=compression_level, max_batch_rows=max_batch_rows,
                    fsync=fsync)  # fmt: skip
            if fsync:
                fsync_dir(path.parent)
        except OSError as exc:
            raise StoreError(f"cannot create segment {path}: {exc.strerror or exc}") from None
        log.info("%s: opened segment %s", stream, path)
        return f

    @property
    def bytes(self) -> int:
        """Bytes written to the file so far (footer included once sealed)."""
        return self._sealed_bytes if self._sealed_bytes is not None else self._writer.tell()

    def note_late_rows(self, n: int) -> None:
        """Rows received before this file's hour (a clock step back) stay in this file."""
        if not self._late_warned:
            self._late_warned = True
            log.warning("%s: %d rows with a receive time before this hour are kept in it", self.path, n)

    def add(self, batch: pa.RecordBatch) -> None:
        """Queue a batch (batch-local dictionaries) for this file; writes when enough rows wait."""
        for k, pos in enumerate(_DICT_POS):
            col = batch.column(pos)
            index, values = self._index[k], self._values[k]
            local = col.dictionary.to_pylist()
            remap = np.empty(len(local), np.int32)
            for i, v in enumerate(local):
                j = index.get(v)
                if j is None:
                    j = index[v] = len(values)
                    values.append(v)
                remap[i] = j
            self._acc[pos].append(remap[col.indices.to_numpy(zero_copy_only=False)])
        for pos, col in enumerate(batch.columns):
            if pos not in _DICT_POS:
                self._acc[pos].append(col)
        self._acc_rows += batch.num_rows
        if self._acc_rows >= self.max_batch_rows:
            self._write_acc(full_only=True)

    def _write_acc(self, *, full_only: bool = False) -> None:
        """Write the waiting rows in batches of `max_batch_rows`; with `full_only`, keep the rest."""
        if not self._acc_rows:
            return
        for k in range(len(DICT_COLUMNS)):
            if len(self._dicts[k]) != len(self._values[k]):
                self._dicts[k] = pa.array(self._values[k], pa.string())
        cols: list[pa.Array] = []
        for pos, chunks in enumerate(self._acc):
            if pos in _DICT_POS:
                k = _DICT_POS.index(pos)
                idx = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
                cols.append(pa.DictionaryArray.from_arrays(pa.array(idx, pa.int32()), self._dicts[k]))
            else:
                cols.append(chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks))
        whole = pa.RecordBatch.from_arrays(cols, schema=SEGMENT_SCHEMA)
        self._acc = [[] for _ in SEGMENT_SCHEMA]
        self._acc_rows = 0
        for off in range(0, whole.num_rows, self.max_batch_rows):
            part = whole.slice(off, self.max_batch_rows)
            if full_only and part.num_rows < self.max_batch_rows:
                for pos, col in enumerate(part.columns):
                    self._acc[pos].append(col.indices.to_numpy() if pos in _DICT_POS else col)
                self._acc_rows = part.num_rows
                break
            if part.num_rows >= COMPACT_MIN_ROWS:
                part = group_by_symbol(part)  # already in sealed form: no rewrite needed later
            else:
                self.loose_rows += part.num_rows  # one flush of a slow feed: receive order
            self._writer.write_batch(part, batch_metadata(part))
            self.rows += part.num_rows
            self.batches += 1

    def write_pending(self) -> None:
        """Write what waits as complete batches and make them durable."""
        try:
            self._write_acc()  # each batch reaches the OS as it is written (checksum.py)
            if self.fsync:
                os.fsync(self._fd)
        except OSError as exc:
            raise StoreError(f"cannot write segment {self.path}: {exc.strerror or exc}") from None

    @property
    def needs_compaction(self) -> bool:
        """Whether sealing should rewrite the file: more than 1/16 of its rows are in small batches.

        A file written under load (or from `append_batch`) is made of full, symbol-grouped
        batches already; rewriting it would decompress and recompress it for nothing (that
        rewrite cost about a third of the writer's CPU per trade).
        """
        return self.batches > 1 and self.loose_rows * 16 > self.rows

    @property
    def fd(self) -> int:
        """The open file's descriptor (holds the flock that marks the file as live)."""
        return self._fd

    def abandon(self) -> None:
        """Stop writing without sealing: a write failed and the writer cuts the file back to
        its last complete batch (`SegmentWriter`); never raises."""
        with contextlib.suppress(Exception):
            self._writer.abandon()

    def seal(self, *, compact: bool = True) -> Path:
        """Footer, fsync, compact if needed (see ``compact.py``), rename to ``HHMMSS.arrow``, fsync the dir.

        Compaction reads the hour back, so it checks every batch's checksum first: a batch that
        changed on disk since it was written is left out and recorded in the sealed file (as
        recovery does), and the file as it was is copied to ``quarantine/``.

        At every instant exactly one of ``_HHMMSS.arrow`` and ``HHMMSS.arrow`` exists, so a
        reader never sees the hour twice; a crash at any point leaves a file `recover` seals.
        """
        final = sealed_name(self.path)
        tmp = self.path.with_name(f".{final.name}.sealing")
        try:
            self._write_acc()
            self._writer.close()
            os.fsync(self._fd)
            if final.exists():  # never overwrite (names were chosen free at open)
                raise StoreError(f"cannot seal {self.path}: {final} already exists")
            if compact and self.needs_compaction:
                tmp.unlink(missing_ok=True)  # left by a crash while sealing
                with pa.memory_map(str(self.path)) as mm:
                    buf = mm.read_buffer()
                found = salvage(buf, scan_segment(buf))
                schema = SEGMENT_SCHEMA
                if found.kept_rows != self.rows:  # changed on disk since written: never seal those rows
                    dropped = found.dropped
                    lost = self.rows - found.kept_rows - sum(d[4] or 0 for d in dropped)
                    if lost > 0:  # unreadable after some byte: only the file's hour is known
                        dropped.append([None, None, self.start_us, self.end_us - 1, lost])
                    kept = quarantine(self.path, copy=True)
                    log.error("%s: %d batches (%d rows) failed their checksum at sealing and are left "
                              "out; the file as it was is kept as %s", self.path, len(dropped),
                              self.rows - found.kept_rows, kept)  # fmt: skip
                    schema = damaged_schema(SEGMENT_SCHEMA, dropped)
                    self.rows = found.kept_rows
                rows, self.batches, fd = write_compacted(
                    found.batches(), tmp, max_rows=self.compact_rows,
                    compression_level=self.compression_level, schema=schema,
                )  # fmt: skip
                if rows != self.rows:
                    os.close(fd)
                    raise StoreError(f"sealing {self.path}: compaction wrote {rows} of {self.rows} rows")
                os.rename(tmp, self.path)  # the open name now holds the compacted file
                self.compacted = True
                os.close(self._fd)
                self._fd = fd
            os.rename(self.path, final)
            fsync_dir(final.parent)
            self._sealed_bytes = final.stat().st_size
        except OSError as exc:
            raise StoreError(f"cannot seal segment {self.path}: {exc.strerror or exc}") from None
        finally:
            os.close(self._fd)
        log.info("sealed segment %s: %d rows in %d batches, %d bytes", final, self.rows, self.batches,
                 self.bytes)  # fmt: skip
        return final
