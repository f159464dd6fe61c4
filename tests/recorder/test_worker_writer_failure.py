"""A worker whose segment writer fails (review of issue 11): the failure is never silent.

A writer stopped by a bug makes the worker stop on its own with a non-zero exit (so the
supervisor journals the death and restarts it), its heartbeats stop vouching a crash bound,
and the trades it could not write are journaled ``dropped``. A writer that does not close
cleanly makes the exit non-zero and leaves no clean ``stop`` in the journal. A heartbeat's
crash bound lies the stream's recent feed lag before its time (windows are cut by exchange
time)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from pumpwatch.errors import StoreError
from pumpwatch.recorder.sim.binance import sim_protocol
from pumpwatch.recorder.sim.instruments import sim_instrument
from pumpwatch.recorder.sim.server import SimExchange
from pumpwatch.recorder.symbols import write_symbols
from pumpwatch.recorder.worker import heartbeat_durable_us, run_worker
from pumpwatch.segments.journal import read_events
from pumpwatch.segments.writer import SegmentWriter
from pumpwatch.settings import Settings

STREAM = "binance_spot"


def _settings(tmp_path: Path) -> Settings:
    settings = Settings()
    settings.data_dir = str(tmp_path / "data")
    settings.recorder.symbols_file = str(tmp_path / "symbols.yaml")
    settings.recorder.heartbeat_s = 0.2
    settings.recorder.status_interval_s = 60
    settings.storage.flush_interval_s = 0.1
    settings.logging.file = False
    settings.repair.live = False
    return settings


async def _until(cond: object, what: str, timeout_s: float = 15.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if cond():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(what)


def test_a_writer_stopped_by_a_bug_stops_the_worker_non_zero(tmp_path: Path, monkeypatch) -> None:
    settings = _settings(tmp_path)
    aaa = sim_instrument(STREAM, "AAA")
    write_symbols(settings.recorder.symbols_file, {STREAM: [aaa]})
    real_cycle = SegmentWriter._cycle
    broken = {"on": False}

    def cycle(self: SegmentWriter, closing: bool) -> None:
        if broken["on"]:
            raise RuntimeError("a bug in the writer")
        real_cycle(self, closing)

    monkeypatch.setattr(SegmentWriter, "_cycle", cycle)

    async def main() -> tuple[int, float]:
        async with SimExchange(sim_protocol("spot"), [aaa]) as sim:
            settings.streams[STREAM].ws_url = sim.ws_url
            settings.streams[STREAM].rest_url = sim.rest_url
            stop = asyncio.Event()  # never set: the worker must stop on its own
            task = asyncio.create_task(run_worker(settings, [STREAM], stop))
            await _until(lambda: any(s.subscribed == {"AAAUSDT"} for s in sim.sessions()), "subscribed")
            t = time.time_ns() // 1000
            sim.publish([(t, t, "AAAUSDT", "AAA", "USDT", 1.0, 1.0, "buy", "1")])
            await asyncio.sleep(0.5)
            broken["on"] = True
            t = time.time_ns() // 1000
            sim.publish(
                [(t + i, t + i, "AAAUSDT", "AAA", "USDT", 2.0, 1.0, "buy", str(10 + i)) for i in range(5)]
            )
            t0 = time.monotonic()
            rc = await asyncio.wait_for(task, 30)
            return rc, time.monotonic() - t0

    rc, took = asyncio.run(main())
    assert rc != 0 and took < 15
    events = read_events(settings.data_dir, STREAM)
    kinds = [e["event"] for e in events]
    assert "stop" not in kinds, "a failed writer is no clean stop"
    dropped = [e for e in events if e["event"] == "dropped"]
    assert sum(e["rows"] for e in dropped) == 5
    assert min(e["first_time_us"] for e in dropped) >= 0
    failed_at = next(i for i, e in enumerate(events) if e["event"] == "dropped")
    later_alive = [e for e in events[failed_at:] if e["event"] == "alive"]
    assert all(e.get("durable_us") is None for e in later_alive)


def test_a_writer_that_does_not_close_cleanly_makes_the_exit_non_zero(tmp_path: Path, monkeypatch) -> None:
    settings = _settings(tmp_path)
    settings.recorder.symbols_file = str(tmp_path / "absent.yaml")
    settings.streams["okx_spot"].ws_url = "ws://127.0.0.1:9"
    settings.streams["okx_spot"].rest_url = "http://127.0.0.1:9"
    real_close = SegmentWriter.close

    def close(self: SegmentWriter, timeout_s: float | None = None) -> None:
        real_close(self, timeout_s)
        raise StoreError(f"{self.stream}: segment writer did not stop within 5 s")

    monkeypatch.setattr(SegmentWriter, "close", close)

    async def main() -> int:
        stop = asyncio.Event()
        task = asyncio.create_task(run_worker(settings, ["okx_spot"], stop))
        await _until(
            lambda: any(e["event"] == "start" for e in read_events(settings.data_dir, "okx_spot")), "start"
        )
        stop.set()
        return await asyncio.wait_for(task, 20)

    assert asyncio.run(main()) != 0
    kinds = [e["event"] for e in read_events(settings.data_dir, "okx_spot")]
    assert kinds[0] == "start" and "stop" not in kinds


def test_the_heartbeat_bound_lies_the_recent_feed_lag_before_now(tmp_path: Path) -> None:
    # a trade received just after a heartbeat that found the queue empty, lost to kill -9, has an
    # exchange time up to the feed's lag before the heartbeat
    w = SegmentWriter(tmp_path, STREAM, reserve=False, fsync=False)
    now = time.time_ns() // 1000
    lag = 2_500_000
    w.append([(now - lag - i, now - i, "AUSDT", "A", "USDT", 1.0, 1.0, "buy", str(i)) for i in range(10)])
    w.flush()
    assert w.recent_max_lag_us == lag
    assert heartbeat_durable_us(w, now) == now - lag
    w.append([(now, now, "AUSDT", "A", "USDT", 1.0, 1.0, "buy", "x")])
    assert heartbeat_durable_us(w, now) is None or w.queue_rows == 0
    w.close()


@pytest.mark.parametrize("failed", [None, "a bug"])
def test_a_failed_writer_vouches_no_bound(failed: str | None) -> None:
    class W:
        queue_rows = 0
        recent_max_lag_us = 0

    w = W()
    w.failed = failed  # type: ignore[attr-defined]
    assert (heartbeat_durable_us(w, 10**15) is None) == (failed is not None)
