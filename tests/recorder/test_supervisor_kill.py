"""The supervisor's shutdown kill path (review of issue 11): a worker that ignores SIGTERM past
the bound is killed, and a child then seals what it left and journals ``crashed`` with the bound
of what is on disk; the stop counts as failed (non-zero exit of `record`). The death mark a
restart journals names the exit code."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from pumpwatch.recorder import supervisor
from pumpwatch.recorder.supervisor import WorkerHandle, _journal_death, _stop_worker
from pumpwatch.segments.journal import EventJournal, read_events
from pumpwatch.segments.paths import list_segments
from pumpwatch.timeunits import US_PER_S as S

STREAM = "binance_spot"
T0 = 1_773_145_800 * S


def _killed_run(data: Path) -> None:
    """A run that journaled `start` and flushed trades into an open segment, then was killed."""
    import subprocess

    with EventJournal(data, STREAM, clock_us=lambda: T0) as j:
        j.record("start", pid=4242)
    code = f"""
import sys, time
from pumpwatch.segments.writer import SegmentWriter
w = SegmentWriter({str(data)!r}, {STREAM!r}, fsync=False, reserve=False)
w.append([({T0} + i, {T0} + 500 + i, "AUSDT", "A", "USDT", 1.0, 1.0, "buy", str(i)) for i in range(20)])
w.flush()
print("flushed", flush=True)
time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"flushed\n"
    finally:
        proc.kill()
        proc.wait()


def test_a_worker_killed_at_shutdown_is_sealed_and_journaled_crashed(tmp_path: Path, monkeypatch) -> None:
    _killed_run(tmp_path)
    monkeypatch.setattr(supervisor, "WORKER_STOP_TIMEOUT_S", 0.5)

    async def main() -> WorkerHandle:
        handle = WorkerHandle("binance", (STREAM,))
        code = (
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print(1, flush=True); time.sleep(60)"
        )
        handle.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
        )
        assert handle.proc.stdout is not None
        await handle.proc.stdout.readline()  # its SIGTERM handler is in place
        await _stop_worker(handle, str(tmp_path))
        return handle

    handle = asyncio.run(main())
    assert handle.failed_stop and handle.proc is not None and handle.proc.returncode == -9
    assert [s.sealed for s in list_segments(tmp_path, [STREAM])] == [True]
    crashed = [e for e in read_events(tmp_path, STREAM) if e["event"] == "crashed"]
    assert [(e["durable_us"], e["pid"]) for e in crashed] == [(T0 + 19, 4242)]


def test_the_death_mark_names_the_exit_code(tmp_path: Path) -> None:
    _journal_death(str(tmp_path), [STREAM], "worker binance (pid 1) exited with code -9", -9)
    (e,) = read_events(tmp_path, STREAM)
    assert (e["event"], e["exit_code"]) == ("gap_start", -9)


@pytest.mark.parametrize("crashed", [True, False])
def test_the_recovery_child_journals_crashed_only_when_asked(tmp_path: Path, crashed: bool) -> None:
    import subprocess

    _killed_run(tmp_path)
    cmd = [
        sys.executable,
        "-m",
        "pumpwatch.recorder.killed",
        "--data-dir",
        str(tmp_path),
        "--streams",
        STREAM,
    ]
    done = subprocess.run([*cmd, *(["--crashed"] if crashed else [])], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [s.sealed for s in list_segments(tmp_path, [STREAM])] == [True]
    kinds = [e["event"] for e in read_events(tmp_path, STREAM)]
    assert kinds == (["start", "crashed"] if crashed else ["start"])
