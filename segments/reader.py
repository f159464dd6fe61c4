"""Read trades of a time window out of the store, sealed and open segments alike (DESIGN §5).

Files are chosen by path before any is opened: a file holds the rows *received* in
[its HHMMSS, the end of its hour), and a trade's exchange time may differ from its receive
time by network lag or clock error, so a file is read when that span widened by `slack_s`
(default 5 minutes, both sides) meets the window. Inside a file every record batch carries its
min/max exchange time in its custom metadata, read from the message header without
decompressing, so only the batches that meet the window are decompressed. Sealed files are
memory-mapped and, like an open ``_`` file, read as the IPC stream after its 8-byte magic (the
chosen messages only; an open file up to its last complete batch).

Every batch read is checked against its checksum first (``checksum.py``; the compressed bytes
are read to be decompressed anyway): one that fails is skipped and never returned, and
`damaged_spans` / `damage_in_window` say which trade-time spans of a window were skipped, plus
the batches recovery or sealing left out for a failed checksum (recorded in the sealed file).
Reading stays free of side effects: nothing is journaled, moved or rewritten. Batches of
segments written before checksums existed read unverified.

An hour with a segment gone (retention, the free-disk floor) whose Parquet archive file is still
on disk is read from that file (it holds every row of the segments it was built from; its
manifest says which), plus the segments of the hour written after it was built. So is an hour
whose segment reads with damage that the archive file makes good (built before the damage: it
holds more rows of the damaged span than the segments still give). An archive file that cannot be
read hides nothing: the hour's segments still on disk are read, and the spans of the gone ones
are damage (`damage_in_window`).

Repair files (``HHMMSS.rest<N>.arrow``, rows from REST history grouped by their trade hour) are
listed and read like any sealed segment. A version 1 segment has no ``source`` column: its
rows come out with source ``"ws"``.

The window's ends may be integer µs (any value, as stored), aware `datetime`s (pandas
`Timestamp`s included), `numpy.datetime64` (UTC, as numpy has no zones) or strings read by the
one TIME parser of every command (`pumpwatch.utctime.parse_time_us`: ISO 8601 with a zone, or an
epoch in s/ms/µs/ns told by magnitude). ``base`` matches case-insensitively; ``streams`` takes
stream ids or exchange names (``"binance"`` is both Binance streams), as on the command line.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from pumpwatch.errors import StoreError, UsageError
from pumpwatch.segments.checksum import (
    IN_PROGRESS,
    UNSTAMPED,
    Checks,
    batch_bounds,
    check_batches,
    damaged_tail,
    recorded_damage,
    usable_chunks,
)
from pumpwatch.segments.ipcscan import FILE_MAGIC, Chunk, Scan, scan_segment, stream_of
from pumpwatch.segments.paths import HourlyFile, hour_start_us, list_segments, sealed_name, stream_dir
from pumpwatch.segments.retention import (
    ARCHIVE_DIR,
    ARCHIVE_SUFFIX,
    SEGMENTS_DIR,
    Fingerprint,
    archive_hour_key,
    archive_manifest,
)
from pumpwatch.segments.schema import (
    BATCH_TIME_MAX,
    BATCH_TIME_MIN,
    DICT_COLUMNS,
    ROW_SCHEMA,
    TIME_TYPE,
    TRADE_SCHEMA,
    with_source,
)
from pumpwatch.streams import parse_streams, split_stream
from pumpwatch.timeunits import US_PER_HOUR, US_PER_S
from pumpwatch.utctime import parse_time_us

log = logging.getLogger(__name__)

DEFAULT_SLACK_S = 300.0
OUT_SCHEMA = pa.schema(
    [
        pa.field("exchange", pa.string(), nullable=False),
        pa.field("market", pa.string(), nullable=False),
        *TRADE_SCHEMA,
    ],
    metadata=TRADE_SCHEMA.metadata,
)


# A window end: epoch µs, an aware datetime (pandas Timestamp too), numpy datetime64 or a TIME string.
TimeLike = int | datetime | np.datetime64 | str
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def read_trades(
    data_dir: str | os.PathLike[str],
    start_us: TimeLike,
    end_us: TimeLike,
    *,
    streams: Sequence[str] | str | None = None,
    base: str | None = None,
    slack_s: float = DEFAULT_SLACK_S,
) -> pa.Table:
    """Every trade with ``start_us <= time <= end_us`` (and ``base`` equal, if given).

    The ends are epoch µs or any `TimeLike` (module doc); ``base`` is matched in upper case;
    ``streams`` are stream ids or exchanges (a list or a comma list; None: all twelve).
    Columns: ``exchange``, ``market`` and those of `TRADE_SCHEMA` (strings, not dictionaries;
    ``source`` is ``"ws"`` or ``"rest"``), sorted by (exchange, market, time, recv_time), ties
    kept in the order they were written.
    """
    per_stream: dict[str, list[pa.RecordBatch]] = {}
    for stream, batch in iter_batches(
        data_dir, start_us, end_us, streams=streams, base=base, slack_s=slack_s
    ):
        per_stream.setdefault(stream, []).append(batch)
    parts = []
    for stream in sorted(per_stream, key=split_stream):
        table = pa.Table.from_batches(per_stream[stream], schema=TRADE_SCHEMA)
        order = pc.sort_indices(table, [("time", "ascending"), ("recv_time", "ascending")])
        table = table.take(order)
        exchange, market = split_stream(stream)
        n = table.num_rows
        table = table.add_column(0, OUT_SCHEMA.field("market"), _constant(market, n))
        table = table.add_column(0, OUT_SCHEMA.field("exchange"), _constant(exchange, n))
        parts.append(table.cast(OUT_SCHEMA))
    if not parts:
        return OUT_SCHEMA.empty_table()
    return pa.concat_tables(parts).combine_chunks()


def _constant(value: str, n: int) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([value])).cast(
        pa.string()
    )


def iter_batches(
    data_dir: str | os.PathLike[str],
    start_us: TimeLike,
    end_us: TimeLike,
    *,
    streams: Sequence[str] | str | None = None,
    base: str | None = None,
    slack_s: float = DEFAULT_SLACK_S,
) -> Iterator[tuple[str, pa.RecordBatch]]:
    """(stream, batch of `TRADE_SCHEMA`) for the window, in stream then write order, filtered.

    Arguments as `read_trades`; they are checked when the iterator is created."""
    start_us, end_us = time_us(start_us, "start"), time_us(end_us, "end")
    if isinstance(streams, str):
        streams = streams.split(",")
    chosen = parse_streams(None if streams is None else [s.strip().lower() for s in streams])
    base = base.strip().upper() if base is not None else None
    return _iter_window(data_dir, start_us, end_us, chosen, base, slack_s)


def time_us(value: TimeLike, what: str = "time") -> int:
    """A window end as epoch µs: an int as it is, an aware datetime or pandas Timestamp exactly
    (to the µs, ns floored), a numpy datetime64 as UTC, a string through the TIME parser.
    A naive datetime is refused (`UsageError`): its zone would be a guess."""
    if isinstance(value, str):
        return parse_time_us(value, what=what)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise UsageError(
                f"{what}: datetime {value!r} has no time zone: give tzinfo=timezone.utc (or tz='UTC')"
            )
        return (value - _EPOCH) // timedelta(microseconds=1)
    if isinstance(value, np.datetime64):
        return int(value.astype("datetime64[us]").astype(np.int64))
    if isinstance(value, bool):
        raise UsageError(f"{what}: expected a time, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise UsageError(
            f"{what}: expected epoch µs, a datetime with a zone or an ISO 8601 string, got {value!r}"
        ) from None


def _iter_window(
    data_dir: str | os.PathLike[str],
    start_us: int,
    end_us: int,
    streams: Sequence[str],
    base: str | None,
    slack_s: float,
) -> Iterator[tuple[str, pa.RecordBatch]]:
    for stream, plan in _hour_plans(data_dir, start_us, end_us, streams, base, slack_s):
        for batch in plan.archive:
            yield stream, batch
        for found in plan.segments:
            for batch in read_inspected(found, start_us, end_us, base=base):
                yield stream, batch


@dataclass
class _HourPlan:
    """How one stream-hour of a window is read: rows from its archive file (already read and
    filtered), the segments to decode (already inspected), and what it cannot give back."""

    archive: list[pa.RecordBatch]
    segments: list[Inspection]
    damage: list[Damage]
    served: set[Path] = field(default_factory=set)  # segments on disk the archive stands in for


def _hour_plans(
    data_dir: str | os.PathLike[str],
    start_us: int,
    end_us: int,
    streams: Sequence[str],
    base: str | None,
    slack_s: float,
) -> Iterator[tuple[str, _HourPlan]]:
    """The plan of every stream-hour the window needs, by stream then hour (see `_plan_hour`)."""
    if end_us < start_us:
        return
    slack_us = int(slack_s * US_PER_S)
    hours: dict[tuple[str, int], list[HourlyFile]] = {}
    for seg in _window_files(data_dir, start_us, end_us, streams, slack_s):
        hours.setdefault((seg.stream, hour_start_us(seg.start_us)), []).append(seg)
    fallback = _ArchiveFallback(Path(data_dir))
    first, last = hour_start_us(start_us - slack_us), end_us + slack_us
    for stream in sorted(set(streams), key=split_stream):
        wanted = {h for (s, h) in hours if s == stream} | set(fallback.hours(stream, first, last))
        for hour_us in sorted(wanted):
            segs = hours.get((stream, hour_us), [])
            yield stream, _plan_hour(fallback, stream, hour_us, segs, start_us, end_us, base)


def _plan_hour(
    fallback: _ArchiveFallback,
    stream: str,
    hour_us: int,
    segs: Sequence[HourlyFile],
    start_us: int,
    end_us: int,
    base: str | None,
) -> _HourPlan:
    """Segments or archive file for one stream-hour:

    - no archive file for the hour: its segments;
    - a segment the archive file was built from is gone (retention, the free-disk floor): the
      archive file, plus the segments written after it was built. When the archive file cannot
      be read, every segment left is read instead and the gone segments' spans are damage;
    - every archived segment still on disk: the segments, unless one of them reads with damage
      that the archive file makes good (it was built before the damage: rebuilds never drop
      rows an archive file held): then the archive file serves the archived segments' rows.

    Damage of an archived segment still on disk counts as made good only where the archive
    file holds more rows in the damaged span (inside the window) than the segments still give,
    at least the damaged batch's row count when its metadata says (`_made_good`): an archive
    built from the already damaged segment (or a store copied with new mtimes) hides nothing.
    """
    entry = fallback.entry(stream, hour_us)
    if entry is None:
        return _from_segments(segs, start_us, end_us)
    path, prints = entry
    names = {name for name, _size, _mtime in prints}
    evicted = sorted(names - {seg.path.name for seg in segs})
    archived = _from_segments([seg for seg in segs if seg.path.name in names], start_us, end_us)
    if not evicted and not archived.damage:
        return _from_segments(segs, start_us, end_us)  # the usual case: the segments are the source
    rows, error = _read_archive_hour(path, start_us, end_us, base)
    if error is not None:
        plan = _from_segments(segs, start_us, end_us)
        if not evicted:
            log.warning("%s: cannot read the archive file (%s): the damaged segments stand", path, error)
            return plan
        log.warning(
            "%s: cannot read the archive file (%s) and %d of its segments are gone: "
            "the segments left are read, the gone ones' spans are damaged",
            path,
            error,
            len(evicted),
        )
        hour_end = hour_us + US_PER_HOUR - 1
        for name in evicted:
            lo = _name_start_us(hour_us, name)
            if lo <= end_us and hour_end >= start_us:
                reason = f"segment {name} gone and the archive file unreadable ({error})"
                plan.damage.append(Damage(stream, path, lo, hour_end, None, reason))
        return plan
    lasting = [d for d in archived.damage if not _made_good(path, d, archived.segments, start_us, end_us)]
    if not evicted and len(lasting) == len(archived.damage):
        return _from_segments(segs, start_us, end_us)  # the archive makes nothing good
    if len(lasting) < len(archived.damage):
        log.warning(
            "%s %s: damaged segment rows read from the archive file %s, built before the damage",
            stream,
            datetime.fromtimestamp(hour_us // US_PER_S, UTC).strftime("%Y-%m-%d %H:00"),
            path,
        )
    plan = _from_segments([seg for seg in segs if seg.path.name not in names], start_us, end_us)
    plan.archive = rows
    plan.damage.extend(lasting)
    hurt = {d.path for d in lasting}
    plan.served = {found.seg.path for found in archived.segments if found.seg.path not in hurt}
    return plan


def _made_good(
    path: Path, damage: Damage, archived: Sequence[Inspection], start_us: int, end_us: int
) -> bool:
    """Does the archive file hold the rows `damage` costs the archived segments (inside the
    window)? It must hold more rows of that trade-time span than the segments still give, and
    at least the damaged batch's rows more when its metadata says how many and the span lies
    inside the window."""
    import pyarrow.parquet as pq

    lo, hi = max(damage.time_min_us, start_us), min(damage.time_max_us, end_us)
    if lo > hi:
        return False  # outside the window: reported as found
    still = sum(b.num_rows for f in archived for b in read_inspected(f, lo, hi, quiet=True))
    inside = start_us <= damage.time_min_us and damage.time_max_us <= end_us
    need = still + (damage.rows if damage.rows and inside else 1)
    filters: list[tuple[str, str, object]] = [
        ("time", ">=", pa.scalar(lo, pa.int64()).cast(TIME_TYPE)),
        ("time", "<=", pa.scalar(hi, pa.int64()).cast(TIME_TYPE)),
    ]
    try:
        held = pq.read_table(path, columns=["time"], filters=filters).num_rows
    except (OSError, pa.ArrowException, ValueError):
        return False
    return held >= need


def _from_segments(segs: Sequence[HourlyFile], start_us: int, end_us: int) -> _HourPlan:
    found = [f for f in (inspect_segment(seg, start_us, end_us) for seg in segs) if f is not None]
    return _HourPlan([], found, [d for f in found for d in f.damage])


def _name_start_us(hour_us: int, name: str) -> int:
    """The µs a segment named ``HHMMSS…`` was opened at (its hour's start if the name is odd)."""
    try:
        return hour_us + (int(name[2:4]) * 60 + int(name[4:6])) * US_PER_S
    except ValueError:
        return hour_us


class _ArchiveFallback:
    """The archive files of the hours a window needs (their manifests cached per directory):
    an hour whose segments are partly or wholly gone (retention, the free-disk floor) is read
    from its archive file, which holds every row of the segments it was built from."""

    def __init__(self, data_dir: Path) -> None:
        self.segments = data_dir / SEGMENTS_DIR
        self.archive = data_dir / ARCHIVE_DIR
        self._manifests: dict[Path, dict[str, list[Fingerprint]] | None] = {}

    def hours(self, stream: str, first_us: int, last_us: int) -> Iterator[int]:
        """The hours in ``[first_us, last_us]`` that the archive holds for `stream` (from the
        ``date=`` directories present and their manifests: no walk over empty time)."""
        root = stream_dir(self.archive, stream)
        try:
            days = os.listdir(root)
        except (FileNotFoundError, NotADirectoryError):
            return
        for day in days:
            if not day.startswith("date="):
                continue
            try:
                day_us = int(datetime.fromisoformat(day[5:]).replace(tzinfo=UTC).timestamp()) * US_PER_S
            except ValueError:
                continue
            if day_us + 24 * US_PER_HOUR <= first_us or day_us > last_us:
                continue
            for key in self._manifest(root / day) or {}:
                with contextlib.suppress(ValueError):
                    hour_us = day_us + int(key) * US_PER_HOUR
                    if first_us <= hour_us <= last_us:
                        yield hour_us

    def entry(self, stream: str, hour_us: int) -> tuple[Path, list[Fingerprint]] | None:
        """``(archive file, fingerprints of the segments it was built from)`` of the hour, or
        None when the manifest does not know the hour or its file is not on disk."""
        day = datetime.fromtimestamp(hour_us // US_PER_S, UTC).date().isoformat()
        directory = stream_dir(self.archive, stream) / f"date={day}"
        manifest = self._manifest(directory)
        key = archive_hour_key(hour_us)
        if not manifest or key not in manifest:
            return None
        path = directory / f"{key}{ARCHIVE_SUFFIX}"
        return (path, manifest[key]) if path.is_file() else None

    def _manifest(self, directory: Path) -> dict[str, list[Fingerprint]] | None:
        if directory not in self._manifests:
            self._manifests[directory] = archive_manifest(directory) if directory.is_dir() else {}
        return self._manifests[directory]


def _read_archive_hour(
    path: Path, start_us: int, end_us: int, base: str | None
) -> tuple[list[pa.RecordBatch], str | None]:
    """The rows of one archive file inside the window (row groups pruned by base and time), or
    no rows and why the file cannot be read. The whole file is read before anything is returned,
    so a file that fails half way gives nothing, never a part."""
    import pyarrow.parquet as pq

    filters: list[tuple[str, str, object]] = [
        ("time", ">=", pa.scalar(start_us, pa.int64()).cast(TIME_TYPE)),
        ("time", "<=", pa.scalar(end_us, pa.int64()).cast(TIME_TYPE)),
    ]
    if base is not None:
        filters.append(("base", "==", base))
    try:
        table = pq.read_table(path, columns=list(TRADE_SCHEMA.names), filters=filters)
        table = table.cast(TRADE_SCHEMA)
    except (OSError, pa.ArrowException, ValueError) as exc:
        return [], str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    out = [
        b for b in (_filter(batch, start_us, end_us, base) for batch in table.to_batches()) if b is not None
    ]
    return out, None


def _window_files(
    data_dir: str | os.PathLike[str],
    start_us: int,
    end_us: int,
    streams: Sequence[str] | None,
    slack_s: float,
) -> Iterator[HourlyFile]:
    """The files whose receive-time span, widened by `slack_s`, meets the window."""
    if end_us < start_us:
        return
    slack_us = int(slack_s * US_PER_S)
    for seg in list_segments(data_dir, streams, start_us=start_us - slack_us, end_us=end_us + slack_us):
        if seg.start_us - slack_us > end_us or seg.hour_end_us + slack_us <= start_us:
            continue
        yield seg


def read_segment(
    seg: HourlyFile, start_us: int, end_us: int, *, base: str | None = None
) -> Iterator[pa.RecordBatch]:
    """The rows of one segment file inside the window, as `TRADE_SCHEMA` batches.

    Only batches that pass their checksum (or carry none: segments written before checksums)
    are returned; a damaged one is skipped and logged (`damaged_spans` names them).
    """
    found = inspect_segment(seg, start_us, end_us)
    if found is not None:
        yield from read_inspected(found, start_us, end_us, base=base)


def read_inspected(
    found: Inspection, start_us: int, end_us: int, *, base: str | None = None, quiet: bool = False
) -> Iterator[pa.RecordBatch]:
    """`read_segment` of a file `inspect_segment` has scanned and checked already (`quiet`: no
    log line for its damage)."""
    seg = found.seg
    if found.damage and not quiet:
        log.warning(
            "%s: %d damaged batches skipped (%s)", seg.path, len(found.damage), found.damage[0].reason
        )
    if not found.picked:
        return
    batches = _decode(found)
    while True:
        try:
            out = _filter(next(batches), start_us, end_us, base)
        except StopIteration:
            return
        except (pa.ArrowException, UnicodeDecodeError, ValueError) as exc:
            # only batches without a checksum (older segments) can get here undetected
            log.warning(
                "%s: cannot decode (%s); the rest of the file skipped", seg.path, str(exc).splitlines()[0]
            )
            return
        if out is not None:
            yield out


@dataclass(frozen=True, slots=True)
class Damage:
    """A part of a segment that cannot be read: a batch failing its checksum (its bounds from its
    metadata), one left out at recovery or sealing (recorded in the file), or an unreadable file
    or tail (the file's hour: its receive-time span)."""

    stream: str
    path: Path
    time_min_us: int
    time_max_us: int
    rows: int | None  # None: unknown
    reason: str


@dataclass
class Inspection:
    """One segment file as `inspect_segment` found it."""

    seg: HourlyFile
    buf: pa.Buffer
    scan: Scan
    picked: list[int]  # ordinals of the usable batches that meet the window
    checks: Checks
    damage: list[Damage]


def inspect_segment(seg: HourlyFile, start_us: int, end_us: int) -> Inspection | None:
    """Scan one file, pick the batches meeting the window, check their checksums (None: the
    file is gone). An open file's last batch whose checksum is not stamped yet is being
    written: neither returned nor damage."""
    buf = _map(seg.path)
    if buf is None:
        return None
    scan = scan_segment(buf)
    hour = (seg.start_us, seg.hour_end_us - 1)
    damage: list[Damage] = []
    if not scan.chunks:
        if seg.sealed or buf.size > len(FILE_MAGIC):  # an open file may be empty for a moment
            damage.append(Damage(seg.stream, seg.path, *hour, None, f"unreadable file ({scan.error})"))
        return Inspection(seg, buf, scan, [], Checks(), damage)
    if scan.error is not None and (seg.sealed or damaged_tail(buf, scan)):
        # (an open file's unreadable tail is a write in progress or torn, unless intact batches follow)
        reason = f"unreadable after byte {scan.valid_end} ({scan.error})"
        damage.append(Damage(seg.stream, seg.path, _after_readable(scan, hour), hour[1], None, reason))
    wanted = [i for i, chunk in enumerate(scan.batches) if _meets(chunk, start_us, end_us)]
    checks = check_batches(buf, scan, wanted)
    last = len(scan.batches) - 1
    if not seg.sealed and checks.reasons.get(last) == UNSTAMPED:
        del checks.reasons[last]  # being written right now: its checksum follows in microseconds
        checks.status[last] = IN_PROGRESS
    for i in checks.damaged:
        lo, hi, r_lo, r_hi, rows = batch_bounds(scan.batches[i])
        span = (lo, hi) if lo is not None and hi is not None and lo <= hi else hour
        damage.append(Damage(seg.stream, seg.path, *span, rows, checks.reasons[i]))
    for lo, hi, r_lo, r_hi, rows in recorded_damage(buf, scan):
        if lo is None or hi is None:
            lo, hi = (r_lo, r_hi) if r_lo is not None and r_hi is not None else hour
        if lo <= end_us and hi >= start_us:
            damage.append(Damage(seg.stream, seg.path, lo, hi, rows, "left out at recovery (checksum)"))
    picked = [i for i in wanted if checks.usable(i)]
    return Inspection(seg, buf, scan, picked, checks, damage)


def _after_readable(scan: Scan, hour: tuple[int, int]) -> int:
    """Where the rows lost in a file's unreadable tail start: they were received after every
    readable batch, so at the largest receive time those batches record (the file's HHMMSS
    when none says). Sealed and open files alike, so a tail lost after a window that was read
    in full leaves that window complete (`segments.damage.file_damage` bounds a sealed file's
    tail by the last readable batch's exchange time; `unreadable_spans` takes the union)."""
    recv = [b for b in (batch_bounds(c)[3] for c in scan.batches) if b is not None]
    return min(max([hour[0], *recv]), hour[1])


@dataclass
class WindowDamage:
    """`window_damage`: what a read of a window cannot give back (`damage`), and the segments
    whose rows the read takes from the archive file instead (`served`: their own damage, e.g.
    a tail `segments.damage` finds, costs nothing)."""

    damage: list[Damage]
    served: set[Path]


def window_damage(
    data_dir: str | os.PathLike[str],
    start_us: int,
    end_us: int,
    *,
    streams: Sequence[str] | None = None,
    slack_s: float = DEFAULT_SLACK_S,
) -> WindowDamage:
    """`damage_in_window`, plus the segment files the archive stands in for."""
    chosen = parse_streams(None if streams is None else list(streams))
    out = WindowDamage([], set())
    for _stream, plan in _hour_plans(data_dir, start_us, end_us, chosen, None, slack_s):
        out.damage.extend(plan.damage)
        out.served.update(plan.served)
    return out


def damage_in_window(
    data_dir: str | os.PathLike[str],
    start_us: int,
    end_us: int,
    *,
    streams: Sequence[str] | None = None,
    slack_s: float = DEFAULT_SLACK_S,
) -> list[Damage]:
    """Every damaged part of the store whose trade time may meet ``[start_us, end_us]``: the
    batches `read_trades` over that window skips (none where the archive serves the hour), those
    recovery left out, and the segments gone from disk whose archive file cannot be read. Reads
    only (no journal, no log line per file): the caller reports."""
    return window_damage(data_dir, start_us, end_us, streams=streams, slack_s=slack_s).damage


def damaged_spans(
    data_dir: str | os.PathLike[str],
    start_us: int,
    end_us: int,
    *,
    streams: Sequence[str] | None = None,
    slack_s: float = DEFAULT_SLACK_S,
) -> dict[str, list[tuple[int, int]]]:
    """``{stream: [(time_min_us, time_max_us), ...]}``: the trade-time spans (inclusive, merged
    where they overlap, sorted) of the damage `damage_in_window` finds. A stream with no damage
    is absent. The spans are the damaged batches' own bounds, not clipped to the window."""
    per: dict[str, list[tuple[int, int]]] = {}
    for d in damage_in_window(data_dir, start_us, end_us, streams=streams, slack_s=slack_s):
        per.setdefault(d.stream, []).append((d.time_min_us, d.time_max_us))
    out: dict[str, list[tuple[int, int]]] = {}
    for stream in sorted(per, key=split_stream):
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted(per[stream]):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        out[stream] = merged
    return out


def _map(path: Path) -> pa.Buffer | None:
    for candidate in (path, sealed_name(path)):
        try:
            with pa.memory_map(str(candidate)) as mm:
                return mm.read_buffer()
        except FileNotFoundError:
            continue  # an open file sealed (renamed) since it was listed, or pruned
        except OSError as exc:
            raise StoreError(f"cannot read segment {candidate}: {exc}") from None
    return None


def _meets(chunk: Chunk, start_us: int, end_us: int) -> bool:
    lo, hi = chunk.meta.get(BATCH_TIME_MIN), chunk.meta.get(BATCH_TIME_MAX)
    try:
        return int(lo) <= end_us and int(hi) >= start_us
    except (TypeError, ValueError):
        return True  # no bounds recorded (or a damaged header: its checksum says): check, decode, filter


def _decode(found: Inspection) -> Iterator[pa.RecordBatch]:
    """The picked batches, decoded from the messages the scan found and checked (a sealed
    file's footer is not used: a damaged footer could point a batch at other bytes)."""
    yield from ipc.open_stream(stream_of(found.buf, usable_chunks(found.scan, found.checks, found.picked)))


def _filter(batch: pa.RecordBatch, start_us: int, end_us: int, base: str | None) -> pa.RecordBatch | None:
    times = batch.column(0).to_numpy().view("i8")
    mask = (times >= start_us) & (times <= end_us)
    if base is not None:
        col = batch.column(batch.schema.get_field_index("base"))
        if pa.types.is_dictionary(col.type):
            hits = np.flatnonzero(np.asarray(col.dictionary.to_numpy(zero_copy_only=False) == base))
            if len(hits) == 0:
                return None
            mask &= np.isin(col.indices.to_numpy(zero_copy_only=False), hits)
        else:
            mask &= np.asarray(pc.equal(col, base).to_numpy(zero_copy_only=False), dtype=bool)
    if not mask.any():
        return None
    picked = batch if mask.all() else batch.filter(pa.array(mask))
    if picked.num_columns == len(ROW_SCHEMA):  # a version 1 segment: every row was received live
        picked = with_source(picked)
    cols = [
        col.cast(pa.string()) if name in DICT_COLUMNS else col
        for name, col in zip(picked.schema.names, picked.columns, strict=True)
    ]
    return pa.RecordBatch.from_arrays(cols, schema=TRADE_SCHEMA)
