"""What the store holds, per stream: `store_status` backs ``pumpwatch status``.

Row counts of sealed segments come from the IPC footer and batch headers
(``RecordBatchFileReader.count_rows`` decompresses nothing); an open ``_`` segment is read as
an IPC stream after its 8-byte magic, up to its last complete batch. The newest trade time
costs one decompressed batch per stream.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pumpwatch.segments.coverage import TAIL_HEARTBEATS, Replay, coverage_from_events
from pumpwatch.segments.frames import HourlyFile, list_frame_files
from pumpwatch.segments.journal import now_us as wall_now_us
from pumpwatch.segments.journal import scan_events
from pumpwatch.segments.retention import disk_free_bytes, segment_files

from pumpwatch.errors import StoreError
from pumpwatch.streams import STREAMS, split_stream

log = logging.getLogger(__name__)

DAY_US = 86_400_000_000
_FILE_MAGIC_LEN = 8  # "ARROW1" + 2 bytes of padding; an IPC stream follows


@dataclass(frozen=True)
class SegmentCount:
    """Rows of one segment file and the newest trade ``time`` in its last batch (None if
    empty); `readable` is False when the file could not be read at all."""

    rows: int
    last_trade_us: int | None
    readable: bool = True


def _batch_max_time_us(batch: Any) -> int | None:
    import pyarrow as pa
    import pyarrow.compute as pc

    if batch.num_rows == 0:
        return None
    value = pc.max(batch.column("time").cast(pa.int64())).as_py()
    return int(value) if value is not None else None


def count_segment(path: Path, *, sealed: bool, want_last: bool = True) -> SegmentCount:
    """Rows of the segment at `path` (and the newest trade time of its last batch)."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    try:
        if sealed:
            with pa.OSFile(str(path), "rb") as src:
                reader = ipc.open_file(src)
                rows = reader.count_rows()
                last = None
                if want_last and reader.num_record_batches:
                    last = _batch_max_time_us(reader.get_batch(reader.num_record_batches - 1))
                return SegmentCount(rows, last)
        rows, last_batch = 0, None
        with open(path, "rb") as fh:
            fh.seek(_FILE_MAGIC_LEN)
            try:
                stream = ipc.open_stream(fh)
                while True:
                    batch = stream.read_next_batch()
                    rows += batch.num_rows
                    last_batch = batch if batch.num_rows else last_batch
            except StopIteration:
                pass
            except (pa.ArrowInvalid, OSError):
                pass  # the batch being written (or a torn one): everything before it counts
        last = _batch_max_time_us(last_batch) if want_last and last_batch is not None else None
        return SegmentCount(rows, last)
    except (pa.ArrowInvalid, OSError) as exc:
        log.warning("status: cannot read segment %s: %s", path, exc)
        return SegmentCount(0, None, readable=False)


def _dir_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def _age_s(now_us: int, ts_us: int | None) -> float | None:
    return None if ts_us is None else round((now_us - ts_us) / 1_000_000, 3)


def _journal_status(data_dir: Path, stream: str, now_us: int, heartbeat_s: float) -> dict[str, Any]:
    events, skipped = scan_events(data_dir, stream)
    replay = Replay()
    for event in events:
        replay.feed(event)
    listening = [c for c, state in replay.conns.items() if state.listens(None)]
    fresh = replay.last_ts is not None and now_us - replay.last_ts <= TAIL_HEARTBEATS * heartbeat_s * 1e6
    cov = coverage_from_events(events, now_us - DAY_US, now_us, heartbeat_s=heartbeat_s, now_us=now_us)
    return {
        "connected_now": bool(listening) and fresh,
        "connections_now": len(listening) if fresh else 0,
        "last_event_us": replay.last_ts,
        "journal_unreadable_lines": skipped,
        "coverage_known_24h": cov.known,
        "gaps_24h": [list(g) for g in cov.gaps],
        "gap_s_24h": round(sum(b - a for a, b in cov.gaps) / 1_000_000, 3),
    }


def _stream_status(
    data_dir: Path,
    stream: str,
    segs: list[HourlyFile],
    frames: list[HourlyFile],
    now_us: int,
    heartbeat_s: float,
) -> dict[str, Any]:
    exchange, market = split_stream(stream)
    newest = max(segs, key=lambda f: (f.start_us, f.path.name)) if segs else None
    trades, unreadable, last_trade = 0, 0, None
    for f in segs:
        counted = count_segment(f.path, sealed=f.sealed, want_last=f is newest)
        trades += counted.rows
        unreadable += 0 if counted.readable else 1
        if counted.last_trade_us is not None:
            last_trade = counted.last_trade_us
    if last_trade is None and newest is not None:
        # the newest file may hold no trade yet (just opened): look back through the others
        for f in sorted(segs, key=lambda f: f.start_us, reverse=True)[1:]:
            last_trade = count_segment(f.path, sealed=f.sealed).last_trade_us
            if last_trade is not None:
                break
    last_write = max((f.mtime_us for f in segs), default=None)
    return {
        "stream": stream,
        "exchange": exchange,
        "market": market,
        "hours_on_disk": len({f.start_us // 3_600_000_000 for f in segs}),
        "first_hour_us": min((f.start_us for f in segs), default=None),
        "files_sealed": sum(1 for f in segs if f.sealed),
        "files_open": sum(1 for f in segs if not f.sealed),
        "files_unreadable": unreadable,
        "trades": trades,
        "bytes": sum(f.size_bytes for f in segs),
        "last_write_us": last_write,
        "last_write_age_s": _age_s(now_us, last_write),
        "last_trade_us": last_trade,
        "last_trade_age_s": _age_s(now_us, last_trade),
        "frames_files": len(frames),
        "frames_bytes": sum(f.size_bytes for f in frames),
        **_journal_status(data_dir, stream, now_us, heartbeat_s),
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
) -> dict[str, Any]:
    """Per-stream store figures and disk use, as one JSON-ready dict.

    ``{"data_dir", "now_us", "retention_s", "frames_retention_s", "min_free_disk_mb",
    "disk": {"used_bytes", "free_bytes", "segments_bytes", "frames_bytes"}, "trades",
    "streams": {stream: {...}}}``; each stream entry has ``hours_on_disk``, ``files_sealed``,
    ``files_open``, ``trades``, ``bytes``, ``last_write_us``/``_age_s``,
    ``last_trade_us``/``_age_s``, ``gaps_24h`` (µs pairs), ``gap_s_24h``, ``connected_now``
    (a subscribed connection and a journal event within 3 heartbeats) and frame figures.
    A missing data dir is a `StoreError`.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise StoreError(f"data dir {root} does not exist (nothing recorded yet?)")
    now = wall_now_us() if now_us is None else now_us
    segs = segment_files(root)
    frames = list_frame_files(root)
    streams = {}
    for stream in STREAMS:
        streams[stream] = _stream_status(
            root,
            stream,
            [f for f in segs if f.stream == stream],
            [f for f in frames if f.stream == stream],
            now,
            heartbeat_s,
        )
    measure = free_bytes if free_bytes is not None else disk_free_bytes
    return {
        "data_dir": str(root),
        "now_us": now,
        "retention_s": retention_s,
        "frames_retention_s": frames_retention_s,
        "min_free_disk_mb": min_free_disk_mb,
        "trades": sum(s["trades"] for s in streams.values()),
        "disk": {
            "used_bytes": _dir_bytes(root),
            "free_bytes": measure(root),
            "segments_bytes": sum(f.size_bytes for f in segs),
            "frames_bytes": sum(f.size_bytes for f in frames),
        },
        "streams": streams,
    }
