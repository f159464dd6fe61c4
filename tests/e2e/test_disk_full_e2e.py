"""A full disk under `pumpwatch record` (issue 11), against a local exchange, with the data
directory on a small tmpfs of its own; where mounting is not permitted (unprivileged CI), the
full disk is injected instead: every segment write of the recorder's processes fails with
ENOSPC while a flag file exists (``tests/e2e/enospc/sitecustomize.py``).

The disk fills (another program's file, which eviction may not touch) and frees while trades
flow: recording resumes without a restart and nothing is lost; it fills again and `record`
gets SIGTERM while the disk is still full: it exits within a bound and non-zero, and every
trade is either on disk or inside a journaled ``dropped`` span. The recorder's output stays
small throughout (the issue saw 386 MB of repeated tracebacks in three minutes).

Short form by default; PUMPWATCH_SOAK=long holds the disk full longer.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from helpers.e2e import (
    SOAK_LONG,
    Market,
    Recorder,
    available_streams,
    disk_rows,
    now_us,
    trade_key,
    wait_on_disk,
)

from pumpwatch.segments.journal import read_events
from pumpwatch.segments.recovery import recover

pytestmark = [pytest.mark.slow, pytest.mark.soak, pytest.mark.timeout(600)]

STREAMS = [s for s in ("binance_spot", "okx_spot", "bybit_spot") if s in available_streams()][:1]
if not STREAMS:  # pragma: no cover - the adapters are part of the project
    pytest.skip("no adapter available yet", allow_module_level=True)
STREAM = STREAMS[0]
FULL_S = 20.0 if SOAK_LONG else 3.0  # how long the disk stays full while trades flow
STOP_BOUND_S = 25.0  # SIGTERM to exit, disk full (the supervisor's kill is at 30 s)
OUTPUT_BOUND_BYTES = 200_000  # everything `record` printed in the whole test


def _mount(path: Path, size_mb: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _fill(path: Path) -> None:
    """Another program's file grows until the file system is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    chunk = b"\x5a" * 65536
    try:
        while len(chunk) >= 512:
            try:
                os.write(fd, chunk)
            except OSError:
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)


def _dropped(data: Path) -> list[dict]:
    return [e for e in read_events(data, STREAM) if e["event"] == "dropped" and e.get("what") == "rows"]


class _Tmpfs:
    """A real full disk: another program's file fills the small file system."""

    def __init__(self, data: Path) -> None:
        self.ballast = data / "other-program.bin"

    def fill(self) -> None:
        _fill(self.ballast)

    def free(self) -> None:
        self.ballast.unlink()


class _Injected:
    """An injected full disk: the recorder's segment writes fail with ENOSPC while the flag exists."""

    def __init__(self, flag: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.flag = flag
        here = str(Path(__file__).parent / "enospc")
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
        monkeypatch.setenv("PUMPWATCH_TEST_ENOSPC_FLAG", str(flag))

    def fill(self) -> None:
        self.flag.touch()

    def free(self) -> None:
        self.flag.unlink()


@pytest.mark.parametrize("how", ["tmpfs", "injected"])
def test_record_survives_a_full_disk_and_sigterm_while_full(tmp_path: Path, monkeypatch, how: str) -> None:
    data = tmp_path / "data"
    out = tmp_path / "record.out"
    if how == "tmpfs":
        if not _mount(data, 24):
            pytest.skip(
                "cannot mount a tmpfs here (not root, or no mount permission); the injected run covers it"
            )
        try:
            asyncio.run(_body(tmp_path, data, _Tmpfs(data)))
        finally:
            subprocess.run(["umount", "-l", str(data)], capture_output=True, timeout=10)
    else:  # runs everywhere: ENOSPC injected into the recorder's segment writes
        asyncio.run(_body(tmp_path, data, _Injected(tmp_path / "disk-full.flag", monkeypatch)))
    assert out.stat().st_size < OUTPUT_BOUND_BYTES, f"record printed {out.stat().st_size} bytes"


async def _body(tmp_path: Path, data: Path, disk: _Tmpfs | _Injected) -> None:
    async with Market(STREAMS) as market:
        config = market.write_config(tmp_path)
        cfg = yaml.safe_load(config.read_text())
        cfg["storage"]["min_free_disk_mb"] = 1
        config.write_text(yaml.safe_dump(cfg))
        rec = Recorder(config, tmp_path)
        await rec.start_listening(market, data, STREAMS)
        await market.trade_for(1.0)
        await wait_on_disk(market, data)

        # 1. the disk fills and frees while trades flow: nothing lost, no restart
        starts = [e for e in read_events(data, STREAM) if e["event"] == "start"]
        disk.fill()
        await market.trade_for(FULL_S)
        disk.free()
        await market.trade_for(1.0)
        await wait_on_disk(market, data)  # every trade, the ones held in memory too
        assert [e for e in read_events(data, STREAM) if e["event"] == "start"] == starts, "no restart"
        assert not _dropped(data)

        # 2. full again, and SIGTERM while it is: bounded, non-zero, the loss journaled
        full_us = now_us()
        disk.fill()
        await market.trade_for(FULL_S)
        await asyncio.sleep(1.0)  # the last trades reach the recorder (not the disk)
        t0 = time.monotonic()
        rc = await rec.terminate(timeout_s=60)
        took = time.monotonic() - t0
    assert rc != 0, "a recorder that lost rows must not exit 0"
    assert took < STOP_BOUND_S, f"SIGTERM took {took:.1f} s"
    disk.free()
    recover(data, STREAMS)  # what could not be sealed on the full disk is a valid prefix
    on_disk = {trade_key(STREAM, r): r for r in disk_rows(data, STREAM)}
    dropped = _dropped(data)
    assert dropped, "the rows dropped at the stop are journaled"
    # older trades may be gone with files the floor evicted (logged); the newer are on disk or
    # inside a dropped span
    # (exchange times are whole milliseconds: a trade sent right after `full_us` may be stamped
    # up to 1 ms before it)
    since_us = full_us - 1000
    missing = [r for r in market.sent(STREAM) if trade_key(STREAM, r) not in on_disk and r[0] >= since_us]
    assert missing, "the disk was full at the stop: some trades could not be written"
    for row in missing:
        assert any(e["first_time_us"] <= row[0] <= e["last_time_us"] for e in dropped), row
    assert sum(e["rows"] for e in dropped) == len(missing)
