"""Crash recovery: seal every ``_HHMMSS.arrow`` a dead writer left behind (DESIGN §5).

A writer fsyncs each complete record batch, so after a crash the open file is a valid IPC
stream up to its last complete batch, maybe followed by a torn message. `recover` keeps every
complete batch (with its custom metadata), writes them to a hidden temporary file, fsyncs it,
renames it to ``HHMMSS.arrow`` and only then removes the ``_`` file: a crash during recovery
leaves either the old ``_`` file (recovered again next time) or the sealed file next to it
(the ``_`` file is then just removed).

Only batches that pass their checksums (``checksum.py``) are kept: the rows of one that fails
are never sealed. The sealed file then lists the dropped batches' bounds in its schema metadata
(`SEGMENT_DAMAGED`, so readers and ``pumpwatch verify`` keep reporting the span) and the ``_``
file is moved, bytes untouched, to ``<data_dir>/quarantine/<stream>/`` instead of removed. An
open file's last batch whose checksum was never stamped (the writer died between writing and
stamping it) is a torn tail, not damage.

A file held by a live writer (it keeps an exclusive ``flock``) is left alone, so running
`recover` while writers are active is harmless. A file with no complete batch is removed when
it is what a writer dying in its first write leaves (a prefix of the magic and the known schema
message, or zeros) and moved to ``<data_dir>/quarantine/`` otherwise (also a file that cannot be
read as a segment at all); either way it is logged and counted, never a crash. A file moved to
quarantine whole leaves a record in its place: an empty sealed ``HHMMSS.arrow`` whose
`SEGMENT_DAMAGED` metadata names the span its rows were received in (file start to hour end),
so readers, coverage and ``pumpwatch verify`` keep reporting the hour as damaged.

``python -m pumpwatch.recorder.killed`` runs `recover` for a worker the supervisor killed at
shutdown and journals ``crashed`` for it (the recorder owns the journal's run events).

A ``_`` file left by a version 1 writer (no ``source`` column) is sealed in the current schema,
its rows with source ``"ws"``. Hidden temporaries of an interrupted seal, recovery or repair
write (``.*.sealing``, ``.*.recovering``, ``.*.repairing``) are removed when no live process
holds them.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from pumpwatch.atomic import fsync_dir
from pumpwatch.errors import StoreError
from pumpwatch.segments.checksum import (
    UNSTAMPED,
    Salvage,
    batch_bounds,
    damaged_schema,
    damaged_tail,
    quarantine,
    salvage,
)
from pumpwatch.segments.compact import write_compacted
from pumpwatch.segments.ipcscan import FILE_MAGIC, scan_segment
from pumpwatch.segments.paths import HourlyFile, list_segments, sealed_name, segment_root
from pumpwatch.segments.schema import SEGMENT_SCHEMA, SEGMENT_SCHEMA_V1, with_source
from pumpwatch.streams import STREAMS, split_stream

log = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    """What `recover_report` did."""

    sealed: list[Path] = field(default_factory=list)  # new sealed files
    removed: list[Path] = field(default_factory=list)  # empty `_` files deleted
    quarantined: list[Path] = field(default_factory=list)  # damaged files moved aside (new paths)
    records: list[Path] = field(default_factory=list)  # empty sealed files naming a quarantined file's span
    skipped_live: list[Path] = field(default_factory=list)  # held by a running writer
    batches_kept: int = 0
    rows_kept: int = 0
    bytes_dropped: int = 0  # torn tails and damaged files
    batches_damaged: int = 0  # damaged parts left out: batches failing a checksum, damaged framing
    rows_damaged: int = 0
    # sealed file -> `checksum.batch_bounds` of each batch left out of it (also in its metadata)
    damaged: dict[Path, list[list[int | None]]] = field(default_factory=dict)


def recover(data_dir: str | os.PathLike[str], streams: Iterable[str] | None = None) -> list[Path]:
    """Salvage and seal every unsealed segment of `streams` (None = all); returns the new files."""
    return recover_report(data_dir, streams).sealed


def recover_report(data_dir: str | os.PathLike[str], streams: Iterable[str] | None = None) -> RecoveryReport:
    """`recover` with the full account of what was kept, removed and quarantined."""
    report = RecoveryReport()
    _remove_stale_temps(Path(data_dir), streams, report)
    for seg in list_segments(data_dir, streams):
        if not seg.sealed:
            _recover_one(Path(data_dir), seg, report)
    if report.sealed or report.removed or report.quarantined:
        log.warning(
            "recovered %d unsealed segments (%d batches, %d rows kept, %d bytes dropped, "
            "%d damaged batches of %d rows left out), removed %d empty, quarantined %d damaged",
            len(report.sealed),
            report.batches_kept,
            report.rows_kept,
            report.bytes_dropped,
            report.batches_damaged,
            report.rows_damaged,
            len(report.removed),
            len(report.quarantined),
        )
    return report


def _recover_one(data_dir: Path, seg: HourlyFile, report: RecoveryReport) -> None:
    path = seg.path
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report.skipped_live.append(path)
            log.info("%s is being written by a live writer; left alone", path)
            return
        final = sealed_name(path)
        if final.exists():
            # A previous recovery renamed its result and died before removing the source.
            log.warning("%s was already recovered as %s; removing it", path, final)
            _unlink(path)
            report.removed.append(path)
            return
        size = os.fstat(fd).st_size
        data = pa.py_buffer(os.pread(fd, size, 0)) if size else pa.py_buffer(b"")
        scan = scan_segment(data)
        batches = scan.batches
        if not batches:
            if _torn_first_write(data):  # died before its first complete batch
                _unlink(path)
                report.removed.append(path)
                log.warning("%s held no complete batch (%d bytes); removed", path, size)
            else:
                report.quarantined.append(_quarantine(path, "damaged (no complete batch)"))
                report.bytes_dropped += size
                _record_whole_file_damage(seg, final, report)
            return
        if scan.error is not None:
            log.warning("%s: torn tail after byte %d of %d (%s)", path, scan.valid_end, size, scan.error)
        found = salvage(data, scan)
        last = len(batches) - 1
        torn = (
            not scan.clean_eos
            and found.checks.reasons.get(last) == UNSTAMPED
            and found.dropped == [batch_bounds(batches[last])]
        )
        if torn:  # died between writing its last batch and stamping it: never durable, a torn tail
            found.dropped = []
            report.bytes_dropped += size - batches[last].unit_start
        elif damaged_tail(data, scan):  # an intact batch after the stop: damage, not a torn write
            log.error("%s: unreadable after byte %d, but intact batches follow: damage", path, scan.valid_end)
            recv_lo = max([b[3] or seg.start_us for b in map(batch_bounds, batches)] + [seg.start_us])
            found.dropped.append([None, None, recv_lo, seg.hour_end_us - 1, None])
        try:
            _write_sealed(found, final)
        except (_NotASegment, pa.ArrowException) as exc:  # only possible without checksums
            report.quarantined.append(_quarantine(path, f"cannot be read as a segment ({exc})"))
            report.bytes_dropped += size
            _record_whole_file_damage(seg, final, report)
            return
        if found.dropped:
            rows = sum(d[4] or 0 for d in found.dropped)
            kept = _quarantine(path, f"{len(found.dropped)} damaged parts (at least {rows} rows) "
                               "were left out of the sealed file")  # fmt: skip
            report.quarantined.append(kept)
            report.batches_damaged += len(found.dropped)
            report.rows_damaged += rows
            report.damaged[final] = found.dropped
        else:
            _unlink(path)
        report.sealed.append(final)
        report.batches_kept += len(found.keep)
        report.rows_kept += found.kept_rows
        if not torn:
            report.bytes_dropped += max(0, size - scan.valid_end) if not scan.clean_eos else 0
    except StoreError:
        raise
    except OSError as exc:
        raise StoreError(f"cannot recover {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _record_whole_file_damage(seg: HourlyFile, final: Path, report: RecoveryReport) -> None:
    """A whole `_` file went to quarantine: leave an empty sealed file in its place whose
    metadata names the span of its rows (received from the file's start to its hour's end)."""
    span: list[int | None] = [None, None, seg.start_us, seg.hour_end_us - 1, None]
    tmp = final.with_name(f".{final.name}.recovering")
    tmp.unlink(missing_ok=True)
    _rows, _batches, fd = write_compacted((), tmp, schema=damaged_schema(SEGMENT_SCHEMA, [span]))
    try:
        os.rename(tmp, final)
        fsync_dir(final.parent)
    finally:
        os.close(fd)
    report.records.append(final)
    report.batches_damaged += 1
    report.damaged[final] = [span]
    log.error("%s: recorded as damaged from %d to the end of its hour", final, seg.start_us)


def _write_sealed(found: Salvage, final: Path) -> None:
    """Rewrite the kept batches as a sealed, compacted file: temp name, fsync, rename. The
    batches left out for a failed checksum are listed in its schema metadata."""
    tmp = final.with_name(f".{final.name}.recovering")
    tmp.unlink(missing_ok=True)  # left by a crash during an earlier recovery
    head = found.scan.chunks[0]
    batches: Iterable[pa.RecordBatch] = ()
    if found.keep:  # (the schema is checked by the first batch's checksum, where there is one)
        schema = ipc.read_schema(ipc.read_message(found.buf.slice(head.start, head.end - head.start)))
        schema = schema.remove_metadata()
        if schema == SEGMENT_SCHEMA.remove_metadata():
            batches = found.batches()
        elif schema == SEGMENT_SCHEMA_V1.remove_metadata():  # left by a version 1 writer
            batches = (with_source(b) for b in found.batches())
        else:
            raise _NotASegment(f"unexpected schema {schema}")
    out_schema = damaged_schema(SEGMENT_SCHEMA, found.dropped) if found.dropped else SEGMENT_SCHEMA
    _rows, _batches, fd = write_compacted(batches, tmp, schema=out_schema)
    try:
        os.rename(tmp, final)
        fsync_dir(final.parent)
    finally:
        os.close(fd)


def _remove_stale_temps(data_dir: Path, streams: Iterable[str] | None, report: RecoveryReport) -> None:
    """Hidden half-written files of a seal or recovery that died: their source still exists."""
    for stream in STREAMS if streams is None else streams:
        exchange, market = split_stream(stream)
        for tmp in (segment_root(data_dir) / f"exchange={exchange}" / f"market={market}").glob("date=*/.*"):
            if not tmp.name.endswith((".sealing", ".recovering", ".repairing")):
                continue
            fd = os.open(tmp, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer is sealing right now
            finally:
                os.close(fd)
            _unlink(tmp)
            report.removed.append(tmp)
            log.warning("removed %s, left by an interrupted seal", tmp)


class _NotASegment(Exception):
    pass


_SCHEMA_MESSAGES = (SEGMENT_SCHEMA.serialize().to_pybytes(), SEGMENT_SCHEMA_V1.serialize().to_pybytes())


def _torn_first_write(data: pa.Buffer) -> bool:
    """Whether a file with no complete batch is what a writer that died during its first write
    leaves (a prefix of the magic and a known schema message, or zeros), not damage."""
    raw = bytes(data)
    if not raw.strip(b"\0"):
        return True
    if not (raw[: len(FILE_MAGIC)] == FILE_MAGIC or FILE_MAGIC.startswith(raw)):
        return False
    rest = raw[len(FILE_MAGIC) :]
    return any(rest[: len(m)] == m[: len(rest)] for m in _SCHEMA_MESSAGES)


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _quarantine(path: Path, why: str) -> Path:
    target = quarantine(path)
    log.error("%s: %s; moved to %s", path, why, target)
    return target
