"""A market that opens while `pumpwatch record` runs: the instrument appears in the exchange's
list, the refresh (`pumpwatch symbols`, the command `record` runs every ``symbols.refresh``)
writes it to the subscription list, the workers' reload subscribes it on the open connection,
and its first trade is on disk. Real processes against the local exchanges, nothing mocked."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers.e2e import Market, Recorder, disk_rows, now_us, poll, wait_listening

from pumpwatch.recorder.sim.http import LocalHttpServer, Request
from pumpwatch.recorder.sim.instruments import sim_instrument
from pumpwatch.recorder.sim.protocol import HttpResponse
from pumpwatch.recorder.symbols import load_symbols_file

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

STREAMS = ["binance_spot", "okx_futures"]
WAIT_S = 60.0


async def _refresh(config: Path) -> float:
    """Run the refresh `record` runs periodically; its wall time in seconds."""
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pumpwatch", "symbols", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
    assert proc.returncode == 0, (out + err).decode()
    return time.monotonic() - t0


def test_a_market_opening_mid_run_is_subscribed_and_its_first_trade_recorded(tmp_path: Path) -> None:
    async def body() -> None:
        async with Market(STREAMS) as market:
            config = market.write_config(tmp_path)
            cfg = yaml.safe_load(config.read_text())
            # The list comes from the local exchanges' REST routes (no Upbit here: `all`).
            cfg["symbols"].update(policy="all", upbit_rest_url="http://127.0.0.1:9")
            config.write_text(yaml.safe_dump(cfg))
            symbols_file = Path(cfg["recorder"]["symbols_file"])
            await _refresh(config)
            rec = Recorder(config, tmp_path)
            await rec.start()
            try:
                await market.wait_subscribed()
                await wait_listening(tmp_path / "data", STREAMS)
                connections = {s: market.sims[s].connections for s in STREAMS}

                # The market opens: each exchange lists the new instrument.
                new = {s: sim_instrument(s, "NEWCOIN") for s in STREAMS}
                for s, inst in new.items():
                    market.sims[s].instruments[inst.symbol] = inst
                took_s = await _refresh(config)
                listed = load_symbols_file(symbols_file).streams
                assert all(new[s].symbol in listed[s] for s in STREAMS)

                def subscribed(s: str) -> bool:
                    return any(new[s].symbol in x.subscribed for x in market.sims[s].sessions())

                await poll(lambda: all(subscribed(s) for s in STREAMS), WAIT_S, "NEWCOIN not subscribed")
                # Its first trade, right after the subscription.
                t_us = now_us()
                for s, inst in new.items():
                    qty = 3 * inst.multiplier
                    market.sims[s].publish(
                        [(t_us, t_us, inst.symbol, "NEWCOIN", "USDT", 1.25, qty, "buy", "1")]
                    )

                def first_trade(s: str) -> list[dict[str, object]]:
                    return [r for r in disk_rows(tmp_path / "data", s) if r["symbol"] == new[s].symbol]

                await poll(lambda: all(first_trade(s) for s in STREAMS), WAIT_S, "first trade not on disk")
                for s in STREAMS:
                    (row,) = first_trade(s)
                    assert (row["base"], row["price"], row["side"], row["trade_id"]) == (
                        "NEWCOIN",
                        1.25,
                        "buy",
                        "1",
                    )
                    assert row["qty"] == pytest.approx(3 * new[s].multiplier)
                    # picked up live: no reconnect for the new subscription
                    assert market.sims[s].connections == connections[s]
                assert took_s < 30  # one REST call per stream; the CLI start-up dominates
            finally:
                assert await rec.terminate() == 0

    asyncio.run(body())


def test_a_prelaunch_contract_is_subscribed_before_it_opens_and_its_first_trade_recorded(
    tmp_path: Path,
) -> None:
    """Bybit lists a new linear contract as `PreLaunch`, only when asked for that status: the
    refresh asks, the recorder subscribes it while it cannot trade yet, and the opening trade is
    on disk. The instrument list is served with states by a local REST server; trades by the sim."""
    stream = "bybit_futures"
    prelaunch: list[dict[str, object]] = []

    def instruments_info(req: Request) -> HttpResponse:
        listed = prelaunch if req.query.get("status") == "PreLaunch" else trading
        doc = {
            "retCode": 0,
            "retMsg": "OK",
            "result": {"category": "linear", "list": listed, "nextPageCursor": ""},
        }
        return HttpResponse(200, json.dumps(doc).encode())

    def item(base: str, status: str) -> dict[str, object]:
        return {
            "symbol": f"{base}USDT", "contractType": "LinearPerpetual", "status": status, "baseCoin": base,
            "quoteCoin": "USDT", "settleCoin": "USDT", "symbolType": "",
        }  # fmt: skip

    trading = [item("AAA", "Trading")]

    async def body() -> None:
        async with Market([stream]) as market, LocalHttpServer(instruments_info) as rest:
            config = market.write_config(tmp_path)
            cfg = yaml.safe_load(config.read_text())
            cfg["symbols"].update(policy="all", upbit_rest_url="http://127.0.0.1:9")
            cfg["streams"][stream]["rest_url"] = rest.url
            config.write_text(yaml.safe_dump(cfg))
            await _refresh(config)
            rec = Recorder(config, tmp_path)
            await rec.start()
            try:
                sim = market.sims[stream]
                await poll(lambda: any("AAAUSDT" in x.subscribed for x in sim.sessions()), WAIT_S, "AAA")
                # Announced: listed as PreLaunch (the exchange accepts its subscription already).
                new = sim_instrument(stream, "NEWCOIN")
                sim.instruments[new.symbol] = new
                prelaunch.append(item("NEWCOIN", "PreLaunch"))
                await _refresh(config)
                await poll(lambda: any(new.symbol in x.subscribed for x in sim.sessions()), WAIT_S, "NEWCOIN")
                # It opens: the very first trade.
                t_us = now_us()
                sim.publish([(t_us, t_us, new.symbol, "NEWCOIN", "USDT", 0.5, 100.0, "sell", "first")])

                def first() -> list[dict[str, object]]:
                    return [r for r in disk_rows(tmp_path / "data", stream) if r["symbol"] == new.symbol]

                await poll(lambda: bool(first()), WAIT_S, "first trade not on disk")
                (row,) = first()
                assert (row["price"], row["qty"], row["side"], row["trade_id"]) == (
                    0.5,
                    100.0,
                    "sell",
                    "first",
                )
            finally:
                assert await rec.terminate() == 0

    asyncio.run(body())
