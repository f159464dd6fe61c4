"""The Parquet archive: every sealed hour of the store, readable by any engine (DESIGN §5).

    <data_dir>/archive/exchange=<e>/market=<m>/date=<YYYY-MM-DD>/<HH>.parquet

One file per stream per UTC hour holds the rows of **all** the sealed segments of that hour:
the live file (``HH0000.arrow``), a second one opened by a restart in the middle of the hour
(``HHMMSS.arrow``) and the repair files (``HHMMSS.rest<N>.arrow``), read through the segment
reader, so the archive holds exactly the rows `read_trades` returns from those files. The
columns are `TRADE_SCHEMA`'s (plain strings; Parquet dictionary-encodes them page by page), zstd,
statistics on, rows sorted by (base, time, recv_time) and cut into row groups of
`ROW_GROUP_ROWS`, so an engine skips row groups by base and by time from their min/max alone,
and whole files by the ``date`` partition. DuckDB, Polars, Spark, pandas and pyarrow read it
with no PumpWatch code.

Which hours need (re)building. Each archive directory keeps a hidden manifest
(``.sources.json``: per hour, the name, size and mtime of every segment the file was built
from), written only after the Parquet file is durably in place, so a crash can leave the
manifest behind the file (the next run rebuilds once more) but never ahead of it. An hour is
pending when one of its sealed segments is not in the manifest (a new file: a repair, the rest
of a restarted hour; or a changed one: ``reparse``). A segment that disappeared since (retention,
the free-disk floor) never causes a rebuild: the archive keeps rows the store has dropped.

How an hour is (re)built. Normally from its current sealed segments alone. When one of the
segments the file was built from is gone, the manifest does not know the file, or one of the
segments now reads with damage (a batch failing its checksum, an unreadable tail: a damaged
segment gets a new mtime, so its hour is pending again), the new file is the multiset union of
the old file and the current segments (a row kept as many times as the larger of its two
counts), so nothing the archive already held is lost and nothing is doubled; the manifest then
lists the segments' old and new fingerprints, and the reader serves the damaged segment's rows
from the archive file while the segment stays (`segments.reader`).

Writes go to a hidden temporary file in the same directory, fsynced, renamed, directory fsynced.
One lock (an exclusive ``flock`` on ``<data_dir>/archive/.lock``) serializes every writer, so
`archive_pending` may run from several threads or processes at once; readers need no lock.

Retention: archive files whose hour ended more than ``retention_s`` ago (default 90 days,
setting ``storage.archive_retention``; 0 keeps them) are deleted by `archive_pending`, with a
remote store only once uploaded (its `may_delete`); hours that old are not archived any more.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pumpwatch.atomic import fsync_dir, write_file_atomic
from pumpwatch.errors import StoreError
from pumpwatch.segments.paths import HourlyFile, hour_start_us, list_segments, parse_segment_path, stream_dir
from pumpwatch.segments.reader import inspect_segment, read_inspected
from pumpwatch.segments.retention import (
    ARCHIVE_DIR,
    ARCHIVE_LOCK,
    ARCHIVE_MANIFEST,
    Fingerprint,
    archive_files,
    archive_hour_key,
    archive_manifest,
)
from pumpwatch.segments.schema import TRADE_FIELDS, TRADE_SCHEMA
from pumpwatch.streams import STREAMS, parse_streams
from pumpwatch.timeunits import US_PER_HOUR, US_PER_S

log = logging.getLogger(__name__)

ARCHIVE_RETENTION_S = 90 * 86_400  # default of storage.archive_retention_s
ROW_GROUP_ROWS = 65_536  # small enough to prune one coin's hour, large enough to compress well
COMPRESSION_LEVEL = 3
MANIFEST_NAME = ARCHIVE_MANIFEST
LOCK_NAME = ARCHIVE_LOCK
TEMP_SUFFIX = ".tmp"
SOURCES_KEY = b"pumpwatch.archive.sources"  # the same list as the manifest, in the file's footer
SORT_KEYS = (("base", "ascending"), ("time", "ascending"), ("recv_time", "ascending"))
# Encodings chosen by measurement on the bench market (bytes per trade of one sealed hour, zstd 3,
# 65,536-row groups): pyarrow's defaults 18.7; times as deltas (sorted within a coin), trade ids
# as shared prefixes and dictionaries for prices and sizes (Parquet falls back to plain pages when
# a dictionary grows past 1 MiB) 11.9, against 15.6 for the sealed segment. Every engine named in
# the module doc reads these encodings (all are in the Parquet format specification).
DICTIONARY_COLUMNS = ["symbol", "base", "quote", "side", "source", "price", "qty"]
COLUMN_ENCODING = {
    "time": "DELTA_BINARY_PACKED",
    "recv_time": "DELTA_BINARY_PACKED",
    "trade_id": "DELTA_BYTE_ARRAY",
}

_ALL_US = (int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max))


def archive_root(data_dir: str | os.PathLike[str]) -> Path:
    """``<data_dir>/archive``: the root of the hive-partitioned Parquet archive."""
    return Path(data_dir) / ARCHIVE_DIR


def archive_path(data_dir: str | os.PathLike[str], stream: str, hour_us: int) -> Path:
    """The archive file of `stream`'s UTC hour holding `hour_us`."""
    t = datetime.fromtimestamp(hour_start_us(hour_us) // US_PER_S, UTC)
    return stream_dir(archive_root(data_dir), stream) / f"date={t.date().isoformat()}" / f"{t:%H}.parquet"


@dataclass
class ArchiveReport:
    """What one `archive_pending` (or `archive_segment`) run did."""

    hours_built: int = 0  # archive files (re)built from their segments
    hours_merged: int = 0  # of those, rebuilt as the union with the old file (a segment was gone)
    hours_current: int = 0  # hours with sealed segments whose archive file was already up to date
    hours_expired: int = 0  # hours with sealed segments older than the archive retention: skipped
    hours_held: int = 0  # hours to merge whose old file cannot be read: left as they are
    trades: int = 0  # rows in the files built
    segment_bytes: int = 0  # bytes of the segments they were built from
    archive_bytes: int = 0  # bytes of the files built
    pruned: list[Path] = field(default_factory=list)  # archive files deleted by retention
    paths: list[Path] = field(default_factory=list)  # archive files built

    def summary(self, root: Path) -> str:
        """One line for people: what was built, how big, what was pruned."""
        ratio = f", {self.archive_bytes / self.trades:.1f} B/trade" if self.trades else ""
        merged = f" ({self.hours_merged} merged with the old file)" if self.hours_merged else ""
        return (
            f"archived {self.hours_built} hour file(s){merged}: {self.trades:,} trades, "
            f"{_mib(self.segment_bytes)} of segments -> {_mib(self.archive_bytes)} of Parquet{ratio}; "
            f"{self.hours_current} already up to date; {self.hours_expired} older than the archive "
            f"retention skipped; {len(self.pruned)} expired file(s) deleted"
            + (f"; {self.hours_held} unreadable file(s) left as they are" if self.hours_held else "")
            + f"; in {root}"
        )


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@dataclass(frozen=True)
class _Hour:
    stream: str
    hour_us: int
    sources: tuple[HourlyFile, ...]  # sealed segments of the hour, by (start, name)

    @property
    def fingerprints(self) -> list[Fingerprint]:
        return [(f.path.name, f.size_bytes, f.mtime_us) for f in self.sources]


# --- entry points -----------------------------------------------------------------------------


def archive_segment(
    data_dir: str | os.PathLike[str],
    sealed_segment_path: str | os.PathLike[str],
    *,
    row_group_rows: int = ROW_GROUP_ROWS,
    compression_level: int = COMPRESSION_LEVEL,
) -> Path:
    """(Re)build the archive file of the hour `sealed_segment_path` belongs to, from every sealed
    segment of that hour (repair files included), and return its path."""
    seg = parse_segment_path(Path(sealed_segment_path))
    if seg is None or not seg.sealed:
        raise StoreError(f"not a sealed segment of the store: {sealed_segment_path}")
    hour = hour_start_us(seg.start_us)
    with archive_lock(data_dir):
        hours = _sealed_hours(data_dir, [seg.stream], start_us=hour, end_us=hour + US_PER_HOUR - 1)
        target = next((h for h in hours if h.hour_us == hour), None)
        if target is None:  # deleted (retention) since the caller saw it
            raise StoreError(f"segment {sealed_segment_path} disappeared before it was archived")
        manifest = _read_manifest(archive_path(data_dir, seg.stream, hour).parent)
        _build(data_dir, target, manifest, ArchiveReport(), row_group_rows, compression_level)
    return archive_path(data_dir, seg.stream, hour)


def archive_pending(
    data_dir: str | os.PathLike[str],
    *,
    now_us: int | None = None,
    retention_s: float | None = ARCHIVE_RETENTION_S,
    streams: Iterable[str] | None = None,
    since_us: int | None = None,
    row_group_rows: int = ROW_GROUP_ROWS,
    compression_level: int = COMPRESSION_LEVEL,
    may_delete: Callable[[Path], bool] | None = None,
) -> ArchiveReport:
    """Bring the archive up to date: (re)build every hour whose sealed segments are not all in
    its archive file, then delete archive files older than `retention_s` (None or 0 keeps them)
    for which `may_delete(path)` holds (with a remote store: only what is uploaded).

    Cheap when nothing is pending (a directory scan and one small manifest per stream-day) and
    safe to run from several threads or processes at once (they take turns: a caller that must
    not wait, such as a recorder, runs it on a thread of its own). `streams` (stream ids or
    exchanges) and `since_us` (only hours ending after it) narrow the run, e.g. for a back-fill.
    """
    now = time.time_ns() // 1000 if now_us is None else now_us
    cutoff_us = None if not retention_s else now - int(retention_s * US_PER_S)
    report = ArchiveReport()
    chosen = list(parse_streams(None if streams is None else list(streams)))
    with archive_lock(data_dir):
        manifests: dict[Path, dict[str, list[Fingerprint]]] = {}
        for hour in _sealed_hours(data_dir, chosen, start_us=since_us):
            if since_us is not None and hour.hour_us + US_PER_HOUR <= since_us:
                continue
            if cutoff_us is not None and hour.hour_us + US_PER_HOUR <= cutoff_us:
                report.hours_expired += 1  # retention would delete it at once
                continue
            directory = archive_path(data_dir, hour.stream, hour.hour_us).parent
            if directory not in manifests:
                _remove_stale_temps(directory)
                manifests[directory] = _read_manifest(directory)
            if _is_current(data_dir, hour, manifests[directory]):
                report.hours_current += 1
                continue
            _build(data_dir, hour, manifests[directory], report, row_group_rows, compression_level)
        if cutoff_us is not None:
            report.pruned = _prune(data_dir, chosen, cutoff_us, may_delete)
    return report


@dataclass(frozen=True)
class ArchiveBacklog:
    """Sealed hours whose archive file is missing or out of date (`archive_backlog`)."""

    pending_hours: int  # stream-hours with sealed segments not (all) in their archive file
    oldest_seal_us: int | None  # when the oldest of their segments was sealed (its mtime)
    newest_pending_hour_us: int | None  # the newest such hour (start, µs)
    newest_archived_hour_us: int | None  # the newest hour with an up-to-date archive file

    def lag_s(self, now_us: int) -> float:
        """Seconds since the oldest unarchived segment was sealed (0 when nothing is pending)."""
        return 0.0 if self.oldest_seal_us is None else max(0.0, (now_us - self.oldest_seal_us) / US_PER_S)


def archive_backlog(
    data_dir: str | os.PathLike[str],
    *,
    now_us: int | None = None,
    retention_s: float | None = ARCHIVE_RETENTION_S,
    since_us: int | None = None,
) -> ArchiveBacklog:
    """What `archive_pending` would build now (read-only, no lock): for ``status`` and metrics.
    Hours older than the archive retention are not counted (they are never archived)."""
    now = time.time_ns() // 1000 if now_us is None else now_us
    cutoff_us = None if not retention_s else now - int(retention_s * US_PER_S)
    start = since_us if cutoff_us is None else max(since_us or cutoff_us, cutoff_us)
    manifests: dict[Path, dict[str, list[Fingerprint]]] = {}
    pending = 0
    oldest: int | None = None
    newest_pending: int | None = None
    newest_done: int | None = None
    for hour in _sealed_hours(data_dir, STREAMS, start_us=start):
        if start is not None and hour.hour_us + US_PER_HOUR <= start:
            continue
        directory = archive_path(data_dir, hour.stream, hour.hour_us).parent
        if directory not in manifests:
            manifests[directory] = _read_manifest(directory)
        if _is_current(data_dir, hour, manifests[directory]):
            newest_done = max(newest_done or hour.hour_us, hour.hour_us)
            continue
        pending += 1
        sealed = min(f.mtime_us for f in hour.sources)
        oldest = sealed if oldest is None else min(oldest, sealed)
        newest_pending = max(newest_pending or hour.hour_us, hour.hour_us)
    return ArchiveBacklog(pending, oldest, newest_pending, newest_done)


def prune_archive(
    data_dir: str | os.PathLike[str],
    *,
    now_us: int | None = None,
    retention_s: float = ARCHIVE_RETENTION_S,
    may_delete: Callable[[Path], bool] | None = None,
) -> list[Path]:
    """Delete the archive files whose hour ended more than `retention_s` before `now_us` (and for
    which `may_delete(path)` holds)."""
    now = time.time_ns() // 1000 if now_us is None else now_us
    with archive_lock(data_dir):
        return _prune(data_dir, STREAMS, now - int(retention_s * US_PER_S), may_delete)


@contextlib.contextmanager
def archive_lock(data_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the archive's writer lock (blocking): one builder or pruner at a time."""
    root = archive_root(data_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot open the archive lock in {root}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def list_archive(
    data_dir: str | os.PathLike[str], streams: Iterable[str] | None = None
) -> list[tuple[str, int, Path]]:
    """``(stream, hour start µs, path)`` of every archive file, by stream then hour."""
    return [(f.stream, f.start_us, f.path) for f in archive_files(data_dir, streams)]


# --- which hours -------------------------------------------------------------------------------


def _sealed_hours(
    data_dir: str | os.PathLike[str],
    streams: Iterable[str],
    *,
    start_us: int | None = None,
    end_us: int | None = None,
) -> list[_Hour]:
    grouped: dict[tuple[str, int], list[HourlyFile]] = {}
    for seg in list_segments(data_dir, streams, start_us=start_us, end_us=end_us):
        if seg.sealed:
            grouped.setdefault((seg.stream, hour_start_us(seg.start_us)), []).append(seg)
    return [
        _Hour(stream, hour, tuple(sorted(files, key=lambda f: (f.start_us, f.path.name))))
        for (stream, hour), files in grouped.items()
    ]


def _is_current(
    data_dir: str | os.PathLike[str], hour: _Hour, manifest: dict[str, list[Fingerprint]]
) -> bool:
    archived = manifest.get(archive_hour_key(hour.hour_us))
    if archived is None or not archive_path(data_dir, hour.stream, hour.hour_us).is_file():
        return False
    return set(hour.fingerprints) <= set(archived)


def _read_manifest(directory: Path) -> dict[str, list[Fingerprint]]:
    """The manifest of one archive directory; empty when missing or unreadable (every file it
    would describe is then rebuilt as a union, which loses nothing)."""
    manifest = archive_manifest(directory)
    if manifest is None:
        log.warning("archive manifest %s unreadable: its hours will be rebuilt", directory / MANIFEST_NAME)
        return {}
    return manifest


def _write_manifest(directory: Path, manifest: dict[str, list[Fingerprint]]) -> None:
    doc = {"version": 1, "hours": {k: [list(f) for f in v] for k, v in sorted(manifest.items())}}
    write_file_atomic(directory / MANIFEST_NAME, orjson.dumps(doc))


# --- building one hour -------------------------------------------------------------------------


def _build(
    data_dir: str | os.PathLike[str],
    hour: _Hour,
    manifest: dict[str, list[Fingerprint]],
    report: ArchiveReport,
    row_group_rows: int,
    compression_level: int,
) -> None:
    path = archive_path(data_dir, hour.stream, hour.hour_us)
    key = archive_hour_key(hour.hour_us)
    table, damaged = _read_sources(hour)
    archived = manifest.get(key)
    names_now = {f.path.name for f in hour.sources if f.path.exists()}
    merge = path.is_file() and (
        archived is None or bool(damaged) or any(name not in names_now for name, _s, _m in archived)
    )
    fingerprints = hour.fingerprints
    if merge and damaged:
        log.warning(
            "%s: %s read with damage; merged with the archive file's rows, none of which is dropped",
            hour.stream,
            ", ".join(damaged),
        )
    if merge:
        try:
            old = pq.read_table(path, schema=TRADE_SCHEMA)
        except (OSError, pa.ArrowException, ValueError) as exc:
            # its rows cannot be merged, and replacing it could drop rows an I/O error hides:
            # the file stays as it is (the hour stays pending, retried on every run)
            log.warning(
                "%s: cannot read the archive file to merge with (%s): left as it is, %s not rebuilt",
                path,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                hour.stream,
            )
            report.hours_held += 1
            return
        table = multiset_union(old, table)
        if archived is not None:  # remember what the old file was made of, too
            fingerprints = sorted(set(fingerprints) | set(archived))
    table = table.take(pc.sort_indices(table, sort_keys=SORT_KEYS))
    _write_parquet(path, table, fingerprints, row_group_rows, compression_level)
    manifest[key] = fingerprints
    _write_manifest(path.parent, manifest)
    size = path.stat().st_size
    report.hours_built += 1
    report.hours_merged += int(merge)
    report.trades += table.num_rows
    report.segment_bytes += sum(f.size_bytes for f in hour.sources)
    report.archive_bytes += size
    report.paths.append(path)
    log.info(
        "archived %s %s: %d trades from %d segment(s)%s, %d bytes",
        hour.stream,
        path.relative_to(archive_root(data_dir)),
        table.num_rows,
        len(hour.sources),
        " merged with the old file" if merge else "",
        size,
    )


def _read_sources(hour: _Hour) -> tuple[pa.Table, list[str]]:
    """Every readable row of the hour's sealed segments, and the names of those that read with
    damage (a batch failing its checksum, an unreadable tail or file: rows left out)."""
    batches: list[pa.RecordBatch] = []
    damaged: list[str] = []
    for seg in hour.sources:
        found = inspect_segment(seg, *_ALL_US)
        if found is None:
            continue
        if found.damage:
            damaged.append(seg.path.name)
        batches.extend(read_inspected(found, *_ALL_US))
    return pa.Table.from_batches(batches, schema=TRADE_SCHEMA), damaged


def multiset_union(old: pa.Table, new: pa.Table) -> pa.Table:
    """Rows of either table, each distinct row as many times as the larger of its two counts
    (so a row both tables hold is kept once per copy, and one only `old` holds is kept)."""
    if old.num_rows == 0:
        return new
    if new.num_rows == 0:
        return old
    both = pa.concat_tables([old.cast(TRADE_SCHEMA), new])
    n_old = old.num_rows
    tagged = both.append_column("_new", pa.array(np.arange(both.num_rows) >= n_old, pa.int64()))
    tagged = tagged.append_column("_row", pa.array(np.arange(both.num_rows, dtype=np.int64)))
    groups = tagged.group_by([*TRADE_FIELDS, "source"], use_threads=False).aggregate(
        [("_new", "sum"), ("_new", "count"), ("_row", "min")]
    )
    in_new = groups.column("_new_sum").to_numpy()
    in_old = groups.column("_new_count").to_numpy() - in_new
    first = groups.column("_row_min").to_numpy()
    rows = np.repeat(first, np.maximum(in_old, in_new))
    return both.take(pa.array(np.sort(rows)))


def _write_parquet(
    path: Path, table: pa.Table, sources: list[Fingerprint], row_group_rows: int, compression_level: int
) -> None:
    directory = path.parent
    _make_dirs(directory)
    metadata = dict(TRADE_SCHEMA.metadata or {})
    metadata[SOURCES_KEY] = orjson.dumps([list(f) for f in sources])
    table = table.replace_schema_metadata(metadata)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            pq.write_table(
                table,
                fh,
                row_group_size=row_group_rows,
                compression="zstd",
                compression_level=compression_level,
                write_statistics=True,
                use_dictionary=DICTIONARY_COLUMNS,
                column_encoding=COLUMN_ENCODING,
                sorting_columns=[pq.SortingColumn(table.schema.get_field_index(k)) for k, _o in SORT_KEYS],
            )
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(directory)


def _make_dirs(directory: Path) -> None:
    """Create `directory` and its missing parents, fsyncing each new entry."""
    missing = []
    d = directory
    while not d.exists():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
        fsync_dir(d.parent)


def _remove_stale_temps(directory: Path) -> None:
    """Temporary files left by a crashed build (only a lock holder writes, and we hold it)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(".") and name.endswith(TEMP_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                (directory / name).unlink()


# --- retention ---------------------------------------------------------------------------------


def _prune(
    data_dir: str | os.PathLike[str],
    streams: Iterable[str],
    cutoff_us: int,
    may_delete: Callable[[Path], bool] | None = None,
) -> list[Path]:
    deleted: list[Path] = []
    touched: set[Path] = set()
    held = 0
    for _stream, hour_us, path in list_archive(data_dir, streams):
        if hour_us + US_PER_HOUR > cutoff_us:
            continue
        if may_delete is not None and not may_delete(path):
            held += 1  # not in the remote store yet: kept until it is
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot delete expired archive file %s: %s", path, exc.strerror or exc)
            continue
        deleted.append(path)
        touched.add(path.parent)
    for directory in touched:
        manifest = _read_manifest(directory)
        left = {p.name[:2] for p in directory.glob("*.parquet")}
        if left:
            _write_manifest(directory, {k: v for k, v in manifest.items() if k in left})
            continue
        for name in os.listdir(directory):  # the manifest and stale temporaries
            with contextlib.suppress(FileNotFoundError):
                (directory / name).unlink()
        with contextlib.suppress(OSError):
            directory.rmdir()
    if deleted:
        log.info("archive retention: deleted %d file(s) whose hour ended before the cutoff", len(deleted))
    if held:
        log.info("archive retention: kept %d expired file(s) not yet in the remote store", held)
    return deleted
