"""The worker process: status lines, stream locks, argument checks, live symbol reload, clean stop."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pumpwatch.errors import EXIT_FATAL
from pumpwatch.recorder import worker
from pumpwatch.recorder.sim.binance import sim_protocol
from pumpwatch.recorder.sim.instruments import sim_instrument
from pumpwatch.recorder.sim.server import SimExchange
from pumpwatch.recorder.stream.stats import RunnerStats
from pumpwatch.recorder.symbols import write_symbols
from pumpwatch.recorder.worker import StatusTracker, journal_stats, run_worker
from pumpwatch.segments.coverage import coverage, coverage_from_events
from pumpwatch.segments.journal import EventJournal, read_events
from pumpwatch.segments.paths import list_segments
from pumpwatch.segments.reader import read_segment
from pumpwatch.settings import Settings


def test_status_line_reports_rate_lag_and_counters() -> None:
    tracker = StatusTracker("okx_spot", queue_warn_rows=1000)
    stats = RunnerStats(trades=0, reconnects=2, parse_errors=3, connected=1, lag_us=12_300)
    t0 = tracker._last[0]
    stats.trades = 500
    stats.last_trade_recv_us = t0 + 9_500_000
    line = tracker.line(stats, 40, t0 + 10_000_000)
    assert line == (
        "okx_spot: 50.0 trades/s, lag 12.3 ms, reconnects 2, parse errors 3, last trade 0.5 s ago, "
        "writer queue 40 rows, connections 1"
    )
    stats.trades = 600
    assert tracker.line(stats, 0, t0 + 20_000_000).startswith("okx_spot: 10.0 trades/s")


def test_growing_writer_queue_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    tracker = StatusTracker("gate_spot", queue_warn_rows=10_000)
    stats = RunnerStats()
    caplog.set_level(logging.WARNING, logger="pumpwatch.recorder.worker")
    now = tracker._last[0]
    for i, queue in enumerate([10, 20, 30, 40, 50, 60]):
        tracker.line(stats, queue, now + i)
    assert not caplog.records  # a small queue going up for a while is noise
    for i, queue in enumerate([5, 1000, 1100]):  # the dip to 5 restarts the count
        tracker.line(stats, queue, now + 10 + i)
    assert not caplog.records  # growing for two intervals only
    tracker.line(stats, 1200, now + 20)
    assert ["growing for 3 intervals" in r.getMessage() for r in caplog.records] == [True]
    caplog.clear()
    tracker.line(stats, 20_000, now + 21)
    assert [
        "over the warning mark" in r.getMessage() or "growing" in r.getMessage() for r in caplog.records
    ] == [True]


def test_a_stream_is_never_recorded_by_two_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "LOCK_WAIT_S", 0.3)
    held = worker._lock_streams(str(tmp_path), ["bybit_spot"])
    try:
        # flock is per open file description: a second open in this process conflicts too
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="bybit_spot is still being recorded"):
            worker._lock_streams(str(tmp_path), ["bybit_futures", "bybit_spot"])
        assert time.monotonic() - t0 >= 0.3
        assert (tmp_path / "run" / "bybit_spot.lock").read_text() == f"{os.getpid()}\n"
    finally:
        for fd in held:
            os.close(fd)
    again = worker._lock_streams(str(tmp_path), ["bybit_spot"])
    for fd in again:
        os.close(fd)


def test_main_refuses_streams_of_another_exchange(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = worker.main(["--exchange", "okx", "--streams", "okx_spot,gate_spot", "--data-dir", str(tmp_path)])
    assert rc == EXIT_FATAL  # was the UsageError's 2; now the status that says "do not restart me"
    assert "gate_spot do not belong to exchange okx" in capsys.readouterr().err


def test_worker_records_reloads_symbols_live_and_stops_cleanly(tmp_path: Path) -> None:
    stream = "binance_spot"
    aaa, bbb = sim_instrument(stream, "AAA"), sim_instrument(stream, "BBB")
    settings = Settings()
    settings.data_dir = str(tmp_path / "data")
    settings.recorder.symbols_file = str(tmp_path / "symbols.yaml")
    settings.recorder.symbols_reload_s = 0.2
    settings.recorder.heartbeat_s = 0.2
    settings.recorder.status_interval_s = 0.2
    settings.storage.flush_interval_s = 0.1
    settings.logging.file = False
    write_symbols(settings.recorder.symbols_file, {stream: [aaa]})

    async def main() -> int:
        async with SimExchange(sim_protocol("spot"), [aaa, bbb]) as sim:
            settings.streams[stream].ws_url = sim.ws_url
            settings.streams[stream].rest_url = sim.rest_url
            stop = asyncio.Event()
            task = asyncio.create_task(run_worker(settings, [stream], stop))

            async def until(cond: object, what: str) -> None:
                for _ in range(300):
                    if cond():  # type: ignore[operator]
                        return
                    await asyncio.sleep(0.05)
                raise AssertionError(what)

            await until(
                lambda: any(s.subscribed == {"AAAUSDT"} for s in sim.sessions()), "first subscription"
            )
            t_us = time.time_ns() // 1000
            sim.publish([(t_us, t_us, "AAAUSDT", "AAA", "USDT", 2.5, 1.25, "buy", "7")])
            write_symbols(settings.recorder.symbols_file, {stream: [aaa, bbb]})
            await until(lambda: any("BBBUSDT" in s.subscribed for s in sim.sessions()), "live reload")
            sim.publish([(t_us + 1000, t_us + 1000, "BBBUSDT", "BBB", "USDT", 3.5, 0.5, "sell", "8")])
            await until(lambda: len(sim.sent_rows()) == 2, "both trades sent")
            await asyncio.sleep(0.3)
            assert sim.connections == 1  # the reload did not reconnect
            stop.set()
            return await asyncio.wait_for(task, 20)

    assert asyncio.run(main()) == 0
    segs = list_segments(settings.data_dir, [stream])
    assert [s.sealed for s in segs] == [True]
    rows = [r for b in read_segment(segs[0], 0, 2**62) for r in b.to_pylist()]
    assert [(r["symbol"], r["base"], r["price"], r["qty"], r["side"], r["trade_id"]) for r in rows] == [
        ("AAAUSDT", "AAA", 2.5, 1.25, "buy", "7"),
        ("BBBUSDT", "BBB", 3.5, 0.5, "sell", "8"),
    ]
    events = read_events(settings.data_dir, stream)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "stop"
    assert "alive" in kinds and kinds.count("subscribed") == 2
    stats = [e for e in events if e["event"] == "stats"]
    assert stats, "no stats line journaled"
    for e in stats:
        assert set(e) == {"ts", "event", "conn", *STATS_FIELDS}
        assert e["conn"] is None and all(type(e[f]) is int and e[f] >= 0 for f in STATS_FIELDS)
    trades = [e["trades"] for e in stats]
    assert trades == sorted(trades) and trades[-1] <= 2  # cumulative, never more than was sent


STATS_FIELDS = (
    "frames",
    "trades",
    "parse_errors",
    "reconnects",
    "duplicates",
    # issue 10: the live repair's counters
    "id_holes",
    "repairs",
    "repaired_trades",
    "repair_calls",
    "repair_rate_limited",
    "repair_queue",
)


def test_stats_are_journaled_field_by_field_and_leave_coverage_unchanged(tmp_path: Path) -> None:
    stream = "okx_spot"
    data = str(tmp_path)
    s = 1_767_225_600_000_000
    base_events: list[tuple[str, str | None, dict[str, Any]]] = [
        ("start", None, {}),
        ("connected", "okx_spot-1", {"url": "ws://x"}),
        ("subscribed", "okx_spot-1", {"symbols": ["AAA-USDT"], "bases": ["AAA"]}),
        ("alive", None, {}),
        ("disconnected", "okx_spot-1", {"reason": "closed by server: code 1006"}),
        ("connected", "okx_spot-2", {"url": "ws://x"}),
        ("subscribed", "okx_spot-2", {"symbols": ["AAA-USDT"], "bases": ["AAA"]}),
        ("alive", None, {}),
    ]
    plain = [{"ts": s + i * 1_000_000, "event": e, "conn": c, **f} for i, (e, c, f) in enumerate(base_events)]
    with EventJournal(data, stream) as journal:
        for i, (event, conn, fields) in enumerate(base_events):
            journal.record(event, conn=conn, ts_us=s + i * 1_000_000, **fields)
            if i < len(base_events) - 1:  # a stats line between every two events, never the last
                st = RunnerStats(
                    frames=10 * i, trades=7 * i, parse_errors=i, reconnects=i // 4, duplicates=2 * i
                )
                journal_stats(_AtTime(journal, s + i * 1_000_000 + 500_000), st)
    events = read_events(data, stream)
    stats = [e for e in events if e["event"] == "stats"]
    assert len(stats) == len(base_events) - 1
    assert stats[3] == {
        "ts": s + 3_500_000,
        "event": "stats",
        "conn": None,
        "frames": 30,
        "trades": 21,
        "parse_errors": 3,
        "reconnects": 0,
        "duplicates": 6,
    }
    now = s + 8_000_000
    for window in [(s, s + 7_000_000), (s + 3_000_000, s + 6_000_000), (s + 4_200_000, s + 4_800_000)]:
        for base in (None, "AAA", "BBB"):
            with_stats = coverage(data, stream, *window, base=base, now_us=now)
            without = coverage_from_events(plain, *window, base=base, now_us=now)
            assert with_stats == without, (window, base)
    gap = coverage(data, stream, s, s + 7_000_000, base="AAA", now_us=now)
    assert gap.gaps == [(s, s + 2_000_000), (s + 4_000_000, s + 6_000_000)]


class _AtTime:
    """An EventJournal whose `record` writes at a fixed time (journal_stats takes the clock's now)."""

    def __init__(self, journal: EventJournal, ts_us: int) -> None:
        self.journal, self.ts_us = journal, ts_us

    def record(self, event: str, **fields: object) -> None:
        self.journal.record(event, ts_us=self.ts_us, **fields)


def test_a_worker_never_loads_pandas_even_when_pyarrow_asks() -> None:
    # A fresh interpreter: pyarrow's `pa.array(numpy array)` imports pandas when it can.
    code = (
        "import sys\n"
        "from pumpwatch.recorder.worker import forbid_heavy_imports\n"
        "forbid_heavy_imports()\n"
        "import numpy as np, pyarrow as pa\n"
        "b = pa.record_batch([pa.array([1, 2, 3])], names=['a'])\n"
        "print(b.filter(pa.array(np.array([True, False, True]))).column(0).to_pylist())\n"
        "print(sorted(m for m in ('pandas', 'matplotlib') if m in sys.modules))\n"
        "try:\n    import pandas\nexcept ImportError as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.splitlines() == [
        "[1, 3]",
        "[]",
        "ModuleNotFoundError pandas is not used in a recorder worker",
    ]


def test_a_restarted_worker_knows_the_trades_on_disk_batch_by_batch(tmp_path: Path) -> None:
    # Phemex replays its last 200 trades after a subscribe and has no trade ids: a restarted worker
    # must drop the replayed trades its predecessor stored, twin fills split across two stored
    # batches included, and keep the ones it never stored.
    from pumpwatch.recorder.worker import StreamPipeline
    from pumpwatch.segments.writer import SegmentWriter

    stream = "phemex_futures"
    settings = Settings()
    settings.data_dir = str(tmp_path / "data")
    inst = sim_instrument(stream, "AAA")
    t0 = time.time_ns() // 1000 - 30_000_000
    row = lambda i, price: (t0 + i, t0 + i, inst.symbol, "AAA", "USDT", price, 1.0, "buy", None)  # noqa: E731
    twin = row(5, 2.0)
    stored = [[row(i, 1.0 + i) for i in range(5)] + [twin], [twin, row(6, 9.0)]]
    writer = SegmentWriter(settings.data_dir, stream, flush_interval_s=60.0)
    for batch in stored:
        writer.append(batch)
        writer.flush()  # one record batch each
    writer.close()
    pipe = StreamPipeline(settings, stream, {inst.symbol: inst})
    try:
        assert pipe.prime_dedupe(settings.data_dir) == 8
        fresh = row(7, 10.0)
        replay = [*stored[0][:-1], twin, twin, row(6, 9.0), fresh]
        assert pipe.runner.dedupe.filter(replay) == [fresh]
        assert pipe.runner.dedupe.filter([twin, twin, twin]) == [twin]  # a third twin is genuine
    finally:
        pipe.close()


def test_a_stream_locked_by_another_recorder_is_a_fatal_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(worker, "LOCK_WAIT_S", 0.2)
    monkeypatch.setattr(worker, "_die_with_parent", lambda: None)
    monkeypatch.delenv("PUMPWATCH_CONFIG", raising=False)
    held = worker._lock_streams(str(tmp_path), ["bybit_spot"])
    try:
        rc = worker.main(["--exchange", "bybit", "--streams", "bybit_spot", "--data-dir", str(tmp_path)])
    finally:
        for fd in held:
            os.close(fd)
    assert rc == EXIT_FATAL
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        f"pumpwatch worker: error: bybit_spot is still being recorded by another process "
        f"(pid {os.getpid()}); is another `pumpwatch record` using {tmp_path}?"
    )
    assert not (tmp_path / "journal").exists()  # nothing of the other recorder's was touched


def test_bad_adapter_options_are_a_fatal_exit_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(worker, "_die_with_parent", lambda: None)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"recorder: {{symbols_file: '{tmp_path / 'absent.yaml'}'}}\n"
        "logging: {file: false}\n"
        "streams: {okx_spot: {options: {channel: bogus}}}\n"
    )
    args = [
        "--exchange",
        "okx",
        "--streams",
        "okx_spot",
        "--config",
        str(config),
        "--data-dir",
        str(tmp_path),
    ]
    rc = worker.main(args)
    assert rc == EXIT_FATAL
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("pumpwatch worker: error: streams.okx_spot.options.channel: ")


def test_an_absent_symbols_file_waits_for_a_reload_instead_of_dying(tmp_path: Path) -> None:
    # The supervisor fetches the list before it starts workers; when that fetch failed, the
    # worker records nothing until its reload finds the file (a restart could not do better).
    settings = Settings()
    settings.data_dir = str(tmp_path / "data")
    settings.recorder.symbols_file = str(tmp_path / "absent.yaml")
    settings.streams["okx_spot"].ws_url = "ws://127.0.0.1:9"
    settings.streams["okx_spot"].rest_url = "http://127.0.0.1:9"

    async def main() -> int:
        stop = asyncio.Event()
        task = asyncio.create_task(run_worker(settings, ["okx_spot"], stop))
        for _ in range(200):
            await asyncio.sleep(0.05)
            if any(e["event"] == "start" for e in read_events(settings.data_dir, "okx_spot")):
                break
        stop.set()
        return await asyncio.wait_for(task, 20)

    assert asyncio.run(main()) == 0
    kinds = [e["event"] for e in read_events(settings.data_dir, "okx_spot")]
    assert kinds[0] == "start" and kinds[-1] == "stop"


def test_a_stream_absent_from_a_reloaded_symbols_file_keeps_its_current_list(tmp_path: Path) -> None:
    # `pumpwatch symbols` leaves a stream out when its fetch failed with no previous list to
    # keep; the worker must not read that as "subscribe nothing" and unsubscribe everything.
    okx, gate = "okx_spot", "gate_spot"
    path = tmp_path / "symbols.yaml"
    write_symbols(path, {okx: [sim_instrument(okx, "AAA")], gate: [sim_instrument(gate, "AAA")]})

    class Pipe:
        def __init__(self, stream: str) -> None:
            self.stream = stream
            self.instruments = {"X": object()}
            self.updates: list[set[str]] = []

        def update_instruments(self, instruments: Any) -> None:
            self.updates.append(set(instruments))

    pipes = [Pipe(okx), Pipe(gate)]

    async def main() -> None:
        stop, now = asyncio.Event(), asyncio.Event()
        loaded = path.stat().st_mtime_ns - 1  # the lists the pipes hold: before the change below
        task = asyncio.create_task(worker._reload_symbols(pipes, path, 60.0, stop, now, loaded))  # type: ignore[arg-type]
        write_symbols(path, {okx: [sim_instrument(okx, "AAA"), sim_instrument(okx, "BBB")]})  # gate absent
        now.set()
        for _ in range(200):
            await asyncio.sleep(0.01)
            if pipes[0].updates:
                break
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    assert pipes[0].updates == [{"AAA-USDT", "BBB-USDT"}]
    assert pipes[1].updates == []  # not emptied
