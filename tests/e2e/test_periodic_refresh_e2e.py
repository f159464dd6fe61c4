"""`record`'s own periodic refresh (``symbols.refresh``, at its 1-minute minimum) picks up a market
that opens mid-run and SIGHUPs the worker, which subscribes it at once (its own reload check is
10 minutes away) and records its first trade. One worker process for every stream."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import yaml
from helpers.e2e import SOAK_LONG, Market, Recorder, disk_rows, now_us, poll, wait_listening

from pumpwatch.recorder.sim.instruments import sim_instrument

# A minute of waiting for the timer: the long form only (PUMPWATCH_SOAK=long). The short run
# covers the same refresh + SIGHUP path through the listing notice
# (test_notice_subscribe_e2e.py) and a worker's own reload (tests/recorder/test_symbols_live.py).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not SOAK_LONG, reason="long form only (PUMPWATCH_SOAK=long)"),
]

STREAMS = ["bybit_spot", "kucoin_futures", "phemex_spot"]


def test_a_market_opening_mid_run_is_recorded_after_records_own_refresh(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def body() -> float:
        async with Market(STREAMS) as market:
            config = market.write_config(tmp_path, workers=1, symbols_reload="10m")
            cfg = yaml.safe_load(config.read_text())
            cfg["symbols"].update(policy="all", upbit_rest_url="http://127.0.0.1:9", refresh="1m")
            config.write_text(yaml.safe_dump(cfg))
            rec = Recorder(config, tmp_path)
            t_start = time.monotonic()
            await rec.start()
            try:
                await market.wait_subscribed()
                await wait_listening(data, STREAMS)
                new = {s: sim_instrument(s, "NEWCOIN") for s in STREAMS}
                for s, inst in new.items():
                    market.sims[s].instruments[inst.symbol] = inst

                def subscribed(s: str) -> bool:
                    return any(new[s].symbol in x.subscribed for x in market.sims[s].sessions())

                # the first periodic refresh is 1 min after the start; 30 s of slack
                await poll(lambda: all(subscribed(s) for s in STREAMS), 90.0, "NEWCOIN not subscribed")
                took_s = time.monotonic() - t_start
                t_us = now_us()
                for s, inst in new.items():
                    market.sims[s].publish(
                        [(t_us, t_us, inst.symbol, "NEWCOIN", "USDT", 1.25, 3 * inst.multiplier, "buy", "7")]
                    )

                def first_trade(s: str) -> list[dict[str, object]]:
                    return [r for r in disk_rows(data, s) if r["symbol"] == new[s].symbol]

                await poll(lambda: all(first_trade(s) for s in STREAMS), 60.0, "first trade not on disk")
                for s in STREAMS:
                    (row,) = first_trade(s)
                    assert (row["base"], row["price"], row["side"]) == (
                        "NEWCOIN",
                        1.25,
                        "buy",
                    )  # phemex has no id
            finally:
                assert await rec.terminate() == 0
            return took_s

    took_s = asyncio.run(body())
    print(f"record start -> NEWCOIN subscribed by the periodic refresh: {took_s:.1f} s")
    assert took_s > 50.0, "subscribed before the first periodic refresh: not this path"
