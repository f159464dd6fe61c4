"""`pumpwatch symbols` against local exchanges: a stream whose list cannot be fetched keeps its
previous list and the command exits 1 naming it; a failure is logged when it starts and when it
ends, not at every refresh; an unchanged list is not rewritten (a worker's reload stays a stat);
``symbols.include_non_crypto`` reaches the adapters."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import httpx
import yaml

from pumpwatch.recorder.sim.binance import sim_protocol as binance_protocol
from pumpwatch.recorder.sim.http import LocalHttpServer, Request
from pumpwatch.recorder.sim.instruments import sim_instrument
from pumpwatch.recorder.sim.okx import sim_protocol as okx_protocol
from pumpwatch.recorder.sim.protocol import HttpResponse
from pumpwatch.recorder.sim.server import SimExchange
from pumpwatch.recorder.symbols import load_symbols_file
from pumpwatch.recorder.symbols_fetch import fetch_stream_instruments
from pumpwatch.settings import load_settings

CLOSED_URL = "http://127.0.0.1:9"  # discard port: nothing listens, the connection is refused


def _config(tmp: Path, rest: dict[str, str], **symbols: object) -> Path:
    cfg = {
        "data_dir": str(tmp / "data"),
        "recorder": {"streams": list(rest), "symbols_file": "subs.yaml"},  # relative: beside this file
        "symbols": {"policy": "all", "upbit_rest_url": CLOSED_URL, **symbols},
        "logging": {"file": False},
        "streams": {s: {"rest_url": url} for s, url in rest.items()},
    }
    path = tmp / "conf" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


async def _symbols_cli(config: Path, cwd: Path, *extra: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pumpwatch",
        "symbols",
        "--config",
        str(config),
        *extra,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_a_failed_stream_keeps_its_list_exits_1_naming_it_and_logs_once_per_change(tmp_path: Path) -> None:
    okx = [sim_instrument("okx_spot", b) for b in ("AAA", "BBB")]
    binance = [sim_instrument("binance_spot", b) for b in ("AAA", "CCC")]
    elsewhere = tmp_path / "elsewhere"  # the working directory plays no part
    elsewhere.mkdir()

    async def main() -> None:
        async with (
            SimExchange(okx_protocol("spot"), okx) as okx_sim,
            SimExchange(binance_protocol("spot"), binance) as binance_sim,
        ):
            good = {"okx_spot": okx_sim.rest_url, "binance_spot": binance_sim.rest_url}
            config = _config(tmp_path, good)
            subs = tmp_path / "conf" / "subs.yaml"

            rc, out, err = await _symbols_cli(config, elsewhere)
            assert rc == 0, err
            assert f"written: {subs}" in out
            first = load_symbols_file(subs)
            assert sorted(first.streams["okx_spot"]) == ["AAA-USDT", "BBB-USDT"]
            assert sorted(first.streams["binance_spot"]) == ["AAAUSDT", "CCCUSDT"]
            assert first.refresh_failing.keys() == {"upbit"}  # no Upbit here: its map stays as it was

            # Nothing changed: the file is left alone, so a worker's reload sees the same mtime.
            mtime = subs.stat().st_mtime_ns
            rc, out, err = await _symbols_cli(config, elsewhere)
            assert rc == 0 and f"unchanged: {subs}" in out
            assert subs.stat().st_mtime_ns == mtime

            # Binance's list fails: its previous list stays, exit 1 naming it, one warning.
            config = _config(tmp_path, {**good, "binance_spot": CLOSED_URL})
            rc, out, err = await _symbols_cli(config, elsewhere)
            assert rc == 1
            assert "instrument list failed for binance_spot" in err
            assert "okx_spot" not in err.split("instrument list failed for", 1)[1]
            assert "binance_spot         2 instruments  (REST failed, previous list kept" in out
            assert err.count("binance_spot: instrument list failed") == 1
            kept = load_symbols_file(subs)
            assert kept.streams == first.streams
            since = kept.refresh_failing["binance_spot"]
            assert since > 0

            # Still failing: exit 1 again, but no second warning and the file is not rewritten.
            mtime = subs.stat().st_mtime_ns
            rc, out, err = await _symbols_cli(config, elsewhere)
            assert rc == 1 and "instrument list failed for binance_spot" in err
            assert "binance_spot: instrument list failed" not in err
            assert subs.stat().st_mtime_ns == mtime
            assert load_symbols_file(subs).refresh_failing["binance_spot"] == since

            # Back: one warning saying so, and a market opened meanwhile is in the list.
            binance_sim.instruments["DDDUSDT"] = sim_instrument("binance_spot", "DDD")
            config = _config(tmp_path, good)
            rc, out, err = await _symbols_cli(config, elsewhere)
            assert rc == 0, err
            assert err.count("binance_spot: instrument list fetched again") == 1
            back = load_symbols_file(subs)
            assert back.refresh_failing.keys() == {"upbit"}
            assert sorted(back.streams["binance_spot"]) == ["AAAUSDT", "CCCUSDT", "DDDUSDT"]

    asyncio.run(main())


def test_a_first_fetch_that_fails_writes_the_others_and_exits_1(tmp_path: Path) -> None:
    okx = [sim_instrument("okx_spot", "AAA")]

    async def main() -> None:
        async with SimExchange(okx_protocol("spot"), okx) as okx_sim:
            config = _config(tmp_path, {"okx_spot": okx_sim.rest_url, "binance_spot": CLOSED_URL})
            rc, out, err = await _symbols_cli(config, tmp_path)
            assert rc == 1
            assert "binance_spot         - (REST failed, no previous list" in out
            assert "instrument list failed for binance_spot" in err
            f = load_symbols_file(tmp_path / "conf" / "subs.yaml")
            assert list(f.streams) == ["okx_spot"] and f.refresh_failing.keys() == {"binance_spot", "upbit"}

    asyncio.run(main())


def test_an_empty_instrument_list_is_a_failure_not_an_empty_subscription(tmp_path: Path) -> None:
    async def main() -> None:
        async with SimExchange(okx_protocol("spot"), [sim_instrument("okx_spot", "AAA")]) as sim:
            config = _config(tmp_path, {"okx_spot": sim.rest_url})
            subs = tmp_path / "conf" / "subs.yaml"
            assert (await _symbols_cli(config, tmp_path))[0] == 0
            sim.instruments.clear()  # an error page, or a filter that matches nothing
            rc, _out, err = await _symbols_cli(config, tmp_path)
            assert rc == 1 and "the instrument list is empty" in err
            assert list(load_symbols_file(subs).streams["okx_spot"]) == ["AAA-USDT"]

    asyncio.run(main())


def test_include_non_crypto_setting_reaches_the_adapter_option(tmp_path: Path) -> None:
    stock = {"instType": "SPOT", "instId": "AAPL-USDT", "baseCcy": "AAPL", "quoteCcy": "USDT"}
    coin = {"instType": "SPOT", "instId": "AAA-USDT", "baseCcy": "AAA", "quoteCcy": "USDT"}
    body = {
        "code": "0",
        "msg": "",
        "data": [
            {**coin, "state": "live", "instCategory": "1"},
            {**stock, "state": "live", "instCategory": "3"},
        ],
    }

    def handle(_req: Request) -> HttpResponse:
        return HttpResponse(200, json.dumps(body).encode())

    async def main() -> None:
        server = LocalHttpServer(handle)
        async with server:
            for include, expected in ((False, ["AAA-USDT"]), (True, ["AAA-USDT", "AAPL-USDT"])):
                config = _config(tmp_path, {"okx_spot": server.url}, include_non_crypto=include)
                settings = load_settings(config)
                async with httpx.AsyncClient() as client:
                    got, invalid = await fetch_stream_instruments(client, settings, "okx_spot")
                assert [i.symbol for i in got] == expected and invalid == 0
            # A per-stream option wins over the setting.
            config = _config(tmp_path, {"okx_spot": server.url}, include_non_crypto=True)
            settings = load_settings(config)
            settings.streams["okx_spot"].options = {"include_non_crypto": False}
            async with httpx.AsyncClient() as client:
                got, _ = await fetch_stream_instruments(client, settings, "okx_spot")
            assert [i.symbol for i in got] == ["AAA-USDT"]

    asyncio.run(main())


def test_quiet_refresh_prints_only_a_change_in_the_failing_streams(tmp_path: Path) -> None:
    async def main() -> None:
        async with SimExchange(okx_protocol("spot"), [sim_instrument("okx_spot", "AAA")]) as sim:
            good = _config(tmp_path, {"okx_spot": sim.rest_url})
            rc, out, err = await _symbols_cli(good, tmp_path, "--quiet")
            assert (rc, out) == (0, "") and err.count("Upbit KRW market list unavailable") == 1
            bad = _config(tmp_path, {"okx_spot": CLOSED_URL})
            rc, out, err = await _symbols_cli(bad, tmp_path, "-q")
            assert rc == 1 and out == "" and "instrument list failed for okx_spot" in err
            rc, out, err = await _symbols_cli(bad, tmp_path, "-q")
            assert rc == 1 and out == "" and err == ""  # still failing: nothing new to say
            good = _config(tmp_path, {"okx_spot": sim.rest_url})  # the same file, rewritten
            rc, out, err = await _symbols_cli(good, tmp_path, "-q")
            assert rc == 0 and out == "" and "okx_spot: instrument list fetched again" in err

    asyncio.run(main())
