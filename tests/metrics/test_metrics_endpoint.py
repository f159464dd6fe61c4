"""`record` serves Prometheus metrics: scraped once during a real recording against local servers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import httpx

from pumpwatch.recorder.sim.cluster import SimCluster
from pumpwatch.recorder.sim.upbit import UpbitSim, krw_markets

STREAMS = ["binance_spot", "okx_futures", "gate_futures"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _value(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$"
    m = re.search(pattern, text, flags=re.M)
    assert m, f"{name}{labels} not in metrics:\n{text[:3000]}"
    return float(m.group(1))


async def _scenario(tmp: Path) -> tuple[str, int]:
    port = _free_port()
    data = tmp / "data"
    async with (
        SimCluster(STREAMS, ["AAA", "BBB"], trades_per_s=200.0) as cluster,
        UpbitSim(markets=krw_markets(["BTC"])) as upbit,
    ):
        symbols = cluster.write_symbols(tmp / "symbols.yaml")
        config = cluster.write_config(
            tmp / "config.yaml",
            {
                "data_dir": str(data),
                "storage": {"flush_interval": "200ms"},
                "recorder": {"symbols_file": str(symbols), "heartbeat": "1s"},
                "upbit": {"hosts": [upbit.url], "poll_interval": "500ms"},
                "metrics": {"enabled": True, "host": "127.0.0.1", "port": port},
                "logging": {"file": False},
            },
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPWATCH_")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pumpwatch",
            "record",
            "--config",
            str(config),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        text = ""
        try:
            deadline = time.monotonic() + 40
            async with httpx.AsyncClient() as client:
                while time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                    try:
                        r = await client.get(f"http://127.0.0.1:{port}/metrics")
                    except httpx.TransportError:
                        continue
                    text = r.text
                    ready = all(
                        re.search(rf'^pumpwatch_trades_total{{stream="{s}"}} [1-9]', text, flags=re.M)
                        for s in STREAMS
                    )
                    if (
                        ready
                        and "pumpwatch_upbit_polls_total" in text
                        and _value(text, "pumpwatch_upbit_polls_total") > 0
                    ):
                        break
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = await asyncio.wait_for(proc.wait(), 60)
        return text, rc


def test_metrics_endpoint_is_scraped_during_recording(tmp_path: Path) -> None:
    text, rc = asyncio.run(_scenario(tmp_path))
    assert rc == 0
    for stream in STREAMS:
        lab = f'{{stream="{stream}"}}'
        assert _value(text, "pumpwatch_trades_total", lab) > 0
        assert _value(text, "pumpwatch_frames_total", lab) >= _value(
            text, "pumpwatch_parse_errors_total", lab
        )
        assert _value(text, "pumpwatch_connections", lab) >= 1
        assert _value(text, "pumpwatch_segment_bytes_written_total", lab) >= 0
        assert _value(text, "pumpwatch_writer_queue_rows", lab) >= 0
        assert _value(text, "pumpwatch_lag_seconds", lab) >= 0
        assert "pumpwatch_gap_seconds_total" in text
    assert _value(text, "pumpwatch_upbit_polls_total") > 0
    assert _value(text, "pumpwatch_listings_fired_total") == 0
