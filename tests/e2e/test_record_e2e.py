"""End-to-end fault tests: `pumpwatch record` as a real subprocess against local exchanges.

Every stream whose adapter and simulated server exist takes part (all twelve once present).
Short forms by default; PUMPWATCH_SOAK=long runs longer storms and more rotations.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from helpers.e2e import (
    SOAK_LONG,
    WAIT_S,
    Market,
    Recorder,
    available_streams,
    check_exactly_once,
    disk_rows,
    now_us,
    open_segments,
    poll,
    recv_us,
    wait_listening,
    wait_on_disk,
)

from pumpwatch.segments.coverage import coverage
from pumpwatch.segments.journal import read_events
from pumpwatch.streams import split_stream
from pumpwatch.timeunits import US_PER_S

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # generous: a loaded 2-core CI box
# How long before a kill the recorder's last journal line may be: the heartbeat is 1 s, plus
# slack for an event loop slowed down by a loaded machine.
LAST_SIGN_OF_LIFE_US = 3 * US_PER_S

STREAMS = available_streams()
if not STREAMS:  # pragma: no cover - the adapters are part of the project
    pytest.skip("no adapter available yet", allow_module_level=True)


def _run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(body())


def _gaps(data_dir: Path, stream: str, start_us: int, end_us: int) -> list[tuple[int, int]]:
    cov = coverage(data_dir, stream, start_us, end_us, heartbeat_s=1.0, now_us=now_us())
    assert cov.known, f"{stream}: the journal knows nothing about the window"
    return cov.gaps


def _events(data_dir: Path, stream: str, kind: str) -> list[dict[str, object]]:
    return [e for e in read_events(data_dir, stream) if e["event"] == kind]


def test_sigterm_flushes_seals_and_exits_zero(tmp_path: Path) -> None:
    """(e) SIGTERM: exit 0, every segment sealed, every trade sent is on disk once, journal closed."""

    async def body() -> None:
        async with Market(STREAMS) as market:
            config = market.write_config(tmp_path)
            rec = Recorder(config, tmp_path)
            await rec.start_listening(market, tmp_path / "data", STREAMS)
            t0 = now_us()
            await market.trade_for(2.0)
            await asyncio.sleep(0.5)
            t1 = now_us()
            assert await rec.terminate() == 0
        data = tmp_path / "data"
        assert open_segments(data) == []
        for stream in STREAMS:
            sent, _stored = check_exactly_once(market, data, stream)
            assert sent > 20, f"{stream}: only {sent} trades went out"
            assert _gaps(data, stream, t0, t1) == []
            assert len(_events(data, stream, "start")) == 1
            assert len(_events(data, stream, "stop")) == 1
            assert _events(data, stream, "alive"), f"{stream}: no heartbeat"

    _run(body)


def test_disconnect_storm_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """(a) Repeated drop_all while trading: sent trades on disk exactly once, outages journaled."""
    drops = 20 if SOAK_LONG else 4

    async def body() -> None:
        async with Market(STREAMS) as market:
            data = tmp_path / "data"
            rec = Recorder(market.write_config(tmp_path), tmp_path)
            await rec.start_listening(market, data, STREAMS)
            t0 = now_us()
            outages: list[tuple[int, int]] = []  # (just before the drop, journal listens again)
            for _ in range(drops):
                await market.trade_for(0.6)
                dropped = market.session_ids()
                t_drop = now_us()
                for sim in market.sims.values():
                    sim.drop_all()
                # Keep trading through the outage, until the recorder is back on new connections
                # and has journaled it (the next drop must not merge into this outage).
                while not all(market.subscribed(s, dropped[s]) for s in STREAMS):
                    market.publish(5)
                    await asyncio.sleep(0.05)
                    assert now_us() - t_drop < WAIT_S * 1e6, "no reconnect after a drop"
                await wait_listening(data, STREAMS)
                outages.append((t_drop, now_us()))
                await market.trade_for(0.3)
            await market.trade_for(0.5)
            await wait_on_disk(market, data)
            t1 = now_us()
            assert await rec.terminate() == 0
        assert open_segments(data) == []
        for stream in STREAMS:
            check_exactly_once(market, data, stream)
            gaps = _gaps(data, stream, t0, t1)
            assert len(gaps) == drops, f"{stream}: {gaps} for outages {outages}"
            # live rows only: a repaired row's recv_time is when its REST answer came, which can
            # be just before a later drop, after that connection's last live trade
            received = sorted(recv_us(row) for row in disk_rows(data, stream) if row["source"] == "ws")
            for (a, b), (t_drop, t_back) in zip(gaps, outages, strict=True):
                # Opens at the dropped connections' last receive (`disconnected.last_rx_us`: at or
                # after the last trade received live before the drop), closes when subscribed again.
                last_before = max((r for r in received if r <= t_drop), default=t0)
                assert last_before <= a < b <= t_back, (
                    f"{stream}: gap {a}..{b} for outage {t_drop}..{t_back}, last receive before {last_before}"
                )
            # Nothing can have been received live while the journal says nobody listened (a
            # repaired row's recv_time is when its REST answer came, which may be a later outage).
            for row in disk_rows(data, stream):
                if row["source"] != "ws":
                    continue
                recv = recv_us(row)
                inside = [(recv - a, b - recv) for a, b in gaps if a < recv < b]
                assert not inside, (
                    f"{stream}: row {row} received inside a gap (µs after start, before end): {inside}"
                )

    _run(body)


ROTATING = [s for s in STREAMS if Market([s]).sims[s].protocol.shutdown_notice is not None]


@pytest.mark.skipif(not ROTATING, reason="no simulated exchange announces its closes")
def test_lifetime_rotation_leaves_no_gap_and_no_duplicate(tmp_path: Path) -> None:
    """(b) Connections closed after a short lifetime, announced: make-before-break, no gap."""
    seconds = 20.0 if SOAK_LONG else 5.0

    async def body() -> None:
        async with Market(ROTATING, lifetime_s=1.5) as market:
            rec = Recorder(market.write_config(tmp_path), tmp_path)
            await rec.start_listening(market, tmp_path / "data", ROTATING)
            t0 = now_us()
            await market.trade_for(seconds)
            await asyncio.sleep(0.5)
            t1 = now_us()
            assert await rec.terminate() == 0
        data = tmp_path / "data"
        for stream in ROTATING:
            assert market.sims[stream].connections >= 3, f"{stream}: no rotation happened"
            check_exactly_once(market, data, stream)
            assert _gaps(data, stream, t0, t1) == []

    _run(body)


def test_kill9_of_the_whole_group_then_restart_loses_nothing_flushed(tmp_path: Path) -> None:
    """(c) kill -9 of supervisor and workers; restart recovers the open segments; gap journaled."""

    async def body() -> None:
        async with Market(STREAMS) as market:
            config = market.write_config(tmp_path)
            rec = Recorder(config, tmp_path)
            await rec.start_listening(market, tmp_path / "data", STREAMS)
            t0 = now_us()
            await market.trade_for(1.5)
            await wait_on_disk(market, tmp_path / "data")  # everything sent so far is flushed
            dead = market.session_ids()
            t_kill = now_us()
            await rec.kill_group()
            assert open_segments(tmp_path / "data"), "a live recorder keeps its hour open"
            await asyncio.sleep(0.5)
            t_restart = now_us()
            rec2 = Recorder(config, tmp_path)
            await rec2.start()
            await market.wait_subscribed(exclude=dead)
            await wait_listening(tmp_path / "data", STREAMS)
            await market.trade_for(1.0)
            await asyncio.sleep(0.5)
            t1 = now_us()
            assert await rec2.terminate() == 0
        data = tmp_path / "data"
        assert open_segments(data) == []
        for stream in STREAMS:
            check_exactly_once(market, data, stream)
            gaps = _gaps(data, stream, t0, t1)
            assert len(gaps) == 1, f"{stream}: {gaps}"
            a, b = gaps[0]
            # The crash's unknown span starts at the last journal line (heartbeat 1 s) before the kill.
            assert t_kill - LAST_SIGN_OF_LIFE_US <= a <= t_kill, f"{stream}: gap starts {a}, kill at {t_kill}"
            assert b >= t_restart
            assert len(_events(data, stream, "start")) == 2

    _run(body)


@pytest.mark.skipif(len({split_stream(s)[0] for s in STREAMS}) < 2, reason="needs two exchanges")
def test_kill9_of_one_worker_is_restarted_and_others_are_untouched(tmp_path: Path) -> None:
    """(d) One worker killed: the supervisor journals its gap and restarts it; others keep going."""
    victim = split_stream(STREAMS[0])[0]
    victim_streams = [s for s in STREAMS if split_stream(s)[0] == victim]
    others = [s for s in STREAMS if s not in victim_streams]

    async def body() -> None:
        async with Market(STREAMS) as market:
            rec = Recorder(market.write_config(tmp_path), tmp_path)
            await rec.start_listening(market, tmp_path / "data", STREAMS)
            t0 = now_us()
            await market.trade_for(1.0)
            await wait_on_disk(market, tmp_path / "data")
            lock = tmp_path / "data" / "run" / f"{victim_streams[0]}.lock"
            pid = int(lock.read_text().split()[0])
            t_kill = now_us()
            os.kill(pid, signal.SIGKILL)
            # Trades written to a socket whose reader was just killed are lost by nature: publish
            # again only once the exchange has seen the connection die.
            await poll(
                lambda: not any(market.subscribed(s) for s in victim_streams),
                WAIT_S,
                "the exchanges still see the killed worker's subscriptions",
                every_s=0.02,
            )
            await market.trade_for(0.5)  # the others keep trading while the victim is down
            await market.wait_subscribed()
            await market.trade_for(1.0)
            await asyncio.sleep(0.5)
            t1 = now_us()
            assert await rec.terminate() == 0
            assert int(lock.read_text().split()[0]) != pid
        data = tmp_path / "data"
        assert open_segments(data) == []
        for stream in STREAMS:
            check_exactly_once(market, data, stream)
        for stream in victim_streams:
            deaths = _events(data, stream, "gap_start")
            assert any(
                f"worker {victim} (pid {pid}) exited with code -9" in str(e.get("reason")) for e in deaths
            )
            gaps = _gaps(data, stream, t0, t1)
            assert len(gaps) == 1 and t_kill - LAST_SIGN_OF_LIFE_US <= gaps[0][0] <= t_kill + US_PER_S, gaps
        for stream in others:
            assert _gaps(data, stream, t0, t1) == [], f"{stream} was disturbed by {victim}'s death"
            assert len(_events(data, stream, "start")) == 1

    _run(body)
