"""Ids skipped right after a reconnect (issue 10, found by ``bench/bench_repair.py --quick``,
seed 10): a `repaired` event must never cover a trade the store does not hold.

On the id-keyed streams a symbol that trades nothing within the id grace after resubscribing
is handed to repair up to its resume time. The exchange then skipped the symbol's first pushes
on the new connection. Before the fix the next trade that did arrive started the id check
afresh: the skipped ids were never noticed, and the next reconnect's repair, paged by id from
the last id received, journaled `repaired` over a span holding them although they were never
stored. `pumpwatch record` runs as a real subprocess against the local exchanges and their REST
history; the servers' own records of every generated trade are the truth.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.e2e import (
    Market,
    Recorder,
    available_streams,
    disk_rows,
    now_us,
    poll,
    trade_key,
)

from pumpwatch.segments.journal import read_events
from pumpwatch.segments.schema import TradeRow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ID_KEYED = [
    s for s in ("binance_spot", "binance_futures", "okx_spot", "okx_futures") if s in available_streams()
]
ID_GRACE_S = 0.3
SKIPPED = 3
WHOLE_WAIT_S = 45.0  # repairs wait out their settle time and the REST budgets


def _config(market: Market, tmp: Path) -> Path:
    path = market.write_config(tmp)
    cfg = yaml.safe_load(path.read_text())
    cfg["repair"] = {"id_grace": f"{int(ID_GRACE_S * 1000)}ms"}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _generated(market: Market, stream: str, symbol: str | None, lo_us: int, hi_us: int) -> list[TradeRow]:
    store = market.sims[stream].history.store
    symbols = [symbol] if symbol else [i.symbol for i in market.instruments[stream]]
    return [r for s in symbols for r in store.time_range(s, lo_us, hi_us)]


def _lies(market: Market, data: Path, stream: str, on_disk: set[Any]) -> list[str]:
    """`repaired` events covering a generated trade that is not on disk."""
    out = []
    for e in read_events(data, stream):
        if e["event"] != "repaired":
            continue
        absent = [
            r[8]
            for r in _generated(market, stream, e["symbol"], e["start_us"], e["end_us"])
            if trade_key(stream, r) not in on_disk
        ]
        if absent:
            span = f"{e['start_us']}..{e['end_us']} ({e['trades']} trades)"
            out.append(f"{e['symbol']} repaired {span} lacks ids {absent}")
    return out


async def _reconnect(market: Market, streams: list[str]) -> None:
    """Drop every connection; back when the servers see every symbol subscribed again."""
    old = market.session_ids()
    for s in streams:
        market.sims[s].drop_all()
    await market.wait_subscribed(streams, exclude=old)


def test_ids_skipped_after_a_quiet_resume_are_repaired_and_never_claimed(tmp_path: Path) -> None:
    if not ID_KEYED:
        pytest.skip("no id-keyed stream available")
    streams = ID_KEYED
    data = tmp_path / "data"

    async def body() -> None:
        async with Market(streams) as market:
            rec = Recorder(_config(market, tmp_path), tmp_path)
            await rec.start_listening(market, data, streams)
            t0 = now_us()
            await market.trade_for(1.0)
            victims = {s: market.instruments[s][0].symbol for s in streams}  # `publish(1)` trades it

            # Reconnect while nothing trades: every symbol's resume goes quiet (handed to repair
            # up to the resume time). Then the exchange skips the victim's first pushes.
            await _reconnect(market, streams)
            await asyncio.sleep(ID_GRACE_S + 1.5)
            for s in streams:
                market.sims[s].skip_pushes(SKIPPED, symbol=victims[s])
            for _ in range(SKIPPED + 2):  # the first SKIPPED never pushed, the rest live
                market.publish(1)
                await asyncio.sleep(0.05)
            await market.trade_for(1.0)

            # A second reconnect: its repair pages by id from the last id received; the span it
            # journals reaches back over the skipped trades.
            await _reconnect(market, streams)
            await market.trade_for(1.5)
            t1 = now_us()

            state: dict[str, Any] = {}

            def whole() -> bool:
                state.clear()
                for s in streams:
                    on_disk = Counter(trade_key(s, r) for r in disk_rows(data, s))
                    missing = [
                        r[2] + " " + str(r[8])
                        for r in _generated(market, s, None, t0, t1)
                        if trade_key(s, r) not in on_disk
                    ]
                    lies = _lies(market, data, s, set(on_disk))
                    dupes = [k for k, n in on_disk.items() if n > 1]
                    if missing or lies or dupes:
                        state[s] = {"missing": missing[:5], "lies": lies[:3], "dupes": dupes[:3]}
                return not state

            try:
                await poll(whole, WHOLE_WAIT_S, lambda: f"not whole: {state}", every_s=0.5)
            finally:
                assert await rec.terminate() == 0
        for s in streams:
            skipped = market.sims[s].history.skipped
            assert [r[2] for r in skipped] == [victims[s]] * SKIPPED, f"{s}: {skipped}"
            on_disk = {trade_key(s, r) for r in disk_rows(data, s)}
            assert {trade_key(s, r) for r in skipped} <= on_disk
            assert not _lies(market, data, s, on_disk)

    asyncio.run(body())
