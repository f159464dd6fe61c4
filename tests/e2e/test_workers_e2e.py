"""recorder.workers end to end: `pumpwatch record` as a real subprocess against local exchanges,
with every stream in one worker process (workers: 1) or spread over two (workers: 2)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from helpers.e2e import (
    WAIT_S,
    Market,
    Recorder,
    available_streams,
    check_exactly_once,
    now_us,
    open_segments,
    poll,
    wait_on_disk,
)

from pumpwatch.recorder.supervisor import group_streams
from pumpwatch.segments.coverage import coverage
from pumpwatch.segments.journal import read_events
from pumpwatch.timeunits import US_PER_S

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
LAST_SIGN_OF_LIFE_US = 3 * US_PER_S
STREAMS = available_streams()


def _pids(data: Path, streams: list[str]) -> dict[str, int]:
    return {s: int((data / "run" / f"{s}.lock").read_text().split()[0]) for s in streams}


def test_one_worker_records_every_stream_and_its_death_is_a_gap_in_each(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def body() -> tuple[int, int, int, int]:
        async with Market(STREAMS) as market:
            rec = Recorder(market.write_config(tmp_path, workers=1), tmp_path)
            await rec.start_listening(market, data, STREAMS)
            pids = _pids(data, STREAMS)
            assert len(set(pids.values())) == 1, f"more than one worker: {pids}"
            (pid,) = set(pids.values())
            t0 = now_us()
            await market.trade_for(1.0)
            await wait_on_disk(market, data)
            t_kill = now_us()
            os.kill(pid, signal.SIGKILL)
            await poll(
                lambda: not any(market.subscribed(s) for s in STREAMS),
                WAIT_S,
                "the exchanges still see the killed worker's subscriptions",
                every_s=0.02,
            )
            await market.wait_subscribed()
            await market.trade_for(1.0)
            await asyncio.sleep(0.5)
            t1 = now_us()
            assert await rec.terminate() == 0
            after = _pids(data, STREAMS)
            assert len(set(after.values())) == 1 and pid not in after.values(), after
            return pid, t0, t_kill, t1

    pid, t0, t_kill, t1 = asyncio.run(body())
    assert open_segments(data) == []
    market_streams = STREAMS
    for stream in market_streams:
        deaths = [e for e in read_events(data, stream) if e["event"] == "gap_start"]
        assert any(f"worker all (pid {pid}) exited with code -9" in str(e.get("reason")) for e in deaths), (
            stream,
            deaths,
        )
        cov = coverage(data, stream, t0, t1, heartbeat_s=1.0, now_us=now_us())
        assert len(cov.gaps) == 1, (stream, cov.gaps)
        assert t_kill - LAST_SIGN_OF_LIFE_US <= cov.gaps[0][0] <= t_kill + US_PER_S, (stream, cov.gaps)


def test_one_worker_stores_every_trade_of_every_stream(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def body() -> Market:
        async with Market(STREAMS) as market:
            rec = Recorder(market.write_config(tmp_path, workers=1), tmp_path)
            await rec.start_listening(market, data, STREAMS)
            await market.trade_for(1.5)
            await wait_on_disk(market, data)
            assert await rec.terminate() == 0
            return market

    market = asyncio.run(body())
    for stream in STREAMS:
        stored, _ = check_exactly_once(market, data, stream)
        assert stored > 0, f"{stream}: nothing on disk"


@pytest.mark.skipif(len(group_streams(STREAMS, 0)) < 3, reason="needs three exchanges")
def test_two_workers_split_the_exchanges_and_a_death_touches_only_its_own(tmp_path: Path) -> None:
    data = tmp_path / "data"
    groups = group_streams(STREAMS, 2)

    async def body() -> None:
        async with Market(STREAMS) as market:
            rec = Recorder(market.write_config(tmp_path, workers=2), tmp_path)
            await rec.start_listening(market, data, STREAMS)
            pids = _pids(data, STREAMS)
            by_group = {name: {pids[s] for s in streams} for name, streams in groups.items()}
            assert all(len(p) == 1 for p in by_group.values()), by_group
            assert len({next(iter(p)) for p in by_group.values()}) == 2, by_group
            victim, others = list(groups.values())
            t0 = now_us()
            await market.trade_for(1.0)
            await wait_on_disk(market, data)
            os.kill(pids[victim[0]], signal.SIGKILL)
            await poll(
                lambda: not any(market.subscribed(s) for s in victim), WAIT_S, "victim still subscribed"
            )
            await market.trade_for(0.5)
            await market.wait_subscribed()
            await market.trade_for(1.0)
            await asyncio.sleep(0.5)
            t1 = now_us()
            assert await rec.terminate() == 0
            for s in others:
                cov = coverage(data, s, t0, t1, heartbeat_s=1.0, now_us=now_us())
                assert cov.gaps == [], f"{s} was disturbed by the other worker's death"
                check_exactly_once(market, data, s)
            for s in victim:
                cov = coverage(data, s, t0, t1, heartbeat_s=1.0, now_us=now_us())
                assert len(cov.gaps) == 1, (s, cov.gaps)
                check_exactly_once(market, data, s)

    asyncio.run(body())
