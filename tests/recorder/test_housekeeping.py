"""The housekeeping settings and the archive round's failure handling (logged once per state
change, retried, never raised)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from helpers.store import T0_US, make_rows

from pumpwatch.errors import ConfigError
from pumpwatch.recorder.housekeeping import Housekeeper, housekeeper_command, wanted
from pumpwatch.segments import SegmentWriter
from pumpwatch.segments.archive import archive_backlog
from pumpwatch.segments.remote import remote_settings
from pumpwatch.settings import load_settings


def _settings(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "config.yaml"
    path.write_text(f"data_dir: {tmp_path / 'data'}\n" + text)
    return load_settings(path)


def test_archive_settings(tmp_path: Path) -> None:
    s = _settings(tmp_path, "storage:\n  archive_retention: 30d\n")
    assert s.storage.archive_retention_s == 30 * 86_400 and s.storage.archive
    assert _settings(tmp_path, "storage:\n  archive_retention: 0\n").storage.archive_retention_s == 0
    assert load_settings(None).storage.archive_retention_s == 90 * 86_400
    with pytest.raises(ConfigError, match="archive_retention"):
        _settings(tmp_path, "storage:\n  archive_retention: 10m\n")
    off = _settings(tmp_path, "storage:\n  archive: false\n")
    assert not wanted(off)
    assert wanted(load_settings(None))


def test_remote_block(tmp_path: Path) -> None:
    s = _settings(
        tmp_path,
        "remote:\n  url: s3://bucket-a/pw\n  endpoint_url: http://127.0.0.1:9\n  upload_interval: 5s\n"
        "  recorder_id: tokyo-1\n",
    )
    remote = remote_settings(s)
    assert remote.enabled and remote.upload_interval_s == 5.0 and remote.recorder_id == "tokyo-1"
    assert not remote_settings(load_settings(None)).enabled
    with pytest.raises(ConfigError, match=r"remote\.url"):
        remote_settings(_settings(tmp_path, "remote:\n  url: http://nope\n"))
    with pytest.raises(ConfigError, match="unknown setting"):
        _settings(tmp_path, "remote:\n  bogus: 1\n")
    cmd = housekeeper_command(tmp_path / "config.yaml", "data")
    assert cmd[1:3] == ["-m", "pumpwatch.recorder.housekeeping"] and "--config" in cmd


def test_a_failing_archive_round_is_logged_once_retried_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = _settings(tmp_path, "storage:\n  archive_retention: 0\n")
    data = tmp_path / "data"
    with SegmentWriter(data, "binance_spot") as w:
        w.append(make_rows(100, start_us=T0_US))
    (data / "archive").write_bytes(b"not a directory")  # every round fails
    hk = Housekeeper(s)
    with caplog.at_level(logging.INFO, logger="pumpwatch.recorder.housekeeping"):
        for _ in range(3):
            assert hk.archive_round(full=True) is None
        assert hk.failing is not None
        (data / "archive").unlink()
        report = hk.archive_round(full=True)
    assert report is not None and report.hours_built == 1
    msgs = [r.getMessage() for r in caplog.records if r.name == "pumpwatch.recorder.housekeeping"]
    assert sum("archive round failed" in m for m in msgs) == 1
    assert sum("work again" in m for m in msgs) == 1
    assert archive_backlog(data, retention_s=None).pending_hours == 0
    shutil.rmtree(data)


def test_status_shows_the_archive_lag(tmp_path: Path) -> None:
    from pumpwatch.cli.store_cmds import archive_lines
    from pumpwatch.segments.archive import archive_pending
    from pumpwatch.segments.status import store_status

    data = tmp_path / "data"
    with SegmentWriter(data, "okx_spot") as w:
        w.append(make_rows(50, start_us=T0_US))
    before = store_status(data, archive_retention_s=None)
    assert before["archive"]["pending_hours"] == 1 and before["archive"]["lag_s"] > 0
    assert before["upload"] is None
    assert "1 sealed hour(s) not archived yet" in archive_lines(before)[0]
    archive_pending(data, retention_s=None)
    after = store_status(data, archive_retention_s=None)
    assert after["archive"]["pending_hours"] == 0 and after["archive"]["lag_s"] == 0
    assert after["archive"]["newest_archived_hour_us"] == T0_US
    assert archive_lines(after) == [f"archive: {archive_lines(after)[0].split(': ', 1)[1]}"]
    assert "every sealed hour archived" in archive_lines(after)[0]


def test_a_bad_remote_block_stops_record_with_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    from pumpwatch.recorder.housekeeping import keep_housekeeper

    s = _settings(tmp_path, "remote:\n  url: http://not-s3\n")
    stop = asyncio.Event()
    with caplog.at_level(logging.ERROR):
        asyncio.run(keep_housekeeper(s, None, stop))
    assert stop.is_set()
    assert any("remote.url" in r.getMessage() and "stopping record" in r.getMessage() for r in caplog.records)
