"""Retention with a remote store (issue 14): nothing leaves the disk before it is in the store.
Segments, journal lines and archive files past their retention stay until uploaded; under the
free-disk floor the uploaded segments are evicted first. Uploads go to a real local S3 server."""

from __future__ import annotations

from pathlib import Path

from helpers.remote_store import S3Server, write_journal, write_segments
from helpers.store import T0_US

from pumpwatch.segments.archive import archive_pending, list_archive
from pumpwatch.segments.journal import read_events
from pumpwatch.segments.paths import list_segments
from pumpwatch.segments.remote import RemoteSettings
from pumpwatch.segments.retention import prune
from pumpwatch.segments.upload import UploadedIndex, Uploader
from pumpwatch.timeunits import US_PER_DAY, US_PER_HOUR

NOW = T0_US + 30 * US_PER_DAY  # everything written at T0 is past a 7-day retention


def _remote(server: S3Server) -> RemoteSettings:
    return RemoteSettings(
        url="s3://pumpwatch-test/ret",
        endpoint_url=server.endpoint_url,
        recorder_id="ret-1",
        connect_timeout_s=1.0,
        request_timeout_s=10.0,
    )


def _sealed(data: Path) -> set[Path]:
    return {f.path for f in list_segments(data) if f.sealed}


def _prune(data: Path, remote: RemoteSettings | None, **kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "retention_s": 7 * 86_400.0,
        "min_free_disk_mb": 0,
        "frames_retention_s": 86_400.0,
        "now_us": NOW,
        "remote": remote,
    }
    args.update(kw)
    return prune(data, **args)  # type: ignore[arg-type]


def test_nothing_un_uploaded_is_deleted_then_uploaded_things_are(tmp_path: Path, s3_server: S3Server) -> None:
    write_segments(tmp_path, hours=3)
    archive_pending(tmp_path, retention_s=None)
    write_journal(tmp_path, "binance_spot", [T0_US + 10, T0_US + 20, T0_US + US_PER_HOUR + 5])
    remote = _remote(s3_server)
    before = _sealed(tmp_path)
    archives = {p for _s, _h, p in list_archive(tmp_path)}

    # the store has nothing yet: retention deletes nothing of what it should keep
    report = _prune(tmp_path, remote)
    assert _sealed(tmp_path) == before
    assert report.count("segment") == 0 and report.held_for_upload == 4  # newest of each stream protected
    assert len(read_events(tmp_path, "binance_spot")) == 3
    archive_pending(tmp_path, now_us=NOW, retention_s=86_400, may_delete=UploadedIndex(tmp_path, remote).file)
    assert {p for _s, _h, p in list_archive(tmp_path)} == archives

    # without a remote store the same prune would delete them (the baseline the rule changes)
    dry = _prune(tmp_path, None, dry_run=True)
    assert dry.count("segment", "retention") == 4

    # once uploaded, the same retention deletes them
    up = Uploader(tmp_path, remote, clock_us=lambda: NOW)
    assert up.run_once().error is None
    up.stop()
    report = _prune(tmp_path, remote)
    assert report.count("segment", "retention") == 4 and report.held_for_upload == 0
    assert len(_sealed(tmp_path)) == 2  # the newest file of each stream is never deleted
    assert len(read_events(tmp_path, "binance_spot")) < 3
    pruned = archive_pending(
        tmp_path, now_us=NOW, retention_s=86_400, may_delete=UploadedIndex(tmp_path, remote).file
    ).pruned
    assert set(pruned) == archives


def test_journal_lines_of_an_hour_not_uploaded_stay(tmp_path: Path, s3_server: S3Server) -> None:
    write_journal(tmp_path, "binance_spot", [T0_US + 10, T0_US + US_PER_HOUR + 5])
    remote = _remote(s3_server)
    up = Uploader(tmp_path, remote, clock_us=lambda: NOW)
    assert up.run_once().error is None
    up.stop()
    # a late line for hour 0 arrives: that hour is no longer completely in the store
    write_journal(tmp_path, "binance_spot", [T0_US + 20])
    index = UploadedIndex(tmp_path, remote)
    assert index.journal_cutoff("binance_spot", NOW) == T0_US
    _prune(tmp_path, remote)
    assert [e["ts"] for e in read_events(tmp_path, "binance_spot")][:1] == [T0_US + 10]


def test_under_the_floor_uploaded_segments_go_first(tmp_path: Path, s3_server: S3Server) -> None:
    write_segments(tmp_path, hours=3)  # binance_spot's hours start before okx_futures'
    archive_pending(tmp_path, retention_s=None, streams=["okx_futures"])
    remote = _remote(s3_server)
    up = Uploader(tmp_path, remote, clock_us=lambda: NOW)
    assert up.run_once().error is None
    up.stop()
    archive_pending(tmp_path, retention_s=None)  # binance_spot archived, not uploaded
    n_sealed = len(_sealed(tmp_path))

    def measure(_root: Path) -> int:  # one eviction lifts the disk above the floor
        return 2**40 if len(_sealed(tmp_path)) < n_sealed else 0

    report = _prune(tmp_path, remote, retention_s=365 * 86_400.0, min_free_disk_mb=1, free_bytes=measure)
    deleted = [d.path for d in report.deleted]
    assert len(deleted) == 1 and "market=futures" in str(deleted[0]), deleted
    # without the remote store the oldest (binance_spot) would have gone first
    dry = _prune(
        tmp_path, None, retention_s=365 * 86_400.0, min_free_disk_mb=1, free_bytes=lambda _r: 0, dry_run=True
    )
    assert "market=spot" in str(dry.deleted[0].path)


def test_the_workers_disk_watch_also_evicts_uploaded_segments_first(
    tmp_path: Path, s3_server: S3Server
) -> None:
    from pumpwatch.segments.diskwatch import DiskWatch

    write_segments(tmp_path, hours=3)
    archive_pending(tmp_path, retention_s=None, streams=["okx_futures"])
    remote = _remote(s3_server)
    up = Uploader(tmp_path, remote, clock_us=lambda: NOW)
    assert up.run_once().error is None
    up.stop()
    archive_pending(tmp_path, retention_s=None)  # binance_spot archived (a copy), not uploaded
    n_sealed = len(_sealed(tmp_path))

    def measure(_root: Path) -> int:  # one eviction lifts the disk above the floor
        return 2**40 if len(_sealed(tmp_path)) < n_sealed else 0

    report = DiskWatch(tmp_path, min_free_bytes=2**20, measure=measure, remote=remote).evict()
    assert report is not None
    assert [d.kind for d in report.deleted] == ["segment"]
    assert "market=futures" in str(report.deleted[0].path)  # binance_spot is older, not uploaded


def test_a_segment_not_in_the_uploaded_archive_hour_stays(tmp_path: Path, s3_server: S3Server) -> None:
    """A repair file sealed into an hour whose archive file is already uploaded is not in that
    file: retention keeps it until the archiver rebuilt the hour and the new file went up."""
    import shutil

    write_segments(tmp_path, hours=3)
    archive_pending(tmp_path, retention_s=None)
    remote = _remote(s3_server)
    up = Uploader(tmp_path, remote, clock_us=lambda: NOW)
    assert up.run_once().error is None
    first = min((f for f in list_segments(tmp_path, ["binance_spot"]) if f.sealed), key=lambda f: f.start_us)
    repair = first.path.with_name(first.path.name.replace(".arrow", ".rest1.arrow"))
    shutil.copyfile(first.path, repair)
    index = UploadedIndex(tmp_path, remote)
    assert index.file(first.path)  # its rows are in the uploaded archive file
    assert not index.file(repair)  # its hour's file is uploaded, but was built without it
    _prune(tmp_path, remote)
    assert repair.exists() and not first.path.exists()
    # the archiver rebuilds the hour with it, the uploader sends the new file: now it may go
    archive_pending(tmp_path, retention_s=None)
    assert not UploadedIndex(tmp_path, remote).file(repair)  # rebuilt, not yet uploaded
    assert up.run_once().error is None
    up.stop()
    assert UploadedIndex(tmp_path, remote).file(repair)
    _prune(tmp_path, remote)
    assert not repair.exists()


def test_under_the_floor_a_segment_not_in_the_uploaded_archive_is_not_taken_for_uploaded(
    tmp_path: Path, s3_server: S3Server
) -> None:
    """The free-disk floor evicts uploaded segments first; a segment sealed into an hour whose
    archive file was built (and uploaded) without it is not one of them."""
    import shutil

    write_segments(tmp_path, hours=3)
    archive_pending(tmp_path, retention_s=None)
    remote = _remote(s3_server)
    up = Uploader(tmp_path, remote, clock_us=lambda: NOW)
    assert up.run_once().error is None
    up.stop()
    first = min((f for f in list_segments(tmp_path, ["binance_spot"]) if f.sealed), key=lambda f: f.start_us)
    late = first.path.with_name(first.path.name.replace(".arrow", ".rest1.arrow"))
    shutil.copyfile(first.path, late)
    n_sealed = len(_sealed(tmp_path))

    def measure(_root: Path) -> int:  # two evictions lift the disk above the floor
        return 2**40 if len(_sealed(tmp_path)) <= n_sealed - 2 else 0

    report = _prune(tmp_path, remote, retention_s=365 * 86_400.0, min_free_disk_mb=1, free_bytes=measure)
    assert len(report.deleted) == 2 and late.exists(), [d.path for d in report.deleted]
