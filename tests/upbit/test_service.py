"""End to end: local Upbit server -> watcher -> firing rule -> extractor + detector on a real store."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pumpwatch.recorder.sim.market import MarketSpec, generate, write_store
from pumpwatch.recorder.sim.upbit import UpbitSim, backlog
from pumpwatch.recorder.upbit.service import ListingWatcher, run_listing_service
from pumpwatch.settings import Settings

S = 1_000_000
STREAMS = ("binance_spot", "bybit_futures", "okx_futures")
BASES = ("CP", "TIA", "IO", "CRV", "BICO")
BEFORE_S, AFTER_S = 20.0, 2.0


def settings_for(data_dir: Path, url: str) -> Settings:
    s = Settings(data_dir=str(data_dir))
    s.upbit.hosts = [url]
    s.upbit.poll_interval_s = 0.1
    s.upbit.settle_s = 0.1
    s.storage.flush_interval_s = 0.2
    s.extract.before_s = BEFORE_S
    s.extract.after_s = AFTER_S
    s.repair.at_extract = False  # the default REST URLs are the real exchanges
    return s


def expected_counts(spec: MarketSpec, base: str, t_us: int) -> dict[str, tuple[int, int, int]]:
    """Per stream: trades of `base` in the window, how many of them are before T, and the
    earliest one's time."""
    lo, hi = t_us - int(BEFORE_S * S), t_us + int(AFTER_S * S)
    out: dict[str, tuple[int, int, int]] = {}
    for stream, batch in generate(spec):
        times = pc.cast(batch.column("time"), pa.int64())
        mask = pc.and_(
            pc.equal(batch.column("base"), base),
            pc.and_(pc.greater_equal(times, lo), pc.less_equal(times, hi)),
        )
        picked = pc.filter(times, mask).to_pylist()
        total, before, earliest = out.get(stream, (0, 0, hi + 1))
        out[stream] = (
            total + len(picked),
            before + sum(1 for t in picked if t < t_us),
            min([earliest, *picked]),
        )
    return out


async def wait_for(cond, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.mark.slow
def test_watcher_end_to_end(tmp_path: Path, caplog) -> None:
    now_us = int(time.time() * S)
    spec = MarketSpec(
        seed=7, start_us=now_us - 60 * S, duration_s=100.0, trades_per_s=40.0, bases=BASES, streams=STREAMS
    )
    write_store(tmp_path, spec)

    async def main() -> dict:
        sim = UpbitSim(notices=backlog(now_us))
        async with sim:
            settings = settings_for(tmp_path, sim.url)
            watcher = ListingWatcher(settings)
            stop = asyncio.Event()
            task = asyncio.create_task(watcher.run(stop))
            await wait_for(lambda: watcher.state.bootstrapped)
            assert watcher.firings == []
            # The original system's failure: the notice is first seen 13 s after it was posted.
            late = sim.add_notice(
                "클러스터프로토콜(CP) 신규 거래지원 안내 (KRW, BTC, USDT 마켓)", at_us=now_us - 13 * S
            )
            sim.add_notice("BTC, USDT 마켓 신규 거래지원 안내 (BICO)")
            mixed = sim.add_notice(
                "셀레스티아(TIA)(KRW, BTC, USDT 마켓), 아이오넷(IO)(BTC, USDT 마켓) 신규 거래지원 안내"
            )
            sim.add_notice("해커(../../CRV) KRW 마켓 디지털 자산 추가")
            crv = next(n for n in sim.notices if n.title.startswith("커브(CRV)"))
            sim.edit_notice(crv.id, title=crv.title + " (거래지원 개시 시점 변경 안내)")
            await wait_for(lambda: len(watcher.firings) == 2)
            await wait_for(lambda: not watcher.scheduler.pending)
            await watcher.scheduler.idle()
            stop.set()
            await task
            assert all("origin" not in r.headers for r in sim.requests)
            return {"late": late, "mixed": mixed, "results": watcher.scheduler.results}

    with caplog.at_level(logging.INFO):
        out = asyncio.run(main())
    late, mixed = out["late"], out["mixed"]
    listings = tmp_path / "listings"
    names = sorted(p.name for p in listings.iterdir())
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(late.first_listed_at_us // S))
    assert names[0] == f"CP_{stamp}" and names[1].startswith("TIA_") and len(names) == 2
    assert all(r.error is None and r.detected for r in out["results"])

    meta = orjson.loads((listings / names[0] / "metadata.json").read_bytes())
    assert meta["symbol"] == "CP"
    assert meta["trigger_time_us"] == late.first_listed_at_us  # T = first_listed_at, not detection time
    assert meta["window"]["start_us"] == late.first_listed_at_us - int(BEFORE_S * S)
    source = meta["source"]
    assert source["type"] == "upbit" and source["notice_id"] == late.id and source["uuid"] == late.uuid
    assert source["title"] == late.title
    assert source["first_listed_at"] == time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(late.first_listed_at_us // S)
    )
    assert 13.0 <= source["detection_delay_s"] < 16.0
    # The whole window is there, including the 20 s before T that the old system lost.
    expected = expected_counts(spec, "CP", late.first_listed_at_us)
    for stream in STREAMS:
        trades = orjson.loads((listings / names[0] / "raw" / f"{stream}.json").read_bytes())
        total, before, earliest = expected[stream]
        assert len(trades) == total and total > 0
        assert sum(1 for t in trades if t["timestamp_us"] < late.first_listed_at_us) == before > 0
        # From the window's first trade on (the synthetic market is sparse per coin, so where
        # that first trade falls depends on the seed, not on when the notice was seen).
        assert min(t["timestamp_us"] for t in trades) == earliest
    assert (listings / names[0] / "refined" / "pump_analysis.json").exists()

    tia = orjson.loads((listings / names[1] / "metadata.json").read_bytes())
    assert tia["symbol"] == "TIA" and tia["trigger_time_us"] == mixed.first_listed_at_us
    assert tia["source"]["notice_id"] == mixed.id
    state = orjson.loads((tmp_path / "upbit" / "state.json").read_bytes())
    assert sorted(state["fired"]) == ["CP", "TIA"]
    assert any("../../CRV" in r.getMessage() for r in caplog.records)
    assert not any(".." in p.name for p in listings.iterdir())


def test_run_listing_service_disabled_returns(tmp_path: Path) -> None:
    s = Settings(data_dir=str(tmp_path))
    s.upbit.enabled = False
    asyncio.run(asyncio.wait_for(run_listing_service(s, asyncio.Event()), 2.0))
    assert not (tmp_path / "upbit").exists()


def test_run_listing_service_survives_garbage_and_stops(tmp_path: Path) -> None:
    async def main() -> None:
        sim = UpbitSim(notices=backlog(int(time.time() * S)))
        async with sim:
            sim.garbage_next(2)
            sim.fail_next(1, status=429, retry_after_s=0.1)
            s = settings_for(tmp_path, sim.url)
            s.upbit.backoff_max_s = 0.2
            stop = asyncio.Event()
            task = asyncio.create_task(run_listing_service(s, stop))
            await wait_for(lambda: (tmp_path / "upbit" / "state.json").exists())
            stop.set()
            await asyncio.wait_for(task, 5.0)
            assert sim.served[200] >= 3 and sim.served[429] == 1

    asyncio.run(main())
