"""The on-demand housekeeper (issue 12 §4): with the archive on and no remote store, no
housekeeping process stays resident. The supervisor's cheap check (`archive_work`: names, stat,
JSON manifests) must see exactly the work `archive_pending` would do; the ``--until-idle`` child
archives what is pending and exits by itself, stays up retrying while its rounds fail, and the
supervisor side starts it for work only and archives what was sealed last at shutdown. Real
processes throughout (the child is ``python -m pumpwatch.recorder.housekeeping``)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers.store import make_rows

from pumpwatch.recorder import housekeeping
from pumpwatch.recorder.housekeeping import archive_work, housekeeper_command, keep_housekeeper
from pumpwatch.segments import SegmentWriter
from pumpwatch.segments.archive import archive_backlog, archive_path, archive_pending
from pumpwatch.settings import load_settings
from pumpwatch.timeunits import US_PER_HOUR

pytestmark = pytest.mark.timeout(180)

DAY_S = 86_400


def _hour(hours_ago: int) -> int:
    now = time.time_ns() // 1000
    return now - now % US_PER_HOUR - hours_ago * US_PER_HOUR


def _seal(data: Path, stream: str, start_us: int, n: int = 200) -> None:
    """One sealed segment of `stream` in the hour of `start_us` (a new file when the hour has one)."""
    with SegmentWriter(data, stream) as w:
        w.append(make_rows(n, start_us=start_us + 1000))


def _config(tmp_path: Path, retention: str = "30d") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"data_dir: {tmp_path / 'data'}\nstorage:\n  archive_retention: {retention}\n"
        "logging:\n  level: INFO\n  file: true\n"
    )
    return path


def _agree(data: Path, retention_s: float | None) -> None:
    work = archive_work(data, retention_s=retention_s)
    backlog = archive_backlog(data, retention_s=retention_s)
    assert (work.pending_hours, work.oldest_seal_us, work.newest_pending_hour_us) == (
        backlog.pending_hours,
        backlog.oldest_seal_us,
        backlog.newest_pending_hour_us,
    )
    assert work.newest_archived_hour_us == backlog.newest_archived_hour_us


def test_the_cheap_check_sees_exactly_what_an_archive_round_would_do(tmp_path: Path) -> None:
    data = tmp_path / "data"
    keep_s = 30.0 * DAY_S
    assert not archive_work(data, retention_s=keep_s).due  # no store at all
    recent, old = _hour(2), _hour(24 * 40)  # the old hour is past a 30-day retention
    _seal(data, "binance_spot", recent)
    _seal(data, "okx_futures", recent)
    _seal(data, "okx_futures", old)
    _agree(data, keep_s)
    work = archive_work(data, retention_s=keep_s)
    assert work.pending_hours == 2 and work.due  # the expired hour is never archived
    assert archive_work(data, retention_s=None).pending_hours == 3
    since = archive_work(data, retention_s=None, since_us=recent - US_PER_HOUR // 2)
    assert since.pending_hours == 2  # the recent check leaves older hours to the full one
    archive_pending(data, retention_s=keep_s)
    _agree(data, keep_s)
    assert not archive_work(data, retention_s=keep_s, expired=True).due
    # a second sealed file in an archived hour (a restart, a repair): pending again
    _seal(data, "binance_spot", recent + 1800 * 10**6)
    _agree(data, keep_s)
    assert archive_work(data, retention_s=keep_s).pending_hours == 1
    archive_pending(data, retention_s=keep_s)
    assert not archive_work(data, retention_s=keep_s).due
    # a segment rewritten in place (reparse): its size/mtime no longer match the manifest
    seg = next((data / "segments").rglob("*.arrow"))
    os.utime(seg, ns=(time.time_ns(), time.time_ns() + 5 * 10**9))
    _agree(data, keep_s)
    assert archive_work(data, retention_s=keep_s).pending_hours == 1
    archive_pending(data, retention_s=keep_s)
    # an archive file past the retention: due for deletion (only the full check looks)
    archive_pending(data, retention_s=None)  # archives the old hour too
    assert archive_path(data, "okx_futures", old).is_file()
    assert not archive_work(data, retention_s=keep_s).due
    expired = archive_work(data, retention_s=keep_s, expired=True)
    assert expired.expired_files == 1 and expired.due
    archive_pending(data, retention_s=keep_s)
    assert not archive_path(data, "okx_futures", old).is_file()
    assert not archive_work(data, retention_s=keep_s, expired=True).due
    # an unreadable manifest: its hours count as pending (the round rebuilds them as a union)
    manifest = archive_path(data, "binance_spot", recent).parent / ".sources.json"
    manifest.write_bytes(b"{not json")
    _agree(data, keep_s)
    assert archive_work(data, retention_s=keep_s).pending_hours == 1


def _child_env(check_s: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPWATCH_")}
    env["PUMPWATCH_HOUSEKEEPING_CHECK_S"] = check_s
    return env


def test_the_on_demand_child_archives_what_is_pending_and_exits(tmp_path: Path) -> None:
    config, data = _config(tmp_path), tmp_path / "data"
    for stream in ("binance_spot", "gate_futures"):
        _seal(data, stream, _hour(1))
    t0 = time.monotonic()
    done = subprocess.run(
        housekeeper_command(config, str(data), until_idle=True),
        env=_child_env("0.5"),
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - t0
    assert done.returncode == 0
    assert archive_backlog(data, retention_s=30 * DAY_S).pending_hours == 0
    log_text = (data / "logs" / "housekeeping.log").read_text()
    assert "2 hour file(s) built" in log_text and "nothing pending, exiting" in log_text
    print(f"on-demand child: 2 hours archived, process start to exit {elapsed:.2f} s")


def test_a_failing_on_demand_child_stays_up_retrying_and_exits_once_it_works(tmp_path: Path) -> None:
    config, data = _config(tmp_path), tmp_path / "data"
    _seal(data, "okx_spot", _hour(1))
    (data / "archive").write_bytes(b"not a directory")  # every round fails
    proc = subprocess.Popen(
        housekeeper_command(config, str(data), until_idle=True),
        env=_child_env("0.3"),
        stdin=subprocess.DEVNULL,
    )
    try:
        time.sleep(3.0)  # ~10 retries
        assert proc.poll() is None, "a child whose rounds fail stays up and retries"
        assert psutil.Process(proc.pid).nice() >= housekeeping.NICE
        (data / "archive").unlink()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert archive_backlog(data, retention_s=30 * DAY_S).pending_hours == 0
    log_text = (data / "logs" / "housekeeping.log").read_text()
    assert log_text.count("archive round failed") == 1 and log_text.count("work again") == 1


def _housekeeping_children() -> list[psutil.Process]:
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "pumpwatch.recorder.housekeeping" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            continue
    return out


def test_the_supervisor_starts_the_child_for_work_only_and_it_exits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config, data = _config(tmp_path), tmp_path / "data"
    settings = load_settings(config)
    monkeypatch.setattr(housekeeping, "PROBE_S", 0.2)  # the supervisor's checks
    for key in [k for k in os.environ if k.startswith("PUMPWATCH_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PUMPWATCH_HOUSEKEEPING_CHECK_S", "0.2")  # the children's retries
    seen: set[int] = set()

    async def watch(stop: asyncio.Event) -> None:
        while not stop.is_set():
            seen.update(p.pid for p in _housekeeping_children())
            await asyncio.sleep(0.02)

    async def body() -> dict[str, float]:
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch(stop))
        keeper = asyncio.create_task(keep_housekeeper(settings, config))
        await asyncio.sleep(2.0)
        assert not seen, "nothing to archive: no housekeeping process"
        hour = _hour(1)
        _seal(data, "bybit_spot", hour)
        t_seal = time.time()
        path = archive_path(data, "bybit_spot", hour)
        deadline = time.monotonic() + 60
        while not path.is_file():
            assert time.monotonic() < deadline, "the sealed hour was not archived"
            await asyncio.sleep(0.05)
        seal_to_archive = path.stat().st_mtime - t_seal
        while _housekeeping_children():
            assert time.monotonic() < deadline, "the child did not exit once idle"
            await asyncio.sleep(0.05)
        assert len(seen) == 1
        await asyncio.sleep(1.0)  # checks go on; nothing due, nothing started
        assert len(seen) == 1 and not keeper.done()
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        stop.set()
        await watcher
        return {"seal_to_archive_s": seal_to_archive}

    with caplog.at_level(logging.INFO, logger="pumpwatch.recorder.housekeeping"):
        figures = asyncio.run(body())
    assert archive_backlog(data, retention_s=30 * DAY_S).pending_hours == 0
    assert len(seen) == 1  # at shutdown nothing was pending: no last child either
    print("on-demand figures (check every 0.2 s):", {k: round(v, 2) for k, v in figures.items()})


def test_at_shutdown_what_was_just_sealed_is_archived(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config, data = _config(tmp_path), tmp_path / "data"
    settings = load_settings(config)
    monkeypatch.setattr(housekeeping, "PROBE_S", 3600.0)  # only the start check and the last one
    for key in [k for k in os.environ if k.startswith("PUMPWATCH_")]:
        monkeypatch.delenv(key)

    async def body() -> None:
        keeper = asyncio.create_task(keep_housekeeper(settings, config))
        await asyncio.sleep(1.0)
        assert not _housekeeping_children()
        for stream in ("kucoin_spot", "phemex_futures"):  # the workers' seals at shutdown
            _seal(data, stream, _hour(0))
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)

    with caplog.at_level(logging.INFO, logger="pumpwatch.recorder.housekeeping"):
        asyncio.run(body())
    assert archive_backlog(data, retention_s=30 * DAY_S).pending_hours == 0
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("archive what was just sealed" in m for m in msgs) == 1
    assert not _housekeeping_children()


def test_the_child_command_names_its_mode() -> None:
    cmd = housekeeper_command("c.yaml", "data", until_idle=True, final=True)
    assert cmd[:3] == [sys.executable, "-m", "pumpwatch.recorder.housekeeping"]
    assert "--until-idle" in cmd and "--final" in cmd
    assert "--until-idle" not in housekeeper_command(None, "data")
