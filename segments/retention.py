"""Retention and the free-disk floor: segments, frame files and journal lines (DESIGN §5, §6).

`prune` runs in this order, and never raises for a file it cannot delete (it logs and goes on):

1. Sealed segments whose UTC hour ended more than ``retention_s`` ago, oldest first.
2. Frame files whose hour ended more than ``frames_retention_s`` ago.
3. While free disk is under ``min_free_disk_mb``: evict frame files, then sealed segments,
   oldest first (frames go first: they are the bulkier copy and have the shorter retention).
   Each eviction is logged as a warning; if nothing is left to evict the report says so.
4. Empty ``date=`` directories of both trees are removed.
5. Journal lines older than ``retention_s`` are dropped, except the lines that still describe a
   connection open at the cutoff (without them coverage would forget it was listening).

With a remote store (``remote``, issue 14) nothing leaves the disk before it is safely in the
store: a sealed segment is deleted for retention only once it is uploaded (its archive hour is,
when segments are not copied themselves), a journal line only once its hour is, so local
retention applies at the later of "uploaded" and "older than the retention" and a network outage
costs nothing. Under the free-disk floor the uploaded segments go first (after the frame
files), the un-uploaded ones only when nothing else is left (the floor keeps `record` alive).
Archive files are pruned by `archive.archive_pending` under the same rule.

Never touched: an open ``_`` segment, the newest file of each stream in either tree (the
one being written), and a file meeting a protected span (the window of a pending extraction).

While `record` runs, ``diskwatch.py`` checks the floor every second and on every flush and
calls `evict_to_floor` (step 3 alone) at once, so the disk does not fill between two prunes.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pumpwatch.errors import StoreError
from pumpwatch.segments.coverage import OUT_OF_BAND, Replay
from pumpwatch.segments.frames import FRAMES_DIR, list_frame_files
from pumpwatch.segments.journal import JOURNAL_DIR, encode_event, rewrite_journal, scan_events
from pumpwatch.segments.journal import now_us as wall_now_us
from pumpwatch.segments.paths import HourlyFile, list_segments
from pumpwatch.streams import STREAMS
from pumpwatch.timeunits import US_PER_S

if TYPE_CHECKING:
    from pumpwatch.segments.remote import RemoteSettings
    from pumpwatch.segments.upload import UploadedIndex

log = logging.getLogger(__name__)

SEGMENTS_DIR = "segments"
# `reader.DEFAULT_SLACK_S`: the extractor reads a file whose span widened by this meets its
# window (not imported: reader loads pyarrow, which the lean supervisor keeps out)
READ_SLACK_S = 300.0


def disk_free_bytes(path: str | os.PathLike[str]) -> int:
    """Free bytes on the filesystem holding `path` (tests monkeypatch or pass their own)."""
    return shutil.disk_usage(path).free


def segment_files(data_dir: str | os.PathLike[str], streams: Iterable[str] | None = None) -> list[HourlyFile]:
    """Segment files of the store, sorted by (stream, start), from the writer's own listing."""
    files = list_segments(Path(data_dir), list(streams) if streams is not None else None)
    return sorted(files, key=lambda f: (f.stream, f.start_us, f.path.name))


@dataclass(frozen=True)
class DeletedFile:
    """One file `prune` deleted (or would delete, in a dry run)."""

    path: Path
    kind: str  # "segment" | "frames"
    stream: str
    size_bytes: int
    reason: str  # "retention" | "disk"


@dataclass
class PruneReport:
    """What `prune` did (or, with ``dry_run``, would do)."""

    dry_run: bool
    now_us: int
    deleted: list[DeletedFile] = field(default_factory=list)
    journal_lines_dropped: dict[str, int] = field(default_factory=dict)  # per stream
    free_bytes_before: int = 0
    free_bytes_after: int = 0  # measured; estimated in a dry run
    floor_bytes: int = 0
    below_floor: bool = False  # still under the floor with nothing left to evict
    dirs_removed: int = 0
    held_for_upload: int = 0  # segments past retention kept because they are not uploaded yet

    def count(self, kind: str | None = None, reason: str | None = None) -> int:
        """Files deleted, optionally of one kind and/or for one reason."""
        return sum(1 for d in self.deleted if kind in (None, d.kind) and reason in (None, d.reason))

    def bytes(self, kind: str | None = None, reason: str | None = None) -> int:
        """Bytes of the files deleted, optionally of one kind and/or for one reason."""
        return sum(
            d.size_bytes for d in self.deleted if kind in (None, d.kind) and reason in (None, d.reason)
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: per kind files and bytes, plus journal lines and disk figures."""
        kinds = {
            kind: {
                "files": self.count(kind),
                "bytes": self.bytes(kind),
                "evicted_files": self.count(kind, "disk"),
            }
            for kind in ("segment", "frames")
        }
        return {
            "dry_run": self.dry_run,
            "now_us": self.now_us,
            "deleted": kinds,
            "journal_lines_dropped": dict(self.journal_lines_dropped),
            "free_bytes_before": self.free_bytes_before,
            "free_bytes_after": self.free_bytes_after,
            "floor_bytes": self.floor_bytes,
            "below_floor": self.below_floor,
            "dirs_removed": self.dirs_removed,
            "held_for_upload": self.held_for_upload,
            "files": [
                {
                    "path": str(d.path),
                    "kind": d.kind,
                    "stream": d.stream,
                    "bytes": d.size_bytes,
                    "reason": d.reason,
                }
                for d in self.deleted
            ],
        }


def protected_files(files: list[HourlyFile]) -> set[Path]:
    """Open files and the newest file of each stream: never deleted."""
    newest: dict[str, HourlyFile] = {}
    for f in files:
        cur = newest.get(f.stream)
        if cur is None or (f.start_us, f.path.name) > (cur.start_us, cur.path.name):
            newest[f.stream] = f
    return {f.path for f in newest.values()} | {f.path for f in files if not f.sealed}


def in_windows(files: Iterable[HourlyFile], spans: Iterable[tuple[int, int]]) -> set[Path]:
    """Files whose receive-time span, widened as the extractor widens it, meets one of `spans`."""
    slack = int(READ_SLACK_S * US_PER_S)
    wide = [(a - slack, b + slack) for a, b in spans]
    if not wide:
        return set()
    return {f.path for f in files if any(f.start_us <= b and a < f.hour_end_us for a, b in wide)}


def evict_to_floor(
    report: PruneReport,
    pool: list[tuple[HourlyFile, str]],
    *,
    keep: set[Path],
    free_now: Callable[[], int],
    delete: Callable[[HourlyFile, str, str], None],
    dry_run: bool = False,
    log_below: bool = True,
    uploaded: Callable[[Path], bool] | None = None,
) -> None:
    """While free disk (`free_now()`) is under ``report.floor_bytes``, `delete` the oldest files of
    `pool` ((file, kind) pairs): every frame file first, then sealed segments (with `uploaded`,
    those in the remote store before the others), never one in `keep`. Sets
    ``report.below_floor`` when nothing is left to evict."""
    free = free_now()
    if free >= report.floor_bytes:
        return
    order = sorted((f for f in pool if f[1] == "frames"), key=lambda fk: fk[0].start_us)
    sealed = [f for f in pool if f[1] == "segment" and f[0].sealed]
    if uploaded is not None:
        first = {f[0].path for f in sealed if uploaded(f[0].path)}
        sealed.sort(key=lambda fk: (fk[0].path not in first, fk[0].start_us))
    else:
        sealed.sort(key=lambda fk: fk[0].start_us)
    order += sealed
    for f, kind in order:
        if free >= report.floor_bytes:
            break
        if f.path in keep:
            continue
        keep.add(f.path)
        delete(f, kind, "disk")
        log.warning(
            "prune: free disk %d MB below the floor of %d MB: %s %s %s (%d bytes)",
            free // 2**20,
            report.floor_bytes // 2**20,
            "would evict" if dry_run else "evicted",
            kind,
            f.path,
            f.size_bytes,
        )
        free = free_now()
    if free < report.floor_bytes:
        report.below_floor = True
        if log_below:
            log.error(
                "prune: free disk %d MB still below the floor of %d MB and nothing left to evict",
                free // 2**20,
                report.floor_bytes // 2**20,
            )


def uploaded_index(data_dir: Path, remote: RemoteSettings | None) -> UploadedIndex | None:
    """The manifest's answers for retention, or None without a remote store."""
    if remote is None or not remote.enabled:
        return None
    from pumpwatch.segments.upload import UploadedIndex

    return UploadedIndex(data_dir, remote)


def remove_file(path: Path, dry_run: bool) -> bool:
    if dry_run:
        return True
    try:
        path.unlink()
    except FileNotFoundError:
        return False  # gone already (another prune): nothing freed by us
    except OSError as exc:
        log.warning("prune: cannot delete %s: %s", path, exc)
        return False
    return True


def _prune_empty_date_dirs(root: Path) -> int:
    removed = 0
    for date_dir in root.glob("exchange=*/market=*/date=*"):
        try:
            date_dir.rmdir()  # only succeeds when empty
        except OSError:
            continue
        removed += 1
    return removed


def prune(
    data_dir: str | os.PathLike[str],
    *,
    retention_s: float,
    min_free_disk_mb: float,
    frames_retention_s: float,
    now_us: int | None = None,
    dry_run: bool = False,
    free_bytes: Callable[[Path], int] | None = None,
    protected_spans: Iterable[tuple[int, int]] = (),
    remote: RemoteSettings | None = None,
) -> PruneReport:
    """Apply retention and the free-disk floor to the store under `data_dir` (see module doc).
    With `remote` enabled, segments and journal lines past retention stay until uploaded.
    No file whose span meets one of `protected_spans` (µs, e.g. the windows of pending
    extractions, see `windows_protected`) is deleted, for retention or for the floor.
    A missing `data_dir` is a `StoreError`; a file that cannot be deleted is logged and skipped.

    `free_bytes(data_dir)` measures free disk (default `disk_free_bytes`); in a dry run the
    free space after is estimated as before + bytes that would be deleted.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise StoreError(f"data dir {root} does not exist (nothing recorded yet?)")
    now = wall_now_us() if now_us is None else now_us
    measure = free_bytes if free_bytes is not None else disk_free_bytes
    report = PruneReport(dry_run=dry_run, now_us=now, floor_bytes=int(min_free_disk_mb * 1024 * 1024))
    report.free_bytes_before = measure(root)
    segs = segment_files(root)
    frames = list_frame_files(root)
    keep = protected_files(segs) | protected_files(frames) | in_windows(segs + frames, protected_spans)
    gone: set[Path] = set()
    index = uploaded_index(root, remote)

    def delete(f: HourlyFile, kind: str, reason: str) -> None:
        if remove_file(f.path, dry_run):
            report.deleted.append(DeletedFile(f.path, kind, f.stream, f.size_bytes, reason))
        gone.add(f.path)

    seg_cutoff = now - int(retention_s * US_PER_S)
    held = 0
    for f in sorted(segs, key=lambda f: f.start_us):
        if f.sealed and f.path not in keep and f.hour_end_us <= seg_cutoff:
            if index is not None and not index.file(f.path):
                held += 1  # past retention but not in the remote store yet: kept until it is
                continue
            delete(f, "segment", "retention")
    if held:
        report.held_for_upload = held
        log.info("prune: kept %d segment(s) past retention that are not uploaded yet", held)
    frames_cutoff = now - int(frames_retention_s * US_PER_S)
    for f in sorted(frames, key=lambda f: f.start_us):
        if f.path not in keep and f.hour_end_us <= frames_cutoff:
            delete(f, "frames", "retention")
    if report.deleted:
        log.info(
            "prune: %s %d segment(s) (%d bytes) and %d frame file(s) (%d bytes) past retention",
            "would delete" if dry_run else "deleted",
            report.count("segment"),
            report.bytes("segment"),
            report.count("frames"),
            report.bytes("frames"),
        )

    def free_now() -> int:
        # a dry run deletes nothing, so the disk cannot tell: estimate from the sizes
        return report.free_bytes_before + report.bytes() if dry_run else measure(root)

    evict_to_floor(
        report,
        [(f, "frames") for f in frames] + [(f, "segment") for f in segs],
        keep=keep | gone,
        free_now=free_now,
        delete=delete,
        dry_run=dry_run,
        uploaded=None if index is None else index.file,
    )
    if not dry_run:
        report.dirs_removed = _prune_empty_date_dirs(root / SEGMENTS_DIR) + _prune_empty_date_dirs(
            root / FRAMES_DIR
        )
    for stream in STREAMS:
        cutoff = seg_cutoff if index is None else index.journal_cutoff(stream, seg_cutoff)
        dropped = prune_journal(root, stream, cutoff_us=cutoff, dry_run=dry_run)
        if dropped:
            report.journal_lines_dropped[stream] = dropped
    report.free_bytes_after = free_now()
    return report


def journal_lines_to_keep(events: list[dict[str, Any]], cutoff_us: int) -> list[dict[str, Any]]:
    """Events to keep when dropping those older than `cutoff_us`: every event at or after it,
    plus the older events that still describe a connection open at the cutoff (its
    ``connected``/``subscribed``/``unsubscribed`` lines since it last connected) and the last
    older event. Coverage of any window from the cutoff on is unchanged by the drop."""
    old = [e for e in events if e["ts"] < cutoff_us]
    if not old:
        return list(events)
    replay = Replay()
    began: dict[str, int] = {}  # conn -> index in `old` where its current life began
    for i, event in enumerate(old):
        replay.feed(event)
        kind, conn = event.get("event"), event.get("conn")
        if kind in ("start", "stop"):
            began.clear()  # connection ids may be reused by the next process
        elif isinstance(conn, str) and (kind == "connected" or conn not in began):
            began[conn] = i
    # the last older event bounds a crash that follows and keeps the journal's start known; an
    # event about spans of trades (id_gap, repaired…) is no sign of life, so it cannot do that
    in_band = [i for i, e in enumerate(old) if e.get("event") not in OUT_OF_BAND]
    needed = {in_band[-1] if in_band else len(old) - 1}
    if replay.conns:
        for i, event in enumerate(old):
            conn = event.get("conn")
            if (
                isinstance(conn, str)
                and conn in replay.conns
                and i >= began[conn]
                and event.get("event") in ("connected", "subscribed", "unsubscribed")
            ):
                needed.add(i)
    kept_old = [e for i, e in enumerate(old) if i in needed]
    return kept_old + [e for e in events if e["ts"] >= cutoff_us]


def prune_journal(
    data_dir: str | os.PathLike[str], stream: str, *, cutoff_us: int, dry_run: bool = False
) -> int:
    """Drop the journal lines of `stream` older than `cutoff_us` (see `journal_lines_to_keep`)
    and any garbage lines; returns how many lines are (or would be) dropped."""
    path = Path(data_dir) / JOURNAL_DIR / f"{stream}.ndjson"
    if not path.exists():
        return 0
    events, skipped = scan_events(data_dir, stream)
    kept = journal_lines_to_keep(events, cutoff_us)
    if len(kept) == len(events) and not skipped:  # nothing to drop: leave the file alone
        return 0
    if dry_run:
        return len(events) + skipped - len(kept)
    before, after = rewrite_journal(
        data_dir, stream, lambda evs: [encode_event(e) for e in journal_lines_to_keep(evs, cutoff_us)]
    )
    if before != after:
        log.info("prune: journal %s: dropped %d line(s) older than retention", stream, before - after)
    return before - after
