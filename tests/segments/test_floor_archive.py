"""The free-disk floor and the Parquet archive: a 90-day archive is the largest thing on a
recorder's disk, so under the floor it is evicted too, in an order that loses nothing first
(frames, then copies, then last copies), and never in a way that makes the archiver rebuild
what was just deleted. Real segments and a real archive (``archive_pending``)."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
from helpers.remote_store import STREAMS_USED, write_segments
from helpers.store import T0_US

from pumpwatch.segments.archive import archive_lock, archive_pending, list_archive
from pumpwatch.segments.diskwatch import DiskWatch
from pumpwatch.segments.paths import list_segments
from pumpwatch.segments.retention import archive_files, eviction_order, floor_pool, prune
from pumpwatch.timeunits import US_PER_DAY, US_PER_HOUR

NOW = T0_US + 2 * US_PER_DAY


def _hour(path: Path) -> int:
    """The hour index (0, 1, …) after T0 of a segment or archive file."""
    return int(path.name[:2]) - T0_US % US_PER_DAY // US_PER_HOUR


def _store(tmp_path: Path) -> None:
    """Four hours of two streams, archived; hour 0's segments gone since (an earlier eviction),
    so its archive files are the last copies of those trades."""
    write_segments(tmp_path, hours=4)
    archive_pending(tmp_path, retention_s=None)
    for f in list_segments(tmp_path):
        if _hour(f.path) == 0:
            f.path.unlink()


def _prune_under_floor(data: Path, free: int = 0):  # type: ignore[no-untyped-def]
    return prune(
        data,
        retention_s=365 * 86_400.0,
        min_free_disk_mb=1,
        frames_retention_s=365 * 86_400.0,
        now_us=NOW,
        free_bytes=lambda _r: free,
    )


def test_the_order_is_copies_first_then_last_copies_and_never_a_rebuild(tmp_path: Path) -> None:
    _store(tmp_path)
    segs = list_segments(tmp_path)
    order = eviction_order(floor_pool(segs, [], archive_files(tmp_path)), data_dir=tmp_path)
    kinds_hours = [(kind, _hour(f.path)) for f, kind in order]
    # archived segments (hours 1-3) go first, oldest first; then hour 0's archive files, the last
    # copies; hours 1-3's archive files are not candidates while their segments exist
    assert (
        kinds_hours
        == [("segment", 1)] * 2 + [("segment", 2)] * 2 + [("segment", 3)] * 2 + [("archive", 0)] * 2
    )


def test_prune_under_the_floor_evicts_archive_files_and_the_archive_does_not_rebuild(tmp_path: Path) -> None:
    _store(tmp_path)
    report = _prune_under_floor(tmp_path)  # the floor is never reached: everything allowed goes
    deleted = [(d.kind, _hour(d.path)) for d in report.deleted]
    # the newest segment of each stream (hour 3) is never evicted
    assert deleted == [("segment", 1)] * 2 + [("segment", 2)] * 2 + [("archive", 0)] * 2
    assert report.below_floor
    assert report.to_dict()["deleted"]["archive"]["evicted_files"] == 2
    left = sorted(_hour(p) for _s, _h, p in list_archive(tmp_path))
    assert left == [1, 1, 2, 2, 3, 3]
    # the manifests no longer claim hour 0, and the archiver finds nothing to (re)build
    manifests = list((tmp_path / "archive").glob("exchange=*/market=*/date=*/.sources.json"))
    assert len(manifests) == len(STREAMS_USED)
    for m in manifests:
        hours = orjson.loads(m.read_bytes())["hours"]
        assert sorted(_hour(Path(f"{h}.parquet")) for h in hours) == [1, 2, 3]
    again = archive_pending(tmp_path, retention_s=None)
    assert again.hours_built == 0, again
    # the next pass: hours 1 and 2 are archive-only now, and go as last copies, oldest first
    second = _prune_under_floor(tmp_path)
    assert [(d.kind, _hour(d.path)) for d in second.deleted] == [("archive", 1)] * 2 + [("archive", 2)] * 2


def test_eviction_stops_once_over_the_floor(tmp_path: Path) -> None:
    _store(tmp_path)
    n = len(list_segments(tmp_path))

    def measure(_root: Path) -> int:  # one eviction lifts the disk over the floor
        return 2**40 if len(list_segments(tmp_path)) < n else 0

    report = prune(
        tmp_path,
        retention_s=365 * 86_400.0,
        min_free_disk_mb=1,
        frames_retention_s=365 * 86_400.0,
        now_us=NOW,
        free_bytes=measure,
    )
    assert [(d.kind, _hour(d.path)) for d in report.deleted] == [("segment", 1)]
    assert not report.below_floor
    assert len(archive_files(tmp_path)) == 8


def test_a_busy_archiver_keeps_its_files_this_pass(tmp_path: Path) -> None:
    _store(tmp_path)
    for f in list_segments(tmp_path):
        if _hour(f.path) in (1, 2):
            f.path.unlink()
    held = threading.Event()
    release = threading.Event()

    def build() -> None:
        with archive_lock(tmp_path):
            held.set()
            release.wait(30)

    t = threading.Thread(target=build)
    t.start()
    try:
        assert held.wait(10)
        watch = DiskWatch(tmp_path, min_free_bytes=2**20, measure=lambda _p: 0)
        report = watch.evict()
        assert report is not None and report.deleted == [] and report.below_floor
        assert len(archive_files(tmp_path)) == 8
    finally:
        release.set()
        t.join()
    report = watch.evict()
    assert report is not None
    assert sorted(_hour(d.path) for d in report.deleted) == [0, 0, 1, 1, 2, 2]
    assert {d.kind for d in report.deleted} == {"archive"}
