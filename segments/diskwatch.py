"""The free-disk floor, watched while recording (``storage.min_free_disk_mb``).

`prune` (``retention.py``) runs at start and every 10 minutes; at tens of thousands of trades
per second that is far too seldom to keep a small disk from filling. A `DiskWatch` measures
free space with one ``statvfs`` (about a microsecond) after every writer flush (`check`) and
every `interval_s` on its own thread, and when free space is under the floor it evicts at
once, with the same rule as `prune` (``retention.evict_to_floor``): frame files first, then
the files whose trades are kept elsewhere (uploaded to the remote store, or a segment held by
its local archive file), then the last copies (un-archived segments, archive files whose
segments are gone), oldest first; never an open file, never the newest file of a stream, never
a file meeting the window of a pending extraction (`protected_spans`).

Several processes may watch one data directory (one recorder worker per exchange): an
eviction takes an exclusive, non-blocking ``flock`` on ``<data_dir>/run/evict.lock``, so only
one of them deletes at a time and the others find the floor restored when they look again.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from pumpwatch.segments.frames import list_frame_files
from pumpwatch.segments.journal import now_us as wall_now_us
from pumpwatch.segments.paths import HourlyFile
from pumpwatch.segments.retention import (
    DeletedFile,
    PruneReport,
    archive_files,
    evict_to_floor,
    floor_pool,
    in_windows,
    protected_files,
    remove_archive_file,
    remove_file,
    segment_files,
    uploaded_index,
)

if TYPE_CHECKING:
    from pumpwatch.segments.remote import RemoteSettings
    from pumpwatch.segments.upload import UploadedIndex

log = logging.getLogger(__name__)

Spans = Iterable[tuple[int, int]]


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes an unprivileged writer may still use on the file system of `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class DiskWatch:
    """Keeps free disk under `data_dir` above `min_free_bytes` while writers write."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        min_free_bytes: int,
        protected_spans: Callable[[], Spans] | None = None,
        interval_s: float = 1.0,
        measure: Callable[[Path], int] = free_bytes,
        remote: RemoteSettings | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.remote = remote  # uploaded files go before the last copies
        self.min_free_bytes = min_free_bytes
        self.interval_s = interval_s
        self._spans = protected_spans
        self._measure = measure
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._below = False  # logged once per spell under the floor with nothing to evict
        self.checks = 0
        self.evictions = 0  # eviction passes that deleted something
        self.files_evicted = 0
        self.bytes_evicted = 0

    def check(self) -> bool:
        """Cheap (one ``statvfs``): whether free disk is under the floor; wakes the eviction
        thread if so. Writers call it after every flush."""
        self.checks += 1
        if self.min_free_bytes <= 0:
            return False
        try:
            low = self._measure(self.data_dir) < self.min_free_bytes
        except OSError:
            return False
        if low:
            self._wake.set()
        return low

    def start(self) -> DiskWatch:
        """Start the watching thread (idempotent); returns self."""
        if self._thread is None and self.min_free_bytes > 0:
            self._thread = threading.Thread(target=self._run, name="diskwatch", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread (an eviction under way finishes first)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if self.check():
                    self.evict()
            except Exception:  # the watch must outlive any one failure; the next pass retries
                log.exception("disk watch: eviction failed")

    def evict(self) -> PruneReport | None:
        """Evict oldest files until free disk is back over the floor; None when another process
        is evicting right now."""
        run = self.data_dir / "run"
        run.mkdir(parents=True, exist_ok=True)
        fd = os.open(run / "evict.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            return self._evict_locked()
        finally:
            os.close(fd)

    def _evict_locked(self) -> PruneReport:
        report = PruneReport(dry_run=False, now_us=wall_now_us(), floor_bytes=self.min_free_bytes)
        report.free_bytes_before = self._measure(self.data_dir)
        segs = segment_files(self.data_dir)
        frames = list_frame_files(self.data_dir)
        spans = list(self._spans()) if self._spans is not None else []
        keep = protected_files(segs) | protected_files(frames) | in_windows(segs + frames, spans)

        index = self._uploaded_index()

        def delete(f: HourlyFile, kind: str, reason: str) -> bool:
            if kind == "archive":
                removed = remove_archive_file(self.data_dir, f.path, False)
            else:
                removed = remove_file(f.path, False)
            if removed:
                report.deleted.append(DeletedFile(f.path, kind, f.stream, f.size_bytes, reason))
            return removed

        evict_to_floor(
            report,
            floor_pool(segs, frames, archive_files(self.data_dir)),
            keep=keep,
            free_now=lambda: self._measure(self.data_dir),
            delete=delete,
            log_below=not self._below,  # once per spell, not once a second
            uploaded=None if index is None else index.file,
            data_dir=self.data_dir,
        )
        report.free_bytes_after = self._measure(self.data_dir)
        if report.deleted:
            self.evictions += 1
            self.files_evicted += len(report.deleted)
            self.bytes_evicted += report.bytes()
        if report.below_floor != self._below:
            self._below = report.below_floor
            if not report.below_floor:
                log.info("disk watch: free disk back over the floor")
        return report

    def _uploaded_index(self) -> UploadedIndex | None:
        """The upload manifest read once per eviction pass (None without a remote store, or when
        it cannot be read: then nothing counts as uploaded, which only orders eviction)."""
        try:
            return uploaded_index(self.data_dir, self.remote)
        except Exception as exc:
            log.warning(
                "disk watch: upload manifest unreadable (%s); evicting as if nothing were uploaded", exc
            )
            return None


def start_disk_watch(
    data_dir: str | os.PathLike[str],
    min_free_mb: float,
    protected_spans: Callable[[], Spans] | None = None,
    remote: RemoteSettings | None = None,
) -> DiskWatch:
    """A started `DiskWatch` for the floor of `min_free_mb` (0 disables it)."""
    watch = DiskWatch(
        data_dir, min_free_bytes=int(min_free_mb * 2**20), protected_spans=protected_spans, remote=remote
    )
    with contextlib.suppress(OSError):
        watch.start()
    return watch
