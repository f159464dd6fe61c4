"""`pumpwatch extract --store s3://…` on a machine with no data directory and no recorder:
the same listing files as a local extraction of the same store, each trade once across two
recorders, and a window in an hour the store does not hold yet named, never silent."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest
from helpers.remote_store import BUCKET, S3Server
from helpers.remote_world import GAPS, MIN, STREAM, all_rows, archive_and_upload, record
from helpers.store import T0_US

PUMPWATCH = str(Path(sys.executable).parent / "pumpwatch")
URL = f"s3://{BUCKET}/shared"
TRIGGER_US = T0_US + 25 * MIN  # inside rec-a's gap, which rec-b covers
WINDOW = ("--before", "10m", "--after", "10m")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPWATCH_")}
    return subprocess.run([PUMPWATCH, *args], capture_output=True, text=True, timeout=180, env=env)


def remote(s3: S3Server, laptop: Path, trigger_us: int, *more: str) -> subprocess.CompletedProcess[str]:
    return run(
        "extract", "0G", str(trigger_us), *WINDOW, "--no-backfill", "--no-chart",
        "--store", URL, "--endpoint-url", s3.endpoint_url, "--data-dir", str(laptop), *more,
    )  # fmt: skip


@pytest.fixture
def stores(tmp_path: Path, s3_server: S3Server) -> dict[str, Path]:
    dirs = {}
    for rid in GAPS:
        d = tmp_path / rid
        record(d, rid)
        archive_and_upload(d, URL, s3_server.endpoint_url, rid)
        dirs[rid] = d
    return dirs


def _files(listing: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((listing / "raw").iterdir())}


def test_remote_extract_equals_the_local_one(
    stores: dict[str, Path], s3_server: S3Server, tmp_path: Path
) -> None:
    local = run(
        "extract",
        "0G",
        str(TRIGGER_US),
        *WINDOW,
        "--no-backfill",
        "--no-chart",
        "--data-dir",
        str(stores["rec-a"]),
    )
    assert local.returncode == 0, local.stderr
    local_dir = Path(local.stdout.strip())

    laptop = tmp_path / "laptop"  # no data directory, no recorder
    got = remote(s3_server, laptop, TRIGGER_US, "--recorders", "rec-a")
    assert got.returncode == 0, got.stderr
    remote_dir = Path(got.stdout.strip())
    assert remote_dir.parent == laptop / "listings" and remote_dir.name == local_dir.name
    assert _files(remote_dir) == _files(local_dir)  # raw/*.json and raw/trades.parquet, byte for byte
    meta_l = orjson.loads((local_dir / "metadata.json").read_bytes())
    meta_r = orjson.loads((remote_dir / "metadata.json").read_bytes())
    assert meta_r["streams"] == meta_l["streams"]
    assert meta_l["streams"][STREAM]["coverage"]["state"] == "incomplete"  # rec-a's own gap
    assert meta_r["store"]["url"] == URL and list(meta_r["store"]["recorders"]) == ["rec-a"]
    assert (remote_dir / "refined" / "pump_analysis.json").read_bytes() == (
        local_dir / "refined" / "pump_analysis.json"
    ).read_bytes()
    assert got.stderr.count("incomplete") == local.stderr.count("incomplete")


def test_two_recorders_fill_each_others_gaps(
    stores: dict[str, Path], s3_server: S3Server, tmp_path: Path
) -> None:
    got = remote(s3_server, tmp_path / "laptop", TRIGGER_US, "--out", str(tmp_path / "out"))
    assert got.returncode == 0, got.stderr
    listing = Path(got.stdout.strip())
    assert listing.parent == tmp_path / "out"
    trades = orjson.loads((listing / "raw" / f"{STREAM}.json").read_bytes())
    lo, hi = TRIGGER_US - 10 * MIN, TRIGGER_US + 10 * MIN
    want = Counter((r[0], r[8]) for r in all_rows() if r[3] == "0G" and lo <= r[0] <= hi)
    assert Counter((t["timestamp_us"], t["trade_id"]) for t in trades) == want  # every trade, once
    meta = orjson.loads((listing / "metadata.json").read_bytes())
    cov = meta["streams"][STREAM]["coverage"]
    assert cov["state"] == "complete" and cov["gaps"] == [] and cov["listening_s"] == 1200.0
    contributed = meta["store"]["recorders"]
    assert set(contributed) == {"rec-a", "rec-b"}
    assert sum(r["trades"] for r in contributed.values()) == sum(want.values())
    assert "complete" in got.stderr


def test_a_window_not_in_the_store_yet_is_named(
    stores: dict[str, Path], s3_server: S3Server, tmp_path: Path
) -> None:
    later = T0_US + 3 * 60 * MIN + 30 * MIN  # 03:30: after every hour the recorders uploaded
    got = remote(s3_server, tmp_path / "laptop", later)
    assert got.returncode == 4, got.stderr
    assert f"{STREAM}: hour(s) 2026-01-01T03 UTC not archived in {URL} yet" in got.stderr
    assert "no trade of 0G in the window" in got.stderr

    # the recorders stopped at 02:00: 01:50 .. 02:10 is an ordinary gap, not an archive delay
    edge = remote(s3_server, tmp_path / "laptop", T0_US + 120 * MIN)
    assert edge.returncode == 0, edge.stderr
    assert "not archived" not in edge.stderr
    meta = orjson.loads((Path(edge.stdout.strip()) / "metadata.json").read_bytes())
    missing = meta["streams"][STREAM]["coverage"]["missing"]
    assert [(m["start_us"], m["reason"]) for m in missing] == [(T0_US + 120 * MIN, "not_attempted")]

    # both recorders' hour 01 gone from the store while their journals show them listening
    from helpers.remote_world import delete_archive_hours

    for rid in GAPS:
        delete_archive_hours(s3_server.filesystem(), URL, rid, STREAM, ["2026-01-01T01"])
    lost = remote(s3_server, tmp_path / "laptop", T0_US + 60 * MIN)
    assert lost.returncode == 0, lost.stderr
    assert f"{STREAM}: hour(s) 2026-01-01T01 UTC not archived" in lost.stderr
    meta = orjson.loads((Path(lost.stdout.strip()) / "metadata.json").read_bytes())
    assert meta["store"]["unarchived_hours"] == {STREAM: ["2026-01-01T01"]}
    missing = meta["streams"][STREAM]["coverage"]["missing"]
    assert [(m["start_us"], m["reason"]) for m in missing] == [(T0_US + 60 * MIN, "not_archived")]
    assert meta["streams"][STREAM]["last_trade_us"] < T0_US + 60 * MIN


def test_store_option_errors_are_one_line(tmp_path: Path) -> None:
    bad = run("extract", "0G", str(TRIGGER_US), "--store", "http://x/y", "--data-dir", str(tmp_path))
    assert (
        bad.returncode == 2 and "remote.url: expected s3://" in bad.stderr and "Traceback" not in bad.stderr
    )
    alone = run("extract", "0G", str(TRIGGER_US), "--recorders", "a", "--data-dir", str(tmp_path))
    assert alone.returncode == 2 and "go with --store or --remote" in alone.stderr
    nothing = run("extract", "0G", str(TRIGGER_US), "--remote", "--data-dir", str(tmp_path))
    assert nothing.returncode == 2 and "no remote.url" in nothing.stderr


def test_an_unreachable_store_is_a_store_error(tmp_path: Path) -> None:
    down = run(
        "extract", "0G", str(TRIGGER_US), "--store", URL, "--endpoint-url", "http://127.0.0.1:9",
        "--data-dir", str(tmp_path / "laptop"),
    )  # fmt: skip
    assert down.returncode == 3, down.stderr
    assert f"the store {URL} cannot be read" in down.stderr and "Traceback" not in down.stderr
    assert not (tmp_path / "laptop").exists()
