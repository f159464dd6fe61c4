"""Gate spot trade-id continuity end to end (issue 10 §1): `pumpwatch record` as a real
subprocess against the local Gate server, whose spot pushes carry the exchange-wide `id` (what
is stored) and the per-pair `id_market` (what is checked; the sim's is `market_id(id)`, never
equal to `id`, so the journal shows which one was read).

- Pushes skipped while connected leave a hole in `id_market`: journaled `id_gap` with the first
  and last missing `id_market` and the times around it, repaired by time from REST, journaled
  `repaired`, and every skipped trade is on disk once.
- Reconnects, stalls, a restarted `record` and two redundant connections killed in turn make
  no false `id_gap`, and lose and repeat nothing.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.e2e import Market, Recorder, disk_rows, now_us, poll, trade_key, wait_listening

from pumpwatch.recorder.sim.gate import market_id
from pumpwatch.segments.journal import read_events

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

STREAM = "gate_spot"
VIA = "/api/v4/spot/trades"
REPAIR_WAIT_S = 120.0  # repairs wait out a settle time, the REST budget and retries


def _run(body: Any) -> None:
    asyncio.run(body())


def _events(data: Path, kind: str) -> list[dict[str, Any]]:
    return [e for e in read_events(data, STREAM) if e["event"] == kind]


def write_config(market: Market, tmp: Path, **recorder: Any) -> Path:
    """The harness config plus a short id grace."""
    path = market.write_config(tmp, **recorder)
    cfg = yaml.safe_load(path.read_text())
    cfg["repair"] = {"id_grace": "300ms"}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _rest_keys(data: Path, stream: str) -> set[Any]:
    return {trade_key(stream, r) for r in disk_rows(data, stream) if r.get("source") == "rest"}


def missing_and_dupes(
    market: Market, data: Path, stream: str, lo_us: int, hi_us: int
) -> tuple[list[Any], dict[Any, int]]:
    """Trades the server generated in ``[lo_us, hi_us]`` not on disk, and trades on disk twice."""
    on_disk = Counter(trade_key(stream, r) for r in disk_rows(data, stream))
    store = market.sims[stream].history.store
    made = [r for inst in market.instruments[stream] for r in store.time_range(inst.symbol, lo_us, hi_us)]
    assert made, f"{stream}: no trade generated in the window"
    missing = [trade_key(stream, r) for r in made if trade_key(stream, r) not in on_disk]
    return missing, {k: n for k, n in on_disk.items() if n > 1}


async def wait_whole(market: Market, data: Path, streams: list[str], lo_us: int, hi_us: int) -> None:
    """Wait until every generated trade of the window is on disk; then none may be twice."""
    state: dict[str, Any] = {}

    def done() -> bool:
        state.clear()
        for s in streams:
            missing, dupes = missing_and_dupes(market, data, s, lo_us, hi_us)
            if missing or dupes:
                state[s] = (len(missing), sorted(missing)[:3], list(dupes.items())[:3])
        return not any(v[0] for v in state.values())

    await poll(done, REPAIR_WAIT_S, lambda: f"not whole: {state}", every_s=0.5)
    assert not state, f"duplicated: {state}"


def test_a_hole_in_id_market_while_connected_is_journaled_and_repaired_by_time(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def body() -> None:
        async with Market([STREAM]) as market:
            rec = Recorder(write_config(market, tmp_path), tmp_path)
            await rec.start_listening(market, data, [STREAM])
            t0 = now_us()
            await market.trade_for(1.0)
            victim = market.instruments[STREAM][0].symbol
            market.sims[STREAM].skip_pushes(4, symbol=victim)
            await market.trade_for(1.5)
            t1 = now_us()
            await wait_whole(market, data, [STREAM], t0, t1)

            def answered() -> bool:
                return any(e["symbol"] == victim and e["trades"] == 4 for e in _events(data, "repaired"))

            await poll(answered, 60.0, lambda: f"no repaired event: {_events(data, 'repaired')}")
            assert await rec.terminate() == 0
        skipped = market.sims[STREAM].history.skipped
        assert len(skipped) == 4 and {r[2] for r in skipped} == {victim}
        ids = sorted(int(r[8]) for r in skipped)
        assert ids == list(range(ids[0], ids[0] + 4))
        gaps = _events(data, "id_gap")
        assert [(g["symbol"], g["first_missing"], g["last_missing"]) for g in gaps] == [
            (victim, market_id(ids[0]), market_id(ids[-1]))  # named in id_market, not in `id`
        ], gaps
        gap = gaps[0]
        assert gap["after_us"] < skipped[0][0] and gap["before_us"] > skipped[-1][0]
        assert {trade_key(STREAM, r) for r in skipped} <= _rest_keys(data, STREAM)
        fixed = [e for e in _events(data, "repaired") if e["symbol"] == victim and e["trades"] == 4]
        assert len(fixed) == 1 and fixed[0]["via"] == VIA
        assert fixed[0]["start_us"] <= gap["after_us"] and fixed[0]["end_us"] >= gap["before_us"]
        assert not _events(data, "unrepaired")

    _run(body)


def test_reconnects_stalls_and_a_restart_make_no_false_id_gap(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rng = random.Random(7)

    async def body() -> None:
        async with Market([STREAM]) as market:
            sim = market.sims[STREAM]
            config = write_config(market, tmp_path)
            rec = Recorder(config, tmp_path)
            await rec.start_listening(market, data, [STREAM])
            t0 = now_us()
            for fault in ("drop", "stall", "drop", "drop"):
                await market.trade_for(rng.uniform(0.5, 1.0), per_tick=2)
                if fault == "drop":  # a new connection: its first pushes must settle, not open holes
                    sim.drop_all()
                else:  # pushes held back and then delivered late: no hole either
                    sim.stall(rng.uniform(0.2, 0.6))
                await market.trade_for(rng.uniform(0.5, 1.0), per_tick=2)
            # a restarted `record` while the market trades: the new worker's id_market check
            # starts unprimed (the store holds `id`), the restart gap is repaired by time
            assert await rec.terminate() == 0
            await market.trade_for(0.5, per_tick=2)
            rec = Recorder(config, tmp_path)
            await rec.start()
            await market.wait_subscribed()
            await market.trade_for(0.3, per_tick=2)
            await wait_listening(data, [STREAM])
            await market.trade_for(1.0, per_tick=2)
            t1 = now_us()
            await wait_whole(market, data, [STREAM], t0, t1)
            assert await rec.terminate() == 0
        assert len(_events(data, "gap_start")) >= 3, "the faults did not bite"
        assert not _events(data, "id_gap"), _events(data, "id_gap")
        assert not sim.history.skipped
        assert not _events(data, "unrepaired")

    _run(body)


def test_two_redundant_connections_killed_in_turn_make_no_id_gap_and_no_duplicate(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def body() -> None:
        async with Market([STREAM]) as market:
            sim = market.sims[STREAM]
            rec = Recorder(write_config(market, tmp_path, redundancy=2), tmp_path)
            await rec.start_listening(market, data, [STREAM])
            wanted = {i.symbol for i in market.instruments[STREAM]}

            def both_listen() -> bool:
                sessions = sim.sessions()
                return len(sessions) == 2 and all(wanted <= s.subscribed for s in sessions)

            await poll(both_listen, 60.0, "not two subscribed connections")
            t0 = now_us()
            for k in range(4):
                await market.trade_for(0.6, per_tick=2)
                await poll(both_listen, 60.0, "not two subscribed connections")
                sessions = sorted(sim.sessions(), key=lambda s: int(s.conn_id))
                sim.drop(sessions[k % 2].conn_id)  # the older one, then the newer one
            await market.trade_for(1.0, per_tick=2)
            t1 = now_us()
            await wait_whole(market, data, [STREAM], t0, t1)
            missing, dupes = missing_and_dupes(market, data, STREAM, t0, t1)
            assert not missing and not dupes
            assert await rec.terminate() == 0
        assert not _events(data, "id_gap"), _events(data, "id_gap")
        assert not _events(data, "gap_start")  # the other connection listened throughout
        assert not _rest_keys(data, STREAM)  # nothing needed repair

    _run(body)
