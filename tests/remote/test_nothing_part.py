"""A recorder that has nothing of a listed coin answers with an explicit empty part (issue 14):
its watcher's extraction finds nothing (`NothingMatchedError`), it writes the "nothing recorded
here" metadata, the uploader puts it as its part, and the shared listing is complete without
waiting for the deadline. Real stores, the real scheduler and extractor, the local S3 server."""

from __future__ import annotations

import asyncio
from pathlib import Path

from helpers.remote_store import BUCKET, S3Server
from helpers.remote_world import MIN, STREAM, archive_and_upload, record
from helpers.store import T0_US, make_rows

from pumpwatch.detector.shared_listing import assemble_listing, publish_heartbeat
from pumpwatch.extractor.extract import extract
from pumpwatch.recorder.upbit.notices import Notice
from pumpwatch.recorder.upbit.state import Firing
from pumpwatch.recorder.upbit.titles import parse_title
from pumpwatch.recorder.upbit.trigger import ExtractionScheduler
from pumpwatch.segments import SegmentWriter
from pumpwatch.segments.journal import EventJournal
from pumpwatch.segments.remote import open_filesystem, parse_url
from pumpwatch.timeunits import US_PER_S

T_US = T0_US + 25 * MIN
BEFORE_S, AFTER_S = 300.0, 600.0
END_US = T_US + int(AFTER_S * US_PER_S)
NAME = "0G_20260101T002500Z"
URL = f"s3://{BUCKET}/nothing"
OTHER = "okx_spot"


def _record_other_coins(data: Path) -> None:
    """okx_spot recorded all along, but only BTC and ETH: nothing of 0G."""
    with SegmentWriter(data, OTHER, fsync=False) as w:
        w.append(make_rows(600, step_us=6 * US_PER_S, symbols=("BTC", "ETH")))
    with EventJournal(data, OTHER) as j:
        j.record("start", ts_us=T0_US - MIN, pid=1)
        j.record("connected", conn="c1", ts_us=T0_US - MIN, url="ws://127.0.0.1")
        symbols, bases = ["BTC-USDT", "ETH-USDT"], ["BTC", "ETH"]
        j.record("subscribed", conn="c1", ts_us=T0_US - MIN, symbols=symbols, bases=bases)
        for t in range(T0_US, T0_US + 3600 * US_PER_S, 5 * MIN):
            j.record("alive", ts_us=t)


def _firing() -> Firing:
    title = "제로지(0G) KRW 마켓 디지털 자산 추가"
    return Firing("0G", T_US, Notice(7, title, T_US, T_US, "123"), T_US + US_PER_S, parse_title(title))


async def _watch(data: Path) -> ExtractionScheduler:
    sched = ExtractionScheduler(data, before_s=BEFORE_S, after_s=AFTER_S, wait_after_s=0.0)
    sched.add(_firing())  # the window closed long ago: extracted at once
    await sched.idle()
    return sched


def test_a_recorder_without_the_coin_sends_an_empty_part(tmp_path: Path, s3_server: S3Server) -> None:
    fs = open_filesystem(endpoint_url=s3_server.endpoint_url)
    root = parse_url(URL)
    a, b = tmp_path / "rec-a", tmp_path / "rec-b"
    a.mkdir()
    b.mkdir()
    record(a, "rec-a")
    extract(a, "0G", T_US, before_s=BEFORE_S, after_s=AFTER_S, streams=[STREAM])
    _record_other_coins(b)
    sched = asyncio.run(_watch(b))
    result = sched.results[0]
    assert result.final and result.listing_dir is None  # nothing matched: no listing directory
    assert not (b / "listings").exists() or not any((b / "listings").iterdir())
    assert (b / "remote" / "nothing" / NAME / "metadata.json").is_file()
    for d, rid in ((a, "rec-a"), (b, "rec-b")):
        archive_and_upload(d, URL, s3_server.endpoint_url, rid)
        publish_heartbeat(fs, root, rid, END_US, 15.0, started_us=T0_US - MIN, streams=None)
    # both expected; rec-b's empty part is in: complete before the deadline
    got = assemble_listing(fs, root, NAME, now_us=END_US + 1, deadline_s=300)
    assert got is not None and got.written and got.complete
    shared = got.meta["shared"]
    assert [p["recorder"] for p in shared["parts"]] == ["rec-a", "rec-b"]
    assert shared["parts"][1].get("nothing_recorded") and shared["parts"][1]["trades"] == 0
    assert got.meta["streams"][STREAM]["trades"] > 0
    # rec-b listened to okx_spot, never to 0G: covered, with its coverage saying so
    other = got.meta["streams"][OTHER]
    assert other["trades"] == 0 and other["coverage"]["known"]
    assert other["coverage"]["state"] != "complete"
