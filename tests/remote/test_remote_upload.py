"""The uploader against a local S3 server: keys and bytes, an outage, a kill -9 in the middle,
two recorders, and the questions retention asks."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs as pafs
import pytest
from helpers.remote_store import (
    BUCKET,
    STREAMS_USED,
    S3Server,
    archive_store,
    local_files,
    write_journal,
    write_listing,
    write_segments,
)
from helpers.store import T0_US

from pumpwatch.errors import ConfigError
from pumpwatch.segments import list_segments
from pumpwatch.segments.remote import RemoteSettings, remote_settings
from pumpwatch.segments.upload import Uploader, is_uploaded, not_yet_uploaded
from pumpwatch.timeunits import US_PER_HOUR

URL = f"s3://{BUCKET}/shared"


def remote_for(server: S3Server, recorder_id: str = "rec-a", **kw: object) -> RemoteSettings:
    base: dict[str, object] = {
        "url": URL,
        "endpoint_url": server.endpoint_url,
        "recorder_id": recorder_id,
        "upload_interval_s": 0.2,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.4,
        "connect_timeout_s": 1.0,
        "request_timeout_s": 10.0,
    }
    base.update(kw)
    return RemoteSettings(**base)  # type: ignore[arg-type]


def remote_objects(fs: pafs.FileSystem, recorder_id: str) -> dict[str, bytes]:
    """Every object under ``<url>/recorder=<id>/`` by its key below that prefix."""
    base = f"{BUCKET}/shared/recorder={recorder_id}"
    out = {}
    for info in fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)):
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as fh:
                out[info.path[len(base) + 1 :]] = fh.read()
    return out


def build_store(data_dir: Path) -> None:
    write_segments(data_dir)
    archive_store(data_dir)
    # two closed hours of journal lines, and one line of the current (open) hour
    write_journal(data_dir, "binance_spot", [T0_US + 10, T0_US + 20, T0_US + US_PER_HOUR + 5])
    write_journal(data_dir, "binance_spot", [time.time_ns() // 1000])
    write_listing(data_dir)


def expected_journal(data_dir: Path) -> dict[str, bytes]:
    lines = (data_dir / "journal" / "binance_spot.ndjson").read_bytes().splitlines(keepends=True)
    return {
        "journal/binance_spot/date=2026-01-01/00.ndjson": b"".join(lines[:2]),
        "journal/binance_spot/date=2026-01-01/01.ndjson": lines[2],
    }


def test_sealed_files_arrive_with_their_keys_and_bytes(tmp_path: Path, s3_server: S3Server) -> None:
    build_store(tmp_path)
    up = Uploader(tmp_path, remote_for(s3_server))
    result = up.run_once()
    assert result.error is None and result.backlog_files == 0

    got = remote_objects(s3_server.filesystem(), "rec-a")
    want = {**local_files(tmp_path), **expected_journal(tmp_path)}
    assert set(got) == set(want)  # archive (hive layout kept), closed journal hours, listing files
    assert {k: hashlib.sha256(v).hexdigest() for k, v in got.items()} == {
        k: hashlib.sha256(v).hexdigest() for k, v in want.items()
    }
    assert sum(k.startswith("archive/exchange=") for k in got) == 2 * len(STREAMS_USED)
    assert not any(k.startswith("segments/") for k in got)  # the archive holds their rows

    # nothing needlessly twice: a second round sends nothing; a rewrite with the same bytes is
    # recorded without a put; changed bytes are put again
    assert up.run_once().uploaded == []
    meta = tmp_path / "listings" / "0G_20260101T003000Z" / "metadata.json"
    os.utime(meta, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    again = up.run_once()
    assert again.uploaded == [] and again.skipped_same_bytes == 1
    meta.write_bytes(b'{"symbol": "0G", "changed": true}')
    assert up.run_once().uploaded == ["listings/0G_20260101T003000Z/metadata.json"]
    assert remote_objects(s3_server.filesystem(), "rec-a")["listings/0G_20260101T003000Z/metadata.json"] == (
        b'{"symbol": "0G", "changed": true}'
    )

    # a late journal line for a closed hour replaces that hour's object with one more line
    write_journal(tmp_path, "binance_spot", [T0_US + 30])
    assert up.run_once().uploaded == ["journal/binance_spot.ndjson#2026-01-01T00"]
    hour0 = remote_objects(s3_server.filesystem(), "rec-a")["journal/binance_spot/date=2026-01-01/00.ndjson"]
    assert hour0.count(b"\n") == 3

    st = up.status()
    assert st.backlog_files == 0 and st.failures == 0 and st.last_upload_us is not None
    assert st.uploaded_files == len(want) + 2
    up.stop()


def test_segments_are_copied_only_when_asked(tmp_path: Path, s3_server: S3Server) -> None:
    write_segments(tmp_path)
    up = Uploader(tmp_path, remote_for(s3_server, upload_segments=True))
    assert up.run_once().error is None
    got = remote_objects(s3_server.filesystem(), "rec-a")
    sealed = [f for f in list_segments(tmp_path) if f.sealed]
    assert sealed and {
        f"segments/{f.path.relative_to(tmp_path / 'segments').as_posix()}" for f in sealed
    } == set(got)
    for f in sealed:
        assert got[f"segments/{f.path.relative_to(tmp_path / 'segments').as_posix()}"] == f.path.read_bytes()
    up.stop()


def test_outage_then_back_every_sealed_file_arrives_and_nothing_waits(
    tmp_path: Path, s3_server: S3Server
) -> None:
    build_store(tmp_path)
    s3_server.stop()  # the store is unreachable from the start
    up = Uploader(tmp_path, remote_for(s3_server))
    up.start()
    try:
        deadline = time.monotonic() + 10
        while up.status().failures < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        st = up.status()
        assert st.failures >= 3 and st.consecutive_failures >= 3 and st.last_error
        assert st.backlog_files > 0

        # recording goes on meanwhile: another store's worth of hours is written and archived
        # in this thread while the uploader retries; none of it waits for the network
        t0 = time.monotonic()
        write_segments(tmp_path / "more", hours=1)
        for p in archive_store(tmp_path / "more"):
            target = tmp_path / "archive" / p.relative_to(tmp_path / "more" / "archive")
            target = target.with_name(f"{int(target.name[:2]) + 5:02d}.parquet")
            target.write_bytes(p.read_bytes())
        assert time.monotonic() - t0 < 5
        assert up.status().consecutive_failures >= 1

        s3_server.start()  # back, same port
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            st = up.status()
            if st.consecutive_failures == 0 and st.backlog_files == 0 and st.last_round_us:
                break
            time.sleep(0.05)
        assert st.consecutive_failures == 0 and st.backlog_files == 0, st
    finally:
        up.stop()
    got = remote_objects(s3_server.filesystem(), "rec-a")
    want = {**local_files(tmp_path), **expected_journal(tmp_path)}
    assert set(got) == set(want)
    assert all(got[k] == want[k] for k in want)
    assert sum(k.endswith("/05.parquet") or k.endswith("/06.parquet") for k in got) == len(STREAMS_USED)


_CHILD = textwrap.dedent(
    """
    import sys, time
    from pumpwatch.segments.remote import RemoteSettings
    from pumpwatch.segments.upload import Uploader
    url, endpoint, data_dir = sys.argv[1:4]
    assert endpoint.startswith("http://127.0.0.1:"), endpoint
    up = Uploader(data_dir, RemoteSettings(url=url, endpoint_url=endpoint, recorder_id="rec-a",
                  max_files_per_round=1, connect_timeout_s=1.0))
    while True:
        up.run_once()
    """
)


def test_kill_9_in_the_middle_loses_nothing_and_the_manifest_stays_true(
    tmp_path: Path, s3_server: S3Server
) -> None:
    rng = __import__("random").Random(7)
    for day in range(1, 4):
        for hour in range(20):
            p = tmp_path / f"archive/exchange=binance/market=spot/date=2026-01-0{day}/{hour:02d}.parquet"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(rng.randbytes(rng.randrange(20_000, 120_000)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, URL, s3_server.endpoint_url, str(tmp_path)], env=env
    )
    manifest = tmp_path / "remote" / "manifest.sqlite"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with sqlite3.connect(manifest) as db:
                    if db.execute("SELECT count(*) FROM uploaded").fetchone()[0] >= 10:
                        break
            except sqlite3.OperationalError:  # not created yet
                pass
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(10)
    with sqlite3.connect(manifest) as db:
        done_before = db.execute("SELECT count(*) FROM uploaded").fetchone()[0]
    assert 10 <= done_before < 60

    # every object visible is whole (atomic puts), whatever moment the kill hit
    fs = s3_server.filesystem()
    local = local_files(tmp_path)
    for key, data in remote_objects(fs, "rec-a").items():
        assert data == local[key], key

    up = Uploader(tmp_path, remote_for(s3_server))
    result = up.run_once()
    assert result.error is None and result.backlog_files == 0
    assert len(result.uploaded) <= 60 - done_before + 1  # at most the one put the kill interrupted again
    got = remote_objects(fs, "rec-a")
    assert got == local
    with sqlite3.connect(manifest) as db:
        rows = db.execute("SELECT ident, key, sha256 FROM uploaded").fetchall()
    assert len(rows) == 60
    for ident, key, sha in rows:
        assert key == f"{BUCKET}/shared/recorder=rec-a/{ident}"
        assert hashlib.sha256(got[ident]).hexdigest() == sha == hashlib.sha256(local[ident]).hexdigest()
    up.stop()


def test_two_recorders_never_collide(tmp_path: Path, s3_server: S3Server) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d, rows in ((a, 600), (b, 700)):  # the same streams and hours, different rows
        write_segments(d, rows_per_hour=rows)
        archive_store(d)
        write_listing(d)
    ua, ub = Uploader(a, remote_for(s3_server, "rec-a")), Uploader(b, remote_for(s3_server, "rec-b"))
    threads = [threading.Thread(target=u.run_once) for u in (ua, ub)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fs = s3_server.filesystem()
    got_a, got_b = remote_objects(fs, "rec-a"), remote_objects(fs, "rec-b")
    assert got_a == local_files(a) and got_b == local_files(b)
    assert set(got_a) == set(got_b)  # same relative keys, under different recorder= prefixes
    assert any(got_a[k] != got_b[k] for k in got_a if k.startswith("archive/"))
    ua.stop()
    ub.stop()


def test_retention_asks_what_is_uploaded(tmp_path: Path, s3_server: S3Server) -> None:
    build_store(tmp_path)
    remote = remote_for(s3_server)
    archive = sorted((tmp_path / "archive").rglob("*.parquet"))
    sealed = [f.path for f in list_segments(tmp_path) if f.sealed]
    assert not any(is_uploaded(tmp_path, p, remote) for p in archive + sealed)
    pending = not_yet_uploaded(tmp_path, remote)
    assert {p.relative_to(tmp_path).as_posix() for p in archive} <= set(pending)
    assert "journal/binance_spot.ndjson#2026-01-01T00" in pending

    up = Uploader(tmp_path, remote)
    up.run_once()
    assert not_yet_uploaded(tmp_path, remote) == []
    assert all(is_uploaded(tmp_path, p, remote) for p in archive)
    assert all(is_uploaded(tmp_path, p, remote) for p in sealed)  # their archive hour is in the store
    archive[0].write_bytes(archive[0].read_bytes() + b"x")  # re-archived: not uploaded as it is now
    assert not is_uploaded(tmp_path, archive[0], remote)
    assert not_yet_uploaded(tmp_path, remote) == [archive[0].relative_to(tmp_path).as_posix()]
    up.stop()


def test_settings_block_is_read_and_checked() -> None:
    class NoRemote:
        pass

    assert not remote_settings(NoRemote()).enabled

    with_remote = SimpleNamespace(
        remote={
            "url": "s3://bucket-1/a/b",
            "endpoint_url": "http://127.0.0.1:9000",
            "recorder_id": "tokyo-1",
        }
    )
    got = remote_settings(with_remote)
    assert got.enabled and got.resolved_recorder_id() == "tokyo-1"
    for bad in (
        {"url": "http://bucket/x"},
        {"url": "s3://B/x"},
        {"url": "s3://bucket-1/a//b"},
        {"url": "s3://bucket-1", "recorder_id": "a/b"},
        {"url": "s3://bucket-1", "endpoint_url": "127.0.0.1:9000"},
        {"url": "s3://bucket-1", "backoff_max_s": 0.1},
        {"urll": "s3://bucket-1"},
    ):
        with pytest.raises(ConfigError):
            remote_settings(SimpleNamespace(remote=bad))


def test_rounds_are_bounded_and_a_backlog_runs_the_next_round_at_once(
    tmp_path: Path, s3_server: S3Server
) -> None:
    for hour in range(10):
        p = tmp_path / f"archive/exchange=gate/market=spot/date=2026-01-01/{hour:02d}.parquet"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(bytes([hour]) * 1000)
    up = Uploader(tmp_path, remote_for(s3_server, max_files_per_round=3))
    first = up.run_once()
    assert len(first.uploaded) == 3 and first.backlog_files == 7 and first.backlog_bytes == 7000
    assert up.next_wait_s(first) == 0.0
    up.stop()
    by_bytes = Uploader(tmp_path, remote_for(s3_server, max_bytes_per_round=2500))
    second = by_bytes.run_once()
    assert len(second.uploaded) == 3 and second.backlog_files == 4  # stops once 2,500 B are spent
    assert by_bytes.next_wait_s(by_bytes.run_once()) == 0.0  # 3 more, 1 left
    last = by_bytes.run_once()
    assert len(last.uploaded) == 1 and last.backlog_files == 0
    assert by_bytes.next_wait_s(last) == 0.2  # the upload interval
    by_bytes.stop()
    assert set(remote_objects(s3_server.filesystem(), "rec-a")) == set(local_files(tmp_path))


def test_a_listing_directory_goes_up_with_its_metadata_last(tmp_path: Path, s3_server: S3Server) -> None:
    """A reader that sees a listing part's new metadata.json sees the data it describes: the
    uploader puts metadata.json after every other file of the directory, also across rounds."""
    d = write_listing(tmp_path)
    (d / "raw" / "trades.parquet").write_bytes(b"PAR1 first run")
    (d / "refined").mkdir()
    (d / "refined" / "pump_analysis.json").write_bytes(b"{}")
    up = Uploader(tmp_path, remote_for(s3_server, max_files_per_round=1))
    order = []
    for _ in range(6):
        order += up.run_once().uploaded
    names = [o.removeprefix("listings/0G_20260101T003000Z/") for o in order]
    assert names[-1] == "metadata.json" and len(names) == 4, names
    # a re-extraction rewrites data and metadata: the metadata again goes last
    (d / "raw" / "trades.parquet").write_bytes(b"PAR1 second run")
    (d / "metadata.json").write_bytes(b'{"symbol": "0G", "run": 2}')
    first = up.run_once().uploaded
    assert first == ["listings/0G_20260101T003000Z/raw/trades.parquet"], first
    assert (
        "run"
        not in remote_objects(s3_server.filesystem(), "rec-a")[
            "listings/0G_20260101T003000Z/metadata.json"
        ].decode()
    )
    assert up.run_once().uploaded == ["listings/0G_20260101T003000Z/metadata.json"]
    up.stop()
