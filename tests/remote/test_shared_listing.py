"""The one shared listing directory (issue 14): real recorders' stores (segments, journals),
real `extract` runs writing each recorder's part, the real `Uploader` sending the parts to the
local S3 server, then `assemble_listing` / `pumpwatch report --store`."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from helpers.remote_store import BUCKET, S3Server
from helpers.remote_world import MIN, STREAM, archive_and_upload, record
from helpers.store import T0_US
from typer.testing import CliRunner

from pumpwatch.cli import app
from pumpwatch.detector.shared_listing import assemble_listing, assemble_pending, publish_heartbeat
from pumpwatch.extractor.extract import extract
from pumpwatch.segments.remote import open_filesystem, parse_url
from pumpwatch.timeunits import US_PER_S

T_US = T0_US + 25 * MIN  # rec-a is deaf 20..30 min, rec-b 70..80 min (remote_world.GAPS)
BEFORE_S, AFTER_S = 300.0, 600.0
END_US = T_US + int(AFTER_S * US_PER_S)
NAME = "0G_20260101T002500Z"
URL = f"s3://{BUCKET}/shared"


def _fs(s3: S3Server) -> pafs.FileSystem:
    return open_filesystem(endpoint_url=s3.endpoint_url)


def _part(tmp: Path, s3: S3Server, rid: str, *, gap: tuple[int, int] | None = None) -> Path:
    d = tmp / rid
    d.mkdir()
    record(d, rid, gap=gap)
    extract(d, "0G", T_US, before_s=BEFORE_S, after_s=AFTER_S, streams=[STREAM])
    archive_and_upload(d, URL, s3.endpoint_url, rid)
    return d


def _objects(fs: pafs.FileSystem, base: str) -> dict[str, bytes]:
    out = {}
    for info in fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)):
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as f:
                out[info.path[len(base) :]] = f.read()
    return out


def test_two_recorders_one_complete_directory(tmp_path: Path, s3_server: S3Server) -> None:
    fs = _fs(s3_server)
    root = parse_url(URL)
    _part(tmp_path, s3_server, "rec-a")
    _part(tmp_path, s3_server, "rec-b")
    oracle = tmp_path / "oracle"
    oracle.mkdir()
    record(oracle, "rec-a", gap=(0, 0))  # every trade: what an always-listening recorder holds
    want = extract(oracle, "0G", T_US, before_s=BEFORE_S, after_s=AFTER_S, streams=[STREAM])
    want_rows = pq.read_table(want / "raw" / "trades.parquet")
    for rid in ("rec-a", "rec-b"):
        publish_heartbeat(fs, root, rid, T_US + 1)
    # not before T + after
    assert assemble_listing(fs, root, NAME, now_us=END_US - 1) is None
    got = assemble_listing(fs, root, NAME, now_us=END_US + 1)
    assert got is not None and got.written and got.complete
    base = root.path("listings", NAME)
    first = _objects(fs, base)
    meta = orjson.loads(first["/metadata.json"])
    assert [p["recorder"] for p in meta["shared"]["parts"]] == ["rec-a", "rec-b"]
    assert meta["shared"]["missing_parts"] == [] and meta["shared"]["complete"]
    assert meta["shared"]["missing_streams"]["okx_spot"] == "no recorder records it"
    entry = meta["streams"][STREAM]
    # each trade once, none lost: rec-a's deaf minutes come from rec-b
    assert entry["trades"] == want_rows.num_rows > 0
    assert entry["rows_by_recorder"]["rec-a"] < want_rows.num_rows
    assert entry["coverage"]["gaps"] == [] and entry["coverage"]["complete"] is True
    shared = pq.read_table(_tmp_copy(tmp_path, first["/raw/trades.parquet"]))
    key = lambda t: sorted(zip(t.column("time").to_pylist(), t.column("price").to_pylist(), strict=True))  # noqa: E731
    assert key(shared) == key(want_rows)
    assert "/refined/pump_analysis.json" in first or any(k.startswith("/refined/") for k in first)
    # idempotent: a second assembler (another recorder) writes nothing new; forcing a rewrite
    # gives byte-identical objects (deterministic in the parts)
    again = assemble_listing(fs, root, NAME, now_us=END_US + 5 * US_PER_S)
    assert again is not None and not again.written
    fs.delete_file(f"{base}/metadata.json")
    assert assemble_listing(fs, root, NAME, now_us=END_US + 9 * US_PER_S).written  # type: ignore[union-attr]
    second = _objects(fs, base)
    changed = sorted(k for k in first if first[k] != second.get(k) and not k.endswith(".png"))
    assert changed == [], changed


def _tmp_copy(tmp: Path, body: bytes) -> Path:
    p = tmp / "copy.parquet"
    p.write_bytes(body)
    return p


def test_dead_recorder_waited_for_until_the_deadline(tmp_path: Path, s3_server: S3Server) -> None:
    fs = _fs(s3_server)
    root = parse_url(URL)
    _part(tmp_path, s3_server, "rec-a")
    for rid in ("rec-a", "rec-b"):  # rec-b was alive at T, then died before its part went up
        publish_heartbeat(fs, root, rid, T_US + 1)
    assert assemble_pending(fs, root, now_us=END_US + 10 * US_PER_S, deadline_s=60) == []
    done = assemble_pending(fs, root, now_us=END_US + 61 * US_PER_S, deadline_s=60)
    assert len(done) == 1 and done[0].written and not done[0].complete
    meta = done[0].meta
    assert meta["shared"]["missing_parts"] == ["rec-b"]
    assert "rec-b" in meta["shared"]["missing_streams"]["okx_spot"]
    assert meta["streams"][STREAM]["trades"] > 0
    # the late part arrives: the directory is re-assembled with it
    _part(tmp_path, s3_server, "rec-b")
    redo = assemble_listing(fs, root, NAME, now_us=END_US + 120 * US_PER_S, deadline_s=60)
    assert redo is not None and redo.written and redo.complete
    assert redo.meta["shared"]["missing_parts"] == []


def test_report_reads_the_shared_store(tmp_path: Path, s3_server: S3Server) -> None:
    fs = _fs(s3_server)
    root = parse_url(URL)
    _part(tmp_path, s3_server, "rec-a")
    _part(tmp_path, s3_server, "rec-b")
    publish_heartbeat(fs, root, "rec-a", T_US + 1)
    assert assemble_listing(fs, root, NAME, now_us=END_US + 1) is not None
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    res = CliRunner().invoke(
        app,
        [
            "report",
            "--data-dir",
            str(laptop),
            "--store",
            URL,
            "--endpoint-url",
            s3_server.endpoint_url,
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    study = json.loads(res.stdout)
    assert study["totals"]["listings"] == 1
    # the local part of rec-a and the shared directory of the same listing: read once (shared)
    res = CliRunner().invoke(
        app,
        [
            "report",
            "--data-dir",
            str(tmp_path / "rec-a"),
            "--store",
            URL,
            "--endpoint-url",
            s3_server.endpoint_url,
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["totals"]["listings"] == 1


@pytest.mark.parametrize("unused", [None])
def test_nothing_before_any_part(s3_server: S3Server, unused: None) -> None:
    fs = _fs(s3_server)
    root = parse_url(URL)
    assert assemble_listing(fs, root, NAME, now_us=END_US + 10**9) is None
    assert assemble_pending(fs, root, now_us=END_US + 10**9) == []
