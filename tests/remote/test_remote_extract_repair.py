"""`pumpwatch extract --store` applies the extraction-time repair on top of the shared store:
the union's gaps are fetched from the local exchanges' REST history (recorder/sim), each trade
once, and nothing is written to the store or to a local data directory."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pyarrow.fs as pafs
import yaml
from helpers.remote_store import BUCKET, S3Server
from helpers.window_world import BASE, GAP_HI, GAP_LO, NOW_US, T_US, world

from pumpwatch.segments import upload
from pumpwatch.segments.archive import archive_pending
from pumpwatch.segments.remote import RemoteSettings
from pumpwatch.timeunits import US_PER_HOUR

PUMPWATCH = str(Path(sys.executable).parent / "pumpwatch")
URL = f"s3://{BUCKET}/repair"
STREAMS = ("binance_spot", "okx_futures", "bybit_spot")
WHOLE = STREAMS[:2]  # history reaches back; bybit_spot answers its latest 60 trades only


def _objects(s3: S3Server) -> list[str]:
    fs = s3.filesystem()
    infos = fs.get_file_info(pafs.FileSelector(f"{BUCKET}/repair", recursive=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


def test_remote_extract_repairs_the_unions_gaps(tmp_path: Path, s3_server: S3Server) -> None:
    async def main() -> None:
        async with world(tmp_path, STREAMS) as w:
            w.write_symbols()
            w.record_with_gap()
            archive_pending(w.data_dir, retention_s=None)
            # the uploader as it runs two hours later, when the window's journal hours are closed
            up = upload.Uploader(
                w.data_dir,
                RemoteSettings(url=URL, endpoint_url=s3_server.endpoint_url, recorder_id="tokyo"),
                clock_us=lambda: NOW_US + 2 * US_PER_HOUR,
            )
            assert up.run_once().backlog_files == 0
            up.stop()
            stored = _objects(s3_server)
            assert sum("/journal/" in key for key in stored) >= len(STREAMS)  # every stream's hour(s)
            laptop = tmp_path / "laptop"
            doc: dict[str, Any] = {
                "data_dir": str(laptop),
                "recorder": {"streams": list(STREAMS), "symbols_file": w.settings.recorder.symbols_file},
                "streams": {s: {"rest_url": w.exchanges[s].rest_url} for s in STREAMS},
                "logging": {"file": False},
                "metrics": {"enabled": False},
            }
            config = tmp_path / "laptop.yaml"
            config.write_text(yaml.safe_dump(doc), encoding="utf-8")
            env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPWATCH_")}
            proc = await asyncio.create_subprocess_exec(
                PUMPWATCH, "extract", BASE, str(T_US), "--no-detect", "--config", str(config),
                "--store", URL, "--endpoint-url", s3_server.endpoint_url,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            assert proc.returncode == 0, err.decode()
            listing = Path(out.decode().strip())
            assert listing.parent == laptop / "listings"
            said = {
                line.split()[1].rstrip(":"): line
                for line in err.decode().splitlines()
                if line.startswith("repair ")
            }
            meta = orjson.loads((listing / "metadata.json").read_bytes())
            for stream in WHOLE:
                gap = [r for r in w.window_tape(stream) if GAP_LO <= r[0] < GAP_HI]
                assert (
                    gap
                    and f"{stream}: {len(gap)} trade(s) added from REST, 1 span(s) repaired" in said[stream]
                )
                trades = orjson.loads((listing / "raw" / f"{stream}.json").read_bytes())
                assert Counter(t["trade_id"] for t in trades) == Counter(r[8] for r in w.window_tape(stream))
                assert {t["trade_id"] for t in trades if t["source"] == "rest"} == {r[8] for r in gap}
                cov = meta["streams"][stream]["coverage"]
                assert cov["state"] == "repaired" and cov["rest_trades"] == len(gap), cov
                assert cov["known"] and [r["start_us"] for r in cov["repaired"]] == [
                    GAP_LO
                ]  # the journal's gap
            assert "still missing (no_history)" in said["bybit_spot"]
            assert meta["streams"]["bybit_spot"]["coverage"]["state"] == "incomplete"
            assert list(meta["store"]["recorders"]) == ["tokyo"]
            assert _objects(s3_server) == stored  # the store is only read
            assert sorted(p.name for p in laptop.iterdir()) == ["listings"]

    asyncio.run(main())
