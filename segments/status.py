"""What the store holds, per stream: `store_status` backs ``pumpwatch status``.

It reads the store and the journals only, so it answers the same whether or not ``record``
runs. Every segment is memory-mapped and walked message by message (`ipcscan`): each record
batch's custom metadata carries its row count and its exchange-time and receive-time bounds,
so totals, the newest trade and the trades received in the last hour cost no decompression.
Checksums are not computed for every batch (that would read every byte; ``pumpwatch verify``
does): status reports the damage already found, i.e. the batches recovery or sealing left out
for a failed checksum (listed in the sealed file's schema metadata), and files it cannot read
at all. Only a batch without that metadata, or one that straddles the start of the last hour,
is decoded, and that batch's checksum is verified first, since its bytes are read anyway: one
that fails is not decoded and counts as damaged (``damaged_batches``). An open ``_`` segment is
read up to its last complete batch (its last batch, while its checksum is still being
stamped, is skipped).

Connection state, gaps of the last 24 h and the worker's ``stats`` counters come from the
connection journal (`journal_status`), read fast enough for a week of heartbeats (~70,000
lines per stream): one orjson call (`journal.parse_journal_fast`) and a replay of only the
events that move the connection state (`coverage.state_events`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc

from pumpwatch.errors import StoreError
from pumpwatch.segments.checksum import DAMAGED, IN_PROGRESS, UNSTAMPED, check_batches, recorded_damage
from pumpwatch.segments.coverage import (
    Replay,
    coverage_from_events,
    dropped_spans,
    liveness_bound_us,
    merge_spans,
    repair_tally,
    state_events,
)
from pumpwatch.segments.frames import list_frame_files
from pumpwatch.segments.ipcscan import Scan, scan_segment, stream_of
from pumpwatch.segments.journal import journal_path, parse_journal_fast
from pumpwatch.segments.journal import now_us as wall_now_us
from pumpwatch.segments.paths import HourlyFile
from pumpwatch.segments.retention import disk_free_bytes, segment_files
from pumpwatch.segments.schema import BATCH_RECV_MAX, BATCH_RECV_MIN, BATCH_ROWS, BATCH_TIME_MAX
from pumpwatch.streams import STREAMS, split_stream
from pumpwatch.timeunits import US_PER_DAY, US_PER_HOUR, US_PER_S

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentCount:
    """What one segment file holds: `rows`, the newest trade ``time`` (None if empty), the rows
    whose ``recv_time`` lies in the window asked (`recent_rows`), and how many batches had to be
    decompressed. `readable` is False when the file could not be read at all."""

    rows: int
    last_trade_us: int | None
    recent_rows: int = 0
    readable: bool = True
    decoded_batches: int = 0
    damaged_batches: int = 0  # left out at recovery or sealing for a failed checksum


def _map(path: Path) -> pa.Buffer:
    with pa.memory_map(str(path)) as mm:
        return mm.read_buffer()


def _meta_int(meta: dict[str, str], key: str) -> int | None:
    try:
        return int(meta[key])
    except (KeyError, ValueError):
        return None


def count_segment(path: Path, *, sealed: bool, recv_window: tuple[int, int] | None = None) -> SegmentCount:
    """Rows, newest trade time and (with `recv_window` = ``(lo_us, hi_us)``) the rows received
    in ``[lo_us, hi_us]`` of the segment at `path`, from batch metadata where it suffices."""
    try:
        buf = _map(path)
    except OSError as exc:
        log.warning("status: cannot read segment %s: %s", path, exc)
        return SegmentCount(0, None, readable=False)
    scan = scan_segment(buf)
    if not scan.chunks:
        # an open file may be empty for a moment after it is created; anything else is damage
        if sealed or buf.size > 8:
            log.warning("status: cannot read segment %s: %s", path, scan.error)
            return SegmentCount(0, None, readable=False)
        return SegmentCount(0, None)
    damaged = len(recorded_damage(buf, scan)) if sealed else 0
    rows, last, recent = 0, None, 0
    undecided: dict[int, bool] = {}  # batch ordinal -> also needs rows and time (no metadata)
    for i, chunk in enumerate(scan.batches):
        n, t_max = _meta_int(chunk.meta, BATCH_ROWS), _meta_int(chunk.meta, BATCH_TIME_MAX)
        r_lo, r_hi = _meta_int(chunk.meta, BATCH_RECV_MIN), _meta_int(chunk.meta, BATCH_RECV_MAX)
        if n is None or t_max is None or r_lo is None or r_hi is None:
            undecided[i] = True
            continue
        rows += n
        last = t_max if last is None else max(last, t_max)
        if recv_window is None or n == 0 or r_hi < recv_window[0] or r_lo > recv_window[1]:
            continue
        if recv_window[0] <= r_lo and r_hi <= recv_window[1]:
            recent += n
        else:
            undecided[i] = False  # straddles the window: count its rows one by one
    if undecided:
        # these bytes are read anyway: check them first, never decode a damaged batch
        checks = check_batches(buf, scan, list(undecided))
        newest = len(scan.batches) - 1
        if not sealed and checks.reasons.get(newest) == UNSTAMPED:
            checks.status[newest] = IN_PROGRESS  # being written: its checksum follows
            del checks.reasons[newest]
        for i in [i for i in undecided if not checks.usable(i)]:
            del undecided[i]
            if checks.status.get(i) == DAMAGED:
                damaged += 1
                log.warning("status: %s: batch %d is damaged (%s)", path, i, checks.reasons.get(i))
    if undecided:
        try:
            for full, batch in _decode(buf, scan, sealed, undecided):
                times = batch.column(0).cast(pa.int64()).to_numpy()
                recvs = batch.column(1).cast(pa.int64()).to_numpy()
                if full:
                    rows += batch.num_rows
                    if batch.num_rows:
                        t_max = int(times.max())
                        last = t_max if last is None else max(last, t_max)
                if recv_window is not None:
                    recent += int(((recvs >= recv_window[0]) & (recvs <= recv_window[1])).sum())
        except (pa.ArrowException, OSError) as exc:
            log.warning("status: cannot decode a batch of %s: %s", path, exc)
    return SegmentCount(rows, last, recent, decoded_batches=len(undecided), damaged_batches=damaged)


def _decode(
    buf: pa.Buffer, scan: Scan, sealed: bool, picked: dict[int, bool]
) -> Iterable[tuple[bool, pa.RecordBatch]]:
    """(needs rows and time, batch) for the batch ordinals in `picked`, in file order."""
    order = sorted(picked)
    if sealed and scan.clean_eos:
        try:
            reader = ipc.open_file(buf)
        except pa.ArrowInvalid:
            pass  # no readable footer: fall back to the stream
        else:
            for i in order:
                yield picked[i], reader.get_batch(i)
            return
    keep = []
    ordinal = 0
    for chunk in scan.chunks:
        if chunk.kind != "record batch":
            keep.append(chunk)  # schema and dictionaries: later batches need them
            continue
        if ordinal in picked:
            keep.append(chunk)
        ordinal += 1
    for i, batch in zip(order, ipc.open_stream(stream_of(buf, keep)), strict=False):
        yield picked[i], batch


def _age_s(now_us: int, ts_us: int | None) -> float | None:
    return None if ts_us is None else round((now_us - ts_us) / US_PER_S, 3)


def recorded_us(files: Iterable[HourlyFile], now_us: int) -> int:
    """Time the files cover: per UTC hour holding any, from its earliest file's start to the
    hour's end (or now, for the current hour)."""
    first_in_hour: dict[int, int] = {}
    for f in files:
        hour = f.hour_end_us - US_PER_HOUR
        first_in_hour[hour] = min(first_in_hour.get(hour, f.start_us), f.start_us)
    return sum(max(0, min(hour + US_PER_HOUR, now_us) - start) for hour, start in first_in_hour.items())


def _per_day(size_bytes: int, span_us: int) -> float | None:
    return round(size_bytes * US_PER_DAY / span_us, 1) if span_us > 0 else None


# cumulative counters of the worker's ``stats`` journal event
STATS_COUNTERS: tuple[str, ...] = ("frames", "trades", "parse_errors", "reconnects", "duplicates")


def counter_increase(events: Iterable[dict[str, Any]], start_us: int, end_us: int) -> dict[str, int] | None:
    """How much each `STATS_COUNTERS` counter grew over ``[start_us, end_us]``, from the
    ``stats`` events of the journal `events` (file order); None if no ``stats`` event lies in
    the window.

    The counters are cumulative since the worker process started, and a ``start`` event marks a
    new process, whose counters begin at zero. Each ``stats`` event in the window adds its value
    minus the previous value of the same run: the last ``stats`` before the window, or zero
    after a ``start``. A run whose beginning is no longer in the journal (pruned) takes its
    first value as the base. A value smaller than the previous one means a reset that left no
    ``start`` line; it counts in full.
    """
    totals = dict.fromkeys(STATS_COUNTERS, 0)
    seen = False
    prev: dict[str, int] = {}  # last value of the current run (missing: unknown base)
    for event in events:
        kind, ts = event.get("event"), event["ts"]
        if ts > end_us:
            break
        if kind == "start":
            prev = dict.fromkeys(STATS_COUNTERS, 0)
        elif kind == "stats":
            inside = ts >= start_us
            seen = seen or inside
            for key in STATS_COUNTERS:
                value = event.get(key)
                if not isinstance(value, int) or isinstance(value, bool):
                    continue
                base = prev.get(key, value)
                if inside:
                    totals[key] += value - base if value >= base else value
                prev[key] = value
    return totals if seen else None


def _liveness(last_ts: int | None, fresh: bool, listening: bool, last_run_event: str | None) -> str | None:
    """``connected`` (a subscribed connection, and the journal heard from within the bound),
    ``not listening`` (the recorder is alive but no connection is subscribed), ``stopped``
    (the last run ended with ``stop``, or a crash a restart already accounted for, and nothing
    since), ``stale`` (the journal says recording but is silent past the bound: the recorder is
    most likely not running), None without a journal."""
    if last_ts is None:
        return None
    if fresh:
        return "connected" if listening else "not listening"
    return "stale" if last_run_event == "start" or (last_run_event is None and listening) else "stopped"


def journal_status(
    data_dir: Path, stream: str, now_us: int, heartbeat_s: float, has_segments: bool
) -> dict[str, Any]:
    """The journal figures of one stream's status entry (docs/operations.md lists them)."""
    try:
        all_events, skipped = parse_journal_fast(journal_path(data_dir, stream).read_bytes())
    except FileNotFoundError:
        all_events, skipped = [], 0
    events = state_events(all_events)
    replay = Replay()
    for event in events:
        replay.feed(event)
    listening = [c for c, state in replay.conns.items() if state.listens(None)]
    bound_us = liveness_bound_us(heartbeat_s)
    fresh = replay.last_ts is not None and now_us - replay.last_ts <= bound_us
    runs = [e["event"] for e in events if e["event"] in ("start", "stop", "crashed")]
    out: dict[str, Any] = {
        "connected_now": bool(listening) and fresh,
        "connections_now": len(listening) if fresh else 0,
        "liveness": _liveness(replay.last_ts, fresh, bool(listening), runs[-1] if runs else None),
        "last_sign_of_life_age_s": _age_s(now_us, replay.last_ts),
        "liveness_bound_s": bound_us / US_PER_S,
        "journal_events": len(all_events),
        "journal_unreadable_lines": skipped,
        "first_event_us": events[0]["ts"] if events else None,
        "last_event_us": replay.last_ts,
        "counters_24h": counter_increase(
            (e for e in all_events if e["event"] in ("stats", "start")), now_us - US_PER_DAY, now_us
        ),
    }
    if not events:
        # nothing to judge gaps by: the stream never ran here (or its journal is gone)
        out["recorded"] = "store only" if has_segments else "never"
        out.update(
            gaps_window_start_us=None,
            coverage_known_24h=False,
            gaps_24h=None,
            gap_s_24h=None,
            rows_dropped_24h=None,
        )
        out["repairs_24h"] = None
        out["not_recorded"] = None
        return out
    # the time before the stream was first recorded is no gap: it was not meant to listen yet
    window_start = min(max(now_us - US_PER_DAY, events[0]["ts"]), now_us)
    cov = coverage_from_events(events, window_start, now_us, heartbeat_s=heartbeat_s, now_us=now_us)
    out["recorded"] = "journal"
    out["gaps_window_start_us"] = window_start
    out["coverage_known_24h"] = cov.known
    # rows a writer dropped on a full disk (`dropped` events) were not recorded either
    dropped = dropped_spans(all_events, window_start, now_us, clock="recv")
    gaps = merge_spans([*cov.gaps, *((a, b) for a, b, _ in dropped)])
    out["gaps_24h"] = [list(g) for g in gaps]
    out["gap_s_24h"] = round(sum(b - a for a, b in gaps) / US_PER_S, 3)
    out["rows_dropped_24h"] = sum(n for _, _, n in dropped)
    # trade holes while listening (id gaps) and the REST repairs of any gap (issue 10)
    tally = repair_tally(all_events, now_us - US_PER_DAY, now_us)
    out["repairs_24h"] = {
        "id_gaps": tally.id_gaps,
        "repaired": tally.repaired,
        "rest_trades": tally.rest_trades,
        "unrepaired": tally.unrepaired,
    }
    out["not_recorded"] = not_recorded(all_events)
    return out


def not_recorded(events: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The symbols the running worker last reported as wanted but not receiving, and why (its
    last ``not_recorded`` event since its ``start``): ``{"symbols": {symbol: reason},
    "by_reason": {kind: count}, "as_of_us"}``; None when the current run reported nothing (every
    symbol recorded since its start, or a journal older than issue 12)."""
    last: dict[str, Any] | None = None
    for event in events:
        kind = event.get("event")
        if kind == "start":
            last = None
        elif kind == "not_recorded":
            last = event
    if last is None or not isinstance(last.get("symbols"), dict):
        return None
    symbols = {str(k): str(v) for k, v in last["symbols"].items()}
    by_reason: dict[str, int] = {}
    for reason in symbols.values():
        kind = reason.split(":", 1)[0]
        by_reason[kind] = by_reason.get(kind, 0) + 1
    return {"symbols": symbols, "by_reason": by_reason, "as_of_us": last["ts"]}


def _stream_status(
    data_dir: Path,
    stream: str,
    segs: list[HourlyFile],
    frames: list[HourlyFile],
    now_us: int,
    heartbeat_s: float,
) -> dict[str, Any]:
    exchange, market = split_stream(stream)
    window = (now_us - US_PER_HOUR, now_us)
    trades, recent, unreadable, decoded, last_trade = 0, 0, 0, 0, None
    damaged_batches, damaged_files = 0, 0
    for f in segs:
        # a file holds the rows received from its HHMMSS to its hour's end: only those that
        # meet the last hour can hold a trade received in it
        meets = f.start_us <= window[1] and f.hour_end_us > window[0]
        counted = count_segment(f.path, sealed=f.sealed, recv_window=window if meets else None)
        trades += counted.rows
        recent += counted.recent_rows
        unreadable += 0 if counted.readable else 1
        decoded += counted.decoded_batches
        damaged_batches += counted.damaged_batches
        damaged_files += 1 if counted.damaged_batches else 0
        if counted.last_trade_us is not None and (last_trade is None or counted.last_trade_us > last_trade):
            last_trade = counted.last_trade_us
    last_write = max((f.mtime_us for f in segs), default=None)
    seg_bytes = sum(f.size_bytes for f in segs)
    frames_bytes = sum(f.size_bytes for f in frames)
    seg_span, frames_span = recorded_us(segs, now_us), recorded_us(frames, now_us)
    return {
        "stream": stream,
        "exchange": exchange,
        "market": market,
        "hours_on_disk": len({f.hour_end_us for f in segs}),
        "first_hour_us": min((f.start_us - f.start_us % US_PER_HOUR for f in segs), default=None),
        "recorded_s": seg_span / US_PER_S,
        "files_sealed": sum(1 for f in segs if f.sealed),
        "files_open": sum(1 for f in segs if not f.sealed),
        "files_unreadable": unreadable,
        "files_damaged": damaged_files,
        "batches_damaged": damaged_batches,
        "batches_decoded": decoded,
        "trades": trades,
        "trades_last_hour": recent,
        "bytes": seg_bytes,
        "bytes_per_day": _per_day(seg_bytes, seg_span),
        "last_write_us": last_write,
        "last_write_age_s": _age_s(now_us, last_write),
        "last_trade_us": last_trade,
        "last_trade_age_s": _age_s(now_us, last_trade),
        "frames_files": len(frames),
        "frames_bytes": frames_bytes,
        "frames_recorded_s": frames_span / US_PER_S,
        "frames_bytes_per_day": _per_day(frames_bytes, frames_span),
        **journal_status(data_dir, stream, now_us, heartbeat_s, bool(segs)),
    }


def _dir_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def _projection(
    streams: dict[str, dict[str, Any]],
    segs: list[HourlyFile],
    frames: list[HourlyFile],
    now_us: int,
    retention_s: float | None,
    frames_retention_s: float | None,
    free_bytes: int,
    floor_bytes: int | None,
) -> dict[str, Any]:
    """Days on disk against retention, and the size the store grows to at full retention:
    per stream, bytes per day of recorded time so far times the retention, summed."""

    def projected(bytes_key: str, span_key: str, keep_s: float | None) -> int | None:
        if keep_s is None:
            return None
        return round(sum(s[bytes_key] * keep_s / s[span_key] for s in streams.values() if s[span_key] > 0))

    seg_proj = projected("bytes", "recorded_s", retention_s)
    frames_proj = projected("frames_bytes", "frames_recorded_s", frames_retention_s)
    total = None if seg_proj is None or frames_proj is None else seg_proj + frames_proj
    on_disk = sum(f.size_bytes for f in segs) + sum(f.size_bytes for f in frames)
    free_at_full = None if total is None else free_bytes - max(0, total - on_disk)
    oldest_seg = min((f.start_us for f in segs), default=None)
    oldest_frames = min((f.start_us for f in frames), default=None)
    return {
        "retention_s": retention_s,
        "frames_retention_s": frames_retention_s,
        "segments_span_s": None if oldest_seg is None else max(0, now_us - oldest_seg) / US_PER_S,
        "frames_span_s": None if oldest_frames is None else max(0, now_us - oldest_frames) / US_PER_S,
        "segments_bytes_per_day": round(sum(s["bytes_per_day"] or 0.0 for s in streams.values()), 1),
        "frames_bytes_per_day": round(sum(s["frames_bytes_per_day"] or 0.0 for s in streams.values()), 1),
        "segments_projected_bytes": seg_proj,
        "frames_projected_bytes": frames_proj,
        "projected_bytes": total,
        "free_at_full_retention_bytes": free_at_full,
        "fits_above_floor": None
        if free_at_full is None or floor_bytes is None
        else free_at_full >= floor_bytes,
    }


def store_status(
    data_dir: str | os.PathLike[str],
    *,
    now_us: int | None = None,
    retention_s: float | None = None,
    frames_retention_s: float | None = None,
    min_free_disk_mb: float | None = None,
    heartbeat_s: float = 10.0,
    free_bytes: Callable[[Path], int] | None = None,
    archive_retention_s: float | None = None,
    remote: Any = None,
) -> dict[str, Any]:
    """Per-stream store figures, disk use and retention projection, as one JSON-ready dict.

    ``{"data_dir", "now_us", "retention_s", "frames_retention_s", "min_free_disk_mb", "trades",
    "trades_last_hour", "disk": {...}, "retention": {...}, "streams": {stream: {...}},
    "archive": {...}, "upload": {...} | None}``. docs/operations.md lists every field
    (``archive`` and ``upload``: docs/store.md and docs/remote.md). A missing data dir is a
    `StoreError`. `remote` is a `remote.RemoteSettings` (None or disabled: no ``upload``).
    """
    root = Path(data_dir)
    if not root.is_dir():
        if root.exists():
            raise StoreError(f"data dir {root} is not a directory")
        raise StoreError(f"data dir {root} does not exist (nothing recorded yet?)")
    now = wall_now_us() if now_us is None else now_us
    segs = segment_files(root)
    frames = list_frame_files(root)
    streams = {
        stream: _stream_status(
            root,
            stream,
            [f for f in segs if f.stream == stream],
            [f for f in frames if f.stream == stream],
            now,
            heartbeat_s,
        )
        for stream in STREAMS
    }
    free = (free_bytes if free_bytes is not None else disk_free_bytes)(root)
    floor = None if min_free_disk_mb is None else int(min_free_disk_mb * 2**20)
    return {
        "data_dir": str(root),
        "now_us": now,
        "retention_s": retention_s,
        "frames_retention_s": frames_retention_s,
        "min_free_disk_mb": min_free_disk_mb,
        "trades": sum(s["trades"] for s in streams.values()),
        "trades_last_hour": sum(s["trades_last_hour"] for s in streams.values()),
        "disk": {
            "used_bytes": _dir_bytes(root),
            "free_bytes": free,
            "segments_bytes": sum(f.size_bytes for f in segs),
            "frames_bytes": sum(f.size_bytes for f in frames),
            "floor_bytes": floor,
            "below_floor": None if floor is None else free < floor,
        },
        "retention": _projection(streams, segs, frames, now, retention_s, frames_retention_s, free, floor),
        "streams": streams,
        "archive": archive_figures(root, now, archive_retention_s),
        "upload": upload_figures(root, now, remote),
    }


def archive_figures(root: Path, now_us: int, retention_s: float | None) -> dict[str, Any]:
    """The Parquet archive: its size, what is pending and since when (`archive.archive_backlog`)."""
    from pumpwatch.segments.archive import ARCHIVE_DIR, archive_backlog

    backlog = archive_backlog(root, now_us=now_us, retention_s=retention_s)
    return {
        "bytes": _dir_bytes(root / ARCHIVE_DIR) if (root / ARCHIVE_DIR).is_dir() else 0,
        "pending_hours": backlog.pending_hours,
        "lag_s": backlog.lag_s(now_us),
        "oldest_pending_seal_us": backlog.oldest_seal_us,
        "newest_pending_hour_us": backlog.newest_pending_hour_us,
        "newest_archived_hour_us": backlog.newest_archived_hour_us,
        "retention_s": retention_s,
    }


def upload_figures(root: Path, now_us: int, remote: Any) -> dict[str, Any] | None:
    """`upload.upload_status` as a dict, or None without a remote store."""
    if remote is None or not remote.enabled:
        return None
    from pumpwatch.segments.upload import upload_status

    return dict(upload_status(root, remote, now_us).__dict__)
