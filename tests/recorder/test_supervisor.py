"""The supervisor's process handling, with stand-in worker scripts (the real worker is covered in e2e)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from pumpwatch.errors import EXIT_FATAL, ConfigError
from pumpwatch.recorder import supervisor
from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.supervisor import (
    WorkerHandle,
    group_by_exchange,
    keep_worker,
    run_supervisor,
    worker_command,
)
from pumpwatch.recorder.symbols import write_symbols
from pumpwatch.segments.journal import read_events
from pumpwatch.settings import Settings

# A stand-in worker: logs its start, dies with code 3 for its first `fails` runs (with code
# -fails on every run when `fails` is negative), then runs until SIGTERM and logs that it was
# asked to stop.
FAKE_WORKER = """
import pathlib, signal, sys, time
log = pathlib.Path(sys.argv[1]); fails = int(sys.argv[2]); name = sys.argv[3]
starts = log.read_text().count(f"start {name}") if log.exists() else 0
with log.open("a") as fh: fh.write(f"start {name}\\n")
if fails < 0: sys.exit(-fails)
if starts < fails: sys.exit(3)
def term(*_):
    with log.open("a") as fh: fh.write(f"term {name}\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
while True: time.sleep(0.05)
"""


def _settings(tmp_path: Path) -> Settings:
    s = Settings()
    s.data_dir = str(tmp_path / "data")
    s.recorder.worker_restart_max_s = 0.2
    s.recorder.symbols_file = str(tmp_path / "symbols.yaml")
    s.upbit.enabled = False
    s.symbols.refresh_s = 0.0
    return s


def _fake(monkeypatch: pytest.MonkeyPatch, log: Path, fails: int) -> None:
    def command(exchange: str, streams: Sequence[str], **_kw: object) -> list[str]:
        return [sys.executable, "-c", FAKE_WORKER, str(log), str(fails), exchange]

    monkeypatch.setattr(supervisor, "worker_command", command)


def test_group_by_exchange_and_command() -> None:
    groups = group_by_exchange(["okx_futures", "binance_spot", "okx_spot", "binance_futures"])
    assert groups == {"binance": ("binance_spot", "binance_futures"), "okx": ("okx_futures", "okx_spot")}
    cmd = worker_command("okx", ["okx_spot", "okx_futures"], config="c.yaml", data_dir="/d")
    assert cmd[:3] == [sys.executable, "-m", "pumpwatch.recorder.worker"]
    assert cmd[3:] == [
        "--exchange",
        "okx",
        "--streams",
        "okx_spot,okx_futures",
        "--data-dir",
        "/d",
        "--config",
        str(Path("c.yaml").absolute()),
    ]


def test_dead_worker_is_restarted_and_each_death_journaled_as_a_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "worker.log"
    _fake(monkeypatch, log, fails=2)
    settings = _settings(tmp_path)
    handle = WorkerHandle("gate", ("gate_spot", "gate_futures"))

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(keep_worker(handle, settings, None, stop))
        for _ in range(200):
            await asyncio.sleep(0.05)
            if handle.starts == 3 and log.read_text().count("start") == 3:
                break
        await asyncio.sleep(0.3)  # the third run stays up
        assert handle.starts == 3
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(main())
    assert handle.exit_codes == [3, 3]
    assert log.read_text().splitlines() == ["start gate", "start gate", "start gate", "term gate"]
    for stream in ("gate_spot", "gate_futures"):
        gaps = [e for e in read_events(settings.data_dir, stream) if e["event"] == "gap_start"]
        assert len(gaps) == 2
        assert all("worker gate" in e["reason"] and "exited with code 3" in e["reason"] for e in gaps)
        assert gaps[0]["ts"] < gaps[1]["ts"]


def test_restart_backoff_doubles_up_to_the_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "worker.log"
    _fake(monkeypatch, log, fails=100)
    settings = _settings(tmp_path)
    settings.recorder.worker_restart_max_s = 0.4
    handle = WorkerHandle("bybit", ("bybit_spot",))
    sleeps: list[float] = []
    real_sleep = supervisor._sleep_unless

    async def spy(stop: asyncio.Event, seconds: float) -> bool:
        sleeps.append(seconds)
        return await real_sleep(stop, 0.0)

    monkeypatch.setattr(supervisor, "_sleep_unless", spy)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(keep_worker(handle, settings, None, stop))
        while len(sleeps) < 5:
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(main())
    assert sleeps[:5] == [0.4, 0.4, 0.4, 0.4, 0.4]  # first delay is min(1 s, cap)
    settings.recorder.worker_restart_max_s = 5.0
    sleeps.clear()
    handle = WorkerHandle("bybit", ("bybit_spot",))

    async def main2() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(keep_worker(handle, settings, None, stop))
        while len(sleeps) < 5:
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(main2())
    assert sleeps[:5] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_run_supervisor_starts_one_worker_per_exchange_and_stops_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "worker.log"
    _fake(monkeypatch, log, fails=0)
    settings = _settings(tmp_path)
    settings.recorder.workers = 0  # one per exchange (the default 1 is in tests/e2e/test_workers_e2e.py)
    write_symbols(settings.recorder.symbols_file, {"okx_spot": [Instrument("A-USDT", "A", "USDT")]})

    async def main() -> int:
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_supervisor(settings, ["okx_spot", "okx_futures", "gate_spot"], stop=stop)
        )
        for _ in range(200):
            await asyncio.sleep(0.05)
            if log.exists() and log.read_text().count("start") == 2:
                break
        await asyncio.sleep(0.2)
        stop.set()
        return await asyncio.wait_for(task, 20)

    assert asyncio.run(main()) == 0
    lines = sorted(log.read_text().splitlines())
    assert lines == ["start gate", "start okx", "term gate", "term okx"]
    assert not [e for e in read_events(settings.data_dir, "okx_spot") if e["event"] == "gap_start"]


def test_the_shipped_example_counts_as_no_symbols_file(tmp_path: Path) -> None:
    repo_example = Path(__file__).resolve().parents[2] / "config" / "symbols.yaml"
    assert supervisor.is_real_symbols_file(repo_example) is False
    assert supervisor.is_real_symbols_file(tmp_path / "absent.yaml") is False
    real = tmp_path / "real.yaml"
    write_symbols(real, {"okx_spot": [Instrument("A-USDT", "A", "USDT")]})
    assert supervisor.is_real_symbols_file(real) is True
    binary = tmp_path / "binary.yaml"  # the preflight reports it; this check must not crash on it
    binary.write_bytes(b"\xff\xfe\x00\x89PNG\n" * 10)
    assert supervisor.is_real_symbols_file(binary) is True
    cmd = supervisor.symbols_command(None, "/d", ["okx_spot", "gate_spot"])
    assert cmd == [
        sys.executable,
        "-m",
        "pumpwatch",
        "symbols",
        "--data-dir",
        "/d",
        "--streams",
        "okx_spot,gate_spot",
    ]


def test_lean_entry_point_records_and_stops_without_the_cli_libraries(tmp_path: Path) -> None:
    # `python -m pumpwatch.recorder.supervisor` is `pumpwatch record` minus the CLI layer: the
    # always-on process must not hold pydantic (typer loads it) or pyarrow.
    import signal
    import subprocess

    import psutil
    import yaml

    settings = _settings(tmp_path)
    write_symbols(settings.recorder.symbols_file, {"okx_spot": [Instrument("A-USDT", "A", "USDT")]})
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": settings.data_dir,
                "recorder": {"symbols_file": settings.recorder.symbols_file},
                "symbols": {"refresh": 0},
                "upbit": {"enabled": False},
                "metrics": {"enabled": False},
                "logging": {"file": False},
                # a closed local port: the worker keeps reconnecting, which is all this test needs
                "streams": {"okx_spot": {"ws_url": "ws://127.0.0.1:9", "rest_url": "http://127.0.0.1:9"}},
            }
        )
    )
    cmd = [sys.executable, "-m", "pumpwatch.recorder.supervisor", "--config", str(config)]
    proc = subprocess.Popen([*cmd, "--streams", "okx_spot"], stderr=subprocess.PIPE, text=True)
    try:
        sup = psutil.Process(proc.pid)
        for _ in range(300):
            workers = [c for c in sup.children() if "--exchange" in _cmdline(c)]
            if workers and any(e["event"] == "start" for e in read_events(settings.data_dir, "okx_spot")):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("no worker started")
        assert workers[0].cmdline()[-6:-4] == ["--streams", "okx_spot"]
        libs = {m.path.rsplit("/", 1)[-1].split(".")[0] for m in sup.memory_maps() if m.path.startswith("/")}
        assert "_pydantic_core" not in libs and "libarrow" not in libs
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    kinds = [e["event"] for e in read_events(settings.data_dir, "okx_spot")]
    assert kinds[0] == "start" and kinds[-1] == "stop"
    bad = subprocess.run(
        [*cmd[:-1], str(tmp_path / "missing.yaml")], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == ConfigError("x").exit_code
    assert (
        bad.stderr.startswith("pumpwatch record: error: cannot read config ") and bad.stderr.count("\n") == 1
    )


def test_a_fatal_worker_exit_stops_record_instead_of_restarting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "worker.log"
    _fake(monkeypatch, log, fails=-EXIT_FATAL)
    settings = _settings(tmp_path)
    write_symbols(settings.recorder.symbols_file, {"okx_spot": [Instrument("A-USDT", "A", "USDT")]})

    async def main() -> int:
        stop = asyncio.Event()
        return await asyncio.wait_for(run_supervisor(settings, ["okx_spot", "gate_spot"], stop=stop), 30)

    assert asyncio.run(main()) == EXIT_FATAL
    lines = sorted(log.read_text().splitlines())
    # one start each at most: the first fatal exit stops everything (the other worker is asked
    # to stop, or is itself fatal, possibly before it logged its start), nothing is restarted
    assert 1 <= len(lines) <= 2
    assert lines.count("start okx") <= 1 and lines.count("start gate") <= 1
    for stream in ("okx_spot", "gate_spot"):  # never recorded: no gap to journal
        assert not [e for e in read_events(settings.data_dir, stream) if e["event"] == "gap_start"]


def test_a_real_worker_with_bad_settings_stops_record_after_one_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    # The preflight is skipped here (run_supervisor directly), as when the config file changed
    # between the check and a worker's start: the worker itself must end it, not loop.
    import yaml

    from pumpwatch.settings import load_settings

    settings = _settings(tmp_path)
    write_symbols(settings.recorder.symbols_file, {"binance_spot": [Instrument("AUSDT", "A", "USDT")]})
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": settings.data_dir,
                "recorder": {"symbols_file": settings.recorder.symbols_file, "worker_restart_max": "200ms"},
                "symbols": {"refresh": 0},
                "upbit": {"enabled": False},
                "metrics": {"enabled": False},
                "logging": {"file": False},
                "streams": {"binance_spot": {"options": {"channel": "bogus"}}},
            }
        )
    )
    loaded = load_settings(config)
    caplog.set_level("INFO", logger="pumpwatch.recorder.supervisor")
    started = time.monotonic()

    async def main() -> int:
        return await asyncio.wait_for(run_supervisor(loaded, ["binance_spot"], config=config), 60)

    assert asyncio.run(main()) == EXIT_FATAL
    starts = [r for r in caplog.records if "worker binance started" in r.getMessage()]
    assert len(starts) == 1, [r.getMessage() for r in caplog.records]
    assert time.monotonic() - started < 30
    err = capfd.readouterr().err
    assert "pumpwatch worker: error: streams.binance_spot.options.channel: " in err
    assert "Traceback" not in err
    assert not [e for e in read_events(settings.data_dir, "binance_spot") if e["event"] == "gap_start"]


def _cmdline(proc: object) -> list[str]:
    """A child's command line; [] for one that just exited (a short-lived child such as the
    subscription refresh is a zombie until the supervisor reaps it)."""
    import psutil

    try:
        return list(proc.cmdline())  # type: ignore[attr-defined]
    except (psutil.ZombieProcess, psutil.NoSuchProcess):
        return []
