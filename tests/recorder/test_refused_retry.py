"""A refused symbol is asked again (review of issue 12): an exchange that refuses a symbol
several times and then accepts it (OKX 60014 under load, a gateway that does not know a
just-announced listing yet) gets it recorded by the running worker, without a restart; the
refusal is journaled once, not at every retry, and ``not_recorded`` shows the next retry."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from pumpwatch.recorder.sim.binance import sim_protocol
from pumpwatch.recorder.sim.instruments import sim_instrument
from pumpwatch.recorder.sim.server import SimExchange
from pumpwatch.recorder.stream import runner as runner_module
from pumpwatch.recorder.symbols import write_symbols
from pumpwatch.recorder.worker import run_worker
from pumpwatch.segments.journal import read_events
from pumpwatch.segments.paths import list_segments
from pumpwatch.segments.reader import read_segment
from pumpwatch.settings import Settings


def test_a_symbol_refused_three_times_is_recorded_by_the_running_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pumpwatch.recorder.stream")
    # the backoff of a refused symbol, shrunk: 0.2 s doubling to 0.4 s (30 s to 10 min live)
    monkeypatch.setattr(runner_module, "REJECT_RETRY_INITIAL_S", 0.2)
    monkeypatch.setattr(runner_module, "REJECT_RETRY_MAX_S", 0.4)
    monkeypatch.setattr(runner_module, "HEALTH_INTERVAL_S", 0.05)  # 10 s live: the test sees each state
    stream = "binance_spot"
    aaa, new = sim_instrument(stream, "AAA"), sim_instrument(stream, "NEW")
    settings = Settings()
    settings.data_dir = str(tmp_path / "data")
    settings.recorder.symbols_file = str(tmp_path / "symbols.yaml")
    settings.recorder.heartbeat_s = 0.2
    settings.storage.flush_interval_s = 0.1
    settings.logging.file = False
    settings.repair.live = False
    write_symbols(settings.recorder.symbols_file, {stream: [aaa, new]})

    def refusals() -> int:
        return sum(
            1
            for r in caplog.records
            if "NEWUSDT rejected:" in r.getMessage() or "NEWUSDT refused again" in r.getMessage()
        )

    async def main() -> int:
        async with SimExchange(sim_protocol("spot"), [aaa, new]) as sim:
            sim.reject(["NEWUSDT"])  # the gateway does not know it yet
            settings.streams[stream].ws_url = sim.ws_url
            settings.streams[stream].rest_url = sim.rest_url
            stop = asyncio.Event()
            task = asyncio.create_task(run_worker(settings, [stream], stop))

            async def until(cond: object, what: str, timeout_s: float = 15.0) -> None:
                deadline = time.monotonic() + timeout_s
                while not cond():  # type: ignore[operator]
                    assert time.monotonic() < deadline, what
                    await asyncio.sleep(0.02)

            await until(lambda: any("AAAUSDT" in s.subscribed for s in sim.sessions()), "AAA subscribed")
            await until(lambda: refusals() >= 3, "refused three times")
            sim.allow(["NEWUSDT"])  # ... and now it does
            await until(lambda: any("NEWUSDT" in s.subscribed for s in sim.sessions()), "NEW subscribed")
            t_us = time.time_ns() // 1000
            sim.publish([(t_us, t_us, "NEWUSDT", "NEW", "USDT", 2.5, 1.25, "buy", "7")])
            await until(lambda: len(sim.sent_rows()) == 1, "the trade sent")
            await asyncio.sleep(0.3)
            assert sim.connections == 1  # no reconnect, no restart: retries on the live connection
            stop.set()
            return await asyncio.wait_for(task, 20)

    assert asyncio.run(main()) == 0
    segs = list_segments(settings.data_dir, [stream])
    rows = [r for seg in segs for b in read_segment(seg, 0, 2**62) for r in b.to_pylist()]
    assert [(r["symbol"], r["price"], r["trade_id"]) for r in rows] == [("NEWUSDT", 2.5, "7")]
    events = read_events(settings.data_dir, stream)
    rejected = [e for e in events if e["event"] == "rejected"]
    assert [e["symbols"] for e in rejected] == [["NEWUSDT"]]  # once, not at every retry
    subscribed = [s for e in events if e["event"] == "subscribed" for s in e["symbols"]]
    assert sorted(subscribed) == ["AAAUSDT", "NEWUSDT"]
    reported = [e["symbols"] for e in events if e["event"] == "not_recorded"]
    assert any(
        m.get("NEWUSDT", "").startswith("rejected: ") and "(next retry " in m["NEWUSDT"] for m in reported
    ), reported
    assert reported[-1] == {}  # recorded again at the end
    warned = [r for r in caplog.records if "NEWUSDT rejected:" in r.getMessage()]
    assert len(warned) == 1


def test_retries_alone_journal_the_map_at_most_every_ten_minutes() -> None:
    # A refused symbol retried every 0.2 s: its next retry time changes at every check, but the
    # `not_recorded` map is journaled at its state changes only (and the log says nothing new).
    import asyncio as aio

    from helpers.json_exchange import Harness, make_adapter, make_protocol

    records: list[dict[str, str]] = []

    class Journal:
        def __getattr__(self, name: str) -> object:
            def call(*args: object, **kwargs: object) -> None:
                if name == "record" and args[0] == "not_recorded":
                    records.append(dict(kwargs["symbols"]))  # type: ignore[call-overload]

            return call

    async def main() -> dict[str, str]:
        h = Harness(
            make_adapter(),
            make_protocol(),
            ["AAA", "BAD"],
            reject_retry_initial_s=0.1,
            reject_retry_max_s=0.2,
            health_interval_s=0.05,
        )
        h.journal = Journal()  # type: ignore[assignment]
        h.sim.reject(["BADUSDT"])
        async with h:
            await h.until(lambda: "BADUSDT" in h.runner.stats.not_recorded)
            first = h.runner.stats.not_recorded["BADUSDT"]
            await h.until(lambda: h.runner.refused["BADUSDT"].refusals >= 5)
            await h.until(lambda: h.runner.stats.not_recorded["BADUSDT"] != first)  # the map moved on
            await aio.sleep(0.2)
            return dict(h.runner.stats.not_recorded)

    later = aio.run(aio.wait_for(main(), 30))
    assert later["BADUSDT"].startswith("rejected: no such symbol (next retry ")
    assert len(records) == 1 and list(records[0]) == ["BADUSDT"]  # one line: the state change
