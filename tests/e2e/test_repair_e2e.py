"""End-to-end completeness (issue 10): `pumpwatch record` as a real subprocess against local
exchanges that keep every trade they generate and serve it over their REST history.

Afterwards every trade the servers generated while `record` ran (its REST history is the
truth, including trades no connection received) must be on disk exactly once, for the streams
with id- or time-keyed history; latest-only streams are whole across short gaps and journal
long ones ``unrepaired`` with spans that hold exactly the missing trades.
Short forms by default; PUMPWATCH_SOAK=long runs more faults for longer.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.e2e import (
    SOAK_LONG,
    WAIT_S,
    Market,
    Recorder,
    available_streams,
    disk_rows,
    now_us,
    poll,
    trade_key,
    wait_listening,
)

from pumpwatch.segments.coverage import coverage
from pumpwatch.segments.journal import read_events
from pumpwatch.segments.schema import TradeRow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ID_KEYED = ["binance_spot", "binance_futures", "okx_spot", "okx_futures"]
TIME_KEYED = ["gate_spot", "gate_futures"]
LATEST = ["bybit_spot", "bybit_futures", "kucoin_spot", "kucoin_futures", "phemex_spot", "phemex_futures"]
AVAILABLE = set(available_streams())
REPAIRABLE = [s for s in ID_KEYED + TIME_KEYED if s in AVAILABLE]
REPAIR_WAIT_S = 120.0  # repairs wait out a settle time, the REST budgets and retries


def _run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(body())


def write_config(market: Market, tmp: Path, repair: dict[str, Any] | None = None, **recorder: Any) -> Path:
    """The harness config plus a ``repair`` section (short id grace by default)."""
    path = market.write_config(tmp, **recorder)
    cfg = yaml.safe_load(path.read_text())
    cfg["repair"] = {"id_grace": "300ms", **(repair or {})}
    path.write_text(yaml.safe_dump(cfg))
    return path


def generated(market: Market, stream: str, lo_us: int, hi_us: int) -> list[TradeRow]:
    """Every trade the server of `stream` generated with ``lo_us <= time <= hi_us``."""
    store = market.sims[stream].history.store
    return [r for inst in market.instruments[stream] for r in store.time_range(inst.symbol, lo_us, hi_us)]


def missing_and_dupes(
    market: Market, data: Path, stream: str, lo_us: int, hi_us: int
) -> tuple[list[Any], dict[Any, int]]:
    """Generated trades of the window not on disk, and trades on disk more than once."""
    on_disk = Counter(trade_key(stream, r) for r in disk_rows(data, stream))
    dupes = {k: n for k, n in on_disk.items() if n > 1}
    missing = [trade_key(stream, r) for r in generated(market, stream, lo_us, hi_us)]
    return [k for k in missing if k not in on_disk], dupes


async def wait_whole(market: Market, data: Path, streams: Iterable[str], lo_us: int, hi_us: int) -> None:
    """Wait until every generated trade of the window is on disk; then none may be twice."""
    chosen = list(streams)

    def report() -> dict[str, Any]:
        out = {}
        for s in chosen:
            missing, dupes = missing_and_dupes(market, data, s, lo_us, hi_us)
            if missing or dupes:
                out[s] = (len(missing), sorted(missing)[:3], list(dupes.items())[:3])
        return out

    state: dict[str, Any] = {}

    def done() -> bool:
        state.clear()
        state.update(report())
        return not any(v[0] for v in state.values())

    await poll(done, REPAIR_WAIT_S, lambda: f"not whole: {state}", every_s=0.5)
    assert not state, f"duplicated: {state}"
    for s in chosen:
        assert generated(market, s, lo_us, hi_us), f"{s}: no trade generated in the window"


def _events(data: Path, stream: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in read_events(data, stream) if e["event"] == kind]


def _rest_keys(data: Path, stream: str) -> set[Any]:
    return {trade_key(stream, r) for r in disk_rows(data, stream) if r.get("source") == "rest"}


def test_id_hole_while_connected_is_journaled_and_repaired_by_id(tmp_path: Path) -> None:
    """skip_pushes: the ids jump on a live connection; `id_gap` names the exact ids, and the
    skipped trades end up on disk once, from REST."""
    streams = [s for s in ID_KEYED if s in AVAILABLE]
    data = tmp_path / "data"

    async def body() -> None:
        async with Market(streams) as market:
            rec = Recorder(write_config(market, tmp_path), tmp_path)
            await rec.start_listening(market, data, streams)
            t0 = now_us()
            await market.trade_for(1.0)
            victims = {s: market.instruments[s][0].symbol for s in streams}
            for s in streams:
                market.sims[s].skip_pushes(4, symbol=victims[s])
            await market.trade_for(1.5)
            t1 = now_us()
            await wait_whole(market, data, streams, t0, t1)
            assert await rec.terminate() == 0
        for s in streams:
            skipped = market.sims[s].history.skipped
            assert len(skipped) == 4, f"{s}: {len(skipped)} skipped"
            ids = sorted(int(r[8]) for r in skipped)
            gaps = _events(data, s, "id_gap")
            assert [(g["symbol"], g["first_missing"], g["last_missing"]) for g in gaps] == [
                (victims[s], ids[0], ids[-1])
            ], f"{s}: {gaps}"
            assert gaps[0]["after_us"] < skipped[0][0] and gaps[0]["before_us"] > skipped[-1][0]
            assert {trade_key(s, r) for r in skipped} <= _rest_keys(data, s)
            repaired = [e for e in _events(data, s, "repaired") if e["symbol"] == victims[s]]
            assert any(e["trades"] == 4 for e in repaired), f"{s}: {repaired}"

    _run(body)


def test_disconnects_and_stalls_while_trading_lose_nothing(tmp_path: Path) -> None:
    """drop_all and stalls at random while the market trades: the id- and time-keyed streams
    hold every generated trade once; latest-only streams are whole across these short gaps."""
    streams = [s for s in REPAIRABLE + LATEST if s in AVAILABLE]
    data = tmp_path / "data"
    rng = random.Random(10)
    faults = 12 if SOAK_LONG else 3

    async def body() -> None:
        async with Market(streams) as market:
            rec = Recorder(write_config(market, tmp_path), tmp_path)
            await rec.start_listening(market, data, streams)
            t0 = now_us()
            for _ in range(faults):
                await market.trade_for(rng.uniform(0.5, 1.5), per_tick=2)
                victims = rng.sample(streams, k=max(1, len(streams) // 2))
                for s in victims:
                    if rng.random() < 0.5:
                        market.sims[s].drop_all()
                    else:
                        market.sims[s].stall(rng.uniform(0.2, 0.6))
                await market.trade_for(rng.uniform(0.5, 1.0), per_tick=2)
            await market.trade_for(1.0, per_tick=2)
            t1 = now_us()
            await wait_whole(market, data, streams, t0, t1)
            assert await rec.terminate() == 0
        reconnects = sum(len(_events(data, s, "gap_start")) for s in streams)
        assert reconnects >= faults, f"only {reconnects} gaps: the faults did not bite"
        rest = {s: len(_rest_keys(data, s)) for s in streams}
        assert sum(rest.values()) > 0, f"nothing came from REST: {rest}"

    _run(body)


def test_long_gap_on_a_latest_only_stream_is_unrepaired_with_its_exact_span(tmp_path: Path) -> None:
    """A gap longer than a latest-only endpoint reaches: the trades it could not return are
    exactly those inside the journaled `unrepaired` spans; everything else is stored once."""
    stream = "bybit_spot"  # 60 trades per call
    if stream not in AVAILABLE:
        pytest.skip("no bybit adapter")
    data = tmp_path / "data"

    async def body() -> None:
        async with Market([stream]) as market:
            rec = Recorder(write_config(market, tmp_path), tmp_path)
            await rec.start_listening(market, data, [stream])
            t0 = now_us()
            await market.trade_for(0.5)
            # Refuse connections while trading ~300 trades per symbol: far beyond 60.
            market.sims[stream].refuse_connections(10_000)
            market.sims[stream].drop_all()
            await market.trade_for(3.0, per_tick=15)
            market.sims[stream].refuse_connections(-market.sims[stream]._refuse)  # accept again
            await market.wait_subscribed()
            await market.trade_for(1.0)
            t1 = now_us()

            def settled() -> bool:
                return bool(_events(data, stream, "unrepaired"))

            await poll(settled, REPAIR_WAIT_S, "no unrepaired span journaled", every_s=0.5)
            await asyncio.sleep(3.0)  # the other symbols' repairs
            assert await rec.terminate() == 0
        spans = [
            (e["symbol"], e["start_us"], e["end_us"], e["reason"])
            for e in _events(data, stream, "unrepaired")
        ]
        assert spans and all(r == "no_history" for *_, r in spans), spans
        on_disk = Counter(trade_key(stream, r) for r in disk_rows(data, stream))
        assert not {k: n for k, n in on_disk.items() if n > 1}
        for row in generated(market, stream, t0, t1):
            inside = any(sym == row[2] and lo <= row[0] <= hi for sym, lo, hi, _ in spans)
            key = trade_key(stream, row)
            if not inside:
                assert key in on_disk, f"{row} is outside every unrepaired span but not stored"
        lost = [r for r in generated(market, stream, t0, t1) if trade_key(stream, r) not in on_disk]
        assert lost, "the gap was meant to be longer than the endpoint reaches"
        for sym, _lo, hi, _ in spans:  # each span is tight: it ends at the oldest trade REST returned
            assert any(r[2] == sym and r[0] == hi for r in generated(market, stream, t0, t1)), (sym, hi)

    _run(body)


def test_killed_worker_and_restarted_record_are_repaired(tmp_path: Path) -> None:
    """kill -9 of a worker (the supervisor restarts it) and a stopped-then-restarted `record`:
    both downtimes are repaired for the id- and time-keyed streams."""
    streams = REPAIRABLE
    data = tmp_path / "data"

    async def body() -> None:
        async with Market(streams) as market:
            config = write_config(market, tmp_path)
            rec = Recorder(config, tmp_path)
            await rec.start_listening(market, data, streams)
            t0 = now_us()
            await market.trade_for(1.0)
            victims = {}
            old_sessions = market.session_ids()  # every stream here lives in a killed worker
            for victim in ("binance_spot", "okx_spot", "gate_spot"):
                lock = data / "run" / f"{victim}.lock"
                victims[lock] = pid = int(lock.read_text().split()[0])
                os.kill(pid, signal.SIGKILL)
            await market.trade_for(2.0)

            def restarted() -> bool:
                return all(
                    lock.read_text().split()[:1] not in ([], [str(pid)]) for lock, pid in victims.items()
                )

            await poll(restarted, WAIT_S, "the killed workers were not restarted")
            await market.wait_subscribed(exclude=old_sessions)  # the new workers' connections
            await market.trade_for(1.0)
            # The restarted workers repair the kill's downtime themselves.
            await wait_whole(market, data, streams, t0, now_us())
            assert await rec.terminate() == 0
            await market.trade_for(2.0)  # nobody records
            rec2 = Recorder(config, tmp_path)
            await rec2.start()
            await wait_listening(data, streams)
            await market.trade_for(1.0)
            t1 = now_us()
            await wait_whole(market, data, streams, t0, t1)
            assert await rec2.terminate() == 0
        for s in streams:
            causes = [e for e in _events(data, s, "repaired") if e["trades"] > 0]
            assert causes, f"{s}: no downtime repaired"

    _run(body)


def test_rate_limit_answers_slow_the_repair_and_never_drop_it(tmp_path: Path) -> None:
    """throttle(n): the repair's calls are refused with 429 first; it waits and completes."""
    streams = [s for s in ("binance_spot", "okx_futures", "gate_spot") if s in AVAILABLE]
    data = tmp_path / "data"

    async def body() -> None:
        async with Market(streams) as market:
            rec = Recorder(write_config(market, tmp_path), tmp_path)
            await rec.start_listening(market, data, streams)
            t0 = now_us()
            await market.trade_for(0.5)
            for s in streams:
                market.sims[s].throttle(3)
                market.sims[s].drop_all()
            await market.trade_for(2.0)
            t1 = now_us()
            await wait_whole(market, data, streams, t0, t1)
            assert await rec.terminate() == 0
        for s in streams:
            stats = market.sims[s].history.stats
            assert stats.limited >= 3, f"{s}: {stats}"
            assert stats.served > 0

    _run(body)


def test_redundancy_two_kill_either_connection_over_and_over(tmp_path: Path) -> None:
    """recorder.redundancy 2: drop one connection of the pair again and again while trading:
    every trade sent is on disk once, the journal shows no gap and nothing needed REST."""
    streams = [
        s
        for s in ("binance_spot", "okx_futures", "gate_spot", "bybit_spot", "phemex_futures")
        if s in AVAILABLE
    ]
    data = tmp_path / "data"
    rounds = 30 if SOAK_LONG else 6

    async def body() -> None:
        async with Market(streams) as market:
            rec = Recorder(write_config(market, tmp_path, redundancy=2), tmp_path)
            await rec.start()
            await poll(
                lambda: all(market.sims[s].active_connections == 2 for s in streams),
                WAIT_S,
                "two connections",
            )
            await market.wait_subscribed()
            await wait_listening(data, streams)
            t0 = now_us()
            for k in range(rounds):
                await market.trade_for(0.4)
                for s in streams:
                    sessions = sorted(market.sims[s].sessions(), key=lambda x: x.conn_id)
                    market.sims[s].drop(sessions[k % len(sessions)].conn_id)
                await market.trade_for(0.3)
                await poll(
                    lambda: all(
                        market.sims[s].active_connections == 2
                        and all(len(x.subscribed) == 3 for x in market.sims[s].sessions())
                        for s in streams
                    ),
                    WAIT_S,
                    "both connections back",
                )
            await market.trade_for(0.5)
            t1 = now_us()
            await wait_whole(market, data, streams, t0, t1)
            assert await rec.terminate() == 0
        for s in streams:
            cov = coverage(data, s, t0, t1, heartbeat_s=1.0, now_us=now_us())
            assert cov.gaps == [], f"{s}: gaps {cov.gaps}"
            assert not _rest_keys(data, s), f"{s}: trades came from REST"
            assert not _events(data, s, "id_gap")

    _run(body)
