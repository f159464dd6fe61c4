"""Crash boundaries end to end (issue 11 §2): `pumpwatch record` as real processes against the
local exchanges.

- kill -9 of a worker while trades flow: every trade the exchange sent that is not on disk lies
  inside a journaled gap (coverage no longer claims the unflushed tail as listened);
- kill -9 of everything: `pumpwatch status` 10 s later says stale, not connected;
- a second `record` on the same data directory is refused at start, in one line, exit 78.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest
import yaml
from helpers.e2e import (
    WAIT_S,
    Market,
    Recorder,
    available_streams,
    check_exactly_once,
    disk_rows,
    now_us,
    poll,
    trade_key,
    wait_listening,
)

from pumpwatch.errors import EXIT_FATAL
from pumpwatch.segments.coverage import coverage
from pumpwatch.segments.journal import read_events
from pumpwatch.streams import split_stream

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ALL = available_streams()
if not ALL:  # pragma: no cover
    pytest.skip("no adapter available yet", allow_module_level=True)
EXCHANGE = split_stream(ALL[0])[0]
STREAMS = [s for s in ALL if split_stream(s)[0] == EXCHANGE]  # one worker is enough


def _config(market: Market, tmp: Path) -> Path:
    """The e2e config (heartbeat 1 s, flush 200 ms) without live repair: a lost trade must stay
    lost, or the test could not see where coverage puts it."""
    path = market.write_config(tmp)
    cfg = yaml.safe_load(path.read_text())
    cfg["repair"] = {"live": False}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _worker_pid(data: Path) -> int:
    return int((data / "run" / f"{STREAMS[0]}.lock").read_text().split()[0])


def test_kill9_of_a_worker_puts_every_lost_trade_inside_a_gap(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def body() -> None:
        async with Market(STREAMS) as market:
            rec = Recorder(_config(market, tmp_path), tmp_path)
            await rec.start()
            await market.wait_subscribed()
            await wait_listening(data, STREAMS)
            t0 = now_us()
            # 4 trades per >= 5 ms, each 1 ms apart: exchange times stay at the wall clock
            flow = asyncio.create_task(market.trade_for(4.0, per_tick=4, tick_s=0.005))
            await asyncio.sleep(1.5)
            pid = _worker_pid(data)
            os.kill(pid, signal.SIGKILL)  # mid-flow: the last < 200 ms of trades were not flushed
            await flow
            await market.wait_subscribed()  # the replacement
            await wait_listening(data, STREAMS)
            await market.trade_for(0.5)
            await asyncio.sleep(1.0)
            t1 = now_us()
            assert await rec.terminate() == 0
            for stream in STREAMS:
                on_disk = {trade_key(stream, r) for r in disk_rows(data, stream)}
                lost = [r for r in market.sent(stream) if trade_key(stream, r) not in on_disk]
                assert lost, f"{stream}: nothing was lost, the kill proved nothing"
                cov = coverage(data, stream, t0, t1, heartbeat_s=1.0, now_us=now_us())
                inside = [r for r in lost if any(a <= r[0] < b for a, b in cov.gaps)]
                assert len(inside) == len(lost), (
                    f"{stream}: {len(lost) - len(inside)} of {len(lost)} lost trades inside listened "
                    f"spans, e.g. {[r[0] for r in lost if r not in inside][:3]}; gaps {cov.gaps}"
                )
                events = read_events(data, stream)
                crashed = [e for e in events if e["event"] == "crashed"]
                assert len(crashed) == 1 and crashed[0]["pid"] == pid, crashed
                death = next(e["ts"] for e in events if e["event"] == "gap_start")
                # the gap starts at the last flush, before the supervisor noticed the death
                assert cov.gaps[0][0] == crashed[0]["durable_us"] < death
                claimed_before = sum(1 for r in lost if r[0] < death)
                print(
                    f"{stream}: {len(lost)} lost trades, all inside the gap starting "
                    f"{(death - cov.gaps[0][0]) / 1000:.0f} ms before the death notice; the old rule "
                    f"(gap from the notice) claimed {claimed_before} of them as listened"
                )

    asyncio.run(body())


async def _status(config: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pumpwatch",
        "status",
        "--config",
        str(config),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


def test_status_after_kill9_of_everything_is_stale_not_connected(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def body() -> None:
        async with Market(STREAMS) as market:
            config = _config(market, tmp_path)
            rec = Recorder(config, tmp_path)
            await rec.start()
            await market.wait_subscribed()
            await wait_listening(data, STREAMS)
            rc, out = await _status(config, "--json")
            assert rc == 0, out
            live = json.loads(out)["streams"]
            assert all(live[s]["liveness"] == "connected" for s in STREAMS), out
            await rec.kill_group()
            await asyncio.sleep(10.0)
            rc, out = await _status(config, "--json")
            assert rc == 0, out
            streams = json.loads(out)["streams"]
            rc, text = await _status(config)
            assert rc == 0, text
        for stream in STREAMS:
            s = streams[stream]
            assert s["connected_now"] is False and s["liveness"] == "stale", s
            assert s["last_sign_of_life_age_s"] > s["liveness_bound_s"] == 3.0
            row = next(line for line in text.splitlines() if line.startswith(stream + " "))
            assert row.split()[1] == "no", row
            assert f"{stream}: stale: no heartbeat for " in text and "recorder not running?" in text

    asyncio.run(body())


def test_a_second_record_on_the_same_data_dir_is_refused_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def body() -> None:
        async with Market(STREAMS) as market:
            config = _config(market, tmp_path)
            first = Recorder(config, tmp_path)
            await first.start()
            await market.wait_subscribed()
            await wait_listening(data, STREAMS)
            assert first.proc is not None
            second = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "pumpwatch",
                "record",
                "--config",
                str(config),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(second.communicate(), WAIT_S)
            assert second.returncode == EXIT_FATAL, (out, err)
            lines = err.decode().splitlines()
            assert len(lines) == 1 and out == b"", (out, err)
            assert f"already being recorded by pid {first.proc.pid} " in lines[0], lines
            await market.trade_for(1.0)
            await poll(
                lambda: all(
                    {trade_key(s, r) for r in market.sent(s)} <= {trade_key(s, r) for r in disk_rows(data, s)}
                    for s in STREAMS
                ),
                WAIT_S,
                "the first recorder stopped recording",
            )
            assert await first.terminate() == 0
        for stream in STREAMS:
            check_exactly_once(market, data, stream)
            events = read_events(data, stream)
            assert [e["event"] for e in events].count("start") == 1
            assert not [e for e in events if e["event"] in ("gap_start", "crashed")], events
            cov = coverage(data, stream, events[0]["ts"], events[-1]["ts"], heartbeat_s=1.0)
            assert [(a, b) for a, b in cov.gaps if b - a > 0 and a > events[0]["ts"] + 5_000_000] == []

    asyncio.run(body())
