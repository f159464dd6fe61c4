"""Time to the complete shared listing once the parts are uploaded (issue 14), with two and
three recorders, against a local S3 server (moto's server mode) on 127.0.0.1.

Each recorder's store is real (segments, journal; `tests/helpers/remote_world.record`), its
part is a real `extract` of the window, uploaded by the real `Uploader`. Printed per recorder
count: upload of one part (s), one assembling round (s, read parts + merge + detector + put),
a repeated round (nothing to rewrite), and the resulting bound from T with the default
settings (after + wait_after + upload round + housekeeping round + assembly).

    .venv/bin/python bench/bench_shared_listing.py
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> int:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_EC2_METADATA_DISABLED="true"
    )
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    import boto3
    from helpers.remote_world import MIN, STREAM, all_rows, archive_and_upload
    from helpers.store import T0_US
    from moto.server import ThreadedMotoServer

    from pumpwatch.detector.shared_listing import assemble_listing, publish_heartbeat
    from pumpwatch.extractor.extract import extract
    from pumpwatch.segments import SegmentWriter
    from pumpwatch.segments.remote import open_filesystem, parse_url
    from pumpwatch.settings import Settings
    from pumpwatch.timeunits import US_PER_S

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
    fs = open_filesystem(endpoint_url=endpoint)
    t_us = T0_US + 25 * MIN
    before_s, after_s = 300.0, 600.0
    name = "0G_20260101T002500Z"
    settings = Settings()
    # the watcher extracts at T + after + flush_interval + settle (recorder/upbit/service.py)
    wait_after_s = settings.storage.flush_interval_s + settings.upbit.settle_s
    window_after_s = settings.extract.after_s
    print("recorders  upload_part_s  assemble_s  repeat_round_s  trades  bound_from_T_s(defaults)")
    try:
        for n in (2, 3):
            url = f"s3://bench/n{n}"
            root = parse_url(url)
            uploads = []
            with tempfile.TemporaryDirectory() as tmp:
                for i in range(n):
                    rid = f"rec-{i}"
                    d = Path(tmp) / rid
                    d.mkdir()
                    rows = [
                        r
                        for r in all_rows(500 + 100 * i)
                        if not (t_us + i * MIN <= r[0] < t_us + (i + 1) * MIN)
                    ]
                    with SegmentWriter(d, STREAM, fsync=False) as writer:
                        writer.append(rows)
                    extract(d, "0G", t_us, before_s=before_s, after_s=after_s, streams=[STREAM])
                    t0 = time.perf_counter()
                    archive_and_upload(d, url, endpoint, rid)
                    uploads.append(time.perf_counter() - t0)
                    publish_heartbeat(fs, root, rid, t_us + 1)
                now = t_us + int(after_s * US_PER_S) + 1
                t0 = time.perf_counter()
                got = assemble_listing(fs, root, name, now_us=now)
                assemble = time.perf_counter() - t0
                t0 = time.perf_counter()
                assemble_listing(fs, root, name, now_us=now)
                repeat = time.perf_counter() - t0
            assert got is not None and got.complete
            bound = window_after_s + wait_after_s + 30.0 + 15.0 + assemble
            print(
                f"{n:9d}  {max(uploads):13.3f}  {assemble:10.3f}  {repeat:14.3f}  {got.meta['trades']:6d}  "
                f"{bound:.1f} (after {window_after_s:.0f} + wait_after {wait_after_s:.0f}"
                " + upload 30 + round 15 + assembly)"
            )
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
