"""The housekeeper's heartbeat in the shared store (issue 14, who is expected for a notice): it
declares the run's start, its listing watcher and its streams, carries earlier runs over, and a
second machine under the same recorder id stops instead of overwriting the first one's objects.
Against the local S3 server."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
from helpers.remote_store import BUCKET, S3Server

from pumpwatch.detector.shared_listing import read_recorders
from pumpwatch.recorder.housekeeping import Housekeeper
from pumpwatch.segments.remote import instance_token, open_filesystem, parse_url
from pumpwatch.settings import load_settings

URL = f"s3://{BUCKET}/beat"


def _settings(data: Path, s3: S3Server, *, upbit: bool = True):  # type: ignore[no-untyped-def]
    data.mkdir(parents=True, exist_ok=True)
    path = data.parent / f"{data.name}.yaml"
    path.write_text(
        f"data_dir: {data}\nupbit:\n  enabled: {str(upbit).lower()}\n"
        f"remote:\n  url: {URL}\n  endpoint_url: {s3.endpoint_url}\n  recorder_id: same-host\n"
        "  connect_timeout: 1s\n  request_timeout: 10s\n"
    )
    return load_settings(path)


def test_the_heartbeat_declares_the_run(tmp_path: Path, s3_server: S3Server) -> None:
    s = _settings(tmp_path / "a", s3_server, upbit=False)
    hk = Housekeeper(s, started_us=1_700_000_000_000_000, streams=["binance_spot", "okx"])
    hk.shared_round(1_700_000_100_000_000)
    fs = open_filesystem(endpoint_url=s3_server.endpoint_url)
    with fs.open_input_stream(parse_url(URL).recorder_path("same-host", "recorder.json")) as f:
        doc = orjson.loads(f.read())
    assert doc["started_us"] == 1_700_000_000_000_000 and doc["heartbeat_us"] == 1_700_000_100_000_000
    assert doc["listing_watcher"] is False
    assert doc["streams"] == ["binance_spot", "okx_spot", "okx_futures"]
    assert doc["instance"] == instance_token(tmp_path / "a") and len(doc["instance"]) == 32
    hk.uploader.stop()  # type: ignore[union-attr]
    # the next record of this data dir keeps this run in its history
    hk2 = Housekeeper(s, started_us=1_700_000_200_000_000, streams=["binance_spot"])
    hk2.shared_round(1_700_000_200_000_000)
    info = read_recorders(fs, parse_url(URL))["same-host"]
    assert info is not None and [r.started_us for r in info.runs] == [1_700_000_000_000_000]
    assert info.run_at(1_700_000_050_000_000) is None  # the watcher was off then
    hk2.uploader.stop()  # type: ignore[union-attr]


def test_a_clone_with_the_same_recorder_id_stops(tmp_path: Path, s3_server: S3Server) -> None:
    import time

    first = Housekeeper(_settings(tmp_path / "a", s3_server))
    first.shared_round(time.time_ns() // 1000)
    assert first.conflict is None
    clone = Housekeeper(_settings(tmp_path / "b", s3_server))  # another data dir: another token
    assert not clone.run(threading.Event())  # refused before uploading anything
    assert clone.conflict is not None and "in use by another live recorder" in clone.conflict
    first.uploader.stop()  # type: ignore[union-attr]
