"""`record` with ``remote.url`` set uploads what it seals (issue 14), against a real local S3
server (moto) and the local exchanges: a sealed hour arrives archived; the store unreachable for
a while, then back: recording never paused (no gap in the journal, every trade on disk once) and
everything sealed meanwhile, and at shutdown, arrives afterwards with the same bytes."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from helpers.e2e import (
    WAIT_S,
    Market,
    Recorder,
    available_streams,
    check_exactly_once,
    now_us,
    poll,
    wait_listening,
    wait_on_disk,
)
from helpers.housekeeping_e2e import archive_agrees, housekeeper, sealed, stop_worker
from helpers.remote_store import BUCKET, S3Server

from pumpwatch.segments.archive import list_archive
from pumpwatch.segments.coverage import coverage
from pumpwatch.segments.upload import REMOTE_DIR, STATUS_NAME
from pumpwatch.streams import split_stream

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STREAMS = [s for s in available_streams() if split_stream(s)[0] in ("binance", "okx")]
if not STREAMS:  # pragma: no cover
    pytest.skip("no adapter available yet", allow_module_level=True)
RECORDER = "e2e-1"
ARRIVE_WAIT_S = 150.0  # archive check every 15 s + upload backoff, nice'd, on a loaded 2-core box


def _config(market: Market, tmp: Path, s3: S3Server) -> Path:
    path = market.write_config(tmp)
    cfg = yaml.safe_load(path.read_text())
    cfg["remote"] = {
        "url": f"s3://{BUCKET}/pw",
        "endpoint_url": s3.endpoint_url,
        "recorder_id": RECORDER,
        "upload_interval": "2s",
        "backoff_initial": "500ms",
        "backoff_max": "3s",
        "connect_timeout": "1s",
        "request_timeout": "5s",
    }
    cfg["metrics"] = {"enabled": True, "host": "127.0.0.1", "port": _free_port()}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metric(config: Path, name: str) -> float | None:
    port = yaml.safe_load(config.read_text())["metrics"]["port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return None if m is None else float(m.group(1))


def _remote_archive(s3: S3Server, data: Path) -> dict[str, bytes]:
    """Every archive object of this recorder, keyed by its data-dir relative path."""
    import pyarrow.fs as pafs

    fs = s3.filesystem()
    base = f"{BUCKET}/pw/recorder={RECORDER}"
    infos = fs.get_file_info(pafs.FileSelector(f"{base}/archive", recursive=True, allow_not_found=True))
    out = {}
    for info in infos:
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as fh:
                out[info.path[len(base) + 1 :]] = fh.read()
    return out


def _local_archive(data: Path) -> dict[str, bytes]:
    return {p.relative_to(data).as_posix(): p.read_bytes() for _s, _h, p in list_archive(data)}


def _arrived(s3: S3Server, data: Path) -> bool:
    try:
        remote = _remote_archive(s3, data)
    except OSError:
        return False
    local = _local_archive(data)
    return bool(local) and all(remote.get(k) == v for k, v in local.items())


def test_record_uploads_what_it_seals_and_an_outage_costs_nothing(
    tmp_path: Path, s3_server: S3Server
) -> None:
    data = tmp_path / "data"

    async def body() -> None:
        async with Market(STREAMS) as market:
            config = _config(market, tmp_path, s3_server)
            rec = Recorder(config, tmp_path)
            await rec.start_listening(market, data, STREAMS)
            assert rec.proc is not None
            await poll(lambda: housekeeper(rec.proc.pid) is not None, WAIT_S, "no housekeeping child")
            await market.trade_for(1.5)
            await wait_on_disk(market, data)

            # 1. an hour sealed while recording: archived, then uploaded
            binance = [s for s in STREAMS if s.startswith("binance")]
            stop_worker(rec.proc.pid, "binance")
            await poll(lambda: len(sealed(data, binance)) >= len(binance), WAIT_S, "binance not sealed")
            await poll(
                lambda: all(archive_agrees(data, f.stream, f.start_us)[0] for f in sealed(data, binance)),
                ARRIVE_WAIT_S,
                "binance hour not archived",
                0.5,
            )
            await poll(lambda: _arrived(s3_server, data), ARRIVE_WAIT_S, "archive not uploaded", 0.5)

            # 2. the store goes away; recording goes on; another hour is sealed meanwhile
            await wait_listening(data, binance)  # the restarted worker listens again
            await market.trade_for(1.0)
            s3_server.stop()
            t_down = now_us()
            okx = [s for s in STREAMS if s.startswith("okx")]
            await market.trade_for(3.0)
            stop_worker(rec.proc.pid, "okx")
            await poll(lambda: len(sealed(data, okx)) >= len(okx), WAIT_S, "okx not sealed")
            await poll(
                lambda: all(archive_agrees(data, f.stream, f.start_us)[0] for f in sealed(data, okx)),
                ARRIVE_WAIT_S,
                "okx hour not archived during the outage",
                0.5,
            )
            status = data / REMOTE_DIR / STATUS_NAME

            def failing() -> bool:
                import orjson

                try:
                    return orjson.loads(status.read_bytes()).get("consecutive_failures", 0) > 0
                except (OSError, ValueError):
                    return False

            await poll(failing, ARRIVE_WAIT_S, "the uploader never noticed the outage", 0.5)
            await market.trade_for(5.0)  # recording never paused: checked below on the journal
            await wait_on_disk(market, data)
            t_up = now_us()

            # 3. the store is back: everything sealed arrives, same bytes
            s3_server.start()
            t_back = time.monotonic()
            await poll(
                lambda: _arrived(s3_server, data), ARRIVE_WAIT_S, "archive not uploaded after the outage", 0.5
            )
            print(f"everything sealed arrived {time.monotonic() - t_back:.1f} s after the store came back")

            def served() -> bool:  # the outage counted, the last success after it
                failures = _metric(config, "pumpwatch_upload_failures_total")
                last = _metric(config, "pumpwatch_upload_last_success_timestamp_seconds")
                return bool(failures) and last is not None and last * 1e6 > t_up

            await poll(lambda: served(), ARRIVE_WAIT_S, "upload metrics not served", 1.0)
            assert _metric(config, "pumpwatch_upload_backlog_files") is not None
            out = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "pumpwatch", "status", "--config", str(config)],
                capture_output=True,
                text=True,
                check=True,
            )
            assert f"recorder={RECORDER}" in out.stdout and "archive:" in out.stdout, out.stdout
            await market.trade_for(1.0)
            await wait_on_disk(market, data)
            assert await rec.terminate() == 0
        for stream in STREAMS:
            check_exactly_once(market, data, stream)
        for stream in binance:  # its worker ran through the whole outage: no gap at all
            cov = coverage(data, stream, t_down, t_up, heartbeat_s=1.0, now_us=now_us())
            assert cov.known and cov.gaps == [], f"{stream}: {cov.gaps}"
        # what record sealed at shutdown was archived and uploaded by its last round
        assert not [f for f in sealed(data, STREAMS) if not archive_agrees(data, f.stream, f.start_us)[0]]
        assert _arrived(s3_server, data), "the hours sealed at shutdown did not arrive"

    asyncio.run(body())
