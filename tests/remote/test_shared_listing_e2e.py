"""Two or three `record` processes (separate data dirs = machines, their own recorder ids, one
stream recorded by two of them), the local exchanges, the local Upbit server and the local S3
server: a listing notice gives exactly one complete shared directory with all their streams,
assembled by the recorders' own housekeeping; one replica killed (kill -9 of its whole process
group, as a machine dying) during the window loses nothing, and the survivor completes the
directory at the deadline naming the missing part. Short windows and rounds via settings."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pyarrow.fs as pafs
import pytest
from helpers.e2e import SOAK_LONG, available_streams
from helpers.remote_store import BUCKET, S3Server

from pumpwatch.recorder.sim.cluster import SimCluster
from pumpwatch.recorder.sim.upbit import UpbitSim, krw_markets
from pumpwatch.segments.remote import open_filesystem, parse_url

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

STREAMS = available_streams()[:3]
if len(STREAMS) < 3:  # pragma: no cover
    pytest.skip("three adapters needed", allow_module_level=True)
S1, S2, S3 = STREAMS
URL = f"s3://{BUCKET}/e2e-shared"
AFTER_S = 3.0
DEADLINE_S = 12.0


async def _start(tmp: Path, rid: str, config: Path, streams: list[str]) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPWATCH_")}
    env["PUMPWATCH_HOUSEKEEPING_CHECK_S"] = "1"
    with open(tmp / f"{rid}.log", "wb") as log:
        return await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "pumpwatch", "record", "--config", str(config)),
            *("--streams", ",".join(streams)),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,  # its own process group: kill -9 of the "machine"
        )


async def _run(
    tmp: Path, s3: S3Server, layout: dict[str, list[str]], kill: str | None = None
) -> tuple[Any, float]:
    fs = open_filesystem(endpoint_url=s3.endpoint_url)
    root = parse_url(URL)
    procs: dict[str, asyncio.subprocess.Process] = {}
    async with (
        SimCluster(STREAMS, ["AAA", "BBB"], trades_per_s=100.0) as cluster,
        UpbitSim(markets=krw_markets(["BTC"])) as upbit,
    ):
        symbols = cluster.write_symbols(tmp / "symbols.yaml")
        for rid, streams in layout.items():
            config = cluster.write_config(
                tmp / rid / "config.yaml",
                {
                    "data_dir": str(tmp / rid / "data"),
                    "storage": {"flush_interval": "200ms"},
                    "recorder": {"symbols_file": str(symbols), "heartbeat": "1s"},
                    "extract": {"before": "3s", "after": f"{AFTER_S:g}s"},
                    "upbit": {"hosts": [upbit.url], "poll_interval": "500ms"},
                    "remote": {
                        "url": URL,
                        "endpoint_url": s3.endpoint_url,
                        "recorder_id": rid,
                        "upload_interval": "1s",
                        "listing_deadline": f"{DEADLINE_S:g}s",
                    },
                    "logging": {"file": False},
                },
            )
            procs[rid] = await _start(tmp, rid, config, streams)
        got = None
        try:
            await asyncio.sleep(12)  # listening and heartbeating
            notice = upbit.add_notice("에이에이에이(AAA) KRW 마켓 디지털 자산 추가")
            t_us = notice.first_listed_at_us
            if kill is not None:
                await asyncio.sleep(1.0)  # inside the window (T + after)
                os.killpg(procs[kill].pid, signal.SIGKILL)
                await procs.pop(kill).wait()
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline and got is None:
                await asyncio.sleep(0.5)
                for info in fs.get_file_info(pafs.FileSelector(root.path("listings"), allow_not_found=True)):
                    try:
                        with fs.open_input_stream(f"{info.path}/metadata.json") as f:
                            got = orjson.loads(f.read())
                    except (FileNotFoundError, OSError):
                        continue
            elapsed = time.time() - t_us / 1e6
        finally:
            for p in procs.values():
                p.send_signal(signal.SIGTERM)
            for p in procs.values():
                await asyncio.wait_for(p.wait(), 60)
    assert got is not None, (tmp / "rec-a.log").read_text()[-3000:]
    names = fs.get_file_info(pafs.FileSelector(root.path("listings")))
    assert len(names) == 1, [i.path for i in names]  # exactly one shared directory
    return got, elapsed


@pytest.mark.parametrize(
    "layout",
    [
        {"rec-a": [S1, S2], "rec-b": [S1, S3]},
        pytest.param(
            {"rec-a": [S1, S2], "rec-b": [S2, S3], "rec-c": [S3, S1]},
            marks=pytest.mark.skipif(not SOAK_LONG, reason="long form only (PUMPWATCH_SOAK=long)"),
        ),
    ],
    ids=["two", "three"],
)
def test_records_give_one_shared_listing(
    tmp_path: Path, s3_server: S3Server, layout: dict[str, list[str]]
) -> None:
    meta, elapsed = asyncio.run(_run(tmp_path, s3_server, layout))
    print(f"\n{len(layout)} recorders: T -> complete shared listing {elapsed:.1f} s (after {AFTER_S:g} s)")
    assert meta["symbol"] == "AAA"
    assert sorted(p["recorder"] for p in meta["shared"]["parts"]) == sorted(layout)
    assert meta["shared"]["complete"] and meta["shared"]["missing_parts"] == []
    assert set(meta["streams"]) == set(STREAMS)
    for stream in STREAMS:
        entry = meta["streams"][stream]
        recorders = sorted(r for r, s in layout.items() if stream in s)
        # every recorder of the stream holds a part of it (another one may too: its window
        # repair fetched the stream's trades from the exchange's REST history)
        assert set(recorders) <= set(entry["rows_by_recorder"])
        assert entry["trades"] > 0 and entry["coverage"]["state"] == "complete", entry
        # merged by the trade key: each trade once, no replica holds more than the merge
        assert entry["trades"] >= max(entry["rows_by_recorder"].values())
        assert entry["trades"] <= sum(entry["rows_by_recorder"].values())
    assert "no recorder records it" in meta["shared"]["missing_streams"].values()


def test_replica_killed_in_the_window_loses_nothing(tmp_path: Path, s3_server: S3Server) -> None:
    layout = {"rec-a": [S1, S2], "rec-b": [S1, S3]}
    meta, elapsed = asyncio.run(_run(tmp_path, s3_server, layout, kill="rec-b"))
    print(f"\nrec-b killed: complete at the deadline, {elapsed:.1f} s after T")
    # rec-b was alive at T, so it was waited for until the deadline, then named
    assert meta["shared"]["missing_parts"] == ["rec-b"] and not meta["shared"]["complete"]
    assert elapsed >= AFTER_S + DEADLINE_S
    assert [p["recorder"] for p in meta["shared"]["parts"]] == ["rec-a"]
    # the replicated stream lost nothing: the survivor listened through the whole window
    entry = meta["streams"][S1]
    assert entry["trades"] > 0 and entry["coverage"]["state"] == "complete", entry
    assert S2 in meta["streams"]
    # rec-b's own stream: from rec-a's window repair (REST history) if it had any, else named
    # missing with rec-b's part
    assert S3 in meta["streams"] or "rec-b" in meta["shared"]["missing_streams"][S3]
